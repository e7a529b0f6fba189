//! The three filters, each set up on test links of its own with the same prefixes, and each
//! with a do-nothing variant in the same hook: the allowlist's XDP program (native mode)
//! beside a program that only drops, nftables' netdev ingress chain looking sources up in an
//! interval set beside a chain that only gives the verdict, iptables' raw PREROUTING chain
//! (`iptables-legacy`) matching an ipset `hash:net` set beside a chain that only gives the
//! verdict.

use std::process::Command;

use allowlist_common::bench::BENCH_FLOOR_PROGRAM;
use allowlist_common::{Mode, PROGRAM_NAME};
use allowlist_daemon::dataplane::{AttachMode, Dataplane};
use allowlist_daemon::policy::Policy;
use allowlist_tests::netns::{SERVER_IF, TestLink};
use anyhow::Context as _;
use ipnet::IpNet;

use super::hook::Hook;
use crate::control_peers::{ipset_set, push_joined};

/// A filter measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The allowlist's XDP program.
    Allowlist,
    /// nftables, netdev ingress, an interval set.
    Nftables,
    /// iptables raw PREROUTING with an ipset `hash:net` match.
    Ipset,
}

/// The systems, in the report's order.
pub const SYSTEMS: [System; 3] = [System::Allowlist, System::Nftables, System::Ipset];

impl System {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            System::Allowlist => "allowlist (XDP, native)",
            System::Nftables => "nftables (netdev ingress, interval set)",
            System::Ipset => "iptables raw + ipset (hash:net)",
        }
    }
}

/// Which sources a flood comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Outside every prefix: the filter drops them.
    Denied,
    /// Inside the prefixes: the filter passes them.
    Allowed,
}

/// The floods, in the report's order.
pub const FLOODS: [Flood; 2] = [Flood::Denied, Flood::Allowed];

impl Flood {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Flood::Denied => "denied",
            Flood::Allowed => "allowed",
        }
    }
}

/// What runs in the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The filter with its prefixes.
    Filter,
    /// The same hook giving the flood's verdict without looking at the source.
    DoNothing,
}

/// One system set up: the links its filter and its do-nothing variant receive on.
pub struct Bed {
    /// Which system.
    pub system: System,
    /// The link whose server side filters.
    link: TestLink,
    /// XDP: the link whose server side runs the do-nothing program.
    floor_link: Option<TestLink>,
    /// XDP: the programs, attached while they live.
    _dataplanes: Vec<Dataplane>,
}

impl Bed {
    /// Sets `system` up with `prefixes` (IPv4, none overlapping).
    pub fn new(system: System, prefixes: &[IpNet]) -> anyhow::Result<Bed> {
        let link = TestLink::create()?;
        let mut bed = Bed {
            system,
            link,
            floor_link: None,
            _dataplanes: Vec::new(),
        };
        match system {
            System::Allowlist => bed.load_allowlist(prefixes)?,
            System::Nftables => bed.load_nftables(prefixes)?,
            System::Ipset => {
                let file = temp_file("ipset", &ipset_set("allowlist_bench", prefixes))?;
                let loaded = bed.server(&["ipset", "restore", "-f", &file]);
                let _ = std::fs::remove_file(&file);
                loaded?;
            }
        }
        Ok(bed)
    }

    /// The link a flood of `variant` goes through, its server side made ready for `flood`.
    pub fn prepare(&self, variant: Variant, flood: Flood) -> anyhow::Result<&TestLink> {
        let verdict = match flood {
            Flood::Denied => ["drop", "DROP"],
            Flood::Allowed => ["accept", "ACCEPT"],
        };
        match (self.system, variant) {
            (System::Allowlist, Variant::Filter) => return Ok(&self.link),
            (System::Allowlist, Variant::DoNothing) => {
                return self.floor_link.as_ref().context("no do-nothing link");
            }
            (System::Nftables, variant) => {
                let rules = match variant {
                    Variant::Filter => "ip saddr @allow accept\n  drop".to_owned(),
                    Variant::DoNothing => verdict[0].to_owned(),
                };
                let file = temp_file(
                    "nft",
                    &format!(
                        "flush chain netdev allowlist_bench ingress\n\
                         table netdev allowlist_bench {{\n chain ingress {{\n  {rules}\n }}\n}}\n"
                    ),
                )?;
                let done = self.server(&["nft", "-f", &file]);
                let _ = std::fs::remove_file(&file);
                done?;
            }
            (System::Ipset, variant) => {
                let iptables = |args: &[&str]| {
                    let mut argv = vec!["iptables-legacy", "-w", "-t", "raw"];
                    argv.extend_from_slice(args);
                    self.server(&argv)
                };
                iptables(&["-F", "PREROUTING"])?;
                if variant == Variant::Filter {
                    iptables(&[
                        "-A",
                        "PREROUTING",
                        "-m",
                        "set",
                        "--match-set",
                        "allowlist_bench",
                        "src",
                        "-j",
                        "ACCEPT",
                    ])?;
                    iptables(&["-A", "PREROUTING", "-j", "DROP"])?;
                } else {
                    iptables(&["-A", "PREROUTING", "-j", verdict[1]])?;
                }
            }
        }
        Ok(&self.link)
    }

    /// The hook whose time `variant` is.
    pub fn hook(&self, variant: Variant) -> Hook {
        match (self.system, variant) {
            (System::Allowlist, Variant::Filter) => Hook::BpfProgram(PROGRAM_NAME),
            (System::Allowlist, Variant::DoNothing) => Hook::BpfProgram(BENCH_FLOOR_PROGRAM),
            (System::Nftables, _) => Hook::Function("nft_do_chain_netdev"),
            (System::Ipset, _) => Hook::Function("ipt_do_table"),
        }
    }

    /// The allowlist's program enforcing `prefixes` on the link, the drop-only program on a
    /// second one.
    fn load_allowlist(&mut self, prefixes: &[IpNet]) -> anyhow::Result<()> {
        let capacity = u32::try_from(prefixes.len())?.max(1024);
        let mut dataplane = Dataplane::load(capacity, 1024)?;
        let policy: Policy = prefixes
            .iter()
            .zip(0..)
            .map(|(net, rule)| (*net, rule))
            .collect();
        dataplane.apply(&policy)?;
        dataplane.set_mode(Mode::Enforce)?;
        self.link
            .server
            .enter(|| dataplane.attach(SERVER_IF, AttachMode::Native))??;
        let floor_link = TestLink::create()?;
        let mut floor = Dataplane::load_for_bench(1024)?;
        floor_link
            .server
            .enter(|| floor.bench_attach_floor(SERVER_IF))??;
        self.floor_link = Some(floor_link);
        self._dataplanes = vec![dataplane, floor];
        Ok(())
    }

    /// A netdev table on the server's interface with an interval set of `prefixes`; its
    /// chain's rules are written by [`Bed::prepare`].
    fn load_nftables(&self, prefixes: &[IpNet]) -> anyhow::Result<()> {
        let mut text = String::from(
            "table netdev allowlist_bench {\n set allow {\n  type ipv4_addr\n  flags interval\n",
        );
        text.push_str("  elements = { ");
        push_joined(&mut text, prefixes);
        text.push_str(&format!(
            " }}\n }}\n chain ingress {{\n  type filter hook ingress device \"{SERVER_IF}\" \
             priority 0; policy accept;\n }}\n}}\n"
        ));
        let file = temp_file("nft", &text)?;
        let loaded = self.server(&["nft", "-f", &file]);
        let _ = std::fs::remove_file(&file);
        loaded
    }

    /// Runs `argv` in the server's namespace (`nsenter`, which keeps bpffs) and fails unless
    /// it succeeds.
    fn server(&self, argv: &[&str]) -> anyhow::Result<()> {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.link.server.path()))
            .args(argv)
            .output()
            .with_context(|| format!("running {}", argv[0]))?;
        anyhow::ensure!(
            output.status.success(),
            "{argv:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

/// Writes `text` to a temporary file named after `what`; returns its path.
fn temp_file(what: &str, text: &str) -> anyhow::Result<String> {
    let path =
        std::env::temp_dir().join(format!("allowlist-bench-{what}-{}.txt", std::process::id()));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    path.into_os_string()
        .into_string()
        .map_err(|path| anyhow::anyhow!("temporary path {path:?} is not UTF-8"))
}
