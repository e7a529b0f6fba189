//! The fleet's store: reading, publishing and acknowledging releases in etcd, and the hosts'
//! statuses. Used by the daemon's follower and by `allowlistctl fleet`.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp,
};

use std::collections::BTreeSet;

use super::acknowledgement::Acknowledgement;
use super::keys::Keys;
use super::release::{Header, Release, ReleaseError};
use super::rollout::Progress;
use super::signature::{Signature, SigningKey, acknowledgement_message, release_message};
use super::status::HostStatus;

/// How to reach etcd: endpoints, TLS and credentials.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// `http://host:2379` or `https://...`, one or more.
    pub endpoints: Vec<String>,
    /// A CA certificate (PEM) to verify the servers with; enables TLS.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM), for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A user and password for etcd's authentication.
    pub user: Option<(String, String)>,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// etcd answered with an error, or could not be reached.
    #[error("{action}")]
    Etcd {
        /// What was being done.
        action: String,
        /// What failed.
        #[source]
        source: etcd_client::Error,
    },
    /// A file (certificate, key) could not be read.
    #[error("reading {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The publish was based on another release than the fleet's current one.
    #[error(
        "the fleet is at release {}, but this publish is based on {}: export the current \
         release (allowlistctl fleet export), merge your change into it and publish again \
         (a pipeline whose file is the whole policy: publish --base current)",
        current.as_deref().unwrap_or("(none)"),
        base.as_deref().unwrap_or("nothing (no base given)")
    )]
    Stale {
        /// The fleet's current release.
        current: Option<String>,
        /// The release the publish was based on.
        base: Option<String>,
    },
    /// No release with that id.
    #[error("the fleet has no release {0}")]
    NoSuchRelease(String),
    /// A stored release is damaged.
    #[error(transparent)]
    Damaged(#[from] ReleaseError),
    /// A stored value is not what it should be.
    #[error("{key} holds no valid value")]
    Format {
        /// The key.
        key: String,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// Signing failed.
    #[error("signing with key {fingerprint}")]
    Sign {
        /// The key.
        fingerprint: String,
        /// What failed.
        #[source]
        source: ssh_key::Error,
    },
    /// Another writer changed the key meanwhile.
    #[error("{0} changed while this was written: run the command again")]
    Raced(String),
}

impl FleetError {
    /// Whether the error is the content of the fleet's keys (a release that is missing,
    /// damaged, too big or not what its key says), as opposed to etcd itself: a host reports
    /// such a release as failed and goes on following the fleet.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            FleetError::NoSuchRelease(_) | FleetError::Damaged(_) | FleetError::Format { .. }
        )
    }
}

/// A connection to the store of one fleet.
pub struct FleetStore {
    client: Client,
    keys: Keys,
    fleet: String,
}

fn etcd(action: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> FleetError {
    let action = action.into();
    move |source| FleetError::Etcd { action, source }
}

/// How old (by its id) an interrupted publish's chunks must be to be removed.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// Whether release `id` (`rYYYYMMDDTHHMMSS-xxxx`, as `allowlistctl fleet publish` names
/// them) was published more than [`ABANDONED_AFTER`] ago; an id of another shape never is.
fn published_long_ago(id: &str) -> bool {
    let field = |range: std::ops::Range<usize>| id.get(range)?.parse::<u16>().ok();
    let published = (|| {
        let month = time::Month::try_from(u8::try_from(field(5..7)?).ok()?).ok()?;
        let date = time::Date::from_calendar_date(
            i32::from(field(1..5)?),
            month,
            u8::try_from(field(7..9)?).ok()?,
        )
        .ok()?;
        let time = time::Time::from_hms(
            u8::try_from(field(10..12)?).ok()?,
            u8::try_from(field(12..14)?).ok()?,
            u8::try_from(field(14..16)?).ok()?,
        )
        .ok()?;
        (id.starts_with('r') && id.get(9..10) == Some("T"))
            .then(|| time::PrimitiveDateTime::new(date, time).assume_utc())
    })();
    published.is_some_and(|at| {
        time::OffsetDateTime::now_utc() - at
            > time::Duration::try_from(ABANDONED_AFTER).unwrap_or(time::Duration::MAX)
    })
}

/// Signs `message` with `signer`.
fn sign(signer: &SigningKey, message: &[u8]) -> Result<Signature, FleetError> {
    signer.sign(message).map_err(|source| FleetError::Sign {
        fingerprint: signer.fingerprint(),
        source,
    })
}

fn read(path: &PathBuf) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|source| FleetError::File {
        path: path.clone(),
        source,
    })
}

impl FleetStore {
    /// Connects to the etcd of `options`, for fleet `fleet`.
    pub async fn connect(options: &EtcdOptions, fleet: &str) -> Result<FleetStore, FleetError> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3));
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        if let Some(ca) = &options.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let Some((cert, key)) = &options.identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(etcd(format!(
                "connecting to etcd at {}",
                options.endpoints.join(",")
            )))?;
        Ok(FleetStore {
            client,
            keys: Keys::new(fleet),
            fleet: fleet.to_owned(),
        })
    }

    /// The fleet's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The etcd client, for watches and leases.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The current release's id and the revision of its key; `None` before the first
    /// publish.
    pub async fn current(&mut self) -> Result<Option<(String, i64)>, FleetError> {
        let key = self.keys.current();
        let response = self
            .client
            .get(key.as_str(), None)
            .await
            .map_err(etcd("reading the current release"))?;
        Ok(response.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            )
        }))
    }

    /// The fleet's name.
    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    /// The header of release `id` and the revision it was written at, parsed strictly.
    pub async fn header(&mut self, id: &str) -> Result<(Header, i64), FleetError> {
        let key = self.keys.release(id);
        let response = self
            .client
            .get(key.as_str(), None)
            .await
            .map_err(etcd(format!("reading release {id}")))?;
        let Some(kv) = response.kvs().first() else {
            return Err(FleetError::NoSuchRelease(id.to_owned()));
        };
        let header = serde_json::from_slice(kv.value())
            .map_err(|source| FleetError::Format { key, source })?;
        Ok((header, kv.mod_revision()))
    }

    /// Release `id` and its header, read and checked: the header names `id` and promises at
    /// most `max_bytes` (checked before any chunk is read), and the chunks add up to it.
    pub async fn release(
        &mut self,
        id: &str,
        max_bytes: usize,
    ) -> Result<(Release, Header), FleetError> {
        let (header, _) = self.header(id).await?;
        header.check(id, max_bytes)?;
        // One chunk per request: a response stays within gRPC's message limit.
        let mut chunks = Vec::with_capacity(header.chunks);
        for n in 0..header.chunks {
            let chunk = self
                .client
                .get(self.keys.chunk(id, n), None)
                .await
                .map_err(etcd(format!("reading chunk {n} of release {id}")))?;
            chunks.extend(chunk.kvs().first().map(|kv| kv.value().to_vec()));
        }
        let release = Release::decode(&header, &chunks)?;
        Ok((release, header))
    }

    /// Publishes `release` as the fleet's current one, signed by `signers`, if the fleet is
    /// still at `release.base` (compare-and-swap): a publish based on a stale release is
    /// refused, never lost. Content too big for one request is written in chunks first; the
    /// chunks an interrupted publish left behind are removed after.
    pub async fn publish(
        &mut self,
        release: &Release,
        signers: &[SigningKey],
    ) -> Result<(), FleetError> {
        let current = self.current().await?;
        let compare = match (&current, &release.base) {
            (Some((id, revision)), Some(base)) if id == base => {
                Compare::mod_revision(self.keys.current(), CompareOp::Equal, *revision)
            }
            (None, None) => Compare::version(self.keys.current(), CompareOp::Equal, 0),
            _ => {
                return Err(FleetError::Stale {
                    current: current.map(|(id, _)| id),
                    base: release.base.clone(),
                });
            }
        };
        let header = self.stage(release, signers).await?;
        let mut writes = vec![
            TxnOp::put(self.keys.release(&release.id), header, None),
            TxnOp::put(self.keys.current(), release.id.as_str(), None),
        ];
        if release.rollout.is_some() {
            let first = Progress {
                open: 1,
                halted: None,
            };
            let value = serde_json::to_vec(&first).map_err(|source| FleetError::Format {
                key: self.keys.rollout(&release.id),
                source,
            })?;
            writes.push(TxnOp::put(self.keys.rollout(&release.id), value, None));
        }
        let txn = Txn::new().when([compare]).and_then(writes);
        let done = self
            .client
            .txn(txn)
            .await
            .map_err(etcd(format!("publishing release {}", release.id)))?;
        if done.succeeded() {
            self.remove_abandoned_chunks(&release.id).await;
            return Ok(());
        }
        // Another publish came first: remove this one's chunks, say which release won.
        let _ = self
            .client
            .delete(
                self.keys.chunks(&release.id),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await;
        Err(FleetError::Stale {
            current: self.current().await?.map(|(id, _)| id),
            base: release.base.clone(),
        })
    }

    /// Writes `release`'s chunks, signed by `signers`; returns its header, to write (with
    /// what makes it the current release, or a preview) in one transaction after.
    pub async fn stage(
        &mut self,
        release: &Release,
        signers: &[SigningKey],
    ) -> Result<Vec<u8>, FleetError> {
        let (mut header, chunks) = release.encode().map_err(|source| FleetError::Format {
            key: self.keys.release(&release.id),
            source,
        })?;
        let message = release_message(&self.fleet, &release.id, &header.sha256);
        for signer in signers {
            header.signatures.push(sign(signer, &message)?);
        }
        for (n, chunk) in chunks.into_iter().enumerate() {
            self.client
                .put(self.keys.chunk(&release.id, n), chunk, None)
                .await
                .map_err(etcd(format!("writing chunk {n} of release {}", release.id)))?;
        }
        serde_json::to_vec(&header).map_err(|source| FleetError::Format {
            key: self.keys.release(&release.id),
            source,
        })
    }

    /// Removes the chunks of releases that never got a header (a publish interrupted before
    /// its last step) and are older than [`ABANDONED_AFTER`] by their id, so that a publish
    /// under way elsewhere keeps its chunks. Best effort: a failure leaves them for the next.
    async fn remove_abandoned_chunks(&mut self, own: &str) {
        let Ok(listed) = self
            .client
            .get(
                self.keys.releases(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
        else {
            return;
        };
        let prefix = self.keys.releases();
        let keys: Vec<String> = listed
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        let headers: BTreeSet<&str> = keys
            .iter()
            .filter_map(|key| key.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .collect();
        let abandoned: BTreeSet<&str> = keys
            .iter()
            .filter_map(|key| key.strip_prefix(&prefix)?.split_once("/chunks/"))
            .map(|(id, _)| id)
            .filter(|id| *id != own && !headers.contains(id) && published_long_ago(id))
            .collect();
        for id in abandoned {
            let removed = self
                .client
                .delete(
                    self.keys.chunks(id),
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await;
            if removed.is_ok() {
                tracing::info!(release = id, "removed the chunks of an interrupted publish");
            }
        }
    }

    /// Adds `signer`'s signature to release `id` (a second operator's, for a host that needs
    /// two). Refused for a release that does not exist. When `id` is the current release, its
    /// `current` key is written again (same value), which has the hosts that refused it for
    /// want of signatures read it again.
    pub async fn sign(&mut self, id: &str, signer: &SigningKey) -> Result<(), FleetError> {
        let (mut header, revision) = self.header(id).await?;
        let message = release_message(&self.fleet, id, &header.sha256);
        header.signatures.push(sign(signer, &message)?);
        let key = self.keys.release(id);
        let value = serde_json::to_vec(&header).map_err(|source| FleetError::Format {
            key: key.clone(),
            source,
        })?;
        self.put_if_unchanged(&key, value, revision).await?;
        if let Some((current, revision)) = self.current().await?
            && current == id
        {
            // Another publish meanwhile: nothing to read again.
            let _ = self
                .put_if_unchanged(&self.keys.current(), id.as_bytes().to_vec(), revision)
                .await;
        }
        Ok(())
    }

    /// Acknowledges release `id` for the fleet (up to wave `wave` of its rollout, when
    /// given), as `by`, signed by `signer` when given: the acknowledgement names the release
    /// and the digest of its content. A second operator's acknowledgement of the same release
    /// and wave adds their signature to it. Refused for a release that does not exist.
    pub async fn acknowledge(
        &mut self,
        id: &str,
        wave: Option<usize>,
        by: &str,
        signer: Option<&SigningKey>,
    ) -> Result<(), FleetError> {
        let (header, _) = self.header(id).await?;
        let key = self.keys.ack(id);
        let existing = self
            .client
            .get(key.as_str(), None)
            .await
            .map_err(etcd(format!("reading the acknowledgement of release {id}")))?;
        let found = existing.kvs().first();
        let revision = found.map_or(0, |kv| kv.mod_revision());
        let mut ack = found
            .and_then(|kv| serde_json::from_slice::<Acknowledgement>(kv.value()).ok())
            .filter(|ack| ack.release == id && ack.sha256 == header.sha256 && ack.wave == wave)
            .unwrap_or_else(|| Acknowledgement {
                release: id.to_owned(),
                sha256: header.sha256.clone(),
                wave,
                by: by.to_owned(),
                acknowledged_at: crate::model::rfc3339(time::OffsetDateTime::now_utc()),
                signatures: Vec::new(),
            });
        if let Some(signer) = signer {
            let message = acknowledgement_message(&self.fleet, id, &header.sha256, wave);
            ack.signatures.push(sign(signer, &message)?);
        }
        let value = serde_json::to_vec(&ack).map_err(|source| FleetError::Format {
            key: key.clone(),
            source,
        })?;
        self.put_if_unchanged(&key, value, revision).await
    }

    /// Offers the current release `id` again to `hosts`, which reverted it (each applies it
    /// as a pending change again).
    pub async fn reapply(&mut self, id: &str, hosts: &[String]) -> Result<(), FleetError> {
        for host in hosts {
            self.client
                .put(self.keys.reapply(host), id, None)
                .await
                .map_err(etcd(format!("offering release {id} to {host} again")))?;
        }
        Ok(())
    }

    /// How far release `id`'s rollout got, and the revision of its key (0: absent).
    pub async fn progress(&mut self, id: &str) -> Result<(Progress, i64), FleetError> {
        let response = self
            .client
            .get(self.keys.rollout(id), None)
            .await
            .map_err(etcd(format!("reading the rollout of release {id}")))?;
        let kv = response.kvs().first();
        Ok((
            Progress::read(kv.map(|kv| kv.value())),
            kv.map_or(0, |kv| kv.mod_revision()),
        ))
    }

    /// Records how far release `id`'s rollout got, if its key is still at `revision` (0:
    /// absent): two hosts that open the next wave together open it once.
    pub async fn set_progress(
        &mut self,
        id: &str,
        progress: &Progress,
        revision: i64,
    ) -> Result<(), FleetError> {
        let key = self.keys.rollout(id);
        let value = serde_json::to_vec(progress).map_err(|source| FleetError::Format {
            key: key.clone(),
            source,
        })?;
        self.put_if_unchanged(&key, value, revision).await
    }

    /// Writes `value` at `key` if the key is still at `revision` (0: absent).
    async fn put_if_unchanged(
        &mut self,
        key: &str,
        value: Vec<u8>,
        revision: i64,
    ) -> Result<(), FleetError> {
        let compare = match revision {
            0 => Compare::version(key, CompareOp::Equal, 0),
            revision => Compare::mod_revision(key, CompareOp::Equal, revision),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, value, None)]);
        let done = self
            .client
            .txn(txn)
            .await
            .map_err(etcd(format!("writing {key}")))?;
        if !done.succeeded() {
            return Err(FleetError::Raced(key.to_owned()));
        }
        Ok(())
    }

    /// Notes that `host` follows the fleet (a key without lease: a host gone stays listed).
    pub async fn join(&mut self, host: &str) -> Result<(), FleetError> {
        self.client
            .put(self.keys.member(host), host, None)
            .await
            .map_err(etcd(format!("registering {host} in the fleet")))?;
        Ok(())
    }

    /// Writes a host's status under `lease`: it disappears when the host stops renewing it.
    pub async fn report(&mut self, status: &HostStatus, lease: i64) -> Result<(), FleetError> {
        let value = serde_json::to_vec(status).map_err(|source| FleetError::Format {
            key: self.keys.host(&status.host),
            source,
        })?;
        self.client
            .put(
                self.keys.host(&status.host),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(etcd("reporting the host's status"))?;
        Ok(())
    }

    /// Every member of the fleet and its status; `None` for a host whose lease expired (gone).
    pub async fn hosts(&mut self) -> Result<Vec<(String, Option<HostStatus>)>, FleetError> {
        let members = self
            .client
            .get(self.keys.members(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("listing the fleet's hosts"))?;
        let statuses = self
            .client
            .get(self.keys.hosts(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("reading the hosts' statuses"))?;
        let statuses: Vec<HostStatus> = statuses
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        Ok(members
            .kvs()
            .iter()
            .map(|kv| {
                let host = String::from_utf8_lossy(kv.value()).into_owned();
                let status = statuses.iter().find(|s| s.host == host).cloned();
                (host, status)
            })
            .collect())
    }
}
