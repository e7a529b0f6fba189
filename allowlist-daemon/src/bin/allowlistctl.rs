//! `allowlistctl`: the command-line client of allowlistd's admin API.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Manage the allowlists of allowlistd.
///
/// Lists are named by id or by name. Enabling, disabling and removing entries from an enabled
/// list take effect at once and must then be acknowledged (`allowlistctl ack`) between
/// allowlistd's --ack-min and --ack-max, or they are reverted. `enable` passes the address
/// you are connected from (from SSH_CONNECTION) so that allowlistd refuses a policy that
/// would cut you off.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Address of allowlistd's admin API.
    #[arg(
        long,
        env = "ALLOWLIST_URL",
        default_value = "http://127.0.0.1:9180",
        global = true
    )]
    url: String,

    /// Admin token [default: read from --token-file].
    #[arg(long, env = "ALLOWLIST_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,

    /// File holding the admin token.
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
        /// The address to protect from lockout [default: the client address in SSH_CONNECTION].
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
}

/// The admin API, with the error body turned into an error.
struct Api {
    agent: ureq::Agent,
    url: String,
    authorization: String,
}

impl Api {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", &self.authorization);
        if let Some(version) = if_match {
            builder = builder.header("If-Match", format!("\"{version}\""));
        }
        let request = match body {
            Some(body) => builder
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(body)?)?,
            None => builder.body(Vec::new())?,
        };
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("cannot reach allowlistd at {}", self.url))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()
            .context("reading the response")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        let mut message = format!(
            "{} ({}, HTTP {})",
            error["message"].as_str().unwrap_or("request failed"),
            error["code"].as_str().unwrap_or("unknown"),
            status.as_u16()
        );
        if let Some(field) = error["field"].as_str() {
            message.push_str(&format!(" [field {field}]"));
        }
        Err(anyhow!(message))
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request("GET", path, None, None)
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.request("POST", path, Some(body), None)
    }

    /// Finds a list by id or by name.
    fn resolve(&self, list: &str) -> anyhow::Result<Value> {
        let all = self.get("/v1/allowlists")?;
        let lists = all["allowlists"].as_array().cloned().unwrap_or_default();
        lists
            .iter()
            .find(|l| l["id"] == list)
            .or_else(|| lists.iter().find(|l| l["name"] == list))
            .cloned()
            .ok_or_else(|| anyhow!("no allowlist with id or name {list:?}"))
    }

    fn resolve_id(&self, list: &str) -> anyhow::Result<String> {
        Ok(self.resolve(list)?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

fn main() -> ExitCode {
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
    let token = match cli.token {
        Some(token) => token,
        None => std::fs::read_to_string(&cli.token_file)
            .with_context(|| {
                format!(
                    "reading the admin token from {} (or give --token / ALLOWLIST_TOKEN)",
                    cli.token_file.display()
                )
            })?
            .trim()
            .to_owned(),
    };
    let api = Api {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into(),
        url: cli.url,
        authorization: format!("Bearer {token}"),
    };
    let output = match cli.command {
        Command::Status => Output::State(api.get("/v1/enforcement")?),
        Command::List => Output::Lists(api.get("/v1/allowlists")?),
        Command::Show { list } => Output::List(api.resolve(&list)?),
        Command::Create {
            name,
            description,
            entries,
            allow_all,
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
            Output::List(api.post("/v1/allowlists", &body)?)
        }
        Command::Add {
            list,
            cidrs,
            description,
            allow_all,
        } => {
            let id = api.resolve_id(&list)?;
            let entries: Vec<Value> = cidrs
                .iter()
                .map(|cidr| json!({"cidr": cidr, "description": description.clone().unwrap_or_default()}))
                .collect();
            api.post(
                &format!("/v1/allowlists/{id}/entries"),
                &json!({ "entries": entries, "allow_all": allow_all }),
            )?;
            Output::List(api.get(&format!("/v1/allowlists/{id}"))?)
        }
        Command::Remove { list, entry } => {
            let current = api.resolve(&list)?;
            let id = current["id"].as_str().unwrap_or_default();
            let entries = current["entries"].as_array().cloned().unwrap_or_default();
            let wanted = normalized_cidr(&entry);
            let found = entries
                .iter()
                .find(|e| {
                    e["id"] == entry.as_str() || wanted.as_deref().is_some_and(|w| e["cidr"] == w)
                })
                .ok_or_else(|| anyhow!("{id} has no entry with id or CIDR {entry:?}"))?;
            let entry_id = found["id"].as_str().unwrap_or_default();
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
        Command::Delete { list } => {
            let current = api.resolve(&list)?;
            let id = current["id"].as_str().unwrap_or_default();
            api.request(
                "DELETE",
                &format!("/v1/allowlists/{id}"),
                None,
                current["version"].as_u64(),
            )?;
            Output::Message(format!(
                "deleted {id} ({})",
                current["name"].as_str().unwrap_or_default()
            ))
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
            if let Some(ip) = client_ip.or_else(ssh_client_ip) {
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
        Command::Ack => {
            Output::State(api.request("POST", "/v1/enforcement/acknowledge", None, None)?)
        }
        Command::Evaluate { ip } => Output::Evaluation(api.get(&format!("/v1/evaluate?ip={ip}"))?),
        Command::Stats => Output::Stats(api.get("/v1/stats")?),
        Command::Top { window, limit } => {
            Output::Top(api.get(&format!("/v1/top?window={window}&limit={limit}"))?)
        }
    };
    output.print(cli.json)
}

/// The CIDR an entry argument names, normalised as the API shows it (`/32` added).
fn normalized_cidr(entry: &str) -> Option<String> {
    allowlist_daemon::policy::parse_cidr(entry)
        .ok()
        .map(|net| net.to_string())
}

/// The client address of the SSH session this runs in, if any.
fn ssh_client_ip() -> Option<IpAddr> {
    std::env::var("SSH_CONNECTION")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a command prints.
enum Output {
    State(Value),
    Lists(Value),
    List(Value),
    Evaluation(Value),
    Stats(Value),
    Top(Value),
    Message(String),
}

impl Output {
    fn print(self, as_json: bool) -> anyhow::Result<()> {
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        };
        match self {
            Output::Message(message) => println!("{message}"),
            Output::State(v)
            | Output::Lists(v)
            | Output::List(v)
            | Output::Evaluation(v)
            | Output::Stats(v)
            | Output::Top(v)
                if as_json =>
            {
                println!("{}", serde_json::to_string_pretty(&v)?)
            }
            Output::State(v) => {
                println!(
                    "enforcing:     {}",
                    if v["enforcing"] == true {
                        "yes"
                    } else {
                        "no (everything passes)"
                    }
                );
                println!("enabled lists: {}", join(&v["enabled_allowlist_ids"]));
                println!("always allow:  {}", join(&v["always_allow"]));
                let scopes = join(&v["scopes"]);
                println!(
                    "guarded ports: {}",
                    if scopes == "none" {
                        "all".to_owned()
                    } else {
                        scopes
                    }
                );
                for prefix in v["allow_all"].as_array().into_iter().flatten() {
                    println!(
                        "warning:       {} is in force: every source of its family passes",
                        text(prefix)
                    );
                }
                if let Some(failure) = v["save_error"].as_object() {
                    println!(
                        "warning:       the state in force is not saved yet (since {}, {} \
                         attempts): {}",
                        text(&failure["since"]),
                        failure["attempts"],
                        text(&failure["message"])
                    );
                }
                match &v["pending"] {
                    Value::Null => println!("pending:       none"),
                    p => {
                        println!(
                            "pending:       {} of {}",
                            text(&p["action"]),
                            join(&p["allowlist_ids"])
                        );
                        println!("  acknowledge after {}", text(&p["acknowledge_after"]));
                        println!(
                            "  reverted at       {} unless acknowledged (allowlistctl ack)",
                            text(&p["revert_at"])
                        );
                    }
                }
            }
            Output::Lists(v) => {
                println!(
                    "{:<22} {:<24} {:<8} {:>8}  DESCRIPTION",
                    "ID", "NAME", "ENABLED", "ENTRIES"
                );
                for l in v["allowlists"].as_array().into_iter().flatten() {
                    println!(
                        "{:<22} {:<24} {:<8} {:>8}  {}",
                        text(&l["id"]),
                        text(&l["name"]),
                        if l["enabled"] == true { "yes" } else { "no" },
                        l["entries"].as_array().map_or(0, Vec::len),
                        text(&l["description"])
                    );
                }
            }
            Output::List(l) => {
                println!("id:          {}", text(&l["id"]));
                println!("name:        {}", text(&l["name"]));
                println!("description: {}", text(&l["description"]));
                println!(
                    "enabled:     {}",
                    if l["enabled"] == true { "yes" } else { "no" }
                );
                if l["allow_all"] == true {
                    println!("allow all:   yes (may hold 0.0.0.0/0 or ::/0)");
                }
                println!(
                    "version:     {}  (updated {})",
                    l["version"],
                    text(&l["updated_at"])
                );
                println!("\n{:<22} {:<43}  DESCRIPTION", "ENTRY", "CIDR");
                for e in l["entries"].as_array().into_iter().flatten() {
                    println!(
                        "{:<22} {:<43}  {}",
                        text(&e["id"]),
                        text(&e["cidr"]),
                        text(&e["description"])
                    );
                }
            }
            Output::Evaluation(v) => {
                println!(
                    "{} ({})",
                    if v["allowed"] == true {
                        "allowed"
                    } else {
                        "dropped"
                    },
                    text(&v["reason"])
                );
                for m in v["matches"].as_array().into_iter().flatten() {
                    println!(
                        "  {} in {} (entry {})",
                        text(&m["cidr"]),
                        text(&m["allowlist_id"]),
                        text(&m["entry_id"])
                    );
                }
            }
            Output::Top(v) => {
                let sample = v["sample"].as_u64().unwrap_or(0);
                if sample == 0 {
                    println!("noting refused sources is off (allowlistd --top-sample 0)");
                    return Ok(());
                }
                let heading = format!(
                    "SOURCE (last {}s, 1 in {sample} noted)",
                    v["window_seconds"]
                );
                println!("{heading:<40} {:>14}  LAST SEEN", "PACKETS");
                let sources = v["sources"].as_array().into_iter().flatten();
                for s in sources {
                    println!(
                        "{:<40} {:>14}  {}",
                        text(&s["address"]),
                        s["packets"],
                        text(&s["last_seen"])
                    );
                }
            }
            Output::Stats(v) => {
                for (name, value) in v["counters"].as_object().into_iter().flatten() {
                    println!("{name:<28} {value:>14}");
                }
                let mut entries: Vec<&Value> =
                    v["entries"].as_array().into_iter().flatten().collect();
                entries.sort_by_key(|e| std::cmp::Reverse(e["hits"].as_u64().unwrap_or(0)));
                println!(
                    "\n{:<43} {:<22} {:>14}",
                    "BUSIEST ENTRIES", "ALLOWLIST", "HITS"
                );
                for e in entries.iter().take(20) {
                    println!(
                        "{:<43} {:<22} {:>14}",
                        text(&e["cidr"]),
                        text(&e["allowlist_id"]),
                        e["hits"]
                    );
                }
                for a in v["always_allow"].as_array().into_iter().flatten() {
                    println!(
                        "{:<43} {:<22} {:>14}",
                        text(&a["cidr"]),
                        "(always allow)",
                        a["hits"]
                    );
                }
            }
        }
        Ok(())
    }
}

fn join(values: &Value) -> String {
    let items: Vec<String> = values
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
