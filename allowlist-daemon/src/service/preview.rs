//! Previews: a candidate (the state after an enable, a disable, a change of the protected
//! ports, a list's replacement or a policy file applied) judged on live traffic beside the
//! policy in force, without changing a verdict, for a window; then the
//! sources it would drop that pass today, those it would let in, and the guarded addresses
//! it would cut off. One at a time; enabling a change ends it (as do its window, a `DELETE`,
//! the tables made again at another size, and a restart of the daemon), while changes no
//! person makes (feeds, expiry) leave it running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::lockout::Operator;
use super::policy_cache::PolicyCache;
use super::setup::RandomIds;
use super::{Service, ServiceError};
use crate::dataplane::{PreviewSource, Would};
use crate::model::{AllowlistInput, DesiredList, GuardedAddress, ModelError, Scope};
use crate::policy::PortScope;

/// The longest window of a preview.
pub const MAX_PREVIEW_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What a preview judges: the state after a change.
#[derive(Debug, Clone)]
pub enum Candidate {
    /// These lists enabled.
    Enable(Vec<String>),
    /// These lists disabled.
    Disable(Vec<String>),
    /// Only these ports protected (none: every port).
    Scopes(BTreeSet<PortScope>),
    /// A list replaced, as `PUT /v1/allowlists/{id}` would.
    Replace {
        /// The list's id.
        id: String,
        /// What replaces it.
        list: AllowlistInput,
    },
    /// A policy file applied, as `POST /v1/apply` would.
    Apply {
        /// The lists it declares.
        allowlists: Vec<DesiredList>,
        /// Whether it deletes the host's own lists it does not name.
        prune: bool,
    },
    /// A fleet release applied, as the host's follower would (`fleet publish --preview`).
    Release {
        /// The fleet.
        fleet: String,
        /// The release.
        release: String,
        /// The lists it declares.
        allowlists: Vec<DesiredList>,
    },
}

/// A preview, running or ended.
#[derive(Debug, Clone)]
pub struct Preview {
    /// What it judges (shared: a list's replacement may hold a million entries, and the
    /// report is copied at every read).
    pub candidate: Arc<Candidate>,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When its window ends.
    pub ends_at: OffsetDateTime,
    /// The guarded addresses (the operator's, recent operators', sources of sessions to
    /// protected ports) that pass today and that the candidate would cut off.
    pub would_cut: Vec<GuardedAddress>,
    /// When and why it ended; `None` while it runs.
    pub ended: Option<(OffsetDateTime, &'static str)>,
    /// The sources counted, as last read (when it ended: for good).
    pub sources: Vec<PreviewSource>,
}

impl Preview {
    /// The sources of `would`, busiest first.
    pub fn sources(&self, would: Would) -> impl Iterator<Item = &PreviewSource> {
        self.sources
            .iter()
            .filter(move |source| source.would == would)
    }
}

impl Service {
    /// Starts judging every packet against `candidate` for `window` as well; refused while
    /// another preview runs, and for a candidate that the change itself would refuse (an
    /// unknown list, one already enabled, a change pending, an invalid entry).
    pub fn start_preview(
        &mut self,
        candidate: Candidate,
        window: Duration,
        operator: Operator,
    ) -> Result<Preview, ServiceError> {
        if let Some(running) = self.preview.as_ref().filter(|p| p.ended.is_none()) {
            return Err(ServiceError::Refused(ModelError::PreviewRunning {
                started_at: crate::model::rfc3339(running.started_at),
            }));
        }
        let now = OffsetDateTime::now_utc();
        let mut model = self.model.clone();
        let settings = &self.settings;
        match &candidate {
            Candidate::Enable(ids) => model.enable(ids, &[], true, now, settings)?,
            Candidate::Disable(ids) => model.disable(ids, now, settings)?,
            Candidate::Scopes(scopes) => model.set_scopes(scopes.clone(), now, settings)?,
            Candidate::Replace { id, list } => {
                model.replace(id, list.clone(), None, now, settings, &mut RandomIds)?;
            }
            Candidate::Apply { allowlists, prune } => {
                // The guarded addresses are reported below, not refused.
                let scope = Scope::Local { prune: *prune };
                let desired = allowlists.clone();
                model.apply(desired, scope, &[], false, now, settings, &mut RandomIds)?;
            }
            Candidate::Release {
                fleet,
                release,
                allowlists,
            } => {
                let scope = Scope::Fleet { fleet, release };
                let desired = allowlists.clone();
                model.apply(desired, scope, &[], false, now, settings, &mut RandomIds)?;
            }
        }
        let policy = PolicyCache::default().policy(&model);
        let enforcement = self.kernel.enforcement(&model, policy);
        let mut guarded = self.guard.guarded_always()?;
        let found = [
            ("client_ip", operator.client_ip),
            ("api_peer", operator.peer_ip),
        ];
        for (found, address) in found {
            if let Some(address) = address {
                guarded.push(GuardedAddress {
                    address,
                    found: found.to_owned(),
                });
            }
        }
        let mut would_cut: Vec<GuardedAddress> = guarded
            .into_iter()
            .filter(|g| self.model.admits(g.address) && !model.admits(g.address))
            .collect();
        would_cut.sort_by_key(|g| g.address);
        would_cut.dedup_by(|a, b| a.address == b.address);
        self.kernel
            .dataplane_mut()
            .start_preview(&enforcement, window)?;
        let preview = Preview {
            candidate: Arc::new(candidate),
            started_at: now,
            ends_at: now + window,
            would_cut,
            ended: None,
            sources: Vec::new(),
        };
        self.preview = Some(preview.clone());
        Ok(preview)
    }

    /// The preview running or last run, its sources read now while it runs.
    pub fn preview(&mut self) -> Option<Preview> {
        self.end_preview_if_due();
        let sources = match &self.preview {
            Some(preview) if preview.ended.is_none() => {
                self.kernel.dataplane().readings().preview_sources().ok()
            }
            _ => None,
        };
        let preview = self.preview.as_mut()?;
        if let Some(sources) = sources {
            preview.sources = sources;
        }
        Some(preview.clone())
    }

    /// Ends the running preview (`why` says why), keeping what it counted.
    pub fn end_preview(&mut self, why: &'static str) -> Result<(), ServiceError> {
        let Some(preview) = self.preview.as_mut().filter(|p| p.ended.is_none()) else {
            return Ok(());
        };
        if let Ok(sources) = self.kernel.dataplane().readings().preview_sources() {
            preview.sources = sources;
        }
        preview.ended = Some((OffsetDateTime::now_utc(), why));
        self.kernel.dataplane_mut().stop_preview()?;
        Ok(())
    }

    /// Ends the running preview once its window has passed.
    pub fn end_preview_if_due(&mut self) {
        let due = self
            .preview
            .as_ref()
            .is_some_and(|p| p.ended.is_none() && OffsetDateTime::now_utc() >= p.ends_at);
        if due && let Err(err) = self.end_preview("its window ended") {
            tracing::warn!(error = %crate::error_chain(&err), "ending the preview");
        }
    }
}

impl Service {
    /// Notes that the running preview ended when the kernel no longer runs it (the tables
    /// were made again for a change).
    pub(super) fn note_preview_gone(&mut self) {
        let gone = self.kernel.dataplane().preview_left().is_none();
        if let Some(preview) = self.preview.as_mut().filter(|p| p.ended.is_none())
            && gone
            && OffsetDateTime::now_utc() < preview.ends_at
        {
            if let Ok(sources) = self.kernel.dataplane().readings().preview_sources() {
                preview.sources = sources;
            }
            preview.ended = Some((
                OffsetDateTime::now_utc(),
                "the tables were made again for a change",
            ));
        }
    }
}
