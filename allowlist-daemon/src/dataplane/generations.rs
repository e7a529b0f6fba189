//! Policy generations: three policies side by side in the range tables and port bitmaps
//! (two when the tables are large, see [`super::capacity`]), each with a record of what it
//! holds, and which one a new policy goes into.

use std::collections::BTreeSet;

use allowlist_common::{
    GENERATIONS, GenerationRecord, MAP_GENERATION_RECORDS, MAP_PROTECTED_PORTS,
    PROTECTED_PORT_WORDS,
};
use aya::Ebpf;
use aya::maps::{Array, IterableMap as _, MapData};

use super::codec::{policy_digest, port_words, scopes_of};
use super::error::{DataplaneError, map_error};
use super::maps::take;
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
fn choose_generation(generations: u32, in_force: &[u32], keep: Option<u32>) -> Option<u32> {
    (0..generations.min(GENERATIONS)).find(|g| !in_force.contains(g) && Some(*g) != keep)
}

/// What `Generations::find` found for a policy.
pub(super) enum Found {
    /// A generation holds it already.
    Held(u32),
    /// None does; its digest when it was computed to compare (to reuse when sealing).
    Absent(Option<[u8; 32]>),
}

/// The generations of one object: what each holds, and the two maps that tell the program
/// (each generation's record, and the port bitmaps).
pub(super) struct Generations {
    /// Each generation's record: the digest of its policy and its prefixes.
    records: Array<MapData, GenerationRecord>,
    /// The protected-port bitmap of every generation.
    protected_ports: Array<MapData, u64>,
    /// What each generation holds, as written or read back.
    held: Vec<Generation>,
    /// What the port bitmaps hold, word by word.
    port_words: Vec<u64>,
    /// How many generations the tables have room for.
    room: u32,
}

impl Generations {
    /// Takes the two maps out of `ebpf`, for tables with room for `room` generations;
    /// nothing known of what they hold until [`Generations::read_back`].
    pub(super) fn take(ebpf: &mut Ebpf, room: u32) -> Result<Self, DataplaneError> {
        Ok(Generations {
            records: take(ebpf, MAP_GENERATION_RECORDS)?,
            protected_ports: take(ebpf, MAP_PROTECTED_PORTS)?,
            held: vec![Generation::default(); GENERATIONS as usize],
            port_words: vec![0; (GENERATIONS * PROTECTED_PORT_WORDS) as usize],
            room,
        })
    }

    /// Reads every generation's record and port bitmap from pinned maps; when the
    /// configuration was `never_switched`, generation 0 (which it names, and which nothing
    /// writes while it is named) is known to hold the empty policy its tables were made with.
    pub(super) fn read_back(&mut self, never_switched: bool) -> Result<(), DataplaneError> {
        for (index, generation) in (0u32..).zip(self.held.iter_mut()) {
            generation.record = self
                .records
                .get(&index, 0)
                .map_err(map_error(MAP_GENERATION_RECORDS))?;
        }
        if never_switched {
            self.held[0].policy = Some(Policy::new());
        }
        for (index, word) in (0u32..).zip(self.port_words.iter_mut()) {
            *word = self
                .protected_ports
                .get(&index, 0)
                .map_err(map_error(MAP_PROTECTED_PORTS))?;
        }
        for (generation, words) in self
            .held
            .iter_mut()
            .zip(self.port_words.chunks(PROTECTED_PORT_WORDS as usize))
        {
            generation.scopes = scopes_of(words);
        }
        Ok(())
    }

    /// The generation that holds `want` already, if any (its policy is then known by value).
    pub(super) fn find(&mut self, want: &Enforcement) -> Found {
        let known = |g: &Generation| g.policy.is_some() || g.record.digest == [0; 32];
        let digest = if self.held.iter().all(known) {
            // Every generation is known or names nothing: no digest needed to compare.
            None
        } else {
            Some(policy_digest(&want.policy))
        };
        match self
            .held
            .iter()
            .position(|g| g.holds(want, digest.as_ref()))
        {
            Some(index) => {
                self.held[index].policy = Some(want.policy.clone());
                Found::Held(index as u32)
            }
            None => Found::Absent(digest),
        }
    }

    /// The generation to write a new policy into: the first no packet may read (not
    /// `in_force`, not `keep`); `None` when every one is taken.
    pub(super) fn free(&self, in_force: &[u32], keep: Option<u32>) -> Option<u32> {
        choose_generation(self.room, in_force, keep)
    }

    /// Clears `generation`'s record before it is written: it names no policy until it is
    /// whole again ([`Generations::seal`]).
    pub(super) fn open(&mut self, generation: u32) -> Result<(), DataplaneError> {
        self.held[generation as usize].policy = None;
        self.write_record(generation, GenerationRecord::default())
    }

    /// Records that `generation` now holds `want`'s policy (`digest`: its digest, if known).
    pub(super) fn seal(
        &mut self,
        generation: u32,
        want: &Enforcement,
        digest: Option<[u8; 32]>,
    ) -> Result<(), DataplaneError> {
        let record = GenerationRecord {
            digest: digest.unwrap_or_else(|| policy_digest(&want.policy)),
            prefixes: want.policy.len() as u64,
        };
        self.write_record(generation, record)?;
        self.held[generation as usize].policy = Some(want.policy.clone());
        Ok(())
    }

    /// Writes `generation`'s port bitmap (only the words that change).
    pub(super) fn write_scopes(
        &mut self,
        generation: u32,
        scopes: &BTreeSet<PortScope>,
    ) -> Result<(), DataplaneError> {
        for (index, word) in port_words(generation, scopes) {
            let known = &mut self.port_words[index as usize];
            if *known != word {
                self.protected_ports
                    .set(index, word, 0)
                    .map_err(map_error(MAP_PROTECTED_PORTS))?;
                *known = word;
            }
        }
        self.held[generation as usize].scopes = scopes.clone();
        Ok(())
    }

    /// What `generation` holds (nothing known for one out of range).
    pub(super) fn get(&self, generation: u32) -> Generation {
        self.held
            .get(generation as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// The policy `generation` holds, when this daemon knows it.
    #[cfg(feature = "test-util")]
    pub(super) fn policy(&self, generation: u32) -> Option<&Policy> {
        self.held
            .get(generation as usize)
            .and_then(|held| held.policy.as_ref())
    }

    /// The two maps, by name (to pin them again after a failed resize).
    pub(super) fn maps(&self) -> [(&'static str, &MapData); 2] {
        [
            (MAP_GENERATION_RECORDS, self.records.map()),
            (MAP_PROTECTED_PORTS, self.protected_ports.map()),
        ]
    }

    /// Writes `generation`'s record.
    fn write_record(
        &mut self,
        generation: u32,
        record: GenerationRecord,
    ) -> Result<(), DataplaneError> {
        self.records
            .set(generation, record, 0)
            .map_err(map_error(MAP_GENERATION_RECORDS))?;
        self.held[generation as usize].record = record;
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
