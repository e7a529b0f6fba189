//! A real etcd (Debian's `etcd-server`) in a network namespace of its own, with a temporary
//! data dir, and a bridge there that each test host's namespace joins through a veth pair:
//! the fleet's network, apart from the test links the programs guard.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::allowlistd_binary;
use crate::daemon::TempDir;
use crate::netns::NetNs;

/// etcd's address on the fleet's network.
pub const ETCD_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The interface by which a host's namespace reaches etcd.
pub const FLEET_IF: &str = "fleet0";

/// etcd, killed and its namespace removed when dropped.
pub struct Etcd {
    ns: NetNs,
    data: TempDir,
    child: Option<Child>,
    joined: u8,
}

impl Etcd {
    /// Starts etcd in a new namespace and waits until it answers.
    pub fn start() -> anyhow::Result<Etcd> {
        let ns = NetNs::create("etcd")?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["addr", "add", &format!("{ETCD_ADDRESS}/24"), "dev", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        let mut etcd = Etcd {
            ns,
            data: TempDir::new()?,
            child: None,
            joined: 0,
        };
        etcd.restart()?;
        Ok(etcd)
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://{ETCD_ADDRESS}:2379")
    }

    /// Starts etcd again on its data dir (after [`Etcd::kill`]) and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.data.path().with_extension("etcd.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path()))
            .arg("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "test=http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian's etcd-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.healthy() {
            if Instant::now() > deadline {
                bail!("etcd did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.etcdctl(&["endpoint", "health"])
            .is_ok_and(|output| output.status.success())
    }

    /// Kills etcd (SIGKILL); its data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Connects `host`'s namespace to the fleet's network; returns its address there.
    pub fn join(&mut self, host: &NetNs) -> anyhow::Result<Ipv4Addr> {
        self.joined += 1;
        let address = Ipv4Addr::new(10, 99, 0, 10 + self.joined);
        let port = format!("h{}", self.joined);
        crate::netns::run(Command::new("ip").args([
            "link",
            "add",
            FLEET_IF,
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.ns.name(),
        ]))?;
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"])?;
        host.ip(&["addr", "add", &format!("{address}/24"), "dev", FLEET_IF])?;
        host.ip(&["link", "set", FLEET_IF, "up"])?;
        Ok(address)
    }

    /// Runs etcdctl against this etcd.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path()))
            .arg("etcdctl")
            .args(["--endpoints", &self.endpoint(), "--dial-timeout", "2s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .context("running etcdctl (Debian's etcd-client)")
    }

    /// Compacts the history up to the latest revision: older revisions cannot be watched.
    pub fn compact(&self) -> anyhow::Result<()> {
        let status = self.etcdctl(&["endpoint", "status", "--write-out", "json"])?;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
        let revision = status[0]["Status"]["header"]["revision"]
            .as_i64()
            .context("etcd's revision")?;
        let output = self.etcdctl(&["compact", &revision.to_string()])?;
        if !output.status.success() {
            bail!("compacting: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Runs `allowlistctl fleet ARGS` against this etcd, for fleet `fleet`.
    pub fn fleet_ctl(&self, fleet: &str, args: &[&str]) -> Output {
        let ctl = allowlistd_binary()
            .expect("allowlistd binary")
            .with_file_name("allowlistctl");
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.ns.path()))
            .arg(ctl)
            .arg("fleet")
            .args(args)
            .env("ALLOWLIST_FLEET_ENDPOINTS", self.endpoint())
            .env("ALLOWLIST_FLEET", fleet);
        command.output().expect("running allowlistctl fleet")
    }

    /// etcd's own metrics (Prometheus text), read from inside its namespace.
    pub fn metrics(&self) -> anyhow::Result<String> {
        use std::io::{Read as _, Write as _};
        self.ns.enter(|| -> anyhow::Result<String> {
            let mut stream = std::net::TcpStream::connect((ETCD_ADDRESS, 2379))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })?
    }

    /// etcd's resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::daemon::process_memory_kib(self.child.as_ref()?.id(), "VmRSS")
    }

    /// A file in etcd's temporary directory.
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.data.path().join(name)
    }

    /// What etcd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().with_extension("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.data.path().with_extension("etcd.log"));
    }
}

/// Writes a policy file `name` into `dir` and returns its path.
pub fn policy_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a policy file");
    path
}
