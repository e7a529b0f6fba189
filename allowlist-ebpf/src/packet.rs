//! Bounds-checked parsing of the frame: Ethernet, VLAN tags, the IP addresses, the transport
//! header and the packet an ICMP error quotes.
//!
//! Every read is preceded by a check against `end` that the verifier can follow.

use allowlist_common::{Ipv4Addr, Ipv6Addr, ip_proto};

const ETH_HEADER_LEN: usize = 14;
const ETH_TYPE_OFFSET: usize = 12;
const VLAN_TAG_LEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPV4_SOURCE_OFFSET: usize = 12;
const IPV4_DESTINATION_OFFSET: usize = 16;
const IPV4_MIN_HEADER_LEN: usize = 20;
/// Next header (offset 6) and hop limit (offset 7), read together.
const IPV6_NEXT_HEADER_OFFSET: usize = 6;
const IPV6_SOURCE_OFFSET: usize = 8;
const IPV6_DESTINATION_OFFSET: usize = 24;
const IPV6_HEADER_LEN: usize = 40;
const ICMPV6_HEADER_LEN: usize = 4;
/// ICMP errors quote the offending packet after their 8-byte header.
const ICMP_QUOTE_OFFSET: usize = 8;

/// Router solicitation (133) through redirect (137).
const ND_TYPES: core::ops::RangeInclusive<u8> = 133..=137;
/// ND messages are only valid with this hop limit, which no router forwards (RFC 4861).
const ND_HOP_LIMIT: u8 = 255;
/// Router solicitation: from a link-local or the unspecified source (RFC 4861 6.1.1).
const ND_ROUTER_SOLICITATION: u8 = 133;
/// Router advertisement: from a link-local source only (RFC 4861 6.1.2).
const ND_ROUTER_ADVERTISEMENT: u8 = 134;
/// Redirect: from a link-local source only (RFC 4861 8.1).
const ND_REDIRECT: u8 = 137;

/// Whether `addr` is link-local unicast (`fe80::/10`).
#[inline(always)]
fn link_local(addr: &Ipv6Addr) -> bool {
    addr[0] == 0xfe && addr[1] & 0xc0 == 0x80
}

/// What the frame carries, as far as the allowlist cares.
pub enum Source {
    /// Not IPv4 or IPv6.
    NotIp,
    /// IPv4 or IPv6 by its ethertype, but too short to hold the source address.
    Malformed,
    /// An IPv4 packet from this source, whose header starts at the given address.
    V4(Ipv4Addr, usize),
    /// An IPv6 packet from this source, whose header starts at the given address.
    V6(Ipv6Addr, usize),
}

/// The transport header of a packet.
#[derive(Clone, Copy)]
pub struct Transport {
    /// The IP protocol (IPv6: the next header after the fixed header).
    pub protocol: u8,
    /// Where the transport header starts.
    pub at: usize,
}

/// Reads a `T` at address `at` if the whole `T` lies before `end`.
#[inline(always)]
pub fn read<T: Copy>(at: usize, end: usize) -> Option<T> {
    if at + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: checked above that `at..at + size_of::<T>()` is inside the packet.
    Some(unsafe { core::ptr::read_unaligned(at as *const T) })
}

/// Parses Ethernet and up to two VLAN tags, then finds the IP source address. A frame with
/// more tags is malformed: what it carries cannot be seen, and stacked VLAN devices would
/// take its IP past the check.
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
        ETH_P_8021Q | ETH_P_8021AD => Source::Malformed,
        ETH_P_IPV4 => match source_v4(l3, end) {
            Some(addr) => Source::V4(addr, l3),
            None => Source::Malformed,
        },
        ETH_P_IPV6 => match source_v6(l3, end) {
            Some(addr) => Source::V6(addr, l3),
            None => Source::Malformed,
        },
        _ => Source::NotIp,
    }
}

/// The source of the IPv4 header at `ip`.
#[inline(always)]
pub fn source_v4(ip: usize, end: usize) -> Option<Ipv4Addr> {
    read(ip + IPV4_SOURCE_OFFSET, end)
}

/// The source of the IPv6 header at `ip`.
#[inline(always)]
pub fn source_v6(ip: usize, end: usize) -> Option<Ipv6Addr> {
    read(ip + IPV6_SOURCE_OFFSET, end)
}

/// The destination of the IPv4 header at `ip`.
#[inline(always)]
pub fn destination_v4(ip: usize, end: usize) -> Option<Ipv4Addr> {
    read(ip + IPV4_DESTINATION_OFFSET, end)
}

/// The destination of the IPv6 header at `ip`.
#[inline(always)]
pub fn destination_v6(ip: usize, end: usize) -> Option<Ipv6Addr> {
    read(ip + IPV6_DESTINATION_OFFSET, end)
}

/// The transport header of the IPv4 packet at `ip`; `None` when the header is truncated or
/// the packet is a fragment other than the first (which carries no transport header).
#[inline(always)]
pub fn transport_v4(ip: usize, end: usize) -> Option<Transport> {
    let header = read::<[u8; IPV4_MIN_HEADER_LEN]>(ip, end)?;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([header[6] & 0x1f, header[7]]);
    if header_len < IPV4_MIN_HEADER_LEN || fragment_offset != 0 {
        return None;
    }
    Some(Transport {
        protocol: header[9],
        at: ip + header_len,
    })
}

/// The transport header of the IPv6 packet at `ip`: the next header directly after the fixed
/// header (extension headers are reported as their own protocol numbers).
#[inline(always)]
pub fn transport_v6(ip: usize, end: usize) -> Option<Transport> {
    let [next_header, _] = read::<[u8; 2]>(ip + IPV6_NEXT_HEADER_OFFSET, end)?;
    Some(Transport {
        protocol: next_header,
        at: ip + IPV6_HEADER_LEN,
    })
}

/// Source and destination port of a TCP or UDP header at `at`.
#[inline(always)]
pub fn ports(at: usize, end: usize) -> Option<(u16, u16)> {
    let bytes = read::<[u8; 4]>(at, end)?;
    Some((
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    ))
}

/// The flags byte of a TCP header at `at`.
#[inline(always)]
pub fn tcp_flags(at: usize, end: usize) -> Option<u8> {
    read::<u8>(at + 13, end)
}

/// Type and identifier of an ICMP/ICMPv6 echo header at `at` (the identifier is meaningful
/// for echo requests and replies only).
#[inline(always)]
pub fn icmp_type_and_id(at: usize, end: usize) -> Option<(u8, u16)> {
    let header = read::<[u8; 6]>(at, end)?;
    Some((header[0], u16::from_be_bytes([header[4], header[5]])))
}

/// Where the packet quoted by the ICMP error at `at` starts.
#[inline(always)]
pub fn quoted(at: usize) -> usize {
    at + ICMP_QUOTE_OFFSET
}

/// Whether the IPv6 packet from `source` whose header starts at `ip` is valid neighbour
/// discovery as RFC 4861 checks it: ICMPv6 of types 133-137, code 0, hop limit 255, router
/// advertisements and redirects from a link-local source, router solicitations from a
/// link-local or the unspecified one. `None` when it claims to be ND (ICMPv6, hop limit
/// 255) but is too short to hold the ICMPv6 header.
#[inline(always)]
pub fn neighbor_discovery(ip: usize, end: usize, source: &Ipv6Addr) -> Option<bool> {
    let [next_header, hop_limit] = read::<[u8; 2]>(ip + IPV6_NEXT_HEADER_OFFSET, end)?;
    if next_header != ip_proto::ICMPV6 || hop_limit != ND_HOP_LIMIT {
        return Some(false);
    }
    let [icmp_type, code, ..] = read::<[u8; ICMPV6_HEADER_LEN]>(ip + IPV6_HEADER_LEN, end)?;
    if !ND_TYPES.contains(&icmp_type) || code != 0 {
        return Some(false);
    }
    Some(match icmp_type {
        ND_ROUTER_ADVERTISEMENT | ND_REDIRECT => link_local(source),
        ND_ROUTER_SOLICITATION => link_local(source) || *source == [0; 16],
        _ => true,
    })
}
