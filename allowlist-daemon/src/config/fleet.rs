//! The options of fleet following: on the command line `--fleet-*`, in the file a `[fleet]`
//! table (`endpoints = [...]`, `name = "web"`, ...).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::fleet::signature::Trust;
use crate::fleet::{EtcdOptions, FleetConfig};

/// How this host follows a fleet; all unset: it follows none.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetOptions {
    /// etcd endpoints of the fleet to follow (http://10.0.0.5:2379, https://...); repeat or
    /// separate with commas.
    #[arg(long = "fleet-endpoints", value_name = "URL", value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// The fleet to follow (letters, digits, `.`, `_`, `-`).
    #[arg(long = "fleet", value_name = "NAME")]
    pub name: Option<String>,

    /// This host's name in the fleet [default: the system's host name].
    #[arg(long = "host-name", value_name = "NAME")]
    pub host_name: Option<String>,

    /// CA certificate (PEM) that signed etcd's certificates; turns TLS on.
    #[arg(long = "fleet-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM) for etcds that ask for one; with --fleet-key.
    #[arg(long = "fleet-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// The client certificate's key (PEM).
    #[arg(long = "fleet-key", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// etcd user, for etcds with authentication; with --fleet-password-file.
    #[arg(long = "fleet-user", value_name = "USER")]
    pub user: Option<String>,

    /// File holding the etcd user's password.
    #[arg(long = "fleet-password-file", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// The operators' public keys this host trusts (OpenSSH, one a line, as in
    /// authorized_keys): a release is applied, and an acknowledgement counted, only when
    /// signed by --fleet-trust-threshold of them. Read again at each release, so keys are
    /// added and revoked by editing it. Without it, releases need no signature.
    #[arg(long = "fleet-trust", value_name = "FILE")]
    pub trust: Option<PathBuf>,

    /// How many of the trusted keys must sign a release and its acknowledgement (2: a
    /// two-person rule) [default: 1].
    #[arg(long = "fleet-trust-threshold", value_name = "N")]
    pub trust_threshold: Option<usize>,
}

/// Whether `name` may name a fleet or a host: it becomes part of etcd keys.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl FleetOptions {
    /// The fleet to follow, checked; `None` when no fleet is configured. A host reads
    /// releases of at most `max_release_bytes`.
    pub fn resolve(self, max_release_bytes: usize) -> Result<Option<FleetConfig>, ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let fleet = match (self.name, self.endpoints.is_empty()) {
            (None, true) => return Ok(None),
            (Some(_), true) => return invalid("--fleet needs --fleet-endpoints".into()),
            (None, false) => return invalid("--fleet-endpoints needs --fleet NAME".into()),
            (Some(name), false) => name,
        };
        if !valid_name(&fleet) {
            return invalid(format!(
                "--fleet {fleet:?}: use letters, digits, '.', '_' and '-' (at most 128)"
            ));
        }
        let host = match self.host_name {
            Some(host) => host,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .unwrap_or_default(),
        };
        if !valid_name(&host) {
            return invalid(format!(
                "the host name {host:?} cannot name this host in the fleet: give --host-name \
                 (letters, digits, '.', '_' and '-')"
            ));
        }
        let identity = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return invalid("--fleet-cert and --fleet-key go together".into()),
        };
        if identity.is_some() && self.ca.is_none() {
            return invalid("--fleet-cert needs --fleet-ca (TLS)".into());
        }
        let user = match (self.user, self.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(&file)
                    .map_err(|source| ConfigError::Read { path: file, source })?;
                Some((user, password.trim().to_owned()))
            }
            (None, None) => None,
            _ => return invalid("--fleet-user and --fleet-password-file go together".into()),
        };
        let threshold = self.trust_threshold.unwrap_or(1);
        let trust = match self.trust {
            Some(path) if threshold > 0 => {
                // Read now, so that a start with a file it cannot use fails before anything.
                Trust::read(&path, threshold)
                    .map_err(|err| ConfigError::Invalid(format!("--fleet-trust: {err}")))?;
                Some((path, threshold))
            }
            Some(_) => return invalid("--fleet-trust-threshold must be at least 1".into()),
            None if self.trust_threshold.is_some() => {
                return invalid("--fleet-trust-threshold needs --fleet-trust".into());
            }
            None => None,
        };
        Ok(Some(FleetConfig {
            etcd: EtcdOptions {
                endpoints: self.endpoints,
                ca: self.ca,
                identity,
                user,
            },
            fleet,
            host,
            trust,
            max_release_bytes,
        }))
    }
}
