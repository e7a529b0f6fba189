//! Pure translations between the driver's values and the maps' bytes: trie keys, port
//! bitmaps, refused-source keys, the raw enforcement config. No kernel here; the layouts are
//! the shared `const fn`s of `allowlist-common`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use allowlist_common::{
    Ipv4Key, Ipv6Key, PROTECTED_PORT_WORDS, SourceKey, ipv4_key, ipv4_key_parts, ipv6_key,
    ipv6_key_parts, protected_port_mask, protected_port_word, trie_prefix_len,
};
use aya::maps::lpm_trie::Key;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::types::Enforcement;
use crate::policy::{PortScope, Transport};

/// A prefix of one generation as a key of its family's trie.
#[derive(Clone, Copy)]
pub(super) enum TrieKey {
    /// A key of the IPv4 trie.
    V4(Key<Ipv4Key>),
    /// A key of the IPv6 trie.
    V6(Key<Ipv6Key>),
}

/// The trie key of `net` in `generation`.
pub(super) fn trie_key(generation: u32, net: IpNet) -> TrieKey {
    let g = generation as u8;
    let prefix_len = trie_prefix_len(u32::from(net.prefix_len()));
    match net {
        IpNet::V4(v4) => TrieKey::V4(Key::new(prefix_len, ipv4_key(g, v4.addr().octets()))),
        IpNet::V6(v6) => TrieKey::V6(Key::new(prefix_len, ipv6_key(g, &v6.addr().octets()))),
    }
}

/// The generation and prefix of an IPv4 trie key; `None` for a key no policy writes.
pub(super) fn v4_prefix(key: &Key<Ipv4Key>) -> Option<(u32, IpNet)> {
    let (generation, addr) = ipv4_key_parts(&key.data());
    let len = key.prefix_len().checked_sub(trie_prefix_len(0))?;
    let net = Ipv4Net::new(Ipv4Addr::from(addr), u8::try_from(len).ok()?).ok()?;
    Some((u32::from(generation), IpNet::V4(net)))
}

/// The generation and prefix of an IPv6 trie key; `None` for a key no policy writes.
pub(super) fn v6_prefix(key: &Key<Ipv6Key>) -> Option<(u32, IpNet)> {
    let (generation, addr) = ipv6_key_parts(&key.data());
    let len = key.prefix_len().checked_sub(trie_prefix_len(0))?;
    let net = Ipv6Net::new(Ipv6Addr::from(addr), u8::try_from(len).ok()?).ok()?;
    Some((u32::from(generation), IpNet::V6(net)))
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
    fn trie_keys_read_back_as_the_generation_and_prefix_written() {
        for (generation, prefix) in [
            (0, "192.0.2.0/24"),
            (2, "0.0.0.0/0"),
            (1, "198.51.100.7/32"),
            (2, "2001:db8::/32"),
            (0, "::/0"),
            (1, "2001:db8::1/128"),
        ] {
            let read = match trie_key(generation, net(prefix)) {
                TrieKey::V4(key) => v4_prefix(&key),
                TrieKey::V6(key) => v6_prefix(&key),
            };
            assert_eq!(read, Some((generation, net(prefix))), "{prefix}");
        }
        let TrieKey::V4(key) = trie_key(1, net("10.0.0.0/8")) else {
            panic!("an IPv4 key")
        };
        assert_eq!(
            key.prefix_len(),
            16,
            "8 bits of generation, then 8 of prefix"
        );
        assert_eq!(key.data(), [1, 10, 0, 0, 0]);
    }

    #[test]
    fn keys_no_policy_writes_are_recognised() {
        assert_eq!(
            v4_prefix(&Key::new(4, [0, 10, 0, 0, 0])),
            None,
            "shorter than a generation"
        );
        assert_eq!(
            v4_prefix(&Key::new(8 + 33, [0, 10, 0, 0, 0])),
            None,
            "longer than IPv4"
        );
        assert_eq!(
            v6_prefix(&Key::new(8 + 129, [0; 17])),
            None,
            "longer than IPv6"
        );
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
