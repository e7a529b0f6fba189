//! What can go wrong talking to the kernel, with aya's own errors kept as typed sources.

use std::path::PathBuf;

use allowlist_common::RuleId;
use aya::maps::MapError;
use aya::pin::PinError;
use aya::programs::ProgramError;
use aya::programs::links::LinkError;

use super::sys::{BatchError, XdpHolder};
use super::types::AttachMode;

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the object (maps or program).
    #[error("loading the eBPF object into the kernel")]
    Load(#[source] aya::EbpfError),
    /// The embedded object lacks a map or program this driver needs.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("BPF map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// A batch operation on a map failed.
    #[error("BPF map {name}")]
    Batch {
        /// The map.
        name: &'static str,
        /// What failed.
        #[source]
        source: BatchError,
    },
    /// Loading or running a program failed.
    #[error("program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("attaching to {interface} in {mode:?} mode")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode asked for.
        mode: AttachMode,
        /// What failed (for auto mode: the skb attempt).
        #[source]
        source: ProgramError,
    },
    /// Attaching the egress program to an interface failed.
    #[error("attaching the egress flow recorder to {interface}")]
    AttachEgress {
        /// The interface.
        interface: String,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// Another XDP program holds the interface.
    #[error(
        "{interface} already runs XDP program {}{}",
        holder.id,
        occupied_hint(interface, *holder, program.as_deref())
    )]
    Occupied {
        /// The interface.
        interface: String,
        /// The program there.
        holder: XdpHolder,
        /// Its name, as the kernel has it, when this process may read it.
        program: Option<String>,
    },
    /// The XDP program on an interface could not be found out.
    #[error("reading which XDP program {interface} runs")]
    Holder {
        /// The interface.
        interface: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The kernel gave a link that cannot be pinned (XDP and TCX links need Linux 6.6).
    #[error("the kernel attached to {0} without a BPF link; pinning needs Linux 6.6 or later")]
    LinkKind(String),
    /// A link pinned by an earlier daemon could not be taken over.
    #[error("taking over the link pinned at {}", path.display())]
    Adopt {
        /// The pin.
        path: PathBuf,
        /// What failed.
        #[source]
        source: AdoptError,
    },
    /// A link could not be pinned.
    #[error("pinning the link at {}", path.display())]
    PinLink {
        /// Where.
        path: PathBuf,
        /// What failed.
        #[source]
        source: PinError,
    },
    /// A pin or its directory could not be made, read or removed.
    #[error("{action} {}", path.display())]
    Pin {
        /// What was being done.
        action: &'static str,
        /// The pin or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The BPF file system is missing and could not be mounted.
    #[error("the BPF file system at {}", path.display())]
    Bpffs {
        /// Where it was expected.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The eBPF object embedded in the daemon could not be parsed (a broken build).
    #[error("parsing the embedded eBPF object")]
    Object(#[source] aya_obj::ParseError),
    /// The embedded object declares a map of a type this daemon does not know.
    #[error("the embedded eBPF object declares map {0} of an unknown type")]
    UnknownMapType(String),
    /// A pinned map could not be read.
    #[error("reading the pinned map {name}")]
    PinnedMap {
        /// The map's name.
        name: String,
        /// What failed.
        #[source]
        source: aya::maps::MapError,
    },
    /// Every policy generation is in use: the tables hold two and both are in force (the
    /// maps are then made again, see [`super::capacity`]).
    #[error("no free policy generation")]
    NoFreeGeneration,
    /// The possible CPUs could not be read.
    #[error("reading the possible CPUs")]
    Cpus(#[source] std::io::Error),
    /// A memory-mapped array could not be written where it had to be.
    #[error("BPF map {0}: a write out of its mapping")]
    Unwritable(&'static str),
    /// A map's descriptor could not be duplicated to read its kernel memory.
    #[error("duplicating the descriptor of BPF map {name}")]
    Probe {
        /// The map.
        name: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Memory-mapping a map failed.
    #[error("memory-mapping BPF map {name}")]
    Mapping {
        /// The map.
        name: &'static str,
        /// What failed.
        #[source]
        source: nix::errno::Errno,
    },
    /// A rule id does not fit the rule hit array.
    #[error("rule id {rule} is beyond the capacity of {capacity} rules")]
    RuleOutOfRange {
        /// The rule id.
        rule: RuleId,
        /// The capacity chosen at load.
        capacity: u32,
    },
    /// A table has more elements for a map than a generation's region of it holds (a
    /// policy within the capacity never does).
    #[error("the range table has more elements for BPF map {name} than a generation holds")]
    RegionFull {
        /// The map.
        name: &'static str,
    },
    /// A policy has more prefixes of one family than a generation holds.
    #[error(
        "the policy has {needed} IPv{family} prefixes, but a generation holds {capacity}; raise \
         the maximum number of entries"
    )]
    CapacityExceeded {
        /// 4 or 6.
        family: u8,
        /// Prefixes of that family in the kernel once the additions are made.
        needed: usize,
        /// The capacity chosen at load.
        capacity: u32,
    },
}

/// Why a pinned link could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The pin could not be opened as a link, or the link is not of the expected kind.
    #[error("opening the link")]
    Link(#[source] LinkError),
    /// The program could not be put on the link.
    #[error("attaching the program to the link")]
    Program(#[source] ProgramError),
}

/// Names map `name` in a [`MapError`].
pub(super) fn map_error(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Names map `name` in a [`BatchError`].
pub(super) fn batch_error(name: &'static str) -> impl Fn(BatchError) -> DataplaneError {
    move |source| DataplaneError::Batch { name, source }
}

/// Names program `name` in a [`ProgramError`].
pub(super) fn program_error(name: &'static str) -> impl Fn(ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program { name, source }
}

/// What the program on `interface` is, and how to proceed.
fn occupied_hint(interface: &str, holder: XdpHolder, program: Option<&str>) -> String {
    let mode = holder.attachment;
    let (named, what) = match program {
        Some("xdp_dispatcher") => (
            format!(" (xdp_dispatcher, {mode} mode)"),
            "it is libxdp's dispatcher (`xdp-loader status` lists the programs it runs); ",
        ),
        Some(name) if name == allowlist_common::PROGRAM_NAME => (
            format!(" ({name}, {mode} mode)"),
            "it is an allowlistd program pinned under another --pin-dir (that daemon's \
             `allowlistd teardown` removes it); ",
        ),
        Some(name) => (format!(" ({name}, {mode} mode)"), ""),
        None => (
            format!(
                " ({mode} mode; `bpftool prog show id {}` names it)",
                holder.id
            ),
            "",
        ),
    };
    format!(
        "{named}: {what}allowlistd does not share an interface with another XDP program yet. \
         Unload it first (`xdp-loader unload {interface} --all` or `ip link set dev \
         {interface} xdp off`), or leave {interface} out of --iface"
    )
}
