//! The admin service: each operation is one transaction that changes a copy of the model,
//! saves it durably, then makes the kernel match. A change the kernel refuses is rolled back.
//! A change nobody acknowledges is reverted at its deadline ([`revert`]).

mod audit;
mod durable;
mod error;
mod expiry;
mod feeds;
mod fleet;
mod kernel_sync;
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

use crate::dataplane::{Dataplane, DataplaneError, Enforced, KernelState};
use crate::model::{Expired, Model, ModelError, Settings};
use crate::store::Store;

pub use crate::model::GuardedAddress;
pub use audit::{Actor, append_to_trail, append_unauthenticated, flush_refusal_summaries};
pub use durable::SaveFailure;
pub use error::ServiceError;
pub use fleet::{FleetSnapshot, PendingRelease};
pub use lockout::Operator;
pub use preview::{Candidate, MAX_PREVIEW_WINDOW, Preview};
pub use preview_report::{PortReport, PreviewReport, Side, SourceReport};
pub use settings::ServiceSettings;
pub use setup::load_state;
pub use snapshot::{Published, Snapshot};
pub use usage::{
    AlwaysAllowHits, EntryHits, FlowStatsView, KernelMemory, ListHits, MAX_AGE, Stats, Top,
    TopSource, Usage,
};

use audit::{AuditTrail, Outcome};
use durable::Durable;
use expiry::ExpiryWatch;
use kernel_sync::KernelSync;

/// The model, its store and the kernel, kept in step.
pub struct Service {
    model: Model,
    /// The state on disk.
    durable: Durable,
    /// The kernel, given each model that is committed.
    kernel: KernelSync,
    settings: Settings,
    reverts: u64,
    top_sample: u32,
    published: Published,
    /// When the next entry expires, and the entries held past their time.
    expiry: ExpiryWatch,
    /// The audit trail, and who the changes being made are recorded for.
    audit: AuditTrail,
    /// When each list that follows a feed is read next.
    feeds: feeds::FeedSchedule,
    /// The addresses no change may cut off.
    guard: lockout::LockoutGuard,
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
            durable: Durable::new(store),
            kernel: KernelSync::new(dataplane, config.mode),
            settings,
            reverts: u64::from(reverted_at_start),
            top_sample: config.top_sample,
            published: Published::default(),
            expiry: ExpiryWatch::default(),
            audit: AuditTrail::new(audit),
            feeds: feeds::FeedSchedule::default(),
            guard: lockout::LockoutGuard::new(config.protect_ports),
            preview: None,
        };
        let before = service.kernel.dataplane().kernel_state();
        if let Some((_, Duration::ZERO)) = &before.fallback {
            tracing::warn!(
                "the kernel had already fallen back to the previous policy at the revert deadline"
            );
        }
        service.sync_kernel()?;
        let after = service.kernel.dataplane().kernel_state();
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
        service.expiry.follow(&service.model, now, &expired);
        service.publish();
        Ok(service)
    }

    /// Makes `actor` the one the next changes are recorded for; a remote operator is
    /// guarded against lockouts for a while (see
    /// [`LockoutGuard::guarded_always`](lockout::LockoutGuard::guarded_always)).
    pub fn act_as(&mut self, actor: Actor) {
        if let Some(address) = actor.remote_ip {
            self.guard.note_operator(address);
        }
        self.audit.act_as(actor);
    }

    /// The audit trail, shared with the API (which records refusals and reads it).
    pub fn audit_log(&self) -> std::sync::Arc<std::sync::Mutex<crate::store::AuditLog>> {
        self.audit.log()
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The dataplane (for attaching).
    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        self.kernel.dataplane_mut()
    }

    /// The counters for readers, through handles of their own.
    pub fn usage(&self) -> Result<Usage, DataplaneError> {
        Ok(Usage::new(
            self.kernel.dataplane().readings().try_clone()?,
            self.top_sample,
        ))
    }

    /// Moves the clock the program notes last hits with (every 100 ms).
    pub fn tick_clock(&mut self) -> Result<(), DataplaneError> {
        self.kernel.dataplane_mut().tick_clock()
    }

    /// Makes the maps again smaller once they have been far larger than the policies in
    /// force need for a while (see [`Dataplane::shrink_due`]).
    pub fn shrink_if_due(&mut self) {
        if !self.kernel.dataplane().shrink_due() {
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
        self.kernel.dataplane_mut().renew_flow_filter()
    }

    /// Makes the kernel enforce the model and, while a change is pending, fall back by itself
    /// to the state before it at the revert deadline.
    fn sync_kernel(&mut self) -> Result<(), DataplaneError> {
        self.kernel.sync(&self.model)
    }

    /// What the host enforces now, on one line for audit lines.
    fn enforced_summary(&self) -> String {
        summary(&self.model, self.kernel.dataplane().installed_prefixes())
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
        self.durable.save(&next)?;
        let saved = Instant::now();
        let previous = std::mem::replace(&mut self.model, next);
        if let Err(err) = self.sync_kernel() {
            tracing::error!(error = %err, "the kernel refused the change; rolling back");
            self.model = previous;
            if let Err(save) = self.durable.save(&self.model) {
                tracing::error!(error = %save, "saving the rolled-back state");
            }
            if let Err(sync) = self.sync_kernel() {
                tracing::error!(error = %sync, "restoring the previous policy in the kernel");
            }
            self.publish();
            return Err(err.into());
        }
        let synced = Instant::now();
        self.expiry.follow(&self.model, now, &expired);
        self.publish();
        if let Err(err) = self.kernel.dataplane_mut().reset_rule_hits(&freed) {
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
        let before = self.enforced_summary();
        let previous = self.model.clone();
        let expired = self.commit(next)?;
        self.note_preview_gone();
        let after = self.enforced_summary();
        let mut what = what(&value);
        if expired.changed() {
            what.push_str(&format!("; expired {}", expiry::describe(&expired.removed)));
        }
        let models = (&previous, &self.model);
        self.audit.record(outcome, what, models, before, after);
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
