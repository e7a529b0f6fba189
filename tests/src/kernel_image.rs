//! What the kernel enforces between two writes of the daemon, worked out from what the daemon
//! writes: the generation in force, the one it falls back to at the deadline, and the
//! deadlines of the rules flagged as expiring. The kernel judges a source by its longest
//! prefix alone; a flagged rule past its deadline drops it. The model's property test
//! compares this against the reference, with the daemon running and dead.

use std::collections::BTreeMap;
use std::net::IpAddr;

use allowlist_common::{EXPIRING_RULE, RuleId};
use allowlist_daemon::model::Model;
use ipnet::IpNet;
use time::OffsetDateTime;

/// One generation: whether it enforces, and its prefixes with their rule and flag.
#[derive(Debug, Clone)]
struct Generation {
    enforcing: bool,
    prefixes: Vec<(IpNet, RuleId, bool)>,
}

impl Generation {
    fn of(model: &Model) -> Self {
        Generation {
            enforcing: model.enforcing(),
            prefixes: model
                .effective_policy()
                .iter()
                .map(|(net, rule)| (*net, rule & !EXPIRING_RULE, rule & EXPIRING_RULE != 0))
                .collect(),
        }
    }
}

/// How the kernel judges a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelVerdict {
    /// Nothing enforced, or allowed by a rule that stands.
    Pass {
        /// The rule (`None`: nothing enforced).
        rule: Option<RuleId>,
    },
    /// No prefix covers it, or its rule's deadline passed.
    Drop,
}

/// The kernel as the daemon last wrote it.
#[derive(Debug, Clone)]
pub struct KernelImage {
    active: Generation,
    fallback: Option<(Generation, i64)>,
    deadlines: BTreeMap<RuleId, i64>,
    /// When the entry of each rule expires, flagged or not (to tell the daemon's own
    /// expiries apart).
    expiries: BTreeMap<RuleId, i64>,
}

impl KernelImage {
    /// What the daemon writes for `model`; times in seconds after `epoch`.
    pub fn of(model: &Model, epoch: OffsetDateTime) -> Self {
        let seconds = |at: OffsetDateTime| (at - epoch).whole_seconds();
        let reverted = model.reverted();
        let mut deadlines: BTreeMap<RuleId, i64> = BTreeMap::new();
        for state in [model, &reverted] {
            for (rule, at) in state.kernel_expiring() {
                deadlines.insert(rule, seconds(at));
            }
        }
        let expiries = model
            .kept_lists()
            .flat_map(|list| list.entries.iter())
            .filter_map(|entry| Some((entry.rule, seconds(entry.expires_at?.time()))))
            .collect();
        KernelImage {
            active: Generation::of(model),
            fallback: model
                .pending()
                .map(|pending| (Generation::of(&reverted), seconds(pending.revert_at))),
            deadlines,
            expiries,
        }
    }

    /// The kernel's verdict on `addr` at `at`, with nobody writing since.
    pub fn verdict(&self, addr: IpAddr, at: i64) -> KernelVerdict {
        let generation = match &self.fallback {
            Some((fallback, revert_at)) if at >= *revert_at => fallback,
            _ => &self.active,
        };
        if !generation.enforcing {
            return KernelVerdict::Pass { rule: None };
        }
        let longest = generation
            .prefixes
            .iter()
            .filter(|(net, ..)| net.contains(&addr))
            .max_by_key(|(net, ..)| net.prefix_len());
        match longest {
            None => KernelVerdict::Drop,
            Some((_, rule, flagged)) => {
                if *flagged
                    && self
                        .deadlines
                        .get(rule)
                        .is_some_and(|deadline| *deadline <= at)
                {
                    KernelVerdict::Drop
                } else {
                    KernelVerdict::Pass { rule: Some(*rule) }
                }
            }
        }
    }

    /// Whether `verdict` at `at` passes through an entry past its time that only the daemon
    /// removes (one inside another prefix in force, which the kernel cannot expire alone).
    pub fn passes_by_daemon_expiry(&self, verdict: KernelVerdict, at: i64) -> bool {
        match verdict {
            KernelVerdict::Pass { rule: Some(rule) } => {
                !self.deadlines.contains_key(&rule)
                    && self.expiries.get(&rule).is_some_and(|expiry| *expiry <= at)
            }
            _ => false,
        }
    }
}
