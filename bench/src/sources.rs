//! The benchmark's inputs: deterministic random prefixes and the addresses inside them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A deterministic generator (xorshift), so every run measures the same policy.
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `count` random prefixes of one family: half host routes, half of the lengths allowlists
/// hold (IPv4 /20-/31, IPv6 /32-/64 in global unicast space).
pub fn random_prefixes(random: &mut Xorshift, v6: bool, count: u32) -> Vec<IpNet> {
    let mut nets = std::collections::BTreeSet::new();
    while nets.len() < count as usize {
        let host = random.next().is_multiple_of(2);
        let net = if v6 {
            let len = if host {
                128
            } else {
                32 + (random.next() % 33) as u8
            };
            // Global unicast space, like the sources of real traffic.
            let bits =
                (u128::from(random.next()) << 64 | u128::from(random.next())) >> 3 | (1u128 << 125);
            IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
        } else {
            let len = if host {
                32
            } else {
                20 + (random.next() % 12) as u8
            };
            IpNet::new(IpAddr::V4(Ipv4Addr::from(random.next() as u32)), len)
        };
        if let Ok(net) = net {
            nets.insert(net.trunc());
        }
    }
    nets.into_iter().collect()
}

/// A random address inside `net`.
pub fn inside(random: &mut Xorshift, net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let host = (random.next() as u32) & !u32::from(v4.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) | host))
        }
        IpNet::V6(v6) => {
            let bits = u128::from(random.next()) << 64 | u128::from(random.next());
            let host = bits & !u128::from(v6.netmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()) | host))
        }
    }
}

/// `count` IPv4 prefixes (at most 2^20) as operators' big lists hold them, none overlapping
/// another: half host routes, half /20 to /28, each in a /20 block of its own picked at
/// random. `seed` picks the blocks and lengths: two seeds give two mostly different sets.
pub fn disjoint_v4_prefixes(seed: u64, count: u32) -> Vec<IpNet> {
    let mut random = Xorshift(seed | 1);
    let mut blocks: Vec<u32> = (0..1u32 << 20).collect();
    // A partial Fisher-Yates shuffle: the first `count` blocks, at random.
    let count = (count as usize).min(blocks.len());
    for i in 0..count {
        let j = i + (random.next() % (blocks.len() - i) as u64) as usize;
        blocks.swap(i, j);
    }
    blocks[..count]
        .iter()
        .map(|block| {
            let len = if random.next().is_multiple_of(2) {
                32
            } else {
                20 + (random.next() % 9) as u8
            };
            // A random position in the block, aligned to the prefix.
            let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let offset = random.next() as u32 & 0xfff & !host_bits;
            let addr = IpAddr::V4(Ipv4Addr::from((block << 12) | offset));
            IpNet::new(addr, len).map_or_else(|_| IpNet::from(addr), |net| net.trunc())
        })
        .collect()
}

/// `count` IPv4 unicast sources (outside 0/8, 127/8 and 224/3, as real traffic's are):
/// inside `prefixes` (at random in a prefix picked at random) when `allowed`, else outside
/// every one of them. `prefixes` must not overlap.
pub fn v4_sources(
    random: &mut Xorshift,
    prefixes: &[IpNet],
    allowed: bool,
    count: usize,
) -> Vec<Ipv4Addr> {
    let mut ranges: Vec<(u32, u32)> = prefixes
        .iter()
        .filter_map(|net| match net {
            IpNet::V4(v4) => Some((u32::from(v4.network()), u32::from(v4.broadcast()))),
            IpNet::V6(_) => None,
        })
        .collect();
    ranges.sort_unstable();
    let covered = |addr: u32| {
        let after = ranges.partition_point(|&(start, _)| start <= addr);
        after > 0 && ranges[after - 1].1 >= addr
    };
    let unicast = |addr: u32| !matches!(addr >> 24, 0 | 127 | 224..);
    let mut sources = Vec::with_capacity(count);
    // Give up on a policy that holds (or leaves) no unicast address at all.
    for _ in 0..count.saturating_mul(1000) {
        if sources.len() == count || ranges.is_empty() {
            break;
        }
        let addr = if allowed {
            let (start, end) = ranges[(random.next() % ranges.len() as u64) as usize];
            start + (random.next() % (u64::from(end - start) + 1)) as u32
        } else {
            random.next() as u32
        };
        if unicast(addr) && covered(addr) == allowed {
            sources.push(Ipv4Addr::from(addr));
        }
    }
    sources
}
