//! Tests of the options: flags, a TOML file, defaults and bounds merged and checked.

use clap::Args as _;

use super::*;

/// `args` as `allowlistd`'s command line gives them.
fn command_line(args: &[&str]) -> clap::ArgMatches {
    Options::augment_args(clap::Command::new("allowlistd"))
        .try_get_matches_from(std::iter::once("allowlistd").chain(args.iter().copied()))
        .expect("the command line parses")
}

#[test]
fn a_toml_file_fills_what_flags_leave_unset() {
    let file: Options = toml::from_str(
        r#"
        iface = ["eth1", "eth2"]
        allow = ["192.0.2.7", "2001:db8::/32"]
        ack-min = "90s"
        ack-max = "3m"
        xdp-mode = "skb"
        protect-port = [22, 2222]
        replies = "off"
        reply-timeout-udp = "5s"
        protect = ["tcp/22", "udp/51820"]
        replies-for = ["udp/53", "tcp"]
        unprotected-protocol = ["gre", "50"]
        wait-for-iface = true
        "#,
    )
    .expect("parse");
    let config = file
        .overridden_by(&command_line(&["--ack-min", "30s"]))
        .expect("merge")
        .resolve()
        .expect("resolve");
    let options = &config.options;
    assert_eq!(options.iface, ["eth1", "eth2"]);
    assert!(options.wait_for_iface);
    assert_eq!(
        config.always_allow[0],
        "192.0.2.7/32".parse::<IpNet>().expect("literal")
    );
    assert_eq!(options.ack_min, Duration::from_secs(30), "the flag wins");
    assert_eq!(
        options.ack_max,
        Duration::from_secs(180),
        "a flag left out leaves the file's value, not its default"
    );
    assert_eq!(AttachMode::from(options.xdp_mode), AttachMode::Skb);
    assert_eq!(options.protect_port, [22, 2222]);
    assert!(!config.replies.enabled);
    assert_eq!(config.replies.udp_timeout, Duration::from_secs(5));
    assert_eq!(config.reply_openers.tcp, None);
    assert_eq!(
        config.reply_openers.udp,
        Some(std::collections::BTreeSet::from([53]))
    );
    assert!(!config.reply_openers.icmp);
    assert_eq!(
        config.unprotected_protocols,
        std::collections::BTreeSet::from([47, 50])
    );
    assert_eq!(
        options
            .protect
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["tcp/22", "udp/51820"]
    );
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        config.token_file,
        PathBuf::from("/var/lib/allowlistd/admin.token")
    );
}

#[test]
fn the_defaults_are_the_windows_operators_know() {
    let config = Options {
        iface: vec!["eth1".into()],
        ..Options::default()
    }
    .resolve()
    .expect("resolve");
    let options = &config.options;
    assert_eq!(options.ack_min, Duration::from_secs(60));
    assert_eq!(options.ack_max, Duration::from_secs(120));
    assert_eq!(options.protect_port, [22]);
    assert_eq!(
        config.max_body_bytes,
        262_144 * 128 + bounds::min_body_bytes(128, 1024),
        "a replace of the largest list with short descriptions fits, and no more"
    );
    assert_eq!(options.state_dir, PathBuf::from("/var/lib/allowlistd"));
    assert_eq!(Mode::from(options.mode), Mode::Enforce);
    assert_eq!(config.replies, Replies::default());
    assert!(options.protect.is_empty());
    assert_eq!(config.server.max_connections, 256);
}

#[test]
fn a_file_that_leaves_an_option_out_gets_the_default_help_shows() {
    let file: Options = toml::from_str("").expect("an empty file");
    let flags = Options::default();
    assert_eq!(format!("{file:?}"), format!("{flags:?}"));
    let help = Options::augment_args(clap::Command::new("allowlistd"))
        .render_long_help()
        .to_string();
    for shown in [
        "[default: 60s]",
        "[default: 120s]",
        "[default: 127.0.0.1:9180]",
        "[default: /sys/fs/bpf/allowlist]",
        "[default: 256]",
    ] {
        assert!(help.contains(shown), "--help shows {shown}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example: Options = toml::from_str(include_str!("../../../packaging/allowlistd.toml"))
        .expect("packaging/allowlistd.toml parses");
    let config = example.resolve().expect("resolves");
    assert_eq!(config.options.iface, ["eth0"]);
    assert_eq!(config.options.ack_min, Duration::from_secs(60));
    assert_eq!(
        config.server.listen,
        crate::server::ListenAddress::Unix("/run/allowlistd/api.sock".into()),
        "the packaged service serves its API on the unix socket"
    );
}

#[test]
fn bad_files_and_windows_are_refused() {
    assert!(toml::from_str::<Options>("unknown-key = 1").is_err());
    let err = toml::from_str::<Options>(r#"allow = ["10.0.0.1/8"]"#).expect_err("host bits");
    assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
    let options = Options {
        iface: vec!["eth1".into()],
        ack_min: Duration::from_secs(180),
        ..Options::default()
    };
    assert!(
        options
            .resolve()
            .expect_err("window")
            .to_string()
            .contains("longer than --ack-max")
    );
}

#[test]
fn settings_out_of_their_bounds_are_refused_with_the_bound() {
    let with = |toml_text: &str| -> String {
        let mut options: Options = toml::from_str(toml_text).expect("parse");
        options.iface = vec!["eth1".into()];
        match options.resolve() {
            Ok(_) => String::new(),
            Err(err) => err.to_string(),
        }
    };
    for (setting, expected) in [
        (
            "ack-max = \"1000000000y\"",
            "--ack-max 1000000000years is out of range: give 1s to 1day",
        ),
        (
            "ack-min = \"3s\"\nack-max = \"3s\"",
            "--ack-min 3s and --ack-max 3s leave no time to acknowledge: keep at least 1s",
        ),
        (
            "max-body-bytes = 0",
            "--max-body-bytes 0 is out of range: give 13568 to",
        ),
        (
            "max-entries = 100000000",
            "--max-entries 100000000 is out of range: give 1 to 8388608",
        ),
        ("max-entries = 0", "--max-entries 0 is out of range"),
        (
            "max-flows = 100000000",
            "--max-flows 100000000 is out of range",
        ),
        ("max-name-len = 0", "--max-name-len 0 is out of range"),
        (
            "stats-interval = \"0s\"",
            "--stats-interval 0s is out of range",
        ),
        (
            "reply-timeout-udp = \"8d\"",
            "--reply-timeout-udp 8days is out of range",
        ),
        ("protect-port = [0]", "--protect-port 0 is no port"),
    ] {
        let err = with(setting);
        assert!(err.starts_with(expected), "{setting}: {err}");
    }
    assert_eq!(
        with("ack-min = \"0s\"\nack-max = \"1s\""),
        "",
        "the tightest window"
    );
    assert_eq!(with("max-entries = 8388608"), "", "the bound itself");
}

#[test]
fn a_flag_list_replaces_the_file_s_and_tables_merge_field_by_field() {
    let file: Options = toml::from_str(
        r#"
        iface = ["eth1"]
        [fleet]
        endpoints = ["http://10.0.0.5:2379"]
        name = "web"
        [api]
        max-connections = 50
        "#,
    )
    .expect("parse");
    let merged = file
        .overridden_by(&command_line(&["--iface", "eth9", "--host-name", "web-1"]))
        .expect("merge");
    assert_eq!(merged.iface, ["eth9"], "the flags' list, not both");
    assert_eq!(merged.fleet.name.as_deref(), Some("web"));
    assert_eq!(merged.fleet.endpoints, ["http://10.0.0.5:2379"]);
    assert_eq!(merged.fleet.host_name.as_deref(), Some("web-1"));
    assert_eq!(merged.api.max_connections, 50);
    assert_eq!(
        merged.api.header_timeout,
        Duration::from_secs(10),
        "what the table leaves out keeps its default"
    );
}

#[test]
fn the_readme_s_flag_table_gives_the_defaults_the_code_has() {
    let command = Options::augment_args(clap::Command::new("allowlistd"));
    let default_of = |flag: &str| -> Option<String> {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag))?;
        let values: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let readme = include_str!("../../../README.md");
    let mut compared = 0;
    for row in readme.lines().filter(|line| line.starts_with("| `--")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let [flags, defaults, ..] = cells[..] else {
            continue;
        };
        let separator = if flags.contains(" / ") { " / " } else { ", " };
        let flags: Vec<&str> = flags.trim_start_matches("| ").split(separator).collect();
        let defaults: Vec<&str> = defaults.split(separator).collect();
        if flags.len() != defaults.len() {
            continue;
        }
        for (flag, documented) in flags.iter().zip(defaults) {
            let name = flag
                .trim_matches('`')
                .trim_start_matches("--")
                .split([' ', '`'])
                .next()
                .unwrap_or_default();
            if let Some(default) = default_of(name) {
                assert_eq!(
                    documented.trim_matches('`'),
                    default,
                    "the README's default of --{name}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 15, "only {compared} defaults compared");
}
