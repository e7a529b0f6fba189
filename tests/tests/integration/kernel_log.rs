//! The program's own log lines, through aya-log, rate-limited in the kernel: a flood of
//! malformed frames gives one line per CPU and period, never one per packet.

use std::sync::Mutex;

use allowlist_common::Mode;
use allowlist_tests::frames::*;
use allowlist_tests::loaded;

/// The lines logged through the `log` facade in this test process.
struct Captured(Mutex<Vec<String>>);

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static CAPTURED: Captured = Captured(Mutex::new(Vec::new()));

#[test]
fn a_flood_of_malformed_frames_is_one_line_not_one_per_frame() {
    log::set_logger(&CAPTURED).expect("the only logger of this test");
    log::set_max_level(log::LevelFilter::Trace);
    let mut dataplane = loaded(&["198.18.0.2"], Mode::Enforce);
    let mut kernel_log = dataplane.take_kernel_log().expect("the program logs");
    let truncated = &udp4_frame("203.0.113.9".parse().expect("literal"))[..20];
    dataplane.run_frame(truncated, 10_000).expect("test run");
    kernel_log.flush();
    let lines = CAPTURED.0.lock().expect("lines").clone();
    let malformed: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("malformed frames on interface"))
        .collect();
    assert_eq!(malformed.len(), 1, "{lines:?}");
    assert!(
        malformed[0].contains("dropped in enforce mode"),
        "{lines:?}"
    );
}
