//! The prefixes a policy allows, each with the rule that put it there: a sorted array shared
//! between copies.

use std::net::IpAddr;
use std::sync::Arc;

use allowlist_common::RuleId;
use ipnet::IpNet;

/// A set of allowed prefixes, each with the rule that put it there.
///
/// A prefix appears once: when two rules name the same prefix, the one given first keeps it
/// (a range of addresses has one longest prefix, and one rule). Immutable and cheap to
/// clone: a new policy is built whole ([`FromIterator`]).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Sorted by prefix (IPv4 before IPv6), each prefix once.
    prefixes: Arc<[(IpNet, RuleId)]>,
    /// Which prefix lengths occur: bit `len` for IPv4, bit `33 + len` for IPv6.
    lengths: [u64; 3],
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
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&IpNet, &RuleId)> {
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
}
