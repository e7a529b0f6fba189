//! The program's settings that belong to the host rather than to a policy: replies to the
//! host's own flows (whether they pass, for how long, and which of the host's packets open
//! them), the sampling of refused sources, and the IP protocols scopes leave unchecked.
//! Each is a field of the configuration, switched like a policy. And the renewal of the
//! reply check's flow filter (see `allowlist_common::flow_filter`): the filter the check
//! does not read is cleared, given the bytes of the flows still live, and switched to, so
//! that flows long gone stop costing denied packets a flow map lookup.

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_common::flow_filter::{
    FLOW_FILTER_LINES, FlowFilterLine, MAP_FLOW_FILTER, flow_filter_byte, flow_filter_slot,
};
use allowlist_common::{FlowKey, FlowState, MAP_FLOWS, MAP_REPLY_PORTS, reply_openers};
use aya::maps::IterableMap as _;

use super::Dataplane;
use super::clock::monotonic_now_ns;
use super::codec::port_words;
use super::error::{DataplaneError, batch_error, map_error};
use super::sys::{Access, ArrayWindow, BatchMap};
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

    /// Renews the flow filter the reply check does not read from the flows still live, then
    /// switches the check to it. Returns the flows it holds. Safe while the programs run: a
    /// flow recorded meanwhile sets its byte in this filter after the clearing.
    pub fn renew_flow_filter(&mut self) -> Result<usize, DataplaneError> {
        let renewed = (self.config.current().flow_filter & 1) ^ 1;
        let lines = FLOW_FILTER_LINES as usize;
        let mapping_error = |source| DataplaneError::Mapping {
            name: MAP_FLOW_FILTER,
            source,
        };
        let window = ArrayWindow::<FlowFilterLine>::map(
            self.maps.flow_filter.map(),
            renewed as usize * lines,
            lines,
            Access::ReadWrite,
        )
        .map_err(mapping_error)?;
        if !window.copy_from(&vec![[0; 64]; lines]) {
            return Err(mapping_error(nix::errno::Errno::EINVAL));
        }
        let now = monotonic_now_ns();
        let mut held = 0;
        BatchMap::<FlowKey, FlowState>::new(self.maps.flows.map(), None)
            .and_then(|flows| {
                flows.lookup(usize::MAX, |flow, state| {
                    let timeout = self.config.current().flow_timeout_ns(flow.protocol);
                    if state[0].passes_replies(timeout, now) {
                        let (line, byte) = flow_filter_byte(0, flow_filter_slot(flow));
                        held += usize::from(window.set_byte(line as usize, byte, 1));
                    }
                })
            })
            .map_err(batch_error(MAP_FLOWS))?;
        self.config.update(|config| config.flow_filter = renewed)?;
        Ok(held)
    }
}
