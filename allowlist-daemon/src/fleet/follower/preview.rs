//! A fleet preview, as one host takes it up: read the release (checked as one to apply),
//! judge live traffic against it for what is left of the window, and write what it found
//! every few seconds, and once more when it ends.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::Follower;
use crate::fleet::preview::{FleetPreview, HostPreview};
use crate::fleet::store::{FleetError, FleetStore};
use crate::model::rfc3339;
use crate::service::{Candidate, Operator, Preview};

/// How often a host rewrites its report while its preview runs.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What a follower keeps of the fleet's previews.
#[derive(Default)]
pub(super) struct Previews {
    /// The preview the `preview` key asks for, as last read (`None`: none, or not one).
    asked: Option<FleetPreview>,
    /// The preview this host took up (release, start), whether it wrote its last report,
    /// and when it wrote one.
    taken: Option<((String, String), bool, Option<Instant>)>,
}

impl Previews {
    /// Takes in what the `preview` key holds now (`None`: deleted).
    pub(super) fn note(&mut self, value: Option<Vec<u8>>) {
        self.asked = value.as_deref().and_then(FleetPreview::read);
    }
}

/// What tells one fleet preview from another: its release and its start.
fn key_of(asked: &FleetPreview) -> (String, String) {
    (asked.release.clone(), asked.started_at.clone())
}

/// Whether `preview` judges release `id`.
fn judges(preview: &Preview, id: &str) -> bool {
    matches!(preview.candidate.as_ref(), Candidate::Release { release, .. } if release == id)
}

impl Follower {
    /// Takes up the preview the fleet asks for, if it names this host and this host has
    /// not yet; reports on the one it took up.
    pub(super) async fn follow_preview(
        &mut self,
        store: &mut FleetStore,
    ) -> Result<(), FleetError> {
        let Some(asked) = self.previews.asked.clone() else {
            return Ok(());
        };
        if !asked.includes(&self.config.host) {
            return Ok(());
        }
        let key = key_of(&asked);
        if self.previews.taken.as_ref().map(|(taken, ..)| taken) != Some(&key) {
            self.previews.taken = Some((key, false, None));
            let left = asked
                .ends_at()
                .map(|end| end - OffsetDateTime::now_utc())
                .and_then(|left| Duration::try_from(left).ok())
                .filter(|left| !left.is_zero());
            let Some(left) = left else {
                // Over before this host saw it (it started after, or restarted): what it
                // reported before, if anything, stands.
                self.previews.taken = Some((key_of(&asked), true, None));
                return Ok(());
            };
            if let Err(why) = self
                .start_fleet_preview(store, &asked.release, left)
                .await?
            {
                return self
                    .finish_preview(store, &asked.release, Some(why), None)
                    .await;
            }
        }
        let Some((_, done, reported)) = &self.previews.taken else {
            return Ok(());
        };
        if *done || reported.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return Ok(());
        }
        let preview = self
            .with_service(|service| Ok(service.preview()))
            .await
            .ok()
            .flatten();
        match preview.filter(|preview| judges(preview, &asked.release)) {
            Some(preview) if preview.ended.is_none() => {
                self.write_report(store, &asked.release, None, Some(&preview))
                    .await?;
                if let Some((_, _, reported)) = &mut self.previews.taken {
                    *reported = Some(Instant::now());
                }
                Ok(())
            }
            Some(preview) => {
                self.finish_preview(store, &asked.release, None, Some(preview))
                    .await
            }
            None => {
                let why = "a change or another preview took its place on this host".to_owned();
                self.finish_preview(store, &asked.release, Some(why), None)
                    .await
            }
        }
    }

    /// Starts judging live traffic against release `id` for `window`; `Ok(Err(why))` when
    /// this host cannot (a release it cannot read or apply, a change pending).
    async fn start_fleet_preview(
        &mut self,
        store: &mut FleetStore,
        id: &str,
        window: Duration,
    ) -> Result<Result<(), String>, FleetError> {
        let release = match self.read_release(store, id).await? {
            Ok(release) => release,
            Err(why) => return Ok(Err(why)),
        };
        let candidate = Candidate::Release {
            fleet: self.config.fleet.clone(),
            release: release.id,
            allowlists: release.allowlists,
        };
        let started = self
            .with_service(move |service| {
                // A newer fleet preview takes the place of the fleet's last one (an
                // operator's own preview on this host stays, and this one is refused).
                let fleet_running = service.preview().is_some_and(|running| {
                    running.ended.is_none()
                        && matches!(running.candidate.as_ref(), Candidate::Release { .. })
                });
                if fleet_running {
                    service.end_preview("a newer fleet preview took its place")?;
                }
                service.start_preview(candidate, window, Operator::default())
            })
            .await;
        Ok(match started {
            Ok(_) => {
                tracing::info!(
                    release = id,
                    seconds = window.as_secs(),
                    "previewing a fleet release on live traffic"
                );
                Ok(())
            }
            Err(err) => Err(crate::error_chain(&err)),
        })
    }

    /// Writes this host's last report of its preview of release `id`: why it could not run
    /// it, or what it found.
    async fn finish_preview(
        &mut self,
        store: &mut FleetStore,
        id: &str,
        error: Option<String>,
        preview: Option<Preview>,
    ) -> Result<(), FleetError> {
        if let Some(why) = &error {
            tracing::warn!(
                release = id,
                why,
                "no preview of the fleet release on this host"
            );
        }
        self.write_report(store, id, error, preview.as_ref())
            .await?;
        if let Some((_, done, _)) = &mut self.previews.taken {
            *done = true;
        }
        Ok(())
    }

    /// Writes this host's report of its preview of release `id`: why it could not run it,
    /// or what it found so far.
    async fn write_report(
        &self,
        store: &mut FleetStore,
        id: &str,
        error: Option<String>,
        preview: Option<&Preview>,
    ) -> Result<(), FleetError> {
        let report = HostPreview {
            host: self.config.host.clone(),
            release: id.to_owned(),
            error,
            report: preview.and_then(|preview| serde_json::to_value(preview.report()).ok()),
            updated_at: rfc3339(OffsetDateTime::now_utc()),
        };
        report.write(store).await
    }
}
