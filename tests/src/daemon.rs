//! `allowlistd` run as an operator runs it, inside the server namespace of a [`TestLink`],
//! with its own state directory; and an HTTP client that reaches its API on the namespace's
//! loopback.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::allowlistd_binary;
use crate::netns::{NetNs, SERVER_IF, TestLink};

/// Where the daemon listens, inside the server namespace.
pub const API_ADDR: &str = "127.0.0.1:9180";

/// A state directory under the system temp dir, removed when dropped with the log a
/// daemon keeps beside it (one file across restarts).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates an empty, uniquely named directory.
    pub fn new() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "allowlist-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The bpffs directory a daemon with this state directory pins its maps and links in
    /// (removed with it, which detaches what the daemon left attached).
    pub fn pin_dir(&self) -> PathBuf {
        pin_dir_for(&self.0)
    }
}

/// allowlistd in `link`'s server namespace guarding its veth, listening on `listen`, with
/// `state_dir`, its pin directory and `args`.
fn command(
    link: &TestLink,
    state_dir: &Path,
    listen: &str,
    wrapper: &[&str],
    args: &[&str],
) -> anyhow::Result<Command> {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", link.server.path()))
        .args(wrapper)
        .arg(allowlistd_binary()?)
        .args(["--iface", SERVER_IF, "--listen", listen, "--state-dir"])
        .arg(state_dir)
        .arg("--pin-dir")
        .arg(pin_dir_for(state_dir))
        .args(args);
    Ok(command)
}

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in
/// KiB.
pub fn process_memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The pin directory [`Daemon::start`] gives a daemon whose state is in `state_dir`.
fn pin_dir_for(state_dir: &Path) -> PathBuf {
    let name = state_dir.file_name().unwrap_or_default();
    Path::new("/sys/fs/bpf").join(name)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
        let _ = std::fs::remove_dir_all(self.pin_dir());
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Response {
    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A running allowlistd, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    ns_path: String,
    ns_name: String,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The admin token.
    pub token: String,
    /// Where its API listens, as `--listen` gave it.
    listen: String,
    /// Whether it serves TLS.
    tls: bool,
    /// Its stderr, beside the state directory; appended to by every restart.
    log: PathBuf,
}

impl Daemon {
    /// Starts allowlistd in `link`'s server namespace guarding its veth, with `state_dir` and
    /// `args`, and waits until its API answers on [`API_ADDR`].
    pub fn start(link: &TestLink, state_dir: &Path, args: &[&str]) -> anyhow::Result<Daemon> {
        Daemon::start_listening(link, state_dir, API_ADDR, args)
    }

    /// Starts allowlistd as [`Daemon::start`] does, run by `wrapper` (a command that execs
    /// the rest of its arguments in the same process, such as `setpriv ...` or
    /// `strace -D ...`).
    pub fn start_wrapped(
        link: &TestLink,
        state_dir: &Path,
        wrapper: &[&str],
        args: &[&str],
    ) -> anyhow::Result<Daemon> {
        Daemon::launch(link, state_dir, API_ADDR, wrapper, args)
    }

    /// Starts allowlistd as [`Daemon::start`] does, listening on `listen` (an address in the
    /// server namespace, or `unix:/PATH`) instead.
    pub fn start_listening(
        link: &TestLink,
        state_dir: &Path,
        listen: &str,
        args: &[&str],
    ) -> anyhow::Result<Daemon> {
        Daemon::launch(link, state_dir, listen, &[], args)
    }

    fn launch(
        link: &TestLink,
        state_dir: &Path,
        listen: &str,
        wrapper: &[&str],
        args: &[&str],
    ) -> anyhow::Result<Daemon> {
        let ns = &link.server;
        let log = state_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = command(link, state_dir, listen, wrapper, args)?
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting allowlistd")?;
        let mut daemon = Daemon {
            child: Some(child),
            ns_path: ns.path(),
            ns_name: ns.name().to_owned(),
            state_dir: state_dir.to_owned(),
            token: String::new(),
            listen: listen.to_owned(),
            tls: args.contains(&"--tls-cert"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("allowlistd exited with {status}: {}", daemon.log());
            }
            if daemon.answers() {
                break;
            }
            if Instant::now() > deadline {
                bail!("allowlistd did not answer within 20 s: {}", daemon.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.token = std::fs::read_to_string(state_dir.join("admin.token"))?
            .trim()
            .to_owned();
        Ok(daemon)
    }

    /// Runs allowlistd as [`Daemon::start`] would, expecting it to refuse to start: fails
    /// if it is still running after 20 s (it is killed then). Returns its exit status and
    /// what it logged.
    pub fn refusal(
        link: &TestLink,
        state_dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        Daemon::refusal_listening(link, state_dir, API_ADDR, args)
    }

    /// Runs allowlistd as [`Daemon::refusal`] does, listening on `listen`.
    pub fn refusal_listening(
        link: &TestLink,
        state_dir: &Path,
        listen: &str,
        args: &[&str],
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let log = state_dir.with_extension("refusal.log");
        let mut child = command(link, state_dir, listen, &[], args)?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("running allowlistd")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("allowlistd did not refuse to start: {}", read(&log));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = read(&log);
        let _ = std::fs::remove_file(&log);
        Ok((status, text))
    }

    /// Whether the API answers: `GET /healthz` gives 200, or for a TLS listener (which this
    /// harness speaks no TLS to), the port accepts connections.
    fn answers(&self) -> bool {
        if self.tls {
            return self.connect().is_ok();
        }
        matches!(
            self.request("GET", "/healthz", None, &[]),
            Ok(Response { status: 200, .. })
        )
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; fails unless it exits successfully.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = child.wait()?;
        if !status.success() {
            bail!("allowlistd exited with {status}: {}", self.log());
        }
        Ok(())
    }

    /// Sends SIGTERM and waits at most `limit` for a successful exit; returns how long it
    /// took. A daemon still running then is killed, and that is an error.
    pub fn stop_within(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let started = std::time::Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        while started.elapsed() < limit {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("allowlistd exited with {status}: {}", self.log());
                }
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "allowlistd still ran {limit:?} after SIGTERM: {}",
            self.log()
        )
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.memory_kib("VmHWM")
    }

    /// The daemon's resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.memory_kib("VmRSS")
    }

    /// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
    fn memory_kib(&self, field: &str) -> Option<u64> {
        process_memory_kib(self.child.as_ref()?.id(), field)
    }

    /// A TCP connection to the API, from inside the daemon's namespace.
    pub fn connect(&self) -> anyhow::Result<TcpStream> {
        let address = self.listen.clone();
        Ok(NetNs::enter_path(&self.ns_path, move || {
            TcpStream::connect(address)
        })??)
    }

    /// A connection to the API wherever it listens: TCP in the daemon's namespace, or its
    /// unix socket.
    pub fn connect_any(&self) -> anyhow::Result<Box<dyn Connection>> {
        Ok(match self.listen.strip_prefix("unix:") {
            Some(path) => Box::new(UnixStream::connect(path)?),
            None => Box::new(self.connect()?),
        })
    }

    /// The URL allowlistctl reaches this daemon at.
    pub fn url(&self) -> String {
        if self.listen.starts_with("unix:") {
            self.listen.clone()
        } else if self.tls {
            format!("https://{}", self.listen)
        } else {
            format!("http://{}", self.listen)
        }
    }

    /// Kills the daemon with SIGKILL.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends a request with the admin token.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let authorization = format!("Bearer {}", self.token);
        self.request(method, path, body, &[("Authorization", &authorization)])
            .unwrap_or_else(|err| panic!("{method} {path}: {err:#}\n{}", self.log()))
    }

    /// Sends a request with exactly the given extra headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, body.as_deref(), headers)
    }

    /// Sends a bodiless request and returns the status and the body as text.
    pub fn raw_text(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let raw = self.exchange(method, path, None, headers)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let status = std::str::from_utf8(&raw[..split])?
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        Ok((
            status,
            String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
        ))
    }

    /// `GET /metrics` with the admin token: the Prometheus text.
    pub fn scrape(&self) -> String {
        let auth = format!("Bearer {}", self.token);
        let (status, text) = self
            .raw_text("GET", "/metrics", &[("Authorization", auth.as_str())])
            .expect("scrape");
        assert_eq!(status, 200, "{text}");
        text
    }

    /// Sends a request with a raw body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        let raw = self.exchange(method, path, body, headers)?;
        let response =
            parse_response(&raw).with_context(|| format!("{method} {path} in {}", self.ns_name))?;
        if let Err(mismatch) = crate::openapi::check(method, path, response.status, &response.body)
        {
            panic!("the API and its OpenAPI document disagree: {mismatch}\n{response:?}");
        }
        Ok(response)
    }

    /// Sends one HTTP/1.1 request on a connection opened in the daemon's namespace and returns
    /// the raw response.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Vec<u8>> {
        let mut stream = self.connect_any()?;
        stream.set_timeout(Duration::from_secs(60))?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {API_ADDR}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("Content-Length: 0\r\n\r\n");
        }
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    }

    /// Runs allowlistctl against this daemon (in its namespace, with its token file), outside
    /// any SSH session.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_in_ssh_session(None, args)
    }

    /// Runs allowlistctl as [`Daemon::ctl`] does, into a reader that takes one byte and goes
    /// (`| head -c 1`): allowlistctl's standard error.
    pub fn ctl_into_closed_pipe(&self, args: &[&str]) -> String {
        let ctl = allowlistd_binary()
            .expect("allowlistd binary")
            .with_file_name("allowlistctl");
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .args(["sh", "-c", r#""$0" "$@" | head -c 1 >/dev/null"#])
            .arg(ctl)
            .args(["--url", &self.url(), "--token-file"])
            .arg(self.state_dir.join("admin.token"))
            .args(args)
            .output()
            .expect("running allowlistctl | head");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Runs allowlistctl as [`Daemon::ctl`] does, with `input` on its standard input.
    pub fn ctl_fed(&self, input: &str, args: &[&str]) -> Output {
        let ctl = allowlistd_binary()
            .expect("allowlistd binary")
            .with_file_name("allowlistctl");
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .arg(ctl)
            .args(["--url", &self.url(), "--token-file"])
            .arg(self.state_dir.join("admin.token"))
            .args(args)
            .env_remove("SSH_CONNECTION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running allowlistctl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .expect("feeding allowlistctl");
        }
        child.wait_with_output().expect("running allowlistctl")
    }

    /// Runs allowlistctl as from an SSH session whose `SSH_CONNECTION` is given.
    pub fn ctl_in_ssh_session(&self, ssh_connection: Option<&str>, args: &[&str]) -> Output {
        let ctl = allowlistd_binary()
            .expect("allowlistd binary")
            .with_file_name("allowlistctl");
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .arg(ctl)
            .args(["--url", &self.url(), "--token-file"])
            .arg(self.state_dir.join("admin.token"))
            .args(args)
            .env_remove("SSH_CONNECTION")
            .envs(ssh_connection.map(|value| ("SSH_CONNECTION", value)))
            .output()
            .expect("running allowlistctl")
    }
}

/// A connection to the API: TCP or unix socket.
pub trait Connection: std::io::Read + std::io::Write {
    /// Bounds each read on it.
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()>;
}

impl Connection for TcpStream {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl Connection for UnixStream {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Parses a raw HTTP/1.1 response (a chunked body is joined).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .context("no status line")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end])?.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(end + 2..end + 2 + size).context("short chunk")?);
        data = &data[end + 4 + size..];
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
