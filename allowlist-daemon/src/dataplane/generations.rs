//! Policy generations: three policies side by side in the tries, range tables and port
//! bitmaps, two configuration slots, and the one write that switches every CPU from one to
//! another.

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_common::{
    Config, GENERATIONS, MAP_CONFIG, MAP_CONFIG_SLOT, MAP_PROTECTED_PORTS, Mode,
    PROTECTED_PORT_WORDS,
};

use super::Dataplane;
use super::clock::monotonic_now_ns;
use super::codec::{port_words, raw_enforcement, scopes_of};
use super::error::{DataplaneError, map_error};
use super::tries::Written;
use super::types::{Enforcement, KernelState, Replies};
use crate::policy::{Policy, PortScope};

/// What one generation of the tries, range tables and port bitmaps holds, as written to the
/// kernel.
#[derive(Debug, Clone, Default)]
pub(super) struct Generation {
    /// Its prefixes, as the tries (the map of record) hold them.
    pub(super) policy: Policy,
    /// Whether its range table is known to be built from `policy`: true once written, and
    /// for the generations in force when pins are read back (written before their switch).
    /// A generation not in force may have been half written by a daemon that died.
    pub(super) ranges_written: bool,
    /// Its port bitmap.
    pub(super) scopes: BTreeSet<PortScope>,
}

impl Generation {
    /// Whether it can enforce `want` as it is (its scopes matter only when `want` has some).
    fn holds(&self, want: &Enforcement) -> bool {
        self.ranges_written
            && self.policy == want.policy
            && (want.scopes.is_empty() || self.scopes == want.scopes)
    }
}

/// The generation to write a new policy into: one no packet may read (not `in_force`, not
/// `keep`), the one whose writes (`cost`) are fewest; `None` when every one is taken.
pub(super) fn choose_generation(
    in_force: &[u32],
    keep: Option<u32>,
    cost: impl Fn(u32) -> usize,
) -> Option<u32> {
    (0..GENERATIONS)
        .filter(|g| !in_force.contains(g) && Some(*g) != keep)
        .min_by_key(|g| cost(*g))
}

impl Dataplane {
    /// Reads what pinned maps hold: the configuration in use, every generation's prefixes
    /// and port bitmap. Keys that fit no generation are removed.
    pub(super) fn read_back(&mut self) -> Result<(), DataplaneError> {
        self.slot = self
            .maps
            .config_slot
            .get(&0, 0)
            .map_err(map_error(MAP_CONFIG_SLOT))?
            & 1;
        self.current = self
            .maps
            .config
            .get(&self.slot, 0)
            .map_err(map_error(MAP_CONFIG))?;
        let read = self.read_tries()?;
        let in_force = self.generations_in_force();
        for ((index, generation), prefixes) in (0u32..).zip(self.generations.iter_mut()).zip(read) {
            generation.policy = prefixes.into_iter().collect();
            generation.ranges_written = in_force.contains(&index);
        }
        for (index, word) in (0u32..).zip(self.port_words.iter_mut()) {
            *word = self
                .maps
                .protected_ports
                .get(&index, 0)
                .map_err(map_error(MAP_PROTECTED_PORTS))?;
        }
        for (generation, words) in self
            .generations
            .iter_mut()
            .zip(self.port_words.chunks(PROTECTED_PORT_WORDS as usize))
        {
            generation.scopes = scopes_of(words);
        }
        Ok(())
    }

    /// What the kernel enforces now.
    pub fn kernel_state(&self) -> KernelState {
        let active = self.enforcement(&self.current.active);
        let fallback = (self.current.revert_at_ns != 0).then(|| {
            let remaining = self.current.revert_at_ns.saturating_sub(monotonic_now_ns());
            (
                self.enforcement(&self.current.fallback),
                Duration::from_nanos(remaining),
            )
        });
        KernelState { active, fallback }
    }

    /// Whether a pending change's deadline has passed in the kernel's clock: the program
    /// enforces the fallback now.
    pub fn fell_back(&self) -> bool {
        self.current.revert_at_ns != 0 && monotonic_now_ns() >= self.current.revert_at_ns
    }

    /// The policy in force in the kernel (not counting a pending fallback).
    pub fn installed(&self) -> &Policy {
        let generation = self.current.active.generation as usize % self.generations.len();
        &self.generations[generation].policy
    }

    /// The enforcement a raw configuration entry names.
    pub(super) fn enforcement(&self, raw: &allowlist_common::Enforcement) -> Enforcement {
        let generation = self
            .generations
            .get(raw.generation as usize)
            .cloned()
            .unwrap_or_default();
        Enforcement {
            policy: generation.policy,
            scopes: if raw.scoped != 0 {
                generation.scopes
            } else {
                BTreeSet::new()
            },
            mode: Mode::from_raw(raw.mode),
        }
    }

    /// Makes the kernel enforce `active` and, when `fallback` is given, fall back by itself to
    /// its policy once its delay has passed. Every policy is written completely into a
    /// generation no packet uses, then one write switches every CPU to the new configuration:
    /// no packet sees a half-written policy. On error the kernel still enforces what it did.
    pub fn install(
        &mut self,
        active: &Enforcement,
        fallback: Option<(&Enforcement, Duration)>,
    ) -> Result<(), DataplaneError> {
        self.check_fits(&active.policy)?;
        let Some((fallback, delay)) = fallback else {
            let generation = self.place(active, None)?;
            return self.switch(Config {
                active: raw_enforcement(generation, active),
                fallback: allowlist_common::Enforcement::default(),
                revert_at_ns: 0,
                ..self.current
            });
        };
        self.check_fits(&fallback.policy)?;
        let deadline = monotonic_now_ns()
            .saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        let back = self.place(fallback, None)?;
        let front = match self.place(active, Some(back)) {
            Err(DataplaneError::NoFreeGeneration) => {
                // The two generations in force are both needed until the new fallback is: switch
                // to it first (same active policy), which frees the old one.
                self.switch(Config {
                    fallback: raw_enforcement(back, fallback),
                    revert_at_ns: deadline,
                    ..self.current
                })?;
                self.place(active, Some(back))?
            }
            other => other?,
        };
        self.switch(Config {
            active: raw_enforcement(front, active),
            fallback: raw_enforcement(back, fallback),
            revert_at_ns: deadline,
            ..self.current
        })
    }

    /// A generation holding `want`: one that already does, else the free generation (not
    /// in force, not `keep`) needing the fewest writes, written now.
    fn place(&mut self, want: &Enforcement, keep: Option<u32>) -> Result<u32, DataplaneError> {
        if let Some(found) = (0u32..).zip(&self.generations).find(|(_, g)| g.holds(want)) {
            return Ok(found.0);
        }
        let cost = |g: u32| self.generations[g as usize].policy.diff(&want.policy).len();
        let generation = choose_generation(&self.generations_in_force(), keep, cost)
            .ok_or(DataplaneError::NoFreeGeneration)?;
        let index = generation as usize;
        let diff = self.generations[index].policy.diff(&want.policy);
        // No packet uses this generation: it may hold anything while it is written.
        let mut written = Written::default();
        self.generations[index].ranges_written = false;
        match self.write_diff(generation, &diff, &mut written) {
            Ok(()) => self.generations[index].policy = want.policy.clone(),
            Err(err) => {
                let held = &self.generations[index].policy;
                self.generations[index].policy = held.patched(
                    &diff.removals[..written.removals],
                    &diff.upserts[..written.upserts],
                );
                return Err(err);
            }
        }
        self.write_ranges(generation, &want.policy)?;
        self.generations[index].ranges_written = true;
        if !want.scopes.is_empty() {
            self.write_scopes(generation, &want.scopes)?;
        }
        Ok(generation)
    }

    /// The generations the program may read now.
    fn generations_in_force(&self) -> Vec<u32> {
        let mut used = vec![self.current.active.generation];
        if self.current.revert_at_ns != 0 {
            used.push(self.current.fallback.generation);
        }
        used
    }

    /// Refuses a policy that does not fit one generation.
    fn check_fits(&self, policy: &Policy) -> Result<(), DataplaneError> {
        if let Some((_, rule)) = policy.iter().find(|(_, rule)| **rule >= self.max_rules) {
            return Err(DataplaneError::RuleOutOfRange {
                rule: *rule,
                capacity: self.max_rules,
            });
        }
        let (v4, v6) = policy.len_by_family();
        for (family, needed) in [(4, v4), (6, v6)] {
            if needed > self.max_rules as usize {
                return Err(DataplaneError::CapacityExceeded {
                    family,
                    needed,
                    capacity: self.max_rules,
                });
            }
        }
        Ok(())
    }

    /// Writes `config` into the slot not in use, then switches to it: the one write after
    /// which every CPU reads the new configuration.
    pub(super) fn switch(&mut self, config: Config) -> Result<(), DataplaneError> {
        if config == self.current {
            return Ok(());
        }
        let next = self.slot ^ 1;
        self.maps
            .config
            .set(next, config, 0)
            .map_err(map_error(MAP_CONFIG))?;
        self.maps
            .config_slot
            .set(0, next, 0)
            .map_err(map_error(MAP_CONFIG_SLOT))?;
        self.slot = next;
        self.current = config;
        Ok(())
    }

    /// Sets whether and how long replies to the host's own flows pass. Takes effect at once
    /// for the check; the egress program is attached (or not) by [`Dataplane::attach`].
    pub fn set_replies(&mut self, replies: Replies) -> Result<(), DataplaneError> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.switch(Config {
            replies: u32::from(replies.enabled),
            tcp_timeout_ns: nanos(replies.tcp_timeout),
            udp_timeout_ns: nanos(replies.udp_timeout),
            icmp_timeout_ns: nanos(replies.icmp_timeout),
            ..self.current
        })
    }

    /// Notes one refused packet in `sample` in the map of refused sources; 0: none.
    pub fn set_top_sample(&mut self, sample: u32) -> Result<(), DataplaneError> {
        self.switch(Config {
            top_sample: sample,
            ..self.current
        })
    }

    /// Writes `generation`'s port bitmap (only the words that change).
    fn write_scopes(
        &mut self,
        generation: u32,
        scopes: &BTreeSet<PortScope>,
    ) -> Result<(), DataplaneError> {
        for (index, word) in port_words(generation, scopes) {
            let known = &mut self.port_words[index as usize];
            if *known != word {
                self.maps
                    .protected_ports
                    .set(index, word, 0)
                    .map_err(map_error(MAP_PROTECTED_PORTS))?;
                *known = word;
            }
        }
        self.generations[generation as usize].scopes = scopes.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_policy_goes_where_no_packet_looks() {
        let free = |in_force: &[u32], keep| choose_generation(in_force, keep, |_| 0);
        assert_eq!(free(&[0], None), Some(1), "the lowest free one on a tie");
        assert_eq!(free(&[1], None), Some(0));
        assert_eq!(
            free(&[0, 1], None),
            Some(2),
            "both policies of a pending change stay"
        );
        assert_eq!(
            free(&[0], Some(1)),
            Some(2),
            "nor the fallback just written"
        );
        assert_eq!(free(&[0, 1], Some(2)), None, "all three taken");
    }

    #[test]
    fn the_generation_needing_the_fewest_writes_wins() {
        let writes = [500, 3, 40];
        let cost = |g: u32| writes[g as usize];
        assert_eq!(choose_generation(&[2], None, cost), Some(1));
        assert_eq!(choose_generation(&[1], None, cost), Some(2));
        assert_eq!(choose_generation(&[1, 2], None, cost), Some(0));
    }

    #[test]
    fn a_generation_holds_a_policy_with_its_scopes_when_they_matter() {
        let policy: Policy = [("192.0.2.0/24".parse().expect("net"), 1)]
            .into_iter()
            .collect();
        let ssh: BTreeSet<PortScope> = ["tcp/22".parse().expect("scope")].into();
        let mut generation = Generation {
            policy: policy.clone(),
            ranges_written: true,
            scopes: ssh.clone(),
        };
        let mut want = Enforcement {
            policy,
            ..Enforcement::default()
        };
        assert!(generation.holds(&want), "unscoped: the bitmap is not read");
        want.scopes = ssh;
        assert!(generation.holds(&want));
        want.scopes = ["udp/53".parse().expect("scope")].into();
        assert!(!generation.holds(&want));
        want.scopes.clear();
        generation.ranges_written = false;
        assert!(
            !generation.holds(&want),
            "a range table not known to be written"
        );
        generation.ranges_written = true;
        want.policy = Policy::new();
        want.scopes.clear();
        assert!(!generation.holds(&want));
    }
}
