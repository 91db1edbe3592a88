//! Per-store host state: what a guest can reach through its imports, and the
//! resource limiter that caps its memory.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use super::bindings::{Level, spoa};

/// Longest log line a guest may write; longer ones are cut.
const MAX_LOG_BYTES: usize = 1024;
/// Most random bytes one `get-random-bytes` call returns.
const MAX_RANDOM_BYTES: u32 = 4096;
/// Log lines one `handle-message` call may write; the rest are dropped, so a
/// guest logging in a loop costs its own message, not the host's log.
const MAX_LOG_LINES_PER_CALL: u32 = 32;
/// Table elements an instance may grow to (function tables of Rust guests are
/// small; this only stops a guest from exhausting host memory through tables).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Host state stored in each wasmtime `Store`.
pub struct GuestState {
    module_name: Arc<str>,
    memory_cap: usize,
    /// Set when the limiter refused a growth, so the resulting trap can be
    /// reported as a memory-limit violation rather than a generic trap.
    pub memory_exceeded: bool,
    /// Log lines written by the current call (reset before each call).
    pub log_lines_this_call: u32,
}

impl GuestState {
    pub fn new(module_name: Arc<str>, memory_cap: usize) -> GuestState {
        GuestState {
            module_name,
            memory_cap,
            memory_exceeded: false,
            log_lines_this_call: 0,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "guest memory limit exceeded: {current} bytes in use, {desired} requested, cap {}",
                self.memory_cap
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl spoa::agent::types::Host for GuestState {}

impl spoa::agent::random::Host for GuestState {
    fn get_random_u64(&mut self) -> u64 {
        rand::random()
    }

    fn get_random_bytes(&mut self, len: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; len.min(MAX_RANDOM_BYTES) as usize];
        rand::fill(&mut bytes[..]);
        bytes
    }
}

impl spoa::agent::log::Host for GuestState {
    fn log(&mut self, level: Level, mut message: String) {
        self.log_lines_this_call = self.log_lines_this_call.saturating_add(1);
        if self.log_lines_this_call > MAX_LOG_LINES_PER_CALL {
            if self.log_lines_this_call == MAX_LOG_LINES_PER_CALL + 1 {
                tracing::warn!(
                    target: "guest",
                    module = &*self.module_name,
                    "more than {MAX_LOG_LINES_PER_CALL} log lines in one call; dropping the rest of this call's"
                );
            }
            return;
        }
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let module = &*self.module_name;
        match level {
            Level::Trace => tracing::trace!(target: "guest", module, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", module, "{message}"),
            Level::Info => tracing::info!(target: "guest", module, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", module, "{message}"),
            Level::Error => tracing::error!(target: "guest", module, "{message}"),
        }
    }
}
