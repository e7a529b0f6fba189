//! Bounds-checked parsing of the frame, down to the IP source address.
//!
//! Every read is preceded by a check against `data_end` that the verifier can follow.

use allowlist_common::{Ipv4Addr, Ipv6Addr};

const ETH_HEADER_LEN: usize = 14;
const ETH_TYPE_OFFSET: usize = 12;
const VLAN_TAG_LEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPV4_SOURCE_OFFSET: usize = 12;
/// Next header (offset 6) and hop limit (offset 7), read together.
const IPV6_NEXT_HEADER_OFFSET: usize = 6;
const IPV6_SOURCE_OFFSET: usize = 8;
const IPV6_HEADER_LEN: usize = 40;
const ICMPV6_HEADER_LEN: usize = 4;

const IPPROTO_ICMPV6: u8 = 58;
/// Router solicitation (133) through redirect (137).
const ND_TYPES: core::ops::RangeInclusive<u8> = 133..=137;
/// ND messages are only valid with this hop limit, which no router forwards (RFC 4861).
const ND_HOP_LIMIT: u8 = 255;

/// What the frame carries, as far as the allowlist cares.
pub enum Source {
    /// Not IPv4 or IPv6.
    NotIp,
    /// IPv4 or IPv6 by its ethertype, but too short to hold the source address.
    Malformed,
    /// An IPv4 packet from this source.
    V4(Ipv4Addr),
    /// An IPv6 packet from this source, whose header starts at the given address.
    V6(Ipv6Addr, usize),
}

/// Reads a `T` at address `at` if the whole `T` lies before `end`.
#[inline(always)]
fn read<T: Copy>(at: usize, end: usize) -> Option<T> {
    if at + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: checked above that `at..at + size_of::<T>()` is inside the packet.
    Some(unsafe { core::ptr::read_unaligned(at as *const T) })
}

/// Parses Ethernet and up to two VLAN tags, then finds the IP source address.
#[inline(always)]
pub fn source(start: usize, end: usize) -> Source {
    let Some(mut ether_type) = read::<[u8; 2]>(start + ETH_TYPE_OFFSET, end) else {
        return Source::NotIp;
    };
    let mut l3 = start + ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        let tpid = u16::from_be_bytes(ether_type);
        if tpid != ETH_P_8021Q && tpid != ETH_P_8021AD {
            break;
        }
        // The inner ethertype is the last two bytes of the tag.
        let Some(inner) = read::<[u8; 2]>(l3 + 2, end) else {
            return Source::NotIp;
        };
        ether_type = inner;
        l3 += VLAN_TAG_LEN;
    }
    match u16::from_be_bytes(ether_type) {
        ETH_P_IPV4 => match read::<Ipv4Addr>(l3 + IPV4_SOURCE_OFFSET, end) {
            Some(addr) => Source::V4(addr),
            None => Source::Malformed,
        },
        ETH_P_IPV6 => match read::<Ipv6Addr>(l3 + IPV6_SOURCE_OFFSET, end) {
            Some(addr) => Source::V6(addr, l3),
            None => Source::Malformed,
        },
        _ => Source::NotIp,
    }
}

/// Whether the IPv6 packet whose header starts at `ip` is neighbour discovery: ICMPv6 of
/// types 133-137 with hop limit 255. `None` when it claims to be (ICMPv6, hop limit 255) but
/// is too short to hold the ICMPv6 header.
#[inline(always)]
pub fn neighbor_discovery(ip: usize, end: usize) -> Option<bool> {
    // `source` already checked the fixed header up to the source address.
    let [next_header, hop_limit] = read::<[u8; 2]>(ip + IPV6_NEXT_HEADER_OFFSET, end)?;
    if next_header != IPPROTO_ICMPV6 || hop_limit != ND_HOP_LIMIT {
        return Some(false);
    }
    let [icmp_type, ..] = read::<[u8; ICMPV6_HEADER_LEN]>(ip + IPV6_HEADER_LEN, end)?;
    Some(ND_TYPES.contains(&icmp_type))
}
