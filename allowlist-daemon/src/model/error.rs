//! Why the model refuses a request, and why it refuses a saved state.

use std::net::IpAddr;

use ipnet::IpNet;

use super::pending::Action;
use crate::policy::CidrError;

/// Why a request is refused. Each variant has a stable `code` for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The request is malformed in a way the types did not catch.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// Where.
        field: Option<String>,
    },
    /// A CIDR that does not parse, has host bits set or is IPv4-mapped.
    #[error("{field}: {source}")]
    Cidr {
        /// Where.
        field: String,
        /// What is wrong, with the prefix probably meant.
        source: CidrError,
    },
    /// A prefix that allows every source of its family, without `allow_all`.
    #[error(
        "{field}: {cidr} allows every IPv{family} source; if that is what you mean, say so with \
         \"allow_all\": true (allowlistctl --allow-all)",
        family = if cidr.addr().is_ipv4() { 4 } else { 6 }
    )]
    AllowAllRequired {
        /// Where.
        field: String,
        /// The prefix.
        cidr: IpNet,
    },
    /// Prefixes that together allow every source of a family, without `allow_all`.
    #[error(
        "{field}: together the prefixes cover {cidr}, every IPv{family} source; if that is what \
         you mean, say so with \"allow_all\": true (allowlistctl --allow-all)",
        family = if cidr.addr().is_ipv4() { 4 } else { 6 }
    )]
    CoversAll {
        /// Where.
        field: String,
        /// The family's whole space.
        cidr: IpNet,
    },
    /// No allowlist or entry with that id.
    #[error("no {what} with id {id:?}")]
    NotFound {
        /// "allowlist" or "entry".
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Another allowlist has this name.
    #[error("an allowlist named {name:?} exists already")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// The same prefix twice in one allowlist.
    #[error("{field}: {cidr} is already in the allowlist")]
    DuplicateEntry {
        /// Where.
        field: String,
        /// The prefix.
        cidr: IpNet,
    },
    /// A configured limit would be exceeded.
    #[error("{what}: the limit is {limit}")]
    LimitExceeded {
        /// What is limited.
        what: String,
        /// The limit.
        limit: usize,
        /// Where.
        field: Option<String>,
    },
    /// A list's feed said something a refresh does not apply by itself.
    #[error("{message}")]
    FeedRefused {
        /// Why.
        message: String,
    },
    /// The allowlist changed since the version the client read (If-Match).
    #[error("the allowlist is at version {current}, not {expected}: read it again")]
    VersionMismatch {
        /// The version the client sent.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// A change is waiting for acknowledgement: no other change to what is enforced, and no
    /// edit of the lists it concerns, until it is acknowledged or reverted.
    #[error(
        "{}a change is pending ({action}): acknowledge it, or it reverts at {revert_at}",
        allowlist_id.as_ref().map(|id| format!("allowlist {id} is part of the pending change until it ends; ")).unwrap_or_default()
    )]
    ChangePending {
        /// The pending change's action.
        action: Action,
        /// When it reverts.
        revert_at: String,
        /// The list the request would edit, when it is one the pending change concerns.
        allowlist_id: Option<String>,
    },
    /// A preview runs already: one at a time.
    #[error(
        "a preview runs since {started_at}: wait for its report (GET /v1/enforcement/preview) \
         or end it (DELETE /v1/enforcement/preview)"
    )]
    PreviewRunning {
        /// When it started.
        started_at: String,
    },
    /// The list belongs to the fleet the host follows: edit the fleet's release instead.
    #[error(
        "allowlist {id} comes from release {release} of fleet {fleet}: change it there \
         (allowlistctl fleet publish), or detach this host from the fleet first"
    )]
    FleetManaged {
        /// The list.
        id: String,
        /// The fleet.
        fleet: String,
        /// The release it comes from.
        release: String,
    },
    /// The pending change is a fleet release, which only the fleet acknowledges.
    #[error(
        "the pending change is release {release} of the fleet: acknowledge it for the fleet \
         (allowlistctl fleet ack {release}), or it reverts at {revert_at}"
    )]
    ReleasePending {
        /// The release.
        release: String,
        /// When it reverts.
        revert_at: String,
    },
    /// Nothing to acknowledge.
    #[error("no change is pending")]
    NothingPending,
    /// Acknowledged before the window opened.
    #[error(
        "too early: acknowledge in {retry_after_seconds} s (the window opens {ack_min_seconds} s after the change)"
    )]
    TooEarly {
        /// Seconds until acknowledgement is accepted.
        retry_after_seconds: u64,
        /// The configured minimum.
        ack_min_seconds: u64,
    },
    /// The allowlist is enabled and cannot be deleted.
    #[error("allowlist {id:?} is enabled: disable it first")]
    AllowlistEnabled {
        /// The allowlist.
        id: String,
    },
    /// Enabling lists that are enabled already.
    #[error("already enabled: {}", ids.join(", "))]
    AlreadyEnabled {
        /// The lists.
        ids: Vec<String>,
    },
    /// Disabling lists that are not enabled.
    #[error("not enabled: {}", ids.join(", "))]
    NotEnabled {
        /// The lists.
        ids: Vec<String>,
    },
    /// The change would leave an enforced policy that allows nothing.
    #[error("the resulting policy allows no address: it would drop every IP packet")]
    EmptyPolicy,
    /// Enabling would drop these addresses (the caller, or established sessions).
    #[error("enabling would cut off {}: add them or pass force", addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    WouldLockOut {
        /// Addresses the new policy would drop.
        addresses: Vec<IpAddr>,
    },
}

impl ModelError {
    /// The stable error code of the API.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::InvalidRequest { .. } => "invalid_request",
            ModelError::Cidr { source, .. } => match source {
                CidrError::Invalid { .. } => "invalid_cidr",
                CidrError::HostBitsSet { .. } => "host_bits_set",
                CidrError::Ipv4Mapped { .. } => "ipv4_mapped",
            },
            ModelError::AllowAllRequired { .. } | ModelError::CoversAll { .. } => {
                "allow_all_required"
            }
            ModelError::NotFound { .. } => "not_found",
            ModelError::DuplicateName { .. } => "duplicate_name",
            ModelError::DuplicateEntry { .. } => "duplicate_entry",
            ModelError::LimitExceeded { .. } => "limit_exceeded",
            ModelError::VersionMismatch { .. } => "precondition_failed",
            ModelError::ChangePending { .. } => "change_pending",
            ModelError::PreviewRunning { .. } => "preview_running",
            ModelError::FleetManaged { .. } => "fleet_managed",
            ModelError::ReleasePending { .. } => "fleet_release_pending",
            ModelError::NothingPending => "nothing_pending",
            ModelError::TooEarly { .. } => "too_early",
            ModelError::AllowlistEnabled { .. } => "allowlist_enabled",
            ModelError::AlreadyEnabled { .. } => "already_enabled",
            ModelError::NotEnabled { .. } => "not_enabled",
            ModelError::EmptyPolicy => "empty_policy",
            ModelError::WouldLockOut { .. } => "would_lock_out",
            ModelError::FeedRefused { .. } => "feed_refused",
        }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ModelError::InvalidRequest { field, .. } | ModelError::LimitExceeded { field, .. } => {
                field.as_deref()
            }
            ModelError::Cidr { field, .. }
            | ModelError::AllowAllRequired { field, .. }
            | ModelError::CoversAll { field, .. }
            | ModelError::DuplicateEntry { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A saved state that breaks an invariant: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct InvalidState {
    /// Where in the state (`allowlists.al_1.entries[3].cidr`, `enabled`, `pending`).
    pub location: String,
    /// What is wrong.
    pub problem: String,
}

impl InvalidState {
    /// A problem at `location`.
    pub fn at(location: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        InvalidState {
            location: location.into(),
            problem: problem.to_string(),
        }
    }
}
