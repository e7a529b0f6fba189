//! `allowlistctl`: the command-line client of allowlistd's admin API.

mod client;
mod fleet;
mod import;
mod output;
mod session;
mod unix_socket;

use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigHandler, Signal, signal};
use serde_json::{Value, json};

use client::Api;
use output::Output;

/// Manage the allowlists of allowlistd.
///
/// Lists are named by id or by name. Enabling, disabling and removing entries from an enabled
/// list take effect at once and must then be acknowledged (`allowlistctl ack`) between
/// allowlistd's --ack-min and --ack-max, or they are reverted. `enable` passes the address
/// you are connected from (the client of your SSH session: SSH_CONNECTION, or under sudo,
/// which strips it, that of the shell sudo runs in) so that allowlistd refuses a policy that
/// would cut you off; allowlistd also protects the established sessions to its protected
/// ports it sees, and says which addresses it checked.
#[derive(Debug, Parser)]
#[command(name = "allowlistctl", version, about, long_about)]
struct Cli {
    /// Address of allowlistd's admin API: http://HOST:PORT, https://HOST:PORT, or
    /// unix:/PATH for its unix socket [default: unix:/run/allowlistd/api.sock when that
    /// socket exists (the packaged service listens there), else http://127.0.0.1:9180].
    #[arg(long, env = "ALLOWLIST_URL", global = true)]
    url: Option<String>,

    /// CA certificate (PEM) that signed the API's TLS certificate, for an https:// URL whose
    /// certificate the system does not trust.
    #[arg(long, env = "ALLOWLIST_CACERT", value_name = "FILE", global = true)]
    cacert: Option<PathBuf>,

    /// Refused: a token on the command line shows in `ps` to every user.
    #[arg(long, hide = true, global = true)]
    token: Option<String>,

    /// File holding the admin token (the environment variable ALLOWLIST_TOKEN, when set,
    /// holds the token itself instead).
    #[arg(long, default_value = "/var/lib/allowlistd/admin.token", global = true)]
    token_file: PathBuf,

    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show whether the host enforces, which lists are enabled, and the pending change.
    Status,
    /// List the allowlists.
    List,
    /// Show one allowlist and its entries.
    Show {
        /// Id or name.
        list: String,
    },
    /// Create an allowlist.
    Create {
        /// Its name.
        name: String,
        /// What it is for.
        #[arg(long, short)]
        description: Option<String>,
        /// An entry: CIDR or address, optionally followed by =DESCRIPTION; repeat for several.
        #[arg(long = "entry", short, value_name = "CIDR[=DESCRIPTION]")]
        entries: Vec<String>,
        /// Let the list hold 0.0.0.0/0 or ::/0, which allow every source of their family.
        #[arg(long)]
        allow_all: bool,
        /// A feed the list follows (http:// or https://): allowlistd reads it every
        /// --refresh and replaces the entries by what it says, without an acknowledgement,
        /// unless it is empty or would remove more than half of them.
        #[arg(long, value_name = "URL")]
        source_url: Option<String>,
        /// How the feed is written.
        #[arg(long, value_enum, default_value = "lines", requires = "source_url")]
        source_format: allowlist_daemon::policy::FeedFormat,
        /// Time between two reads of the feed.
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "1h",
            requires = "source_url"
        )]
        refresh: String,
    },
    /// Add entries to an allowlist.
    Add {
        /// Id or name.
        list: String,
        /// CIDRs or addresses.
        #[arg(required = true)]
        cidrs: Vec<String>,
        /// Description of the new entries.
        #[arg(long, short)]
        description: Option<String>,
        /// The new entries leave the list by themselves after this long (90m, 2h, 3d; at most
        /// allowlistd's --max-entry-ttl), without an acknowledgement.
        #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
        ttl: Option<String>,
        /// The new entries leave the list by themselves at this time (RFC 3339:
        /// 2026-12-24T18:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Let the list hold 0.0.0.0/0 or ::/0, which allow every source of their family.
        #[arg(long)]
        allow_all: bool,
    },
    /// Remove one entry from an allowlist.
    Remove {
        /// Id or name.
        list: String,
        /// Entry id or its CIDR.
        entry: String,
    },
    /// Replace an allowlist's name, description and entries with a JSON file
    /// ({"name", "description", "entries": [{"cidr", "description"}]}; - for stdin). Refused
    /// if the list changed since it was read.
    Update {
        /// Id or name.
        list: String,
        /// The JSON file.
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
    /// Replace an allowlist's entries, in one change, with the prefixes of a file or a feed
    /// (- for stdin): one CIDR or address per line (# starts a comment), AWS ip-ranges.json,
    /// GitHub's meta API, or a JSON array. Entries already there keep their ids and
    /// descriptions. Reports what was added, removed and unchanged; any invalid prefix stops
    /// it (each named by its line or place) unless --skip-invalid. Removing entries from an
    /// enabled list is a pending change like any other.
    Import {
        /// Id or name.
        list: String,
        /// The file, or - for stdin.
        file: PathBuf,
        /// How the input is written.
        #[arg(long, value_enum, default_value = "lines")]
        format: allowlist_daemon::policy::FeedFormat,
        /// Description of the entries added.
        #[arg(long, short)]
        description: Option<String>,
        /// Import the valid prefixes and report the invalid ones, instead of changing nothing.
        #[arg(long)]
        skip_invalid: bool,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Let the list hold 0.0.0.0/0 or ::/0, which allow every source of their family.
        #[arg(long)]
        allow_all: bool,
    },
    /// Delete an allowlist that is not enabled.
    Delete {
        /// Id or name.
        list: String,
    },
    /// Enable allowlists (pending until acknowledged).
    Enable {
        /// Ids or names.
        #[arg(required = true)]
        lists: Vec<String>,
        /// The address to protect from lockout [default: the client of your SSH session].
        #[arg(long)]
        client_ip: Option<IpAddr>,
        /// Enable even if it would cut off your address or established sessions.
        #[arg(long)]
        force: bool,
    },
    /// Disable allowlists (pending until acknowledged).
    Disable {
        /// Ids or names.
        #[arg(required = true)]
        lists: Vec<String>,
    },
    /// Guard only these local ports (tcp/22, udp/51820); pending until acknowledged.
    Scopes {
        /// The protected ports.
        #[arg(required_unless_present = "all")]
        ports: Vec<String>,
        /// Guard every port again (no scopes).
        #[arg(long, conflicts_with = "ports")]
        all: bool,
    },
    /// Acknowledge the pending change.
    Ack,
    /// Converge this host's own lists to a policy file (TOML, or JSON of the same shape):
    /// create and update the lists it names, enable and disable them as it says, leave the
    /// others alone (--prune deletes them). A change to what is enforced is one pending change;
    /// applying the same file twice changes nothing.
    Apply {
        /// The policy file (- for standard input).
        #[arg(long = "file", short = 'f', value_name = "FILE")]
        file: PathBuf,
        /// Delete this host's own lists the file does not name.
        #[arg(long)]
        prune: bool,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait until the change may be acknowledged, then acknowledge it: proves that this
        /// client still reaches the host through the new policy.
        #[arg(long)]
        wait_ack: bool,
        /// The address to protect from lockout [default: the client of your SSH session].
        #[arg(long)]
        client_ip: Option<IpAddr>,
        /// Apply even if it would cut off your address or established sessions.
        #[arg(long)]
        force: bool,
    },
    /// Print this host's own lists as a policy file (TOML; --json for JSON), which `apply`
    /// reads back unchanged.
    Export,
    /// Fleets: publish a policy file to many hosts through etcd, acknowledge it, see each
    /// host's state; detach this host from its fleet.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Would this address pass now, and why.
    Evaluate {
        /// The address.
        ip: IpAddr,
    },
    /// Packet counters and the busiest entries.
    Stats,
    /// The sources refused most often lately (in monitor mode: those enforcing would cut
    /// off). Counts are estimates from a sample (allowlistd --top-sample).
    Top {
        /// Only sources seen this recently (30s, 5m).
        #[arg(long, default_value = "60s")]
        window: String,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print a shell completion script: `allowlistctl completions bash >
    /// /etc/bash_completion.d/allowlistctl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print this manual page (roff): `allowlistctl man | man -l -`.
    Man,
    /// The audit trail, newest first: each change applied, acknowledged, reverted or expired,
    /// and each request refused, with who, from where, the lists and entries concerned, and
    /// what the host enforced before and after.
    Audit {
        /// How many records to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only records older than this id (the `next` of a page before).
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
    },
}

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
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "allowlistctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page")?;
            return Ok(());
        }
        _ => {}
    }
    let token = std::env::var("ALLOWLIST_TOKEN").ok();
    let url = cli.url.unwrap_or_else(default_url);
    let api = Api::new(&url, cli.cacert.as_deref(), token, cli.token_file)?;
    let output = match cli.command {
        Command::Status => {
            let mut state = api.get("/v1/enforcement")?;
            state["kernel_memory"] = api.get("/v1/stats?top=1")?["kernel_memory"].take();
            Output::State(state)
        }
        Command::List if cli.json => Output::Lists(api.get("/v1/allowlists")?),
        Command::List => Output::Lists(api.get("/v1/allowlists?entries=false")?),
        Command::Show { list } => show(&api, &list, cli.json)?,
        Command::Create {
            name,
            description,
            entries,
            allow_all,
            source_url,
            source_format,
            refresh,
        } => {
            let entries: Vec<Value> = entries
                .iter()
                .map(|entry| match entry.split_once('=') {
                    Some((cidr, description)) => json!({"cidr": cidr, "description": description}),
                    None => json!({"cidr": entry}),
                })
                .collect();
            let mut body = json!({"name": name, "entries": entries, "allow_all": allow_all});
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            if let Some(url) = source_url {
                body["source"] = json!({ "url": url, "format": source_format, "refresh": refresh });
            }
            Output::List(api.post("/v1/allowlists", &body)?)
        }
        Command::Add {
            list,
            cidrs,
            description,
            ttl,
            expires_at,
            allow_all,
        } => {
            let id = api.resolve_id(&list)?;
            let entries: Vec<Value> = cidrs
                .iter()
                .map(|cidr| {
                    let mut entry = json!({
                        "cidr": cidr,
                        "description": description.clone().unwrap_or_default(),
                    });
                    if let Some(ttl) = &ttl {
                        entry["ttl"] = json!(ttl);
                    }
                    if let Some(at) = &expires_at {
                        entry["expires_at"] = json!(at);
                    }
                    entry
                })
                .collect();
            api.post(
                &format!("/v1/allowlists/{id}/entries"),
                &json!({ "entries": entries, "allow_all": allow_all }),
            )?;
            show(&api, &id, cli.json)?
        }
        Command::Remove { list, entry } => {
            let current = api.resolve(&list)?;
            let id = current["id"].as_str().unwrap_or_default();
            let entry_id = find_entry(&api, id, &entry)?;
            api.request(
                "DELETE",
                &format!("/v1/allowlists/{id}/entries/{entry_id}"),
                None,
                current["version"].as_u64(),
            )?;
            Output::State(api.get("/v1/enforcement")?)
        }
        Command::Update { list, from_file } => {
            let current = api.resolve(&list)?;
            let text = if from_file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&from_file)
                    .with_context(|| format!("reading {}", from_file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", from_file.display()))?;
            let id = current["id"].as_str().unwrap_or_default();
            Output::List(api.request(
                "PUT",
                &format!("/v1/allowlists/{id}"),
                Some(&body),
                current["version"].as_u64(),
            )?)
        }
        Command::Import {
            list,
            file,
            format,
            description,
            skip_invalid,
            dry_run,
            allow_all,
        } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading stdin")?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let report = import::Import {
                list: &list,
                text: &text,
                format,
                description: description.as_deref(),
                skip_invalid,
                dry_run,
                allow_all,
            }
            .run(&api)?;
            Output::Imported(report)
        }
        Command::Delete { list } => {
            let current = api.resolve(&list)?;
            let id = current["id"].as_str().unwrap_or_default();
            api.request(
                "DELETE",
                &format!("/v1/allowlists/{id}"),
                None,
                current["version"].as_u64(),
            )?;
            Output::Done(
                format!(
                    "deleted {id} ({})",
                    current["name"].as_str().unwrap_or_default()
                ),
                json!({ "deleted": id, "name": current["name"] }),
            )
        }
        Command::Enable {
            lists,
            client_ip,
            force,
        } => {
            let ids = lists
                .iter()
                .map(|l| api.resolve_id(l))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut body = json!({"allowlist_ids": ids, "force": force});
            if let Some(ip) = client_ip.or_else(session::operator_address) {
                body["client_ip"] = json!(ip);
            }
            Output::State(api.post("/v1/enforcement/enable", &body)?)
        }
        Command::Disable { lists } => {
            let ids = lists
                .iter()
                .map(|l| api.resolve_id(l))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Output::State(api.post("/v1/enforcement/disable", &json!({"allowlist_ids": ids}))?)
        }
        Command::Scopes { ports, .. } => Output::State(api.request(
            "PUT",
            "/v1/enforcement/scopes",
            Some(&json!({ "protect": ports })),
            None,
        )?),
        Command::Apply {
            file,
            prune,
            dry_run,
            wait_ack,
            client_ip,
            force,
        } => {
            let policy = read_policy_file(&file)?;
            let mut body = json!({
                "allowlists": policy.allowlists,
                "prune": prune,
                "dry_run": dry_run,
                "force": force,
            });
            if let Some(ip) = client_ip.or_else(session::operator_address) {
                body["client_ip"] = json!(ip);
            }
            let applied = api.post("/v1/apply", &body)?;
            if wait_ack && !dry_run && !applied["enforcement"]["pending"].is_null() {
                wait_and_acknowledge(&api, &applied["enforcement"]["pending"])?;
                let mut acknowledged = applied;
                acknowledged["acknowledged"] = json!(true);
                Output::Applied(acknowledged)
            } else {
                Output::Applied(applied)
            }
        }
        Command::Export => {
            let lists = api.get("/v1/allowlists")?;
            let file = allowlist_daemon::policy_file::PolicyFile {
                base: None,
                allowlists: lists["allowlists"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|list| list["fleet"].is_null())
                    .map(declared)
                    .collect(),
            };
            Output::File(file)
        }
        Command::Fleet(command) => fleet::run(command, &api)?,
        Command::Ack => {
            Output::State(api.request("POST", "/v1/enforcement/acknowledge", None, None)?)
        }
        Command::Evaluate { ip } => Output::Evaluation(api.get(&format!("/v1/evaluate?ip={ip}"))?),
        Command::Stats => Output::Stats(api.get("/v1/stats")?),
        Command::Top { window, limit } => {
            Output::Top(api.get(&format!("/v1/top?window={window}&limit={limit}"))?)
        }
        Command::Completions { .. } | Command::Man => Output::Printed,
        Command::Audit { limit, after } => {
            let cursor = after.map(|id| format!("&after={id}")).unwrap_or_default();
            Output::Audit(api.get(&format!("/v1/audit?limit={limit}{cursor}"))?)
        }
    };
    output.print(cli.json)
}

/// A list as the API shows it, as a policy file declares it.
fn declared(list: &Value) -> allowlist_daemon::model::DesiredList {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    allowlist_daemon::model::DesiredList {
        name: text(&list["name"]),
        description: text(&list["description"]),
        enabled: list["enabled"] == true,
        allow_all: list["allow_all"] == true,
        entries: list["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| allowlist_daemon::model::EntryInput {
                cidr: text(&entry["cidr"]),
                description: Some(text(&entry["description"])).filter(|d| !d.is_empty()),
                expires_at: entry["expires_at"].as_str().map(str::to_owned),
                ttl: None,
            })
            .collect(),
        // As the API shows it: credentials as `***`, which an apply on this host keeps.
        source: list["source"]["url"]
            .as_str()
            .map(|url| allowlist_daemon::model::SourceInput {
                url: url.to_owned(),
                format: serde_json::from_value(list["source"]["format"].clone())
                    .unwrap_or_default(),
                refresh: list["source"]["refresh"].as_str().map(str::to_owned),
            }),
    }
}

/// Reads a policy file (`-`: standard input), checked as a whole.
pub(crate) fn read_policy_file(
    path: &std::path::Path,
) -> anyhow::Result<allowlist_daemon::policy_file::PolicyFile> {
    use allowlist_daemon::policy_file::PolicyFile;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(PolicyFile::parse(std::path::Path::new("<stdin>"), &text)?);
    }
    Ok(PolicyFile::read(path)?)
}

/// Waits until the pending change may be acknowledged, then acknowledges it.
fn wait_and_acknowledge(api: &Api, pending: &Value) -> anyhow::Result<()> {
    let after = pending["acknowledge_after"]
        .as_str()
        .and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .context("the pending change has no acknowledge_after")?;
    let wait = after - time::OffsetDateTime::now_utc();
    if let Ok(wait) = Duration::try_from(wait) {
        eprintln!(
            "waiting {}s until the change may be acknowledged",
            wait.as_secs() + 1
        );
        std::thread::sleep(wait + Duration::from_millis(200));
    }
    api.request("POST", "/v1/enforcement/acknowledge", None, None)?;
    Ok(())
}

/// The CIDR an entry argument names, normalised as the API shows it (`/32` added).
/// Shows a list: as the API's JSON, or its summary and then its entries page by page, so
/// that a list of a million entries prints without being held whole.
fn show(api: &Api, list: &str, as_json: bool) -> anyhow::Result<Output> {
    let summary = api.resolve(list)?;
    let id = summary["id"].as_str().unwrap_or_default();
    if as_json {
        return Ok(Output::List(api.get(&format!("/v1/allowlists/{id}"))?));
    }
    output::print_list_header(&summary);
    api.entry_pages(id, |entries| {
        output::print_entry_rows(entries);
        true
    })?;
    Ok(Output::Printed)
}

/// The id of the entry of list `id` named by its id or by its CIDR.
fn find_entry(api: &Api, id: &str, entry: &str) -> anyhow::Result<String> {
    if entry.starts_with("en_") {
        return Ok(entry.to_owned());
    }
    let wanted = allowlist_daemon::policy::parse_cidr(entry)
        .map_err(|err| anyhow!("{entry:?} is neither an entry id nor a CIDR: {err}"))?;
    let mut found = None;
    api.entry_pages(id, |entries| {
        for e in entries {
            let cidr = e["cidr"]
                .as_str()
                .and_then(|c| c.parse::<ipnet::IpNet>().ok());
            if cidr == Some(wanted) {
                found = e["id"].as_str().map(str::to_owned);
            }
            if found.is_some() || cidr.is_some_and(|cidr| cidr > wanted) {
                return false;
            }
        }
        true
    })?;
    found.ok_or_else(|| anyhow!("{id} has no entry with CIDR {wanted}"))
}
