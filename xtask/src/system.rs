//! What the machine must provide to run the tests: root, a few Debian packages and bpffs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::run;

/// Commands the demo (`cargo xtask run`) runs, and the Debian package that provides each:
/// namespaces and veth pairs, and traffic between them.
const DEMO_COMMANDS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nsenter", "util-linux"),
    ("sysctl", "procps"),
];

/// Commands the tests run besides the demo's. Only the tests install them: etcd-server, for
/// one, creates a user and enables a service, which an ordinary host that runs the demo
/// should not get.
const TEST_COMMANDS: &[(&str, &str)] = &[
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("openssl", "openssl"),
    ("setpriv", "util-linux"),
    ("strace", "strace"),
    ("faketime", "faketime"),
    ("systemd-analyze", "systemd"),
    ("bpftool", "bpftool"),
    ("xdp-filter", "xdp-tools"),
];

/// What building the daemon needs: `protoc` and the well-known `.proto` files, for the
/// etcd client's generated code.
const BUILD_COMMANDS: &[(&str, &str)] = &[("protoc", "protobuf-compiler")];
/// A file of `libprotobuf-dev` that `protoc` imports.
const PROTOBUF_INCLUDE: &str = "/usr/include/google/protobuf/descriptor.proto";

/// Commands the benchmark runs besides the tests' own: its peers and the tools that run them.
const BENCH_COMMANDS: &[(&str, &str)] = &[
    ("xdp-filter", "xdp-tools"),
    ("bpftool", "bpftool"),
    ("trafgen", "netsniff-ng"),
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("iptables-legacy", "iptables"),
    ("perf", "linux-perf"),
];

/// Fails unless running as root: loading BPF programs and creating namespaces need it.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root (it loads BPF programs and creates network namespaces); run it as root"
        );
    }
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Installs, with apt-get, the packages whose commands the tests need and are missing.
pub fn ensure_test_commands() -> anyhow::Result<()> {
    ensure_commands(&[DEMO_COMMANDS, TEST_COMMANDS].concat())
}

/// Installs, with apt-get, the packages whose commands the demo needs and are missing.
pub fn ensure_demo_commands() -> anyhow::Result<()> {
    ensure_commands(DEMO_COMMANDS)
}

/// Installs what building the daemon needs and is missing: protoc and its includes.
pub fn ensure_build_packages() -> anyhow::Result<()> {
    ensure_commands(BUILD_COMMANDS)?;
    if !std::path::Path::new(PROTOBUF_INCLUDE).exists() {
        install(&["libprotobuf-dev"])?;
    }
    Ok(())
}

/// As [`ensure_test_commands`], for the benchmark.
pub fn ensure_bench_commands() -> anyhow::Result<()> {
    ensure_test_commands()?;
    ensure_commands(BENCH_COMMANDS)
}

fn ensure_commands(commands: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = commands
        .iter()
        .filter(|(command, _)| which(command).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing)
}

/// Installs Debian packages, after `apt-get update`.
fn install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: installing Debian packages {}", packages.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn which(command: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there.
pub fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, target, kind) = (fields.next(), fields.next(), fields.next());
        target == Some("/sys/fs/bpf") && kind == Some("bpf")
    });
    if !mounted {
        eprintln!("xtask: mounting bpffs on /sys/fs/bpf");
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}

/// Fails, naming them, if test namespaces or bpffs pin directories were left behind (and
/// removes them). Their names are `PREFIX{pid}-...`: those of a test process still running
/// (another `cargo xtask test` at the same time) are not leftovers and stay.
pub fn check_no_leftovers(prefix: &str) -> anyhow::Result<()> {
    let left = |name: &str| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            let pid = rest.split('-').next().unwrap_or_default();
            pid.is_empty() || !Path::new("/proc").join(pid).exists()
        })
    };
    let listing = crate::capture(Command::new("ip").args(["netns", "list"]))?;
    let mut leftovers: Vec<String> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| left(name))
        .map(str::to_owned)
        .collect();
    for name in &leftovers {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
    let pins = std::fs::read_dir("/sys/fs/bpf")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(left)
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for path in pins {
        let _ = std::fs::remove_dir_all(&path);
        leftovers.push(path.display().to_string());
    }
    if !leftovers.is_empty() {
        bail!(
            "the tests left network namespaces or pins behind: {}",
            leftovers.join(" ")
        );
    }
    Ok(())
}
