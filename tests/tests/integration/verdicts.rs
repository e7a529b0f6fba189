//! Verdicts of the XDP program on crafted frames, run in the kernel with `BPF_PROG_TEST_RUN`,
//! and the counters after each.

use std::net::{Ipv4Addr, Ipv6Addr};

use allowlist_common::{Counter, Mode};
use allowlist_daemon::dataplane::{Dataplane, Verdict};
use allowlist_tests::frames::*;
use allowlist_tests::{counter, loaded, policy, verdict};

const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const DENIED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 2);
const DENIED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 9);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 1);

/// The policy of most tests: rule 0 allows ALLOWED_V4, rule 1 ALLOWED_V6's /64.
const POLICY: &[&str] = &["198.18.0.2", "fd00:a11::/64"];

/// Asserts the counters equal `expected` and every other counter is zero.
fn assert_counters(dataplane: &Dataplane, expected: &[(Counter, u64)]) {
    let counters = dataplane.readings().counters().expect("counters");
    for c in Counter::ALL {
        let want = expected
            .iter()
            .find(|(e, _)| *e == c)
            .map_or(0, |(_, n)| *n);
        assert_eq!(counters.get(c), want, "counter {} in {counters}", c.name());
    }
}

fn nd_frame(source: Ipv6Addr, icmp_type: u8, hop_limit: u8) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(
            source,
            SERVER_V6,
            IPPROTO_ICMPV6,
            hop_limit,
            &icmpv6(icmp_type),
        ),
    )
}

#[test]
fn ipv4_allowed_source_passes_and_denied_source_drops() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    assert_eq!(verdict(&dataplane, &udp4_frame(ALLOWED_V4)), Verdict::Pass);
    assert_eq!(verdict(&dataplane, &udp4_frame(ALLOWED_V4)), Verdict::Pass);
    assert_eq!(verdict(&dataplane, &udp4_frame(DENIED_V4)), Verdict::Drop);
    assert_eq!(
        verdict(&dataplane, &udp4_frame(Ipv4Addr::new(198, 18, 0, 3))),
        Verdict::Drop
    );
    assert_counters(
        &dataplane,
        &[(Counter::PassedAllowed, 2), (Counter::Dropped, 2)],
    );
    assert_eq!(dataplane.readings().rule_hits(0).expect("hits"), 2);
    assert_eq!(dataplane.readings().rule_hits(1).expect("hits"), 0);
}

#[test]
fn ipv6_allowed_source_passes_and_denied_source_drops() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    assert_eq!(verdict(&dataplane, &udp6_frame(ALLOWED_V6)), Verdict::Pass);
    assert_eq!(
        verdict(
            &dataplane,
            &udp6_frame("fd00:a11::ffff".parse().expect("literal"))
        ),
        Verdict::Pass
    );
    assert_eq!(verdict(&dataplane, &udp6_frame(DENIED_V6)), Verdict::Drop);
    assert_counters(
        &dataplane,
        &[(Counter::PassedAllowed, 2), (Counter::Dropped, 1)],
    );
    assert_eq!(dataplane.readings().rule_hits(1).expect("hits"), 2);
}

#[test]
fn frames_that_are_not_ip_pass() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    let lldp = ethernet(&[], ETH_P_LLDP, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]);
    let bare = ethernet(&[], 0x9000, &[]);
    let tagged_arp = ethernet(&[ETH_P_8021Q], ETH_P_ARP, &arp_frame()[14..]);
    for frame in [arp_frame(), lldp, bare, tagged_arp] {
        assert_eq!(verdict(&dataplane, &frame), Verdict::Pass, "{frame:02x?}");
    }
    assert_counters(&dataplane, &[(Counter::PassedNotIp, 4)]);
}

#[test]
fn neighbor_discovery_passes_only_as_rfc_4861_sends_it() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    let link_local = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
    for icmp_type in 133..=137 {
        assert_eq!(
            verdict(&dataplane, &nd_frame(link_local, icmp_type, 255)),
            Verdict::Pass,
            "type {icmp_type} from a link-local source"
        );
    }
    // Solicitations and advertisements of neighbours come from any address; router
    // advertisements and redirects only from a link-local one, solicitations of routers
    // also from the unspecified address.
    for (source, icmp_type, passes) in [
        (DENIED_V6, 135, true),
        (DENIED_V6, 136, true),
        (DENIED_V6, 133, false),
        (DENIED_V6, 134, false),
        (DENIED_V6, 137, false),
        (Ipv6Addr::UNSPECIFIED, 133, true),
        (Ipv6Addr::UNSPECIFIED, 135, true),
    ] {
        assert_eq!(
            verdict(&dataplane, &nd_frame(source, icmp_type, 255)) == Verdict::Pass,
            passes,
            "type {icmp_type} from {source}"
        );
    }
    // Any code but 0 is not ND.
    let mut coded = icmpv6(135);
    coded[1] = 1;
    let coded = ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(DENIED_V6, SERVER_V6, IPPROTO_ICMPV6, 255, &coded),
    );
    assert_eq!(verdict(&dataplane, &coded), Verdict::Drop, "code 1");
    // Forged ND that crossed a router (hop limit below 255), other ICMPv6, and ND hidden
    // behind an extension header are held to the allowlist.
    assert_eq!(
        verdict(&dataplane, &nd_frame(DENIED_V6, 135, 64)),
        Verdict::Drop
    );
    assert_eq!(
        verdict(&dataplane, &nd_frame(DENIED_V6, 128, 255)),
        Verdict::Drop
    );
    assert_eq!(
        verdict(&dataplane, &nd_frame(DENIED_V6, 132, 255)),
        Verdict::Drop
    );
    assert_eq!(
        verdict(&dataplane, &nd_frame(DENIED_V6, 138, 255)),
        Verdict::Drop
    );
    let mut hop_by_hop = vec![IPPROTO_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&icmpv6(135));
    let hidden = ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(DENIED_V6, SERVER_V6, IPPROTO_HOPOPTS, 255, &hop_by_hop),
    );
    assert_eq!(verdict(&dataplane, &hidden), Verdict::Drop);
    // ND from an allowed source is simply allowed.
    assert_eq!(
        verdict(&dataplane, &nd_frame(ALLOWED_V6, 135, 255)),
        Verdict::Pass
    );
    assert_counters(
        &dataplane,
        &[
            (Counter::PassedNeighborDiscovery, 9),
            (Counter::Dropped, 9),
            (Counter::PassedAllowed, 1),
        ],
    );
}

#[test]
fn vlan_tagged_frames_are_filtered_on_the_inner_source() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    let v4 = |source| ipv4(source, SERVER_V4, &[], IPPROTO_UDP, &udp(1, 2));
    let v6 = |source| ipv6(source, SERVER_V6, IPPROTO_UDP, 64, &udp(1, 2));
    for tags in [
        &[ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q],
        &[ETH_P_8021Q, ETH_P_8021Q],
    ] {
        assert_eq!(
            verdict(&dataplane, &ethernet(tags, ETH_P_IPV4, &v4(ALLOWED_V4))),
            Verdict::Pass
        );
        assert_eq!(
            verdict(&dataplane, &ethernet(tags, ETH_P_IPV4, &v4(DENIED_V4))),
            Verdict::Drop
        );
        assert_eq!(
            verdict(&dataplane, &ethernet(tags, ETH_P_IPV6, &v6(ALLOWED_V6))),
            Verdict::Pass
        );
        assert_eq!(
            verdict(&dataplane, &ethernet(tags, ETH_P_IPV6, &v6(DENIED_V6))),
            Verdict::Drop
        );
    }
    // Beyond two tags what the frame carries is not seen: refused, whatever its source.
    for source in [ALLOWED_V4, DENIED_V4] {
        let three = ethernet(
            &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
            ETH_P_IPV4,
            &v4(source),
        );
        assert_eq!(verdict(&dataplane, &three), Verdict::Drop, "{source}");
    }
    // PPPoE sessions carry IP inside PPP: not IP at this layer (a host that terminates
    // PPPoE attaches the program to its ppp interface too).
    let pppoe = ethernet(&[], 0x8864, &[0x11, 0, 0, 1, 0, 22, 0, 0x21]);
    assert_eq!(verdict(&dataplane, &pppoe), Verdict::Pass);
    assert_counters(
        &dataplane,
        &[
            (Counter::PassedAllowed, 6),
            (Counter::Dropped, 6),
            (Counter::Malformed, 2),
            (Counter::PassedNotIp, 1),
        ],
    );
}

#[test]
fn ipv4_options_do_not_move_the_source() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    // Record route (7) padded to 12 bytes, and the 40-byte maximum.
    for options in [vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1], vec![1; 40]] {
        let allowed = ethernet(
            &[],
            ETH_P_IPV4,
            &ipv4(ALLOWED_V4, SERVER_V4, &options, IPPROTO_UDP, &udp(1, 2)),
        );
        let denied = ethernet(
            &[],
            ETH_P_IPV4,
            &ipv4(DENIED_V4, SERVER_V4, &options, IPPROTO_UDP, &udp(1, 2)),
        );
        assert_eq!(verdict(&dataplane, &allowed), Verdict::Pass);
        assert_eq!(verdict(&dataplane, &denied), Verdict::Drop);
    }
    assert_counters(
        &dataplane,
        &[(Counter::PassedAllowed, 2), (Counter::Dropped, 2)],
    );
}

#[test]
fn ipv6_extension_headers_do_not_move_the_source() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    // Hop-by-hop (8 bytes) then a routing header (8 bytes) then UDP.
    let mut chain = vec![IPPROTO_ROUTING, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&[IPPROTO_UDP, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&udp(1, 2));
    for (source, expected) in [(ALLOWED_V6, Verdict::Pass), (DENIED_V6, Verdict::Drop)] {
        let frame = ethernet(
            &[],
            ETH_P_IPV6,
            &ipv6(source, SERVER_V6, IPPROTO_HOPOPTS, 64, &chain),
        );
        assert_eq!(verdict(&dataplane, &frame), expected);
    }
    assert_counters(
        &dataplane,
        &[(Counter::PassedAllowed, 1), (Counter::Dropped, 1)],
    );
}

#[test]
fn frames_truncated_at_every_length_are_judged_by_what_they_hold() {
    let frames = [
        udp4_frame(ALLOWED_V4),
        udp4_frame(DENIED_V4),
        udp6_frame(ALLOWED_V6),
        udp6_frame(DENIED_V6),
        ethernet(
            &[ETH_P_8021AD, ETH_P_8021Q],
            ETH_P_IPV4,
            &ipv4(DENIED_V4, SERVER_V4, &[], IPPROTO_UDP, &udp(1, 2)),
        ),
        ethernet(
            &[ETH_P_8021Q],
            ETH_P_IPV6,
            &ipv6(DENIED_V6, SERVER_V6, IPPROTO_UDP, 64, &udp(1, 2)),
        ),
        nd_frame(DENIED_V6, 135, 255),
    ];
    let allowed = policy(POLICY);
    for mode in [Mode::Enforce, Mode::Monitor] {
        let dataplane = loaded(POLICY, mode);
        let mut malformed = 0;
        for frame in &frames {
            // The kernel's test run needs at least an Ethernet header.
            for len in 14..=frame.len() {
                let cut = &frame[..len];
                let expected = match carried(cut) {
                    Carried::NotIp => Verdict::Pass,
                    Carried::Truncated => {
                        malformed += 1;
                        if mode == Mode::Enforce {
                            Verdict::Drop
                        } else {
                            Verdict::Pass
                        }
                    }
                    Carried::Ip {
                        source,
                        neighbor_discovery,
                    } => {
                        if allowed.lookup(source).is_some() || neighbor_discovery == Some(true) {
                            Verdict::Pass
                        } else {
                            if neighbor_discovery.is_none() {
                                malformed += 1;
                            }
                            if mode == Mode::Enforce {
                                Verdict::Drop
                            } else {
                                Verdict::Pass
                            }
                        }
                    }
                };
                assert_eq!(
                    verdict(&dataplane, cut),
                    expected,
                    "{mode:?}, {len} of {} bytes: {cut:02x?}",
                    frame.len()
                );
            }
        }
        assert!(malformed > 0);
        assert_eq!(
            counter(&dataplane, Counter::Malformed),
            malformed,
            "{mode:?}"
        );
    }
}

#[test]
fn a_host_route_inside_an_allowed_prefix_can_come_and_go() {
    let mut dataplane = loaded(&["198.18.0.0/24", "198.18.0.2"], Mode::Enforce);
    let frame = udp4_frame(ALLOWED_V4);
    assert_eq!(verdict(&dataplane, &frame), Verdict::Pass);
    assert_eq!(
        dataplane.readings().rule_hits(1).expect("hits"),
        1,
        "the /32 is the longest match"
    );

    dataplane.apply(&policy(&["198.18.0.0/24"])).expect("apply");
    assert_eq!(
        verdict(&dataplane, &frame),
        Verdict::Pass,
        "still inside the /24"
    );
    assert_eq!(dataplane.readings().rule_hits(0).expect("hits"), 1);

    dataplane.apply(&policy(&["198.18.1.0/24"])).expect("apply");
    assert_eq!(verdict(&dataplane, &frame), Verdict::Drop);
    assert_eq!(
        verdict(&dataplane, &udp4_frame(Ipv4Addr::new(198, 18, 1, 200))),
        Verdict::Pass
    );
    assert_eq!(dataplane.installed(), Some(&policy(&["198.18.1.0/24"])));
}

#[test]
fn each_mode_does_what_it_says() {
    let denied = udp4_frame(DENIED_V4);
    let truncated = &udp6_frame(DENIED_V6)[..30];
    let allowed = udp6_frame(ALLOWED_V6);

    let mut dataplane = loaded(POLICY, Mode::Off);
    for frame in [&denied[..], truncated, &allowed, &arp_frame()] {
        assert_eq!(verdict(&dataplane, frame), Verdict::Pass);
    }
    assert_counters(&dataplane, &[]);

    dataplane.set_mode(Mode::Monitor).expect("mode");
    for frame in [&denied[..], truncated, &allowed] {
        assert_eq!(verdict(&dataplane, frame), Verdict::Pass);
    }
    assert_counters(
        &dataplane,
        &[
            (Counter::WouldDrop, 1),
            (Counter::Malformed, 1),
            (Counter::PassedAllowed, 1),
        ],
    );

    dataplane.set_mode(Mode::Enforce).expect("mode");
    assert_eq!(verdict(&dataplane, &denied), Verdict::Drop);
    assert_eq!(verdict(&dataplane, truncated), Verdict::Drop);
    assert_eq!(verdict(&dataplane, &allowed), Verdict::Pass);
    assert_counters(
        &dataplane,
        &[
            (Counter::WouldDrop, 1),
            (Counter::Malformed, 2),
            (Counter::PassedAllowed, 2),
            (Counter::Dropped, 1),
        ],
    );
}

#[test]
fn an_empty_policy_in_enforce_mode_drops_all_ip_but_not_arp() {
    let dataplane = loaded(&[], Mode::Enforce);
    assert_eq!(verdict(&dataplane, &udp4_frame(ALLOWED_V4)), Verdict::Drop);
    assert_eq!(verdict(&dataplane, &udp6_frame(ALLOWED_V6)), Verdict::Drop);
    assert_eq!(verdict(&dataplane, &arp_frame()), Verdict::Pass);
}

#[test]
fn repeated_runs_count_every_packet() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    let run = dataplane
        .run_frame(&udp4_frame(ALLOWED_V4), 1000)
        .expect("test run");
    assert_eq!(run.verdict, Verdict::Pass);
    assert_eq!(counter(&dataplane, Counter::PassedAllowed), 1000);
    assert_eq!(dataplane.readings().rule_hits(0).expect("hits"), 1000);
}

#[test]
fn hits_are_exact_to_the_first_segment_and_within_a_few_percent_beyond() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    let exact = u64::from(allowlist_common::rule_stats::EXACT_HITS);
    dataplane
        .run_frame(&udp4_frame(ALLOWED_V4), exact as u32 - 1)
        .expect("test run");
    assert_eq!(dataplane.readings().rule_hits(0).expect("hits"), exact - 1);
    // A million more, counted one in 2^s in segment s: the estimate within 5 %.
    dataplane
        .run_frame(&udp4_frame(ALLOWED_V4), 1_000_001)
        .expect("test run");
    let total = exact + 1_000_000;
    let hits = dataplane.readings().rule_hits(0).expect("hits");
    let off = (hits as f64 - total as f64).abs() / total as f64;
    assert!(
        off < 0.05,
        "{hits} hits counted of {total}: off by {off:.4}"
    );
    assert_eq!(
        counter(&dataplane, Counter::PassedAllowed),
        total,
        "the packet counters stay exact"
    );
    let table = dataplane.readings().rule_table(2).expect("table");
    let ago = table.get(0).last_hit_ago.expect("a last hit");
    assert!(ago < std::time::Duration::from_secs(2), "{ago:?}");
}

#[test]
fn hits_of_a_rule_given_up_start_again_from_zero() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    for _ in 0..3 {
        assert_eq!(verdict(&dataplane, &udp4_frame(ALLOWED_V4)), Verdict::Pass);
    }
    assert_eq!(verdict(&dataplane, &udp6_frame(ALLOWED_V6)), Verdict::Pass);
    let before = dataplane.readings().rule_table(2).expect("table");
    assert_eq!(before.get(0).hits, 3);
    assert!(
        before.get(0).last_hit_ago.is_some(),
        "the last hit is noted"
    );
    assert_eq!(before.get(1).hits, 1);

    dataplane.reset_rule_hits(&[0]).expect("reset");
    let after = dataplane.readings().rule_table(2).expect("table");
    assert_eq!(after.get(0).hits, 0);
    assert_eq!(after.get(0).last_hit_ago, None);
    assert_eq!(after.get(1).hits, 1, "other rules keep their hits");
    assert_eq!(dataplane.readings().rule_hits(0).expect("hits"), 0);
}

#[test]
fn refused_sources_are_counted_exactly_when_every_cpu_counts_at_once() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_top_sample(1)
        .expect("note every refused packet");
    let frame = udp4_frame(DENIED_V4);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    const RUNS: u32 = 200_000;
    // One thread per CPU, each pinned there, all running the program on the same source.
    std::thread::scope(|scope| {
        for cpu in 0..cpus {
            let (dataplane, frame) = (&dataplane, &frame);
            scope.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).expect("cpu");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .expect("pin the thread");
                for _ in 0..5 {
                    dataplane.run_frame(frame, RUNS / 5).expect("test run");
                }
            });
        }
    });
    let sources = dataplane.readings().top_sources().expect("top sources");
    let noted: u64 = sources
        .iter()
        .filter(|source| source.address == std::net::IpAddr::V4(DENIED_V4))
        .map(|source| source.noted)
        .sum();
    assert_eq!(
        noted,
        u64::from(RUNS) * cpus as u64,
        "every refused packet noted once, on {cpus} CPUs at once"
    );
}
