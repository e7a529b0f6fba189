//! What a running preview costs a packet: the program on one repeated frame, without a
//! preview and with one whose candidate would drop the allowed sources (each of their
//! packets counted in the preview's map), interleaved.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::Mode;
use allowlist_daemon::dataplane::Enforcement;
use allowlist_tests::frames::udp_frame;
use ipnet::IpNet;

use crate::measure::{INTERLEAVED_RUNS, REPEAT, interleaved, verdict};
use crate::replies::{ALLOWED_V4, ALLOWED_V6, DENIED_V4, DENIED_V6, loaded};
/// What a running preview may cost a packet whose verdict the candidate keeps (judged
/// again, nothing written).
const KEPT_TARGET_NS: f64 = 50.0;
/// What it may cost a packet whose verdict the candidate would change: judged again and
/// counted for its source in a per-CPU hash map, as exact accounting per source needs.
const CHANGED_TARGET_NS: f64 = 150.0;

/// Measures a preview's cost and writes its section of the report.
pub fn preview_section(text: &mut String) -> anyhow::Result<()> {
    let (mut dataplane, policy) = loaded()?;
    let allowed = [IpAddr::V4(ALLOWED_V4), IpAddr::V6(ALLOWED_V6)].map(IpNet::from);
    let candidate = Enforcement {
        policy: policy
            .iter()
            .filter(|(net, _)| !allowed.contains(net))
            .map(|(net, rule)| (*net, *rule))
            .collect(),
        scopes: Default::default(),
        mode: Mode::Enforce,
    };
    // (name, source, whether the candidate changes its verdict)
    let cases = [
        (
            "IPv4, allowed source (the candidate would drop it)",
            IpAddr::V4(ALLOWED_V4),
            true,
        ),
        ("IPv4, denied source", IpAddr::V4(DENIED_V4), false),
        (
            "IPv6, allowed source (the candidate would drop it)",
            IpAddr::V6(ALLOWED_V6),
            true,
        ),
        ("IPv6, denied source", IpAddr::V6(DENIED_V6), false),
    ];
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .map(|(_, source, _)| udp_frame(*source))
        .collect();
    let medians = interleaved(&mut dataplane, &frames, |dataplane, running| {
        match running {
            true => dataplane.start_preview(&candidate, Duration::from_secs(600))?,
            false => dataplane.stop_preview()?,
        }
        Ok(())
    })?;
    dataplane.stop_preview()?;

    writeln!(text, "\n## A preview running\n")?;
    writeln!(
        text,
        "Per-packet time of the XDP program (`BPF_PROG_TEST_RUN`, repeat {REPEAT}, median of \
         {INTERLEAVED_RUNS} interleaved runs), the policy of the reply check's section, replies on, without \
         a preview and with one whose candidate is the same policy without the allowed \
         sources: their packets are judged again and counted in the preview's map, the denied \
         ones only judged again.\n"
    )?;
    writeln!(
        text,
        "| packet | no preview (ns) | a preview running (ns) | difference (ns) |"
    )?;
    writeln!(text, "|---|---:|---:|---:|")?;
    // The worst difference of the packets whose verdict is kept, and of those it changes.
    let (mut kept, mut changed) = (f64::MIN, f64::MIN);
    for ((name, _, changes), [without, with]) in cases.iter().zip(medians) {
        writeln!(
            text,
            "| {name} | {without:.0} | {with:.0} | {:+.0} |",
            with - without
        )?;
        let worst = if *changes { &mut changed } else { &mut kept };
        *worst = worst.max(with - without);
    }
    writeln!(
        text,
        "\n| target | measured | verdict |\n|---|---:|---|\n\
         | a packet whose verdict the candidate keeps: at most {KEPT_TARGET_NS:.0} ns more \
         | {kept:+.0} ns | {} |\n\
         | a packet whose verdict it would change (counted for its source): at most \
         {CHANGED_TARGET_NS:.0} ns more | {changed:+.0} ns | {} |",
        verdict(kept <= KEPT_TARGET_NS),
        verdict(changed <= CHANGED_TARGET_NS),
    )?;
    writeln!(
        text,
        "\nWithout a preview the program tests one word of its configuration per packet. \
         With one, it reads the packet again and looks its source up in the candidate's \
         generation (and, when the policy in force passed it, the flow table, since a reply \
         passes any policy); a packet whose verdict would change is then counted in a per-CPU \
         LRU hash map, whose lookup and update are most of its cost."
    )?;
    Ok(())
}
