//! Network namespaces and veth pairs that the tests create and always remove.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace the tests create, so leftovers are easy to find.
pub const NAMESPACE_PREFIX: &str = "allowlist-test-";

/// The server's address on the test link.
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's address that the tests put on the allowlist.
pub const CLIENT_ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The client's address that the tests leave off the allowlist.
pub const CLIENT_DENIED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// The server's IPv6 address on the test link.
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 1);
/// The client's IPv6 address that the tests put on the allowlist.
pub const CLIENT_ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 2);
/// The client's IPv6 address that the tests leave off the allowlist.
pub const CLIENT_DENIED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 3);

/// For each family: the client's allowed address, its denied address, and the server's.
pub const PROBES: [(IpAddr, IpAddr, IpAddr); 2] = [
    (
        IpAddr::V4(CLIENT_ALLOWED_V4),
        IpAddr::V4(CLIENT_DENIED_V4),
        IpAddr::V4(SERVER_V4),
    ),
    (
        IpAddr::V6(CLIENT_ALLOWED_V6),
        IpAddr::V6(CLIENT_DENIED_V6),
        IpAddr::V6(SERVER_V6),
    ),
];

/// Name of the server's end of the veth pair (inside the server namespace).
pub const SERVER_IF: &str = "srv0";
/// Name of the client's end of the veth pair (inside the client namespace).
pub const CLIENT_IF: &str = "cli0";

/// A network namespace, deleted (with its interfaces) when dropped.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a uniquely named namespace with its loopback up and IPv6 duplicate address
    /// detection off (so addresses are usable at once).
    pub fn create(role: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{NAMESPACE_PREFIX}{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        for conf in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{conf}.accept_dad=0"),
            ])?;
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path, for `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs a command inside the namespace and fails unless it succeeds.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        run(&mut self.command(argv))
    }

    /// A command that runs inside the namespace, for the caller to run.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it opens and interfaces
    /// it names belong to the namespace, and stay so when they leave the thread.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        Self::enter_path(&self.path(), f)
    }

    /// As [`NetNs::enter`], for the namespace at `path`.
    pub fn enter_path<R: Send>(path: &str, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        let file = File::open(path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: the server (where the program runs) and the client
/// (which holds an allowed and a denied address of each family).
pub struct TestLink {
    /// The namespace that receives the traffic.
    pub server: NetNs,
    /// The namespace that sends it.
    pub client: NetNs,
}

impl TestLink {
    /// Creates both namespaces, the veth pair and the addresses.
    pub fn create() -> anyhow::Result<Self> {
        let link = TestLink {
            server: NetNs::create("server")?,
            client: NetNs::create("client")?,
        };
        run(Command::new("ip").args([
            "link",
            "add",
            SERVER_IF,
            "netns",
            link.server.name(),
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            link.client.name(),
        ]))?;
        for (ns, ifname, addrs) in [
            (
                &link.server,
                SERVER_IF,
                [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)].as_slice(),
            ),
            (
                &link.client,
                CLIENT_IF,
                [
                    IpAddr::V4(CLIENT_ALLOWED_V4),
                    IpAddr::V4(CLIENT_DENIED_V4),
                    IpAddr::V6(CLIENT_ALLOWED_V6),
                    IpAddr::V6(CLIENT_DENIED_V6),
                ]
                .as_slice(),
            ),
        ] {
            for addr in addrs {
                add_address(ns, ifname, *addr)?;
            }
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(link)
    }

    /// Gives the client one more source address (on the test link's subnet of its family).
    pub fn add_client_address(&self, addr: IpAddr) -> anyhow::Result<()> {
        add_address(&self.client, CLIENT_IF, addr)
    }

    /// Whether an XDP program is attached to the server's interface, as `ip link` shows it.
    pub fn server_has_xdp(&self) -> anyhow::Result<bool> {
        let output = self.server.ip(&["-details", "link", "show", SERVER_IF])?;
        Ok(String::from_utf8_lossy(&output.stdout).contains("prog/xdp"))
    }
}

/// Puts `addr` on `ifname` in `ns`, in the test link's /24 or /64, usable at once.
fn add_address(ns: &NetNs, ifname: &str, addr: IpAddr) -> anyhow::Result<()> {
    match addr {
        IpAddr::V4(_) => ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname])?,
        IpAddr::V6(_) => ns.ip(&["addr", "add", &format!("{addr}/64"), "dev", ifname, "nodad"])?,
    };
    Ok(())
}

/// Runs a command and fails, with its output, unless it succeeds.
pub fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}
