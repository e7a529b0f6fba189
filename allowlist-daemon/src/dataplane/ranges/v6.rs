//! A policy's IPv6 prefixes as one generation of the IPv6 range table (the layout and the
//! lookup are `allowlist_common::ranges::v6`). Pure: built in one pass over the sorted
//! prefixes and handed out bucket by bucket, range by range, so that the table is written
//! as it is made.

use allowlist_common::RuleId;
use allowlist_common::ranges::v6::{
    V6_MAX_REGION_BITS, V6Header, V6Words, inline_bucket_v6, with_quarters,
};
use allowlist_common::ranges::{BUCKET_COUNT, NO_RULE, RangeBucket, listed_bucket};
use ipnet::IpNet;

use super::points::{Summary, change_points, split_buckets, uniform};
use crate::policy::Policy;

/// The IPv6 prefixes of `policy` as (first address, last address, rule).
fn prefixes(policy: &Policy) -> Vec<(u128, u128, RuleId)> {
    policy
        .iter()
        .filter_map(|(net, rule)| match net {
            IpNet::V6(net) => Some((
                u128::from(net.network()),
                u128::from(net.broadcast()),
                *rule,
            )),
            IpNet::V4(_) => None,
        })
        .collect()
}

/// `addr` as the table stores it.
fn words(addr: u128) -> V6Words {
    [(addr >> 64) as u64, addr as u64]
}

/// The blocks of a bucket that hold an allowed address, given its ranges (first addresses
/// relative to the bucket's first, and rules), its span and its block size (both powers of
/// two, as shifts).
fn covered_blocks(starts: &[u128], rules: &[RuleId], span_bits: u32) -> [u64; 4] {
    let block_bits = span_bits - 8;
    let mut covered = [0u64; 4];
    for (i, (start, rule)) in starts.iter().zip(rules).enumerate() {
        if *rule == NO_RULE {
            continue;
        }
        let last = starts
            .get(i + 1)
            .map_or((1u128 << span_bits) - 1, |next| next - 1);
        for block in (start >> block_bits)..=(last >> block_bits) {
            covered[(block / 64) as usize] |= 1 << (block % 64);
        }
    }
    covered
}

/// Builds `policy`'s IPv6 range table in one pass: each bucket in order to `bucket`, then
/// each range a bucket lists in the shared arrays, in order, to `range` (its first address,
/// its rule). Returns the header, the summary (a bit per bucket that holds an allowed
/// address).
pub(super) fn build<E>(
    policy: &Policy,
    mut bucket: impl FnMut(RangeBucket) -> Result<(), E>,
    mut range: impl FnMut(V6Words, RuleId) -> Result<(), E>,
) -> Result<(V6Header, Vec<u64>), E> {
    let points = change_points(prefixes(policy));
    // The region: the prefix every change point after address 0 shares.
    let (region_bits, region) = match (points.get(1), points.last()) {
        (Some(first), Some(last)) => {
            let bits = (first.0 ^ last.0).leading_zeros().min(V6_MAX_REGION_BITS);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (bits, first.0 & mask)
        }
        _ => (0, 0),
    };
    let rule_above = points.last().map_or(NO_RULE, |p| p.1);
    let header = V6Header {
        region_bits,
        rule_above,
        region: words(region),
        rule_below: points[0].1,
        reserved: 0,
    };
    let span_bits = 128 - 16 - region_bits;
    let bounds = |bucket: u32| {
        let first = region | u128::from(bucket) << span_bits;
        (first, first | ((1u128 << span_bits) - 1))
    };
    let mut summary = Summary::default();
    let mut listed = 0;
    for points in split_buckets(&points, BUCKET_COUNT, bounds) {
        if points.inside.is_empty() {
            let line = with_quarters(uniform(points.rule));
            if let Some(line) = summary.note(line, points.rule != NO_RULE) {
                bucket(line)?;
            }
            continue;
        }
        let (starts, rules) = points.ranges();
        let first_addresses: Vec<V6Words> = starts
            .iter()
            .map(|start| words(points.first + start))
            .collect();
        let covered = covered_blocks(&starts, &rules, span_bits);
        if let Some(inline) = inline_bucket_v6(&first_addresses, &rules, covered) {
            if let Some(line) = summary.note(inline, covered != [0; 4]) {
                bucket(line)?;
            }
            continue;
        }
        for (start, rule) in first_addresses.iter().zip(&rules) {
            range(*start, *rule)?;
        }
        let line = with_quarters(RangeBucket::with_blocks(
            listed_bucket(listed as u32, starts.len() as u32),
            covered,
        ));
        if let Some(line) = summary.note(line, covered != [0; 4]) {
            bucket(line)?;
        }
        listed += starts.len();
    }
    Ok((header, summary.words))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use allowlist_common::ranges::Regions;
    use allowlist_common::ranges::v6::{V6Tables, classify_v6};

    use super::super::points::{Collected, xorshift};
    use super::*;

    /// One generation of the IPv6 range maps, built into vectors.
    struct V6Table {
        header: V6Header,
        summary: Vec<u64>,
        built: Collected<V6Words>,
    }

    impl V6Table {
        fn of(policy: &Policy) -> V6Table {
            let (built, (header, summary)) =
                Collected::from(|(bucket, range)| build(policy, bucket, range));
            V6Table {
                header,
                summary,
                built,
            }
        }
    }

    impl V6Tables for V6Table {
        fn header(&self) -> Option<&V6Header> {
            Some(&self.header)
        }

        fn summary(&self, word: u32) -> Option<u64> {
            self.summary.get(word as usize).copied()
        }

        fn bucket(&self, bucket: u32) -> Option<&RangeBucket> {
            self.built.buckets.get(bucket as usize)
        }

        fn start(&self, range: u32) -> Option<V6Words> {
            self.built.starts.get(range as usize).copied()
        }

        fn rules(&self, word: u32) -> Option<u64> {
            self.built.rule_word(word)
        }
    }

    fn policy(prefixes: &[(&str, RuleId)]) -> Policy {
        prefixes
            .iter()
            .map(|(net, rule)| (net.parse::<IpNet>().expect("test prefix"), *rule))
            .collect()
    }

    fn lookup(table: &V6Table, addr: u128) -> Option<RuleId> {
        classify_v6(table, words(addr))
    }

    #[test]
    fn a_policy_in_one_region_spreads_over_the_buckets() {
        let table = V6Table::of(&policy(&[
            ("2001:db8::/32", 1),
            ("2001:db8:1::/48", 2),
            ("2001:db8:1::7/128", 3),
            ("192.0.2.0/24", 9),
        ]));
        assert_eq!(
            table.header.region_bits, 31,
            "2001:db8::/31 holds every change, 2001:db9:: (after the /32) included"
        );
        for (addr, rule) in [
            ("2001:db7:ffff::", None),
            ("2001:db8::", Some(1)),
            ("2001:db8:1::6", Some(2)),
            ("2001:db8:1::7", Some(3)),
            ("2001:db8:1::8", Some(2)),
            ("2001:db8:2::", Some(1)),
            ("2001:db9::", None),
        ] {
            let addr: Ipv6Addr = addr.parse().expect("test address");
            assert_eq!(lookup(&table, u128::from(addr)), rule, "{addr}");
        }
    }

    #[test]
    fn the_whole_space_and_its_last_address() {
        let table = V6Table::of(&policy(&[("::/0", 1), ("ffff::/16", 2)]));
        assert_eq!(lookup(&table, 0), Some(1));
        assert_eq!(lookup(&table, u128::MAX), Some(2));
        assert_eq!(lookup(&table, u128::MAX >> 16), Some(1));
        let empty = V6Table::of(&Policy::new());
        assert_eq!(lookup(&empty, 1), None);
        assert!(empty.built.starts.is_empty());
    }

    /// The differential test: the range table and the policy's own longest-prefix match
    /// agree on every address probed, for random policies.
    #[test]
    fn random_policies_classify_as_the_longest_prefix_match() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        for round in 0..100 {
            let size = 1 + next() % 200;
            let mut prefixes = Vec::new();
            for rule in 0..size as RuleId {
                // Clustered under a few /40s of 2001:db8::/32 so that they nest, plus a
                // few anywhere.
                let high = if next().is_multiple_of(8) {
                    u128::from(next())
                } else {
                    0x2001_0db8_0000_0000 | u128::from(next() % 4) << 24
                };
                let addr = high << 64 | u128::from(next()) << (next() % 40);
                let len = if round % 3 == 0 {
                    (next() % 129) as u8
                } else {
                    (24 + next() % 105) as u8
                };
                let net = ipnet::Ipv6Net::new(Ipv6Addr::from(addr), len)
                    .expect("length at most 128")
                    .trunc();
                prefixes.push((IpNet::V6(net), rule));
            }
            let policy: Policy = prefixes.iter().copied().collect();
            let table = V6Table::of(&policy);
            let regions = Regions::for_prefixes(0, policy.len_by_family().1 as u32);
            assert!(
                table.built.buckets.len() <= regions.v6_lines as usize,
                "round {round}"
            );
            assert!(
                table.built.starts.len() <= regions.v6_ranges as usize,
                "round {round}"
            );
            let mut probes: Vec<u128> = (0..100)
                .map(|_| u128::from(next()) << 64 | u128::from(next()))
                .collect();
            for (net, _) in &prefixes {
                let IpNet::V6(net) = net else { continue };
                let (first, last) = (u128::from(net.network()), u128::from(net.broadcast()));
                let host = !u128::from(net.netmask());
                let inside = first | ((u128::from(next()) << 64 | u128::from(next())) & host);
                probes.extend([
                    first.wrapping_sub(1),
                    first,
                    inside,
                    last,
                    last.wrapping_add(1),
                ]);
            }
            for addr in probes {
                let expected = policy
                    .lookup(IpAddr::V6(Ipv6Addr::from(addr)))
                    .map(|(_, rule)| rule);
                assert_eq!(
                    lookup(&table, addr),
                    expected,
                    "round {round}: {}",
                    Ipv6Addr::from(addr)
                );
            }
        }
    }
}
