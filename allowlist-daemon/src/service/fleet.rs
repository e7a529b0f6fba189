//! What the fleet follower asks of the service: where the host stands, applying a release,
//! acknowledging it for the fleet, and detaching.

use time::OffsetDateTime;

use super::setup::RandomIds;
use super::{Service, ServiceError};
use crate::model::{ApplyReport, DesiredList, Pending, Scope};

/// Where the host stands with its fleet, as the model says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// The operator detached the host.
    pub detached: bool,
    /// The last release acknowledged on this host.
    pub applied: Option<String>,
    /// The last release this host reverted.
    pub reverted: Option<String>,
    /// The release pending here.
    pub pending: Option<PendingRelease>,
    /// Whether some other change is pending (a local one).
    pub local_pending: bool,
}

/// A fleet release pending on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRelease {
    /// The release.
    pub id: String,
    /// When it was applied.
    pub applied_at: OffsetDateTime,
    /// Acknowledgements before this are too early.
    pub acknowledge_after: OffsetDateTime,
    /// When it reverts unless acknowledged.
    pub revert_at: OffsetDateTime,
}

impl Service {
    /// Where the host stands with its fleet.
    pub fn fleet_snapshot(&self) -> FleetSnapshot {
        let model = self.model();
        let memo = model.fleet();
        let pending = model.pending();
        FleetSnapshot {
            detached: memo.detached,
            applied: memo.applied.clone(),
            reverted: memo.reverted.clone(),
            pending: model.pending_release().and_then(|release| {
                pending.map(|p| PendingRelease {
                    id: release.to_owned(),
                    applied_at: p.applied_at,
                    acknowledge_after: p.acknowledge_after,
                    revert_at: p.revert_at,
                })
            }),
            local_pending: pending.is_some() && model.pending_release().is_none(),
        }
    }

    /// Applies release `release` of fleet `fleet`, declaring `allowlists`, as one pending
    /// change, guarded against cutting off what the lockout guard keeps reachable
    /// (established sessions to the protected ports, remote operators), whether or not the
    /// host enforces already.
    pub fn apply_release(
        &mut self,
        fleet: &str,
        release: &str,
        allowlists: Vec<DesiredList>,
    ) -> Result<ApplyReport, ServiceError> {
        let guarded = self.guard.guarded_always()?;
        let scope = Scope::Fleet { fleet, release };
        self.transact(
            |report: &ApplyReport| {
                format!(
                    "applied release {release} of fleet {fleet}: {}",
                    super::operations::describe(report)
                )
            },
            |model, settings, now| {
                model.apply(
                    allowlists,
                    scope,
                    &guarded,
                    false,
                    now,
                    settings,
                    &mut RandomIds,
                )
            },
        )
    }

    /// Acknowledges the pending release `release`, which the fleet acknowledged.
    pub fn acknowledge_release(&mut self, release: &str) -> Result<Pending, ServiceError> {
        self.transact(
            |_| format!("acknowledged release {release} for the fleet"),
            |model, settings, now| model.acknowledge_release(release, now, settings),
        )
    }

    /// Stops following the fleet (its lists become editable), or follows it again; returns
    /// the fleet's lists edited while detached (the current release is then applied again).
    pub fn set_fleet_detached(&mut self, detached: bool) -> Result<Vec<String>, ServiceError> {
        self.transact(
            |drifted: &Vec<String>| match (detached, drifted.is_empty()) {
                (true, _) => "detached from the fleet".to_owned(),
                (false, true) => "attached to the fleet again".to_owned(),
                (false, false) => format!(
                    "attached to the fleet again; the fleet's lists {drifted:?} were edited \
                     while detached: the current release is applied again"
                ),
            },
            |model, _, _| model.set_detached(detached),
        )
    }

    /// Forgets that this host reverted `release`, which the operator offers again (`fleet
    /// reapply`): the follower then applies it as a pending change. Returns whether it had.
    pub fn offer_release_again(&mut self, release: &str) -> Result<bool, ServiceError> {
        if self.model.fleet().reverted.as_deref() != Some(release) {
            return Ok(false);
        }
        self.transact(
            |_| format!("release {release} offered again by the operator"),
            |model, _, _| Ok(model.forget_reverted(release)),
        )
    }
}
