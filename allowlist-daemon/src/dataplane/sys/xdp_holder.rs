//! Which XDP program holds an interface, as rtnetlink tells it (`RTM_GETLINK` and its
//! `IFLA_XDP` attributes, what `ip link` shows): for a refusal that names the program.

use std::io;
use std::os::fd::AsRawFd as _;

use nix::libc::{IFLA_XDP, NLM_F_REQUEST, NLMSG_ERROR, RTM_GETLINK};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket,
};

/// `IFLA_XDP_ATTACHED` (`linux/if_link.h`): how the program is attached, a byte.
const IFLA_XDP_ATTACHED: u16 = 2;
/// `IFLA_XDP_PROG_ID`: the program's id, when one program is attached.
const IFLA_XDP_PROG_ID: u16 = 4;
/// `IFLA_XDP_DRV_PROG_ID`: the native program's id.
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
/// `IFLA_XDP_SKB_PROG_ID`: the generic (skb) program's id.
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
/// The flags of an attribute's type (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const ATTRIBUTE_FLAGS: u16 = 0xc000;
/// Bytes of `struct nlmsghdr`.
const MESSAGE_HEADER: usize = 16;
/// Bytes of `struct ifinfomsg`.
const INTERFACE_HEADER: usize = 16;

/// How an XDP program is attached (`XDP_ATTACHED_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachment {
    /// In the driver (native).
    Native,
    /// Generic (skb).
    Skb,
    /// Offloaded to the NIC.
    Offloaded,
    /// Several programs in several modes.
    Several,
}

impl std::fmt::Display for XdpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpAttachment::Native => "native",
            XdpAttachment::Skb => "skb",
            XdpAttachment::Offloaded => "offloaded",
            XdpAttachment::Several => "several modes",
        })
    }
}

/// The XDP program attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpHolder {
    /// The program's id (`bpftool prog show id ID`).
    pub id: u32,
    /// How it is attached.
    pub attachment: XdpAttachment,
}

/// The XDP program attached to the interface of index `ifindex` in this network namespace,
/// if any.
pub fn xdp_holder(ifindex: u32) -> io::Result<Option<XdpHolder>> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let request = link_request(ifindex);
    send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut reply = vec![0u8; 64 << 10];
    let len = recv(socket.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    parse_link_reply(&reply[..len.min(reply.len())])
}

/// An `RTM_GETLINK` request for the interface of index `ifindex`.
fn link_request(ifindex: u32) -> Vec<u8> {
    let len = (MESSAGE_HEADER + INTERFACE_HEADER) as u32;
    let mut request = Vec::with_capacity(len as usize);
    request.extend(len.to_ne_bytes());
    request.extend(RTM_GETLINK.to_ne_bytes());
    request.extend((NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend(1u32.to_ne_bytes()); // sequence
    request.extend(0u32.to_ne_bytes()); // port: the kernel
    request.extend([0u8; 4]); // family, padding, device type
    request.extend(ifindex.to_ne_bytes());
    request.extend([0u8; 8]); // flags, change mask
    request
}

/// The holder an `RTM_GETLINK` reply names, if any.
fn parse_link_reply(reply: &[u8]) -> io::Result<Option<XdpHolder>> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "a short rtnetlink reply");
    let header = reply.get(..MESSAGE_HEADER).ok_or_else(invalid)?;
    let message_type = u16::from_ne_bytes([header[4], header[5]]);
    if i32::from(message_type) == NLMSG_ERROR {
        let code = reply
            .get(MESSAGE_HEADER..MESSAGE_HEADER + 4)
            .ok_or_else(invalid)?;
        let errno = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        return Err(io::Error::from_raw_os_error(errno.saturating_neg()));
    }
    let message_len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let message = reply.get(..message_len).ok_or_else(invalid)?;
    let attributes = message
        .get(MESSAGE_HEADER + INTERFACE_HEADER..)
        .ok_or_else(invalid)?;
    let Some(xdp) = attributes_of(attributes).find(|(kind, _)| *kind == IFLA_XDP) else {
        return Ok(None);
    };
    let (mut attached, mut id, mut native, mut skb) = (0u8, 0u32, 0u32, 0u32);
    for (kind, value) in attributes_of(xdp.1) {
        let word = || {
            value
                .get(..4)
                .map_or(0, |v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        };
        match kind {
            IFLA_XDP_ATTACHED => attached = value.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => id = word(),
            IFLA_XDP_DRV_PROG_ID => native = word(),
            IFLA_XDP_SKB_PROG_ID => skb = word(),
            _ => {}
        }
    }
    let attachment = match attached {
        0 => return Ok(None),
        1 => XdpAttachment::Native,
        2 => XdpAttachment::Skb,
        3 => XdpAttachment::Offloaded,
        _ => XdpAttachment::Several,
    };
    let id = [id, native, skb]
        .into_iter()
        .find(|id| *id != 0)
        .unwrap_or(0);
    Ok(Some(XdpHolder { id, attachment }))
}

/// The attributes (`struct rtattr`: length, type, value, aligned to 4 bytes) in `bytes`, as
/// their type (flags cleared) and value.
fn attributes_of(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]));
        let kind = u16::from_ne_bytes([*bytes.get(2)?, *bytes.get(3)?]) & !ATTRIBUTE_FLAGS;
        let value = bytes.get(4..len)?;
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    fn reply(attributes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attributes.concat();
        let len = (MESSAGE_HEADER + INTERFACE_HEADER + body.len()) as u32;
        let mut bytes = len.to_ne_bytes().to_vec();
        bytes.extend(16u16.to_ne_bytes()); // RTM_NEWLINK
        bytes.extend([0u8; 10 + INTERFACE_HEADER]);
        bytes.extend(body);
        bytes
    }

    #[test]
    fn the_program_and_its_mode_are_read_from_the_nested_xdp_attributes() {
        let xdp = [
            attribute(IFLA_XDP_ATTACHED, &[2]),
            attribute(IFLA_XDP_PROG_ID, &77u32.to_ne_bytes()),
        ]
        .concat();
        let bytes = reply(&[
            attribute(3, b"veth0\0"), // IFLA_IFNAME first
            attribute(IFLA_XDP | 0x8000, &xdp),
        ]);
        assert_eq!(
            parse_link_reply(&bytes).expect("parsed"),
            Some(XdpHolder {
                id: 77,
                attachment: XdpAttachment::Skb
            })
        );
    }

    #[test]
    fn no_program_is_none_and_a_kernel_error_is_an_error() {
        let none = reply(&[attribute(IFLA_XDP, &attribute(IFLA_XDP_ATTACHED, &[0]))]);
        assert_eq!(parse_link_reply(&none).expect("parsed"), None);
        assert_eq!(parse_link_reply(&reply(&[])).expect("parsed"), None);
        let mut error = 36u32.to_ne_bytes().to_vec();
        error.extend((NLMSG_ERROR as u16).to_ne_bytes());
        error.extend([0u8; 10]);
        error.extend((-19i32).to_ne_bytes());
        let err = parse_link_reply(&error).expect_err("ENODEV");
        assert_eq!(err.raw_os_error(), Some(19));
        assert!(parse_link_reply(&[1, 2, 3]).is_err(), "short");
    }
}
