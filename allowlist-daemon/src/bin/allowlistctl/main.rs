//! `allowlistctl`: the command-line client of allowlistd's admin API. One function per verb,
//! in the module of what it acts on.

mod cli;
mod client;
mod enforcement;
mod fleet;
mod import;
mod lists;
mod output;
mod preview;
mod session;
mod unix_socket;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use nix::sys::signal::{SigHandler, Signal, signal};

use cli::{Cli, Command};
use client::Api;
use output::Output;

pub(crate) use enforcement::read_policy_file;

/// The unix socket the packaged service listens on.
const PACKAGED_SOCKET: &str = "/run/allowlistd/api.sock";

/// The API's address when none is given: the packaged service's unix socket when it exists,
/// else the daemon's default TCP address.
fn default_url() -> String {
    if std::path::Path::new(PACKAGED_SOCKET).exists() {
        format!("unix:{PACKAGED_SOCKET}")
    } else {
        format!("http://{}", allowlist_daemon::config::DEFAULT_LISTEN)
    }
}

fn main() -> ExitCode {
    // Like any Unix filter: when the reader of the output goes away (`| head`), end
    // quietly instead of failing on the next write.
    // SAFETY: restores the default action of SIGPIPE; no handler is installed, and no other
    // thread runs yet.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.token.is_some() {
        anyhow::bail!(
            "--token would show the admin token to every user in `ps`; put it in the \
             environment variable ALLOWLIST_TOKEN or in a file given with --token-file"
        );
    }
    // The verbs that need no daemon.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "allowlistctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            return clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page");
        }
        _ => {}
    }
    let token = std::env::var("ALLOWLIST_TOKEN").ok();
    let url = cli.url.unwrap_or_else(default_url);
    let api = Api::new(&url, cli.cacert.as_deref(), token, cli.token_file)?;
    let as_json = cli.json;
    let output = match cli.command {
        Command::Status => enforcement::status(&api)?,
        Command::List => lists::list(&api, as_json)?,
        Command::Show { list } => lists::show(&api, &list, as_json)?,
        Command::Create(args) => lists::create(&api, args)?,
        Command::Add(args) => lists::add(&api, args, as_json)?,
        Command::Remove {
            list,
            entry,
            preview,
        } => lists::remove(&api, &list, &entry, &preview, as_json)?,
        Command::Update { list, from_file } => lists::update(&api, &list, &from_file)?,
        Command::Import(args) => lists::import(&api, args, as_json)?,
        Command::Delete { list } => lists::delete(&api, &list)?,
        Command::Export => lists::export(&api)?,
        Command::Enable(args) => enforcement::enable(&api, args, as_json)?,
        Command::Disable { lists, preview } => {
            enforcement::disable(&api, &lists, &preview, as_json)?
        }
        Command::Scopes { ports, preview, .. } => {
            enforcement::scopes(&api, &ports, &preview, as_json)?
        }
        Command::Ack => enforcement::acknowledge(&api)?,
        Command::Apply(args) => enforcement::apply(&api, args, as_json)?,
        Command::Fleet(command) => fleet::run(command, &api)?,
        Command::Evaluate { ip } => Output::Evaluation(api.get(&format!("/v1/evaluate?ip={ip}"))?),
        Command::Stats => Output::Stats(api.get("/v1/stats")?),
        Command::Top { window, limit } => {
            Output::Top(api.get(&format!("/v1/top?window={window}&limit={limit}"))?)
        }
        Command::Audit { limit, after } => {
            let cursor = after.map(|id| format!("&after={id}")).unwrap_or_default();
            Output::Audit(api.get(&format!("/v1/audit?limit={limit}{cursor}"))?)
        }
        Command::Completions { .. } | Command::Man => Output::Printed,
    };
    output.print(as_json)
}
