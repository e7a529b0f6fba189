//! `allowlistd`: the allowlist firewall daemon.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use allowlist_common::Mode;
use allowlist_daemon::api::{AppState, router};
use allowlist_daemon::auth::AdminToken;
use allowlist_daemon::config::{DEFAULT_PIN_DIR, Options};
use allowlist_daemon::dataplane::{AttachMode, Dataplane, KernelLog, ReplyOpeners};
use allowlist_daemon::fleet::FleetView;
use allowlist_daemon::fleet::follower::Follower;
use allowlist_daemon::server::Server;
use allowlist_daemon::service::{Service, Usage, flush_refusal_summaries, load_state};
use allowlist_daemon::store::{AuditLog, Store};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

/// Lets in only the sources on an IP allowlist, enforced in the kernel by XDP.
///
/// allowlistd attaches its XDP program to the given interfaces and serves a local HTTP admin
/// API (see `allowlistctl --help`) that manages named allowlists. While at least one
/// allowlist is enabled, IPv4/IPv6 packets from sources outside the enabled lists and the
/// --allow prefixes are dropped; with none enabled, everything passes. Frames that are not IP
/// and IPv6 neighbour discovery always pass.
///
/// Every enable, disable or narrowing edit must be acknowledged between --ack-min and
/// --ack-max after it is applied, or it is reverted: by the XDP program itself at the deadline
/// (even if allowlistd is dead), and in the state by allowlistd. State is kept in --state-dir.
///
/// Enforcement outlives the daemon: maps and links are pinned under --pin-dir. Stopping
/// allowlistd (SIGINT, SIGTERM) leaves the policy enforced; starting it again takes the pins
/// over without a gap and reconciles them with the state on disk. `allowlistd teardown`
/// removes the program from every interface.
#[derive(Debug, Parser)]
#[command(
    name = "allowlistd",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// TOML file with any of the options below (keys as the flag names: iface = ["eth1"],
    /// ack-min = "90s"); flags win over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    options: Options,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stops enforcing: detaches the program from every interface and removes its pinned maps
    /// and links. Refused while a process (a running allowlistd) holds the maps, naming it:
    /// stop the daemon first.
    Teardown {
        /// The pin directory the daemon used.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Remove the pins even though a process holds the maps (a running daemon then
        /// enforces on until it stops, and pins them again when it restarts).
        #[arg(long)]
        force: bool,
    },
    /// Prints a shell completion script: `allowlistd completions bash`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints this manual page (roff): `allowlistd man | man -l -`.
    Man,
}

/// Runs the daemon; prints an error and its causes on one line (`error: ...`), never a
/// debug dump or a backtrace.
fn main() -> std::process::ExitCode {
    one_malloc_arena();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keeps glibc's allocator to one arena, unless the operator set `MALLOC_ARENA_MAX`. By
/// default every thread that allocates gets an arena of its own (up to eight per CPU), each
/// keeping what is freed in it: a large request parsed on one worker thread and applied on
/// another leaves both arenas full. Measured with 1M entries created, enabled and replaced
/// (2 CPUs): peak RSS 424 and 427 MiB by default, 289 and 293 MiB with one arena, the
/// replace no slower. The daemon seldom allocates on two threads at once.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: sets an allocator tunable; called first thing in `main`, before any other
        // thread exists.
        unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    let args =
        <Args as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    match &args.command {
        Some(Command::Completions { shell }) => {
            let mut command = <Args as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "allowlistd", &mut std::io::stdout());
            return Ok(());
        }
        Some(Command::Man) => {
            clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page")?;
            return Ok(());
        }
        _ => {}
    }
    if let Some(Command::Teardown { pin_dir, force }) = &args.command {
        let holders = Dataplane::holders(pin_dir);
        if !holders.is_empty() && !force {
            let named: Vec<String> = holders
                .iter()
                .map(|holder| format!("{} (pid {})", holder.command, holder.pid))
                .collect();
            anyhow::bail!(
                "{} holds the maps pinned under {}: stop it first (systemctl stop allowlistd), \
                 or pass --force to remove the pins under it",
                named.join(", "),
                pin_dir.display()
            );
        }
        let removed = Dataplane::teardown(pin_dir)
            .with_context(|| format!("removing the pins under {}", pin_dir.display()))?;
        if removed.is_empty() {
            tracing::info!(path = %pin_dir.display(), "nothing pinned: nothing to tear down");
        }
        for path in removed {
            tracing::info!(pin = %path.display(), "removed");
        }
        return Ok(());
    }
    let options = match &args.config {
        Some(path) => Options::from_file(path)?
            .overridden_by(&matches)
            .with_context(|| format!("putting the flags over {}", path.display()))?,
        None => args.options,
    };
    let config = options.resolve()?;
    // An interface that is not there refuses the start before the kernel is touched, unless
    // it is to be waited for.
    let absent: Vec<String> = config
        .options
        .iface
        .iter()
        .filter(|name| !interface_exists(name))
        .cloned()
        .collect();
    if let Some(interface) = absent.first() {
        anyhow::ensure!(
            config.options.wait_for_iface,
            "there is no interface {interface} here: name one `ip link` lists, or give \
             --wait-for-iface to attach to it once it appears"
        );
    }
    // So does one that another XDP program holds (named, with what to do).
    for interface in config
        .options
        .iface
        .iter()
        .filter(|name| !absent.contains(name))
    {
        Dataplane::check_free(&config.options.pin_dir, interface)?;
    }

    // The state is read and checked before the kernel is touched: a bad state file changes
    // nothing there.
    let started = std::time::Instant::now();
    let mut store = Store::open(&config.options.state_dir)?;
    let service_settings = config.service();
    let saved = load_state(&service_settings, &mut store)?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "state read and checked"
    );
    let (token, created) = AdminToken::load_or_create(&config.token_file)?;
    if created {
        tracing::info!(path = %config.token_file.display(), "created the admin token");
    }
    // The API's address is bound (and its TLS files read) before the kernel is touched too: a
    // start that fails leaves no program attached and nothing pinned. Connections wait in the
    // backlog until the policy is enforced and the API serves.
    let server = Server::bind(&config.server).await?;
    let mut dataplane = Dataplane::open(&config.options.pin_dir, config.options.max_flows)
        .context("loading the XDP program")?;
    if let Some(kernel_log) = dataplane.take_kernel_log() {
        tokio::spawn(relay_kernel_log(kernel_log));
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "program loaded, generation records read"
    );
    if saved.is_none() && dataplane.kernel_state().active.mode != Mode::Off {
        anyhow::bail!(
            "{} holds no state, but the kernel enforces a policy an earlier allowlistd pinned \
             under {}; restore the state file, or run `allowlistd teardown --pin-dir {}` to \
             start afresh",
            config.options.state_dir.display(),
            config.options.pin_dir.display(),
            config.options.pin_dir.display()
        );
    }
    let mut service = Service::start(
        service_settings,
        dataplane,
        store,
        saved.unwrap_or_default(),
    )
    .context("restoring the state")?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "the kernel enforces the state"
    );
    for interface in &config.options.iface {
        if absent.contains(interface) {
            tracing::warn!(
                interface,
                "the interface does not exist yet: attaching to it once it appears"
            );
            continue;
        }
        let mode = service
            .dataplane_mut()
            .attach(interface, config.options.xdp_mode.into())
            .with_context(|| format!("attaching to {interface}"))?;
        tracing::info!(interface, %mode, "attached");
    }
    service
        .dataplane_mut()
        .release_others(&config.options.iface)
        .context("releasing interfaces no longer configured")?;
    tracing::info!(
        enforcing = service.model().enforcing(),
        enabled = ?service.model().enabled(),
        always_allow = ?config.always_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        scopes = ?service.model().scopes().iter().map(ToString::to_string).collect::<Vec<_>>(),
        replies = config.replies.enabled,
        replies_opened_by = %describe_openers(&config.reply_openers),
        unprotected_protocols = ?config.unprotected_protocols,
        "policy restored"
    );

    tracing::info!(
        address = %config.server.listen,
        tls = config.server.tls.is_some(),
        "admin API listening"
    );
    // systemd (Type=notify): ready once the program is attached and the API answers.
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %err, "telling systemd we are ready");
    }
    let published = service.published();
    let usage = Arc::new(
        service
            .usage()
            .context("opening the counters for reading")?,
    );
    let audit = service.audit_log();
    tokio::spawn(flush_refusal_summaries_every(
        audit.clone(),
        Duration::from_secs(5),
    ));
    let service = Arc::new(Mutex::new(service));
    tokio::spawn(revert_when_due(service.clone()));
    tokio::spawn(renew_flow_filter(service.clone()));
    tokio::spawn(refresh_feeds(service.clone()));
    if !absent.is_empty() {
        tokio::spawn(attach_when_present(
            service.clone(),
            absent,
            config.options.xdp_mode.into(),
        ));
    }
    tokio::spawn(log_counters(usage.clone(), config.options.stats_interval));
    let fleet = config.fleet.clone().map(|fleet| {
        let view = Arc::new(Mutex::new(FleetView::new(&fleet)));
        tokio::spawn(Follower::new(fleet, service.clone(), view.clone()).run());
        view
    });

    let app = router(
        AppState {
            service: service.clone(),
            published,
            usage: usage.clone(),
            metrics_top_entries: config.options.metrics_top_entries,
            token: Arc::new(token),
            requests: Arc::default(),
            fleet,
            audit,
        },
        config.max_body_bytes,
        config.server.body_timeout,
    );
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // A stop lets requests under way finish, and closes within the server's grace the
    // connections that are idle or stalled (half a header, a body never sent).
    server
        .serve(app, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await;

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    log_counters_now(&usage);
    tracing::info!(
        pins = %config.options.pin_dir.display(),
        "stopped; the policy stays enforced (`allowlistd teardown` removes it)"
    );
    Ok(())
}

/// Writes the program's log lines (rate-limited in the kernel) to the daemon's log as they
/// come.
async fn relay_kernel_log(kernel_log: KernelLog) {
    // SAFETY: the descriptor is the ring buffer map's, owned by the reader for as long as
    // the AsyncFd holds it, and never changes.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(kernel_log, tokio::io::Interest::READABLE)
    };
    let mut ready = match registered {
        Ok(ready) => ready,
        Err(err) => {
            tracing::warn!(error = %err.into_parts().1, "the program's log lines cannot be read");
            return;
        }
    };
    loop {
        match ready.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading the program's log lines");
                return;
            }
        }
    }
}

/// Which of the host's packets open reply flows, for the start's log line.
fn describe_openers(openers: &ReplyOpeners) -> String {
    let ports = |name: &str, ports: &Option<std::collections::BTreeSet<u16>>| match ports {
        None => name.to_owned(),
        Some(ports) => ports
            .iter()
            .map(|port| format!("{name}/{port}"))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut kinds = vec![ports("tcp", &openers.tcp), ports("udp", &openers.udp)];
    if openers.icmp {
        kinds.push("icmp".to_owned());
    }
    kinds.retain(|kind| !kind.is_empty());
    kinds.join(" ")
}

/// Runs `work` on the service off the async workers (it takes the service's lock and may
/// write maps and files) and returns what it gives; `task` names it in the log if it panics
/// (`None` then).
async fn on_service<T: Send + 'static>(
    service: &Arc<Mutex<Service>>,
    task: &'static str,
    work: impl FnOnce(&mut Service) -> T + Send + 'static,
) -> Option<T> {
    let service = service.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        work(&mut service.lock().unwrap_or_else(PoisonError::into_inner))
    })
    .await;
    outcome
        .map_err(|err| tracing::error!(error = %err, "the {task} task failed"))
        .ok()
}

/// Reverts the pending change at its deadline, removes entries at their expiry, retries a
/// failed save, keeps the program's clock for last hits, shrinks maps left too large, and
/// ends a preview whose window passed.
async fn revert_when_due(service: Arc<Mutex<Service>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        on_service(&service, "revert", |service| {
            if let Err(err) = service.tick_clock() {
                tracing::warn!(error = %err, "moving the program's clock");
            }
            service.revert_if_due();
            service.expire_due();
            service.retry_save();
            service.shrink_if_due();
            service.end_preview_if_due();
        })
        .await;
    }
}

/// How often the lists that follow a feed are looked at (each is read at its own refresh).
const FEED_TICK: Duration = Duration::from_secs(1);
/// Writes the summaries of unauthenticated refusals `every` so often, once their minute is
/// over (see [`flush_refusal_summaries`]).
async fn flush_refusal_summaries_every(audit: Arc<Mutex<AuditLog>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let audit = audit.clone();
        let flushed = tokio::task::spawn_blocking(move || flush_refusal_summaries(&audit)).await;
        if let Err(err) = flushed {
            tracing::warn!(error = %err, "writing the audit trail");
        }
    }
}

/// The longest a feed may take to answer.
const FEED_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest feed read.
const FEED_MAX_BYTES: u64 = 64 << 20;

/// Reads the sources of the lists that follow one when they are due, off the service's
/// lock, and applies what they say (see [`Service::apply_feed`]).
async fn refresh_feeds(service: Arc<Mutex<Service>>) {
    let mut tick = tokio::time::interval(FEED_TICK);
    loop {
        tick.tick().await;
        let due = on_service(&service, "feed", |service| {
            service.due_feeds(std::time::Instant::now())
        })
        .await
        .unwrap_or_default();
        for (id, source) in due {
            let url = source.url.clone();
            let read = tokio::task::spawn_blocking(move || read_feed(&url))
                .await
                .unwrap_or_else(|err| Err(err.to_string()));
            on_service(&service, "feed", move |service| {
                match service.apply_feed(&id, read) {
                    Ok(refreshed) => {
                        tracing::debug!(list = id, ?refreshed, "read the list's source")
                    }
                    Err(err) => {
                        tracing::debug!(list = id, error = %err, "the list's source not applied")
                    }
                }
            })
            .await;
        }
    }
}

/// The text at `url`: at most [`FEED_MAX_BYTES`], within [`FEED_TIMEOUT`]; an HTTP error
/// status is an error.
fn read_feed(url: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FEED_TIMEOUT))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|err| err.to_string())?;
    response
        .body_mut()
        .with_config()
        .limit(FEED_MAX_BYTES)
        .read_to_string()
        .map_err(|err| err.to_string())
}

/// How often the reply check's flow filter is renewed from the flows still live.
const FLOW_FILTER_RENEWAL: Duration = Duration::from_secs(10);

/// Renews the reply check's flow filter every [`FLOW_FILTER_RENEWAL`], so that flows long
/// gone stop costing denied packets a flow map lookup.
async fn renew_flow_filter(service: Arc<Mutex<Service>>) {
    let mut tick = tokio::time::interval(FLOW_FILTER_RENEWAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        on_service(&service, "flow filter", |service| {
            match service.renew_flow_filter() {
                Ok(flows) => tracing::debug!(flows, "renewed the flow filter"),
                Err(err) => tracing::warn!(error = %err, "renewing the flow filter"),
            }
        })
        .await;
    }
}

/// Whether this network namespace has an interface named `name`.
fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Attaches to each of `absent` once it exists (looked for every second), in `mode`; an
/// attach that fails is logged and tried again.
async fn attach_when_present(
    service: Arc<Mutex<Service>>,
    mut absent: Vec<String>,
    mode: AttachMode,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !absent.is_empty() {
        tick.tick().await;
        let present: Vec<String> = absent
            .iter()
            .filter(|name| interface_exists(name))
            .cloned()
            .collect();
        for interface in present {
            let name = interface.clone();
            let attached = on_service(&service, "attach", move |service| {
                service.dataplane_mut().attach(&name, mode)
            })
            .await;
            match attached {
                Some(Ok(attached)) => {
                    tracing::info!(interface, mode = %attached, "the interface appeared: attached");
                    absent.retain(|name| *name != interface);
                }
                Some(Err(err)) => {
                    tracing::warn!(interface, error = %err, "attaching to the new interface");
                }
                None => {}
            }
        }
    }
}

async fn log_counters(usage: Arc<Usage>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        log_counters_now(&usage);
    }
}

fn log_counters_now(usage: &Usage) {
    match usage.counters() {
        Ok(counters) => tracing::info!(%counters, "counters"),
        Err(err) => tracing::warn!(error = %err, "reading counters"),
    }
}
