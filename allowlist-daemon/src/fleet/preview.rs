//! Previews of a release on a fleet (`fleet publish --preview`): the release is stored but
//! not made current; each host named (the first wave's, or all) judges its live traffic
//! against it for a window, changing no verdict, and writes what it found under
//! `previews/<id>/<host>`, which `fleet status --preview` sums.

use etcd_client::{GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::release::Release;
use super::signature::SigningKey;
use super::store::{FleetError, FleetStore};

/// A preview the fleet asks of its hosts, as the `preview` key holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPreview {
    /// The release judged (stored, not current).
    pub release: String,
    /// The hosts that judge it; every host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it runs, in seconds.
    pub window_seconds: u64,
    /// Who asked for it.
    pub by: String,
}

/// What one host found in its preview of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPreview {
    /// The host.
    pub host: String,
    /// The release it previewed.
    pub release: String,
    /// Why it could not preview it (a change pending, a release it cannot read or apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its preview's report, as `GET /v1/enforcement/preview` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// When it wrote this (RFC 3339).
    pub updated_at: String,
}

fn format(key: String) -> impl FnOnce(serde_json::Error) -> FleetError {
    move |source| FleetError::Format { key, source }
}

fn etcd(action: String) -> impl FnOnce(etcd_client::Error) -> FleetError {
    move |source| FleetError::Etcd { action, source }
}

impl FleetPreview {
    /// Whether `host` judges the release.
    pub fn includes(&self, host: &str) -> bool {
        self.hosts
            .as_ref()
            .is_none_or(|hosts| hosts.iter().any(|named| named == host))
    }

    /// When the preview ends; `None` if its start cannot be read.
    pub fn ends_at(&self) -> Option<OffsetDateTime> {
        let started = OffsetDateTime::parse(&self.started_at, &Rfc3339).ok()?;
        let window = time::Duration::seconds(i64::try_from(self.window_seconds).ok()?);
        started.checked_add(window)
    }

    /// What the `preview` key holds, if it holds a preview (anything else: none).
    pub fn read(value: &[u8]) -> Option<FleetPreview> {
        serde_json::from_slice(value).ok()
    }

    /// Stores `release` signed by `signers` (not as the current release) and asks the hosts
    /// for this preview of it.
    pub async fn publish(
        &self,
        store: &mut FleetStore,
        release: &Release,
        signers: &[SigningKey],
    ) -> Result<(), FleetError> {
        let header = store.stage(release, signers).await?;
        let keys = store.keys().clone();
        let value = serde_json::to_vec(self).map_err(format(keys.preview()))?;
        let txn = Txn::new().and_then([
            TxnOp::put(keys.release(&release.id), header, None),
            TxnOp::put(keys.preview(), value, None),
        ]);
        store.client().txn(txn).await.map_err(etcd(format!(
            "asking for a preview of release {}",
            release.id
        )))?;
        Ok(())
    }

    /// The preview the fleet asks for now, if any.
    pub async fn current(store: &mut FleetStore) -> Result<Option<FleetPreview>, FleetError> {
        let key = store.keys().preview();
        let response = store
            .client()
            .get(key, None)
            .await
            .map_err(etcd("reading the fleet's preview".into()))?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| FleetPreview::read(kv.value())))
    }
}

impl HostPreview {
    /// Writes this report under its host and release.
    pub async fn write(&self, store: &mut FleetStore) -> Result<(), FleetError> {
        let key = store.keys().preview_report(&self.release, &self.host);
        let value = serde_json::to_vec(self).map_err(format(key.clone()))?;
        store
            .client()
            .put(key, value, None)
            .await
            .map_err(etcd("reporting the host's preview".into()))?;
        Ok(())
    }

    /// Every host's report of its preview of release `id` (what is not one is skipped).
    pub async fn list(store: &mut FleetStore, id: &str) -> Result<Vec<HostPreview>, FleetError> {
        let prefix = store.keys().preview_reports(id);
        let response = store
            .client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd(format!("reading the hosts' previews of release {id}")))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }
}
