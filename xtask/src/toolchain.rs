//! The Rust pieces the eBPF build needs beyond the stable toolchain: `rust-src` (for
//! `-Z build-std=core`) and `bpf-linker`, built against the toolchain's own LLVM.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{capture, run};

/// The bpf-linker release this project is verified with.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Installs `rust-src` and `bpf-linker` when missing; does nothing when both are there.
pub fn ensure() -> anyhow::Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = capture(Command::new("rustup").args(["component", "list", "--installed"]))?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: installing the rust-src component (needed to build core for the BPF target)");
    run(Command::new("rustup").args(["component", "add", "rust-src"]))
}

/// The installed bpf-linker's version line, if it runs (it does not when the LLVM it was built
/// against is gone).
fn bpf_linker_version() -> Option<String> {
    let output = Command::new("bpf-linker").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    match bpf_linker_version() {
        Some(version) if version.ends_with(BPF_LINKER_VERSION) => return Ok(()),
        Some(version) => eprintln!("xtask: found {version}, need bpf-linker {BPF_LINKER_VERSION}"),
        None => {}
    }
    let verbose = capture(Command::new("rustc").arg("-vV"))?;
    let llvm_major = verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next())
        .context("rustc -vV does not say its LLVM version")?
        .to_owned();
    let sysroot =
        PathBuf::from(capture(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?
        .to_owned();

    // bpf-linker links libLLVM dynamically and records this directory as its run path, so it
    // lives beside the cargo home rather than in the (disposable) target directory.
    let prefix = cargo_home()?.join("allowlist-llvm-prefix").join(&file_name);
    let lib_dir = prefix.join("lib");
    std::fs::create_dir_all(&lib_dir).with_context(|| format!("creating {}", lib_dir.display()))?;
    for link in [lib_dir.join("libLLVM.so"), lib_dir.join(&file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} against the toolchain's LLVM {llvm_major} \
         ({}); this takes a minute or two",
        libllvm.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    match bpf_linker_version() {
        Some(version) => {
            eprintln!("xtask: {version} installed");
            Ok(())
        }
        None => bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?"),
    }
}

/// The toolchain's shared libLLVM (`libLLVM.so.<version>-rust-<release>`).
fn find_libllvm(lib: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries {
        let path = entry?.path();
        let is_libllvm = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("libLLVM.so."));
        if is_libllvm {
            return Ok(path);
        }
    }
    bail!(
        "no libLLVM.so.* in {}: this toolchain does not ship a shared LLVM for bpf-linker",
        lib.display()
    )
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}
