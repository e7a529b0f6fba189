//! `cargo xtask`: builds, runs and tests allowlist, installing what a fresh machine lacks.

mod install;
mod package;
mod system;
mod toolchain;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// Prefix of the network namespaces the tests create (see tests/src/netns.rs).
const TEST_NAMESPACE_PREFIX: &str = "allowlist-test-";

#[derive(Debug, Parser)]
#[command(about = "Build, run and test allowlist")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the eBPF program and the binaries (installs rust-src and bpf-linker if missing).
    Build {
        /// Build with optimizations.
        #[arg(long)]
        release: bool,
    },
    /// Run allowlistd with the given arguments (as root). Without arguments, run a demo:
    /// allowlistd guards a veth pair between two network namespaces it creates, and traffic
    /// from an allowed and a denied source shows what passes.
    Run {
        /// Arguments for allowlistd, after `--` (e.g. -- --iface eth1 --allow 192.0.2.0/24).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the data path, the control plane and a flood (as root), beside peers, and
    /// write bench/RESULTS.md.
    Bench {
        /// Run only these sections (replies, preview, scaling, designs, memory, control,
        /// flood, peers, fleet) and print them; the report is written only by a run of every
        /// section.
        #[arg(long, value_name = "SECTION")]
        only: Vec<String>,
    },
    /// Install allowlistd and allowlistctl, the systemd unit and an example config.
    Install {
        /// Installation prefix of the binaries.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Stage everything under this directory instead of / (for packaging).
        #[arg(long)]
        destdir: Option<PathBuf>,
    },
    /// Build the Debian package (target/debian/allowlist_*.deb): binaries, the systemd unit,
    /// an example configuration, completions and manual pages (installs cargo-deb if
    /// missing).
    Package,
    /// Run every test (as root): unit tests, verdict tests in the kernel, end-to-end tests
    /// with real packets between network namespaces. (A plain `cargo test` runs only the unit
    /// tests, which need no root.)
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run_task(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the task `cli` names.
fn run_task(cli: Cli) -> anyhow::Result<()> {
    std::env::set_current_dir(workspace_root()).context("entering the workspace")?;
    match cli.command {
        Task::Build { release } => build(release),
        Task::Run { args } => {
            system::require_root("cargo xtask run")?;
            build(true)?;
            if args.is_empty() {
                system::ensure_demo_commands()?;
                run(Command::new("cargo").args([
                    "build",
                    "--release",
                    "--package",
                    "allowlist-tests",
                    "--bin",
                    "allowlist-demo",
                ]))?;
                exec(&mut Command::new("target/release/allowlist-demo"))
            } else {
                exec(Command::new("target/release/allowlistd").args(args))
            }
        }
        Task::Bench { only } => {
            system::require_root("cargo xtask bench")?;
            system::ensure_bench_commands()?;
            system::ensure_bpffs()?;
            build(true)?;
            // Its own package: the benchmark's programs exist only in this build.
            run(Command::new("cargo").args([
                "build",
                "--release",
                "--package",
                "allowlist-bench",
            ]))?;
            let mut bench = Command::new("target/release/allowlist-bench");
            for section in &only {
                bench.args(["--only", section]);
            }
            if only.is_empty() {
                bench.arg("bench/RESULTS.md");
            }
            run(&mut bench)
        }
        Task::Install { prefix, destdir } => {
            build(true)?;
            install::install(&prefix, destdir.as_deref())
        }
        Task::Package => {
            build(true)?;
            package::package("release").map(|_| ())
        }
        Task::Test { args } => {
            system::require_root("cargo xtask test")?;
            system::ensure_test_commands()?;
            system::ensure_bpffs()?;
            build(false)?;
            // The package of this build, for the test that unpacks it.
            package::package("dev")?;
            // Everything but the benchmark: unit tests, the kernel verdicts, real packets.
            let tests = run(Command::new("cargo")
                .args(["test", "--workspace", "--exclude", "allowlist-bench"])
                .args(&args));
            let leftovers = system::check_no_leftovers(TEST_NAMESPACE_PREFIX);
            tests.and(leftovers)
        }
    }
}

fn build(release: bool) -> anyhow::Result<()> {
    toolchain::ensure()?;
    system::ensure_build_packages()?;
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--bins"]);
    if release {
        cargo.arg("--release");
    }
    run(&mut cargo)
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Runs a command with inherited output and fails unless it succeeds.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output.
pub fn capture(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("output of {command:?}"))
}

/// Runs a command with inherited I/O, then exits with its exit code.
fn exec(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    std::process::exit(status.code().unwrap_or(1));
}
