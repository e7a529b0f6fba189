//! The host's side of a fleet: follow the fleet's current release, apply it as one pending
//! change, acknowledge it once the fleet did, report under a lease; reconnect with jittered
//! backoff when etcd is away (enforcement is the kernel's and goes on, and the host's state
//! follows it), resume the watch where it was, and relist when that revision was compacted.
//!
//! What the fleet's keys hold is never trusted further than it proves: a release is read
//! under the id of its key, within this host's limits, checked against its digest and, with
//! `--fleet-trust`, against its signatures; an acknowledgement counts only when it names the
//! release and its digest (and is signed likewise). A release that fails any of this is
//! reported `failed` with the reason, and the host goes on following the fleet: the next
//! valid release applies without a restart.
//!
//! A release in waves ([`waves`]) applies here only once this host's wave is open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, WatchOptions};
use time::OffsetDateTime;

use super::config::FleetConfig;
use super::keys::Keys;
use super::signature::Trust;
use super::status::{FleetState, HostStatus};
use super::store::{FleetError, FleetStore};
use super::view::FleetView;
use crate::model::rfc3339;
use crate::service::{FleetSnapshot, Service, ServiceError};

mod preview;
mod step;
mod waves;

/// The host's status key lives this long without renewal: a dead host shows as gone then.
const LEASE_TTL_SECONDS: i64 = 10;
/// How often the lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often the status is written again when it did not change (its `updated_at` says the
/// host is alive, and a status someone deleted comes back): the lease alone keeps the key
/// meanwhile, so that a quiet fleet costs etcd keep-alives, not writes.
const REWRITE_EVERY: Duration = Duration::from_secs(60);
/// How often the follower looks at the clock (acknowledgement windows, reverts).
const TICK: Duration = Duration::from_millis(500);
/// The longest wait before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What one pass over the state decided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Standing {
    state: FleetState,
    reason: Option<String>,
    revert_at: Option<OffsetDateTime>,
}

/// The follower: runs until the daemon stops.
pub struct Follower {
    config: FleetConfig,
    service: Arc<Mutex<Service>>,
    view: Arc<Mutex<FleetView>>,
    keys: Keys,
    /// The fleet's current release, as last read.
    current: Option<String>,
    /// What each acknowledgement key holds, by release, as last read (judged when used).
    acks: BTreeMap<String, Vec<u8>>,
    /// The digest of each release this host read, by id.
    digests: BTreeMap<String, String>,
    /// The release this host could not apply, with why (tried again when offered again, or
    /// after a restart).
    failed: Option<(String, String)>,
    /// The release the operator offered this host again (`fleet reapply`), as last read.
    offered: Option<String>,
    /// The last revision seen: a new connection resumes watching after it.
    revision: Option<i64>,
    /// The rollouts of releases in waves, and how far they got.
    waves: waves::Waves,
    /// The fleet's previews, and the one this host took up.
    previews: preview::Previews,
}

impl Follower {
    /// A follower of `config`'s fleet, driving `service` and reporting in `view`.
    pub fn new(
        config: FleetConfig,
        service: Arc<Mutex<Service>>,
        view: Arc<Mutex<FleetView>>,
    ) -> Follower {
        Follower {
            keys: Keys::new(&config.fleet),
            config,
            service,
            view,
            current: None,
            acks: BTreeMap::new(),
            digests: BTreeMap::new(),
            failed: None,
            offered: None,
            revision: None,
            waves: waves::Waves::default(),
            previews: preview::Previews::default(),
        }
    }

    /// Follows the fleet for ever, reconnecting with jittered backoff; while etcd is away,
    /// the host's state follows what its kernel does (a pending release reverts at its
    /// deadline).
    pub async fn run(mut self) {
        if self.config.trust.is_none() {
            tracing::warn!(
                fleet = %self.config.fleet,
                "releases need no signature (no --fleet-trust): whoever can write to the \
                 fleet's etcd keys changes what this host enforces"
            );
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let err = match self.session().await {
                Ok(()) => continue,
                Err(err) => err,
            };
            let text = crate::error_chain(&err);
            let was_connected = self.show(|view| {
                let was = view.connected;
                view.connected = false;
                view.last_error = Some(text.clone());
                was
            });
            if was_connected {
                tracing::warn!(error = %text, "lost the fleet's etcd; enforcement goes on, reconnecting");
            }
            let until = Instant::now() + jitter(backoff);
            while Instant::now() < until {
                let snapshot = self.snapshot().await;
                let standing = self.standing_offline(&snapshot);
                self.status(&standing, snapshot.applied);
                tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Where the host stands while it cannot reach etcd: what its own state says, the
    /// kernel's revert at the deadline included.
    fn standing_offline(&self, snapshot: &FleetSnapshot) -> Standing {
        let current = self.current.as_deref();
        if snapshot.detached {
            return detached();
        }
        if let Some(pending) = &snapshot.pending {
            return Standing {
                state: FleetState::Pending,
                reason: Some(format!(
                    "release {} is pending and etcd cannot be reached: it reverts at its \
                     deadline unless acknowledged before",
                    pending.id
                )),
                revert_at: Some(pending.revert_at),
            };
        }
        let state = match current {
            Some(id) if snapshot.reverted.as_deref() == Some(id) => FleetState::Reverted,
            Some(id) if snapshot.applied.as_deref() == Some(id) => FleetState::Acknowledged,
            _ => FleetState::Waiting,
        };
        Standing {
            state,
            reason: Some("etcd cannot be reached; the host enforces its last policy".into()),
            revert_at: None,
        }
    }

    /// One connection: register, catch up, then follow the watch until something fails or
    /// the host is detached.
    async fn session(&mut self) -> Result<(), FleetError> {
        let mut store = FleetStore::connect(&self.config.etcd, &self.config.fleet).await?;
        let lease = store
            .client()
            .lease_grant(LEASE_TTL_SECONDS, None)
            .await
            .map_err(etcd("granting the status lease"))?
            .id();
        let (mut keeper, mut renewals) = store
            .client()
            .lease_keep_alive(lease)
            .await
            .map_err(etcd("keeping the status lease"))?;
        store.join(&self.config.host).await?;
        self.show(|view| {
            view.connected = true;
            view.last_error = None;
        });
        tracing::info!(fleet = %self.config.fleet, host = %self.config.host, "connected to the fleet");
        let mut watch = match self.revision {
            // Resume where the last connection stopped: nothing published meanwhile is lost.
            Some(revision) => self.watch(&mut store, revision + 1).await?,
            None => {
                let revision = self.relist(&mut store).await?;
                self.watch(&mut store, revision + 1).await?
            }
        };
        let mut tick = tokio::time::interval(TICK);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        let mut rewrite = tokio::time::interval(REWRITE_EVERY);
        let mut reported: Option<HostStatus> = None;
        loop {
            tokio::select! {
                message = watch.message() => {
                    let response = message
                        .map_err(etcd("watching the fleet"))?
                        .ok_or_else(|| FleetError::Etcd {
                            action: "watching the fleet".into(),
                            source: etcd_client::Error::WatchError("the watch ended".into()),
                        })?;
                    if response.compact_revision() > 0 || response.canceled() {
                        tracing::warn!(
                            compacted = response.compact_revision(),
                            "the watch's revision was compacted: relisting the fleet"
                        );
                        let revision = self.relist(&mut store).await?;
                        watch = self.watch(&mut store, revision + 1).await?;
                        continue;
                    }
                    if let Some(header) = response.header() {
                        self.revision = Some(header.revision());
                    }
                    for event in response.events() {
                        if let Some(kv) = event.kv() {
                            self.note(kv.key(), kv.value(), event.event_type());
                        }
                    }
                }
                _ = tick.tick() => {}
                _ = renew.tick() => {
                    keeper.keep_alive().await.map_err(etcd("renewing the status lease"))?;
                    renewals.message().await.map_err(etcd("renewing the status lease"))?;
                }
                _ = rewrite.tick() => reported = None,
            }
            self.show(|view| view.last_sync = Some(rfc3339(OffsetDateTime::now_utc())));
            let snapshot = self.snapshot().await;
            let snapshot_detached = snapshot.detached;
            let standing = match snapshot.detached {
                // Still reported, so that `fleet status` says so.
                true => detached(),
                false => self.step(&mut store, snapshot).await?,
            };
            let applied = self.snapshot().await.applied;
            let status = self.status(&standing, applied);
            if reported.as_ref() != Some(&status) {
                let written = HostStatus {
                    updated_at: rfc3339(OffsetDateTime::now_utc()),
                    ..status.clone()
                };
                store.report(&written, lease).await?;
                reported = Some(status);
            }
            self.drive(&mut store, &standing).await?;
            if !snapshot_detached {
                self.follow_preview(&mut store).await?;
            }
        }
    }

    /// Reads the fleet's current release, its acknowledgements, rollouts and this host's
    /// offer afresh;
    /// returns the revision read at.
    async fn relist(&mut self, store: &mut FleetStore) -> Result<i64, FleetError> {
        let (acks, revision) = listed(store, &self.keys.ack(""), true).await?;
        self.acks = acks;
        let (offered, _) = listed(store, &self.keys.reapply(&self.config.host), false).await?;
        self.offered = offered
            .into_values()
            .next()
            .map(|value| String::from_utf8_lossy(&value).into_owned());
        let (rollouts, _) = listed(store, &self.keys.rollout(""), true).await?;
        self.waves.relisted(rollouts);
        let (preview, _) = listed(store, &self.keys.preview(), false).await?;
        self.previews.note(preview.into_values().next());
        self.current = store.current().await?.map(|(id, _)| id);
        self.revision = Some(revision);
        Ok(revision)
    }

    /// Watches, from revision `from`, what the follower acts on: the current release, the
    /// acknowledgements, the rollouts' progress and offers (not the releases' content, which
    /// it reads when it needs it).
    async fn watch(
        &mut self,
        store: &mut FleetStore,
        from: i64,
    ) -> Result<etcd_client::WatchStream, FleetError> {
        // (key, whether it is a prefix, what it is)
        let watched = [
            (self.keys.current(), false, "the fleet"),
            (self.keys.ack(""), true, "the fleet's acknowledgements"),
            (
                self.keys.reapply(&self.config.host),
                false,
                "the host's offers",
            ),
            (self.keys.rollout(""), true, "the fleet's rollouts"),
            (self.keys.preview(), false, "the fleet's previews"),
        ];
        let options = |prefix: bool| {
            let options = WatchOptions::new().with_start_revision(from);
            Some(if prefix {
                options.with_prefix()
            } else {
                options
            })
        };
        let [(key, prefix, _), rest @ ..] = watched;
        let mut watch = store
            .client()
            .watch(key, options(prefix))
            .await
            .map_err(etcd("watching the fleet"))?;
        for (key, prefix, what) in rest {
            watch
                .watch(key, options(prefix))
                .await
                .map_err(|source| FleetError::Etcd {
                    action: format!("watching {what}"),
                    source,
                })?;
        }
        Ok(watch)
    }

    /// Takes in one watched change: the current release, an acknowledgement, an offer, or a
    /// rollout's progress.
    fn note(&mut self, key: &[u8], value: &[u8], kind: EventType) {
        let key = String::from_utf8_lossy(key);
        let value = (kind == EventType::Put).then(|| String::from_utf8_lossy(value).into_owned());
        if key == self.keys.current() {
            // Written again (a release signed once more): a release refused is read again.
            if self.failed.as_ref().map(|(id, _)| id) == value.as_ref() {
                self.failed = None;
            }
            self.current = value;
        } else if key == self.keys.reapply(&self.config.host) {
            self.offered = value;
        } else if let Some(id) = key.strip_prefix(&self.keys.ack("")) {
            match value {
                Some(value) => self.acks.insert(id.to_owned(), value.into_bytes()),
                None => self.acks.remove(id),
            };
        } else if key == self.keys.preview() {
            self.previews.note(value.map(String::into_bytes));
        } else if let Some(id) = key.strip_prefix(&self.keys.rollout("")) {
            self.waves.note_progress(id, value.map(String::into_bytes));
        }
    }

    /// The keys this host trusts, read afresh (keys are added and revoked by editing the
    /// file); `Err` with why when the file cannot be used now.
    fn trust(&self) -> Result<Option<Trust>, String> {
        match &self.config.trust {
            None => Ok(None),
            Some((path, threshold)) => Trust::read(path, *threshold)
                .map(Some)
                .map_err(|err| crate::error_chain(&err)),
        }
    }

    /// The status to publish for `standing` (its time left to the writer), and the view to
    /// show.
    fn status(&self, standing: &Standing, applied: Option<String>) -> HostStatus {
        let status = HostStatus {
            host: self.config.host.clone(),
            state: standing.state,
            release: self.current.clone(),
            applied,
            reason: standing.reason.clone(),
            revert_at: standing.revert_at.map(rfc3339),
            updated_at: String::new(),
        };
        self.show(|view| {
            view.state = status.state;
            view.release = status.release.clone();
            view.applied = status.applied.clone();
            view.reason = status.reason.clone();
            view.revert_at = status.revert_at.clone();
        });
        status
    }

    async fn snapshot(&self) -> FleetSnapshot {
        let service = self.service.clone();
        tokio::task::spawn_blocking(move || {
            service
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .fleet_snapshot()
        })
        .await
        // The worker died: act as if a local change were pending (do nothing).
        .unwrap_or(FleetSnapshot {
            detached: false,
            applied: None,
            reverted: None,
            pending: None,
            local_pending: true,
        })
    }

    /// Runs `operation` on the service off the async workers.
    async fn with_service<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Service) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let service = self.service.clone();
        tokio::task::spawn_blocking(move || {
            operation(&mut service.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .unwrap_or_else(|err| Err(ServiceError::Task(err.to_string())))
    }

    /// Changes the view; returns what `change` returns.
    fn show<T>(&self, change: impl FnOnce(&mut FleetView) -> T) -> T {
        change(&mut self.view.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What the keys under `prefix` (or the key itself, unless `is_prefix`) hold, by what
/// follows the prefix, and the revision read at.
async fn listed(
    store: &mut FleetStore,
    prefix: &str,
    is_prefix: bool,
) -> Result<(BTreeMap<String, Vec<u8>>, i64), FleetError> {
    let options = is_prefix.then(|| GetOptions::new().with_prefix());
    let response = store
        .client()
        .get(prefix, options)
        .await
        .map_err(|source| FleetError::Etcd {
            action: format!("reading {prefix}"),
            source,
        })?;
    let revision = response.header().map_or(0, |h| h.revision());
    let values = response
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key());
            let rest = key.strip_prefix(prefix)?;
            Some((rest.to_owned(), kv.value().to_vec()))
        })
        .collect();
    Ok((values, revision))
}

fn etcd(action: &'static str) -> impl FnOnce(etcd_client::Error) -> FleetError {
    move |source| FleetError::Etcd {
        action: action.into(),
        source,
    }
}

/// The standing of a host the operator detached from its fleet.
fn detached() -> Standing {
    Standing {
        state: FleetState::Detached,
        reason: Some("detached by the operator (allowlistctl fleet attach)".into()),
        revert_at: None,
    }
}

/// `wait`, 20 % shorter or longer at random: hosts that lost etcd together do not all come
/// back at the same moment.
fn jitter(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    wait.mul_f64(0.8 + 0.4 * f64::from(byte[0]) / 255.0)
}
