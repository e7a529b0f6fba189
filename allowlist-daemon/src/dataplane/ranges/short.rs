//! A policy's short lists (the layout and the lookup are `allowlist_common::ranges::short`):
//! each family's prefixes, when they are few enough to be answered without the range table.

use allowlist_common::ranges::short::{SHORT_V4_PREFIXES, SHORT_V6_PREFIXES, ShortV4, ShortV6};
use ipnet::IpNet;

use crate::policy::Policy;

/// The IPv4 and the IPv6 short list of `policy` (each a [`ShortV4::long`] one when its
/// family has more prefixes than a list holds).
pub(super) fn build(policy: &Policy) -> (ShortV4, ShortV6) {
    let (v4_count, v6_count) = policy.len_by_family();
    let v4 = if v4_count <= SHORT_V4_PREFIXES {
        let prefixes: Vec<_> = policy
            .iter()
            .filter_map(|(net, rule)| match net {
                IpNet::V4(net) => Some((u32::from(net.network()), net.prefix_len(), *rule)),
                IpNet::V6(_) => None,
            })
            .take(v4_count)
            .collect();
        ShortV4::of(&prefixes)
    } else {
        ShortV4::long()
    };
    let v6 = if v6_count <= SHORT_V6_PREFIXES {
        // IPv6 prefixes sort after every IPv4 one.
        let prefixes: Vec<_> = policy
            .iter()
            .rev()
            .take(v6_count)
            .filter_map(|(net, rule)| match net {
                IpNet::V6(net) => Some((u128::from(net.network()), net.prefix_len(), *rule)),
                IpNet::V4(_) => None,
            })
            .collect();
        ShortV6::of(&prefixes)
    } else {
        ShortV6::long()
    };
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use allowlist_common::RuleId;

    use super::*;

    fn policy(prefixes: &[(&str, RuleId)]) -> Policy {
        prefixes
            .iter()
            .map(|(net, rule)| (net.parse::<IpNet>().expect("test prefix"), *rule))
            .collect()
    }

    fn rule_of(lists: &(ShortV4, ShortV6), addr: &str) -> Option<RuleId> {
        match addr.parse::<IpAddr>().expect("test address") {
            IpAddr::V4(addr) => lists.0.rule_of(u32::from(addr)),
            IpAddr::V6(addr) => {
                let bits = u128::from(addr);
                lists.1.rule_of([(bits >> 64) as u64, bits as u64])
            }
        }
    }

    #[test]
    fn a_few_prefixes_of_each_family_are_listed_with_their_rules() {
        let policy = policy(&[
            ("10.0.0.0/8", 1),
            ("10.1.2.3/32", 2),
            ("2001:db8::/32", 3),
            ("2001:db8::1/128", 4),
        ]);
        let lists = build(&policy);
        assert!(lists.0.answers() && lists.1.answers());
        for (addr, rule) in [
            ("10.1.2.3", Some(2)),
            ("10.9.9.9", Some(1)),
            ("11.0.0.0", None),
            ("2001:db8::1", Some(4)),
            ("2001:db8::2", Some(3)),
            ("2001:db9::", None),
        ] {
            assert_eq!(rule_of(&lists, addr), rule, "{addr}");
            let expected = policy
                .lookup(addr.parse().expect("test address"))
                .map(|(_, rule)| rule);
            assert_eq!(rule, expected, "{addr}: the policy's own longest prefix");
        }
    }

    #[test]
    fn a_family_past_its_list_is_left_to_the_range_table_the_other_is_not() {
        let many: Vec<(String, RuleId)> = (0..6).map(|i| (format!("10.{i}.0.0/16"), i)).collect();
        let mut prefixes: Vec<(&str, RuleId)> = many
            .iter()
            .map(|(net, rule)| (net.as_str(), *rule))
            .collect();
        prefixes.push(("2001:db8::/32", 9));
        let lists = build(&policy(&prefixes));
        assert!(!lists.0.answers(), "six IPv4 prefixes");
        assert!(lists.1.answers());
        assert_eq!(rule_of(&lists, "2001:db8::5"), Some(9));
    }
}
