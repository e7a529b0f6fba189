//! Test helpers (the `test-util` feature): the program loaded without pins, parts of the
//! policy set directly, and the kernel's test run on crafted frames.

use allowlist_common::{EGRESS_PROGRAM_NAME, Mode, PROGRAM_NAME};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use std::collections::BTreeSet;

use super::Dataplane;
use super::error::{DataplaneError, program_error};
use super::load::program;
use super::types::{Capacity, Enforcement, FrameRun, Replies, Verdict};
use crate::policy::{Policy, PortScope};

/// Options for `repeat` runs (at least one) of a program on `frame`.
pub(super) fn test_run_options(frame: &[u8], repeat: u32) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(frame),
        repeat: repeat.max(1),
        ..TestRunOptions::default()
    }
}

impl Dataplane {
    /// Loads the programs and creates their own maps, not pinned, with room for `max_rules`
    /// rules and as many prefixes per address family and policy, and `max_flows` recorded
    /// flows. The program
    /// starts in [`Mode::Off`] with an empty policy, replies passed with the default timeouts,
    /// no scopes, and is not attached; it is detached when dropped.
    pub fn load(max_rules: u32, max_flows: u32) -> Result<Self, DataplaneError> {
        let capacity = Capacity {
            rules: max_rules,
            v4_prefixes: max_rules,
            v6_prefixes: max_rules,
            generations: allowlist_common::GENERATIONS,
            flows: max_flows,
        };
        let mut dataplane = Self::with_object(None, capacity)?;
        dataplane.set_replies(Replies::default())?;
        dataplane.tick_clock()?;
        Ok(dataplane)
    }

    /// The policy in force (without a pending fallback), for callers that set one part of it.
    fn active(&self) -> Enforcement {
        self.enforcement(&self.config.current().active)
    }

    /// Makes `policy` the policy in force, keeping mode and scopes; clears a pending fallback.
    pub fn apply(&mut self, policy: &Policy) -> Result<(), DataplaneError> {
        let enforcement = Enforcement {
            policy: policy.clone(),
            ..self.active()
        };
        self.install(&enforcement, None)
    }

    /// Sets what the program does with packets from sources outside the policy; clears a
    /// pending fallback.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), DataplaneError> {
        let enforcement = Enforcement {
            mode,
            ..self.active()
        };
        self.install(&enforcement, None)
    }

    /// Limits the check to packets to these local ports (and what could hide a port); an
    /// empty set checks every packet. Clears a pending fallback.
    pub fn set_scopes(&mut self, scopes: &BTreeSet<PortScope>) -> Result<(), DataplaneError> {
        let enforcement = Enforcement {
            scopes: scopes.clone(),
            ..self.active()
        };
        self.install(&enforcement, None)
    }

    /// Runs the XDP program in the kernel on `frame`, `repeat` times (at least once), without
    /// any interface: what an attached program would do with that frame, and how long it
    /// takes. Counters count every run.
    pub fn run_frame(&self, frame: &[u8], repeat: u32) -> Result<FrameRun, DataplaneError> {
        let result = program::<Xdp>(&self.ebpf, PROGRAM_NAME)?
            .test_run(test_run_options(frame, repeat))
            .map_err(program_error(PROGRAM_NAME))?;
        let verdict = match result.return_value {
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            other => Verdict::Other(other),
        };
        Ok(FrameRun {
            verdict,
            duration: result.duration,
        })
    }

    /// Runs the egress program in the kernel on `frame`, as if the host sent it: records its
    /// flow when replies pass. The program never drops.
    pub fn run_egress_frame(&self, frame: &[u8]) -> Result<(), DataplaneError> {
        program::<SchedClassifier>(&self.ebpf, EGRESS_PROGRAM_NAME)?
            .test_run(test_run_options(frame, 1))
            .map_err(program_error(EGRESS_PROGRAM_NAME))?;
        Ok(())
    }

    /// How many instructions the kernel's verifier walked to load the XDP program and the
    /// egress program (what every load of them costs, as each resize of the tables does).
    pub fn verified_instructions(&self) -> Result<(u32, u32), DataplaneError> {
        let xdp = program::<Xdp>(&self.ebpf, PROGRAM_NAME)?
            .info()
            .map_err(program_error(PROGRAM_NAME))?;
        let egress = program::<SchedClassifier>(&self.ebpf, EGRESS_PROGRAM_NAME)?
            .info()
            .map_err(program_error(EGRESS_PROGRAM_NAME))?;
        Ok((
            xdp.verified_instruction_count().unwrap_or(0),
            egress.verified_instruction_count().unwrap_or(0),
        ))
    }
}
