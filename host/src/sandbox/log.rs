//! A guest's log: records from the `log` import and from stdout/stderr,
//! tagged with the module, cut to a bounded size, a bounded number per call
//! and a bounded rate per module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

pub use super::bindings::Level;

/// Longest log line a guest may write; longer ones are cut.
pub const MAX_LOG_BYTES: usize = 1024;
/// Log lines one `handle-message` call may write; the rest are dropped, so a
/// guest logging in a loop costs its own message, not the host's log.
const MAX_LOG_LINES_PER_CALL: u32 = 32;

/// Log lines all instances of a module may write per second; the rest are
/// dropped and counted, so a guest that logs every message (say, while its
/// store is down) cannot flood the host's log at message rate.
pub const MAX_LOG_LINES_PER_SECOND: u32 = 100;

/// The per-second log budget every instance of one module shares.
pub struct LogBudget {
    started: Instant,
    /// The second (since `started`) the count is for.
    second: AtomicU64,
    lines: AtomicU32,
    dropped: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget {
            started: Instant::now(),
            second: AtomicU64::new(0),
            lines: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Takes one line from this second's budget. On the first line of a new
    /// second, returns how many lines the previous seconds dropped.
    fn take(&self) -> (bool, u64) {
        let now = self.started.elapsed().as_secs();
        let mut dropped_before = 0;
        let second = self.second.load(Ordering::Relaxed);
        // Only forward: a thread that read the clock before another moved
        // the second on must not move it back.
        if now > second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.lines.store(0, Ordering::Relaxed);
            dropped_before = self.dropped.swap(0, Ordering::Relaxed);
        }
        let allowed = self.lines.fetch_add(1, Ordering::Relaxed) < MAX_LOG_LINES_PER_SECOND;
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        (allowed, dropped_before)
    }
}

/// Shared by an instance's `log` import and its stdout/stderr streams.
pub struct GuestLog {
    module: Arc<str>,
    lines_this_call: AtomicU32,
    budget: Arc<LogBudget>,
}

impl GuestLog {
    pub fn new(module: Arc<str>, budget: Arc<LogBudget>) -> GuestLog {
        GuestLog {
            module,
            lines_this_call: AtomicU32::new(0),
            budget,
        }
    }

    /// Called before each `handle-message` call.
    pub fn start_call(&self) {
        self.lines_this_call.store(0, Ordering::Relaxed);
    }

    /// Whether this second's budget has room for one more line; reports
    /// what the seconds before dropped.
    fn admit(&self) -> bool {
        let (allowed, dropped_before) = self.budget.take();
        if dropped_before > 0 {
            let module = &*self.module;
            tracing::warn!(
                target: "guest",
                module,
                "dropped {dropped_before} log lines over {MAX_LOG_LINES_PER_SECOND} per second"
            );
        }
        allowed
    }

    pub fn record(&self, level: Level, message: &str) {
        let lines = self.lines_this_call.fetch_add(1, Ordering::Relaxed) + 1;
        let module = &*self.module;
        if lines > MAX_LOG_LINES_PER_CALL {
            // The warning is a line of this module's too: it takes from the
            // same per-second budget.
            if lines == MAX_LOG_LINES_PER_CALL + 1 && self.admit() {
                tracing::warn!(
                    target: "guest",
                    module,
                    "more than {MAX_LOG_LINES_PER_CALL} log lines in one call; dropping the rest of this call's"
                );
            }
            return;
        }
        if !self.admit() {
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
    &text[..text.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_writes_at_most_its_budget_per_second() {
        let budget = LogBudget::default();
        let allowed = (0..1000).filter(|_| budget.take().0).count();
        assert_eq!(allowed, MAX_LOG_LINES_PER_SECOND as usize);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (allowed, dropped_before) = budget.take();
        assert!(allowed);
        assert_eq!(dropped_before, 1000 - u64::from(MAX_LOG_LINES_PER_SECOND));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
