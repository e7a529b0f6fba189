//! Short lists: a generation whose family holds only a few prefixes (the common policy of a
//! handful of admin networks) is classified from one list, longest prefix first, without the
//! range table: one line read and a compare per prefix, where the table reads its summary,
//! a bucket and searches it. The range table is written all the same; the list's count says
//! which of the two answers ([`LONG`]: the table).

use crate::RuleId;

/// Name of the map of every generation's IPv4 [`ShortV4`].
pub const MAP_V4_SHORT: &str = "V4_SHORT";
/// Name of the map of every generation's IPv6 [`ShortV6`].
pub const MAP_V6_SHORT: &str = "V6_SHORT";

/// The most IPv4 prefixes a short list holds (it is one cache line).
pub const SHORT_V4_PREFIXES: usize = 5;
/// The most IPv6 prefixes a short list holds (two cache lines).
pub const SHORT_V6_PREFIXES: usize = 3;
/// The count of a list whose family holds more prefixes than it can: the range table
/// answers.
pub const LONG: u32 = u32::MAX;

/// A generation's IPv4 prefixes when there are at most [`SHORT_V4_PREFIXES`], longest first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShortV4 {
    /// Prefixes listed, or [`LONG`].
    pub count: u32,
    /// Each prefix's first address (host order).
    pub networks: [u32; SHORT_V4_PREFIXES],
    /// Each prefix's mask.
    pub masks: [u32; SHORT_V4_PREFIXES],
    /// Each prefix's rule.
    pub rules: [RuleId; SHORT_V4_PREFIXES],
}

impl ShortV4 {
    /// The list of `prefixes` (first address, length, rule; distinct prefixes), or one
    /// saying [`LONG`] when they do not fit.
    pub fn of(prefixes: &[(u32, u8, RuleId)]) -> ShortV4 {
        if prefixes.len() > SHORT_V4_PREFIXES {
            return ShortV4::long();
        }
        let mut list = ShortV4::default();
        let mut sorted = [(0u32, 0u8, 0 as RuleId); SHORT_V4_PREFIXES];
        sorted[..prefixes.len()].copy_from_slice(prefixes);
        let sorted = &mut sorted[..prefixes.len()];
        sorted.sort_unstable_by_key(|prefix| core::cmp::Reverse(prefix.1));
        for (i, (network, len, rule)) in sorted.iter().enumerate() {
            let mask = u32::MAX
                .checked_shl(32 - u32::from((*len).min(32)))
                .unwrap_or_default();
            list.networks[i] = network & mask;
            list.masks[i] = mask;
            list.rules[i] = *rule;
        }
        list.count = prefixes.len() as u32;
        list
    }

    /// The list of a family with more prefixes than a list holds: the range table answers.
    pub fn long() -> ShortV4 {
        ShortV4 {
            count: LONG,
            ..ShortV4::default()
        }
    }

    /// Whether the list answers for its generation (else the range table does).
    #[inline(always)]
    pub const fn answers(&self) -> bool {
        self.count != LONG
    }

    /// The rule of the longest listed prefix covering `addr` (host order).
    #[inline(always)]
    pub fn rule_of(&self, addr: u32) -> Option<RuleId> {
        for i in 0..SHORT_V4_PREFIXES {
            if (i as u32) < self.count && addr & self.masks[i] == self.networks[i] {
                return Some(self.rules[i]);
            }
        }
        None
    }
}

/// A generation's IPv6 prefixes when there are at most [`SHORT_V6_PREFIXES`], longest first;
/// addresses as two words, the high one first (as [`super::v6::classify_v6`] takes them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShortV6 {
    /// Prefixes listed, or [`LONG`].
    pub count: u32,
    /// Each prefix's rule.
    pub rules: [RuleId; SHORT_V6_PREFIXES],
    /// Each prefix's first address.
    pub networks: [[u64; 2]; SHORT_V6_PREFIXES],
    /// Each prefix's mask.
    pub masks: [[u64; 2]; SHORT_V6_PREFIXES],
}

impl ShortV6 {
    /// The list of `prefixes` (first address, length, rule; distinct prefixes), or one
    /// saying [`LONG`] when they do not fit.
    pub fn of(prefixes: &[(u128, u8, RuleId)]) -> ShortV6 {
        if prefixes.len() > SHORT_V6_PREFIXES {
            return ShortV6::long();
        }
        let mut list = ShortV6::default();
        let mut sorted = [(0u128, 0u8, 0 as RuleId); SHORT_V6_PREFIXES];
        sorted[..prefixes.len()].copy_from_slice(prefixes);
        let sorted = &mut sorted[..prefixes.len()];
        sorted.sort_unstable_by_key(|prefix| core::cmp::Reverse(prefix.1));
        for (i, (network, len, rule)) in sorted.iter().enumerate() {
            let mask = u128::MAX
                .checked_shl(128 - u32::from((*len).min(128)))
                .unwrap_or_default();
            list.networks[i] = words(network & mask);
            list.masks[i] = words(mask);
            list.rules[i] = *rule;
        }
        list.count = prefixes.len() as u32;
        list
    }

    /// The list of a family with more prefixes than a list holds: the range table answers.
    pub fn long() -> ShortV6 {
        ShortV6 {
            count: LONG,
            ..ShortV6::default()
        }
    }

    /// Whether the list answers for its generation (else the range table does).
    #[inline(always)]
    pub const fn answers(&self) -> bool {
        self.count != LONG
    }

    /// The rule of the longest listed prefix covering `addr`.
    #[inline(always)]
    pub fn rule_of(&self, addr: [u64; 2]) -> Option<RuleId> {
        for i in 0..SHORT_V6_PREFIXES {
            if (i as u32) < self.count
                && addr[0] & self.masks[i][0] == self.networks[i][0]
                && addr[1] & self.masks[i][1] == self.networks[i][1]
            {
                return Some(self.rules[i]);
            }
        }
        None
    }
}

/// `value` as two words, the high one first.
const fn words(value: u128) -> [u64; 2] {
    [(value >> 64) as u64, value as u64]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_one_line_for_ipv4_and_two_for_ipv6() {
        assert_eq!(size_of::<ShortV4>(), 64);
        assert_eq!(size_of::<ShortV6>(), 112);
    }

    #[test]
    fn the_longest_listed_prefix_answers() {
        let list = ShortV4::of(&[
            (0x0a00_0000, 8, 1),
            (0x0a01_0203, 32, 2),
            (0x0a01_0000, 16, 3),
            (0, 0, 4),
        ]);
        assert!(list.answers());
        assert_eq!(list.rule_of(0x0a01_0203), Some(2));
        assert_eq!(list.rule_of(0x0a01_0204), Some(3));
        assert_eq!(list.rule_of(0x0a02_0000), Some(1));
        assert_eq!(list.rule_of(0xc000_0201), Some(4), "the default route");
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let list = ShortV4::of(&[]);
        assert!(list.answers());
        assert_eq!(list.rule_of(0), None);
        let list = ShortV6::of(&[]);
        assert!(list.answers());
        assert_eq!(list.rule_of([0, 0]), None);
    }

    #[test]
    fn too_many_prefixes_leave_it_to_the_range_table() {
        let five: Vec<_> = (0..5u32).map(|i| (i << 24, 8, i)).collect();
        assert!(ShortV4::of(&five).answers());
        let six: Vec<_> = (0..6u32).map(|i| (i << 24, 8, i)).collect();
        assert!(!ShortV4::of(&six).answers());
        let four: Vec<_> = (0..4u32).map(|i| (u128::from(i) << 120, 8, i)).collect();
        assert!(!ShortV6::of(&four).answers());
        assert!(ShortV6::of(&four[..3]).answers());
    }

    #[test]
    fn ipv6_prefixes_match_on_both_words() {
        let net: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0000;
        let host = net | 0x1234;
        let list = ShortV6::of(&[(net, 32, 7), (host, 128, 8), (net | 1 << 64, 80, 9)]);
        assert_eq!(list.rule_of(words(host)), Some(8));
        assert_eq!(list.rule_of(words(host + 1)), Some(7));
        assert_eq!(list.rule_of(words(net | 1 << 64 | 5)), Some(9));
        assert_eq!(list.rule_of(words(net | 1 << 64 | 1 << 48)), Some(7));
        assert_eq!(list.rule_of(words(0x2001_0db9 << 96)), None);
    }
}
