//! The prefixes a policy allows, each with the rule that put it there: a sorted array shared
//! between copies, compared and diffed by walking two of them side by side.

use std::net::IpAddr;
use std::sync::Arc;

use allowlist_common::RuleId;
use ipnet::IpNet;

/// A set of allowed prefixes, each with the rule that put it there.
///
/// A prefix appears once: when two rules name the same prefix, the one given first keeps it
/// (the kernel trie has one value per prefix). Immutable and cheap to clone: a new policy is
/// built whole ([`FromIterator`]) or from another and a diff ([`Policy::patched`]).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Sorted by prefix (IPv4 before IPv6), each prefix once.
    prefixes: Arc<[(IpNet, RuleId)]>,
    /// Which prefix lengths occur: bit `len` for IPv4, bit `33 + len` for IPv6.
    lengths: [u64; 3],
}

/// The map writes that turn one policy into another, each list sorted by prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Prefixes to insert, or whose rule changed.
    pub upserts: Vec<(IpNet, RuleId)>,
    /// Prefixes to remove.
    pub removals: Vec<IpNet>,
}

impl PolicyDiff {
    /// Whether the two policies are the same.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }

    /// Map writes it takes.
    pub fn len(&self) -> usize {
        self.upserts.len() + self.removals.len()
    }
}

/// The bit of [`Policy::lengths`] for prefixes of `net`'s family and length.
fn length_bit(net: &IpNet) -> usize {
    let offset = if net.addr().is_ipv4() { 0 } else { 33 };
    offset + usize::from(net.prefix_len())
}

impl Policy {
    /// An empty policy: allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy of `prefixes`, sorted and each once.
    fn from_sorted(prefixes: Vec<(IpNet, RuleId)>) -> Self {
        let mut lengths = [0u64; 3];
        for (net, _) in &prefixes {
            let bit = length_bit(net);
            lengths[bit / 64] |= 1 << (bit % 64);
        }
        Policy {
            prefixes: prefixes.into(),
            lengths,
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether no prefix is allowed.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Number of IPv4 and IPv6 prefixes.
    pub fn len_by_family(&self) -> (usize, usize) {
        let v4 = self
            .prefixes
            .partition_point(|(net, _)| net.addr().is_ipv4());
        (v4, self.prefixes.len() - v4)
    }

    /// The prefixes and their rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &RuleId)> {
        self.prefixes.iter().map(|(net, rule)| (net, rule))
    }

    /// The rule that allows exactly `net`, if any.
    pub fn get(&self, net: &IpNet) -> Option<RuleId> {
        self.prefixes
            .binary_search_by(|(other, _)| other.cmp(net))
            .ok()
            .map(|at| self.prefixes[at].1)
    }

    /// The longest prefix that allows `addr`, and its rule: what the kernel's LPM lookup
    /// returns for a packet from `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, RuleId)> {
        let max_len: u8 = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max_len).rev().find_map(|len| {
            let net = IpNet::new(addr, len).ok()?.trunc();
            let bit = length_bit(&net);
            if self.lengths[bit / 64] & (1 << (bit % 64)) == 0 {
                return None;
            }
            self.get(&net).map(|rule| (net, rule))
        })
    }

    /// The writes that turn `self` (what is installed) into `target`.
    pub fn diff(&self, target: &Policy) -> PolicyDiff {
        let mut diff = PolicyDiff::default();
        if Arc::ptr_eq(&self.prefixes, &target.prefixes) {
            return diff;
        }
        let (mut have, mut want) = (self.prefixes.iter().peekable(), target.prefixes.iter());
        for &(net, rule) in want.by_ref() {
            while let Some((old, _)) = have.next_if(|(old, _)| *old < net) {
                diff.removals.push(*old);
            }
            match have.next_if(|(old, _)| *old == net) {
                Some((_, old_rule)) if *old_rule == rule => {}
                _ => diff.upserts.push((net, rule)),
            }
        }
        diff.removals.extend(have.map(|(old, _)| *old));
        diff
    }

    /// `self` with `removals` removed and `upserts` written (both sorted, as in a
    /// [`PolicyDiff`], or a leading part of one): what a trie holding `self` holds after
    /// those writes.
    pub fn patched(&self, removals: &[IpNet], upserts: &[(IpNet, RuleId)]) -> Policy {
        let mut removals = removals.iter().peekable();
        let kept = self.prefixes.iter().filter(|(net, _)| {
            while removals.next_if(|removed| *removed < net).is_some() {}
            removals.next_if(|removed| *removed == net).is_none()
        });
        let mut merged = Vec::with_capacity(self.prefixes.len() + upserts.len());
        let mut upserts = upserts.iter().peekable();
        for &(net, rule) in kept {
            while let Some(upsert) = upserts.next_if(|(new, _)| *new < net) {
                merged.push(*upsert);
            }
            match upserts.next_if(|(new, _)| *new == net) {
                Some(upsert) => merged.push(*upsert),
                None => merged.push((net, rule)),
            }
        }
        merged.extend(upserts.copied());
        Policy::from_sorted(merged)
    }
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.prefixes, &other.prefixes) || self.prefixes == other.prefixes
    }
}

impl Eq for Policy {}

impl FromIterator<(IpNet, RuleId)> for Policy {
    /// Host bits are cleared; of two rules for one prefix, the first given keeps it.
    fn from_iter<I: IntoIterator<Item = (IpNet, RuleId)>>(rules: I) -> Self {
        let mut prefixes: Vec<(IpNet, RuleId)> = rules
            .into_iter()
            .map(|(net, rule)| (net.trunc(), rule))
            .collect();
        // Stable: among equal prefixes the first given stays first, and is the one kept.
        prefixes.sort_by_key(|(net, _)| *net);
        prefixes.dedup_by_key(|(net, _)| *net);
        Policy::from_sorted(prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn first_rule_keeps_a_duplicate_prefix() {
        let policy: Policy = [(net("10.0.0.0/8"), 1), (net("10.1.0.0/8"), 2)]
            .into_iter()
            .collect();
        assert_eq!(policy.len(), 1, "host bits cleared: the same prefix");
        assert_eq!(
            policy.lookup(addr("10.9.9.9")),
            Some((net("10.0.0.0/8"), 1))
        );
    }

    #[test]
    fn lookup_finds_the_longest_prefix() {
        let policy: Policy = [
            (net("10.1.2.3/32"), 3),
            (net("10.0.0.0/8"), 1),
            (net("2001:db8::/32"), 4),
            (net("10.1.0.0/16"), 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(policy.lookup(addr("10.1.2.3")).map(|m| m.1), Some(3));
        assert_eq!(policy.lookup(addr("10.1.2.4")).map(|m| m.1), Some(2));
        assert_eq!(policy.lookup(addr("10.2.0.0")).map(|m| m.1), Some(1));
        assert_eq!(policy.lookup(addr("11.0.0.0")), None);
        assert_eq!(policy.lookup(addr("2001:db8:1::9")).map(|m| m.1), Some(4));
        assert_eq!(policy.lookup(addr("2001:db9::")), None);
        assert_eq!(policy.len_by_family(), (3, 1));
        assert_eq!(policy.get(&net("10.1.0.0/16")), Some(2));
        assert_eq!(policy.get(&net("10.1.0.0/17")), None);
    }

    #[test]
    fn the_default_route_of_each_family_matches_its_own_family_only() {
        let policy: Policy = [(net("0.0.0.0/0"), 1), (net("::/0"), 2)]
            .into_iter()
            .collect();
        assert_eq!(policy.lookup(addr("203.0.113.9")).map(|m| m.1), Some(1));
        assert_eq!(policy.lookup(addr("2001:db8::9")).map(|m| m.1), Some(2));
    }

    #[test]
    fn diff_adds_changes_and_removes() {
        let before: Policy = [
            (net("10.0.0.0/8"), 1),
            (net("192.0.2.1/32"), 2),
            (net("2001:db8::/32"), 3),
        ]
        .into_iter()
        .collect();
        let after: Policy = [
            (net("10.0.0.0/8"), 1),
            (net("192.0.2.1/32"), 7),
            (net("198.51.100.0/24"), 8),
        ]
        .into_iter()
        .collect();
        let diff = before.diff(&after);
        assert_eq!(
            diff.upserts,
            vec![(net("192.0.2.1/32"), 7), (net("198.51.100.0/24"), 8)]
        );
        assert_eq!(diff.removals, vec![net("2001:db8::/32")]);
        assert_eq!(diff.len(), 3);
        assert!(after.diff(&after).is_empty());
        assert!(after.diff(&after.clone()).is_empty());
    }

    #[test]
    fn a_diff_applied_in_full_or_in_part_gives_what_the_trie_holds() {
        let before: Policy = (0..50u32)
            .map(|i| (net(&format!("10.{i}.0.0/16")), i))
            .collect();
        let after: Policy = (25..75u32)
            .map(|i| (net(&format!("10.{i}.0.0/16")), i + 1))
            .collect();
        let diff = before.diff(&after);
        assert_eq!(before.patched(&diff.removals, &diff.upserts), after);
        // Writes stopped after 10 removals and no upsert.
        let part = before.patched(&diff.removals[..10], &[]);
        assert_eq!(part.len(), 40);
        assert_eq!(part.get(&net("10.0.0.0/16")), None);
        assert_eq!(part.get(&net("10.30.0.0/16")), Some(30));
        // ... or after every removal and 5 upserts.
        let part = before.patched(&diff.removals, &diff.upserts[..5]);
        assert_eq!(part.get(&net("10.25.0.0/16")), Some(26), "rule changed");
        assert_eq!(part.get(&net("10.30.0.0/16")), Some(30), "not yet");
        assert_eq!(part.len(), 25);
    }
}
