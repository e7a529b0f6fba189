//! What the kernel enforces, read from its configuration slot and the generations'
//! records: the policy in force, the fallback and its time left in the kernel's clock.

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_common::Mode;

use super::Dataplane;
use super::generations::Generation;
#[cfg(feature = "test-util")]
use super::types::Enforcement;
use super::types::{Enforced, KernelState};
#[cfg(feature = "test-util")]
use crate::policy::Policy;
use crate::policy::PortScope;

impl Dataplane {
    /// What the kernel enforces now.
    pub fn kernel_state(&self) -> KernelState {
        let current = self.config.current();
        let active = self.enforced(&current.active);
        let fallback = self
            .time_to_fallback()
            .map(|remaining| (self.enforced(&current.fallback), remaining));
        KernelState { active, fallback }
    }

    /// While a change is pending in the kernel: the time left until the program falls back,
    /// in the kernel's own (monotonic) clock, which no step of the wall clock moves.
    pub fn time_to_fallback(&self) -> Option<Duration> {
        self.config.time_to_fallback()
    }

    /// Whether a pending change's deadline has passed in the kernel's clock: the program
    /// enforces the fallback now.
    pub fn fell_back(&self) -> bool {
        self.config.fell_back()
    }

    /// The policy in force in the kernel (not counting a pending fallback); `None` until
    /// this daemon knows it (after a restart: until it installs a policy).
    #[cfg(feature = "test-util")]
    pub fn installed(&self) -> Option<&Policy> {
        self.generations
            .policy(self.config.current().active.generation)
    }

    /// Prefixes of the policy in force in the kernel (not counting a pending fallback), as
    /// its generation's record says.
    pub fn installed_prefixes(&self) -> u64 {
        self.generations
            .get(self.config.current().active.generation)
            .record
            .prefixes
    }

    /// The generation a raw configuration entry names, and its scopes if it uses them.
    fn named(&self, raw: &allowlist_common::Enforcement) -> (Generation, BTreeSet<PortScope>) {
        let generation = self.generations.get(raw.generation);
        let scopes = if raw.scoped != 0 {
            generation.scopes.clone()
        } else {
            BTreeSet::new()
        };
        (generation, scopes)
    }

    /// What a raw configuration entry enforces, as the kernel's records say.
    fn enforced(&self, raw: &allowlist_common::Enforcement) -> Enforced {
        let (generation, scopes) = self.named(raw);
        Enforced {
            digest: (generation.record.digest != [0; 32]).then_some(generation.record.digest),
            prefixes: generation.record.prefixes,
            scopes,
            mode: Mode::from_raw(raw.mode),
        }
    }

    /// The enforcement a raw configuration entry names (an unknown policy as empty).
    #[cfg(feature = "test-util")]
    pub(super) fn enforcement(&self, raw: &allowlist_common::Enforcement) -> Enforcement {
        let (generation, scopes) = self.named(raw);
        Enforcement {
            policy: generation.policy.unwrap_or_default(),
            scopes,
            mode: Mode::from_raw(raw.mode),
        }
    }
}
