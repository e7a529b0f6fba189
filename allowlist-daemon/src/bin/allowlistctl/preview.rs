//! `--preview` of `enable` and `disable`: the change judged on live traffic for a while
//! instead of made; a progress line meanwhile, then the report. Exits non-zero when the
//! change would drop traffic that passes today, unless `--allow-drops`.

use std::pin::pin;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::client::Api;
use crate::output::Output;

/// How often the progress line is renewed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// `--preview` and `--allow-drops`.
#[derive(Debug, clap::Args)]
pub(crate) struct PreviewArgs {
    /// Judge live traffic against the change for this long (30s, 10m; at most 24h) instead
    /// of making it: print the sources it would drop that pass today and those it would let
    /// in, and exit 1 if it would drop any. Ctrl-C ends it early and prints what was seen.
    #[arg(long, value_name = "DURATION")]
    pub(crate) preview: Option<String>,
    /// With --preview: exit 0 even when the change would drop traffic that passes today.
    #[arg(long, requires = "preview")]
    pub(crate) allow_drops: bool,
}

/// Runs a preview of `body` (`enable` or `disable` and the lists) for `window`: waits for
/// its end (or Ctrl-C), then returns its report.
pub(crate) fn run(api: &Api, mut body: Value, window: &str) -> anyhow::Result<Value> {
    body["window"] = Value::from(window);
    let started = api.post("/v1/enforcement/preview", &body)?;
    let ends_at = started["ends_at"]
        .as_str()
        .and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .context("the preview has no ends_at")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interrupted = runtime.block_on(async {
        let mut ctrl_c = pin!(tokio::signal::ctrl_c());
        loop {
            let left = ends_at - time::OffsetDateTime::now_utc();
            let Ok(left) = Duration::try_from(left) else {
                return false;
            };
            let report = api.get("/v1/enforcement/preview").unwrap_or_default();
            eprint!(
                "\rpreview: {}s left; would drop {} packets, would let in {}   ",
                left.as_secs(),
                report["would_drop"]["packets"].as_u64().unwrap_or(0),
                report["would_pass"]["packets"].as_u64().unwrap_or(0),
            );
            tokio::select! {
                _ = &mut ctrl_c => return true,
                () = tokio::time::sleep(left.min(PROGRESS_EVERY)) => {}
            }
        }
    });
    eprintln!();
    if interrupted {
        return api.request("DELETE", "/v1/enforcement/preview", None, None);
    }
    // The daemon ends a preview whose window passed when asked for it.
    for _ in 0..50 {
        let report = api.get("/v1/enforcement/preview")?;
        if report["state"] == "ended" {
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the preview did not end at its deadline")
}

/// The report as output, and an error after it when the change would drop traffic that
/// passes today and drops are not allowed.
pub(crate) fn verdict(report: Value, allow_drops: bool, as_json: bool) -> anyhow::Result<()> {
    let drops = report["would_drop"]["packets"].as_u64().unwrap_or(0);
    let cut = report["would_cut"]
        .as_array()
        .is_some_and(|cut| !cut.is_empty());
    Output::Preview(report).print(as_json)?;
    if (drops > 0 || cut) && !allow_drops {
        bail!(
            "the change would drop traffic that passes today (see above); --allow-drops \
             accepts that"
        );
    }
    Ok(())
}
