//! The two LPM tries, IPv4 and IPv6, that hold every generation's prefixes: read whole and
//! written in batches (one system call for many prefixes).

use allowlist_common::{Ipv4Key, Ipv6Key, MAP_ALLOW_V4, MAP_ALLOW_V6, RuleId};
use aya::maps::IterableMap as _;
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

use super::Dataplane;
use super::codec::{TrieKey, trie_key, v4_prefix, v6_prefix};
use super::error::{DataplaneError, batch_error};
use super::maps::Maps;
use super::sys::{BatchError, BatchMap};
use crate::policy::PolicyDiff;

/// How far a diff got before a write failed: the leading removals and upserts written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Written {
    /// Removals done.
    pub(super) removals: usize,
    /// Upserts done.
    pub(super) upserts: usize,
}

/// Trie keys, by family, each in the order given.
#[derive(Default)]
struct Keys {
    v4: Vec<Key<Ipv4Key>>,
    v6: Vec<Key<Ipv6Key>>,
}

impl Keys {
    /// The keys of `nets` in `generation`.
    fn of(generation: u32, nets: impl Iterator<Item = IpNet>) -> Keys {
        let mut keys = Keys::default();
        for net in nets {
            match trie_key(generation, net) {
                TrieKey::V4(key) => keys.v4.push(key),
                TrieKey::V6(key) => keys.v6.push(key),
            }
        }
        keys
    }
}

/// Batch access to both tries.
struct Tries<'a> {
    v4: BatchMap<'a, Key<Ipv4Key>, RuleId>,
    v6: BatchMap<'a, Key<Ipv6Key>, RuleId>,
}

/// A batch error of map `name`; adds the elements it did to `done`.
fn partial(name: &'static str, done: &mut usize) -> impl FnOnce(BatchError) -> DataplaneError {
    move |err| {
        if let BatchError::Stopped { done: by_it, .. } = &err {
            *done += by_it;
        }
        batch_error(name)(err)
    }
}

impl<'a> Tries<'a> {
    fn of(maps: &'a Maps) -> Result<Self, DataplaneError> {
        Ok(Tries {
            v4: BatchMap::new(maps.allow_v4.map(), None).map_err(batch_error(MAP_ALLOW_V4))?,
            v6: BatchMap::new(maps.allow_v6.map(), None).map_err(batch_error(MAP_ALLOW_V6))?,
        })
    }

    /// Removes `keys` (IPv4, then IPv6), counting those removed in `done`.
    fn delete(&self, keys: &Keys, done: &mut usize) -> Result<(), DataplaneError> {
        self.v4
            .delete(&keys.v4)
            .map_err(partial(MAP_ALLOW_V4, done))?;
        *done = keys.v4.len();
        self.v6
            .delete(&keys.v6)
            .map_err(partial(MAP_ALLOW_V6, done))?;
        *done += keys.v6.len();
        Ok(())
    }

    /// Writes `keys` with `rules` (IPv4, then IPv6, in one list), counting those written
    /// in `done`.
    fn update(
        &self,
        keys: &Keys,
        rules: &[RuleId],
        done: &mut usize,
    ) -> Result<(), DataplaneError> {
        let (v4, v6) = rules.split_at(keys.v4.len());
        self.v4
            .update(&keys.v4, v4)
            .map_err(partial(MAP_ALLOW_V4, done))?;
        *done = keys.v4.len();
        self.v6
            .update(&keys.v6, v6)
            .map_err(partial(MAP_ALLOW_V6, done))?;
        *done += keys.v6.len();
        Ok(())
    }
}

impl Dataplane {
    /// Every prefix the tries hold, by generation; keys that fit no generation are removed.
    pub(super) fn read_tries(&mut self) -> Result<Vec<Vec<(IpNet, RuleId)>>, DataplaneError> {
        let mut read: Vec<Vec<(IpNet, RuleId)>> = vec![Vec::new(); self.generations.len()];
        let mut note = |prefix: Option<(u32, IpNet)>, rule: RuleId| {
            let slot = prefix.and_then(|(g, net)| Some((read.get_mut(g as usize)?, net)));
            slot.map(|(generation, net)| generation.push((net, rule)))
                .is_some()
        };
        let tries = Tries::of(&self.maps)?;
        let mut strays = Keys::default();
        tries
            .v4
            .lookup(usize::MAX, |key, rule| {
                if !note(v4_prefix(key), rule[0]) {
                    strays.v4.push(*key);
                }
            })
            .map_err(batch_error(MAP_ALLOW_V4))?;
        tries
            .v6
            .lookup(usize::MAX, |key, rule| {
                if !note(v6_prefix(key), rule[0]) {
                    strays.v6.push(*key);
                }
            })
            .map_err(batch_error(MAP_ALLOW_V6))?;
        tries.delete(&strays, &mut 0)?;
        Ok(read)
    }

    /// Writes `diff` into `generation` of the tries: the removals first (which keeps a trie
    /// within its capacity), then the upserts, counting in `written` those done: on error,
    /// how far it got.
    pub(super) fn write_diff(
        &self,
        generation: u32,
        diff: &PolicyDiff,
        written: &mut Written,
    ) -> Result<(), DataplaneError> {
        let tries = Tries::of(&self.maps)?;
        // Both lists are sorted, IPv4 first: what is done is a leading part of each.
        let removals = Keys::of(generation, diff.removals.iter().copied());
        tries.delete(&removals, &mut written.removals)?;
        let upserts = Keys::of(generation, diff.upserts.iter().map(|(net, _)| *net));
        let rules: Vec<RuleId> = diff.upserts.iter().map(|(_, rule)| *rule).collect();
        tries.update(&upserts, &rules, &mut written.upserts)
    }
}
