//! `cargo xtask package`: the Debian package (cargo-deb, installed when missing), with what
//! it needs generated first: the unit for `/usr/bin`, shell completions and manual pages
//! (written by the binaries themselves).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{capture, run};

/// The cargo-deb release this project's metadata is written for.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the generated assets go (the `../target/package/` of the package metadata).
const ASSETS: &str = "target/package";

/// Builds the package from the binaries of `profile` (`release`, or `dev` for the tests);
/// returns the path of the `.deb`.
pub fn package(profile: &str) -> anyhow::Result<PathBuf> {
    ensure_cargo_deb()?;
    let bin_dir = Path::new("target").join(if profile == "dev" { "debug" } else { profile });
    generate_assets(&bin_dir)?;
    let output = Path::new("target/debian");
    fs::create_dir_all(output).context("creating target/debian")?;
    let text = capture(Command::new("cargo").args([
        "deb",
        "--package",
        "allowlist-daemon",
        "--no-build",
        "--profile",
        profile,
        "--output",
        "target/debian",
    ]))?;
    let deb = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb named no package")?;
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}

/// Installs cargo-deb when it is missing (or another release).
fn ensure_cargo_deb() -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains(CARGO_DEB_VERSION)
        });
    if !installed {
        eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION}");
        run(Command::new("cargo").args([
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
        ]))?;
    }
    Ok(())
}

/// Writes the unit (for `/usr/bin`), the manual pages and the completions of both binaries
/// into [`ASSETS`].
fn generate_assets(bin_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(ASSETS).with_context(|| format!("creating {ASSETS}"))?;
    let unit = fs::read_to_string("packaging/allowlistd.service")
        .context("reading packaging/allowlistd.service")?
        .replace("@BINDIR@", "/usr/bin");
    write(
        &Path::new(ASSETS).join("allowlistd.service"),
        unit.as_bytes(),
    )?;
    for binary in ["allowlistd", "allowlistctl"] {
        let path = bin_dir.join(binary);
        if !path.exists() {
            bail!("{} is missing: build it first", path.display());
        }
        let output = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
            let output = Command::new(&path)
                .args(args)
                .output()
                .with_context(|| format!("running {} {args:?}", path.display()))?;
            if !output.status.success() {
                bail!("{} {args:?} failed: {}", path.display(), output.status);
            }
            Ok(output.stdout)
        };
        write(
            &Path::new(ASSETS).join(format!("{binary}.1")),
            &output(&["man"])?,
        )?;
        for (shell, name) in [
            ("bash", format!("{binary}.bash")),
            ("zsh", format!("_{binary}")),
            ("fish", format!("{binary}.fish")),
        ] {
            write(
                &Path::new(ASSETS).join(name),
                &output(&["completions", shell])?,
            )?;
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
