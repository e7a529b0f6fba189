//! `allowlistctl fleet status` as tables: each host, the waves of a rollout, a preview's
//! findings.

use serde_json::Value;

use crate::output::{printable, text};

/// Each host of a fleet, a line each.
pub(crate) fn status(v: &Value) {
    let text = |v: &Value| v.as_str().map_or_else(|| "-".to_owned(), printable);
    println!(
        "fleet {}: current release {}",
        text(&v["fleet"]),
        text(&v["current"])
    );
    println!(
        "{:<24} {:<13} {:<24} {:<24} {:<22} {:<22} REASON",
        "HOST", "STATE", "RELEASE", "APPLIED", "REVERT AT", "LAST SEEN"
    );
    for host in v["hosts"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<13} {:<24} {:<24} {:<22} {:<22} {}",
            text(&host["host"]),
            text(&host["state"]),
            text(&host["release"]),
            text(&host["applied"]),
            text(&host["revert_at"]),
            text(&host["updated_at"]),
            host["reason"].as_str().map(printable).unwrap_or_default()
        );
    }
    // The hosts not on the current release, each with why: impossible to miss.
    let hosts: Vec<&Value> = v["hosts"].as_array().into_iter().flatten().collect();
    let on_current = |host: &&Value| {
        host["release"] == v["current"]
            && matches!(host["state"].as_str(), Some("acknowledged" | "pending"))
    };
    let behind: Vec<&&Value> = hosts.iter().filter(|host| !on_current(host)).collect();
    println!(
        "{} of {} hosts on release {}",
        hosts.len() - behind.len(),
        hosts.len(),
        text(&v["current"])
    );
    for host in behind {
        println!(
            "  NOT ON IT: {} is {}{}",
            text(&host["host"]),
            text(&host["state"]),
            host["reason"]
                .as_str()
                .map(|reason| format!(": {}", printable(reason)))
                .unwrap_or_default()
        );
    }
    rollout(&v["rollout"], &hosts);
}

/// A fleet preview: each host's findings, then the sources the release would drop.
pub(crate) fn preview(v: &Value) {
    let preview = &v["preview"];
    println!(
        "preview of release {} on fleet {} by {}: started {}, for {} s",
        text(&preview["release"]),
        text(&v["fleet"]),
        text(&preview["by"]),
        text(&preview["started_at"]),
        preview["window_seconds"]
    );
    println!(
        "{:<24} {:<10} {:>12} {:>8} {:>12} {:<24} ERROR",
        "HOST", "STATE", "DROP PKTS", "SOURCES", "PASS PKTS", "WOULD CUT"
    );
    for host in v["hosts"].as_array().into_iter().flatten() {
        let cut: Vec<String> = host["would_cut"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|guarded| text(&guarded["address"]))
            .collect();
        println!(
            "{:<24} {:<10} {:>12} {:>8} {:>12} {:<24} {}",
            text(&host["host"]),
            text(&host["state"]),
            host["would_drop_packets"].as_u64().unwrap_or(0),
            host["would_drop_sources"].as_u64().unwrap_or(0),
            host["would_pass_packets"].as_u64().unwrap_or(0),
            if cut.is_empty() {
                "-".to_owned()
            } else {
                cut.join(",")
            },
            host["error"].as_str().map(printable).unwrap_or_default()
        );
    }
    let dropped = v["would_drop"].as_array().map_or(&[][..], Vec::as_slice);
    if dropped.is_empty() {
        println!("nothing that passes today would be dropped (so far)");
        return;
    }
    println!("sources it would drop that pass today:");
    for source in dropped {
        let hosts: Vec<String> = source["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        println!(
            "  {:<40} {:>10} packets  on {}",
            text(&source["address"]),
            source["packets"],
            hosts.join(", ")
        );
    }
}

/// The waves of a release in waves: which is open, where it halted, each wave's hosts.
fn rollout(rollout: &Value, hosts: &[&Value]) {
    let Some(waves) = rollout["waves"].as_array() else {
        return;
    };
    match &rollout["halted"] {
        Value::Null => println!(
            "rollout: wave {} of {} open{}",
            rollout["open"],
            waves.len(),
            rollout["soak_seconds"]
                .as_u64()
                .map(|soak| format!(", each goes on after a soak of {soak} s"))
                .unwrap_or_default()
        ),
        halt => println!(
            "rollout: HALTED in wave {} of {}: {}: {}; no later wave applies it \
             (allowlistctl fleet abort takes the fleet back)",
            halt["wave"],
            waves.len(),
            text(&halt["host"]),
            printable(halt["reason"].as_str().unwrap_or_default())
        ),
    }
    for wave in waves {
        let members: Vec<String> = hosts
            .iter()
            .filter(|host| host["wave"] == wave["wave"])
            .map(|host| format!("{} {}", text(&host["host"]), text(&host["state"])))
            .collect();
        println!(
            "  wave {} ({}): {}",
            wave["wave"],
            text(&wave["spec"]),
            if members.is_empty() {
                "no host".to_owned()
            } else {
                members.join(", ")
            }
        );
    }
}
