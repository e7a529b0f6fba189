//! The policy model: which prefixes are allowed and which rule allows each. Pure: no I/O,
//! no kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;

use allowlist_common::RuleId;
use ipnet::IpNet;

/// Why a string is not an acceptable allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Neither an IP address nor a CIDR.
    #[error(
        "{input:?} is not an IPv4/IPv6 address or CIDR (e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32)"
    )]
    Invalid {
        /// What was given.
        input: String,
    },
    /// A CIDR whose address has bits set beyond the prefix length.
    #[error("{input} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// What was given.
        input: String,
        /// The network the input probably meant: its address with the host bits cleared.
        network: IpNet,
    },
    /// An IPv4-mapped IPv6 prefix (`::ffff:10.0.0.1`): IPv4 packets carry the IPv4 address,
    /// so such an entry would never match them.
    #[error("{input} is an IPv4-mapped IPv6 address, which IPv4 packets never carry: use {ipv4}")]
    Ipv4Mapped {
        /// What was given.
        input: String,
        /// The IPv4 prefix meant.
        ipv4: IpNet,
    },
}

/// Checks a prefix as an allowlist entry must be: host bits clear, not IPv4-mapped. `input`
/// is what the error shows.
pub fn check_prefix(net: IpNet, input: &str) -> Result<IpNet, CidrError> {
    if net.trunc() != net {
        return Err(CidrError::HostBitsSet {
            input: input.to_owned(),
            network: net.trunc(),
        });
    }
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(ipv4) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return Err(CidrError::Ipv4Mapped {
            input: input.to_owned(),
            ipv4: IpNet::V4(ipv4),
        });
    }
    Ok(net)
}

/// Parses an allowlist entry: a plain address (meaning /32 or /128) or a CIDR whose host bits
/// are clear; IPv4-mapped IPv6 prefixes are refused with the IPv4 prefix meant.
pub fn parse_cidr(input: &str) -> Result<IpNet, CidrError> {
    let trimmed = input.trim();
    let net = match trimmed.parse::<IpAddr>() {
        Ok(addr) => IpNet::from(addr),
        Err(_) => trimmed.parse().map_err(|_| CidrError::Invalid {
            input: input.to_owned(),
        })?,
    };
    check_prefix(net, input)
}

/// A transport protocol whose ports a scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A protected local port, written `tcp/22` or `udp/51820`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortScope {
    /// The protocol.
    pub transport: Transport,
    /// The local port.
    pub port: u16,
}

impl std::str::FromStr for PortScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{s:?} is not a protected port such as tcp/22 or udp/51820");
        let (protocol, port) = s.trim().split_once('/').ok_or_else(invalid)?;
        let transport = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return Err(invalid()),
        };
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if port == 0 {
            return Err(invalid());
        }
        Ok(PortScope { transport, port })
    }
}

impl std::fmt::Display for PortScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{protocol}/{}", self.port)
    }
}

impl serde::Serialize for PortScope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PortScope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A set of allowed prefixes, each with the rule that put it there.
///
/// A prefix appears once: when two rules name the same prefix, the one inserted first keeps
/// it (the kernel trie has one value per prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    prefixes: BTreeMap<IpNet, RuleId>,
}

/// The map writes that turn one policy into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Prefixes to insert, or whose rule changed: applied first.
    pub upserts: Vec<(IpNet, RuleId)>,
    /// Prefixes to remove: applied after the upserts, so that an address allowed before and
    /// after the change is allowed at every moment in between.
    pub removals: Vec<IpNet>,
}

impl PolicyDiff {
    /// Whether the two policies are the same.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

impl Policy {
    /// An empty policy: allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `net` by `rule`. Host bits are cleared. Returns false (and changes nothing)
    /// when the prefix is already allowed by another rule.
    pub fn insert(&mut self, net: IpNet, rule: RuleId) -> bool {
        match self.prefixes.entry(net.trunc()) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(rule);
                true
            }
        }
    }

    /// Removes `net`; returns the rule that allowed it.
    pub fn remove(&mut self, net: &IpNet) -> Option<RuleId> {
        self.prefixes.remove(&net.trunc())
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
            .keys()
            .filter(|net| matches!(net, IpNet::V4(_)))
            .count();
        (v4, self.prefixes.len() - v4)
    }

    /// The prefixes and their rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &RuleId)> {
        self.prefixes.iter()
    }

    /// The longest prefix that allows `addr`, and its rule: what the kernel's LPM lookup
    /// returns for a packet from `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, RuleId)> {
        let max_len = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max_len).rev().find_map(|len| {
            let net = IpNet::new(addr, len).ok()?.trunc();
            self.prefixes.get(&net).map(|rule| (net, *rule))
        })
    }

    /// The writes that turn `self` (what is installed) into `target`.
    pub fn diff(&self, target: &Policy) -> PolicyDiff {
        let upserts = target
            .prefixes
            .iter()
            .filter(|(net, rule)| self.prefixes.get(net) != Some(rule))
            .map(|(net, rule)| (*net, *rule))
            .collect();
        let removals = self
            .prefixes
            .keys()
            .filter(|net| !target.prefixes.contains_key(net))
            .copied()
            .collect();
        PolicyDiff { upserts, removals }
    }
}

impl FromIterator<(IpNet, RuleId)> for Policy {
    fn from_iter<I: IntoIterator<Item = (IpNet, RuleId)>>(rules: I) -> Self {
        let mut policy = Policy::new();
        for (net, rule) in rules {
            policy.insert(net, rule);
        }
        policy
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
    fn plain_addresses_are_host_prefixes() {
        assert_eq!(parse_cidr("192.0.2.7"), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_cidr(" 2001:db8::1 "), Ok(net("2001:db8::1/128")));
    }

    #[test]
    fn cidrs_are_accepted_as_given() {
        assert_eq!(parse_cidr("198.51.100.0/24"), Ok(net("198.51.100.0/24")));
        assert_eq!(parse_cidr("2001:db8::/32"), Ok(net("2001:db8::/32")));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
    }

    #[test]
    fn host_bits_name_the_network_meant() {
        let err = parse_cidr("10.1.2.3/8").expect_err("host bits set");
        assert_eq!(
            err,
            CidrError::HostBitsSet {
                input: "10.1.2.3/8".into(),
                network: net("10.0.0.0/8"),
            }
        );
        assert_eq!(
            err.to_string(),
            "10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        assert!(matches!(
            parse_cidr("2001:db8::1/64"),
            Err(CidrError::HostBitsSet { network, .. }) if network == net("2001:db8::/64")
        ));
    }

    #[test]
    fn ipv4_mapped_prefixes_name_the_ipv4_prefix_meant() {
        let err = parse_cidr("::ffff:10.0.0.1").expect_err("mapped");
        assert_eq!(
            err.to_string(),
            "::ffff:10.0.0.1 is an IPv4-mapped IPv6 address, which IPv4 packets never carry: \
             use 10.0.0.1/32"
        );
        assert!(matches!(
            parse_cidr("::ffff:10.0.0.0/104"),
            Err(CidrError::Ipv4Mapped { ipv4, .. }) if ipv4 == net("10.0.0.0/8")
        ));
        // Wider IPv6 prefixes that happen to contain the mapped range are ordinary ones.
        assert_eq!(parse_cidr("::/64"), Ok(net("::/64")));
        assert_eq!(parse_cidr("::fffe:0:0/95"), Ok(net("::fffe:0:0/95")));
    }

    #[test]
    fn garbage_is_invalid() {
        for input in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "host.example",
            "::/129",
            "1.2.3.4/-1",
        ] {
            assert!(
                matches!(parse_cidr(input), Err(CidrError::Invalid { .. })),
                "{input:?} should be invalid"
            );
        }
    }

    #[test]
    fn port_scopes_parse_and_print() {
        let scope: PortScope = "TCP/22".parse().expect("scope");
        assert_eq!(
            scope,
            PortScope {
                transport: Transport::Tcp,
                port: 22
            }
        );
        assert_eq!(
            "udp/51820".parse::<PortScope>().expect("scope").to_string(),
            "udp/51820"
        );
        for bad in ["22", "sctp/22", "tcp/0", "tcp/65536", "tcp/"] {
            assert!(bad.parse::<PortScope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn first_rule_keeps_a_duplicate_prefix() {
        let mut policy = Policy::new();
        assert!(policy.insert(net("10.0.0.0/8"), 1));
        assert!(!policy.insert(net("10.0.0.0/8"), 2));
        assert_eq!(
            policy.lookup(addr("10.9.9.9")),
            Some((net("10.0.0.0/8"), 1))
        );
    }

    #[test]
    fn lookup_finds_the_longest_prefix() {
        let policy: Policy = [
            (net("10.0.0.0/8"), 1),
            (net("10.1.0.0/16"), 2),
            (net("10.1.2.3/32"), 3),
            (net("2001:db8::/32"), 4),
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
        assert!(after.diff(&after).is_empty());
    }

    #[test]
    fn applying_a_diff_reaches_the_target() {
        let before: Policy = (0..50u32)
            .map(|i| (net(&format!("10.{i}.0.0/16")), i))
            .collect();
        let after: Policy = (25..75u32)
            .map(|i| (net(&format!("10.{i}.0.0/16")), i + 1))
            .collect();
        let diff = before.diff(&after);
        let mut applied = before.clone();
        for (net, rule) in &diff.upserts {
            applied.remove(net);
            applied.insert(*net, *rule);
        }
        for net in &diff.removals {
            applied.remove(net);
        }
        assert_eq!(applied, after);
    }
}
