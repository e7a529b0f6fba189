//! Property: in enforce mode, no random frame passes as IP from a source outside the policy.

use std::net::IpAddr;

use allowlist_common::Mode;
use allowlist_daemon::dataplane::Verdict;
use allowlist_tests::frames::{
    Carried, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMPV6, carried,
};
use allowlist_tests::{loaded, policy};
use proptest::prelude::*;

const POLICY: &[&str] = &["198.18.0.0/24", "10.0.0.1", "fd00:a11::/64", "2001:db8::1"];

/// Sources planted in frames: some allowed, some not.
fn planted_source() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        Just("198.18.0.7".parse().expect("literal")),
        Just("10.0.0.1".parse().expect("literal")),
        Just("10.0.0.2".parse().expect("literal")),
        Just("203.0.113.1".parse().expect("literal")),
        Just("fd00:a11::9".parse().expect("literal")),
        Just("fd00:a12::9".parse().expect("literal")),
        Just("2001:db8::1".parse().expect("literal")),
        Just("2001:db8::2".parse().expect("literal")),
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn ether_type() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(ETH_P_IPV4),
        4 => Just(ETH_P_IPV6),
        1 => Just(ETH_P_ARP),
        1 => any::<u16>(),
    ]
}

prop_compose! {
    /// A frame with 0-3 VLAN tags, an ethertype, a random body with a planted source address
    /// and sometimes an ND-looking ICMPv6 header, cut to a random length.
    fn frame()(
        tags in prop::collection::vec(prop_oneof![Just(ETH_P_8021Q), Just(ETH_P_8021AD), any::<u16>()], 0..=3),
        ether_type in ether_type(),
        mut body in prop::collection::vec(any::<u8>(), 0..80),
        source in planted_source(),
        nd_like in any::<bool>(),
        icmp_type in 128u8..140,
        cut in any::<prop::sample::Index>(),
    ) -> Vec<u8> {
        body.resize(body.len().max(48), 0);
        match (ether_type, source) {
            (ETH_P_IPV4, IpAddr::V4(v4)) => body[12..16].copy_from_slice(&v4.octets()),
            (ETH_P_IPV6, IpAddr::V6(v6)) => {
                body[8..24].copy_from_slice(&v6.octets());
                if nd_like {
                    body[6] = IPPROTO_ICMPV6;
                    body[7] = 255;
                    body[40] = icmp_type;
                }
            }
            _ => {}
        }
        let mut frame = vec![0u8; 12];
        for tag in &tags {
            frame.extend_from_slice(&tag.to_be_bytes());
            frame.extend_from_slice(&[0, 1]);
        }
        frame.extend_from_slice(&ether_type.to_be_bytes());
        frame.extend_from_slice(&body);
        let len = 14 + cut.index(frame.len() - 14 + 1);
        frame.truncate(len);
        frame
    }
}

#[test]
fn no_frame_passes_as_ip_from_outside_the_policy() {
    let allowed = policy(POLICY);
    let dataplane = loaded(POLICY, Mode::Enforce);
    let config = ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    };
    proptest!(config, |(frame in frame())| {
        let run = dataplane.run_frame(&frame, 1).expect("test run");
        match carried(&frame) {
            Carried::Ip { source, neighbor_discovery } if allowed.lookup(source).is_none() => {
                let expected = if neighbor_discovery == Some(true) { Verdict::Pass } else { Verdict::Drop };
                prop_assert_eq!(run.verdict, expected, "source {} in {:02x?}", source, frame);
            }
            Carried::Truncated => prop_assert_eq!(run.verdict, Verdict::Drop),
            _ => prop_assert_eq!(run.verdict, Verdict::Pass),
        }
    });
}
