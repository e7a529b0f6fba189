//! Where the CPU goes during a flood: `perf record` on every CPU with call chains (the
//! `cpu-clock` software event: this machine has no hardware counters), and the samples whose
//! chain passes through the filter's hook.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The sampling period of `cpu-clock`, in ns: 20,000 samples a second on each CPU, well under
/// the kernel's default cap of 100,000 (beyond it, samples are throttled and lost).
pub const PERIOD_NS: u64 = 50_000;

/// The frames of a call chain that are a filter's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A JIT-compiled BPF program of this name: `bpf_prog_<tag>_<name>` in the kernel's
    /// symbols (its callees are in the chain below it).
    BpfProgram(&'static str),
    /// A kernel function, and what it calls.
    Function(&'static str),
}

impl Hook {
    /// Whether the kernel symbol `symbol` is this hook.
    fn matches(self, symbol: &str) -> bool {
        match self {
            Hook::Function(name) => symbol == name,
            Hook::BpfProgram(name) => symbol
                .strip_prefix("bpf_prog_")
                .and_then(|rest| rest.split_once('_'))
                .is_some_and(|(tag, program)| {
                    tag.len() == 16
                        && tag.bytes().all(|byte| byte.is_ascii_hexdigit())
                        // The kernel keeps the first 15 bytes of a program's name.
                        && program == &name[..name.len().min(15)]
                }),
        }
    }
}

/// Runs `argv` under `perf record` of every CPU and returns the CPU time, in ns, of the
/// samples whose call chain passes through `hook`.
pub fn time_in(hook: Hook, argv: &[String]) -> anyhow::Result<f64> {
    let data = std::env::temp_dir().join(format!("allowlist-bench-{}.perf", std::process::id()));
    let output = Command::new("perf")
        .args(["record", "-q", "-a", "-g", "-e", "cpu-clock", "-c"])
        .arg(PERIOD_NS.to_string())
        .arg("-o")
        .arg(&data)
        .arg("--")
        .args(argv)
        .output()
        .context("running perf record");
    let samples = output.and_then(|output| {
        anyhow::ensure!(
            output.status.success(),
            "perf record {argv:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        samples_through(hook, &data)
    });
    // Tens of MiB a run: never left behind, whatever happened.
    let _ = std::fs::remove_file(&data);
    Ok(samples? as f64 * PERIOD_NS as f64)
}

/// Samples of the recording `data` whose call chain has a frame of `hook`.
fn samples_through(hook: Hook, data: &std::path::Path) -> anyhow::Result<u64> {
    let mut script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running perf script")?;
    let stdout = script.stdout.take().context("perf script's output")?;
    let mut through = 0;
    let mut in_sample = false;
    let mut hooked = false;
    // One frame a line (address, symbol); a blank line ends a sample.
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading perf script's output")?;
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (None, _) => {
                if in_sample && hooked {
                    through += 1;
                }
                in_sample = false;
                hooked = false;
            }
            (Some(_), symbol) => {
                in_sample = true;
                hooked |= symbol.is_some_and(|symbol| hook.matches(symbol));
            }
        }
    }
    if in_sample && hooked {
        through += 1;
    }
    let status = script.wait().context("waiting for perf script")?;
    anyhow::ensure!(status.success(), "perf script failed: {status}");
    Ok(through)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_known_by_its_kernel_symbol() {
        let hook = Hook::BpfProgram("allowlist");
        assert!(hook.matches("bpf_prog_7456e00fd31e4414_allowlist"));
        assert!(!hook.matches("bpf_prog_7456e00fd31e4414_allowlist_egres"));
        assert!(!hook.matches("__bpf_prog_enter_recur"));
        assert!(
            Hook::BpfProgram("xdpfilt_dny_all_more")
                .matches("bpf_prog_0123456789abcdef_xdpfilt_dny_all")
        );
        assert!(Hook::Function("ipt_do_table").matches("ipt_do_table"));
        assert!(!Hook::Function("ipt_do_table").matches("ipt_do_table_x"));
    }
}
