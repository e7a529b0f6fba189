//! The admin service: each operation is one transaction that changes a copy of the model,
//! saves it durably, then makes the kernel match. A change the kernel refuses is rolled back.
//! A change nobody acknowledges is reverted at its deadline ([`revert`]).

mod audit;
mod error;
mod expiry;
mod feeds;
mod fleet;
mod lockout;
mod operations;
mod policy_cache;
mod preview;
mod preview_report;
mod revert;
mod settings;
mod setup;
mod snapshot;
mod usage;

use std::time::{Duration, Instant};

use allowlist_common::{Mode, RuleId};
use time::OffsetDateTime;

use crate::dataplane::{
    Dataplane, DataplaneError, Enforced, Enforcement, Install, KernelState, Need,
};
use crate::model::{Expired, Model, ModelError, Settings};
use crate::policy::Policy;
use crate::store::Store;

pub use crate::model::GuardedAddress;
pub use audit::{Actor, append_to_trail, append_unauthenticated, flush_refusal_summaries};
pub use error::ServiceError;
pub use fleet::{FleetSnapshot, PendingRelease};
pub use lockout::Operator;
pub use preview::{Candidate, MAX_PREVIEW_WINDOW, Preview};
pub use preview_report::{PortReport, PreviewReport, Side, SourceReport};
pub use revert::SaveFailure;
pub use settings::ServiceSettings;
pub use setup::load_state;
pub use snapshot::{Published, Snapshot};
pub use usage::{
    AlwaysAllowHits, EntryHits, FlowStatsView, KernelMemory, ListHits, MAX_AGE, Stats, Top,
    TopSource, Usage,
};

use audit::Outcome;
use policy_cache::PolicyCache;

/// The model, its store and the kernel, kept in step.
pub struct Service {
    model: Model,
    store: Store,
    dataplane: Dataplane,
    settings: Settings,
    protect_ports: Vec<u16>,
    enforce_mode: Mode,
    reverts: u64,
    unsaved: Option<SaveFailure>,
    top_sample: u32,
    published: Published,
    /// The policy in force, for reuse while its lists stay the same.
    active_policy: PolicyCache,
    /// The policy a revert falls back to, likewise.
    fallback_policy: PolicyCache,
    /// When the next entry expires.
    next_expiry: Option<OffsetDateTime>,
    /// The entries held past their time, as last logged.
    held: std::collections::BTreeSet<crate::model::EntryId>,
    /// The audit trail.
    audit: std::sync::Arc<std::sync::Mutex<crate::store::AuditLog>>,
    /// Who the changes being made are recorded for.
    actor: Actor,
    /// When each list that follows a feed is read next.
    feeds: feeds::FeedSchedule,
    /// The remote operators who made changes lately.
    operators: lockout::RecentOperators,
    /// The preview running or last run.
    preview: Option<Preview>,
}

impl Service {
    /// Restores `model` (the state [`load_state`] read, or an empty one; reverting a pending
    /// change whose time has passed or that the kernel has already fallen back from) and makes
    /// `dataplane` enforce it, logging what the kernel held before if that differs.
    pub fn start(
        config: ServiceSettings,
        mut dataplane: Dataplane,
        mut store: Store,
        mut model: Model,
    ) -> Result<Self, ServiceError> {
        config.configure(&mut model);
        let settings = config.model.clone();
        let audit = crate::store::AuditLog::open(&config.state_dir, config.audit_max_bytes)?;
        let mut changed = false;
        let renumbered = model.renumber_rules(settings.rule_capacity);
        if renumbered > 0 {
            tracing::warn!(renumbered, "entries had rule ids out of range; renumbered");
            changed = true;
        }
        let now = OffsetDateTime::now_utc();
        let expired = if dataplane.fell_back() {
            model.revert_now(now)
        } else {
            model.revert_if_due(now)
        };
        let reverted_at_start = expired.is_some();
        if let Some(pending) = expired {
            tracing::warn!(
                action = ?pending.action,
                allowlists = ?pending.allowlist_ids,
                "the pending change expired while the daemon was down: reverted"
            );
            changed = true;
        }
        let expired = model.expire(now);
        if expired.changed() {
            tracing::info!(
                target: "audit",
                entries = expired.removed.len(),
                "entries that expired while the daemon was down: removed"
            );
            changed = true;
        }
        if changed {
            store.save(&model)?;
        }
        dataplane.set_replies(config.replies)?;
        dataplane.set_reply_openers(&config.reply_openers)?;
        dataplane.set_unprotected_protocols(&config.unprotected_protocols)?;
        dataplane.set_top_sample(config.top_sample)?;
        // A preview an earlier daemon ran ends: its report went with that daemon.
        dataplane.stop_preview()?;
        let mut service = Service {
            model,
            store,
            dataplane,
            settings,
            protect_ports: config.protect_ports,
            enforce_mode: config.mode,
            reverts: u64::from(reverted_at_start),
            unsaved: None,
            top_sample: config.top_sample,
            published: Published::default(),
            active_policy: PolicyCache::default(),
            fallback_policy: PolicyCache::default(),
            next_expiry: None,
            held: std::collections::BTreeSet::new(),
            audit: std::sync::Arc::new(std::sync::Mutex::new(audit)),
            actor: Actor::default(),
            feeds: feeds::FeedSchedule::default(),
            operators: lockout::RecentOperators::default(),
            preview: None,
        };
        let before = service.dataplane.kernel_state();
        if let Some((_, Duration::ZERO)) = &before.fallback {
            tracing::warn!(
                "the kernel had already fallen back to the previous policy at the revert deadline"
            );
        }
        service.sync_kernel()?;
        let after = service.dataplane.kernel_state();
        let fallback = |state: &KernelState| state.fallback.as_ref().map(|(e, _)| e.clone());
        if before.active == after.active && fallback(&before) == fallback(&after) {
            tracing::info!(kernel = %describe(&after), "the kernel already enforced the state on disk");
        } else {
            tracing::warn!(
                before = %describe(&before),
                after = %describe(&after),
                "reconciled the kernel with the state on disk"
            );
        }
        service.next_expiry = service.model.next_expiry_after(now);
        service.note_held(&expired);
        service.publish();
        Ok(service)
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The dataplane (for attaching).
    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    /// The counters for readers, through handles of their own.
    pub fn usage(&self) -> Result<Usage, DataplaneError> {
        Ok(Usage::new(
            self.dataplane.readings().try_clone()?,
            self.top_sample,
        ))
    }

    /// Moves the clock the program notes last hits with (every 100 ms).
    pub fn tick_clock(&mut self) -> Result<(), DataplaneError> {
        self.dataplane.tick_clock()
    }

    /// Makes the maps again smaller once they have been far larger than the policies in
    /// force need for a while (see [`Dataplane::shrink_due`]).
    pub fn shrink_if_due(&mut self) {
        if !self.dataplane.shrink_due() {
            return;
        }
        match self.sync_kernel() {
            // The snapshot readers are served from tells the kernel memory.
            Ok(()) => self.publish(),
            Err(err) => tracing::warn!(error = %err, "making the maps again smaller"),
        }
    }

    /// Renews the flow filter of the reply check from the flows still live (every few
    /// seconds); returns the flows it holds.
    pub fn renew_flow_filter(&mut self) -> Result<usize, DataplaneError> {
        self.dataplane.renew_flow_filter()
    }

    /// What the kernel must enforce for `model`, whose effective policy is `policy`.
    fn enforcement(&self, model: &Model, policy: Policy) -> Enforcement {
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

    /// Makes the kernel enforce the model and, while a change is pending, fall back by itself
    /// to the state before it at the revert deadline.
    fn sync_kernel(&mut self) -> Result<(), DataplaneError> {
        let policy = self.active_policy.policy(&self.model);
        let active = self.enforcement(&self.model, policy);
        // The kernel's own deadlines of expiring entries, of the policy in force and of the one
        // a revert falls back to.
        let mut expiring = self.model.kernel_expiring();
        let fallback = match self.model.pending() {
            Some(pending) => {
                let reverted = self.model.reverted();
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
        let deadlines: std::collections::BTreeMap<RuleId, Duration> = expiring
            .into_iter()
            .map(|(rule, at)| (rule, Duration::try_from(at - now).unwrap_or(Duration::ZERO)))
            .collect();
        // Maps sized to what the policies in force and the rules kept need.
        let policies = std::iter::once(&active.policy).chain(
            fallback
                .as_ref()
                .map(|(enforcement, _)| &enforcement.policy),
        );
        let need = Need::of(policies, self.model.rule_bound());
        self.dataplane.enforce(
            need,
            &Install {
                active: &active,
                fallback: fallback.as_ref().map(|(e, left)| (e, *left)),
                deadlines: &deadlines,
            },
        )
    }

    /// Takes the entries whose time has come out of `next` (the kernel must never be given
    /// a policy that holds an entry past its time), saves it, makes it current and the
    /// kernel match; rolls back if the kernel refuses. Returns what expired.
    fn commit(&mut self, mut next: Model) -> Result<Expired, ServiceError> {
        let started = Instant::now();
        let now = OffsetDateTime::now_utc();
        let expired = next.expire(now);
        let freed: Vec<RuleId> = self
            .model
            .rules_in_use()
            .difference(&next.rules_in_use())
            .filter_map(|rule| RuleId::try_from(rule).ok())
            .collect();
        self.store.save(&next)?;
        self.saved();
        let saved = Instant::now();
        let previous = std::mem::replace(&mut self.model, next);
        if let Err(err) = self.sync_kernel() {
            tracing::error!(error = %err, "the kernel refused the change; rolling back");
            self.model = previous;
            if let Err(save) = self.store.save(&self.model) {
                tracing::error!(error = %save, "saving the rolled-back state");
            }
            if let Err(sync) = self.sync_kernel() {
                tracing::error!(error = %sync, "restoring the previous policy in the kernel");
            }
            self.publish();
            return Err(err.into());
        }
        let synced = Instant::now();
        self.next_expiry = self.model.next_expiry_after(now);
        self.note_held(&expired);
        self.publish();
        if let Err(err) = self.dataplane.reset_rule_hits(&freed) {
            tracing::warn!(rules = freed.len(), error = %err, "zeroing the hits of freed rules");
        }
        tracing::debug!(
            save_ms = (saved - started).as_millis() as u64,
            kernel_ms = (synced - saved).as_millis() as u64,
            reset_ms = synced.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(expired)
    }

    /// Runs `change` on a copy of the model and commits it; logs `what` as an audit line with
    /// what the host enforced before and after (the API's span adds who asked), and records
    /// it in the audit trail.
    fn transact<T>(
        &mut self,
        what: impl FnOnce(&T) -> String,
        change: impl FnOnce(&mut Model, &Settings, OffsetDateTime) -> Result<T, ModelError>,
    ) -> Result<T, ServiceError> {
        self.transact_as(Outcome::Applied, what, change)
    }

    /// [`Service::transact`], recorded with `outcome`.
    fn transact_as<T>(
        &mut self,
        outcome: Outcome,
        what: impl FnOnce(&T) -> String,
        change: impl FnOnce(&mut Model, &Settings, OffsetDateTime) -> Result<T, ModelError>,
    ) -> Result<T, ServiceError> {
        // A change whose deadline has passed (in the kernel's clock too) is reverted first:
        // no request acts on a pending change the kernel has already fallen back from.
        self.revert_if_due();
        let started = Instant::now();
        let mut next = self.model.clone();
        let value = change(&mut next, &self.settings, OffsetDateTime::now_utc())?;
        tracing::debug!(model_ms = started.elapsed().as_millis() as u64, "changed");
        // The dataplane holds the policy in force: its size needs no second computation.
        let before = summary(&self.model, self.dataplane.installed_prefixes());
        let previous = self.model.clone();
        let expired = self.commit(next)?;
        self.note_preview_gone();
        let after = summary(&self.model, self.dataplane.installed_prefixes());
        let mut what = what(&value);
        if expired.changed() {
            what.push_str(&format!("; expired {}", expiry::describe(&expired.removed)));
        }
        self.record(outcome, what, &previous, before, after);
        Ok(value)
    }
}

/// A one-line summary of what the kernel enforces, for logs.
fn describe(state: &KernelState) -> String {
    let one = |e: &Enforced| {
        let mode = match e.mode {
            Mode::Off => "off",
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        };
        format!(
            "{mode} with {} prefixes and {} protected ports",
            e.prefixes,
            e.scopes.len()
        )
    };
    match &state.fallback {
        None => one(&state.active),
        Some((fallback, left)) => format!(
            "{}, falling back to {} in {}s",
            one(&state.active),
            one(fallback),
            left.as_secs()
        ),
    }
}

/// What the host enforces under `model`, with `prefixes` in force, for audit lines.
fn summary(model: &Model, prefixes: u64) -> String {
    let mut text = format!(
        "enforcing={} enabled={:?} prefixes={prefixes} lists={} scopes={}",
        model.enforcing(),
        model.enabled(),
        model.allowlists().count(),
        model.scopes().len()
    );
    if let Some(pending) = model.pending() {
        text.push_str(&format!(
            " pending={:?} revert_at={}",
            pending.action,
            crate::model::rfc3339(pending.revert_at)
        ));
    }
    text
}
