//! The admin service: each operation is one transaction that changes a copy of the model,
//! saves it durably, then makes the kernel match. A change the kernel refuses is rolled back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allowlist_common::{Counter, Mode, RuleId};
use ipnet::IpNet;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneError, Enforcement, FlowStats, KernelState};
use crate::host;
use crate::model::{
    Allowlist, AllowlistInput, EntriesInput, Entry, Model, ModelError, Pending, Settings,
};
use crate::policy::PortScope;
use crate::store::{Store, StoreError};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request was refused; nothing changed.
    #[error(transparent)]
    Refused(#[from] ModelError),
    /// The change could not be saved; nothing changed.
    #[error("saving the state")]
    Store(#[from] StoreError),
    /// The kernel refused the change; it was rolled back.
    #[error("writing the policy to the kernel")]
    Dataplane(#[from] DataplaneError),
    /// The lockout guard could not read the host's sessions.
    #[error("reading established sessions for the lockout guard")]
    Host(#[source] std::io::Error),
}

/// Hits of one allowlist entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryHits {
    /// The allowlist.
    pub allowlist_id: String,
    /// The entry.
    pub entry_id: String,
    /// Its prefix.
    pub cidr: IpNet,
    /// Packets it allowed.
    pub hits: u64,
}

/// How much one entry was used.
#[derive(Debug, Clone, Copy)]
pub struct EntryUse {
    /// Packets it allowed since it was created (or the program loaded).
    pub hits: u64,
    /// When it last allowed one; `None`: never.
    pub last_hit: Option<OffsetDateTime>,
}

/// The sources refused most often in a recent window.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// One refused packet in `sample` was noted (0: noting is off); packet counts are
    /// estimates scaled by it.
    pub sample: u32,
    /// Only sources last seen this recently are listed.
    pub window_seconds: u64,
    /// Busiest first.
    pub sources: Vec<TopSource>,
}

/// One refused source.
#[derive(Debug, Clone, Serialize)]
pub struct TopSource {
    /// The source address.
    pub address: IpAddr,
    /// Refused packets (estimated from the sample) since the map first noted it.
    pub packets: u64,
    /// When a packet of it was last noted (RFC 3339).
    pub last_seen: String,
}

/// Hits of one always-allow prefix.
#[derive(Debug, Clone, Serialize)]
pub struct AlwaysAllowHits {
    /// The prefix.
    pub cidr: IpNet,
    /// Packets it allowed.
    pub hits: u64,
}

/// Packet counters and per-entry hits.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Totals by counter name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Hits per allowlist entry.
    pub entries: Vec<EntryHits>,
    /// Hits per always-allow prefix.
    pub always_allow: Vec<AlwaysAllowHits>,
    /// The flows remembered for replies.
    pub flows: FlowStatsView,
}

/// [`FlowStats`] for the API.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatsView {
    /// Flows in the map now.
    pub live: u64,
    /// Flows recorded since the program was loaded.
    pub recorded: u64,
    /// Flows pushed out by newer ones because the map was full.
    pub evicted: u64,
}

impl From<FlowStats> for FlowStatsView {
    fn from(stats: FlowStats) -> Self {
        FlowStatsView {
            live: stats.live,
            recorded: stats.recorded,
            evicted: stats.evicted,
        }
    }
}

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
}

/// A state that could not be saved after a revert (the kernel had reverted already, so the
/// model did too): retried with backoff until a save succeeds.
#[derive(Debug, Clone)]
pub struct SaveFailure {
    /// Why the last attempt failed, with its causes.
    pub cause: String,
    /// When the first attempt failed.
    pub since: OffsetDateTime,
    /// Attempts so far.
    pub attempts: u32,
    next_attempt: std::time::Instant,
}

/// The longest wait between two attempts to save a state that could not be saved.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(60);

/// Rule ids available to allowlist entries: room for a full replacement of every entry (old
/// and new side by side while it is applied).
fn entry_rule_capacity(config: &Config) -> RuleId {
    RuleId::try_from(config.max_entries.saturating_mul(2)).unwrap_or(RuleId::MAX / 2)
}

/// The number of rules the kernel maps need for `config`: entries, then always-allow.
pub fn kernel_rule_capacity(config: &Config) -> u32 {
    entry_rule_capacity(config).saturating_add(config.always_allow.len() as u32)
}

/// The model's limits and windows under `config`.
pub fn settings(config: &Config) -> Settings {
    Settings {
        max_lists: config.max_lists,
        max_entries: config.max_entries,
        max_name_len: config.max_name_len,
        max_description_len: config.max_description_len,
        ack_min: config.ack_min,
        ack_max: config.ack_max,
        rule_capacity: entry_rule_capacity(config),
    }
}

/// Gives `model` what comes from `config` rather than from the state: the always-allow
/// prefixes (with their rule ids, after the entries') and the default scopes.
fn configure(model: &mut Model, config: &Config) {
    model.set_default_scopes(config.protect.iter().copied().collect());
    model.set_always_allow(
        config
            .always_allow
            .iter()
            .zip(entry_rule_capacity(config)..)
            .map(|(net, rule)| (*net, rule))
            .collect(),
    );
}

/// Reads the state in `store` and checks it against every invariant, with `config`'s limits
/// and always-allow prefixes; `None` when there is no state yet. A state that breaks one is
/// refused with the file, the problem and what to do; nothing touches the kernel before.
pub fn load_state(config: &Config, store: &Store) -> Result<Option<Model>, StoreError> {
    let Some(mut model) = store.load()? else {
        return Ok(None);
    };
    configure(&mut model, config);
    model
        .validate(&settings(config))
        .map_err(|problem| store.invalid(problem))?;
    Ok(Some(model))
}

/// The error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A fresh random id such as `al_1f0c93a4d2b7e650`.
fn new_id(prefix: &'static str) -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    let value = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
            nanos ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_left(32)
        }
    };
    format!("{prefix}_{value:016x}")
}

impl Service {
    /// Restores `model` (the state [`load_state`] read, or an empty one; reverting a pending
    /// change whose time has passed or that the kernel has already fallen back from) and makes
    /// `dataplane` enforce it, logging what the kernel held before if that differs.
    pub fn start(
        config: &Config,
        mut dataplane: Dataplane,
        store: Store,
        mut model: Model,
    ) -> Result<Self, ServiceError> {
        let settings = settings(config);
        configure(&mut model, config);
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
        if changed {
            store.save(&model)?;
        }
        dataplane.set_replies(config.replies)?;
        dataplane.set_top_sample(config.top_sample)?;
        let mut service = Service {
            model,
            store,
            dataplane,
            settings,
            protect_ports: config.protect_ports.clone(),
            enforce_mode: config.mode,
            reverts: u64::from(reverted_at_start),
            unsaved: None,
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
        Ok(service)
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The dataplane (for attaching and reading counters).
    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    /// What the kernel must enforce for `model`.
    fn enforcement(&self, model: &Model) -> Enforcement {
        Enforcement {
            policy: model.effective_policy(),
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
        let active = self.enforcement(&self.model);
        let fallback = self.model.pending().map(|pending| {
            let left = pending.revert_at - OffsetDateTime::now_utc();
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            (self.enforcement(&self.model.reverted()), left)
        });
        self.dataplane
            .install(&active, fallback.as_ref().map(|(e, left)| (e, *left)))
    }

    /// Saves `next`, makes it current and the kernel match; rolls back if the kernel refuses.
    fn commit(&mut self, next: Model) -> Result<(), ServiceError> {
        let freed: Vec<RuleId> = self
            .model
            .rules_in_use()
            .difference(&next.rules_in_use())
            .copied()
            .collect();
        self.store.save(&next)?;
        if let Some(failure) = self.unsaved.take() {
            tracing::info!(attempts = failure.attempts, "the state is saved again");
        }
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
            return Err(err.into());
        }
        for rule in freed {
            if let Err(err) = self.dataplane.reset_rule_hits(rule) {
                tracing::warn!(rule, error = %err, "zeroing the hits of a freed rule");
            }
        }
        Ok(())
    }

    /// Runs `change` on a copy of the model and commits it; logs `what` as an audit line with
    /// what the host enforced before and after (the API's span adds who asked).
    fn transact<T>(
        &mut self,
        what: impl FnOnce(&T) -> String,
        change: impl FnOnce(&mut Model, &Settings, OffsetDateTime) -> Result<T, ModelError>,
    ) -> Result<T, ServiceError> {
        // A change whose deadline has passed (in the kernel's clock too) is reverted first:
        // no request acts on a pending change the kernel has already fallen back from.
        self.revert_if_due();
        let mut next = self.model.clone();
        let value = change(&mut next, &self.settings, OffsetDateTime::now_utc())?;
        // The dataplane holds the policy in force: its size needs no second computation.
        let before = summary(&self.model, self.dataplane.installed().len());
        self.commit(next)?;
        tracing::info!(
            target: "audit",
            before = %before,
            after = %summary(&self.model, self.dataplane.installed().len()),
            "{}",
            what(&value)
        );
        Ok(value)
    }

    /// Creates an allowlist.
    pub fn create(&mut self, input: AllowlistInput) -> Result<Allowlist, ServiceError> {
        self.transact(
            |list: &Allowlist| {
                format!(
                    "created allowlist {} ({:?}) with {} entries",
                    list.id,
                    list.name,
                    list.entries.len()
                )
            },
            |model, settings, now| model.create(input, now, settings, &mut new_id).cloned(),
        )
    }

    /// Replaces an allowlist.
    pub fn replace(
        &mut self,
        id: &str,
        input: AllowlistInput,
        if_match: Option<u64>,
    ) -> Result<Allowlist, ServiceError> {
        self.transact(
            |list: &Allowlist| {
                format!(
                    "replaced allowlist {} ({:?}): now {} entries, version {}",
                    list.id,
                    list.name,
                    list.entries.len(),
                    list.version
                )
            },
            |model, settings, now| {
                model
                    .replace(id, input, if_match, now, settings, &mut new_id)
                    .cloned()
            },
        )
    }

    /// Deletes an allowlist.
    pub fn delete(&mut self, id: &str, if_match: Option<u64>) -> Result<Allowlist, ServiceError> {
        self.transact(
            |list: &Allowlist| format!("deleted allowlist {} ({:?})", list.id, list.name),
            |model, _, _| model.delete(id, if_match),
        )
    }

    /// Adds entries to an allowlist.
    pub fn add_entries(
        &mut self,
        id: &str,
        input: EntriesInput,
    ) -> Result<Vec<Entry>, ServiceError> {
        self.transact(
            |added: &Vec<Entry>| format!("added {} entries to allowlist {id}", added.len()),
            |model, settings, now| model.add_entries(id, input, now, settings, &mut new_id),
        )
    }

    /// Removes one entry.
    pub fn remove_entry(
        &mut self,
        id: &str,
        entry_id: &str,
        if_match: Option<u64>,
    ) -> Result<Entry, ServiceError> {
        self.transact(
            |entry: &Entry| {
                format!(
                    "removed entry {} ({}) from allowlist {id}",
                    entry.id, entry.cidr
                )
            },
            |model, settings, now| model.remove_entry(id, entry_id, if_match, now, settings),
        )
    }

    /// Enables allowlists, guarding `client_ip` and established sessions to protected ports.
    pub fn enable(
        &mut self,
        ids: &[String],
        client_ip: Option<IpAddr>,
        force: bool,
    ) -> Result<(), ServiceError> {
        let mut guarded = if self.model.enforcing() || force {
            Vec::new()
        } else {
            host::established_inbound_sources(&self.protect_ports).map_err(ServiceError::Host)?
        };
        guarded.extend(client_ip);
        self.transact(
            |_| format!("enabled {ids:?}{}", if force { " (forced)" } else { "" }),
            |model, settings, now| model.enable(ids, &guarded, force, now, settings),
        )
    }

    /// Disables allowlists.
    pub fn disable(&mut self, ids: &[String]) -> Result<(), ServiceError> {
        self.transact(
            |_| format!("disabled {ids:?}"),
            |model, settings, now| model.disable(ids, now, settings),
        )
    }

    /// Changes the protected ports.
    pub fn set_scopes(&mut self, scopes: BTreeSet<PortScope>) -> Result<(), ServiceError> {
        let shown: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        self.transact(
            |_| format!("set the protected ports to {shown:?}"),
            |model, settings, now| model.set_scopes(scopes, now, settings),
        )
    }

    /// Acknowledges the pending change.
    pub fn acknowledge(&mut self) -> Result<Pending, ServiceError> {
        self.transact(
            |pending: &Pending| {
                format!(
                    "acknowledged the {:?} of {:?}",
                    pending.action, pending.allowlist_ids
                )
            },
            |model, settings, now| model.acknowledge(now, settings),
        )
    }

    /// Moves the clock the program notes last hits with (every 100 ms).
    pub fn tick_clock(&mut self) -> Result<(), DataplaneError> {
        self.dataplane.tick_clock()
    }

    /// Reverts the pending change if its time has come, or if the kernel has already fallen
    /// back from it (its clock decides: the wall clock may have stepped). The kernel reverts
    /// by itself at the deadline, so the model follows whether or not the state can be saved
    /// then: a failed save is logged once and retried with backoff ([`Service::retry_save`]),
    /// and [`Service::unsaved`] says so meanwhile.
    pub fn revert_if_due(&mut self) {
        let now = OffsetDateTime::now_utc();
        let due = self
            .model
            .pending()
            .is_some_and(|pending| pending.revert_at <= now || self.dataplane.fell_back());
        if !due {
            return;
        }
        let before = summary(&self.model, self.dataplane.installed().len());
        let Some(reverted) = self.model.revert_now(now) else {
            return;
        };
        if let Err(err) = self.sync_kernel() {
            tracing::error!(
                error = %chain(&err),
                "writing the reverted policy to the kernel (it falls back by itself at the deadline)"
            );
        }
        self.save_or_retry_later();
        self.reverts += 1;
        tracing::warn!(
            action = ?reverted.action,
            allowlists = ?reverted.allowlist_ids,
            "not acknowledged in time: reverted"
        );
        tracing::info!(
            target: "audit",
            before = %before,
            after = %summary(&self.model, self.dataplane.installed().len()),
            "reverted the unacknowledged {:?} of {:?}",
            reverted.action,
            reverted.allowlist_ids
        );
    }

    /// Saves the model; on failure, logs it (the first time) and schedules a retry.
    fn save_or_retry_later(&mut self) {
        match self.store.save(&self.model) {
            Ok(()) => {
                if let Some(failure) = self.unsaved.take() {
                    tracing::info!(attempts = failure.attempts, "the state is saved again");
                }
            }
            Err(err) => {
                let cause = chain(&err);
                let failure = self.unsaved.get_or_insert_with(|| {
                    tracing::error!(
                        error = %cause,
                        "saving the state failed; the kernel and the API show the reverted \
                         state, and the save is retried with backoff"
                    );
                    SaveFailure {
                        cause: cause.clone(),
                        since: OffsetDateTime::now_utc(),
                        attempts: 0,
                        next_attempt: std::time::Instant::now(),
                    }
                });
                failure.attempts += 1;
                failure.cause = cause;
                let backoff = Duration::from_secs(1 << failure.attempts.min(6)).min(SAVE_RETRY_MAX);
                failure.next_attempt = std::time::Instant::now() + backoff;
            }
        }
    }

    /// Retries a failed save when its backoff has passed.
    pub fn retry_save(&mut self) {
        if self
            .unsaved
            .as_ref()
            .is_some_and(|failure| std::time::Instant::now() >= failure.next_attempt)
        {
            self.save_or_retry_later();
        }
    }

    /// The state in memory (and in the kernel) that could not be saved yet, and why.
    pub fn unsaved(&self) -> Option<&SaveFailure> {
        self.unsaved.as_ref()
    }

    /// Changes reverted because they were not acknowledged in time, since the daemon started.
    pub fn reverts(&self) -> u64 {
        self.reverts
    }

    /// The program's mode now: `off` when not enforcing, else `enforce` or `monitor`.
    pub fn mode_name(&self) -> &'static str {
        match (self.model.enforcing(), self.enforce_mode) {
            (false, _) => "off",
            (true, Mode::Monitor) => "monitor",
            (true, _) => "enforce",
        }
    }

    /// The packet counters of each interface, then of the others together.
    pub fn interface_counters(
        &self,
    ) -> Result<Vec<(String, crate::dataplane::Counters)>, DataplaneError> {
        self.dataplane.interface_counters()
    }

    /// The packet counters.
    pub fn counters(&self) -> Result<crate::dataplane::Counters, DataplaneError> {
        self.dataplane.counters()
    }

    /// Hits and the time of the last hit of each entry of allowlist `id`, in entry order.
    pub fn entry_use(&self, id: &str) -> Result<Vec<EntryUse>, ServiceError> {
        let now = OffsetDateTime::now_utc();
        self.model
            .allowlist(id)?
            .entries
            .iter()
            .map(|entry| {
                let used = self.dataplane.rule_use(entry.rule)?;
                Ok(EntryUse {
                    hits: used.hits,
                    last_hit: used.last_hit_ago.map(|ago| now - ago),
                })
            })
            .collect()
    }

    /// The sources refused most often (or that would be, in monitor mode) among those last
    /// seen within `window`: at most `limit`, busiest first.
    pub fn top(&self, window: Duration, limit: usize) -> Result<Top, ServiceError> {
        let (noted, sample) = self.dataplane.top_sources()?;
        let now = OffsetDateTime::now_utc();
        let mut sources: Vec<TopSource> = noted
            .into_iter()
            .filter(|source| source.last_seen_ago <= window)
            .map(|source| TopSource {
                address: source.address,
                packets: source.noted.saturating_mul(u64::from(sample.max(1))),
                last_seen: crate::model::rfc3339(now - source.last_seen_ago),
            })
            .collect();
        sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.address.cmp(&b.address)));
        sources.truncate(limit);
        Ok(Top {
            sample,
            window_seconds: window.as_secs(),
            sources,
        })
    }

    /// Packet counters and hits per entry.
    pub fn stats(&self) -> Result<Stats, ServiceError> {
        let counters = self.dataplane.counters()?;
        let mut entries = Vec::new();
        for list in self.model.allowlists() {
            for entry in &list.entries {
                entries.push(EntryHits {
                    allowlist_id: list.id.clone(),
                    entry_id: entry.id.clone(),
                    cidr: entry.cidr,
                    hits: self.dataplane.rule_hits(entry.rule)?,
                });
            }
        }
        let always_allow = self
            .model
            .always_allow()
            .iter()
            .map(|(cidr, rule)| {
                Ok(AlwaysAllowHits {
                    cidr: *cidr,
                    hits: self.dataplane.rule_hits(*rule)?,
                })
            })
            .collect::<Result<_, DataplaneError>>()?;
        Ok(Stats {
            counters: Counter::ALL
                .iter()
                .map(|c| (c.name(), counters.get(*c)))
                .collect(),
            entries,
            always_allow,
            flows: self.dataplane.flow_stats()?.into(),
        })
    }
}

/// A one-line summary of what the kernel enforces, for logs.
fn describe(state: &KernelState) -> String {
    let one = |e: &Enforcement| {
        let mode = match e.mode {
            Mode::Off => "off",
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        };
        format!(
            "{mode} with {} prefixes and {} protected ports",
            e.policy.len(),
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
fn summary(model: &Model, prefixes: usize) -> String {
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
