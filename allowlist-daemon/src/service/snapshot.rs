//! What readers see: the state as of the last committed change, published whole after each
//! one. Readers take the latest snapshot and never wait for a write in progress; the lists in
//! it share their entries with the model, so a snapshot costs one copy of the list headers.

use std::sync::{Arc, PoisonError, RwLock};

use allowlist_common::{Mode, RuleId};

use super::{SaveFailure, Service};
use crate::dataplane::MapMemory;
use crate::model::Model;

/// The state after the last committed change.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The model.
    pub model: Model,
    /// The program's mode: `off` when not enforcing, else `enforce` or `monitor`.
    pub mode: &'static str,
    /// Changes reverted because they were not acknowledged in time, since the daemon started.
    pub reverts: u64,
    /// The state that could not be saved yet, and why.
    pub unsaved: Option<SaveFailure>,
    /// One more than the highest rule id in use: the hit counters worth reading.
    pub rule_bound: RuleId,
    /// The kernel memory each map takes, by name.
    pub kernel_memory: Vec<MapMemory>,
}

/// The latest snapshot, replaced whole by the writer.
#[derive(Debug, Clone, Default)]
pub struct Published(Arc<RwLock<Arc<Snapshot>>>);

impl Published {
    /// The latest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, snapshot: Snapshot) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

impl Service {
    /// Where the service publishes its snapshots.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// The snapshot of the state as it is now (published after every change).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.latest()
    }

    /// Publishes the state as it is now.
    pub(super) fn publish(&self) {
        self.published.replace(Snapshot {
            model: self.model.clone(),
            mode: mode_name(&self.model, self.kernel.enforce_mode()),
            reverts: self.reverts,
            unsaved: self.durable.unsaved().cloned(),
            rule_bound: self.model.rule_bound(),
            kernel_memory: self.kernel.dataplane().kernel_memory(),
        });
    }
}

/// The program's mode under `model`: `off` when not enforcing, else `enforce` or `monitor`.
fn mode_name(model: &Model, enforce_mode: Mode) -> &'static str {
    match (model.enforcing(), enforce_mode) {
        (false, _) => "off",
        (true, Mode::Monitor) => "monitor",
        (true, _) => "enforce",
    }
}
