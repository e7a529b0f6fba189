//! Pure translations between the driver's values and the maps' bytes: policy digests, port
//! bitmaps, refused-source keys, the raw enforcement config. No kernel here; the layouts are
//! the shared `const fn`s of `allowlist-common`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use allowlist_common::{PROTECTED_PORT_WORDS, SourceKey, protected_port_mask, protected_port_word};
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};

use super::types::Enforcement;
use crate::policy::{Policy, PortScope, Transport};

/// The digest a generation's record names `policy` by: SHA-256 over each prefix (family
/// byte, address, length) and its rule (little-endian), in the policy's order.
pub(super) fn policy_digest(policy: &Policy) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut buffer = Vec::with_capacity(64 * 1024);
    for (net, rule) in policy.iter() {
        match net {
            IpNet::V4(v4) => {
                buffer.push(4);
                buffer.extend_from_slice(&v4.addr().octets());
            }
            IpNet::V6(v6) => {
                buffer.push(6);
                buffer.extend_from_slice(&v6.addr().octets());
            }
        }
        buffer.push(net.prefix_len());
        buffer.extend_from_slice(&rule.to_le_bytes());
        if buffer.len() >= 64 * 1024 - 32 {
            hasher.update(&buffer);
            buffer.clear();
        }
    }
    hasher.update(&buffer);
    hasher.finalize().into()
}

/// The port bitmap words of `scopes` in generation `generation`: (map index, word) for each
/// of its [`PROTECTED_PORT_WORDS`] words, in order.
pub(super) fn port_words(generation: u32, scopes: &BTreeSet<PortScope>) -> Vec<(u32, u64)> {
    let base = protected_port_word(generation, false, 0);
    let mut words: Vec<(u32, u64)> = (base..base + PROTECTED_PORT_WORDS)
        .map(|index| (index, 0))
        .collect();
    for scope in scopes {
        let udp = scope.transport == Transport::Udp;
        let index = protected_port_word(generation, udp, scope.port);
        words[(index - base) as usize].1 |= protected_port_mask(scope.port);
    }
    words
}

/// The scopes one generation's [`PROTECTED_PORT_WORDS`] bitmap words name (TCP, then UDP).
pub(super) fn scopes_of(words: &[u64]) -> BTreeSet<PortScope> {
    let half = PROTECTED_PORT_WORDS as usize / 2;
    let mut scopes = BTreeSet::new();
    for (index, word) in words.iter().enumerate() {
        let transport = if index < half {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        for bit in (0..64usize).filter(|bit| word & (1u64 << bit) != 0) {
            if let Ok(port) = u16::try_from((index % half) * 64 + bit) {
                scopes.insert(PortScope { transport, port });
            }
        }
    }
    scopes
}

/// The address of a refused-source key.
pub(super) fn source_address(key: &SourceKey) -> IpAddr {
    match key.family {
        4 => {
            let [a, b, c, d, ..] = key.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        _ => IpAddr::V6(Ipv6Addr::from(key.addr)),
    }
}

/// `enforcement` as the kernel's configuration stores it, in generation `generation`.
pub(super) fn raw_enforcement(
    generation: u32,
    enforcement: &Enforcement,
) -> allowlist_common::Enforcement {
    allowlist_common::Enforcement {
        generation,
        mode: enforcement.mode as u32,
        scoped: u32::from(!enforcement.scopes.is_empty()),
        reserved: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    fn scope(s: &str) -> PortScope {
        s.parse().expect("test scope")
    }

    #[test]
    fn digests_tell_policies_apart_by_prefix_length_rule_and_family() {
        let of = |prefixes: &[(&str, u32)]| {
            policy_digest(&prefixes.iter().map(|(p, r)| (net(p), *r)).collect())
        };
        let base = of(&[("192.0.2.0/24", 1), ("2001:db8::/32", 2)]);
        assert_eq!(
            base,
            of(&[("2001:db8::/32", 2), ("192.0.2.0/24", 1)]),
            "order given"
        );
        assert_ne!(base, of(&[("192.0.2.0/25", 1), ("2001:db8::/32", 2)]));
        assert_ne!(base, of(&[("192.0.2.0/24", 3), ("2001:db8::/32", 2)]));
        assert_ne!(base, of(&[("192.0.2.0/24", 1)]));
        assert_ne!(of(&[("::c000:200/120", 1)]), of(&[("192.0.2.0/24", 1)]));
        assert_ne!(of(&[]), [0; 32], "the empty policy has a digest too");
    }

    #[test]
    fn port_bitmaps_read_back_as_the_scopes_written() {
        let scopes: BTreeSet<PortScope> = ["tcp/22", "tcp/1", "tcp/65535", "udp/51820", "udp/1"]
            .into_iter()
            .map(scope)
            .collect();
        let written = port_words(2, &scopes);
        assert_eq!(written.len(), PROTECTED_PORT_WORDS as usize);
        assert_eq!(
            written[0].0,
            2 * PROTECTED_PORT_WORDS,
            "generation 2's words"
        );
        assert_eq!(
            written[0].1,
            1 << 1 | 1 << 22,
            "tcp/1 and tcp/22 share the first word"
        );
        let words: Vec<u64> = written.iter().map(|(_, word)| *word).collect();
        assert_eq!(scopes_of(&words), scopes);
        assert!(scopes_of(&vec![0; PROTECTED_PORT_WORDS as usize]).is_empty());
    }

    #[test]
    fn refused_sources_decode_by_family() {
        let mut v4 = SourceKey {
            family: 4,
            ..SourceKey::default()
        };
        v4.addr[..4].copy_from_slice(&[198, 51, 100, 7]);
        assert_eq!(
            source_address(&v4),
            "198.51.100.7".parse::<IpAddr>().expect("addr")
        );
        let v6 = SourceKey {
            addr: "2001:db8::9".parse::<Ipv6Addr>().expect("addr").octets(),
            family: 6,
            padding: [0; 3],
        };
        assert_eq!(
            source_address(&v6),
            "2001:db8::9".parse::<IpAddr>().expect("addr")
        );
    }

    #[test]
    fn the_raw_enforcement_says_whether_scopes_apply() {
        let mut enforcement = Enforcement {
            mode: allowlist_common::Mode::Monitor,
            ..Enforcement::default()
        };
        let raw = raw_enforcement(1, &enforcement);
        assert_eq!((raw.generation, raw.mode, raw.scoped), (1, 1, 0));
        enforcement.scopes.insert(scope("tcp/22"));
        assert_eq!(raw_enforcement(1, &enforcement).scoped, 1);
    }
}
