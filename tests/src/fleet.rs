//! A fleet with real parts for the tests: etcd (Debian's etcd-server) in a namespace of its
//! own, allowlistd hosts in theirs following it, and allowlistctl to publish and acknowledge.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{Daemon, TempDir};
use crate::etcd::{Etcd, policy_file};
use crate::netns::TestLink;
use crate::scenario::office;

/// The fleet's name.
pub const FLEET: &str = "web";

/// A host of the fleet: allowlistd guarding its test link.
pub struct Host {
    /// Its daemon.
    pub daemon: Daemon,
    /// Its test link.
    pub link: TestLink,
    /// Its state directory.
    pub state: TempDir,
    /// Its daemon's flags.
    pub args: Vec<String>,
}

impl Host {
    /// `GET /v1/fleet`.
    pub fn fleet(&self) -> Value {
        self.daemon.call("GET", "/v1/fleet", None).body
    }

    /// Restarts its daemon (SIGTERM) with the same flags.
    pub fn restart(&mut self) {
        self.daemon.stop().expect("SIGTERM");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Daemon::start(&self.link, self.state.path(), &args).expect("restart");
    }
}

/// etcd and the hosts following it.
pub struct Fleet {
    /// The hosts.
    pub hosts: Vec<Host>,
    /// The fleet's etcd.
    pub etcd: Etcd,
    /// Where the tests write policy files.
    pub files: TempDir,
}

/// etcd and `hosts` allowlistd following fleet [`FLEET`] with acknowledgement windows of
/// `window` (`[ack-min, ack-max]`) and `extra` flags.
pub fn fleet(hosts: usize, window: [&str; 2], extra: &[&str]) -> Fleet {
    let mut etcd = Etcd::start().expect("etcd");
    let hosts = (0..hosts)
        .map(|n| {
            let link = TestLink::create().expect("test link");
            etcd.join(&link.server)
                .expect("joining the fleet's network");
            let state = TempDir::new().expect("state dir");
            let mut args: Vec<String> = [
                "--ack-min",
                window[0],
                "--ack-max",
                window[1],
                "--fleet-endpoints",
                &etcd.endpoint(),
                "--fleet",
                FLEET,
                "--host-name",
                &format!("host{n}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let daemon = Daemon::start(&link, state.path(), &refs).expect("allowlistd");
            Host {
                daemon,
                link,
                state,
                args,
            }
        })
        .collect();
    Fleet {
        hosts,
        etcd,
        files: TempDir::new().expect("files"),
    }
}

/// A policy file enabling "office": the client's allowed addresses, and `more`.
pub fn office_file(more: &[&str]) -> String {
    let entries: Vec<String> = office()
        .into_iter()
        .chain(more.iter().map(|s| s.to_string()))
        .map(|cidr| format!("  {{ cidr = \"{cidr}\" }},"))
        .collect();
    format!(
        "[[allowlist]]\nname = \"office\"\nenabled = true\nentries = [\n{}\n]\n",
        entries.join("\n")
    )
}

impl Fleet {
    /// Publishes `text` as a release based on `base`; returns the release id.
    pub fn publish(&self, text: &str, base: Option<&str>) -> String {
        self.publish_with(text, base, &[])
    }

    /// Publishes `text` as a release based on `base`, with `more` arguments (`--sign-key
    /// FILE`); returns the release id.
    pub fn publish_with(&self, text: &str, base: Option<&str>, more: &[&str]) -> String {
        let file = policy_file(self.files.path(), "release.toml", text);
        let mut args = vec!["publish", "-f", file.to_str().expect("path")];
        if let Some(base) = base {
            args.extend(["--base", base]);
        }
        args.extend(more);
        let output = self.etcd.fleet_ctl(FLEET, &args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "publish: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .split_whitespace()
            .nth(2)
            .expect("the release id")
            .to_owned()
    }

    /// `allowlistctl fleet ack RELEASE`; fails unless it succeeds.
    pub fn ack(&self, release: &str) {
        let output = self.etcd.fleet_ctl(FLEET, &["ack", release]);
        assert!(output.status.success(), "{output:?}");
    }

    /// The key `rest` of the fleet in etcd (`current`, `releases/ID`, ...).
    pub fn key(&self, rest: &str) -> String {
        format!("/allowlist/fleets/{FLEET}/{rest}")
    }

    /// Writes `value` at the fleet's key `rest` directly, as anyone with etcd access may.
    pub fn put(&self, rest: &str, value: &str) {
        let output = self
            .etcd
            .etcdctl(&["put", &self.key(rest), value])
            .expect("etcdctl put");
        assert!(output.status.success(), "{output:?}");
    }

    /// What the fleet's key `rest` holds (empty when nothing).
    pub fn get(&self, rest: &str) -> String {
        let output = self
            .etcd
            .etcdctl(&["get", &self.key(rest), "--print-value-only"])
            .expect("etcdctl get");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The fleet's keys under `rest` (keys only).
    pub fn keys(&self, rest: &str) -> Vec<String> {
        let output = self
            .etcd
            .etcdctl(&["get", &self.key(rest), "--prefix", "--keys-only"])
            .expect("etcdctl get");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `allowlistctl fleet status --json`.
    pub fn status(&self) -> Value {
        let output = self.etcd.fleet_ctl(FLEET, &["status", "--json"]);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).expect("status JSON")
    }
}

/// Waits up to `seconds` for `ready`.
pub fn wait(seconds: u64, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within {seconds} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every host says `state` about `release`.
pub fn wait_all(fleet: &Fleet, release: &str, state: &str, seconds: u64) {
    for (n, host) in fleet.hosts.iter().enumerate() {
        wait(seconds, &format!("host{n} {state} on {release}"), || {
            let view = host.fleet();
            view["fleet"]["release"] == release && view["fleet"]["state"] == state
        });
    }
}
