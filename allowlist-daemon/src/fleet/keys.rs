//! Where a fleet lives in etcd: every key under `/allowlist/fleets/<fleet>/`.
//!
//! | key | value |
//! |---|---|
//! | `current` | the id of the release hosts follow |
//! | `releases/<id>` | the release's [`super::release::Header`] |
//! | `releases/<id>/chunks/<n>` | the n-th chunk of its content |
//! | `acks/<id>` | the operator's acknowledgement of the release |
//! | `members/<host>` | that a host follows the fleet (kept) |
//! | `hosts/<host>` | the host's status, bound to its lease (gone with the host) |
//! | `reapply/<host>` | a release the operator offers the host again (`fleet reapply`) |
//! | `rollout/<id>` | how far a release in waves got ([`super::rollout::Progress`]) |
//! | `preview` | the release the hosts judge live traffic against ([`super::preview::FleetPreview`]) |
//! | `previews/<id>/<host>` | what a host's preview of release `<id>` found |

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of fleet `fleet`.
    pub fn new(fleet: &str) -> Keys {
        Keys {
            prefix: format!("/allowlist/fleets/{fleet}/"),
        }
    }

    /// The prefix of every key of the fleet.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The id of the current release.
    pub fn current(&self) -> String {
        format!("{}current", self.prefix)
    }

    /// A release's header.
    pub fn release(&self, id: &str) -> String {
        format!("{}releases/{id}", self.prefix)
    }

    /// Chunk `n` of a release's content.
    pub fn chunk(&self, id: &str, n: usize) -> String {
        format!("{}releases/{id}/chunks/{n:06}", self.prefix)
    }

    /// The prefix of a release's chunks.
    pub fn chunks(&self, id: &str) -> String {
        format!("{}releases/{id}/chunks/", self.prefix)
    }

    /// The acknowledgement of a release.
    pub fn ack(&self, id: &str) -> String {
        format!("{}acks/{id}", self.prefix)
    }

    /// The prefix of every host's status.
    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.prefix)
    }

    /// A host's status.
    pub fn host(&self, host: &str) -> String {
        format!("{}{host}", self.hosts())
    }

    /// The prefix of every member.
    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    /// That a host follows the fleet.
    pub fn member(&self, host: &str) -> String {
        format!("{}{host}", self.members())
    }

    /// The prefix of every host's offer of a release again.
    pub fn reapplies(&self) -> String {
        format!("{}reapply/", self.prefix)
    }

    /// A release offered to a host again.
    pub fn reapply(&self, host: &str) -> String {
        format!("{}{host}", self.reapplies())
    }

    /// How far release `id`'s rollout got.
    pub fn rollout(&self, id: &str) -> String {
        format!("{}rollout/{id}", self.prefix)
    }

    /// The release the hosts preview.
    pub fn preview(&self) -> String {
        format!("{}preview", self.prefix)
    }

    /// The prefix of the hosts' reports of their preview of release `id`.
    pub fn preview_reports(&self, id: &str) -> String {
        format!("{}previews/{id}/", self.prefix)
    }

    /// `host`'s report of its preview of release `id`.
    pub fn preview_report(&self, id: &str, host: &str) -> String {
        format!("{}{host}", self.preview_reports(id))
    }

    /// The prefix of every release's header and chunks.
    pub fn releases(&self) -> String {
        format!("{}releases/", self.prefix)
    }
}
