//! `cargo xtask install`: the binaries, the systemd unit and an example configuration.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Where the configuration file lives (the unit's `--config`).
const CONFIG_DIR: &str = "etc/allowlist";
/// Where the unit goes.
const UNIT_DIR: &str = "etc/systemd/system";

/// Copies `target/release/{allowlistd,allowlistctl}` to `PREFIX/bin`, the unit to
/// /etc/systemd/system and the example config to /etc/allowlist, all under `destdir` if given.
/// An existing config is left alone; the example is installed beside it. Installed on this
/// system (no `destdir`), it also creates the unit's user and lets its group read the config.
pub fn install(prefix: &Path, destdir: Option<&Path>) -> anyhow::Result<()> {
    if !prefix.is_absolute() {
        bail!(
            "--prefix must be an absolute path, not {}",
            prefix.display()
        );
    }
    let root = destdir.unwrap_or(Path::new("/"));
    let under = |path: &Path| -> PathBuf { root.join(path.strip_prefix("/").unwrap_or(path)) };
    let bindir = prefix.join("bin");

    for binary in ["allowlistd", "allowlistctl"] {
        let target = under(&bindir).join(binary);
        copy(
            Path::new("target/release").join(binary).as_path(),
            &target,
            0o755,
        )?;
    }
    let unit = fs::read_to_string("packaging/allowlistd.service")
        .context("reading packaging/allowlistd.service")?
        .replace("@BINDIR@", &bindir.display().to_string());
    write(
        &root.join(UNIT_DIR).join("allowlistd.service"),
        &unit,
        0o644,
    )?;

    let config_dir = root.join(CONFIG_DIR);
    let example = fs::read_to_string("packaging/allowlistd.toml")
        .context("reading packaging/allowlistd.toml")?;
    write(&config_dir.join("allowlistd.toml.example"), &example, 0o644)?;
    let config = config_dir.join("allowlistd.toml");
    if !config.exists() {
        write(&config, &example, 0o600)?;
    } else {
        eprintln!("xtask: kept the existing {}", config.display());
    }

    if destdir.is_none() {
        ensure_service_user()?;
        // The daemon runs as its own user: it reads the configuration through its group.
        crate::run(Command::new("chown").args([
            &format!("root:{SERVICE_USER}"),
            &config.display().to_string(),
        ]))?;
        fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
    }
    if destdir.is_none() && Path::new("/run/systemd/system").exists() {
        crate::run(Command::new("systemctl").arg("daemon-reload"))?;
    }
    eprintln!(
        "xtask: installed. Next: edit /{CONFIG_DIR}/allowlistd.toml (iface, allow), then \
         `systemctl enable --now allowlistd`."
    );
    Ok(())
}

/// The system user the unit runs allowlistd as.
const SERVICE_USER: &str = "allowlistd";

/// Creates the unit's system user and group when missing (no home, no login shell).
fn ensure_service_user() -> anyhow::Result<()> {
    let known = Command::new("getent")
        .args(["passwd", SERVICE_USER])
        .output()
        .context("running getent")?
        .status
        .success();
    if !known {
        crate::run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/var/lib/allowlistd",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ]))?;
        eprintln!("xtask: created the system user {SERVICE_USER}");
    }
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_bytes(to, &bytes, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    write_bytes(to, text.as_bytes(), mode)
}

/// Writes a file atomically (temporary file, then rename), so a running binary is replaced,
/// not overwritten in place.
fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = to.parent().context("no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = to.with_extension("xtask-new");
    fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
    fs::rename(&temp, to).with_context(|| format!("installing {}", to.display()))?;
    eprintln!("xtask: installed {}", to.display());
    Ok(())
}
