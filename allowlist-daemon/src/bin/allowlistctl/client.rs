//! The admin API as allowlistctl calls it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde_json::Value;

use crate::unix_socket::UnixConnector;

/// Entries asked for in each page of a list.
const ENTRY_PAGE: usize = 10_000;

/// The admin API, with the error body turned into an error. The token is read on the
/// first call: commands that talk to etcd only need none.
pub(crate) struct Api {
    agent: ureq::Agent,
    /// What requests are sent to (`http://localhost` for the unix socket).
    url: String,
    /// Where the API is, as the user gave it.
    shown_url: String,
    token: std::cell::OnceCell<String>,
    given: Option<String>,
    token_file: PathBuf,
}

impl Api {
    /// The API at `url` (`http://`, `https://`, or `unix:/PATH` for the unix socket), with
    /// `token`, else the token in `token_file`; `cacert` is the CA that signed the API's TLS
    /// certificate, when it is not one the system trusts.
    pub(crate) fn new(
        url: &str,
        cacert: Option<&Path>,
        token: Option<String>,
        token_file: PathBuf,
    ) -> anyhow::Result<Api> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)));
        if let Some(cacert) = cacert {
            let pem = std::fs::read(cacert)
                .with_context(|| format!("reading --cacert {}", cacert.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing --cacert {}", cacert.display()))?;
            if certs.is_empty() {
                anyhow::bail!("--cacert {} holds no certificate", cacert.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let shown_url = url.to_owned();
        let (agent, url) = match url.strip_prefix("unix:") {
            Some(path) => (
                ureq::Agent::with_parts(
                    config.build(),
                    UnixConnector {
                        path: PathBuf::from(path),
                    },
                    ureq::unversioned::resolver::DefaultResolver::default(),
                ),
                "http://localhost".to_owned(),
            ),
            None => (config.build().into(), url.to_owned()),
        };
        Ok(Api {
            agent,
            url,
            shown_url,
            token: std::cell::OnceCell::new(),
            given: token,
            token_file,
        })
    }

    /// `Bearer <token>`.
    fn authorization(&self) -> anyhow::Result<String> {
        if let Some(token) = self.token.get() {
            return Ok(format!("Bearer {token}"));
        }
        let token = match &self.given {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(&self.token_file)
                .with_context(|| {
                    format!(
                        "reading the admin token from {} (or set ALLOWLIST_TOKEN)",
                        self.token_file.display()
                    )
                })?
                .trim()
                .to_owned(),
        };
        Ok(format!("Bearer {}", self.token.get_or_init(|| token)))
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", self.authorization()?);
        if let Some(version) = if_match {
            builder = builder.header("If-Match", format!("\"{version}\""));
        }
        let request = match body {
            Some(body) => builder
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(body)?)?,
            None => builder.body(Vec::new())?,
        };
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("cannot reach allowlistd at {}", self.shown_url))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()
            .context("reading the response")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        let mut message = format!(
            "{} ({}, HTTP {})",
            error["message"].as_str().unwrap_or("request failed"),
            error["code"].as_str().unwrap_or("unknown"),
            status.as_u16()
        );
        if let Some(field) = error["field"].as_str() {
            message.push_str(&format!(" [field {field}]"));
        }
        Err(anyhow!(message))
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request("GET", path, None, None)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.request("POST", path, Some(body), None)
    }

    /// Visits the entries of list `id` page by page, in prefix order, until `visit` answers
    /// false or the last page is read.
    pub(crate) fn entry_pages(
        &self,
        id: &str,
        mut visit: impl FnMut(&[Value]) -> bool,
    ) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let cursor = after
                .as_deref()
                .map(|cidr| format!("&after={}", cidr.replace('/', "%2F")))
                .unwrap_or_default();
            let page = self.get(&format!(
                "/v1/allowlists/{id}/entries?limit={ENTRY_PAGE}{cursor}"
            ))?;
            let entries = page["entries"].as_array().map_or(&[][..], Vec::as_slice);
            if !visit(entries) {
                return Ok(());
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok(()),
            }
        }
    }

    /// Finds a list by id or by name: its summary, without its entries.
    pub(crate) fn resolve(&self, list: &str) -> anyhow::Result<Value> {
        let all = self.get("/v1/allowlists?entries=false")?;
        let lists = all["allowlists"].as_array().cloned().unwrap_or_default();
        lists
            .iter()
            .find(|l| l["id"] == list)
            .or_else(|| lists.iter().find(|l| l["name"] == list))
            .cloned()
            .ok_or_else(|| anyhow!("no allowlist with id or name {list:?}"))
    }

    pub(crate) fn resolve_id(&self, list: &str) -> anyhow::Result<String> {
        Ok(self.resolve(list)?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}
