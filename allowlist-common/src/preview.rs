//! Previews: while one runs, the program judges every packet against a candidate policy as
//! well (a generation of its own, named by [`crate::Config::preview`]) and counts here the
//! sources whose verdict the candidate would change. It never changes a verdict.

/// Name of the per-CPU LRU hash of the sources a candidate would treat otherwise: key
/// [`PreviewKey`], value [`PreviewSeen`] (one per possible CPU, summed by user space).
pub const MAP_PREVIEW_SOURCES: &str = "PREVIEW_SOURCES";
/// Sources [`MAP_PREVIEW_SOURCES`] remembers; the least recently seen go first (the totals
/// are the counters [`crate::Counter::PreviewWouldDrop`] and
/// [`crate::Counter::PreviewWouldPass`]).
pub const PREVIEW_SOURCES_CAPACITY: u32 = 1024;
/// The (protocol, local port) pairs [`PreviewSeen`] counts per source: a new pair takes the
/// place of the one seen least.
pub const PREVIEW_PORTS: usize = 3;

/// What the candidate would do with a source's packets that the policy in force treats
/// otherwise: [`PreviewKey::would`].
pub mod would {
    /// The policy in force passes them; the candidate would drop them.
    pub const DROP: u8 = 0;
    /// The policy in force refuses them; the candidate would pass them.
    pub const PASS: u8 = 1;
}

/// A source whose verdict the candidate would change: the key of [`MAP_PREVIEW_SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PreviewKey {
    /// The address; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    /// A [`would`] value.
    pub would: u8,
    /// Zero.
    pub padding: [u8; 2],
}

/// Packets of one (protocol, local port) pair: [`PreviewSeen::ports`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreviewPort {
    /// Packets.
    pub packets: u32,
    /// The local port (0 for a protocol without ports).
    pub port: u16,
    /// The IP protocol; 0 with 0 packets: an empty pair.
    pub protocol: u8,
    /// Zero.
    pub padding: u8,
}

/// What one CPU saw of a source: the value of [`MAP_PREVIEW_SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreviewSeen {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames).
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns` of the last one.
    pub last_seen_ns: u64,
    /// The pairs seen most.
    pub ports: [PreviewPort; PREVIEW_PORTS],
}

const _: () = assert!(size_of::<PreviewKey>() == 20);
const _: () = assert!(size_of::<PreviewSeen>() == 48);
