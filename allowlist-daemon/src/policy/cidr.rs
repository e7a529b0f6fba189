//! Allowlist entries as given: addresses and CIDRs, checked.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a string is not an acceptable allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Neither an IP address nor a CIDR.
    #[error(
        "{input:?} is not an IPv4/IPv6 address or CIDR (e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32)"
    )]
    Invalid {
        /// What was given.
        input: String,
    },
    /// A CIDR whose address has bits set beyond the prefix length.
    #[error("{input} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// What was given.
        input: String,
        /// The network the input probably meant: its address with the host bits cleared.
        network: IpNet,
    },
    /// An IPv4-mapped IPv6 prefix (`::ffff:10.0.0.1`): IPv4 packets carry the IPv4 address,
    /// so such an entry would never match them.
    #[error("{input} is an IPv4-mapped IPv6 address, which IPv4 packets never carry: use {ipv4}")]
    Ipv4Mapped {
        /// What was given.
        input: String,
        /// The IPv4 prefix meant.
        ipv4: IpNet,
    },
}

/// Checks a prefix as an allowlist entry must be: host bits clear, not IPv4-mapped. `input`
/// is what the error shows.
pub fn check_prefix(net: IpNet, input: &str) -> Result<IpNet, CidrError> {
    if net.trunc() != net {
        return Err(CidrError::HostBitsSet {
            input: input.to_owned(),
            network: net.trunc(),
        });
    }
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(ipv4) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return Err(CidrError::Ipv4Mapped {
            input: input.to_owned(),
            ipv4: IpNet::V4(ipv4),
        });
    }
    Ok(net)
}

/// Parses an allowlist entry: a plain address (meaning /32 or /128) or a CIDR whose host bits
/// are clear; IPv4-mapped IPv6 prefixes are refused with the IPv4 prefix meant.
pub fn parse_cidr(input: &str) -> Result<IpNet, CidrError> {
    let trimmed = input.trim();
    let net = match trimmed.parse::<IpAddr>() {
        Ok(addr) => IpNet::from(addr),
        Err(_) => trimmed.parse().map_err(|_| CidrError::Invalid {
            input: input.to_owned(),
        })?,
    };
    check_prefix(net, input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn plain_addresses_are_host_prefixes() {
        assert_eq!(parse_cidr("192.0.2.7"), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_cidr(" 2001:db8::1 "), Ok(net("2001:db8::1/128")));
    }

    #[test]
    fn cidrs_are_accepted_as_given() {
        assert_eq!(parse_cidr("198.51.100.0/24"), Ok(net("198.51.100.0/24")));
        assert_eq!(parse_cidr("2001:db8::/32"), Ok(net("2001:db8::/32")));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
    }

    #[test]
    fn host_bits_name_the_network_meant() {
        let err = parse_cidr("10.1.2.3/8").expect_err("host bits set");
        assert_eq!(
            err,
            CidrError::HostBitsSet {
                input: "10.1.2.3/8".into(),
                network: net("10.0.0.0/8"),
            }
        );
        assert_eq!(
            err.to_string(),
            "10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        assert!(matches!(
            parse_cidr("2001:db8::1/64"),
            Err(CidrError::HostBitsSet { network, .. }) if network == net("2001:db8::/64")
        ));
    }

    #[test]
    fn ipv4_mapped_prefixes_name_the_ipv4_prefix_meant() {
        let err = parse_cidr("::ffff:10.0.0.1").expect_err("mapped");
        assert_eq!(
            err.to_string(),
            "::ffff:10.0.0.1 is an IPv4-mapped IPv6 address, which IPv4 packets never carry: \
             use 10.0.0.1/32"
        );
        assert!(matches!(
            parse_cidr("::ffff:10.0.0.0/104"),
            Err(CidrError::Ipv4Mapped { ipv4, .. }) if ipv4 == net("10.0.0.0/8")
        ));
        // Wider IPv6 prefixes that happen to contain the mapped range are ordinary ones.
        assert_eq!(parse_cidr("::/64"), Ok(net("::/64")));
        assert_eq!(parse_cidr("::fffe:0:0/95"), Ok(net("::fffe:0:0/95")));
    }

    #[test]
    fn garbage_is_invalid() {
        for input in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "host.example",
            "::/129",
            "1.2.3.4/-1",
        ] {
            assert!(
                matches!(parse_cidr(input), Err(CidrError::Invalid { .. })),
                "{input:?} should be invalid"
            );
        }
    }
}
