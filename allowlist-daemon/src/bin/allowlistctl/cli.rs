//! The command line: the options every verb takes, and the verbs.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{enforcement, fleet, lists, preview};

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
pub(crate) struct Cli {
    /// Address of allowlistd's admin API: http://HOST:PORT, https://HOST:PORT, or
    /// unix:/PATH for its unix socket [default: unix:/run/allowlistd/api.sock when that
    /// socket exists (the packaged service listens there), else http://127.0.0.1:9180].
    #[arg(long, env = "ALLOWLIST_URL", global = true)]
    pub(crate) url: Option<String>,

    /// CA certificate (PEM) that signed the API's TLS certificate, for an https:// URL whose
    /// certificate the system does not trust.
    #[arg(long, env = "ALLOWLIST_CACERT", value_name = "FILE", global = true)]
    pub(crate) cacert: Option<PathBuf>,

    /// Refused: a token on the command line shows in `ps` to every user.
    #[arg(long, hide = true, global = true)]
    pub(crate) token: Option<String>,

    /// File holding the admin token (the environment variable ALLOWLIST_TOKEN, when set,
    /// holds the token itself instead).
    #[arg(long, default_value = "/var/lib/allowlistd/admin.token", global = true)]
    pub(crate) token_file: PathBuf,

    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What `allowlistctl` does: one verb.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    Create(lists::CreateArgs),
    /// Add entries to an allowlist.
    Add(lists::AddArgs),
    /// Remove one entry from an allowlist.
    Remove {
        /// Id or name.
        list: String,
        /// Entry id or its CIDR.
        entry: String,
        #[command(flatten)]
        preview: preview::PreviewArgs,
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
    Import(lists::ImportArgs),
    /// Delete an allowlist that is not enabled.
    Delete {
        /// Id or name.
        list: String,
    },
    /// Enable allowlists (pending until acknowledged).
    Enable(enforcement::EnableArgs),
    /// Disable allowlists (pending until acknowledged).
    Disable {
        /// Ids or names.
        #[arg(required = true)]
        lists: Vec<String>,
        #[command(flatten)]
        preview: preview::PreviewArgs,
    },
    /// Guard only these local ports (tcp/22, udp/51820); pending until acknowledged.
    Scopes {
        /// The protected ports.
        #[arg(required_unless_present = "all")]
        ports: Vec<String>,
        /// Guard every port again (no scopes).
        #[arg(long, conflicts_with = "ports")]
        all: bool,
        #[command(flatten)]
        preview: preview::PreviewArgs,
    },
    /// Acknowledge the pending change.
    Ack,
    /// Converge this host's own lists to a policy file (TOML, or JSON of the same shape):
    /// create and update the lists it names, enable and disable them as it says, leave the
    /// others alone (--prune deletes them). A change to what is enforced is one pending change;
    /// applying the same file twice changes nothing.
    Apply(enforcement::ApplyArgs),
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
