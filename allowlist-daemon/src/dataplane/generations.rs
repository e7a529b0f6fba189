//! Policy generations: three policies side by side in the range tables and port bitmaps
//! (two when the tables are large, see [`super::capacity`]), each with a record of what it
//! holds, two configuration slots, and the one write that switches every CPU from one to
//! another.

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_common::{
    Config, GENERATIONS, GenerationRecord, MAP_CONFIG, MAP_CONFIG_SLOT, MAP_GENERATION_RECORDS,
    MAP_PROTECTED_PORTS, PROTECTED_PORT_WORDS,
};

use super::Dataplane;
use super::clock::monotonic_now_ns;
use super::codec::{policy_digest, port_words, raw_enforcement, scopes_of};
use super::error::{DataplaneError, map_error};
use super::types::Enforcement;
use crate::policy::{Policy, PortScope};

/// What one generation of the range tables and port bitmaps holds, as written to the kernel.
#[derive(Debug, Clone, Default)]
pub(super) struct Generation {
    /// Its policy, when this daemon knows it: it wrote it, or found its digest in the record.
    pub(super) policy: Option<Policy>,
    /// The record in the kernel: the digest of the policy (zero: none).
    pub(super) record: GenerationRecord,
    /// Its port bitmap.
    pub(super) scopes: BTreeSet<PortScope>,
}

impl Generation {
    /// Whether it can enforce `want` as it is (its scopes matter only when `want` has
    /// some). A generation known only by its record is compared by `digest`, the digest of
    /// `want`'s policy, when given.
    fn holds(&self, want: &Enforcement, digest: Option<&[u8; 32]>) -> bool {
        let policy_held = match (&self.policy, digest) {
            (Some(policy), _) => *policy == want.policy,
            (None, Some(digest)) => self.record.digest == *digest,
            (None, None) => false,
        };
        policy_held && (want.scopes.is_empty() || self.scopes == want.scopes)
    }
}

/// The generation to write a new policy into: the first of the tables' `generations` no
/// packet may read (not `in_force`, not `keep`); `None` when every one is taken.
pub(super) fn choose_generation(
    generations: u32,
    in_force: &[u32],
    keep: Option<u32>,
) -> Option<u32> {
    (0..generations.min(GENERATIONS)).find(|g| !in_force.contains(g) && Some(*g) != keep)
}

impl Dataplane {
    /// Reads what pinned maps hold: the configuration in use, every generation's record and
    /// port bitmap.
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
        for (index, generation) in (0u32..).zip(self.generations.iter_mut()) {
            generation.record = self
                .maps
                .generation_records
                .get(&index, 0)
                .map_err(map_error(MAP_GENERATION_RECORDS))?;
        }
        if self.current == Config::default() {
            // Never switched: the configuration names generation 0, which nothing writes
            // while it is named, so its tables are as created: empty.
            self.generations[0].policy = Some(Policy::new());
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

    /// A generation holding `want`: one that already does, else a free generation (not in
    /// force, not `keep`), written now: its record cleared, its range tables and port bitmap
    /// written whole, then its record filled in.
    pub(super) fn place(
        &mut self,
        want: &Enforcement,
        keep: Option<u32>,
    ) -> Result<u32, DataplaneError> {
        let known = |g: &Generation| g.policy.is_some() || g.record.digest == [0; 32];
        let digest = if self.generations.iter().all(known) {
            // Every generation is known or names nothing: no digest needed to compare.
            None
        } else {
            Some(policy_digest(&want.policy))
        };
        if let Some(index) = self
            .generations
            .iter()
            .position(|g| g.holds(want, digest.as_ref()))
        {
            self.generations[index].policy = Some(want.policy.clone());
            return Ok(index as u32);
        }
        let in_force = self.generations_in_force();
        let generation = choose_generation(self.capacity.generations, &in_force, keep)
            .ok_or(DataplaneError::NoFreeGeneration)?;
        let index = generation as usize;
        // No packet uses this generation: it may hold anything while it is written, but its
        // record names nothing until it is whole.
        self.generations[index].policy = None;
        self.write_record(generation, GenerationRecord::default())?;
        self.write_ranges(generation, &want.policy)?;
        if !want.scopes.is_empty() {
            self.write_scopes(generation, &want.scopes)?;
        }
        let record = GenerationRecord {
            digest: digest.unwrap_or_else(|| policy_digest(&want.policy)),
            prefixes: want.policy.len() as u64,
        };
        self.write_record(generation, record)?;
        self.generations[index].policy = Some(want.policy.clone());
        Ok(generation)
    }

    /// Writes `generation`'s record.
    fn write_record(
        &mut self,
        generation: u32,
        record: GenerationRecord,
    ) -> Result<(), DataplaneError> {
        self.maps
            .generation_records
            .set(generation, record, 0)
            .map_err(map_error(MAP_GENERATION_RECORDS))?;
        self.generations[generation as usize].record = record;
        Ok(())
    }

    /// The generations the program may read now: a running preview's too, which no policy
    /// is written over.
    fn generations_in_force(&self) -> Vec<u32> {
        let mut used = vec![self.current.active.generation];
        if self.current.revert_at_ns != 0 {
            used.push(self.current.fallback.generation);
        }
        if self.current.preview_until_ns != 0 {
            used.push(self.current.preview.generation);
        }
        used
    }

    /// Refuses a policy that does not fit one generation.
    pub(super) fn check_fits(&self, policy: &Policy) -> Result<(), DataplaneError> {
        if let Some((_, rule)) = policy
            .iter()
            .find(|(_, rule)| (**rule & !allowlist_common::EXPIRING_RULE) >= self.capacity.rules)
        {
            return Err(DataplaneError::RuleOutOfRange {
                rule: *rule,
                capacity: self.capacity.rules,
            });
        }
        let (v4, v6) = policy.len_by_family();
        let capacity = &self.capacity;
        for (family, needed, room) in [(4, v4, capacity.v4_prefixes), (6, v6, capacity.v6_prefixes)]
        {
            if needed > room as usize {
                return Err(DataplaneError::CapacityExceeded {
                    family,
                    needed,
                    capacity: room,
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
        let three = GENERATIONS;
        assert_eq!(
            choose_generation(three, &[0], None),
            Some(1),
            "the lowest free one"
        );
        assert_eq!(choose_generation(three, &[1], None), Some(0));
        assert_eq!(
            choose_generation(three, &[0, 1], None),
            Some(2),
            "both policies of a pending change stay"
        );
        assert_eq!(
            choose_generation(three, &[0], Some(1)),
            Some(2),
            "nor the fallback just written"
        );
        assert_eq!(
            choose_generation(three, &[0, 1], Some(2)),
            None,
            "all three taken"
        );
        assert_eq!(choose_generation(2, &[1], None), Some(0), "two: the other");
        assert_eq!(
            choose_generation(2, &[0, 1], None),
            None,
            "two, both in force: none"
        );
    }

    #[test]
    fn a_generation_holds_a_policy_with_its_scopes_when_they_matter() {
        let policy: Policy = [("192.0.2.0/24".parse().expect("net"), 1)]
            .into_iter()
            .collect();
        let ssh: BTreeSet<PortScope> = ["tcp/22".parse().expect("scope")].into();
        let generation = Generation {
            policy: Some(policy.clone()),
            record: GenerationRecord::default(),
            scopes: ssh.clone(),
        };
        let mut want = Enforcement {
            policy,
            ..Enforcement::default()
        };
        assert!(
            generation.holds(&want, None),
            "unscoped: the bitmap is not read"
        );
        want.scopes = ssh;
        assert!(generation.holds(&want, None));
        want.scopes = ["udp/53".parse().expect("scope")].into();
        assert!(!generation.holds(&want, None));
        want.scopes.clear();
        want.policy = Policy::new();
        assert!(!generation.holds(&want, None));
    }

    #[test]
    fn a_generation_known_by_its_record_holds_the_policy_of_its_digest() {
        let policy: Policy = [("2001:db8::/32".parse().expect("net"), 4)]
            .into_iter()
            .collect();
        let digest = policy_digest(&policy);
        let generation = Generation {
            policy: None,
            record: GenerationRecord {
                digest,
                prefixes: 1,
            },
            scopes: BTreeSet::new(),
        };
        let want = Enforcement {
            policy: policy.clone(),
            ..Enforcement::default()
        };
        assert!(generation.holds(&want, Some(&digest)));
        assert!(!generation.holds(&want, None), "no digest to compare");
        let other = policy_digest(&Policy::new());
        assert!(!generation.holds(&want, Some(&other)));
        let half_written = Generation {
            record: GenerationRecord::default(),
            ..generation
        };
        assert!(
            !half_written.holds(&want, Some(&digest)),
            "a cleared record names no policy"
        );
    }
}
