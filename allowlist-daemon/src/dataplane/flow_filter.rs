//! Renewing the flow filter (see `allowlist_common::flow_filter`): the filter the reply
//! check does not read is cleared, given the bytes of the flows still live, and switched to,
//! so that flows long gone stop costing denied packets a flow map lookup.

use allowlist_common::flow_filter::{
    FLOW_FILTER_LINES, FlowFilterLine, MAP_FLOW_FILTER, flow_filter_byte, flow_filter_slot,
};
use allowlist_common::{FlowKey, FlowState, MAP_FLOWS};
use aya::maps::IterableMap as _;

use super::Dataplane;
use super::clock::monotonic_now_ns;
use super::error::{DataplaneError, batch_error};
use super::sys::{Access, ArrayWindow, BatchMap};

impl Dataplane {
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
