//! A guest's view of the shared store as a trait, so its logic runs against
//! the host's store in the agent and against [`MemoryStore`] in native unit
//! tests (`cargo test`), with expiry on a clock the test moves.
//!
//! ```
//! use spoa_guest::store::{MemoryStore, Store};
//!
//! fn seen_before(store: &mut impl Store, ip: &str) -> Result<bool, String> {
//!     let count = store.increment_within(&format!("seen:{ip}"), 1, 60_000)?;
//!     Ok(count > 1)
//! }
//!
//! let mut store = MemoryStore::new();
//! assert_eq!(seen_before(&mut store, "192.0.2.1"), Ok(false));
//! assert_eq!(seen_before(&mut store, "192.0.2.1"), Ok(true));
//! store.advance(60_000);
//! assert_eq!(seen_before(&mut store, "192.0.2.1"), Ok(false));
//! store.set_down(true);
//! assert!(seen_before(&mut store, "192.0.2.1").is_err());
//! ```

use std::collections::HashMap;

/// The host's limits: a key's and a value's bytes, and a time to live or
/// window in milliseconds.
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_VALUE_BYTES: usize = 1 << 20;
pub const MAX_TTL_MS: u64 = (1 << 53) - 1;

/// What a guest's logic asks of one bucket. Errors are one-line
/// descriptions, for logs and `err` answers; the guest decides what to
/// answer when the store fails (it can be down, or out of time).
pub trait Store {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Sets `key` to expire `ttl_ms` from now.
    fn set_with_ttl(&mut self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), String>;
    fn delete(&mut self, key: &str) -> Result<(), String>;
    fn exists(&mut self, key: &str) -> Result<bool, String>;
    /// Adds `delta` to the counter at `key`; a new counter expires
    /// `window_ms` from now (a fixed window), as `expiry.increment-within`.
    fn increment_within(&mut self, key: &str, delta: u64, window_ms: u64) -> Result<u64, String>;
    /// Milliseconds before `key` expires; `None` if absent or never expires.
    fn expires_in(&mut self, key: &str) -> Result<Option<u64>, String>;
}

/// The agent's store: a bucket opened through `wasi:keyvalue` (works only
/// inside the host).
pub struct HostStore(crate::kv::Bucket);

impl HostStore {
    /// Opens the bucket `name` (`kv::DEFAULT_BUCKET` unless the operator
    /// granted others). Open it once per instance, in `init`.
    pub fn open(name: &str) -> Result<HostStore, String> {
        crate::kv::open(name)
            .map(HostStore)
            .map_err(|err| crate::kv::describe(&err))
    }

    pub fn bucket(&self) -> &crate::kv::Bucket {
        &self.0
    }
}

fn described<T>(result: Result<T, crate::kv::Error>) -> Result<T, String> {
    result.map_err(|err| crate::kv::describe(&err))
}

impl Store for HostStore {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        described(self.0.get(key))
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        described(self.0.set(key, value))
    }
    fn set_with_ttl(&mut self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), String> {
        described(crate::kv::expiry::set_with_ttl(&self.0, key, value, ttl_ms))
    }
    fn delete(&mut self, key: &str) -> Result<(), String> {
        described(self.0.delete(key))
    }
    fn exists(&mut self, key: &str) -> Result<bool, String> {
        described(self.0.exists(key))
    }
    fn increment_within(&mut self, key: &str, delta: u64, window_ms: u64) -> Result<u64, String> {
        described(crate::kv::expiry::increment_within(
            &self.0, key, delta, window_ms,
        ))
    }
    fn expires_in(&mut self, key: &str) -> Result<Option<u64>, String> {
        described(crate::kv::expiry::expires_in(&self.0, key))
    }
}

/// An in-memory [`Store`] for native tests: the host's semantics (counters
/// as decimal text, fixed windows, expiry), a clock the test moves with
/// [`advance`](MemoryStore::advance), and an outage with
/// [`set_down`](MemoryStore::set_down).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, Option<u64>)>,
    now_ms: u64,
    down: bool,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Moves the store's clock on.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms = self.now_ms.saturating_add(ms);
    }

    /// While down, every call fails as the host's does when its store is
    /// unreachable.
    pub fn set_down(&mut self, down: bool) {
        self.down = down;
    }

    /// The keys held now (not expired), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, (_, expiry))| self.live(*expiry))
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn live(&self, expiry: Option<u64>) -> bool {
        expiry.is_none_or(|at| at > self.now_ms)
    }

    /// The host's limits on what a call may write (keys, values, times),
    /// so a test passes only what the agent would accept.
    fn check(key: &str, value: &[u8], ms: Option<u64>) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "key of {} bytes is over the limit of {MAX_KEY_BYTES}",
                key.len()
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "value of {} bytes is over the limit of {MAX_VALUE_BYTES}",
                value.len()
            ));
        }
        match ms {
            Some(ms) if ms == 0 || ms > MAX_TTL_MS => Err(format!(
                "time to live {ms} ms is out of range 1..={MAX_TTL_MS}"
            )),
            _ => Ok(()),
        }
    }

    fn up(&mut self) -> Result<(), String> {
        if self.down {
            Err("store unavailable".to_owned())
        } else {
            self.entries
                .retain(|_, (_, expiry)| expiry.is_none_or(|at| at > self.now_ms));
            Ok(())
        }
    }
}

impl Store for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.up()?;
        Ok(self.entries.get(key).map(|(value, _)| value.clone()))
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        MemoryStore::check(key, value, None)?;
        self.up()?;
        self.entries.insert(key.to_owned(), (value.to_vec(), None));
        Ok(())
    }
    fn set_with_ttl(&mut self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), String> {
        MemoryStore::check(key, value, Some(ttl_ms))?;
        self.up()?;
        let expiry = self.now_ms.saturating_add(ttl_ms);
        self.entries
            .insert(key.to_owned(), (value.to_vec(), Some(expiry)));
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<(), String> {
        self.up()?;
        self.entries.remove(key);
        Ok(())
    }
    fn exists(&mut self, key: &str) -> Result<bool, String> {
        self.up()?;
        Ok(self.entries.contains_key(key))
    }
    fn increment_within(&mut self, key: &str, delta: u64, window_ms: u64) -> Result<u64, String> {
        MemoryStore::check(key, b"", Some(window_ms))?;
        self.up()?;
        let window_end = self.now_ms.saturating_add(window_ms);
        let (value, expiry) = self
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| (b"0".to_vec(), None));
        let current = crate::kv::parse_counter(value)
            .ok_or_else(|| format!("the value at `{key}` is not a counter"))?;
        let next = current
            .checked_add(delta)
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or_else(|| format!("the counter at `{key}` would overflow"))?;
        *value = next.to_string().into_bytes();
        expiry.get_or_insert(window_end);
        Ok(next)
    }
    fn expires_in(&mut self, key: &str) -> Result<Option<u64>, String> {
        self.up()?;
        let now = self.now_ms;
        Ok(self
            .entries
            .get(key)
            .and_then(|(_, expiry)| expiry.map(|at| at - now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_double_keeps_the_hosts_semantics() {
        let mut store = MemoryStore::new();
        store.set("plain", b"x").unwrap();
        store.set_with_ttl("ban", b"1", 1000).unwrap();
        assert_eq!(store.increment_within("n", 2, 500), Ok(2));
        assert_eq!(store.increment_within("n", 3, 9999), Ok(5));
        assert_eq!(store.expires_in("n"), Ok(Some(500)), "a fixed window");
        assert!(store.increment_within("plain", 1, 10).is_err());
        store.advance(500);
        assert_eq!(store.get("n"), Ok(None));
        assert_eq!(store.increment_within("n", 1, 100), Ok(1));
        assert_eq!(store.expires_in("plain"), Ok(None));
        store.advance(500);
        assert_eq!(store.exists("ban"), Ok(false));
        assert_eq!(store.keys(), ["plain"], "the new window ended too");
        assert!(
            store.set_with_ttl("k", b"v", 0).is_err(),
            "the host refuses a 0 ms ttl"
        );
        assert!(store.increment_within("k", 1, MAX_TTL_MS + 1).is_err());
        assert!(store.set(&"k".repeat(MAX_KEY_BYTES + 1), b"v").is_err());
        store.set_down(true);
        assert!(store.get("plain").is_err());
    }
}
