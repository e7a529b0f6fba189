//! Double-buffered policies in the kernel: a pending change falls back by itself at its
//! deadline, with no daemon involved; switching between policies never mixes them.
//! Verdicts are taken with `BPF_PROG_TEST_RUN`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use allowlist_common::Mode;
use allowlist_daemon::dataplane::{Dataplane, Enforcement, Verdict};
use allowlist_daemon::policy::Policy;
use allowlist_tests::frames::udp4_frame;

/// Four sources, each allowed by exactly one of the policies below.
const SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(198, 18, 0, 10),
    Ipv4Addr::new(198, 18, 0, 11),
    Ipv4Addr::new(198, 18, 0, 12),
    Ipv4Addr::new(198, 18, 0, 13),
];

/// An enforcing policy that allows `SOURCES[which]` plus `extra` other /32s (rules from
/// `which * 10_000`).
fn only(which: usize, extra: u32) -> Enforcement {
    let base = which as u32 * 10_000;
    let others = (0..extra).map(|n| {
        let addr = Ipv4Addr::from(0x0a00_0000 + (which as u32) * 0x0010_0000 + n);
        (IpAddr::V4(addr).into(), base + 1 + n)
    });
    let policy: Policy = std::iter::once((IpAddr::V4(SOURCES[which]).into(), base))
        .chain(others)
        .collect();
    Enforcement {
        policy,
        scopes: BTreeSet::new(),
        mode: Mode::Enforce,
    }
}

/// Which of `SOURCES` pass.
fn passing(dataplane: &Dataplane) -> Vec<usize> {
    (0..SOURCES.len())
        .filter(|&i| {
            let run = dataplane
                .run_frame(&udp4_frame(SOURCES[i]), 1)
                .expect("test run");
            run.verdict == Verdict::Pass
        })
        .collect()
}

#[test]
fn a_pending_change_falls_back_in_the_kernel_at_its_deadline() {
    let mut dataplane = Dataplane::load(65_536, 1024).expect("load (are you root?)");
    dataplane.install(&only(0, 0), None).expect("install");
    assert_eq!(passing(&dataplane), [0]);

    let delay = Duration::from_millis(400);
    dataplane
        .install(&only(1, 0), Some((&only(0, 0), delay)))
        .expect("pending change");
    assert_eq!(passing(&dataplane), [1], "the change is in force");
    let state = dataplane.kernel_state();
    let (fallback, _) = state.fallback.expect("a fallback");
    assert_eq!((fallback.prefixes, fallback.mode), (1, Mode::Enforce));
    assert!(fallback.digest.is_some(), "its record names the policy");
    assert_ne!(fallback.digest, state.active.digest);

    std::thread::sleep(delay + Duration::from_millis(100));
    assert_eq!(
        passing(&dataplane),
        [0],
        "the program fell back by itself at the deadline"
    );
    assert_eq!(
        dataplane.kernel_state().fallback.map(|f| f.1),
        Some(Duration::ZERO)
    );
}

#[test]
fn an_acknowledgement_keeps_the_change_past_the_deadline() {
    let mut dataplane = Dataplane::load(65_536, 1024).expect("load");
    dataplane.install(&only(0, 0), None).expect("install");
    let delay = Duration::from_millis(300);
    dataplane
        .install(&only(1, 0), Some((&only(0, 0), delay)))
        .expect("pending change");
    dataplane.install(&only(1, 0), None).expect("acknowledge");
    std::thread::sleep(delay + Duration::from_millis(100));
    assert_eq!(passing(&dataplane), [1]);
    assert_eq!(dataplane.kernel_state().fallback, None);
}

#[test]
fn changes_while_a_change_is_pending_keep_both_policies_whole() {
    let mut dataplane = Dataplane::load(65_536, 1024).expect("load");
    dataplane.install(&only(0, 1000), None).expect("install");
    let long = Duration::from_secs(60);
    dataplane
        .install(&only(1, 1000), Some((&only(0, 1000), long)))
        .expect("first pending change");
    assert_eq!(passing(&dataplane), [1]);

    // Both the change and what it falls back to change: every generation in use is needed
    // until the switch, so this goes through an intermediate configuration.
    // Long enough for the writes of a debug build on a busy machine.
    let delay = Duration::from_millis(1500);
    dataplane
        .install(&only(2, 1000), Some((&only(3, 1000), delay)))
        .expect("second pending change");
    assert_eq!(passing(&dataplane), [2]);
    assert_eq!(dataplane.installed(), Some(&only(2, 1000).policy));
    std::thread::sleep(delay + Duration::from_millis(100));
    assert_eq!(passing(&dataplane), [3], "fell back to the new fallback");

    // Back to a policy some generation still holds: nothing to write, one switch.
    dataplane.install(&only(0, 1000), None).expect("install");
    assert_eq!(passing(&dataplane), [0]);
}
