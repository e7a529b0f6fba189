//! What allowlistctl prints: tables for people, the API's JSON with `--json`.

use serde_json::Value;

/// What a command prints.
pub(crate) enum Output {
    State(Value),
    Lists(Value),
    List(Value),
    Evaluation(Value),
    Stats(Value),
    Top(Value),
    Applied(Value),
    /// An import's report, for scripts.
    Imported(Value),
    /// A page of the audit trail.
    Audit(Value),
    Fleet(Value),
    /// `fleet status --preview`.
    FleetPreview(Value),
    File(allowlist_daemon::policy_file::PolicyFile),
    /// What was done: a sentence for people, an object for scripts.
    Done(String, Value),
    /// A preview's report.
    Preview(Value),
    /// Already printed, page by page.
    Printed,
}

impl Output {
    pub(crate) fn print(self, as_json: bool) -> anyhow::Result<()> {
        match self {
            Output::Done(_, value) if as_json => {
                println!("{}", serde_json::to_string_pretty(&value)?)
            }
            Output::Done(message, _) => println!("{}", printable_lines(&message)),
            Output::Printed => {}
            Output::File(file) if as_json => {
                println!("{}", serde_json::to_string_pretty(&file)?)
            }
            Output::File(file) => print!("{}", file.to_toml()),
            Output::Applied(v) if as_json => println!("{}", serde_json::to_string_pretty(&v)?),
            Output::Audit(v) if as_json => println!("{}", serde_json::to_string_pretty(&v)?),
            Output::Audit(v) => print_audit(&v),
            Output::Imported(v) if as_json => println!("{}", serde_json::to_string_pretty(&v)?),
            Output::Imported(v) => println!("{}", printable_lines(&crate::import::describe(&v))),
            Output::Applied(v) => print_applied(&v),
            Output::Fleet(v) if as_json => println!("{}", serde_json::to_string_pretty(&v)?),
            Output::Fleet(v) => crate::fleet::print::status(&v),
            Output::FleetPreview(v) if as_json => {
                println!("{}", serde_json::to_string_pretty(&v)?)
            }
            Output::FleetPreview(v) => crate::fleet::print::preview(&v),
            Output::Preview(v) if as_json => println!("{}", serde_json::to_string_pretty(&v)?),
            Output::Preview(v) => print_preview(&v),
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
                if let Some(total) = v["kernel_memory"]["total_bytes"].as_u64() {
                    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
                    println!(
                        "kernel memory: {:.1} MiB ({:.1} MiB without the flow table; per map: \
                         allowlistctl stats --json)",
                        mib(total),
                        mib(v["kernel_memory"]["without_flows_bytes"]
                            .as_u64()
                            .unwrap_or(0))
                    );
                }
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
                if let Some(checked) = v["lockout_guard"]["checked"].as_array() {
                    let found: Vec<String> = checked
                        .iter()
                        .map(|guarded| {
                            format!(
                                "{} ({})",
                                text(&guarded["address"]),
                                text(&guarded["found"])
                            )
                        })
                        .collect();
                    println!(
                        "lockout guard: {}",
                        if found.is_empty() {
                            "checked no address (none given, no session to a protected port)"
                                .to_owned()
                        } else {
                            format!("kept reachable {}", found.join(", "))
                        }
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
                        l["entry_count"],
                        text(&l["description"])
                    );
                }
            }
            Output::List(l) => {
                print_list_header(&l);
                print_entry_rows(l["entries"].as_array().map_or(&[][..], Vec::as_slice));
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
        .map(|v| printable(v.as_str().unwrap_or_default()))
        .collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// What an apply changed, a line per list, then the pending change.
fn print_applied(v: &Value) {
    let report = &v["report"];
    let prefix = if v["dry_run"] == true {
        "would be "
    } else {
        ""
    };
    let names = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str().map(printable))
            .collect()
    };
    for (key, what) in [("created", "created"), ("deleted", "deleted")] {
        for name in names(key) {
            println!("{prefix}{what}: {name}");
        }
    }
    for change in report["updated"].as_array().into_iter().flatten() {
        println!(
            "{prefix}updated: {} (+{} -{} prefixes)",
            text(&change["name"]),
            change["added"],
            change["removed"]
        );
    }
    for (key, what) in [("enabled", "enabled"), ("disabled", "disabled")] {
        for name in names(key) {
            println!("{prefix}{what}: {name}");
        }
    }
    if v["changed"] != true {
        println!("nothing to change: the host already matches the file");
        return;
    }
    let pending = &v["enforcement"]["pending"];
    if v["acknowledged"] == true {
        println!("acknowledged");
    } else if v["dry_run"] != true && !pending.is_null() {
        println!(
            "pending: acknowledge between {} and {} (allowlistctl ack), or it reverts",
            pending["acknowledge_after"].as_str().unwrap_or_default(),
            pending["revert_at"].as_str().unwrap_or_default()
        );
    }
}

/// Prints what a list is, above its entries.
pub(crate) fn print_list_header(l: &Value) {
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
    println!("entries:     {}", l["entry_count"]);
    if let Some(source) = l["source"].as_object() {
        println!(
            "source:      {} ({}, read every {})",
            text(&source["url"]),
            text(&source["format"]),
            text(&source["refresh"])
        );
    }
    println!(
        "\n{:<22} {:<43} {:>10}  {:<20}  DESCRIPTION",
        "ENTRY", "CIDR", "HITS", "EXPIRES"
    );
}

/// Prints a page of the audit trail: a row per record, the lists it changed below it.
fn print_audit(page: &Value) {
    println!(
        "{:>6}  {:<25} {:<14} {:<13} {:<24} WHAT",
        "ID", "TIME", "WHO", "OUTCOME", "FROM"
    );
    for record in page["records"].as_array().into_iter().flatten() {
        let what = match (record["count"].as_u64(), record["reason"].as_str()) {
            (Some(_), _) => text(&record["action"]),
            (None, Some(reason)) => {
                format!("{} ({})", text(&record["request"]), printable(reason))
            }
            (None, None) => text(&record["action"]),
        };
        println!(
            "{:>6}  {:<25} {:<14} {:<13} {:<24} {}",
            record["id"],
            text(&record["time"]),
            text(&record["actor"]),
            text(&record["outcome"]),
            record["peer"].as_str().map_or("-".to_owned(), printable),
            what
        );
        for list in record["allowlists"].as_array().into_iter().flatten() {
            println!(
                "{:>8}{} {} ({}): +{} -{}",
                "",
                text(&list["change"]),
                text(&list["name"]),
                text(&list["id"]),
                list["added_count"],
                list["removed_count"]
            );
        }
    }
    if let Some(next) = page["next"].as_u64() {
        println!("more: allowlistctl audit --after {next}");
    }
}

/// Prints entries of a list, one row each.
pub(crate) fn print_entry_rows(entries: &[Value]) {
    for e in entries {
        println!(
            "{:<22} {:<43} {:>10}  {:<20}  {}",
            text(&e["id"]),
            text(&e["cidr"]),
            e["hits"]
                .as_u64()
                .map_or("-".to_owned(), |hits| hits.to_string()),
            e["expires_at"]
                .as_str()
                .map_or("never".to_owned(), printable),
            text(&e["description"])
        );
    }
}

/// A JSON value as text for a table: strings without their quotes, their control
/// characters escaped (`\n`, `\u{1b}`), so that a name or a description can neither forge a
/// row nor send escape sequences to the terminal.
pub(crate) fn text(v: &Value) -> String {
    match v.as_str() {
        Some(s) => printable(s),
        None => v.to_string(),
    }
}

/// `s` with the characters that could rewrite what a terminal shows escaped: control
/// characters (escape sequences, carriage returns, new lines) and the bidirectional
/// overrides and isolates that reorder a line (U+202E shows `evil` as `live`).
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .fold(String::with_capacity(s.len()), |mut out, c| {
            if rewrites_display(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
            out
        })
}

/// [`printable`], line by line: what allowlistctl writes in several lines keeps them.
fn printable_lines(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

/// Whether `c` can change how the rest of a line shows.
fn rewrites_display(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A preview's report: what it judged, then the sources on each side.
fn print_preview(report: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    println!(
        "preview of {}: {} ({})",
        describe_candidate(&report["candidate"]),
        text(&report["state"]),
        report["ended_because"].as_str().unwrap_or("running")
    );
    for cut in report["would_cut"].as_array().into_iter().flatten() {
        println!(
            "would cut off {} ({})",
            printable_lines(&text(&cut["address"])),
            printable_lines(&text(&cut["found"]))
        );
    }
    for (side, title) in [
        ("would_drop", "would drop (passes today)"),
        ("would_pass", "would let in (refused today)"),
    ] {
        let sources = report[side]["sources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        println!(
            "{title}: {} packets from {} sources",
            report[side]["packets"].as_u64().unwrap_or(0),
            sources.len()
        );
        if sources.is_empty() {
            continue;
        }
        println!(
            "  {:<40} {:>10} {:>12} {:>10}  ports",
            "source", "packets", "bytes", "last seen"
        );
        for source in &sources {
            let ports: Vec<String> = source["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{} ({})",
                        text(&p["protocol"]),
                        p["port"].as_u64().unwrap_or(0),
                        p["packets"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            println!(
                "  {:<40} {:>10} {:>12} {:>9}s  {}",
                printable_lines(&text(&source["address"])),
                source["packets"].as_u64().unwrap_or(0),
                source["bytes"].as_u64().unwrap_or(0),
                source["last_seen_seconds_ago"].as_u64().unwrap_or(0),
                printable_lines(&ports.join(", "))
            );
        }
    }
}

/// What a preview judged, in words.
fn describe_candidate(candidate: &Value) -> String {
    let ids = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let words = if candidate["enable"].is_array() {
        format!("enabling {}", ids(&candidate["enable"]))
    } else if candidate["disable"].is_array() {
        format!("disabling {}", ids(&candidate["disable"]))
    } else if candidate["protect"].is_array() {
        match ids(&candidate["protect"]) {
            ports if ports.is_empty() => "protecting every port".to_owned(),
            ports => format!("protecting only {ports}"),
        }
    } else if let Some(id) = candidate["replace"]["id"].as_str() {
        let entries = candidate["replace"]["entries"].as_u64().unwrap_or(0);
        format!("replacing the entries of {id} with {entries}")
    } else {
        let prune = if candidate["apply"]["prune"] == true {
            ", pruning the others"
        } else {
            ""
        };
        format!(
            "applying a policy file of {}{prune}",
            ids(&candidate["apply"]["allowlists"])
        )
    };
    printable_lines(&words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let forged = "office\nevil    yes  0.0.0.0/0\u{1b}[2J";
        assert_eq!(
            text(&Value::from(forged)),
            "office\\nevil    yes  0.0.0.0/0\\u{1b}[2J"
        );
        assert_eq!(text(&Value::from("Büro Zürich")), "Büro Zürich");
        assert_eq!(
            text(&Value::from("exe.\u{202e}txt\u{2066}")),
            "exe.\\u{202e}txt\\u{2066}",
            "bidirectional overrides cannot reorder a line"
        );
        assert_eq!(printable_lines("one\ntwo\r"), "one\ntwo\\r");
        assert_eq!(text(&Value::from(7)), "7");
    }
}
