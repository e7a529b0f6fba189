//! The classification in the kernel against the longest-prefix match of the policy itself:
//! for random policies of both families, random and boundary addresses, every generation,
//! and the fallback the kernel takes by itself at a deadline, the program passes exactly the
//! sources the policy covers and counts the hit on the rule of their longest prefix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use allowlist_common::{Mode, RuleId};
use allowlist_daemon::dataplane::{Dataplane, Enforcement, Verdict};
use allowlist_daemon::policy::Policy;
use allowlist_tests::frames::udp_frame;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A xorshift generator: reproducible random policies and addresses.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `size` prefixes clustered in four /12s (so that they nest and touch), some lengths
/// short enough to cover whole buckets, rules `first_rule..`.
fn random_policy(random: &mut Random, size: u32, first_rule: RuleId) -> Vec<(IpNet, RuleId)> {
    (0..size)
        .map(|i| {
            let base = (random.next() % 4) as u32 * 0x0010_0000 + 0xc600_0000;
            let addr = base | (random.next() as u32 & 0x000f_ffff);
            let len = 6 + (random.next() % 27) as u8;
            let net = Ipv4Net::new(Ipv4Addr::from(addr), len)
                .expect("length at most 32")
                .trunc();
            (IpNet::V4(net), first_rule + i)
        })
        .collect()
}

/// `size` IPv6 prefixes clustered under four /40s of 2001:db8::/32, a few anywhere, rules
/// `first_rule..`.
fn random_policy_v6(random: &mut Random, size: u32, first_rule: RuleId) -> Vec<(IpNet, RuleId)> {
    (0..size)
        .map(|i| {
            let high = if random.next().is_multiple_of(8) {
                u128::from(random.next())
            } else {
                0x2001_0db8_0000_0000 | u128::from(random.next() % 4) << 24
            };
            let addr = high << 64 | u128::from(random.next()) << (random.next() % 40);
            let len = 20 + (random.next() % 109) as u8;
            let net = Ipv6Net::new(Ipv6Addr::from(addr), len)
                .expect("length at most 128")
                .trunc();
            (IpNet::V6(net), first_rule + i)
        })
        .collect()
}

/// Addresses at and around every prefix's edges, one inside each, and a random one each.
fn probes(random: &mut Random, prefixes: &[(IpNet, RuleId)]) -> Vec<IpAddr> {
    let mut probes: Vec<IpAddr> = Vec::new();
    for (net, _) in prefixes {
        let noise = u128::from(random.next()) << 64 | u128::from(random.next());
        match net {
            IpNet::V4(net) => {
                let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
                let inside = first | (noise as u32 & !u32::from(net.netmask()));
                let around = [
                    first.wrapping_sub(1),
                    first,
                    inside,
                    last,
                    last.wrapping_add(1),
                ];
                probes.extend(around.map(|a| IpAddr::V4(Ipv4Addr::from(a))));
                probes.push(IpAddr::V4(Ipv4Addr::from(noise as u32)));
            }
            IpNet::V6(net) => {
                let (first, last) = (u128::from(net.network()), u128::from(net.broadcast()));
                let inside = first | (noise & !u128::from(net.netmask()));
                let around = [
                    first.wrapping_sub(1),
                    first,
                    inside,
                    last,
                    last.wrapping_add(1),
                ];
                probes.extend(around.map(|a| IpAddr::V6(Ipv6Addr::from(a))));
                probes.push(IpAddr::V6(Ipv6Addr::from(noise)));
            }
        }
    }
    probes
}

/// Runs every probe through the program and checks verdict and rule hits against `policy`.
fn assert_classifies(dataplane: &Dataplane, policy: &Policy, probes: &[IpAddr], what: &str) {
    for source in probes {
        let expected = policy.lookup(*source).map(|(_, rule)| rule);
        let hits_before = expected.map(|rule| dataplane.readings().rule_hits(rule).expect("hits"));
        let verdict = dataplane
            .run_frame(&udp_frame(*source), 1)
            .expect("test run")
            .verdict;
        match expected {
            Some(rule) => {
                assert_eq!(verdict, Verdict::Pass, "{what}: {source} (rule {rule})");
                let hits = dataplane.readings().rule_hits(rule).expect("hits");
                assert_eq!(
                    Some(hits),
                    hits_before.map(|h| h + 1),
                    "{what}: {source} counted on rule {rule}"
                );
            }
            None => assert_eq!(verdict, Verdict::Drop, "{what}: {source}"),
        }
    }
}

#[test]
fn the_kernel_classifies_as_the_longest_prefix_match_in_every_generation() {
    let mut random = Random(0x5eed_1234_abcd_0001);
    let mut dataplane =
        Dataplane::load(8192, 1024).expect("loading the XDP program (are you root?)");
    dataplane.set_mode(Mode::Enforce).expect("enforce");
    for round in 0..6 {
        let mut prefixes = random_policy(&mut random, 50 + round * 150, round * 1000);
        prefixes.extend(random_policy_v6(
            &mut random,
            50 + round * 100,
            round * 1000 + 800,
        ));
        let policy: Policy = prefixes.iter().copied().collect();
        dataplane.apply(&policy).expect("applying the policy");
        let probes = probes(&mut random, &prefixes);
        assert_classifies(&dataplane, &policy, &probes, &format!("round {round}"));
    }
}

/// Policies of a few prefixes are answered by the generation's short list, one more by its
/// range table: every size across that boundary, both families, one generation after the
/// other (a short list written over a long one's generation, and back).
#[test]
fn the_kernel_classifies_policies_of_a_few_prefixes_as_the_longest_prefix_match() {
    let mut random = Random(0x5eed_1234_abcd_0003);
    let mut dataplane =
        Dataplane::load(8192, 1024).expect("loading the XDP program (are you root?)");
    dataplane.set_mode(Mode::Enforce).expect("enforce");
    let sizes = (0..3).flat_map(|_| (0..=7).chain([200, 3, 0]));
    for (step, size) in sizes.enumerate() {
        // Rules of their own in each step, below the capacity of 8192.
        let first_rule = step as RuleId * 240;
        let mut prefixes = random_policy(&mut random, size, first_rule);
        prefixes.extend(random_policy_v6(&mut random, size.min(5), first_rule + 210));
        let policy: Policy = prefixes.iter().copied().collect();
        dataplane.apply(&policy).expect("applying the policy");
        let probes = probes(&mut random, &prefixes);
        assert_classifies(
            &dataplane,
            &policy,
            &probes,
            &format!("step {step}, {size} prefixes"),
        );
    }
}

#[test]
fn the_fallback_generation_classifies_as_its_policy_after_the_deadline() {
    let mut random = Random(0x5eed_1234_abcd_0002);
    let mut dataplane =
        Dataplane::load(8192, 1024).expect("loading the XDP program (are you root?)");
    let mut old_prefixes = random_policy(&mut random, 300, 0);
    old_prefixes.extend(random_policy_v6(&mut random, 200, 300));
    let mut new_prefixes = random_policy(&mut random, 300, 1000);
    new_prefixes.extend(random_policy_v6(&mut random, 200, 1300));
    let old = Enforcement {
        policy: old_prefixes.iter().copied().collect(),
        mode: Mode::Enforce,
        ..Enforcement::default()
    };
    let new = Enforcement {
        policy: new_prefixes.iter().copied().collect(),
        ..old.clone()
    };
    dataplane.install(&old, None).expect("the old policy");
    let delay = Duration::from_millis(300);
    dataplane
        .install(&new, Some((&old, delay)))
        .expect("the new policy, pending");
    let mut probes = probes(&mut random, &old_prefixes);
    probes.extend(self::probes(&mut random, &new_prefixes));
    assert_classifies(&dataplane, &new.policy, &probes[..600], "pending");
    std::thread::sleep(delay + Duration::from_millis(50));
    assert!(dataplane.fell_back(), "the deadline passed");
    assert_classifies(&dataplane, &old.policy, &probes, "fallen back");
}
