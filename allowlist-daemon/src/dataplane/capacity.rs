//! Sizing the maps to the policies in force: the capacity a set of policies needs, rounded
//! up to a size class with headroom, so that most changes fit the maps there are and only a
//! policy that outgrows them (or shrinks far below them) has them made again, at their new
//! size ([`super::Dataplane::enforce`] does it). The memory of the maps follows the
//! policies, not a configured maximum.

use super::types::Capacity;
use crate::policy::Policy;

/// The smallest class of rules: a hit array of 4 KiB.
const MIN_RULES: u32 = 256;
/// The smallest class of prefixes per family and policy.
const MIN_PREFIXES: u32 = 64;
/// Steps of a class within each doubling, in quarters: 1, 1.25, 1.5 and 1.75 times a power
/// of two, so that a class holds at most a few tenths more than its need.
const QUARTER_STEPS: [u64; 4] = [4, 5, 6, 7];
/// Maps this many times their need's class or more are made again smaller.
const SHRINK_FACTOR: u64 = 4;

/// What policies need: rule ids, and prefixes of each family in one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// One more than the highest rule id the policies (and the hit counts kept) use.
    pub rules: u32,
    /// The most IPv4 prefixes in one of the policies.
    pub v4_prefixes: u32,
    /// The most IPv6 prefixes in one of the policies.
    pub v6_prefixes: u32,
}

impl Need {
    /// What `policies` need, with rule ids below `rule_bound` in use.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>, rule_bound: u32) -> Need {
        let count = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
        policies.into_iter().fold(
            Need {
                rules: rule_bound,
                ..Need::default()
            },
            |need, policy| {
                let (v4, v6) = policy.len_by_family();
                Need {
                    v4_prefixes: need.v4_prefixes.max(count(v4)),
                    v6_prefixes: need.v6_prefixes.max(count(v6)),
                    ..need
                }
            },
        )
    }
}

/// The classes from `min` on, rising: `min` times a power of two times one of
/// [`QUARTER_STEPS`] quarters.
fn classes(min: u32) -> impl Iterator<Item = u32> {
    (0..32u32)
        .flat_map(move |doubling| {
            QUARTER_STEPS
                .iter()
                .map(move |quarters| (u64::from(min) << doubling) * quarters / 4)
        })
        .map_while(|class| u32::try_from(class).ok())
}

/// The class of `need`: the smallest one from `min` on that holds an eighth more than
/// `need`.
fn class(need: u32, min: u32) -> u32 {
    let wanted = u64::from(need) + u64::from(need).div_ceil(8);
    classes(min)
        .find(|class| u64::from(*class) >= wanted)
        .unwrap_or(u32::MAX)
}

impl Capacity {
    /// The capacity of the class of `need`, with room for `flows` flows.
    pub fn for_need(need: Need, flows: u32) -> Capacity {
        Capacity {
            rules: class(need.rules, MIN_RULES),
            v4_prefixes: class(need.v4_prefixes, MIN_PREFIXES),
            v6_prefixes: class(need.v6_prefixes, MIN_PREFIXES),
            flows,
        }
    }

    /// Whether maps of this capacity hold `need`, and are not so far above it that they
    /// should shrink ([`SHRINK_FACTOR`] times its class or more).
    pub fn suits(&self, need: Need) -> bool {
        let fits = need.rules <= self.rules
            && need.v4_prefixes <= self.v4_prefixes
            && need.v6_prefixes <= self.v6_prefixes;
        let ideal = Capacity::for_need(need, self.flows);
        let far = |have: u32, ideal: u32| u64::from(have) >= u64::from(ideal) * SHRINK_FACTOR;
        let oversized = far(self.rules, ideal.rules)
            || far(self.v4_prefixes, ideal.v4_prefixes)
            || far(self.v6_prefixes, ideal.v6_prefixes);
        fits && !oversized
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
            v4_prefixes: prefixes,
            v6_prefixes: 0,
        }
    }

    #[test]
    fn a_class_holds_its_need_with_a_little_headroom() {
        let capacity = Capacity::for_need(need(0, 0), 1024);
        assert_eq!(
            (capacity.rules, capacity.v4_prefixes, capacity.v6_prefixes),
            (MIN_RULES, MIN_PREFIXES, MIN_PREFIXES)
        );
        let capacity = Capacity::for_need(need(1000, 10_000), 1024);
        assert_eq!((capacity.rules, capacity.v4_prefixes), (1280, 12_288));
        let capacity = Capacity::for_need(need(2_000_001, 1_000_000), 1024);
        assert_eq!(capacity.v4_prefixes, 1_310_720, "1.25 x 2^20");
        assert!(capacity.rules >= 2_250_002 && capacity.rules <= 2_621_440);
        assert_eq!(class(u32::MAX, MIN_RULES), u32::MAX);
    }

    #[test]
    fn maps_are_made_again_only_when_outgrown_or_far_too_large() {
        let capacity = Capacity::for_need(need(1000, 1000), 1024);
        assert!(capacity.suits(need(1000, 1000)));
        assert!(capacity.suits(need(1100, 1100)), "headroom");
        assert!(capacity.suits(need(400, 400)), "a little below: kept");
        assert!(!capacity.suits(need(100, 100)), "far below: shrinks");
        assert!(!capacity.suits(need(5000, 1000)), "outgrown");
        let v6 = Need {
            v6_prefixes: 5000,
            ..need(1000, 1000)
        };
        assert!(!capacity.suits(v6), "each family by itself");
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
