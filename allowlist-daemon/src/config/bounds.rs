//! The bounds every setting is checked against at start, each with the reason for it.

use std::time::Duration;

use super::{Config, ConfigError};

/// Most entries `GET /metrics` gives a series of their own.
pub const METRICS_TOP_ENTRIES_MAX: usize = 1000;

/// The shortest `--ack-max`.
pub const ACK_MAX_MIN: Duration = Duration::from_secs(1);
/// The longest `--ack-max`: a change nobody acknowledges comes back within a day.
pub const ACK_MAX_MAX: Duration = Duration::from_secs(24 * 3600);
/// The shortest acknowledgement window (`--ack-max` minus `--ack-min`).
pub const ACK_WINDOW_MIN: Duration = Duration::from_secs(1);
/// The most entries. A limit only: the kernel's tables are sized to the policies in force,
/// not to it. Two rule ids per entry stay below the expiring-rule bit, and the default body
/// limit (128 bytes per entry) at the largest body limit.
pub const MAX_ENTRIES_MAX: usize = 1 << 23;
/// The most flows remembered for replies: the kernel preallocates them (about 100 bytes
/// each, 0.9 s to load this bound, 2.7 s for 16M).
pub const MAX_FLOWS_MAX: u32 = 1 << 22;
/// The most allowlists.
pub const MAX_LISTS_MAX: usize = 65_536;
/// The longest name limit.
pub const MAX_NAME_LEN_MAX: usize = 1024;
/// The longest description limit.
pub const MAX_DESCRIPTION_LEN_MAX: usize = 65_536;
/// The largest body limit.
pub const MAX_BODY_BYTES_MAX: usize = 1 << 30;
/// The shortest and longest reply timeout.
pub const REPLY_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
/// The shortest and longest interval between counter logs.
pub const STATS_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// The smallest body that holds one request for one entry with the longest name and
/// descriptions the limits allow: every character escaped in JSON (`\uXXXX`, 6 bytes), the
/// prefix and the keys around them.
pub fn min_body_bytes(max_name_len: usize, max_description_len: usize) -> usize {
    512 + 6 * (max_name_len + 2 * max_description_len)
}

/// JSON bytes an entry takes in a request when its description is short: an IPv6 /128 in
/// quotes with its key (about 60 bytes) and a description of a few dozen characters.
pub const BODY_BYTES_PER_ENTRY: usize = 128;

/// The body limit unless one is given: room for a request that fills every entry slot with
/// short descriptions (a replace of the largest list there can be), and at least one entry
/// with the longest name and descriptions.
pub fn default_body_bytes(
    max_entries: usize,
    max_name_len: usize,
    max_description_len: usize,
) -> usize {
    let min = min_body_bytes(max_name_len, max_description_len);
    max_entries
        .saturating_mul(BODY_BYTES_PER_ENTRY)
        .saturating_add(min)
        .min(MAX_BODY_BYTES_MAX)
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

fn refuse(message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message))
}

fn check_range(
    flag: &str,
    value: Duration,
    (min, max): (Duration, Duration),
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return refuse(format!(
            "{flag} {} is out of range: give {} to {}",
            human(value),
            human(min),
            human(max)
        ));
    }
    Ok(())
}

fn check_count(
    flag: &str,
    value: usize,
    min: usize,
    max: usize,
    why: &str,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return refuse(format!(
            "{flag} {value} is out of range: give {min} to {max}{why}"
        ));
    }
    Ok(())
}

/// Checks every setting of `config` against its bound.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let options = &config.options;
    if options.iface.is_empty() {
        return refuse("no interface to guard: give --iface".into());
    }
    if options.ack_max < ACK_MAX_MIN || options.ack_max > ACK_MAX_MAX {
        return refuse(format!(
            "--ack-max {} is out of range: give {} to {}, so that a change nobody acknowledges \
             comes back within a day",
            human(options.ack_max),
            human(ACK_MAX_MIN),
            human(ACK_MAX_MAX)
        ));
    }
    if options.ack_min > options.ack_max {
        return refuse(format!(
            "--ack-min {} is longer than --ack-max {}",
            human(options.ack_min),
            human(options.ack_max)
        ));
    }
    if options.ack_max - options.ack_min < ACK_WINDOW_MIN {
        return refuse(format!(
            "--ack-min {} and --ack-max {} leave no time to acknowledge: keep at least {} \
             between them",
            human(options.ack_min),
            human(options.ack_max),
            human(ACK_WINDOW_MIN)
        ));
    }
    check_count(
        "--audit-max-bytes",
        usize::try_from(options.audit_max_bytes).unwrap_or(usize::MAX),
        64 << 10,
        1 << 30,
        "",
    )?;
    check_range(
        "--max-entry-ttl",
        options.max_entry_ttl,
        (
            Duration::from_secs(60),
            Duration::from_secs(366 * 24 * 3600),
        ),
    )?;
    check_count(
        "--max-entries",
        options.max_entries,
        1,
        MAX_ENTRIES_MAX,
        " (at load the kernel allocates 32 bytes per entry for every possible CPU for hit \
         counters, 64 MiB per CPU at the bound, and about 160 bytes per entry for the range \
         tables, 350 MiB at the bound)",
    )?;
    check_count(
        "--max-flows",
        options.max_flows as usize,
        1,
        MAX_FLOWS_MAX as usize,
        " (the kernel preallocates every flow)",
    )?;
    check_count("--max-lists", options.max_lists, 1, MAX_LISTS_MAX, "")?;
    check_count(
        "--max-name-len",
        options.max_name_len,
        1,
        MAX_NAME_LEN_MAX,
        "",
    )?;
    check_count(
        "--max-description-len",
        options.max_description_len,
        0,
        MAX_DESCRIPTION_LEN_MAX,
        "",
    )?;
    let min_body = min_body_bytes(options.max_name_len, options.max_description_len);
    check_count(
        "--max-body-bytes",
        config.max_body_bytes,
        min_body,
        MAX_BODY_BYTES_MAX,
        &format!(
            " (a request for one entry with the longest name and descriptions that \
             --max-name-len {} and --max-description-len {} allow takes up to {min_body} bytes)",
            options.max_name_len, options.max_description_len
        ),
    )?;
    check_count(
        "--metrics-top-entries",
        options.metrics_top_entries,
        0,
        METRICS_TOP_ENTRIES_MAX,
        " (each is a series of its own in every scrape)",
    )?;
    check_range(
        "--stats-interval",
        options.stats_interval,
        STATS_INTERVAL_RANGE,
    )?;
    for (flag, timeout) in [
        ("--reply-timeout-tcp", config.replies.tcp_timeout),
        ("--reply-timeout-udp", config.replies.udp_timeout),
        ("--reply-timeout-icmp", config.replies.icmp_timeout),
    ] {
        check_range(flag, timeout, REPLY_TIMEOUT_RANGE)?;
    }
    if options.protect_port.contains(&0) {
        return refuse("--protect-port 0 is no port: give 1 to 65535".into());
    }
    Ok(())
}
