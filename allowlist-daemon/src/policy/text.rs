//! Prefixes written as text quickly: a large list is serialized twice per change (the state
//! and the response), and `core::fmt` costs more per IPv4 prefix than everything else.

use std::io::Write as _;

use ipnet::IpNet;
use serde::Serializer;

/// Longest text of a prefix: an IPv6 address (45) and `/128`.
const LONGEST: usize = 49;

/// A prefix as text, on the stack.
pub struct CidrText {
    bytes: [u8; LONGEST],
    len: usize,
}

impl CidrText {
    /// The text of `net`, as its `Display` writes it.
    pub fn new(net: &IpNet) -> Self {
        let mut text = CidrText {
            bytes: [0; LONGEST],
            len: 0,
        };
        match net {
            IpNet::V4(v4) => {
                for (index, octet) in v4.addr().octets().into_iter().enumerate() {
                    if index > 0 {
                        text.push(b".");
                    }
                    text.push(itoa::Buffer::new().format(octet).as_bytes());
                }
            }
            IpNet::V6(v6) => {
                let mut cursor = std::io::Cursor::new(&mut text.bytes[..]);
                // An address takes at most 45 bytes of the 49: the write cannot fail.
                let _ = write!(cursor, "{}", v6.addr());
                text.len = cursor.position() as usize;
            }
        }
        text.push(b"/");
        text.push(itoa::Buffer::new().format(net.prefix_len()).as_bytes());
        text
    }

    fn push(&mut self, part: &[u8]) {
        let end = (self.len + part.len()).min(LONGEST);
        self.bytes[self.len..end].copy_from_slice(&part[..end - self.len]);
        self.len = end;
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons, hex letters and a slash are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// Serializes a prefix as its text (for `#[serde(serialize_with)]`).
pub fn serialize_cidr<S: Serializer>(net: &IpNet, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(CidrText::new(net).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_what_display_writes() {
        for cidr in [
            "0.0.0.0/0",
            "10.1.2.3/32",
            "255.255.255.255/32",
            "192.0.2.0/24",
            "::/0",
            "2001:db8::/32",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "::ffff:0:0/96",
            "fe80::1:2:3:4/128",
        ] {
            let net: IpNet = cidr.parse().expect("test CIDR");
            assert_eq!(CidrText::new(&net).as_str(), net.to_string(), "{cidr}");
        }
    }
}
