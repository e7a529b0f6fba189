//! Whether prefixes together cover a whole address family: `0.0.0.0/1` and `128.0.0.0/1`
//! allow every IPv4 source as `0.0.0.0/0` does, and need `allow_all` as it does.

use ipnet::IpNet;

/// The whole family (`0.0.0.0/0` or `::/0`) that `nets` together cover, if they cover one.
/// Linear in the prefixes unless their sizes add up to a whole family, which takes a sort.
pub fn covered_family<'a>(nets: impl Iterator<Item = &'a IpNet> + Clone) -> Option<IpNet> {
    for (v4, whole) in [(true, "0.0.0.0/0"), (false, "::/0")] {
        let family = nets.clone().filter(move |net| net.addr().is_ipv4() == v4);
        let bits = if v4 { 32 } else { 128 };
        // Too few addresses in all to cover the family: most sets stop here.
        let total = family.clone().fold(0u128, |total, net| {
            let size = 1u128
                .checked_shl(u32::from(bits - net.prefix_len()))
                .unwrap_or(u128::MAX);
            total.saturating_add(size)
        });
        let family_size = if v4 { 1u128 << 32 } else { u128::MAX };
        if total < family_size {
            continue;
        }
        let mut ranges: Vec<(u128, u128)> = family.map(|net| range(net, bits)).collect();
        ranges.sort_unstable();
        // The first address not covered yet; `None` once the family's end is covered.
        let mut next = Some(0u128);
        for (start, end) in ranges {
            let Some(wanted) = next else { break };
            if start > wanted {
                break;
            }
            next = next
                .max(end.checked_add(1))
                .filter(|_| end != family_end(bits));
        }
        if next.is_none_or(|first| first > family_end(bits)) {
            return whole.parse().ok();
        }
    }
    None
}

/// The first and last address of `net`, as numbers.
fn range(net: &IpNet, bits: u8) -> (u128, u128) {
    let start = match net.network() {
        std::net::IpAddr::V4(addr) => u128::from(u32::from(addr)),
        std::net::IpAddr::V6(addr) => u128::from(addr),
    };
    let host_bits = u32::from(bits - net.prefix_len());
    let span = 1u128
        .checked_shl(host_bits)
        .map_or(u128::MAX, |size| size - 1);
    (start, start.saturating_add(span).min(family_end(bits)))
}

/// The last address of a family of `bits`.
fn family_end(bits: u8) -> u128 {
    if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(cidrs: &[&str]) -> Option<String> {
        let nets: Vec<IpNet> = cidrs.iter().map(|c| c.parse().expect("cidr")).collect();
        covered_family(nets.iter()).map(|net| net.to_string())
    }

    #[test]
    fn halves_quarters_and_overlaps_that_cover_a_family_are_found() {
        assert_eq!(
            covered(&["0.0.0.0/1", "128.0.0.0/1"]).as_deref(),
            Some("0.0.0.0/0")
        );
        assert_eq!(
            covered(&["128.0.0.0/2", "0.0.0.0/1", "192.0.0.0/2", "10.0.0.0/8"]).as_deref(),
            Some("0.0.0.0/0")
        );
        assert_eq!(covered(&["0.0.0.0/0"]).as_deref(), Some("0.0.0.0/0"));
        assert_eq!(covered(&["::/1", "8000::/1"]).as_deref(), Some("::/0"));
        assert_eq!(covered(&["::/0", "2001:db8::/32"]).as_deref(), Some("::/0"));
    }

    #[test]
    fn a_gap_anywhere_is_not_a_whole_family() {
        assert_eq!(covered(&["0.0.0.0/1", "128.0.0.0/2"]), None);
        // As many addresses as a family, but one half twice.
        assert_eq!(covered(&["0.0.0.0/1", "0.0.0.0/2", "64.0.0.0/2"]), None);
        assert_eq!(
            covered(&["::/1", "8000::/2", "c000::/3", "e000::/3"]).as_deref(),
            Some("::/0")
        );
        assert_eq!(covered(&["::/1", "8000::/2", "c000::/3"]), None);
        assert_eq!(covered(&["0.0.0.0/1", "8000::/1"]), None);
        assert_eq!(covered(&[]), None);
    }
}
