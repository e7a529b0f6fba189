//! Why a service operation failed.

use crate::dataplane::DataplaneError;
use crate::model::ModelError;
use crate::store::StoreError;

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
    /// The worker running the operation failed.
    #[error("the worker running the operation failed: {0}")]
    Task(String),
    /// The lockout guard could not read the host's sessions.
    #[error("reading established sessions for the lockout guard")]
    Host(#[source] std::io::Error),
}
