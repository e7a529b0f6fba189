//! What the host itself says about who is connected: the sources of established inbound TCP
//! sessions to protected local ports, read from /proc/net/tcp and /proc/net/tcp6 of the
//! daemon's network namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP state code of ESTABLISHED in /proc/net/tcp.
const TCP_ESTABLISHED: &str = "01";

/// An established inbound TCP session to a protected port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Where it comes from.
    pub source: IpAddr,
    /// The local port it is connected to.
    pub port: u16,
}

/// Established TCP sessions whose local port is one of `ports`.
pub fn established_sessions(ports: &[u16]) -> std::io::Result<Vec<Session>> {
    let mut sources = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => sources.extend(parse_tcp_table(&text, ports)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(sources)
}

/// Parses one /proc/net/tcp{,6} table.
fn parse_tcp_table(text: &str, ports: &[u16]) -> Vec<Session> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = fields.next()?;
            let remote = fields.next()?;
            if fields.next()? != TCP_ESTABLISHED {
                return None;
            }
            let (_, local_port) = parse_endpoint(local)?;
            if !ports.contains(&local_port) {
                return None;
            }
            parse_endpoint(remote).map(|(source, _)| Session {
                source,
                port: local_port,
            })
        })
        .collect()
}

/// Parses `ADDR:PORT` in the kernel's hex notation: the address as 32-bit words in host
/// (little-endian) byte order, the port big-endian.
fn parse_endpoint(endpoint: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = endpoint.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut words = Vec::with_capacity(4);
    for chunk in addr.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        words.push(word.to_le_bytes());
    }
    let addr = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(*a)),
        [a, b, c, d] => {
            let mut octets = [0u8; 16];
            for (i, word) in [a, b, c, d].into_iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(word);
            }
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_sessions_to_protected_ports_are_found() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 010012C6:0016 030012C6:D431 01 00000000:00000000 02:000A7D1B 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n\
   2: 010012C6:1F90 020012C6:D432 01 00000000:00000000 02:000A7D1B 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1\n\
   3: 010012C6:0016 090012C6:D433 06 00000000:00000000 02:000A7D1B 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            parse_tcp_table(tcp, &[22]),
            vec![Session {
                source: IpAddr::from([198, 18, 0, 3]),
                port: 22
            }]
        );
        assert_eq!(parse_tcp_table(tcp, &[22, 8080]).len(), 2);
        assert!(parse_tcp_table(tcp, &[443]).is_empty());
    }

    #[test]
    fn ipv6_and_mapped_ipv4_remotes_are_decoded() {
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 110A00FD000000000000000001000000:0016 110A00FD000000000000000003000000:D431 01 0\n\
   1: 0000000000000000FFFF000001000A0A:0016 0000000000000000FFFF00000500000A:D432 01 0\n";
        assert_eq!(
            parse_tcp_table(tcp6, &[22])
                .iter()
                .map(|session| session.source)
                .collect::<Vec<_>>(),
            vec![
                IpAddr::V6("fd00:a11::3".parse().expect("literal")),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            ]
        );
    }
}
