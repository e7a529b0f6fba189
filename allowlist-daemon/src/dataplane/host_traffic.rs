//! The program's settings that belong to the host rather than to a policy: replies to the
//! host's own flows (whether they pass, for how long, and which of the host's packets open
//! them), the sampling of refused sources, and the IP protocols scopes leave unchecked.
//! Each is a field of the configuration, switched like a policy.

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_common::{MAP_REPLY_PORTS, reply_openers};

use super::Dataplane;
use super::codec::port_words;
use super::error::{DataplaneError, map_error};
use super::types::{Replies, ReplyOpeners};
use crate::policy::{PortScope, Transport};

impl Dataplane {
    /// Sets whether and how long replies to the host's own flows pass. Takes effect at once
    /// for the check; the egress program is attached (or not) by [`Dataplane::attach`].
    pub fn set_replies(&mut self, replies: Replies) -> Result<(), DataplaneError> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.config.update(|config| {
            config.replies = u32::from(replies.enabled);
            config.tcp_timeout_ns = nanos(replies.tcp_timeout);
            config.udp_timeout_ns = nanos(replies.udp_timeout);
            config.icmp_timeout_ns = nanos(replies.icmp_timeout);
        })
    }

    /// Sets which of the host's own packets open reply flows: the port bitmap first, then the
    /// configuration that makes the egress program read it. Flows already open stay.
    pub fn set_reply_openers(&mut self, openers: &ReplyOpeners) -> Result<(), DataplaneError> {
        let listed: BTreeSet<PortScope> = [
            (Transport::Tcp, &openers.tcp),
            (Transport::Udp, &openers.udp),
        ]
        .into_iter()
        .flat_map(|(transport, ports)| {
            ports
                .iter()
                .flatten()
                .map(move |&port| PortScope { transport, port })
        })
        .collect();
        for (index, word) in port_words(0, &listed) {
            self.maps
                .reply_ports
                .set(index, word, 0)
                .map_err(map_error(MAP_REPLY_PORTS))?;
        }
        let mut restrictions = 0;
        if openers.tcp.is_some() {
            restrictions |= reply_openers::TCP_LISTED_PORTS;
        }
        if openers.udp.is_some() {
            restrictions |= reply_openers::UDP_LISTED_PORTS;
        }
        if !openers.icmp {
            restrictions |= reply_openers::NO_ICMP;
        }
        self.config
            .update(|config| config.reply_restrictions = restrictions)
    }

    /// Lets packets of these IP protocols (not TCP, UDP or ICMP, which scopes treat by
    /// port or not at all) pass unchecked while scopes are set.
    pub fn set_unprotected_protocols(
        &mut self,
        protocols: &BTreeSet<u8>,
    ) -> Result<(), DataplaneError> {
        let mut words = [0u64; 4];
        for &protocol in protocols {
            words[usize::from(protocol / 64)] |= 1 << (protocol % 64);
        }
        self.config
            .update(|config| config.unprotected_protocols = words)
    }

    /// Notes one refused packet in `sample` in the map of refused sources; 0: none.
    pub fn set_top_sample(&mut self, sample: u32) -> Result<(), DataplaneError> {
        self.config.update(|config| config.top_sample = sample)
    }
}
