//! The kernel driver: the only module that talks to the kernel. It loads the XDP program and
//! the TC egress flow recorder, pins their maps and links, attaches them to interfaces,
//! writes policies into generations and switches between them, and reads the counters.
//!
//! [`Dataplane`] composes types that own their maps: [`config_slots`] (the configuration and
//! the one write that switches it), [`generations`] (what each generation holds, and where a
//! new policy goes), [`ranges`] (the range tables a generation holds) and [`maps`] (the
//! other maps' typed handles). Around them, one concern per file: [`types`] and [`error`] at
//! the bottom, the pure [`codec`] of map bytes, [`layout`] (the object), [`load`], [`pins`] (bpffs),
//! [`links`] (attachments), [`resize`], [`counters`], [`readings`], [`host_traffic`],
//! [`clock`]; [`test_run`] with the `test-util` feature and [`bench`](mod@bench) with `bench`.

#[cfg(feature = "bench")]
mod bench;
mod capacity;
mod clock;
mod codec;
mod config_slots;
mod counters;
mod error;
mod generations;
mod holders;
mod host_traffic;
mod kernel_log;
mod kernel_state;
mod layout;
mod links;
mod load;
mod maps;
mod memory;
mod pins;
mod preview;
mod ranges;
mod readings;
mod resize;
mod rule_expiry;
mod sys;
#[cfg(feature = "test-util")]
mod test_run;
mod types;

use std::path::{Path, PathBuf};
use std::time::Duration;

use allowlist_common::{MAP_CLOCK, MAP_RULE_HITS};
use aya::Ebpf;
use aya::maps::{IterableMap as _, MapData};

use crate::policy::Policy;

#[cfg(feature = "bench")]
pub use bench::{LookupDesign, VariedRun};
pub use capacity::Need;
pub use error::{AdoptError, DataplaneError};
pub use holders::Holder;
pub use kernel_log::KernelLog;
pub use links::Attachment;
pub use memory::MapMemory;
pub use preview::{PreviewSource, Would};
pub use readings::{Readings, RuleTable};
pub use resize::{Install, SHRINK_AFTER};
pub use sys::{BatchError, XdpAttachment, XdpHolder};
pub use types::{
    AttachMode, AttachedMode, Capacity, Counters, Enforced, Enforcement, FlowStats, FrameRun,
    KernelState, Replies, ReplyOpeners, RuleUse, SourceNoted, Verdict,
};

use clock::monotonic_now_ns;
use codec::raw_enforcement;
use config_slots::ConfigSlots;
use generations::{Found, Generations};
use links::Programs;
use maps::Maps;
use pins::Pins;
use ranges::RangeTables;
use readings::Slots;
use rule_expiry::RuleExpiries;

/// The loaded programs and their maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: Maps,
    /// Interfaces with their own counter slot, and the slot.
    slots: Slots,
    /// Handles of their own on the counting maps.
    readings: Readings,
    /// The program's configuration, switched in one write.
    config: ConfigSlots,
    /// What each generation of the tables holds.
    generations: Generations,
    /// The range tables of every generation.
    tables: RangeTables,
    /// What the maps have room for.
    capacity: Capacity,
    /// Where maps and links are pinned; `None`: nowhere.
    pins: Option<Pins>,
    attachments: Vec<Attachment>,
    /// The reader of the program's log lines, until the daemon takes it.
    kernel_log: Option<KernelLog>,
    /// The deadlines of the rules of expiring entries in the kernel.
    rule_expiries: RuleExpiries,
    /// A descriptor of each map, to read its kernel memory.
    memory: memory::MemoryProbe,
    /// Since when the maps have been far larger than the policies in force need (they are
    /// made again smaller once that has lasted [`resize::SHRINK_AFTER`]).
    oversized_since: Option<std::time::Instant>,
}

impl Dataplane {
    /// Loads the programs with their maps pinned under `<pin_root>/v<LAYOUT_VERSION>`
    /// (mounting bpffs at `/sys/fs/bpf` if it is missing), with room for `flows` flows. Maps
    /// pinned there by an earlier daemon are reused, policy, counters and flows included,
    /// tables of whatever size they are (the first [`Dataplane::enforce`] makes them again if
    /// the policies need another); shared maps whose layout does not match are replaced,
    /// with a log line saying why. Links pinned there (or under another layout version) are
    /// taken over by [`Dataplane::attach`] without a gap.
    pub fn open(pin_root: &Path, flows: u32) -> Result<Self, DataplaneError> {
        let capacity = Pins::pinned_capacity(pin_root, flows)
            .unwrap_or_else(|| Capacity::for_need(Need::default(), flows));
        let pins = Pins::prepare(pin_root, capacity)?;
        let mut dataplane = Self::with_object(Some(pins), capacity)?;
        let never_switched = dataplane.config.never_switched();
        dataplane.generations.read_back(never_switched)?;
        dataplane.renew_flow_filter()?;
        dataplane.tick_clock()?;
        Ok(dataplane)
    }

    /// The object loaded (its maps pinned in `pins`), nothing read back yet.
    fn with_object(pins: Option<Pins>, capacity: Capacity) -> Result<Self, DataplaneError> {
        let mut ebpf = load::load_object(pins.as_ref(), capacity)?;
        let memory = memory::MemoryProbe::of(&ebpf)?;
        let config = ConfigSlots::take(&mut ebpf)?;
        let generations = Generations::take(&mut ebpf, capacity.generations)?;
        let tables = RangeTables::take(&mut ebpf, &capacity)?;
        let maps = Maps::take(&mut ebpf)?;
        let kernel_log = kernel_log::open(&mut ebpf);
        let slots = Slots::default();
        Ok(Self {
            readings: Readings::new(&maps, slots.clone(), capacity.rules)?,
            maps,
            ebpf,
            slots,
            config,
            generations,
            tables,
            capacity,
            pins,
            attachments: Vec::new(),
            kernel_log,
            memory,
            rule_expiries: RuleExpiries::default(),
            oversized_since: None,
        })
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
            return self.config.update(|config| {
                config.active = raw_enforcement(generation, active);
                config.fallback = allowlist_common::Enforcement::default();
                config.revert_at_ns = 0;
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
                self.config.update(|config| {
                    config.fallback = raw_enforcement(back, fallback);
                    config.revert_at_ns = deadline;
                })?;
                self.place(active, Some(back))?
            }
            other => other?,
        };
        self.config.update(|config| {
            config.active = raw_enforcement(front, active);
            config.fallback = raw_enforcement(back, fallback);
            config.revert_at_ns = deadline;
        })
    }

    /// A generation holding `want`: one that already does, else a free generation (not in
    /// force, not `keep`), written now: its record cleared, its range tables and port bitmap
    /// written whole, then its record filled in.
    fn place(&mut self, want: &Enforcement, keep: Option<u32>) -> Result<u32, DataplaneError> {
        let digest = match self.generations.find(want) {
            Found::Held(generation) => return Ok(generation),
            Found::Absent(digest) => digest,
        };
        let generation = self
            .generations
            .free(&self.config.generations_in_force(), keep)
            .ok_or(DataplaneError::NoFreeGeneration)?;
        // No packet uses this generation: it may hold anything while it is written, but its
        // record names nothing until it is whole.
        self.generations.open(generation)?;
        self.tables.write(generation, &want.policy)?;
        if !want.scopes.is_empty() {
            self.generations.write_scopes(generation, &want.scopes)?;
        }
        self.generations.seal(generation, want, digest)?;
        Ok(generation)
    }

    /// Refuses a policy that does not fit one generation.
    fn check_fits(&self, policy: &Policy) -> Result<(), DataplaneError> {
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

    /// The maps that belong to this object alone (see [`maps::INSTANCE_MAPS`]), by name.
    fn instance_maps(&self) -> Vec<(&'static str, &MapData)> {
        let mut maps = vec![(MAP_RULE_HITS, self.maps.rule_hits.map())];
        maps.extend(self.config.maps());
        maps.extend(self.generations.maps());
        maps.extend(self.tables.maps());
        maps
    }

    /// Sets the clock the program notes last hits with to now; call it every 100 ms or so
    /// (last hits are as precise as that).
    pub fn tick_clock(&mut self) -> Result<(), DataplaneError> {
        self.maps
            .clock
            .set(0, clock::coarse_now_ns(), 0)
            .map_err(error::map_error(MAP_CLOCK))
    }

    /// The reader of the program's log lines, to be polled where the daemon waits for I/O;
    /// `None` once taken.
    pub fn take_kernel_log(&mut self) -> Option<KernelLog> {
        self.kernel_log.take()
    }

    /// Attaches the XDP program to `interface` and, when replies pass, the egress program
    /// that records the host's flows, and gives the interface a counter slot. A link pinned
    /// by an earlier daemon is taken over: the interface switches to this program in one
    /// step. Otherwise, in [`AttachMode::Auto`], native mode is tried first, then skb mode.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let replies = self.config.current().replies != 0;
        let attachment = Attachment::make(&mut self.programs(), interface, mode, replies)?;
        self.assign_slot(interface)?;
        let attached = attachment.mode;
        self.attachments.push(attachment);
        Ok(attached)
    }

    /// Fails with [`DataplaneError::Occupied`], naming the program, when an XDP program
    /// holds `interface` that no link pinned under `pin_root` (any layout version) attached:
    /// not this daemon's, which the attach takes over. Nothing is touched: it only asks.
    pub fn check_free(pin_root: &Path, interface: &str) -> Result<(), DataplaneError> {
        Attachment::check_free(pin_root, interface)
    }

    /// The current attachments.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Detaches from every interface not in `interfaces` that an earlier daemon attached to,
    /// and removes pins of other layout versions. Call after [`Dataplane::attach`]ing to every
    /// configured interface.
    pub fn release_others(&mut self, interfaces: &[String]) -> Result<(), DataplaneError> {
        self.programs().release_others(interfaces)
    }

    /// The object's programs, with where their links are pinned.
    fn programs(&mut self) -> Programs<'_> {
        Programs {
            ebpf: &mut self.ebpf,
            pins: self.pins.as_ref(),
        }
    }

    /// The kernel memory each map takes now, by name.
    pub fn kernel_memory(&self) -> Vec<MapMemory> {
        self.memory.read()
    }

    /// The counters, read through handles of their own ([`Readings::try_clone`] gives a set
    /// for another thread).
    pub fn readings(&self) -> &Readings {
        &self.readings
    }

    /// Removes everything pinned under `pin_root` (every layout version): the links go, so
    /// the programs are detached from their interfaces, and the maps with them. Returns the
    /// paths removed. Run it with the daemon stopped: a running daemon still holds its links.
    pub fn teardown(pin_root: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
        pins::teardown(pin_root)
    }

    /// The processes (other than this one) that hold the maps pinned under `pin_root` open:
    /// a running daemon, which a teardown would pull the enforcement from under.
    pub fn holders(pin_root: &Path) -> Vec<Holder> {
        holders::holders(pin_root)
    }
}
