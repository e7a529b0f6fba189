//! The options of the admin API's serving: on the command line `--tls-cert`, `--max-connections`
//! and so on, in the file an `[api]` table (`tls-cert = "..."`); `listen` stays at the top.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, defaults, duration};
use crate::server::{ListenAddress, ServerSettings, TlsFiles};

/// Where the API listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";

/// How the admin API is served, as flags and the `[api]` table give it.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiOptions {
    /// TLS certificate (PEM, with its intermediates) for the admin API; with --tls-key.
    /// Needed to listen on an address other than loopback.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS certificate's private key (PEM): refused if every user may read it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve plain HTTP on an address other than loopback. Anyone on the path can then read
    /// the admin token and take over the firewall: use TLS or a unix socket instead.
    #[arg(long)]
    pub insecure_listen: bool,

    /// Group allowed to use the unix socket (mode 0660) besides the daemon's user, which must
    /// be in it (under the unit: allowlistd) [default: none, mode 0600].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// API connections open at once, 1 to 65536: at the limit, a new one closes the one that
    /// has waited longest for a request (idle ones first). Each takes an open file: the
    /// daemon raises its soft limit as needed and refuses to start if the hard limit
    /// (LimitNOFILE) cannot hold them.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,

    /// Time a client has to send a request's headers (and its TLS handshake), also when a
    /// kept-alive connection waits for its next request: idle or stalled connections are
    /// closed after it, 1s to 5m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,

    /// Time a client has to send a request's body once its headers are in (408 after it),
    /// 1s to 1h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
}

impl Default for ApiOptions {
    /// The defaults `--help` shows.
    fn default() -> Self {
        defaults()
    }
}

impl ApiOptions {
    /// The serving settings for `listen`, checked: an address beyond loopback needs TLS or
    /// --insecure-listen; TLS and the socket group each need their kind of address.
    pub fn resolve(self, listen: ListenAddress) -> Result<ServerSettings, ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return invalid("--tls-cert and --tls-key go together".into()),
        };
        match &listen {
            ListenAddress::Unix(_) if tls.is_some() => {
                return invalid(format!(
                    "--listen {listen} is a unix socket: TLS (--tls-cert) is for TCP addresses"
                ));
            }
            ListenAddress::Tcp(_) if self.socket_group.is_some() => {
                return invalid(format!(
                    "--socket-group is for a unix socket (--listen unix:/PATH), not {listen}"
                ));
            }
            ListenAddress::Tcp(_)
                if !listen.is_local() && tls.is_none() && !self.insecure_listen =>
            {
                return invalid(format!(
                    "--listen {listen} is reachable from other hosts, and plain HTTP would show \
                     them the admin token: give --tls-cert and --tls-key, listen on loopback or \
                     a unix socket (unix:/run/allowlistd/api.sock), or accept the risk with \
                     --insecure-listen"
                ));
            }
            _ => {}
        }
        let settings = ServerSettings {
            listen,
            tls,
            socket_group: self.socket_group,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.request_timeout,
        };
        if !(1..=65_536).contains(&settings.max_connections) {
            return invalid(format!(
                "--max-connections {} is out of range: give 1 to 65536",
                settings.max_connections
            ));
        }
        for (flag, value, most) in [
            ("--header-timeout", settings.header_timeout, 300),
            ("--request-timeout", settings.body_timeout, 3600),
        ] {
            if value < Duration::from_secs(1) || value > Duration::from_secs(most) {
                return invalid(format!(
                    "{flag} {} is out of range: give 1s to {}",
                    humantime::format_duration(value),
                    humantime::format_duration(Duration::from_secs(most))
                ));
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(listen: &str, options: ApiOptions) -> Result<ServerSettings, String> {
        options
            .resolve(listen.parse().expect("address"))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn plain_http_beyond_loopback_is_refused_unless_asked_for() {
        let err = resolve("0.0.0.0:9180", ApiOptions::default()).expect_err("refused");
        assert!(err.contains("give --tls-cert and --tls-key"), "{err}");
        assert!(err.contains("--insecure-listen"), "{err}");
        let insecure = ApiOptions {
            insecure_listen: true,
            ..ApiOptions::default()
        };
        assert!(resolve("0.0.0.0:9180", insecure).is_ok());
        let tls = ApiOptions {
            tls_cert: Some("/etc/allowlist/api.pem".into()),
            tls_key: Some("/etc/allowlist/api-key.pem".into()),
            ..ApiOptions::default()
        };
        let settings = resolve("192.0.2.1:9180", tls).expect("TLS");
        assert!(settings.tls.is_some());
        for local in [
            "127.0.0.1:9180",
            "[::1]:9180",
            "unix:/run/allowlistd/api.sock",
        ] {
            assert!(resolve(local, ApiOptions::default()).is_ok(), "{local}");
        }
    }

    #[test]
    fn options_of_the_other_kind_of_address_are_refused() {
        let group = ApiOptions {
            socket_group: Some("adm".into()),
            ..ApiOptions::default()
        };
        assert!(
            resolve("127.0.0.1:9180", group)
                .expect_err("TCP")
                .contains("--socket-group is for a unix socket")
        );
        let tls = ApiOptions {
            tls_cert: Some("/c.pem".into()),
            tls_key: Some("/k.pem".into()),
            ..ApiOptions::default()
        };
        assert!(
            resolve("unix:/run/allowlistd/api.sock", tls)
                .expect_err("unix")
                .contains("TLS (--tls-cert) is for TCP")
        );
    }

    #[test]
    fn the_defaults_bound_slow_and_many_clients() {
        let listen = DEFAULT_LISTEN.parse().expect("the default address");
        let settings = ApiOptions::default().resolve(listen).expect("defaults");
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(settings.max_connections, 256);
        assert_eq!(settings.header_timeout, Duration::from_secs(10));
        assert_eq!(settings.body_timeout, Duration::from_secs(60));
        let zero = ApiOptions {
            max_connections: 0,
            ..ApiOptions::default()
        };
        let listen = DEFAULT_LISTEN.parse().expect("the default address");
        assert!(zero.resolve(listen).is_err());
    }
}
