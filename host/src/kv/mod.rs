//! Shared state for guests (`wasi:keyvalue` plus `spoa:agent/expiry`):
//! buckets of byte values every worker and instance of the agent shares, in
//! the process by default ([`memory`]), or in Redis for a fleet of agents
//! ([`redis`]). Knows nothing of wasmtime: the sandbox turns guest calls into
//! calls on [`KvStore`].

mod grants;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use grants::{BucketGrants, BucketRefusal, DEFAULT_BUCKET, validate_bucket_name};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a guest may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` page or one batch call carries.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Longest time to live or window, in milliseconds (2^53 - 1, exact in every
/// language's numbers).
pub const MAX_TTL_MS: u64 = (1 << 53) - 1;
/// Counters are stored as decimal text and are at most `i64::MAX` (Redis's
/// range), in both backends.
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// Why a store call failed: the guest gets it as `error::other(text)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The backend cannot be reached (Redis down, connection lost).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within what was left of the call's deadline.
    #[error("the store did not answer within the call's deadline")]
    Timeout,
    /// The call itself is wrong: a key too long, a value too large, a
    /// counter that is not a number, an overflow.
    #[error("{0}")]
    Invalid(String),
}

/// The causes [`KvError`]s are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFailureCause {
    Unavailable,
    Timeout,
    Invalid,
}

impl KvFailureCause {
    pub const ALL: [KvFailureCause; 3] = [
        KvFailureCause::Unavailable,
        KvFailureCause::Timeout,
        KvFailureCause::Invalid,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            KvFailureCause::Unavailable => "unavailable",
            KvFailureCause::Timeout => "timeout",
            KvFailureCause::Invalid => "invalid",
        }
    }
}

impl KvError {
    pub fn cause(&self) -> KvFailureCause {
        match self {
            KvError::Unavailable(_) => KvFailureCause::Unavailable,
            KvError::Timeout => KvFailureCause::Timeout,
            KvError::Invalid(_) => KvFailureCause::Invalid,
        }
    }
}

/// One page of `list-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<u64>,
}

/// What the metrics show of a store, read at each scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvStats {
    /// In-process store: entries and bytes held (keys, values and the
    /// per-entry overhead), and the byte limit.
    pub entries: u64,
    pub bytes: u64,
    pub limit_bytes: u64,
    /// In-process store: entries removed to make room, and expired entries
    /// removed.
    pub evictions: u64,
    pub expired: u64,
    /// Failed store calls, by [`KvFailureCause`].
    pub failures: [u64; 3],
    /// Redis: times the connection came back after failing.
    pub reconnects: u64,
    /// Whether the store answers: always for the in-process store; for
    /// Redis, unless its last call found it unreachable.
    pub up: bool,
}

enum Backend {
    Memory(Arc<MemoryStore>),
    Redis(RedisStore),
}

/// One counter increment: add `delta`; a counter without an expiry gets
/// `window` as its expiry (see `spoa:agent/expiry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterStep {
    pub delta: u64,
    pub window: Option<Duration>,
}

/// The store guests share; cheap to clone.
#[derive(Clone)]
pub struct KvStore {
    backend: Arc<Backend>,
    failures: Arc<[AtomicU64; 3]>,
}

/// Where the store lives: `--kv memory` (the default) or `--kv redis://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvBackendSpec {
    Memory { limit_bytes: usize },
    Redis { url: String, prefix: String },
}

impl KvBackendSpec {
    /// The Redis server's address, when the store is on one.
    pub fn redis_url(&self) -> Option<String> {
        match self {
            KvBackendSpec::Memory { .. } => None,
            KvBackendSpec::Redis { url, .. } => Some(url.clone()),
        }
    }
}

impl KvStore {
    /// The in-process store, bounded to `limit_bytes`, with its expiry sweep.
    pub fn memory(limit_bytes: usize) -> KvStore {
        let store = Arc::new(MemoryStore::new(limit_bytes));
        memory::spawn_sweeper(&store);
        KvStore::with_backend(Backend::Memory(store))
    }

    /// A small in-process store without a sweeper, for a smoke call or a
    /// one-off `spoa-host call`.
    pub fn scratch() -> KvStore {
        // Room for the largest entry in every shard, so a smoke call is never
        // refused what serving accepts; memory is only used when written.
        let limit =
            memory::SHARDS * (MAX_VALUE_BYTES + MAX_KEY_BYTES + 64 + memory::ENTRY_OVERHEAD);
        KvStore::with_backend(Backend::Memory(Arc::new(MemoryStore::new(limit))))
    }

    /// Opens the store `spec` names. Redis connects lazily, so the agent
    /// starts (and its guests get `unavailable` errors) while Redis is down;
    /// it must be called within the tokio runtime the connection is to run on.
    pub fn open(spec: &KvBackendSpec) -> Result<KvStore, String> {
        Ok(match spec {
            KvBackendSpec::Memory { limit_bytes } => KvStore::memory(*limit_bytes),
            KvBackendSpec::Redis { url, prefix } => {
                KvStore::with_backend(Backend::Redis(RedisStore::open(url, prefix)?))
            }
        })
    }

    fn with_backend(backend: Backend) -> KvStore {
        KvStore {
            backend: Arc::new(backend),
            failures: Arc::default(),
        }
    }

    /// A short description for logs: `memory (64 MiB)` or the Redis address.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Memory(store) => format!("in process, {} bytes", store.limit_bytes()),
            Backend::Redis(store) => format!("redis {}", store.address()),
        }
    }

    pub fn stats(&self) -> KvStats {
        let mut stats = match &*self.backend {
            Backend::Memory(store) => store.stats(),
            Backend::Redis(store) => KvStats {
                reconnects: store.reconnects(),
                ..KvStats::default()
            },
        };
        for (slot, count) in stats.failures.iter_mut().zip(self.failures.iter()) {
            *slot = count.load(Ordering::Relaxed);
        }
        stats.up = match &*self.backend {
            Backend::Memory(_) => true,
            Backend::Redis(store) => !store.is_down(),
        };
        stats
    }

    /// Runs `op` against the backend once `checks` passed, held to
    /// `deadline` when it can wait, and counts its failure. A Redis call cut
    /// by the deadline makes the following calls fail at once for a while,
    /// as a refused connection does: a Redis that hangs costs the calls in
    /// flight their deadline, not every call after them.
    async fn run<T>(
        &self,
        deadline: Instant,
        checks: Result<(), KvError>,
        op: impl AsyncFnOnce(&Backend) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let result = match (checks, &*self.backend) {
            (Err(err), _) => Err(err),
            (Ok(()), Backend::Memory(_)) => op(&self.backend).await,
            (Ok(()), Backend::Redis(store)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let result = if left.is_zero() {
                    Err(KvError::Timeout)
                } else {
                    tokio::time::timeout(left, op(&self.backend))
                        .await
                        .unwrap_or(Err(KvError::Timeout))
                };
                if matches!(result, Err(KvError::Timeout)) {
                    store.timed_out();
                }
                result
            }
        };
        if let Err(err) = &result {
            self.failures[err.cause() as usize].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    pub async fn get(
        &self,
        deadline: Instant,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        self.run(deadline, check_key(key), async |backend| match backend {
            Backend::Memory(store) => Ok(store.get(bucket, key)),
            Backend::Redis(store) => store.get(bucket, key).await,
        })
        .await
    }

    /// Sets `key`, with an expiry when `ttl_ms` is given (see
    /// [`ttl_from_millis`] for its range).
    pub async fn set(
        &self,
        deadline: Instant,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let ttl = ttl_ms.map(ttl_from_millis).transpose();
        let checks = check_key(key)
            .and(check_value(&value))
            .and(ttl.clone().map(drop));
        let ttl = ttl.unwrap_or_default();
        self.run(deadline, checks, async |backend| match backend {
            Backend::Memory(store) => store.set(bucket, key, value, ttl),
            Backend::Redis(store) => store.set(bucket, key, &value, ttl).await,
        })
        .await
    }

    pub async fn delete(&self, deadline: Instant, bucket: &str, key: &str) -> Result<(), KvError> {
        self.run(deadline, check_key(key), async |backend| match backend {
            Backend::Memory(store) => {
                store.delete(bucket, key);
                Ok(())
            }
            Backend::Redis(store) => store.delete(bucket, &[key]).await,
        })
        .await
    }

    pub async fn exists(
        &self,
        deadline: Instant,
        bucket: &str,
        key: &str,
    ) -> Result<bool, KvError> {
        self.run(deadline, check_key(key), async |backend| match backend {
            Backend::Memory(store) => Ok(store.get(bucket, key).is_some()),
            Backend::Redis(store) => store.exists(bucket, key).await,
        })
        .await
    }

    pub async fn list_keys(
        &self,
        deadline: Instant,
        bucket: &str,
        cursor: Option<u64>,
    ) -> Result<KeyPage, KvError> {
        self.run(deadline, Ok(()), async |backend| match backend {
            Backend::Memory(store) => Ok(store.list_keys(bucket, cursor)),
            Backend::Redis(store) => store.list_keys(bucket, cursor).await,
        })
        .await
    }

    /// Adds `delta` to the counter at `key`; with `window_ms`, a counter
    /// without an expiry gets one (see `spoa:agent/expiry`).
    pub async fn increment(
        &self,
        deadline: Instant,
        bucket: &str,
        key: &str,
        delta: u64,
        window_ms: Option<u64>,
    ) -> Result<u64, KvError> {
        let window = window_ms.map(ttl_from_millis).transpose();
        let delta_check = if delta > MAX_COUNTER {
            Err(KvError::Invalid(format!(
                "increment {delta} is over the counter limit {MAX_COUNTER}"
            )))
        } else {
            Ok(())
        };
        let checks = check_key(key)
            .and(delta_check)
            .and(window.clone().map(drop));
        let window = window.unwrap_or_default();
        let step = CounterStep { delta, window };
        self.run(deadline, checks, async |backend| match backend {
            Backend::Memory(store) => store.increment(bucket, key, step),
            Backend::Redis(store) => store.increment(bucket, key, step).await,
        })
        .await
    }

    /// Time left before `key` expires; `None` when absent or without expiry.
    pub async fn expires_in(
        &self,
        deadline: Instant,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Duration>, KvError> {
        self.run(deadline, check_key(key), async |backend| match backend {
            Backend::Memory(store) => Ok(store.expires_in(bucket, key)),
            Backend::Redis(store) => store.expires_in(bucket, key).await,
        })
        .await
    }

    /// The values of `keys`, in order (`None` for a missing one).
    pub async fn get_many(
        &self,
        deadline: Instant,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let checks = check_batch(keys.len()).and(keys.iter().try_for_each(|key| check_key(key)));
        self.run(deadline, checks, async |backend| match backend {
            Backend::Memory(store) => Ok(keys.iter().map(|key| store.get(bucket, key)).collect()),
            Backend::Redis(store) => store.get_many(bucket, keys).await,
        })
        .await
    }

    /// Sets every pair, or none when one is refused.
    pub async fn set_many(
        &self,
        deadline: Instant,
        bucket: &str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        let checks = check_batch(pairs.len()).and(
            pairs
                .iter()
                .try_for_each(|(key, value)| check_key(key).and(check_value(value))),
        );
        self.run(deadline, checks, async |backend| match backend {
            Backend::Memory(store) => store.set_many(bucket, pairs),
            Backend::Redis(store) => store.set_many(bucket, &pairs).await,
        })
        .await
    }

    pub async fn delete_many(
        &self,
        deadline: Instant,
        bucket: &str,
        keys: &[String],
    ) -> Result<(), KvError> {
        let checks = check_batch(keys.len()).and(keys.iter().try_for_each(|key| check_key(key)));
        self.run(deadline, checks, async |backend| match backend {
            Backend::Memory(store) => {
                keys.iter().for_each(|key| store.delete(bucket, key));
                Ok(())
            }
            Backend::Redis(store) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                store.delete(bucket, &keys).await
            }
        })
        .await
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "key of {} bytes is over the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Invalid(format!(
            "value of {} bytes is over the limit of {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn check_batch(len: usize) -> Result<(), KvError> {
    if len > MAX_BATCH_KEYS {
        return Err(KvError::Invalid(format!(
            "{len} keys in one call; at most {MAX_BATCH_KEYS}"
        )));
    }
    Ok(())
}

/// A time to live or window from the guest's milliseconds.
fn ttl_from_millis(ms: u64) -> Result<Duration, KvError> {
    if ms == 0 || ms > MAX_TTL_MS {
        return Err(KvError::Invalid(format!(
            "time to live {ms} ms is out of range 1..={MAX_TTL_MS}"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// Parses a stored counter: canonical decimal text (`0`, or digits without
/// a sign or leading zero), at most [`MAX_COUNTER`]; the Redis backend's
/// script checks the same before it writes (see `redis.rs`).
fn parse_counter(value: &[u8]) -> Result<u64, KvError> {
    let canonical = value == b"0"
        || (matches!(value.first(), Some(b'1'..=b'9')) && value.iter().all(u8::is_ascii_digit));
    std::str::from_utf8(value)
        .ok()
        .filter(|_| canonical)
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|&n| n <= MAX_COUNTER)
        .ok_or_else(|| KvError::Invalid(NOT_A_COUNTER.into()))
}

/// The error a counter operation gets on a value that is not a counter.
pub const NOT_A_COUNTER: &str = "the value is not a counter (decimal text, 0 to 2^63-1)";
