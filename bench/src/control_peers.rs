//! The peers of the control plane: nftables and ipset loading and replacing the same
//! prefixes, in a network namespace of their own.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use allowlist_tests::netns::TestLink;
use anyhow::Context as _;
use ipnet::IpNet;

/// A peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `nft -f` with an interval set.
    Nft,
    /// `ipset restore` with a `hash:net` set, replaced by a swap.
    Ipset,
}

/// Seconds one peer took.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimes {
    /// Which peer.
    pub peer: Peer,
    /// Loading the prefixes.
    pub load: f64,
    /// Replacing them with the others.
    pub replace: f64,
    /// Kernel memory of the set after the replace (ipset's own figure), MiB.
    pub memory_mib: Option<f64>,
}

impl Peer {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Nft => "nft -f",
            Peer::Ipset => "ipset restore",
        }
    }

    /// Times loading `old`, then replacing it with `new`, in a namespace of its own.
    pub fn measure(self, old: &[IpNet], new: &[IpNet]) -> anyhow::Result<PeerTimes> {
        let link = TestLink::create()?;
        let netns = format!("--net={}", link.server.path());
        let dir = std::env::temp_dir().join(format!("allowlist-bench-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (load_file, replace_file) = (dir.join("load"), dir.join("replace"));
        let (load_text, replace_text) = match self {
            Peer::Nft => (nft_load(old), nft_replace(new)),
            Peer::Ipset => (ipset_load(old), ipset_replace(new)),
        };
        std::fs::write(&load_file, load_text)?;
        std::fs::write(&replace_file, replace_text)?;
        let run = |file: &std::path::Path| -> anyhow::Result<f64> {
            let mut command = Command::new("nsenter");
            command.arg(&netns);
            match self {
                Peer::Nft => command.args(["nft", "-f"]).arg(file),
                Peer::Ipset => command.args(["ipset", "restore", "-f"]).arg(file),
            };
            let started = Instant::now();
            let output = command
                .output()
                .with_context(|| format!("running {}", self.name()))?;
            let took = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                output.status.success(),
                "{}: {}",
                self.name(),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(took)
        };
        let times = run(&load_file).and_then(|load| {
            let replace = run(&replace_file)?;
            let memory_mib = match self {
                Peer::Nft => None,
                Peer::Ipset => Some(ipset_memory_mib(&netns)?),
            };
            Ok(PeerTimes {
                peer: self,
                load,
                replace,
                memory_mib,
            })
        });
        // The namespace goes with the link; ipset sets live in it too.
        let _ = std::fs::remove_dir_all(&dir);
        times
    }
}

/// A table with an interval set of `prefixes` and a rule that uses it.
fn nft_load(prefixes: &[IpNet]) -> String {
    let mut text = String::from(
        "table inet allowlist_bench {\n  set allow {\n    type ipv4_addr\n    flags interval\n",
    );
    text.push_str("    elements = { ");
    push_joined(&mut text, prefixes);
    text.push_str(
        " }\n  }\n  chain input {\n    type filter hook input priority 0; policy accept;\n",
    );
    text.push_str("    ip saddr @allow counter accept\n  }\n}\n");
    text
}

/// One transaction that empties the set and fills it with `prefixes`.
fn nft_replace(prefixes: &[IpNet]) -> String {
    let mut text = String::from("flush set inet allowlist_bench allow\n");
    text.push_str("add element inet allowlist_bench allow { ");
    push_joined(&mut text, prefixes);
    text.push_str(" }\n");
    text
}

/// Appends `prefixes`, comma separated.
pub fn push_joined(text: &mut String, prefixes: &[IpNet]) {
    for (index, net) in prefixes.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{net}");
    }
}

/// What ipset's `hash:net` set of `prefixes` takes in kernel memory (ipset's own figure),
/// made in a namespace of its own, in MiB.
pub fn ipset_memory_of(prefixes: &[IpNet]) -> anyhow::Result<f64> {
    let link = TestLink::create()?;
    let netns = format!("--net={}", link.server.path());
    let file = std::env::temp_dir().join(format!("allowlist-bench-ipset-{}", std::process::id()));
    std::fs::write(&file, ipset_load(prefixes))?;
    let output = Command::new("nsenter")
        .arg(&netns)
        .args(["ipset", "restore", "-f"])
        .arg(&file)
        .output()
        .context("running ipset restore");
    let _ = std::fs::remove_file(&file);
    let output = output?;
    anyhow::ensure!(
        output.status.success(),
        "ipset restore: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    ipset_memory_mib(&netns)
}

/// What `ipset list -t` says the set takes in kernel memory, in the namespace `netns`.
fn ipset_memory_mib(netns: &str) -> anyhow::Result<f64> {
    let output = Command::new("nsenter")
        .arg(netns)
        .args(["ipset", "list", "-t", "allowlist_bench"])
        .output()
        .context("running ipset list")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let bytes: f64 = listing
        .lines()
        .find_map(|line| line.strip_prefix("Size in memory:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .context("no size in `ipset list -t`")?;
    Ok(bytes / (1024.0 * 1024.0))
}

/// A `hash:net` set of `prefixes`.
fn ipset_load(prefixes: &[IpNet]) -> String {
    ipset_set("allowlist_bench", prefixes)
}

/// A second set of `prefixes`, swapped in for the first, then removed.
fn ipset_replace(prefixes: &[IpNet]) -> String {
    let mut text = ipset_set("allowlist_bench_new", prefixes);
    text.push_str("swap allowlist_bench_new allowlist_bench\ndestroy allowlist_bench_new\n");
    text
}

/// `ipset restore` lines creating set `name` of `prefixes`.
pub fn ipset_set(name: &str, prefixes: &[IpNet]) -> String {
    let mut text = format!(
        "create {name} hash:net family inet hashsize {} maxelem {}\n",
        prefixes.len().next_power_of_two().max(1024),
        prefixes.len().max(1024)
    );
    for net in prefixes {
        let _ = writeln!(text, "add {name} {net}");
    }
    text
}
