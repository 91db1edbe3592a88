//! A guest's log: records from the `log` import and from stdout/stderr,
//! tagged with the module, cut to a bounded size and rate per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub use super::bindings::Level;

/// Longest log line a guest may write; longer ones are cut.
pub const MAX_LOG_BYTES: usize = 1024;
/// Log lines one `handle-message` call may write; the rest are dropped, so a
/// guest logging in a loop costs its own message, not the host's log.
const MAX_LOG_LINES_PER_CALL: u32 = 32;

/// Shared by an instance's `log` import and its stdout/stderr streams.
pub struct GuestLog {
    module: Arc<str>,
    lines_this_call: AtomicU32,
}

impl GuestLog {
    pub fn new(module: Arc<str>) -> GuestLog {
        GuestLog {
            module,
            lines_this_call: AtomicU32::new(0),
        }
    }

    /// Called before each `handle-message` call.
    pub fn start_call(&self) {
        self.lines_this_call.store(0, Ordering::Relaxed);
    }

    pub fn record(&self, level: Level, message: &str) {
        let lines = self.lines_this_call.fetch_add(1, Ordering::Relaxed) + 1;
        let module = &*self.module;
        if lines > MAX_LOG_LINES_PER_CALL {
            if lines == MAX_LOG_LINES_PER_CALL + 1 {
                tracing::warn!(
                    target: "guest",
                    module,
                    "more than {MAX_LOG_LINES_PER_CALL} log lines in one call; dropping the rest of this call's"
                );
            }
            return;
        }
        let message = truncated(message, MAX_LOG_BYTES);
        // A guest must not be able to forge host log lines.
        let escaped;
        let message = if message.contains(char::is_control) {
            escaped = message.escape_default().to_string();
            escaped.as_str()
        } else {
            message
        };
        match level {
            Level::Trace => tracing::trace!(target: "guest", module, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", module, "{message}"),
            Level::Info => tracing::info!(target: "guest", module, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", module, "{message}"),
            Level::Error => tracing::error!(target: "guest", module, "{message}"),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
