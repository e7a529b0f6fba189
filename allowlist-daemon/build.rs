//! Builds the eBPF object (`allowlist-ebpf`) for the kernel and leaves it in `OUT_DIR`, where
//! the dataplane module embeds it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "allowlist-ebpf")
        .ok_or_else(|| anyhow!("allowlist-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("allowlist-ebpf has no manifest directory"))?;
    // The eBPF target needs `-Z build-std=core`; RUSTC_BOOTSTRAP lets the stable toolchain
    // that runs this build accept it, for the eBPF build only.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    aya_build::build_ebpf(
        [Package {
            name: "allowlist-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}
