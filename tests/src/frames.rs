//! Hand-built Ethernet frames for verdict tests, and an independent reading of what a frame
//! carries, the oracle the property test holds the kernel program to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethertype of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Ethertype of LLDP.
pub const ETH_P_LLDP: u16 = 0x88CC;
/// 802.1Q VLAN tag protocol id.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ) service tag protocol id.
pub const ETH_P_8021AD: u16 = 0x88A8;

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next header: hop-by-hop options.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 next header: routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// An Ethernet frame with the given VLAN tags (outermost first, each a tag protocol id) around
/// `ether_type` and `payload`.
pub fn ethernet(tags: &[u16], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in tags.iter().enumerate() {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet (checksum left zero: the program does not check it) with `options`, whose
/// length must be a multiple of four.
pub fn ipv4(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    options: &[u8],
    protocol: u8,
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        options.len().is_multiple_of(4) && options.len() <= 40,
        "bad IPv4 options length"
    );
    let header_len = 20 + options.len();
    let total_len = (header_len + payload.len()) as u16;
    let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(options);
    packet.extend_from_slice(payload);
    packet
}

/// An IPv6 packet.
pub fn ipv6(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[next_header, hop_limit]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(payload);
    packet
}

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;

/// TCP flags.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A TCP header (no options, checksum zero) with `flags`.
pub fn tcp_segment(source_port: u16, destination_port: u16, flags: u8) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&source_port.to_be_bytes());
    segment.extend_from_slice(&destination_port.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    segment
}

/// An ICMP or ICMPv6 echo message (`icmp_type` 8/0 or 128/129) with identifier `id`.
pub fn echo(icmp_type: u8, id: u16) -> Vec<u8> {
    let mut message = vec![icmp_type, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
    message
}

/// An ICMP or ICMPv6 error of `icmp_type` quoting `packet` (the packet that caused it).
pub fn icmp_error(icmp_type: u8, packet: &[u8]) -> Vec<u8> {
    let mut message = vec![icmp_type, 0, 0, 0, 0, 0, 0x05, 0x00];
    message.extend_from_slice(packet);
    message
}

/// An IP frame of either family from `source` to `destination` carrying `payload`.
pub fn ip_frame(source: IpAddr, destination: IpAddr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(
        &[],
        ether_type_of(source),
        &ip_packet(source, destination, protocol, payload),
    )
}

/// An IP packet of either family (hop limit 64).
pub fn ip_packet(source: IpAddr, destination: IpAddr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s, d, &[], protocol, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s, d, protocol, 64, payload),
        _ => panic!("mixed address families"),
    }
}

fn ether_type_of(addr: IpAddr) -> u16 {
    if addr.is_ipv4() {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    }
}

/// A UDP datagram (checksum zero) with a few bytes of payload.
pub fn udp(source_port: u16, destination_port: u16) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&source_port.to_be_bytes());
    datagram.extend_from_slice(&destination_port.to_be_bytes());
    datagram.extend_from_slice(&12u16.to_be_bytes());
    datagram.extend_from_slice(&[0, 0, b'p', b'i', b'n', b'g']);
    datagram
}

/// An ICMPv6 message of `icmp_type` with a 16-byte body (room for an ND target address).
pub fn icmpv6(icmp_type: u8) -> Vec<u8> {
    let mut message = vec![icmp_type, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    message
}

/// A UDP/IPv4 frame from `source`, untagged.
pub fn udp4_frame(source: Ipv4Addr) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV4,
        &ipv4(
            source,
            Ipv4Addr::new(198, 18, 0, 1),
            &[],
            IPPROTO_UDP,
            &udp(4000, 53),
        ),
    )
}

/// A UDP/IPv6 frame from `source`, untagged.
pub fn udp6_frame(source: Ipv6Addr) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(
            source,
            "fd00:a11::1".parse().expect("literal"),
            IPPROTO_UDP,
            64,
            &udp(4000, 53),
        ),
    )
}

/// A UDP frame from `source` of either family.
pub fn udp_frame(source: IpAddr) -> Vec<u8> {
    match source {
        IpAddr::V4(v4) => udp4_frame(v4),
        IpAddr::V6(v6) => udp6_frame(v6),
    }
}

/// An ARP request frame.
pub fn arp_frame() -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 198, 18, 0, 3]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 1]);
    ethernet(&[], ETH_P_ARP, &arp)
}

/// What a frame carries as the program should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Not IPv4/IPv6 (after at most two VLAN tags).
    NotIp,
    /// IPv4/IPv6 by ethertype, too short to hold the source address; or more than two VLAN
    /// tags, which hide what the frame carries: refused as malformed.
    Truncated,
    /// An IP packet from this source; `neighbor_discovery` as the program must exempt it:
    /// `Some(true)` for ND, `Some(false)` for not ND, `None` for ICMPv6 with hop limit 255 too
    /// short to hold the ICMPv6 header.
    Ip {
        /// The source address.
        source: IpAddr,
        /// The neighbour discovery reading (always `Some(false)` for IPv4).
        neighbor_discovery: Option<bool>,
    },
}

/// Whether ICMPv6 of `icmp_type` and `code` from `source` (hop limit 255) is neighbour
/// discovery as RFC 4861 checks it: types 133-137, code 0, router advertisements and
/// redirects from a link-local source, router solicitations from a link-local or the
/// unspecified one.
fn valid_neighbor_discovery(icmp_type: u8, code: u8, source: &IpAddr) -> bool {
    let IpAddr::V6(source) = source else {
        return false;
    };
    let link_local = source.segments()[0] & 0xffc0 == 0xfe80;
    code == 0
        && match icmp_type {
            134 | 137 => link_local,
            133 => link_local || source.is_unspecified(),
            135 | 136 => true,
            _ => false,
        }
}

/// Reads what `frame` carries, independently of the program's parser.
pub fn carried(frame: &[u8]) -> Carried {
    let mut offset = 12;
    let mut tags = 0;
    loop {
        let Some(bytes) = frame.get(offset..offset + 2) else {
            return Carried::NotIp;
        };
        let ether_type = u16::from_be_bytes([bytes[0], bytes[1]]);
        offset += 2;
        match ether_type {
            ETH_P_8021Q | ETH_P_8021AD if tags < 2 => {
                tags += 1;
                offset += 2;
            }
            ETH_P_8021Q | ETH_P_8021AD => return Carried::Truncated,
            ETH_P_IPV4 => {
                return match frame.get(offset + 12..offset + 16) {
                    Some(src) => Carried::Ip {
                        source: IpAddr::from(<[u8; 4]>::try_from(src).expect("4 bytes")),
                        neighbor_discovery: Some(false),
                    },
                    None => Carried::Truncated,
                };
            }
            ETH_P_IPV6 => {
                let Some(src) = frame.get(offset + 8..offset + 24) else {
                    return Carried::Truncated;
                };
                let source = IpAddr::from(<[u8; 16]>::try_from(src).expect("16 bytes"));
                let (next_header, hop_limit) = (frame[offset + 6], frame[offset + 7]);
                let neighbor_discovery = if next_header == IPPROTO_ICMPV6 && hop_limit == 255 {
                    frame
                        .get(offset + 40..offset + 44)
                        .map(|icmp| valid_neighbor_discovery(icmp[0], icmp[1], &source))
                } else {
                    Some(false)
                };
                return Carried::Ip {
                    source,
                    neighbor_discovery,
                };
            }
            _ => return Carried::NotIp,
        }
    }
}
