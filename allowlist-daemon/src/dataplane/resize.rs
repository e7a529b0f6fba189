//! Making the object's own maps (its configuration, its generations' tables, the rule hit
//! array) again at another size, so that their memory follows the policies in force: a new
//! object is loaded beside the one in force, sharing its counters, flows and the rest, is
//! given the policies and the hits so far, and takes over every link in one update per
//! interface; the old object and its maps go. Nothing is unenforced meanwhile: the links
//! point at the old program until the new one holds the whole policy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use allowlist_common::{RuleId, RuleStats};
use aya::maps::IterableMap as _;

use super::Dataplane;
use super::capacity::Need;
use super::clock::coarse_now_ns;
use super::error::DataplaneError;
use super::readings::each_rule_window;
use super::rule_expiry::write_deadlines;
use super::sys::Access;
use super::types::{AttachMode, Capacity, Enforcement};

/// How long maps stay far larger than the policies in force before they are made again
/// smaller: a list disabled and enabled again, or a change and its revert, cost no load of the
/// program and its maps each way.
pub const SHRINK_AFTER: Duration = Duration::from_secs(30);

/// What [`Dataplane::enforce`] writes: the policy in force, the one to fall back to and when,
/// and the kernel's deadlines of expiring rules.
pub struct Install<'a> {
    /// The policy in force.
    pub active: &'a Enforcement,
    /// The policy to fall back to, and the time left before the program does.
    pub fallback: Option<(&'a Enforcement, Duration)>,
    /// The deadlines of the rules of expiring entries, as the time left.
    pub deadlines: &'a BTreeMap<RuleId, Duration>,
}

impl<'a> Install<'a> {
    /// The same instants, `spent` later: each time left shortened by it.
    fn later(
        &self,
        spent: Duration,
    ) -> (
        Option<(&'a Enforcement, Duration)>,
        BTreeMap<RuleId, Duration>,
    ) {
        let fallback = self
            .fallback
            .map(|(fallback, left)| (fallback, left.saturating_sub(spent)));
        let deadlines = self
            .deadlines
            .iter()
            .map(|(rule, left)| (*rule, left.saturating_sub(spent)))
            .collect();
        (fallback, deadlines)
    }
}

impl Dataplane {
    /// Makes the kernel enforce `install`, in maps whose size suits `need`: those in force
    /// when they hold it (deadlines given first, policies written, deadlines no longer read
    /// taken back), else made again at the class of `need` (see the module's documentation);
    /// made again smaller too once they have been far too large for [`SHRINK_AFTER`], and
    /// at the same size when their two generations are both in force and a third policy must
    /// be written. An object without pins (the tests' own) keeps its maps.
    pub fn enforce(&mut self, need: Need, install: &Install<'_>) -> Result<(), DataplaneError> {
        // The rules given a deadline are written to the hit array too.
        let deadlines = install.deadlines.keys().next_back();
        let need = Need {
            rules: need
                .rules
                .max(deadlines.map_or(0, |rule| rule.saturating_add(1))),
            ..need
        };
        self.oversized_since = if self.capacity.oversized_for(need) {
            self.oversized_since.or_else(|| Some(Instant::now()))
        } else {
            None
        };
        let holds = self.capacity.holds(need);
        // A failed shrink took a while: the times left are counted from after it.
        let mut after_failed_shrink = None;
        if self.pins.is_some() && (!holds || self.shrink_due()) {
            let started = Instant::now();
            let capacity = Capacity::for_need(need, self.capacity.flows);
            tracing::info!(
                rules = capacity.rules,
                v4_prefixes = capacity.v4_prefixes,
                v6_prefixes = capacity.v6_prefixes,
                before_rules = self.capacity.rules,
                before_v4_prefixes = self.capacity.v4_prefixes,
                before_v6_prefixes = self.capacity.v6_prefixes,
                "the policies need tables of another size: making them again"
            );
            match self.resize(capacity, install) {
                // Only a shrink failed: the maps in force still hold the policies.
                Err(err) if holds => {
                    tracing::warn!(
                        error = %crate::error_chain(&err),
                        "making the tables smaller failed: tried again later"
                    );
                    self.oversized_since = Some(Instant::now());
                    after_failed_shrink = Some(install.later(started.elapsed()));
                }
                resized => return resized,
            }
        }
        let later;
        let install = match &after_failed_shrink {
            Some((fallback, deadlines)) => {
                later = Install {
                    active: install.active,
                    fallback: *fallback,
                    deadlines,
                };
                &later
            }
            None => install,
        };
        match self.write(install) {
            Err(DataplaneError::NoFreeGeneration) if self.pins.is_some() => {
                tracing::info!(
                    generations = self.capacity.generations,
                    "both generations of the tables are in force: making them again for a third"
                );
                self.resize(self.capacity, install)
            }
            written => written,
        }
    }

    /// Whether the maps have been far larger than the policies in force need for
    /// [`SHRINK_AFTER`]: the next [`Dataplane::enforce`] makes them again smaller.
    pub fn shrink_due(&self) -> bool {
        self.oversized_since
            .is_some_and(|since| since.elapsed() >= SHRINK_AFTER)
    }

    /// Writes `install` into this object's maps.
    fn write(&mut self, install: &Install<'_>) -> Result<(), DataplaneError> {
        if let Some(rule) = install
            .deadlines
            .keys()
            .find(|rule| **rule >= self.capacity.rules)
        {
            return Err(DataplaneError::RuleOutOfRange {
                rule: *rule,
                capacity: self.capacity.rules,
            });
        }
        let now = Duration::from_nanos(coarse_now_ns());
        let rule_hits = &self.maps.rule_hits;
        self.rule_expiries.set(install.deadlines, now, |words| {
            write_deadlines(rule_hits, words)
        })?;
        self.install(install.active, install.fallback)?;
        let rule_hits = &self.maps.rule_hits;
        self.rule_expiries
            .retire(|words| write_deadlines(rule_hits, words))
    }

    /// Loads a new object of `capacity` beside this one, writes `install` and the hits so far
    /// into it, moves every link to it, and becomes it. On failure this object stays in
    /// force, its pins as they were.
    fn resize(&mut self, capacity: Capacity, install: &Install<'_>) -> Result<(), DataplaneError> {
        let Some(pins) = &self.pins else {
            return self.write(install);
        };
        let started = Instant::now();
        pins.release_instance()?;
        let next = self.next_object(capacity, install, started);
        let mut next = match next {
            Ok(next) => next,
            Err(err) => {
                // The new object's pins (if any) go; this one's come back.
                if let Some(pins) = &self.pins {
                    pins.release_instance()?;
                    pins.repin(&self.instance_maps())?;
                }
                return Err(err);
            }
        };
        for attachment in &self.attachments {
            next.attach(&attachment.interface, AttachMode::Auto)?;
        }
        self.readings
            .follow_rule_hits(&next.maps, next.capacity.rules)?;
        next.readings = self.readings.try_clone()?;
        next.kernel_log = self.kernel_log.take();
        *self = next;
        Ok(())
    }

    /// A new object of `capacity` pinned where this one is, holding `install` (its times left
    /// counted from `started`: loading takes a while), this object's settings and its rules'
    /// hits and deadlines.
    fn next_object(
        &self,
        capacity: Capacity,
        install: &Install<'_>,
        started: Instant,
    ) -> Result<Dataplane, DataplaneError> {
        let mut next = Dataplane::with_object(self.pins.as_ref().map(|p| p.again()), capacity)?;
        next.slots = self.slots.clone();
        // A preview ends: the new object's tables hold no candidate.
        next.config.switch(allowlist_common::Config {
            active: allowlist_common::Enforcement::default(),
            fallback: allowlist_common::Enforcement::default(),
            revert_at_ns: 0,
            preview: allowlist_common::Enforcement::default(),
            preview_until_ns: 0,
            ..*self.config.current()
        })?;
        next.copy_rule_stats(self)?;
        if let Some((fallback, _)) = install.fallback {
            // No link uses the new object yet: the fallback goes in first, taking the place
            // of its empty policy, so that a table of two generations has one left for the
            // policy in force.
            next.install(fallback, None)?;
        }
        let (fallback, deadlines) = install.later(started.elapsed());
        next.write(&Install {
            active: install.active,
            fallback,
            deadlines: &deadlines,
        })?;
        Ok(next)
    }

    /// Copies the hits, last hits and deadlines of the rules `other` and this object both
    /// hold (hits counted meanwhile by the old program are lost).
    fn copy_rule_stats(&mut self, other: &Dataplane) -> Result<(), DataplaneError> {
        let rules = self.capacity.rules.min(other.capacity.rules) as usize;
        let mut stats = vec![RuleStats::default(); rules];
        each_rule_window(
            other.maps.rule_hits.map(),
            0..rules,
            Access::Read,
            |first, window| {
                for (index, slot) in stats[first..first + window.len()].iter_mut().enumerate() {
                    if let Some(read) = window.get(index) {
                        *slot = read;
                    }
                }
            },
        )?;
        let mut written = true;
        each_rule_window(
            self.maps.rule_hits.map(),
            0..rules,
            Access::ReadWrite,
            |first, window| {
                written &= window.copy_from(&stats[first..first + window.len()]);
            },
        )?;
        if !written {
            return Err(DataplaneError::Unwritable(allowlist_common::MAP_RULE_HITS));
        }
        self.rule_expiries = other.rule_expiries.clone();
        Ok(())
    }
}
