//! The kernel driver: the only module that talks to the kernel. It loads the XDP program and
//! the TC egress flow recorder, pins their maps and links, attaches them to interfaces,
//! writes policies into generations and switches between them, and reads the counters.
//!
//! One concern per file: [`types`] and [`error`] at the bottom, the pure [`codec`] of map
//! bytes, then [`load`] (the object), [`maps`] (typed handles), [`pins`] (bpffs), [`links`]
//! (attachments), [`generations`] (policies, their records and the switch) with [`ranges`]
//! (the range tables a generation holds), [`counters`], [`readings`], [`flow_filter`],
//! [`clock`]; [`test_run`] with the `test-util` feature and [`bench`](mod@bench) with `bench`.

#[cfg(feature = "bench")]
mod bench;
mod capacity;
mod clock;
mod codec;
mod counters;
mod error;
mod flow_filter;
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

use allowlist_common::{Config, GENERATIONS, PROTECTED_PORT_WORDS};
use aya::Ebpf;

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

use generations::Generation;
use maps::Maps;
use pins::Pins;
use readings::Slots;

/// The loaded programs and their maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: Maps,
    /// Interfaces with their own counter slot, and the slot.
    slots: Slots,
    /// Handles of their own on the counting maps.
    readings: Readings,
    /// What the port bitmaps hold, word by word.
    port_words: Vec<u64>,
    /// What each generation holds.
    generations: Vec<Generation>,
    /// The configuration slot in use.
    slot: u32,
    /// The configuration in use.
    current: Config,
    /// What the maps have room for.
    capacity: Capacity,
    /// Where maps and links are pinned; `None`: nowhere.
    pins: Option<Pins>,
    attachments: Vec<Attachment>,
    /// The reader of the program's log lines, until the daemon takes it.
    kernel_log: Option<KernelLog>,
    /// The deadlines written to the rule hit array (coarse seconds), by rule.
    rule_expiries: std::collections::BTreeMap<allowlist_common::RuleId, u32>,
    /// A descriptor of each map, to read its kernel memory.
    memory: memory::MemoryProbe,
    /// The rules the policies being installed flag: the others' deadlines go once they are.
    rule_expiries_wanted: std::collections::BTreeSet<allowlist_common::RuleId>,
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
        dataplane.read_back()?;
        dataplane.renew_flow_filter()?;
        dataplane.tick_clock()?;
        Ok(dataplane)
    }

    /// The object loaded (its maps pinned in `pins`), nothing read back yet.
    fn with_object(pins: Option<Pins>, capacity: Capacity) -> Result<Self, DataplaneError> {
        let mut ebpf = load::load_object(pins.as_ref(), capacity)?;
        let memory = memory::MemoryProbe::of(&ebpf)?;
        let maps = Maps::take(&mut ebpf)?;
        let kernel_log = kernel_log::open(&mut ebpf);
        let slots = Slots::default();
        Ok(Self {
            readings: Readings::new(&maps, slots.clone(), capacity.rules)?,
            maps,
            ebpf,
            slots,
            port_words: vec![0; (GENERATIONS * PROTECTED_PORT_WORDS) as usize],
            generations: vec![Generation::default(); GENERATIONS as usize],
            slot: 0,
            current: Config::default(),
            capacity,
            pins,
            attachments: Vec::new(),
            kernel_log,
            memory,
            rule_expiries: std::collections::BTreeMap::new(),
            rule_expiries_wanted: std::collections::BTreeSet::new(),
            oversized_since: None,
        })
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
