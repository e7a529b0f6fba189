//! The program's configuration and its two slots: the program reads the slot the index map
//! names; a new configuration is written whole into the other slot, then one write of the
//! index switches every CPU to it. What the configuration says about time (a pending
//! change's deadline, a preview's end) is read here too.

use std::time::Duration;

use allowlist_common::{Config, MAP_CONFIG, MAP_CONFIG_SLOT};
use aya::Ebpf;
use aya::maps::{Array, IterableMap as _, MapData};

use super::clock::{coarse_now_ns, monotonic_now_ns};
use super::error::{DataplaneError, map_error};
use super::maps::take;

/// The two configuration slots of one object, the index naming the one in use, and what
/// that one holds.
pub(super) struct ConfigSlots {
    /// The two slots.
    slots: Array<MapData, Config>,
    /// The index of the slot in use (0 or 1).
    index: Array<MapData, u32>,
    /// The slot in use, as last written or read.
    in_use: u32,
    /// What the slot in use holds.
    current: Config,
}

impl ConfigSlots {
    /// Takes the two maps out of `ebpf` and reads the slot in use and its configuration
    /// (zeros in maps just made: the default configuration in slot 0).
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let slots: Array<MapData, Config> = take(ebpf, MAP_CONFIG)?;
        let index: Array<MapData, u32> = take(ebpf, MAP_CONFIG_SLOT)?;
        let in_use = index.get(&0, 0).map_err(map_error(MAP_CONFIG_SLOT))? & 1;
        let current = slots.get(&in_use, 0).map_err(map_error(MAP_CONFIG))?;
        Ok(ConfigSlots {
            slots,
            index,
            in_use,
            current,
        })
    }

    /// The configuration in force.
    pub(super) fn current(&self) -> &Config {
        &self.current
    }

    /// Whether the configuration was never switched (the program reads the default one).
    pub(super) fn never_switched(&self) -> bool {
        self.current == Config::default()
    }

    /// Switches to the configuration in force changed by `change`; nothing is written when
    /// it is the same.
    pub(super) fn update(
        &mut self,
        change: impl FnOnce(&mut Config),
    ) -> Result<(), DataplaneError> {
        let mut next = self.current;
        change(&mut next);
        self.switch(next)
    }

    /// Writes `config` into the slot not in use, then switches to it: the one write after
    /// which every CPU reads the new configuration. Nothing is written when it is in force.
    pub(super) fn switch(&mut self, config: Config) -> Result<(), DataplaneError> {
        if config == self.current {
            return Ok(());
        }
        let next = self.in_use ^ 1;
        self.slots
            .set(next, config, 0)
            .map_err(map_error(MAP_CONFIG))?;
        self.index
            .set(0, next, 0)
            .map_err(map_error(MAP_CONFIG_SLOT))?;
        self.in_use = next;
        self.current = config;
        Ok(())
    }

    /// The generations the program may read now: the active one, a pending change's
    /// fallback, a running preview's candidate (no policy is written over any of them).
    pub(super) fn generations_in_force(&self) -> Vec<u32> {
        let current = &self.current;
        let mut used = vec![current.active.generation];
        if current.revert_at_ns != 0 {
            used.push(current.fallback.generation);
        }
        if current.preview_until_ns != 0 {
            used.push(current.preview.generation);
        }
        used
    }

    /// While a change is pending: the time left until the program falls back, in the
    /// kernel's own (monotonic) clock.
    pub(super) fn time_to_fallback(&self) -> Option<Duration> {
        let deadline = self.current.revert_at_ns;
        (deadline != 0).then(|| Duration::from_nanos(deadline.saturating_sub(monotonic_now_ns())))
    }

    /// Whether a pending change's deadline has passed in the kernel's clock.
    pub(super) fn fell_back(&self) -> bool {
        self.current.revert_at_ns != 0 && monotonic_now_ns() >= self.current.revert_at_ns
    }

    /// The time left of the preview the program runs, in the kernel's coarse clock.
    pub(super) fn preview_left(&self) -> Option<Duration> {
        let until = self.current.preview_until_ns;
        let now = coarse_now_ns();
        (until != 0 && now < until).then(|| Duration::from_nanos(until - now))
    }

    /// The two maps, by name (to pin them again after a failed resize).
    pub(super) fn maps(&self) -> [(&'static str, &MapData); 2] {
        [
            (MAP_CONFIG, self.slots.map()),
            (MAP_CONFIG_SLOT, self.index.map()),
        ]
    }
}
