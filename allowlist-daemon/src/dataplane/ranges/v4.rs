//! A policy's IPv4 prefixes as one generation of the IPv4 range table (the layout and the
//! lookup are `allowlist_common::ranges::v4`). Pure: built in one pass over the sorted
//! prefixes and handed out bucket by bucket, leaf by leaf, so that the table is written as
//! it is made.

use allowlist_common::RuleId;
use allowlist_common::ranges::v4::{LEAF_RANGES, V4Leaf, inline_bucket, listed_bucket_v4};
use allowlist_common::ranges::{BUCKET_COUNT, NO_RULE, RangeBucket};
use ipnet::IpNet;

use super::points::{Summary, change_points, split_buckets, uniform};
use crate::policy::Policy;

/// Addresses per bucket: those sharing their top 16 bits.
const BUCKET_SPAN: u64 = 1 << 16;

/// The IPv4 prefixes of `policy` as (first address, last address, rule).
fn prefixes(policy: &Policy) -> Vec<(u64, u64, RuleId)> {
    policy
        .iter()
        .map_while(|(net, rule)| match net {
            IpNet::V4(net) => Some((
                u64::from(u32::from(net.network())),
                u64::from(u32::from(net.broadcast())),
                *rule,
            )),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// The /24 blocks of a bucket that hold an allowed address, given its ranges (first
/// addresses within the bucket, and rules).
fn covered_blocks(starts: &[u16], rules: &[RuleId]) -> [u64; 4] {
    let mut covered = [0u64; 4];
    for (i, (start, rule)) in starts.iter().zip(rules).enumerate() {
        if *rule == NO_RULE {
            continue;
        }
        let last = starts.get(i + 1).map_or(u16::MAX, |next| next - 1);
        for block in (start >> 8)..=(last >> 8) {
            covered[usize::from(block / 64)] |= 1 << (block % 64);
        }
    }
    covered
}

/// Builds `policy`'s IPv4 range table in one pass: each bucket in order to `bucket`, then
/// the leaves of each bucket that keeps its ranges in leaves, in order, to `leaf`. Returns
/// the summary (a bit per bucket that holds an allowed address).
pub(super) fn build<E>(
    policy: &Policy,
    mut bucket: impl FnMut(RangeBucket) -> Result<(), E>,
    mut leaf: impl FnMut(V4Leaf) -> Result<(), E>,
) -> Result<Vec<u64>, E> {
    let points = change_points(prefixes(policy));
    let bounds = |bucket: u32| {
        let first = u64::from(bucket) * BUCKET_SPAN;
        (first, first + BUCKET_SPAN - 1)
    };
    let mut summary = Summary::default();
    let mut leaves = 0u32;
    for points in split_buckets(&points, BUCKET_COUNT, bounds) {
        if points.inside.is_empty() {
            if let Some(line) = summary.note(uniform(points.rule), points.rule != NO_RULE) {
                bucket(line)?;
            }
            continue;
        }
        let (starts, rules) = points.ranges();
        // Within a bucket of 2^16 addresses.
        let starts: Vec<u16> = starts.iter().map(|start| *start as u16).collect();
        let allows = rules.iter().any(|rule| *rule != NO_RULE);
        let made = match inline_bucket(&starts, &rules) {
            Some(inline) => inline,
            None => {
                let first_leaf = leaves;
                let chunk = LEAF_RANGES as usize;
                let mut leaf_starts = Vec::with_capacity(starts.len().div_ceil(chunk));
                for (starts, rules) in starts.chunks(chunk).zip(rules.chunks(chunk)) {
                    leaf_starts.push(starts[0]);
                    // Chunks of one to LEAF_RANGES ranges, as many rules as starts.
                    if let Some(made) = V4Leaf::new(starts, rules) {
                        leaf(made)?;
                        leaves += 1;
                    }
                }
                listed_bucket_v4(
                    first_leaf,
                    starts.len() as u32,
                    covered_blocks(&starts, &rules),
                    leaf_starts.get(1..).unwrap_or_default(),
                )
            }
        };
        if let Some(line) = summary.note(made, allows) {
            bucket(line)?;
        }
    }
    Ok(summary.words)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use allowlist_common::ranges::v4::{V4Words, classify_v4};
    use allowlist_common::ranges::{
        Regions, SUMMARY_BUCKETS, SUMMARY_WORDS, bucket_slot, uniform_bucket,
    };

    use super::super::points::xorshift;
    use super::*;

    /// One generation of the IPv4 range maps, built into vectors.
    struct V4Table {
        summary: Vec<u64>,
        buckets: Vec<RangeBucket>,
        leaves: Vec<V4Leaf>,
    }

    impl V4Table {
        fn of(policy: &Policy) -> V4Table {
            let (mut buckets, mut leaves) = (Vec::new(), Vec::new());
            let built: Result<_, std::convert::Infallible> = build(
                policy,
                |bucket| {
                    buckets.push(bucket);
                    Ok(())
                },
                |leaf| {
                    leaves.push(leaf);
                    Ok(())
                },
            );
            let Ok(summary) = built;
            V4Table {
                summary,
                buckets,
                leaves,
            }
        }
    }

    impl V4Table {
        /// The line of `bucket`.
        fn line(&self, bucket: u32) -> &RangeBucket {
            let word = self.summary[(bucket / SUMMARY_BUCKETS) as usize];
            &self.buckets[bucket_slot(word, bucket) as usize]
        }
    }

    impl V4Words for V4Table {
        fn summary(&self, word: u32) -> Option<u64> {
            self.summary.get(word as usize).copied()
        }

        fn bucket(&self, bucket: u32) -> Option<&RangeBucket> {
            self.buckets.get(bucket as usize)
        }

        fn leaf(&self, leaf: u32) -> Option<&V4Leaf> {
            self.leaves.get(leaf as usize)
        }
    }

    fn policy(prefixes: &[(&str, RuleId)]) -> Policy {
        prefixes
            .iter()
            .map(|(net, rule)| (net.parse::<IpNet>().expect("test prefix"), *rule))
            .collect()
    }

    fn lookup(table: &V4Table, addr: &str) -> Option<RuleId> {
        let addr: Ipv4Addr = addr.parse().expect("test address");
        classify_v4(table, u32::from(addr))
    }

    #[test]
    fn an_empty_policy_is_one_uniform_table() {
        let table = V4Table::of(&Policy::new());
        assert_eq!(table.buckets, vec![RangeBucket::default()], "one run");
        assert_eq!(table.summary.len(), SUMMARY_WORDS as usize);
        assert!(table.leaves.is_empty());
        assert_eq!(lookup(&table, "192.0.2.1"), None);
    }

    #[test]
    fn nested_prefixes_give_the_longest_match() {
        let table = V4Table::of(&policy(&[
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.0/24", 3),
            ("10.1.2.3/32", 4),
            ("0.0.0.0/0", 5),
            ("255.255.255.255/32", 6),
            ("2001:db8::/32", 7),
        ]));
        for (addr, rule) in [
            ("9.255.255.255", 5),
            ("10.0.0.0", 1),
            ("10.1.0.0", 2),
            ("10.1.2.2", 3),
            ("10.1.2.3", 4),
            ("10.1.2.4", 3),
            ("10.1.3.0", 2),
            ("10.2.0.0", 1),
            ("11.0.0.0", 5),
            ("255.255.255.254", 5),
            ("255.255.255.255", 6),
        ] {
            assert_eq!(lookup(&table, addr), Some(rule), "{addr}");
        }
        assert_eq!(
            table.line(0x0a00).ranges,
            uniform_bucket(Some(1)),
            "10.0/16 lies inside 10/8"
        );
        assert_eq!(
            table.line(0x0a01).ranges >> 32,
            5,
            "10.1/16 lists the /16, /24, /32, /24 and /16 ranges"
        );
        assert!(
            table.leaves.is_empty(),
            "five ranges: held in the bucket's own line"
        );
        assert_eq!(
            table.buckets.len(),
            6,
            "a line per run: below 10/8, 10.0/16, 10.1/16, the rest of 10/8, above it, \
             255.255/16"
        );
    }

    #[test]
    fn neighbours_with_one_rule_are_one_range() {
        let table = V4Table::of(&policy(&[("192.0.2.0/25", 1), ("192.0.2.128/25", 1)]));
        let bucket = table.line(0xc000);
        assert_eq!(
            bucket.ranges >> 32,
            3,
            "start of bucket, the /24's worth, after"
        );
        assert!(table.leaves.is_empty(), "held in the bucket");
        assert_eq!(
            Some(*bucket),
            inline_bucket(&[0, 0x200, 0x300], &[NO_RULE, 1, NO_RULE]),
            "the /24's worth is block 2 of 256"
        );
        assert_eq!(lookup(&table, "192.0.2.200"), Some(1));
        assert_eq!(lookup(&table, "192.0.3.0"), None);
    }

    /// The differential test: the range table and the policy's own longest-prefix match
    /// agree on every address probed, for random policies.
    #[test]
    fn random_policies_classify_as_the_longest_prefix_match() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..200 {
            // Prefixes clustered in a few /12s so that they nest and touch; every third round
            // in one /16, whose bucket then has more leaves than it points at directly.
            let size = 1 + next() % 300;
            let mut prefixes = Vec::new();
            for rule in 0..size as RuleId {
                let base = (next() % 4) as u32 * 0x0010_0000 + 0x0a00_0000;
                let spread = if round % 3 == 0 { 0xffff } else { 0x000f_ffff };
                let addr = base | (next() as u32 & spread);
                let len = (next() % 33) as u8;
                let len = if round % 2 == 0 { len.max(8) } else { len };
                let net = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len)
                    .expect("length at most 32")
                    .trunc();
                prefixes.push((IpNet::V4(net), rule));
            }
            let policy: Policy = prefixes.iter().copied().collect();
            let table = V4Table::of(&policy);
            let regions = Regions::for_prefixes(policy.len_by_family().0 as u32, 0);
            assert!(
                table.buckets.len() <= regions.v4_lines as usize,
                "round {round}"
            );
            assert!(
                table.leaves.len() <= regions.v4_leaves as usize,
                "round {round}"
            );
            let mut probes: Vec<u32> = (0..200).map(|_| next() as u32).collect();
            for (net, _) in &prefixes {
                let IpNet::V4(net) = net else { continue };
                let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
                let inside = first | (next() as u32 & !u32::from(net.netmask()));
                probes.extend([
                    first.wrapping_sub(1),
                    first,
                    last,
                    last.wrapping_add(1),
                    inside,
                ]);
            }
            for addr in probes {
                let expected = policy
                    .lookup(IpAddr::V4(Ipv4Addr::from(addr)))
                    .map(|(_, rule)| rule);
                assert_eq!(
                    classify_v4(&table, addr),
                    expected,
                    "round {round}: {}",
                    Ipv4Addr::from(addr)
                );
            }
        }
    }
}
