//! Releases in waves, as one host follows them: it applies a release only once its wave is
//! open, counts only an acknowledgement of its wave, acknowledges by itself after the soak
//! time when every host of its wave is healthy, halts the rollout when it reverts or fails
//! the release, and opens the next wave when every host of its own acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Follower, Standing};
use crate::fleet::rollout::{Halt, Progress, Rollout};
use crate::fleet::status::{FleetState, HostStatus};
use crate::fleet::store::{FleetError, FleetStore};
use crate::model::rfc3339;
use crate::service::PendingRelease;

/// How often, at most, a host reads every host's status to judge its wave, per ten hosts
/// of the wave: the hosts of a wave together read the fleet's statuses about ten times a
/// second whatever its size, and the first to see the wave done opens the next.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What a follower keeps of releases in waves.
#[derive(Default)]
pub(super) struct Waves {
    /// What each release's `rollout/<id>` key holds, as last read.
    progress: BTreeMap<String, Progress>,
    /// The rollout of each release whose header this host read, by id (`None`: every host
    /// at once).
    rollouts: BTreeMap<String, Option<Rollout>>,
    /// When this host last read every host's status for its wave.
    looked: Option<Instant>,
}

impl Waves {
    /// Takes in what release `id`'s progress key holds now (`None`: deleted), read once.
    pub(super) fn note_progress(&mut self, id: &str, value: Option<Vec<u8>>) {
        match value {
            Some(value) => self
                .progress
                .insert(id.to_owned(), Progress::read(Some(&value))),
            None => self.progress.remove(id),
        };
    }

    /// Replaces every progress known by `listed`, as read afresh.
    pub(super) fn relisted(&mut self, listed: BTreeMap<String, Vec<u8>>) {
        self.progress = listed
            .into_iter()
            .map(|(id, value)| (id, Progress::read(Some(&value))))
            .collect();
    }

    /// How far release `id`'s rollout got, as last read.
    fn progress(&self, id: &str) -> Progress {
        self.progress
            .get(id)
            .cloned()
            .unwrap_or_else(|| Progress::read(None))
    }

    /// Why `host` does not apply release `id` yet (`None`: it may), as far as this host
    /// knows its rollout.
    pub(super) fn holds(&self, id: &str, host: &str) -> Option<String> {
        let rollout = self.rollouts.get(id)?.as_ref()?;
        rollout.holds(host, &self.progress(id))
    }

    /// Whether it is time to read every host's status again, for a host of a wave of
    /// `wave_size` hosts.
    fn due(&mut self, wave_size: usize) -> bool {
        let every =
            LOOK_EVERY.saturating_mul(u32::try_from(wave_size / 10).unwrap_or(u32::MAX).max(1));
        let due = self
            .looked
            .is_none_or(|at| at.elapsed() >= super::jitter(every));
        if due {
            self.looked = Some(Instant::now());
        }
        due
    }
}

/// Whether every host of `wave` of `rollout`, among `hosts`, reports release `id` in one of
/// `states`; a host its operator detached from the fleet follows no rollout, and is not
/// waited for.
fn whole_wave(
    rollout: &Rollout,
    wave: usize,
    hosts: &[(String, Option<HostStatus>)],
    id: &str,
    states: &[FleetState],
) -> bool {
    let statuses: HashMap<&str, &HostStatus> = hosts
        .iter()
        .filter_map(|(host, status)| Some((host.as_str(), status.as_ref()?)))
        .collect();
    let members = hosts.iter().map(|(host, _)| host.as_str());
    rollout.hosts_of(wave, members).into_iter().all(|host| {
        statuses.get(host).is_some_and(|status| {
            status.state == FleetState::Detached
                || (status.release.as_deref() == Some(id) && states.contains(&status.state))
        })
    })
}

impl Follower {
    /// This host's wave in release `id`'s rollout (`None`: no waves), from its header, read
    /// when this host has not yet (a header, not the release: hosts of later waves read the
    /// release only when their wave opens); `Ok(Err(why))` when it cannot be read.
    pub(super) async fn wave(
        &mut self,
        store: &mut FleetStore,
        id: &str,
    ) -> Result<Result<Option<usize>, String>, FleetError> {
        if !self.waves.rollouts.contains_key(id) {
            match store.header(id).await {
                Ok((header, _)) => {
                    self.waves.rollouts.insert(id.to_owned(), header.rollout);
                }
                Err(err) if err.is_content() => return Ok(Err(crate::error_chain(&err))),
                Err(err) => return Err(err),
            }
        }
        let rollout = self.waves.rollouts.get(id).and_then(Option::as_ref);
        Ok(Ok(rollout.map(|rollout| rollout.wave_of(&self.config.host))))
    }

    /// Whether release `pending` soaked: its rollout names a soak time, it has been in
    /// force that long here, the rollout did not halt, and every host of this host's wave
    /// has it pending or acknowledged (connected, not reverted). `Some(why)` when it did.
    pub(super) async fn soaked(
        &mut self,
        store: &mut FleetStore,
        pending: &PendingRelease,
    ) -> Result<Option<String>, FleetError> {
        if self.current.as_deref() != Some(pending.id.as_str()) {
            return Ok(None);
        }
        let Ok(Some(wave)) = self.wave(store, &pending.id).await? else {
            return Ok(None);
        };
        let Some(Some(rollout)) = self.waves.rollouts.get(&pending.id) else {
            return Ok(None);
        };
        let Some(soak) = rollout.soak_seconds else {
            return Ok(None);
        };
        let soaked_at = pending.applied_at + Duration::from_secs(soak);
        if OffsetDateTime::now_utc() < soaked_at
            || self.waves.progress(&pending.id).halted.is_some()
            || !self
                .waves
                .due(rollout.waves.get(wave - 1).map_or(1, Vec::len))
        {
            return Ok(None);
        }
        let hosts = store.hosts().await?;
        let Some(Some(rollout)) = self.waves.rollouts.get(&pending.id) else {
            return Ok(None);
        };
        let healthy = [FleetState::Pending, FleetState::Acknowledged];
        Ok(
            whole_wave(rollout, wave, &hosts, &pending.id, &healthy).then(|| {
                format!("every host of wave {wave} kept it {soak} s, connected and not reverted")
            }),
        )
    }

    /// What this host owes the current release's rollout, given where it stands now (its
    /// status already reported): halt it when it reverted or failed the release in an open
    /// wave; open the next wave when every host of its own acknowledged it.
    pub(super) async fn drive(
        &mut self,
        store: &mut FleetStore,
        standing: &Standing,
    ) -> Result<(), FleetError> {
        let Some(current) = self.current.clone() else {
            return Ok(());
        };
        let Some(Some(rollout)) = self.waves.rollouts.get(&current) else {
            return Ok(());
        };
        let (wave, count) = (rollout.wave_of(&self.config.host), rollout.count());
        let progress = self.waves.progress(&current);
        if progress.halted.is_some() || wave > progress.open {
            return Ok(());
        }
        let next = match standing.state {
            FleetState::Reverted | FleetState::Failed => Progress {
                open: progress.open,
                halted: Some(Halt {
                    wave,
                    host: self.config.host.clone(),
                    reason: standing
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", standing.state).to_lowercase()),
                    at: rfc3339(OffsetDateTime::now_utc()),
                }),
            },
            FleetState::Acknowledged if wave == progress.open && wave < count => {
                let wave_size = rollout.waves.get(wave - 1).map_or(1, Vec::len);
                if !self.waves.due(wave_size) {
                    return Ok(());
                }
                let hosts = store.hosts().await?;
                let Some(Some(rollout)) = self.waves.rollouts.get(&current) else {
                    return Ok(());
                };
                let acknowledged = [FleetState::Acknowledged];
                if !whole_wave(rollout, wave, &hosts, &current, &acknowledged) {
                    return Ok(());
                }
                Progress {
                    open: wave + 1,
                    halted: None,
                }
            }
            _ => return Ok(()),
        };
        let (fresh, revision) = store.progress(&current).await?;
        if fresh != progress {
            // Another host moved it meanwhile; the watch brings what it did.
            return Ok(());
        }
        match store.set_progress(&current, &next, revision).await {
            Ok(()) => match &next.halted {
                Some(halt) => {
                    tracing::warn!(release = %current, wave, reason = %halt.reason, "halted the release's rollout: no later wave applies it")
                }
                None => {
                    tracing::info!(release = %current, wave = next.open, "every host of wave {wave} acknowledged the release: the next wave starts")
                }
            },
            Err(FleetError::Raced(_)) => {}
            Err(err) => return Err(err),
        }
        Ok(())
    }
}
