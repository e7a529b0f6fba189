//! Making the kernel enforce a model: the policy in force and, while a change is pending,
//! the one it falls back to by itself at the deadline, with the entries' own deadlines, in
//! maps sized to them. The policies are built again only when their lists change.

use std::collections::BTreeMap;
use std::time::Duration;

use allowlist_common::{Mode, RuleId};
use time::OffsetDateTime;

use super::policy_cache::PolicyCache;
use crate::dataplane::{Dataplane, DataplaneError, Enforcement, Install, Need};
use crate::model::Model;
use crate::policy::Policy;

/// The dataplane, with what it takes to give it a model.
pub(super) struct KernelSync {
    dataplane: Dataplane,
    /// What enforcing means on this host (drop, or only count).
    enforce_mode: Mode,
    /// The policy in force, for reuse while its lists stay the same.
    active_policy: PolicyCache,
    /// The policy a revert falls back to, likewise.
    fallback_policy: PolicyCache,
}

impl KernelSync {
    /// Gives models to `dataplane`, enforcing them in `enforce_mode`.
    pub(super) fn new(dataplane: Dataplane, enforce_mode: Mode) -> Self {
        KernelSync {
            dataplane,
            enforce_mode,
            active_policy: PolicyCache::default(),
            fallback_policy: PolicyCache::default(),
        }
    }

    /// The dataplane.
    pub(super) fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// The dataplane, to change what is not a policy (attachments, previews, settings).
    pub(super) fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    /// What enforcing means on this host.
    pub(super) fn enforce_mode(&self) -> Mode {
        self.enforce_mode
    }

    /// What the kernel must enforce for `model`, whose effective policy is `policy`.
    pub(super) fn enforcement(&self, model: &Model, policy: Policy) -> Enforcement {
        Enforcement {
            policy,
            scopes: model.scopes().clone(),
            mode: if model.enforcing() {
                self.enforce_mode
            } else {
                Mode::Off
            },
        }
    }

    /// Makes the kernel enforce `model` and, while a change is pending, fall back by itself
    /// to the state before it at the revert deadline.
    pub(super) fn sync(&mut self, model: &Model) -> Result<(), DataplaneError> {
        let policy = self.active_policy.policy(model);
        let active = self.enforcement(model, policy);
        // The kernel's own deadlines of expiring entries, of the policy in force and of the one
        // a revert falls back to.
        let mut expiring = model.kernel_expiring();
        let fallback = match model.pending() {
            Some(pending) => {
                let reverted = model.reverted();
                expiring.extend(reverted.kernel_expiring());
                let policy = self.fallback_policy.policy(&reverted);
                Some((self.enforcement(&reverted, policy), pending.revert_at))
            }
            None => {
                self.fallback_policy.clear();
                None
            }
        };
        // Times left counted once the policies are built (a million entries take a while), so
        // that no deadline lands in the kernel later than the model has it.
        let now = OffsetDateTime::now_utc();
        let fallback = fallback.map(|(enforcement, revert_at)| {
            let left = Duration::try_from(revert_at - now).unwrap_or(Duration::ZERO);
            // The deadline the kernel already keeps for this change wins: a wall clock
            // stepped back (here or while the daemon was down) must not stretch it.
            let left = self
                .dataplane
                .time_to_fallback()
                .map_or(left, |kernel| kernel.min(left));
            (enforcement, left)
        });
        let deadlines: BTreeMap<RuleId, Duration> = expiring
            .into_iter()
            .map(|(rule, at)| (rule, Duration::try_from(at - now).unwrap_or(Duration::ZERO)))
            .collect();
        // Maps sized to what the policies in force and the rules kept need.
        let policies = std::iter::once(&active.policy).chain(
            fallback
                .as_ref()
                .map(|(enforcement, _)| &enforcement.policy),
        );
        let need = Need::of(policies, model.rule_bound());
        self.dataplane.enforce(
            need,
            &Install {
                active: &active,
                fallback: fallback.as_ref().map(|(e, left)| (e, *left)),
                deadlines: &deadlines,
            },
        )
    }
}
