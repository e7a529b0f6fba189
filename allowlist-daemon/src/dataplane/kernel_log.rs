//! The program's own log lines (aya-log: a fallback at the revert deadline, malformed
//! frames; rate-limited in the kernel), read from its ring buffer by the daemon and written
//! to its log with the rest.

/// The reader of the program's log lines: readable when lines wait, [`KernelLog::flush`]
/// writes them to the `log` facade (which the daemon's tracing subscriber takes).
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The reader for the program just loaded in `ebpf`, if it logs at all.
pub(super) fn open(ebpf: &mut aya::Ebpf) -> Option<KernelLog> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(reader) => Some(reader),
        Err(err) => {
            tracing::debug!(error = %err, "the program's log is not read");
            None
        }
    }
}
