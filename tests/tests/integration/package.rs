//! The Debian package `cargo xtask test` builds (`cargo xtask package` for a release):
//! unpacked into a clean root by dpkg, it holds the binaries, the unit, the configuration,
//! completions and manual pages, and its allowlistd runs. (Its maintainer scripts, which
//! create the service's user and enable the unit, need a system with systemd: they are
//! checked for what they do, not run here.)

use std::path::{Path, PathBuf};
use std::process::Command;

use allowlist_tests::daemon::TempDir;

/// The package in the workspace's `target/debian/`.
fn package() -> PathBuf {
    let debian = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&debian)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("allowlist_"))
                && path.extension().is_some_and(|ext| ext == "deb")
        })
        .unwrap_or_else(|| {
            panic!(
                "no allowlist_*.deb in {}: `cargo xtask test` builds it (or `cargo xtask package`)",
                debian.display()
            )
        })
}

fn dpkg(args: &[&str]) -> String {
    let output = Command::new("dpkg").args(args).output().expect("dpkg");
    assert!(
        output.status.success(),
        "dpkg {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_package_unpacks_into_a_clean_root_with_everything_an_operator_needs() {
    let deb = package();
    let root = TempDir::new().expect("root");
    for dir in ["info", "updates", "triggers", "alternatives"] {
        std::fs::create_dir_all(root.path().join("var/lib/dpkg").join(dir)).expect("dpkg dir");
    }
    std::fs::write(root.path().join("var/lib/dpkg/status"), "").expect("status");
    let root_arg = format!("--root={}", root.path().display());
    dpkg(&[
        &root_arg,
        "--force-depends",
        "--log=/dev/null",
        "--unpack",
        &deb.to_string_lossy(),
    ]);
    let status = dpkg(&[&root_arg, "--status", "allowlist"]);
    assert!(status.contains("Status: install ok unpacked"), "{status}");
    assert!(
        status.contains("Depends: ") && status.contains("adduser"),
        "{status}"
    );

    let installed = root.path();
    for file in [
        "usr/bin/allowlistd",
        "usr/bin/allowlistctl",
        "usr/lib/systemd/system/allowlistd.service",
        // A conffile waits as .dpkg-new until the package is configured.
        "etc/allowlist/allowlistd.toml.dpkg-new",
        "usr/share/man/man1/allowlistd.1.gz",
        "usr/share/man/man1/allowlistctl.1.gz",
        "usr/share/bash-completion/completions/allowlistctl",
        "usr/share/zsh/vendor-completions/_allowlistctl",
        "usr/share/fish/vendor_completions.d/allowlistctl.fish",
        "usr/share/doc/allowlist/grafana/allowlist.json",
        "usr/share/doc/allowlist/prometheus/alerts.yml",
    ] {
        assert!(installed.join(file).exists(), "{file} is installed");
    }
    let unit = std::fs::read_to_string(installed.join("usr/lib/systemd/system/allowlistd.service"))
        .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/allowlistd --config /etc/allowlist/allowlistd.toml"),
        "{unit}"
    );
    let conffiles = dpkg(&[&root_arg, "--status", "allowlist"]);
    assert!(
        conffiles.contains("/etc/allowlist/allowlistd.toml"),
        "the configuration is a conffile, kept across upgrades: {conffiles}"
    );

    let help = Command::new(installed.join("usr/bin/allowlistd"))
        .arg("--help")
        .output()
        .expect("allowlistd --help");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--iface"));
    let completion = std::fs::read_to_string(
        installed.join("usr/share/bash-completion/completions/allowlistctl"),
    )
    .expect("completion");
    assert!(completion.contains("import") && completion.contains("audit"));

    // The maintainer scripts: the user is made, the unit enabled on install and restarted
    // (only if running) after an upgrade, stopped only on removal.
    let scripts = TempDir::new().expect("scripts");
    dpkg(&[
        "--control",
        &deb.to_string_lossy(),
        &scripts.path().to_string_lossy(),
    ]);
    let postinst = std::fs::read_to_string(scripts.path().join("postinst")).expect("postinst");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper enable allowlistd.service"),
        "{postinst}"
    );
    assert!(
        postinst.contains("try-restart allowlistd.service"),
        "{postinst}"
    );
    let prerm = std::fs::read_to_string(scripts.path().join("prerm")).expect("prerm");
    assert!(
        prerm.contains("\"$1\" = remove"),
        "an upgrade does not stop the daemon: {prerm}"
    );
}
