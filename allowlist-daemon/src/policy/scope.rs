//! Protected local ports: the scopes an allowlist can be limited to.

/// A transport protocol whose ports a scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A protected local port, written `tcp/22` or `udp/51820`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortScope {
    /// The protocol.
    pub transport: Transport,
    /// The local port.
    pub port: u16,
}

impl std::str::FromStr for PortScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{s:?} is not a protected port such as tcp/22 or udp/51820");
        let (protocol, port) = s.trim().split_once('/').ok_or_else(invalid)?;
        let transport = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return Err(invalid()),
        };
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if port == 0 {
            return Err(invalid());
        }
        Ok(PortScope { transport, port })
    }
}

impl std::fmt::Display for PortScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{protocol}/{}", self.port)
    }
}

impl serde::Serialize for PortScope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PortScope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_scopes_parse_and_print() {
        let scope: PortScope = "TCP/22".parse().expect("scope");
        assert_eq!(
            scope,
            PortScope {
                transport: Transport::Tcp,
                port: 22
            }
        );
        assert_eq!(
            "udp/51820".parse::<PortScope>().expect("scope").to_string(),
            "udp/51820"
        );
        for bad in ["22", "sctp/22", "tcp/0", "tcp/65536", "tcp/"] {
            assert!(bad.parse::<PortScope>().is_err(), "{bad}");
        }
    }
}
