//! How the host's own traffic and other IP protocols are written in the configuration:
//! `--replies-for tcp|udp|icmp|tcp/PORT|udp/PORT` and `--unprotected-protocol gre|47`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::dataplane::ReplyOpeners;
use crate::policy::{PortScope, Transport};

/// One kind of the host's own packets that opens reply flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFor {
    /// Every TCP or UDP packet, whatever its remote port.
    Transport(Transport),
    /// TCP or UDP packets to one remote port.
    Port(PortScope),
    /// Pings (ICMP and ICMPv6 echo requests).
    Icmp,
}

impl FromStr for ReplyFor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(ReplyFor::Transport(Transport::Tcp)),
            "udp" => Ok(ReplyFor::Transport(Transport::Udp)),
            "icmp" => Ok(ReplyFor::Icmp),
            other => other.parse().map(ReplyFor::Port).map_err(|_| {
                format!("{text:?}: give tcp, udp, icmp, or a remote port as tcp/443 or udp/53")
            }),
        }
    }
}

/// The reply openers `kinds` name; none named: every kind opens flows.
pub fn reply_openers(kinds: &[ReplyFor]) -> ReplyOpeners {
    if kinds.is_empty() {
        return ReplyOpeners::default();
    }
    let ports = |transport: Transport| -> Option<BTreeSet<u16>> {
        if kinds.contains(&ReplyFor::Transport(transport)) {
            return None;
        }
        Some(
            kinds
                .iter()
                .filter_map(|kind| match kind {
                    ReplyFor::Port(scope) if scope.transport == transport => Some(scope.port),
                    _ => None,
                })
                .collect(),
        )
    };
    ReplyOpeners {
        tcp: ports(Transport::Tcp),
        udp: ports(Transport::Udp),
        icmp: kinds.contains(&ReplyFor::Icmp),
    }
}

/// The IP protocols known by name, with their numbers.
const PROTOCOL_NAMES: [(&str, u8); 13] = [
    ("igmp", 2),
    ("ipip", 4),
    ("dccp", 33),
    ("ipv6", 41),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ospf", 89),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
];

/// An IP protocol other than TCP, UDP and ICMP, by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl FromStr for IpProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let name = text.trim().to_ascii_lowercase();
        let number = match PROTOCOL_NAMES.iter().find(|(known, _)| *known == name) {
            Some((_, number)) => *number,
            None => name.parse::<u8>().map_err(|_| {
                let names: Vec<&str> = PROTOCOL_NAMES.iter().map(|(name, _)| *name).collect();
                format!(
                    "{text:?} is no IP protocol: give a number (0-255) or one of {}",
                    names.join(", ")
                )
            })?,
        };
        match number {
            1 | 6 | 17 | 58 => Err(format!(
                "{text:?}: scopes check TCP and UDP by port (--protect) and never ICMP; only \
                 other protocols can be left unprotected"
            )),
            _ => Ok(IpProtocol(number)),
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match PROTOCOL_NAMES.iter().find(|(_, number)| *number == self.0) {
            Some((name, _)) => write!(f, "{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(texts: &[&str]) -> Vec<ReplyFor> {
        texts.iter().map(|text| text.parse().expect(text)).collect()
    }

    #[test]
    fn named_kinds_open_flows_and_unnamed_protocols_open_none() {
        assert_eq!(reply_openers(&[]), ReplyOpeners::default());
        let openers = reply_openers(&kinds(&["udp/53", "udp/123", "tcp"]));
        assert_eq!(openers.tcp, None, "every TCP port");
        assert_eq!(openers.udp, Some(BTreeSet::from([53, 123])));
        assert!(!openers.icmp, "pings were not named");
        let pings = reply_openers(&kinds(&["icmp"]));
        assert_eq!(pings.tcp, Some(BTreeSet::new()), "no TCP at all");
        assert!(pings.icmp);
        assert!("sctp/9".parse::<ReplyFor>().is_err());
    }

    #[test]
    fn protocols_are_taken_by_name_or_number_but_never_tcp_udp_or_icmp() {
        assert_eq!("GRE".parse::<IpProtocol>(), Ok(IpProtocol(47)));
        assert_eq!("250".parse::<IpProtocol>(), Ok(IpProtocol(250)));
        assert_eq!(IpProtocol(50).to_string(), "esp");
        for refused in ["6", "udp", "1", "58"] {
            assert!(refused.parse::<IpProtocol>().is_err(), "{refused}");
        }
        let err = "tunnel".parse::<IpProtocol>().expect_err("unknown");
        assert!(err.contains("gre"), "{err}");
    }
}
