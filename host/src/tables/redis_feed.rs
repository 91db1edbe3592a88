//! Tables fed from a Redis set (`redis-set:KEY`), so a fleet of agents
//! shares one live list: a security system runs `SADD KEY 192.0.2.7` (or
//! `SADD KEY "192.0.2.0/24 scanner"`), and within a second every agent on
//! that Redis blocks it. The key is used as written (the `--kv-prefix` of
//! guest buckets does not apply). While Redis is down, the last version
//! loaded keeps serving and each failed poll is counted.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::list::ListBuilder;
use super::registry::{LiveTable, Loaded, TableFailure, accept};

/// How often the set is read: a change is served within about this.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait for one read, and for connecting.
const TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(url: &str) -> Result<ConnectionManager, (TableFailure, String)> {
    let unavailable = |err: redis::RedisError| (TableFailure::Unavailable, err.to_string());
    let client = redis::Client::open(url).map_err(unavailable)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)
}

/// The set's members, as text (bytes that are not UTF-8 replaced: such a
/// member is a malformed line, not a failed read).
async fn members(
    connection: &mut ConnectionManager,
    key: &str,
) -> Result<Vec<String>, (TableFailure, String)> {
    let mut command = redis::cmd("SMEMBERS");
    command.arg(key);
    let read = async {
        command
            .query_async::<Vec<Vec<u8>>>(connection)
            .await
            .map(|members| {
                members
                    .into_iter()
                    .map(|member| String::from_utf8_lossy(&member).into_owned())
                    .collect()
            })
    };
    match tokio::time::timeout(TIMEOUT, read).await {
        Ok(Ok(members)) => Ok(members),
        Ok(Err(err)) => Err((TableFailure::Unavailable, err.to_string())),
        Err(_) => Err((
            TableFailure::Unavailable,
            "Redis did not answer in time".into(),
        )),
    }
}

/// Sorts the members and, unless they hash to `previous`, builds the table
/// (on a blocking thread: a large set is real work).
async fn build(
    mut members: Vec<String>,
    previous: Option<u64>,
) -> Option<(u64, Result<Loaded, (TableFailure, String)>)> {
    tokio::task::spawn_blocking(move || {
        members.sort_unstable();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        members.hash(&mut hasher);
        let digest = hasher.finish();
        if previous == Some(digest) {
            return None;
        }
        let mut builder = ListBuilder::default();
        for (index, member) in members.iter().enumerate() {
            builder.line(index + 1, member);
        }
        Some((digest, Loaded::from_list(builder.finish())))
    })
    .await
    .ok()
    .flatten()
}

/// The set's first version, for the start: an empty table while Redis is
/// down (the failure is counted and logged by the caller).
pub(super) async fn first_load(url: &str, key: &str) -> Result<Loaded, (TableFailure, String)> {
    let mut connection = connect(url).await?;
    let members = members(&mut connection, key).await?;
    match build(members, None).await {
        Some((_, loaded)) => loaded,
        None => Err((TableFailure::Read, "building the table failed".into())),
    }
}

/// Polls the set until `shutdown`, swapping in each changed version.
pub(super) async fn follow(
    live: Arc<LiveTable>,
    url: String,
    key: String,
    shutdown: CancellationToken,
) {
    let mut connection = match connect(&url).await {
        Ok(connection) => connection,
        Err((_, why)) => {
            tracing::error!(table = live.name(), "Redis feed not started: {why}");
            return;
        }
    };
    let mut last_digest = None;
    let mut was_down = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let started = Instant::now();
        let members = match members(&mut connection, &key).await {
            Ok(members) => members,
            Err(failure) => {
                // One log line per outage, a count per failed poll.
                if !was_down {
                    accept(&live, Err(failure), started.elapsed(), "poll");
                } else {
                    live.stats.loads_failed[TableFailure::Unavailable as usize]
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                was_down = true;
                continue;
            }
        };
        if was_down {
            tracing::info!(table = live.name(), "Redis feed reading again");
            was_down = false;
        }
        // A version that fails to build is remembered too: it is logged and
        // counted once, not at every poll until the set changes.
        if let Some((digest, loaded)) = build(members, last_digest).await {
            accept(&live, loaded, started.elapsed(), "set changed");
            last_digest = Some(digest);
        }
    }
}
