//! Mounts over a test's state directory, undone when dropped: read-only, or a tiny tmpfs
//! that fills up.

use std::path::Path;
use std::process::Command;

fn mount(args: &[&str], source: &str, dir: &Path) {
    let status = Command::new("mount")
        .args(args)
        .arg(source)
        .arg(dir)
        .status()
        .expect("mount");
    assert!(
        status.success(),
        "mount {args:?} {source} {}",
        dir.display()
    );
}

/// A read-only bind mount of a directory over itself.
pub struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    /// Makes `dir` read-only until dropped.
    pub fn mount(dir: &'a Path) -> ReadOnly<'a> {
        let source = dir.to_str().expect("UTF-8 path");
        mount(&["--bind"], source, dir);
        let guard = ReadOnly(dir);
        mount(&["-o", "remount,ro,bind"], source, dir);
        guard
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// A tmpfs of `bytes` mounted on a directory: a disk that can fill up.
pub struct SmallDisk<'a>(&'a Path);

impl<'a> SmallDisk<'a> {
    /// Mounts an empty tmpfs of `bytes` on `dir` until dropped.
    pub fn mount(dir: &'a Path, bytes: usize) -> SmallDisk<'a> {
        mount(
            &["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700")],
            "tmpfs",
            dir,
        );
        SmallDisk(dir)
    }

    /// Fills what is left with the file `filler` (removing it frees the space again).
    pub fn fill(&self) {
        let chunk = vec![0u8; 4096];
        let mut file = std::fs::File::create(self.0.join("filler")).expect("filler");
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    }

    /// Removes the filler.
    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}
