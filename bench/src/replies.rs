//! What the reply check costs: the program on one repeated frame, replies off and on.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use allowlist_common::Mode;
use allowlist_daemon::dataplane::{Dataplane, Replies};
use allowlist_daemon::policy::Policy;
use allowlist_tests::frames::udp_frame;
use anyhow::Context as _;
use ipnet::IpNet;

use crate::measure::{INTERLEAVED_RUNS, REPEAT, interleaved, verdict};
use crate::sources::Xorshift;

/// Prefixes in the policy besides the allowed sources.
const PREFIXES: u32 = 1000;

pub const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const DENIED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
pub const ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 2);
pub const DENIED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 9);

/// `PREFIXES` random prefixes of realistic lengths (half IPv4 /8-/32, half IPv6 /16-/128)
/// that avoid the denied sources, plus the allowed sources as /32 and /128.
pub fn policy() -> Policy {
    let mut random = Xorshift(0x5eed_a11c_0ffe_e000);
    let mut rules: Vec<(IpNet, u32)> = vec![
        (IpNet::from(IpAddr::V4(ALLOWED_V4)), 0),
        (IpNet::from(IpAddr::V6(ALLOWED_V6)), 1),
    ];
    while rules.len() < PREFIXES as usize + 2 {
        let rule = rules.len() as u32;
        let net = if rule.is_multiple_of(2) {
            let len = 8 + (random.next() % 25) as u8;
            IpNet::new(IpAddr::V4(Ipv4Addr::from(random.next() as u32)), len)
        } else {
            let len = 16 + (random.next() % 113) as u8;
            let bits = (u128::from(random.next()) << 64) | u128::from(random.next());
            IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
        };
        let Ok(net) = net else { continue };
        let net = net.trunc();
        if net.contains(&IpAddr::V4(DENIED_V4)) || net.contains(&IpAddr::V6(DENIED_V6)) {
            continue;
        }
        rules.push((net, rule));
    }
    rules.into_iter().collect()
}

/// The program loaded (its own maps, not attached), enforcing [`policy`], which it returns.
pub fn loaded() -> anyhow::Result<(Dataplane, Policy)> {
    let mut dataplane =
        Dataplane::load(4096, 4096).context("loading the XDP program (are you root?)")?;
    let policy = policy();
    dataplane.apply(&policy).context("writing the policy")?;
    dataplane.set_mode(Mode::Enforce)?;
    Ok((dataplane, policy))
}

/// Measures the reply check and writes its section of the report.
pub fn reply_check(text: &mut String) -> anyhow::Result<()> {
    eprintln!("allowlist-bench: the reply check");
    let (mut dataplane, _) = loaded()?;
    let cases = [
        ("IPv4, allowed source", IpAddr::V4(ALLOWED_V4)),
        ("IPv4, denied source", IpAddr::V4(DENIED_V4)),
        ("IPv6, allowed source", IpAddr::V6(ALLOWED_V6)),
        ("IPv6, denied source", IpAddr::V6(DENIED_V6)),
    ];
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, source)| udp_frame(*source)).collect();
    let medians = interleaved(&mut dataplane, &frames, |dataplane, enabled| {
        Ok(dataplane.set_replies(Replies {
            enabled,
            ..Replies::default()
        })?)
    })?;

    writeln!(text, "\n## The reply check\n")?;
    writeln!(
        text,
        "Per-packet time of the XDP program as the kernel measures it (`BPF_PROG_TEST_RUN`, \
         repeat {REPEAT}, median of {INTERLEAVED_RUNS} interleaved runs), enforce mode, {PREFIXES} random \
         prefixes plus the allowed sources, the same UDP frame repeated. The check for replies \
         to flows the host started runs only for sources outside the allowlist: an allowed \
         source should cost the same with replies on and off.\n"
    )?;
    writeln!(
        text,
        "| packet | replies off (ns) | replies on (ns) | difference (ns) | ratio on/off |"
    )?;
    writeln!(text, "|---|---:|---:|---:|---:|")?;
    let (mut allowed_costs, mut denied_costs) = (Vec::new(), Vec::new());
    for ((name, _), [off, on]) in cases.iter().zip(medians) {
        writeln!(
            text,
            "| {name} | {off:.0} | {on:.0} | {:+.0} | {:.2} |",
            on - off,
            on / off
        )?;
        if name.contains("allowed") {
            allowed_costs.push(on - off);
        } else {
            denied_costs.push(on - off);
        }
    }
    let worst = |costs: &[f64]| costs.iter().copied().fold(f64::MIN, f64::max);
    let (allowed, denied) = (worst(&allowed_costs), worst(&denied_costs));
    writeln!(
        text,
        "\n| target | measured | verdict |\n|---|---:|---|\n\
         | the reply check costs an allowed source under 5 ns | at most {allowed:+.0} ns | {} |\n\
         | the reply check costs a denied source at most 20 ns | at most {denied:+.0} ns | {} |",
        verdict(allowed < 5.0),
        verdict(denied <= 20.0)
    )?;
    writeln!(
        text,
        "\nThe kernel reports whole nanoseconds. A denied source's reply check reads one byte of \
         the flow filter (128 KiB, a byte per slot, set by the egress program for every flow the \
         host starts) and searches the flow map only when that byte is set: a flood of random \
         sources no longer pays a flow map lookup that misses. The daemon renews the filter \
         every 10 s from the flows still live."
    )?;
    Ok(())
}
