//! The Redis backend (`--kv redis://HOST:PORT`): several agents share state
//! through one Redis server.
//!
//! Client: the `redis` crate (redis-rs), the maintained reference client for
//! Rust, with its tokio `ConnectionManager`: one multiplexed connection that
//! pipelines the calls of every guest instance and reconnects by itself.
//! It connects lazily, so the agent starts while Redis is down.
//!
//! Keys are `PREFIX BUCKET ":" KEY` (prefix `spoa:` by default), values are
//! the guest's bytes, counters are Redis integers (decimal text), expiry is
//! Redis's own (`SET … PX`, `PEXPIRE`, `PTTL`).
//!
//! When Redis fails, calls fail fast: for [`RETRY_AFTER`] after a failure
//! they get `unavailable` without waiting on the network, then one call
//! tries again. Each call is also bounded by what is left of the guest
//! call's deadline (in [`super::KvStore`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{Client, RedisError, Script};

use super::{
    CounterStep, KeyPage, KvError, MAX_BATCH_KEYS, MAX_COUNTER, NOT_A_COUNTER, parse_counter,
};

/// How long calls fail at once after Redis failed, before one tries again.
pub const RETRY_AFTER: Duration = Duration::from_millis(200);
/// Longest a connection attempt may take (a call is held to its deadline
/// anyway; this bounds the attempt it shares with the other calls).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A backstop for one reply: each call is bounded by its deadline first.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A counter increment, as the in-process store does it: the stored value
/// must be a counter (canonical non-negative decimal text, checked here,
/// whatever the server's own parser accepts) before anything is written;
/// INCRBY refuses overflow. With a window (ARGV[2] > 0), a counter without
/// an expiry gets one: a fixed window from the first increment. Lua's
/// numbers are doubles, so a result past 2^53 is returned as the stored
/// text, exact.
const INCREMENT: &str = r"
local v = redis.call('GET', KEYS[1])
if v and v ~= '0' and not string.match(v, '^[1-9]%d*$') then
  return redis.error_reply('NOTCOUNTER')
end
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if n < 9007199254740992 then
  return n
end
return redis.call('GET', KEYS[1])
";

pub struct RedisStore {
    connection: ConnectionManager,
    address: String,
    prefix: String,
    increment: Script,
    /// Milliseconds since `epoch` until which calls fail at once.
    failing_until: AtomicU64,
    epoch: Instant,
    /// The connection failed and has not served a call since.
    down: AtomicBool,
    reconnects: AtomicU64,
}

impl RedisStore {
    /// Opens (lazily) the Redis at `url`; must run within the tokio runtime
    /// the connection is to use.
    pub fn open(url: &str, prefix: &str) -> Result<RedisStore, String> {
        validate_prefix(prefix)?;
        let client = Client::open(url).map_err(|err| format!("--kv {url}: {err}"))?;
        let address = client.get_connection_info().addr().to_string();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // One attempt per reconnection: failing fast is this store's
            // job (see RETRY_AFTER), not the client's.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|err| format!("--kv {url}: {err}"))?;
        Ok(RedisStore {
            connection,
            address,
            prefix: prefix.to_owned(),
            increment: Script::new(INCREMENT),
            failing_until: AtomicU64::new(0),
            epoch: Instant::now(),
            down: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The last call found Redis unreachable, and none has succeeded since.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn key(&self, bucket: &str, key: &str) -> String {
        format!("{}{bucket}:{key}", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs one command, failing fast while Redis is known to be down, and
    /// tracking when it goes down and comes back.
    async fn call<T: redis::FromRedisValue>(&self, command: Command<'_>) -> Result<T, KvError> {
        if self.now_ms() < self.failing_until.load(Ordering::Relaxed) {
            return Err(KvError::Unavailable(format!(
                "redis {} failed recently; retrying shortly",
                self.address
            )));
        }
        let mut connection = self.connection.clone();
        let result = match command {
            Command::Plain(cmd) => cmd.query_async(&mut connection).await,
            Command::Script(invocation) => invocation.invoke_async(&mut connection).await,
        };
        match result {
            Ok(value) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(redis = %self.address, "key-value store reachable again");
                }
                Ok(value)
            }
            Err(err) if is_unavailable(&err) => {
                self.failed(&err.to_string());
                Err(KvError::Unavailable(format!(
                    "redis {}: {err}",
                    self.address
                )))
            }
            Err(err) if err.code() == Some("NOTCOUNTER") => {
                Err(KvError::Invalid(NOT_A_COUNTER.into()))
            }
            Err(err) => Err(KvError::Invalid(format!("redis: {err}"))),
        }
    }

    /// Calls fail at once for [`RETRY_AFTER`]; the first failure after
    /// serving is logged.
    fn failed(&self, reason: &str) {
        self.failing_until.store(
            self.now_ms() + RETRY_AFTER.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(redis = %self.address, "key-value store unavailable: {reason}");
        }
    }

    /// A call was cut by its deadline: Redis hangs or is overloaded.
    pub fn timed_out(&self) {
        self.failed("no answer within a guest call's deadline");
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.call(Command::Plain(redis::cmd("GET").arg(self.key(bucket, key))))
            .await
    }

    pub async fn set(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(bucket, key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis() as u64);
        }
        self.call::<()>(Command::Plain(&mut cmd)).await
    }

    pub async fn delete(&self, bucket: &str, keys: &[&str]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(self.key(bucket, key));
        }
        self.call::<u64>(Command::Plain(&mut cmd)).await.map(drop)
    }

    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        self.call(Command::Plain(
            redis::cmd("EXISTS").arg(self.key(bucket, key)),
        ))
        .await
    }

    pub async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, KvError> {
        let pattern = format!("{}{bucket}:*", self.prefix);
        let strip = pattern.len() - 1;
        let (next, keys): (u64, Vec<String>) = self
            .call(Command::Plain(
                redis::cmd("SCAN")
                    .arg(cursor.unwrap_or(0))
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(MAX_BATCH_KEYS),
            ))
            .await?;
        Ok(KeyPage {
            keys: keys
                .into_iter()
                .filter_map(|key| key.get(strip..).map(str::to_owned))
                .collect(),
            cursor: (next != 0).then_some(next),
        })
    }

    pub async fn increment(
        &self,
        bucket: &str,
        key: &str,
        step: CounterStep,
    ) -> Result<u64, KvError> {
        let CounterStep { delta, window } = step;
        let mut invocation = self.increment.prepare_invoke();
        invocation
            .key(self.key(bucket, key))
            .arg(delta)
            .arg(window.map_or(0, |window| window.as_millis() as u64));
        match self.call(Command::Script(&invocation)).await? {
            redis::Value::Int(n) => u64::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_COUNTER)
                .ok_or_else(|| KvError::Invalid(NOT_A_COUNTER.into())),
            redis::Value::BulkString(text) => parse_counter(&text),
            other => Err(KvError::Invalid(format!(
                "redis: unexpected reply to an increment: {other:?}"
            ))),
        }
    }

    pub async fn expires_in(&self, bucket: &str, key: &str) -> Result<Option<Duration>, KvError> {
        let millis: i64 = self
            .call(Command::Plain(
                redis::cmd("PTTL").arg(self.key(bucket, key)),
            ))
            .await?;
        // -2: no such key; -1: no expiry.
        Ok(u64::try_from(millis).ok().map(Duration::from_millis))
    }

    pub async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(bucket, key));
        }
        self.call(Command::Plain(&mut cmd)).await
    }

    pub async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in pairs {
            cmd.arg(self.key(bucket, key)).arg(value.as_slice());
        }
        self.call::<()>(Command::Plain(&mut cmd)).await
    }
}

enum Command<'a> {
    Plain(&'a mut redis::Cmd),
    Script(&'a redis::ScriptInvocation<'a>),
}

/// Whether the error means Redis cannot be reached (rather than that it
/// refused this command).
fn is_unavailable(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
        || matches!(
            err.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::ClusterDown
                )
        )
        // Redis refusing work it cannot do now, by its error code.
        || matches!(err.code(), Some("OOM" | "BUSY" | "NOAUTH" | "MISCONF"))
}

/// Key prefixes are `[A-Za-z0-9_.:-]{0,64}`: they go into SCAN patterns.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let valid = prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--kv-prefix `{prefix}` must be at most 64 of A-Z a-z 0-9 _ - . :"
        ))
    }
}
