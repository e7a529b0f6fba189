//! Crowds of hostile API clients, each in a thread of its own inside a namespace: clients
//! that connect and send nothing, or send a request's headers a byte a second; every one
//! connects again as soon as it is closed.

use std::fs::File;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

/// What each client of a crowd sends.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Nothing: an idle connection.
    Idle,
    /// A request's headers, one byte a second, never finished.
    SlowHeaders,
}

/// A crowd of clients of one [`Behaviour`], stopped when dropped.
pub struct Crowd {
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

/// How long a client blocks at most, so that it sees the crowd stop.
const TICK: Duration = Duration::from_millis(500);

impl Crowd {
    /// Starts `clients` clients of `behaviour` against `address` from the namespace at
    /// `netns` (the process's open-file limit is raised to hold them).
    pub fn start(
        netns: &str,
        address: SocketAddr,
        clients: usize,
        behaviour: Behaviour,
    ) -> anyhow::Result<Crowd> {
        raise_file_limit(clients as u64 + 1024)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(clients);
        for _ in 0..clients {
            let namespace = File::open(netns).with_context(|| format!("opening {netns}"))?;
            let stop = stop.clone();
            let connections = connections.clone();
            let thread = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    if setns(&namespace, CloneFlags::CLONE_NEWNET).is_ok() {
                        client(address, behaviour, &stop, &connections);
                    }
                })
                .context("starting a client")?;
            threads.push(thread);
        }
        Ok(Crowd {
            stop,
            connections,
            threads,
        })
    }

    /// Connections the crowd has opened so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One client: connects, behaves, and connects again once closed, until `stop`.
fn client(address: SocketAddr, behaviour: Behaviour, stop: &AtomicBool, opened: &AtomicU64) {
    let header = b"GET /v1/enforcement HTTP/1.1\r\nX-Slow: ";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect_timeout(&address, TICK) else {
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_read_timeout(Some(TICK));
        let mut sent = 0usize;
        let mut waited = Duration::ZERO;
        let mut buffer = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if matches!(behaviour, Behaviour::SlowHeaders) && waited >= Duration::from_secs(1) {
                let byte = header.get(sent).copied().unwrap_or(b'a');
                if stream.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                waited = Duration::ZERO;
            }
            match stream.read(&mut buffer) {
                // Closed (or answered, which closes too): connect again.
                Ok(_) => break,
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    waited += TICK;
                }
                Err(_) => break,
            }
        }
    }
}

/// Raises this process's soft open-file limit to at least `files`, within the hard limit.
fn raise_file_limit(files: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < files {
        setrlimit(Resource::RLIMIT_NOFILE, files.min(hard), hard)?;
    }
    Ok(())
}
