//! Where the admin API listens.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the admin API listens: a TCP address (`127.0.0.1:9180`) or a unix socket
/// (`unix:/run/allowlistd/api.sock`), as local admin APIs such as Docker's and containerd's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP address and port.
    Tcp(SocketAddr),
    /// The path of a unix socket.
    Unix(PathBuf),
}

impl ListenAddress {
    /// Whether only this host can reach the address: a loopback address or a unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddress::Tcp(address) => address.ip().is_loopback(),
            ListenAddress::Unix(_) => true,
        }
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "`{text}`: a unix socket needs an absolute path (unix:/run/allowlistd/api.sock)"
                ));
            }
            return Ok(ListenAddress::Unix(path));
        }
        text.parse()
            .map(ListenAddress::Tcp)
            .map_err(|_| format!("`{text}` is no listen address: give ADDRESS:PORT or unix:/PATH"))
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(address) => write!(f, "{address}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses_and_unix_sockets_parse_and_print_back() {
        for text in [
            "127.0.0.1:9180",
            "[::1]:9180",
            "unix:/run/allowlistd/api.sock",
        ] {
            let address: ListenAddress = text.parse().expect(text);
            assert_eq!(address.to_string(), text);
        }
        assert!(
            "unix:api.sock"
                .parse::<ListenAddress>()
                .expect_err("relative")
                .contains("absolute path")
        );
        assert!("localhost".parse::<ListenAddress>().is_err());
    }

    #[test]
    fn only_loopback_and_unix_sockets_are_local() {
        let local = |text: &str| text.parse::<ListenAddress>().expect(text).is_local();
        assert!(local("127.0.0.1:9180"));
        assert!(local("[::1]:9180"));
        assert!(local("unix:/run/allowlistd/api.sock"));
        assert!(!local("0.0.0.0:9180"));
        assert!(!local("192.0.2.1:9180"));
    }
}
