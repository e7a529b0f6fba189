//! Sizing the maps to the policies in force: the capacity a set of policies needs, rounded
//! up to a size class with headroom, so that most changes fit the maps there are and only a
//! policy that outgrows them (or shrinks far below them) has them made again, at their new
//! size ([`super::Dataplane::enforce`] does it). The memory of the maps follows the
//! policies, not a configured maximum.
//!
//! The range tables hold [`GENERATIONS`] generations while one generation's tables are
//! small: the policy in force, the one a pending change falls back to, and a spare, so that
//! a change made while another is pending is written beside both. Above
//! [`SPARE_LIMIT_BYTES`] they hold two: such a change then makes the maps again (a new
//! object holding the two policies it needs), which costs a load once in a while instead of
//! a third of the memory for good.

use allowlist_common::ranges::v4::V4Leaf;
use allowlist_common::ranges::v6::V6Words;
use allowlist_common::ranges::{RangeBucket, Regions};
use allowlist_common::{EXPIRING_RULE, GENERATIONS};

use super::types::Capacity;
use crate::policy::Policy;

/// The smallest class of rules: a hit array of 4 KiB.
const MIN_RULES: u32 = 256;
/// The smallest class of prefixes per family and policy.
const MIN_PREFIXES: u32 = 64;
/// Steps of a class within each doubling: 1 + k/16 times a power of two (those that are a
/// multiple of the smallest class), so that a large class holds at most a sixteenth more
/// than its need.
const STEPS_PER_DOUBLING: u64 = 16;
/// Maps this many times their need's class or more are made again smaller.
const SHRINK_FACTOR: u64 = 4;
/// The most bytes one generation's range tables may take with a spare generation kept.
pub const SPARE_LIMIT_BYTES: u64 = 8 << 20;

/// What policies need: rule ids, and prefixes of each family in one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// One more than the highest rule id the policies use: the hit array must hold these.
    pub rules: u32,
    /// One more than the highest rule id whose hit counts are kept (every entry's, enforced
    /// or not): maps are not made again for them alone, but maps made again hold them, and
    /// none shrink below them.
    pub kept_rules: u32,
    /// The most IPv4 prefixes in one of the policies.
    pub v4_prefixes: u32,
    /// The most IPv6 prefixes in one of the policies.
    pub v6_prefixes: u32,
}

impl Need {
    /// What `policies` need, with the hit counts of the rule ids below `kept_rules` kept.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>, kept_rules: u32) -> Need {
        let count = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
        policies.into_iter().fold(
            Need {
                kept_rules,
                ..Need::default()
            },
            |need, policy| {
                let (v4, v6) = policy.len_by_family();
                let rules = policy
                    .iter()
                    .map(|(_, rule)| (rule & !EXPIRING_RULE).saturating_add(1))
                    .max()
                    .unwrap_or(0);
                Need {
                    rules: need.rules.max(rules),
                    v4_prefixes: need.v4_prefixes.max(count(v4)),
                    v6_prefixes: need.v6_prefixes.max(count(v6)),
                    ..need
                }
            },
        )
    }

    /// The rule ids maps made for this need hold: every one in use, and room for a
    /// replacement of every prefix in force. A replaced list's entries keep their rule ids
    /// until the change is acknowledged, so its new entries take as many more: without that
    /// room the first replacement of a list would make the maps again.
    fn all_rules(&self) -> u32 {
        let replacement = 2 * (u64::from(self.v4_prefixes) + u64::from(self.v6_prefixes));
        self.rules
            .max(self.kept_rules)
            .max(u32::try_from(replacement).unwrap_or(u32::MAX))
    }
}

/// The classes from `min` on, rising: `min` times a power of two times one of
/// [`STEPS_PER_DOUBLING`] steps, each a multiple of `min`.
fn classes(min: u32) -> impl Iterator<Item = u32> {
    let min = u64::from(min);
    (0..32u32)
        .flat_map(move |doubling| {
            (STEPS_PER_DOUBLING..2 * STEPS_PER_DOUBLING)
                .map(move |steps| (min << doubling) * steps / STEPS_PER_DOUBLING)
        })
        .filter(move |class| class % min == 0)
        .map_while(|class| u32::try_from(class).ok())
}

/// The class of `need`: the smallest one from `min` on that holds a sixteenth more than
/// `need`.
fn class(need: u32, min: u32) -> u32 {
    let wanted = u64::from(need) + u64::from(need).div_ceil(16);
    classes(min)
        .find(|class| u64::from(*class) >= wanted)
        .unwrap_or(u32::MAX)
}

impl Capacity {
    /// The capacity of the class of `need`, with room for `flows` flows.
    pub fn for_need(need: Need, flows: u32) -> Capacity {
        let v4_prefixes = class(need.v4_prefixes, MIN_PREFIXES);
        let v6_prefixes = class(need.v6_prefixes, MIN_PREFIXES);
        Capacity {
            rules: class(need.all_rules(), MIN_RULES),
            v4_prefixes,
            v6_prefixes,
            generations: generations_for(v4_prefixes, v6_prefixes),
            flows,
        }
    }

    /// Whether maps of this capacity hold `need` (the rules of its policies, not those only
    /// kept: a list created or changed while it is not enforced does not make the maps
    /// again).
    pub fn holds(&self, need: Need) -> bool {
        need.rules <= self.rules
            && need.v4_prefixes <= self.v4_prefixes
            && need.v6_prefixes <= self.v6_prefixes
    }

    /// Whether maps of this capacity are so far above `need` that they should shrink
    /// ([`SHRINK_FACTOR`] times its class or more, in rules or in either family).
    pub fn oversized_for(&self, need: Need) -> bool {
        let ideal = Capacity::for_need(need, self.flows);
        let far = |have: u32, ideal: u32| u64::from(have) >= u64::from(ideal) * SHRINK_FACTOR;
        far(self.rules, ideal.rules)
            || far(self.v4_prefixes, ideal.v4_prefixes)
            || far(self.v6_prefixes, ideal.v6_prefixes)
    }
}

/// The generations range tables for policies of up to `v4` IPv4 and `v6` IPv6 prefixes
/// hold: [`GENERATIONS`], or two when one generation's tables take more than
/// [`SPARE_LIMIT_BYTES`].
pub fn generations_for(v4: u32, v6: u32) -> u32 {
    let regions = Regions::for_prefixes(v4, v6);
    let line = size_of::<RangeBucket>() as u64;
    let bytes = u64::from(regions.v4_lines + regions.v6_lines) * line
        + u64::from(regions.v4_leaves) * size_of::<V4Leaf>() as u64
        // A range's start, and its rule (4 bytes).
        + u64::from(regions.v6_ranges) * (size_of::<V6Words>() as u64 + 4);
    if bytes > SPARE_LIMIT_BYTES {
        2
    } else {
        GENERATIONS
    }
}

/// The class of prefixes whose map (`len_of` gives its length for a class) is `len` long,
/// if one is (the classes are few: each is tried in turn).
pub fn prefix_class_of_length(len_of: impl Fn(u32) -> u32, len: u32) -> Option<u32> {
    classes(MIN_PREFIXES)
        .take_while(|class| len_of(*class) <= len)
        .find(|class| len_of(*class) == len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(rules: u32, prefixes: u32) -> Need {
        Need {
            rules,
            kept_rules: rules,
            v4_prefixes: prefixes,
            v6_prefixes: 0,
        }
    }

    #[test]
    fn rules_only_kept_neither_grow_nor_shrink_the_maps_but_are_held_when_they_change() {
        let capacity = Capacity::for_need(need(100, 100), 1024);
        let created = Need {
            kept_rules: 10_000,
            ..need(100, 100)
        };
        assert!(
            capacity.holds(created) && !capacity.oversized_for(created),
            "a list created, not enforced"
        );
        let enabled = Need {
            v4_prefixes: 10_000,
            ..created
        };
        let grown = Capacity::for_need(enabled, 1024);
        assert!(grown.rules >= 10_000, "made again: the kept rules held");
        let disabled = Need {
            rules: 100,
            v4_prefixes: 100,
            ..created
        };
        assert!(
            !Capacity::for_need(need(100, 10_000), 1024).oversized_for(Need {
                v4_prefixes: 10_000,
                ..disabled
            }),
            "no shrinking below the kept rules"
        );
    }

    #[test]
    fn a_policy_needs_one_more_than_its_highest_rule() {
        let policy: Policy = [
            ("192.0.2.0/24".parse().expect("net"), 7),
            ("2001:db8::/32".parse().expect("net"), 3 | EXPIRING_RULE),
        ]
        .into_iter()
        .collect();
        let need = Need::of([&policy], 50);
        assert_eq!(
            (
                need.rules,
                need.kept_rules,
                need.v4_prefixes,
                need.v6_prefixes
            ),
            (8, 50, 1, 1)
        );
    }

    #[test]
    fn a_class_holds_its_need_with_a_little_headroom() {
        let capacity = Capacity::for_need(need(0, 0), 1024);
        assert_eq!(
            (capacity.rules, capacity.v4_prefixes, capacity.v6_prefixes),
            (MIN_RULES, MIN_PREFIXES, MIN_PREFIXES)
        );
        let capacity = Capacity::for_need(need(1000, 10_000), 1024);
        assert_eq!((capacity.rules, capacity.v4_prefixes), (21_504, 10_752));
        let capacity = Capacity::for_need(need(2_000_001, 1_000_000), 1024);
        assert_eq!(capacity.v4_prefixes, 1_114_112, "17/16 x 2^20");
        assert_eq!(capacity.rules, 2_228_224, "17/16 x 2^21");
        assert_eq!(class(u32::MAX, MIN_RULES), u32::MAX);
    }

    #[test]
    fn a_replacement_of_every_prefix_fits_the_maps_made_for_the_policy() {
        let capacity = Capacity::for_need(need(10_000, 10_000), 1024);
        let replacing = need(20_000, 10_000);
        assert!(capacity.holds(replacing) && !capacity.oversized_for(replacing));
        let acknowledged = Need {
            kept_rules: 20_000,
            ..need(20_000, 10_000)
        };
        assert!(capacity.holds(acknowledged) && !capacity.oversized_for(acknowledged));
    }

    #[test]
    fn small_classes_step_by_the_smallest_and_large_ones_by_a_sixteenth() {
        let small: Vec<u32> = classes(MIN_PREFIXES).take(8).collect();
        assert_eq!(small, [64, 128, 192, 256, 320, 384, 448, 512]);
        let large: Vec<u32> = classes(MIN_PREFIXES)
            .skip_while(|class| *class < 1 << 20)
            .take(3)
            .collect();
        assert_eq!(
            large,
            [1 << 20, (1 << 20) + (1 << 16), (1 << 20) + (2 << 16)]
        );
    }

    #[test]
    fn large_tables_keep_no_spare_generation() {
        let small = Capacity::for_need(need(20_000, 10_000), 1024);
        assert_eq!(small.generations, GENERATIONS);
        let large = Capacity::for_need(need(2_000_001, 1_000_000), 1024);
        assert_eq!(large.generations, 2);
        let v6 = Need {
            v6_prefixes: 1_000_000,
            ..need(1_000_001, 0)
        };
        assert_eq!(Capacity::for_need(v6, 1024).generations, 2);
    }

    #[test]
    fn maps_are_made_again_only_when_outgrown_or_far_too_large() {
        let capacity = Capacity::for_need(need(1000, 1000), 1024);
        let suits = |need: Need| capacity.holds(need) && !capacity.oversized_for(need);
        assert!(suits(need(1000, 1000)));
        assert!(suits(need(1050, 1050)), "headroom");
        assert!(suits(need(400, 400)), "a little below: kept");
        assert!(capacity.oversized_for(need(100, 100)), "far below: shrinks");
        assert!(!capacity.holds(need(5000, 1000)), "outgrown");
        let v6 = Need {
            v6_prefixes: 5000,
            ..need(1000, 1000)
        };
        assert!(!capacity.holds(v6), "each family by itself");
    }

    #[test]
    fn a_class_is_found_again_from_a_map_length() {
        let len = |prefixes: u32| prefixes * 3 + 1;
        let class = Capacity::for_need(need(1000, 10_000), 1024).v4_prefixes;
        assert_eq!(prefix_class_of_length(len, len(class)), Some(class));
        assert_eq!(prefix_class_of_length(len, len(class) + 1), None);
        assert_eq!(prefix_class_of_length(len, 7), None);
    }
}
