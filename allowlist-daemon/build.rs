//! Builds the eBPF object (`allowlist-ebpf`) for the kernel and leaves it in `OUT_DIR`, where
//! the dataplane module embeds it. With the daemon's `bench` feature the object also holds
//! the benchmark-only programs and maps; without it, it has none of them.
//!
//! The sub-build runs quietly: its output is shown only when it fails (aya-build, which this
//! replaces, prints every line of it as a cargo warning).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::Message;

/// The eBPF package and the binary the daemon embeds.
const EBPF_PACKAGE: &str = "allowlist-ebpf";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} has no manifest directory"))?;
    // Cargo rebuilds this when the eBPF crate's library changes (a build-dependency); the
    // programs are its binaries, so watch its sources too.
    println!("cargo:rerun-if-changed={root_dir}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let bench = std::env::var_os("CARGO_FEATURE_BENCH").is_some();
    let object = build_object(root_dir.as_std_path(), &out_dir, bench)?;
    std::fs::copy(&object, out_dir.join("allowlist"))
        .with_context(|| format!("copying {} into {}", object.display(), out_dir.display()))?;
    Ok(())
}

/// Runs the eBPF build (`bpfel-unknown-none` on little-endian hosts, `core` built from source) and returns the path
/// of the object it produced; on failure, the error carries everything the build printed.
fn build_object(root_dir: &Path, out_dir: &Path, bench: bool) -> anyhow::Result<PathBuf> {
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let target = match std::env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let mut cargo = Command::new("rustup");
    cargo
        .args([
            "run",
            &toolchain,
            "cargo",
            "build",
            "--package",
            EBPF_PACKAGE,
        ])
        .args(["--bins", "--release", "--message-format=json"])
        .args(["--target", target, "-Z", "build-std=core"])
        .args(["--features", if bench { "bench" } else { "" }])
        .arg("--target-dir")
        .arg(out_dir.join("ebpf-target"))
        .current_dir(root_dir)
        // The eBPF target needs `-Z build-std=core`; RUSTC_BOOTSTRAP lets the stable
        // toolchain accept it, for this build only.
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{arch}\""),
                "-Cdebuginfo=2".to_owned(),
                "-Clink-arg=--btf".to_owned(),
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let output = cargo
        .output()
        .with_context(|| format!("running {cargo:?} (is rustup installed?)"))?;
    let mut object = None;
    let mut diagnostics = Vec::new();
    for message in Message::parse_stream(output.stdout.as_slice()) {
        match message.context("reading the eBPF build's messages")? {
            Message::CompilerArtifact(artifact) if artifact.target.name == "allowlist" => {
                object = artifact.executable.map(PathBuf::from);
            }
            Message::CompilerMessage(message) => {
                diagnostics.extend(message.message.rendered);
            }
            _ => {}
        }
    }
    if !output.status.success() {
        bail!(
            "the eBPF build failed ({}):\n{}\n{}",
            output.status,
            diagnostics.join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    object.ok_or_else(|| anyhow!("the eBPF build produced no `allowlist` binary"))
}
