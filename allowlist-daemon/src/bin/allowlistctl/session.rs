//! The address the operator is connected from, for the lockout guard: the client address of
//! the SSH session allowlistctl runs in. `sudo` strips SSH_CONNECTION from the environment,
//! so when it is missing the parent processes' environments are read (root may read them):
//! the login shell that sudo was started from still has it.

use std::net::IpAddr;

/// How many parent processes are looked at, at most.
const MOST_ANCESTORS: usize = 32;

/// The client address of the SSH session this runs in, if one is found.
pub(crate) fn operator_address() -> Option<IpAddr> {
    if let Some(address) = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|value| client_address(&value))
    {
        return Some(address);
    }
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..MOST_ANCESTORS {
        if pid <= 1 {
            return None;
        }
        if let Some(address) = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|environ| from_environ(&environ))
        {
            return Some(address);
        }
        pid = parent_of(pid)?;
    }
    None
}

/// The client address in an SSH_CONNECTION value (`CLIENT CLIENT_PORT SERVER SERVER_PORT`).
fn client_address(value: &str) -> Option<IpAddr> {
    value.split_whitespace().next()?.parse().ok()
}

/// The client address of SSH_CONNECTION in a process's environment (`/proc/PID/environ`:
/// `NAME=VALUE` strings, each ended by a NUL byte).
fn from_environ(environ: &[u8]) -> Option<IpAddr> {
    environ
        .split(|byte| *byte == 0)
        .find_map(|variable| variable.strip_prefix(b"SSH_CONNECTION="))
        .and_then(|value| client_address(std::str::from_utf8(value).ok()?))
}

/// The parent of process `pid`, from `/proc/PID/stat` (`pid (comm) state ppid ...`; the
/// command name may hold spaces and parentheses, so fields are counted after the last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_found_in_an_environment_block() {
        let environ = b"HOME=/root\0SSH_CONNECTION=203.0.113.9 50022 192.0.2.1 22\0TERM=xterm\0";
        assert_eq!(
            from_environ(environ),
            Some("203.0.113.9".parse().expect("literal"))
        );
        assert_eq!(from_environ(b"HOME=/root\0"), None);
        assert_eq!(
            client_address("2001:db8::7 50022 2001:db8::1 22"),
            Some("2001:db8::7".parse().expect("literal"))
        );
    }

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        let own = std::process::id() as i32;
        assert_eq!(parent_of(own), Some(nix::unistd::getppid().as_raw()));
    }
}
