//! One step of the follower: decide and do what the fleet's current release asks of this
//! host now (apply it when its wave is open, acknowledge it once the fleet did, say why it
//! waits, failed or reverted).

use time::OffsetDateTime;

use super::{Follower, Standing};
use crate::fleet::acknowledgement::Acknowledgement;
use crate::fleet::release::Release;
use crate::fleet::signature::release_message;
use crate::fleet::status::FleetState;
use crate::fleet::store::{FleetError, FleetStore};
use crate::model::ModelError;
use crate::service::{FleetSnapshot, PendingRelease, ServiceError};

fn standing(
    state: FleetState,
    reason: Option<String>,
    revert_at: Option<OffsetDateTime>,
) -> Standing {
    Standing {
        state,
        reason,
        revert_at,
    }
}

impl Follower {
    /// Decides and does what the current release asks of this host now.
    pub(super) async fn step(
        &mut self,
        store: &mut FleetStore,
        snapshot: FleetSnapshot,
    ) -> Result<Standing, FleetError> {
        let Some(current) = self.current.clone() else {
            return Ok(standing(
                FleetState::Waiting,
                Some("no release published yet".into()),
                None,
            ));
        };
        if let Some(pending) = snapshot.pending {
            return self.step_pending(store, pending, &current).await;
        }
        if snapshot.applied.as_deref() == Some(current.as_str()) {
            return Ok(standing(FleetState::Acknowledged, None, None));
        }
        if self.offered.as_deref() == Some(current.as_str()) {
            self.take_offer(store, &current).await?;
            let snapshot = self.snapshot().await;
            if snapshot.reverted.as_deref() == Some(current.as_str()) {
                return Ok(standing(
                    FleetState::Reverted,
                    Some("offered again, but the host could not take it".into()),
                    None,
                ));
            }
        } else if snapshot.reverted.as_deref() == Some(current.as_str()) {
            let reason = match self.acknowledged(store, &current).await? {
                Ok(true) => format!(
                    "the fleet acknowledged it after this host had reverted it at its deadline \
                     (it could not hear the acknowledgement in time): offer it again with \
                     `allowlistctl fleet reapply {}`",
                    self.config.host
                ),
                _ => "nobody acknowledged it in time: reverted to the previous policy".into(),
            };
            return Ok(standing(FleetState::Reverted, Some(reason), None));
        }
        if let Some((release, reason)) = &self.failed
            && *release == current
        {
            return Ok(standing(FleetState::Failed, Some(reason.clone()), None));
        }
        if snapshot.local_pending {
            let reason = "a local change is pending: the release waits for it".into();
            return Ok(standing(FleetState::Waiting, Some(reason), None));
        }
        if let Err(reason) = self.wave(store, &current).await? {
            return Ok(self.fail(&current, reason));
        }
        if let Some(why) = self.waves.holds(&current, &self.config.host) {
            return Ok(standing(FleetState::Waiting, Some(why), None));
        }
        self.show(|view| view.state = FleetState::Applying);
        let release = match self.read_release(store, &current).await? {
            Ok(release) => release,
            Err(reason) => return Ok(self.fail(&current, reason)),
        };
        let fleet = self.config.fleet.clone();
        match self
            .with_service(move |s| s.apply_release(&fleet, &release.id, release.allowlists))
            .await
        {
            Ok(report) => {
                tracing::info!(release = %current, changes = %format!("{report:?}"), "applied a fleet release; pending until the fleet acknowledges it");
                let snapshot = self.snapshot().await;
                Ok(standing(
                    FleetState::Pending,
                    None,
                    snapshot.pending.map(|pending| pending.revert_at),
                ))
            }
            Err(ServiceError::Refused(ModelError::ChangePending { .. })) => Ok(standing(
                FleetState::Waiting,
                Some("a local change is pending: the release waits for it".into()),
                None,
            )),
            Err(err) => Ok(self.fail(&current, crate::error_chain(&err))),
        }
    }

    /// The step of a host with release `pending.id` pending (`current` is the fleet's):
    /// acknowledge it once the fleet did for this host's wave, or once its wave soaked.
    async fn step_pending(
        &mut self,
        store: &mut FleetStore,
        pending: PendingRelease,
        current: &str,
    ) -> Result<Standing, FleetError> {
        let now = OffsetDateTime::now_utc();
        let mut acknowledged = self.acknowledged(store, &pending.id).await?;
        if acknowledged != Ok(true)
            && now >= pending.acknowledge_after
            && let Some(why) = self.soaked(store, &pending).await?
        {
            tracing::info!(release = %pending.id, why, "release soaked in its wave");
            acknowledged = Ok(true);
        }
        if acknowledged == Ok(true) && now >= pending.acknowledge_after {
            let release = pending.id.clone();
            match self
                .with_service(move |s| s.acknowledge_release(&release))
                .await
            {
                Ok(_) => {
                    tracing::info!(release = %pending.id, "release acknowledged for the fleet")
                }
                Err(err) => {
                    tracing::warn!(release = %pending.id, error = %crate::error_chain(&err), "acknowledging the release")
                }
            }
            return Ok(standing(FleetState::Acknowledged, None, None));
        }
        let reason = match acknowledged {
            Err(why) => Some(format!(
                "{why}: not counted; it reverts unless acknowledged"
            )),
            Ok(_) if pending.id != current => Some(format!(
                "release {} is pending; {current} waits for it",
                pending.id
            )),
            Ok(_) => None,
        };
        Ok(standing(
            FleetState::Pending,
            reason,
            Some(pending.revert_at),
        ))
    }

    /// The digest of release `id`, from what this host read of it, else from its header.
    async fn digest(&mut self, store: &mut FleetStore, id: &str) -> Result<String, FleetError> {
        if let Some(digest) = self.digests.get(id) {
            return Ok(digest.clone());
        }
        let (header, _) = store.header(id).await?;
        self.digests.insert(id.to_owned(), header.sha256.clone());
        Ok(header.sha256)
    }

    /// Whether the fleet acknowledged release `id` for this host's wave, as this host judges
    /// what its key holds; `Err` with why an acknowledgement there does not count.
    pub(super) async fn acknowledged(
        &mut self,
        store: &mut FleetStore,
        id: &str,
    ) -> Result<Result<bool, String>, FleetError> {
        let Some(value) = self.acks.get(id).cloned() else {
            return Ok(Ok(false));
        };
        let digest = match self.digest(store, id).await {
            Ok(digest) => digest,
            Err(err) if err.is_content() => return Ok(Err(crate::error_chain(&err))),
            Err(err) => return Err(err),
        };
        let trust = match self.trust() {
            Ok(trust) => trust,
            Err(why) => return Ok(Err(why)),
        };
        let wave = match self.wave(store, id).await? {
            Ok(wave) => wave.unwrap_or(1),
            Err(why) => return Ok(Err(why)),
        };
        Ok(Acknowledgement::judge(
            &value,
            &self.config.fleet,
            (id, &digest),
            wave,
            trust.as_ref(),
        )
        .map(|_| true))
    }

    /// Release `id`, read within this host's limits and checked against its digest and, if
    /// this host trusts keys, its signatures; `Ok(Err(why))` when it is not one to apply.
    pub(super) async fn read_release(
        &mut self,
        store: &mut FleetStore,
        id: &str,
    ) -> Result<Result<Release, String>, FleetError> {
        let (release, header) = match store.release(id, self.config.max_release_bytes).await {
            Ok(read) => read,
            Err(err) if err.is_content() => return Ok(Err(crate::error_chain(&err))),
            Err(err) => return Err(err),
        };
        self.digests.insert(id.to_owned(), header.sha256.clone());
        let trust = match self.trust() {
            Ok(trust) => trust,
            Err(why) => return Ok(Err(why)),
        };
        if let Some(trust) = trust {
            let message = release_message(&self.config.fleet, id, &header.sha256);
            if let Err(why) = trust.check(&message, &header.signatures) {
                return Ok(Err(format!("release {id} is {why}")));
            }
        }
        Ok(Ok(release))
    }

    /// Notes that release `id` cannot be applied here, for `reason`: the host stays on its
    /// policy and says why.
    fn fail(&mut self, id: &str, reason: String) -> Standing {
        tracing::error!(release = %id, reason, "cannot apply the fleet release: staying on the previous policy");
        self.failed = Some((id.to_owned(), reason.clone()));
        standing(FleetState::Failed, Some(reason), None)
    }

    /// Takes the operator's offer of release `id` again: forgets that this host reverted it
    /// (or failed it), and removes the offer, which is used once.
    async fn take_offer(&mut self, store: &mut FleetStore, id: &str) -> Result<(), FleetError> {
        let release = id.to_owned();
        match self
            .with_service(move |s| s.offer_release_again(&release))
            .await
        {
            Ok(_) => tracing::info!(release = id, "release offered again: applying it"),
            Err(err) => {
                tracing::warn!(release = id, error = %crate::error_chain(&err), "taking the offer of a release")
            }
        }
        if self.failed.as_ref().is_some_and(|(failed, _)| failed == id) {
            self.failed = None;
        }
        store
            .client()
            .delete(self.keys.reapply(&self.config.host), None)
            .await
            .map_err(super::etcd("removing the host's offer"))?;
        self.offered = None;
        Ok(())
    }
}
