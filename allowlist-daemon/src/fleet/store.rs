//! The fleet's store: reading, publishing and acknowledging releases in etcd, and the hosts'
//! statuses. Used by the daemon's follower and by `allowlistctl fleet`.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp,
};

use super::keys::Keys;
use super::release::{Header, Release, ReleaseError};
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
         release (allowlistctl fleet export), merge your change into it and publish again",
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
}

/// A connection to the store of one fleet.
pub struct FleetStore {
    client: Client,
    keys: Keys,
}

fn etcd(action: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> FleetError {
    let action = action.into();
    move |source| FleetError::Etcd { action, source }
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

    /// Release `id`, read and checked.
    pub async fn release(&mut self, id: &str) -> Result<Release, FleetError> {
        let key = self.keys.release(id);
        let header = self
            .client
            .get(key.as_str(), None)
            .await
            .map_err(etcd(format!("reading release {id}")))?;
        let header: Header = match header.kvs().first() {
            Some(kv) => {
                serde_json::from_slice(kv.value()).map_err(|source| FleetError::Format {
                    key: key.clone(),
                    source,
                })?
            }
            None => return Err(FleetError::NoSuchRelease(id.to_owned())),
        };
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
        Ok(Release::decode(&header, &chunks)?)
    }

    /// Publishes `release` as the fleet's current one, if the fleet is still at
    /// `release.base` (compare-and-swap): a publish based on a stale release is refused,
    /// never lost. Content too big for one request is written in chunks first.
    pub async fn publish(&mut self, release: &Release) -> Result<(), FleetError> {
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
        let (header, chunks) = release.encode().map_err(|source| FleetError::Format {
            key: self.keys.release(&release.id),
            source,
        })?;
        for (n, chunk) in chunks.into_iter().enumerate() {
            self.client
                .put(self.keys.chunk(&release.id, n), chunk, None)
                .await
                .map_err(etcd(format!("writing chunk {n} of release {}", release.id)))?;
        }
        let header = serde_json::to_vec(&header).map_err(|source| FleetError::Format {
            key: self.keys.release(&release.id),
            source,
        })?;
        let txn = Txn::new().when([compare]).and_then([
            TxnOp::put(self.keys.release(&release.id), header, None),
            TxnOp::put(self.keys.current(), release.id.as_str(), None),
        ]);
        let done = self
            .client
            .txn(txn)
            .await
            .map_err(etcd(format!("publishing release {}", release.id)))?;
        if done.succeeded() {
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

    /// Acknowledges release `id` for the fleet, as `by`; refused for a release that does not
    /// exist.
    pub async fn acknowledge(&mut self, id: &str, by: &str) -> Result<(), FleetError> {
        let value = serde_json::json!({
            "by": by,
            "acknowledged_at": crate::model::rfc3339(time::OffsetDateTime::now_utc()),
        })
        .to_string();
        let txn = Txn::new()
            .when([Compare::version(
                self.keys.release(id),
                CompareOp::Greater,
                0,
            )])
            .and_then([TxnOp::put(self.keys.ack(id), value, None)]);
        let done = self
            .client
            .txn(txn)
            .await
            .map_err(etcd(format!("acknowledging release {id}")))?;
        if !done.succeeded() {
            return Err(FleetError::NoSuchRelease(id.to_owned()));
        }
        Ok(())
    }

    /// Whether release `id` is acknowledged for the fleet.
    pub async fn acknowledged(&mut self, id: &str) -> Result<bool, FleetError> {
        let response = self
            .client
            .get(self.keys.ack(id), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd(format!("reading the acknowledgement of release {id}")))?;
        Ok(response.count() > 0)
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
