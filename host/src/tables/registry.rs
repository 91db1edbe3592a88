//! The agent's tables: each source loaded once, on a blocking thread, and
//! shared by every guest granted it; a changed source is loaded again and
//! swapped in whole. A source that fails to load keeps the last version
//! serving, and the failure is logged and counted by cause.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::list;
use super::mmdb::MmdbTable;
use super::{Table, TableGrants, TableSource};
use crate::planes::ControlPlane;
use crate::watch::Triggers;

/// Why a table version was not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFailure {
    /// The file could not be read.
    Read,
    /// A MaxMind DB file that does not parse.
    Format,
    /// A list whose every line is malformed (probably not a list at all).
    Malformed,
    /// Redis did not answer.
    Unavailable,
}

impl TableFailure {
    pub const ALL: [TableFailure; 4] = [
        TableFailure::Read,
        TableFailure::Format,
        TableFailure::Malformed,
        TableFailure::Unavailable,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            TableFailure::Read => "read",
            TableFailure::Format => "format",
            TableFailure::Malformed => "malformed",
            TableFailure::Unavailable => "unavailable",
        }
    }
}

/// Counters of one table, read by the metrics at each scrape.
#[derive(Debug, Default)]
pub struct TableStats {
    pub lookups: AtomicU64,
    pub entries: AtomicU64,
    pub malformed_lines: AtomicU64,
    pub last_load_micros: AtomicU64,
    pub loads_ok: AtomicU64,
    pub loads_failed: [AtomicU64; TableFailure::ALL.len()],
}

/// One table as guests see it: the version serving now, swapped whole.
#[derive(Debug)]
pub struct LiveTable {
    /// The name it was first granted under (for logs and metrics).
    name: Arc<str>,
    source: TableSource,
    current: ArcSwap<Table>,
    pub stats: TableStats,
}

impl LiveTable {
    /// An empty table until its first version is accepted.
    fn new(name: &str, source: TableSource) -> LiveTable {
        LiveTable {
            name: name.into(),
            source,
            current: ArcSwap::from_pointee(Table::empty()),
            stats: TableStats::default(),
        }
    }

    /// The version serving now; a lookup holds it to its end, so a swap
    /// never changes a table under a lookup.
    pub fn current(&self) -> arc_swap::Guard<Arc<Table>> {
        self.current.load()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &TableSource {
        &self.source
    }

    fn swap(&self, table: Table) {
        self.stats
            .entries
            .store(table.len() as u64, Ordering::Relaxed);
        self.current.store(Arc::new(table));
    }

    fn failed(&self, cause: TableFailure) {
        self.stats.loads_failed[cause as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A version read from a source, with what reading it found.
pub(super) struct Loaded {
    pub table: Table,
    pub malformed: usize,
    pub first_malformed: Option<(usize, String)>,
    pub duplicates: usize,
}

impl Loaded {
    pub(super) fn from_list(parsed: list::ParsedList) -> Result<Loaded, (TableFailure, String)> {
        if parsed.table.is_empty() && parsed.malformed > 0 {
            let (line, text) = parsed.first_malformed.unwrap_or_default();
            return Err((
                TableFailure::Malformed,
                format!(
                    "no line is an address or network ({} malformed, the first is line {line}: `{text}`)",
                    parsed.malformed
                ),
            ));
        }
        Ok(Loaded {
            table: Table::List(parsed.table),
            malformed: parsed.malformed,
            first_malformed: parsed.first_malformed,
            duplicates: parsed.duplicates,
        })
    }
}

/// The size and modification time of a file, to tell whether it changed
/// while it was read.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Reads a file whole, again while it is still being written: a copy read
/// while its size or time moved is not a version of the file.
fn read_settled(path: &Path) -> Result<Vec<u8>, (TableFailure, String)> {
    for _ in 0..20 {
        let before = stamp(path);
        let bytes = std::fs::read(path).map_err(|err| (TableFailure::Read, err.to_string()))?;
        if before.is_some() && stamp(path) == before {
            return Ok(bytes);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err((
        TableFailure::Read,
        "the file kept changing while it was read".into(),
    ))
}

/// Reads a file: a MaxMind DB when its metadata marker is there, else a
/// list. Blocking: run it on a blocking thread.
pub(super) fn read_file(path: &Path) -> Result<Loaded, (TableFailure, String)> {
    let bytes = read_settled(path)?;
    if MmdbTable::sniff(&bytes) {
        let table = MmdbTable::from_bytes(bytes).map_err(|err| {
            (
                TableFailure::Format,
                format!("not a valid MaxMind DB: {err}"),
            )
        })?;
        return Ok(Loaded {
            table: Table::Mmdb(table),
            malformed: 0,
            first_malformed: None,
            duplicates: 0,
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    Loaded::from_list(list::parse(&text))
}

/// Where reloads run, and the Redis server of `redis-set:` sources.
#[derive(Clone)]
struct Watching {
    control_plane: ControlPlane,
    shutdown: CancellationToken,
}

struct Inner {
    tables: Mutex<BTreeMap<TableSource, Arc<LiveTable>>>,
    watching: Option<Watching>,
    redis_url: Option<String>,
}

/// Every table of the agent, by source; cheap to clone.
#[derive(Clone)]
pub struct IpTables {
    inner: Arc<Inner>,
}

impl Default for IpTables {
    fn default() -> IpTables {
        IpTables::new(None)
    }
}

/// The tables one guest may open, by the name it was granted them under.
#[derive(Debug, Clone, Default)]
pub struct GrantedTables(Arc<BTreeMap<String, Arc<LiveTable>>>);

impl GrantedTables {
    pub fn get(&self, name: &str) -> Option<&Arc<LiveTable>> {
        self.0.get(name)
    }
}

impl IpTables {
    /// Tables loaded once, never reloaded (`spoa-host call`, `check`).
    /// `redis_url` serves `redis-set:` sources.
    pub fn new(redis_url: Option<String>) -> IpTables {
        IpTables {
            inner: Arc::new(Inner {
                tables: Mutex::default(),
                watching: None,
                redis_url,
            }),
        }
    }

    /// Tables whose sources are watched (files, and SIGHUP) or polled
    /// (Redis) from `control_plane` until `shutdown`, and reloaded on its
    /// blocking threads: never on the data plane.
    pub fn watching(
        control_plane: ControlPlane,
        shutdown: CancellationToken,
        redis_url: Option<String>,
    ) -> IpTables {
        IpTables {
            inner: Arc::new(Inner {
                tables: Mutex::default(),
                watching: Some(Watching {
                    control_plane,
                    shutdown,
                }),
                redis_url,
            }),
        }
    }

    /// The tables `grants` names, loading the sources not loaded yet. A
    /// file that cannot be read, or whose every line is malformed, is an
    /// error (an empty file is an empty table); a Redis set starts empty
    /// while Redis is down.
    pub async fn resolve(&self, grants: &TableGrants) -> Result<GrantedTables, String> {
        let mut granted = BTreeMap::new();
        for (name, source) in grants.iter() {
            let table = match self.loaded(source) {
                Some(table) => table,
                None => self.load_new(name, source).await?,
            };
            granted.insert(name.to_owned(), table);
        }
        Ok(GrantedTables(Arc::new(granted)))
    }

    fn loaded(&self, source: &TableSource) -> Option<Arc<LiveTable>> {
        self.lock().get(source).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TableSource, Arc<LiveTable>>> {
        self.inner.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn load_new(&self, name: &str, source: &TableSource) -> Result<Arc<LiveTable>, String> {
        let started = Instant::now();
        let loaded = match source {
            TableSource::File(path) => {
                let path = path.clone();
                let loaded = tokio::task::spawn_blocking(move || read_file(&path))
                    .await
                    .map_err(|err| format!("loading IP table `{name}`: {err}"))?
                    .map_err(|(_, reason)| format!("IP table `{name}` ({source}): {reason}"))?;
                Ok(loaded)
            }
            TableSource::RedisSet(key) => match self.inner.redis_url.as_deref() {
                Some(url) => super::redis_feed::first_load(url, key).await,
                // `spoa-host check` and `call` without --kv reach no
                // Redis: the grant is checked by name, the set seen empty.
                None if self.inner.watching.is_none() => {
                    tracing::warn!(
                        table = name,
                        "{source}: no --kv redis://… here; the table is empty"
                    );
                    Loaded::from_list(list::parse(""))
                }
                None => {
                    return Err(format!(
                        "IP table `{name}` ({source}) needs a Redis server: add --kv redis://…"
                    ));
                }
            },
        };
        let took = started.elapsed();
        let live = Arc::new(LiveTable::new(name, source.clone()));
        accept(&live, loaded, took, "start");
        let (live, ours) = {
            let mut tables = self.lock();
            // Another guest may have loaded it meanwhile: keep the first,
            // and leave following it to whoever inserted it.
            let kept = tables.entry(source.clone()).or_insert(live.clone()).clone();
            let ours = Arc::ptr_eq(&kept, &live);
            (kept, ours)
        };
        if ours && let Some(watching) = &self.inner.watching {
            self.follow(watching, live.clone());
        }
        Ok(live)
    }

    /// Reloads `live` whenever its source changes.
    fn follow(&self, watching: &Watching, live: Arc<LiveTable>) {
        let shutdown = watching.shutdown.clone();
        match live.source().clone() {
            TableSource::File(path) => {
                let control = watching.control_plane.clone();
                watching
                    .control_plane
                    .spawn(follow_file(control, live, path, shutdown));
            }
            TableSource::RedisSet(key) => {
                let Some(url) = self.inner.redis_url.clone() else {
                    return;
                };
                watching
                    .control_plane
                    .spawn(super::redis_feed::follow(live, url, key, shutdown));
            }
        }
    }

    /// Every table loaded, for the metrics.
    pub fn all(&self) -> Vec<Arc<LiveTable>> {
        self.lock().values().cloned().collect()
    }
}

/// Swaps a new version in, or counts and logs why not.
pub(super) fn accept(
    live: &LiveTable,
    loaded: Result<Loaded, (TableFailure, String)>,
    took: Duration,
    reason: &str,
) -> bool {
    match loaded {
        Ok(loaded) => {
            let entries = loaded.table.len();
            live.swap(loaded.table);
            live.stats
                .last_load_micros
                .store(took.as_micros() as u64, Ordering::Relaxed);
            live.stats
                .malformed_lines
                .store(loaded.malformed as u64, Ordering::Relaxed);
            live.stats.loads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                table = live.name(),
                source = %live.source(),
                entries,
                duplicates = loaded.duplicates,
                malformed = loaded.malformed,
                took_ms = took.as_secs_f64() * 1e3,
                reason,
                "IP table loaded"
            );
            if let Some((line, text)) = loaded.first_malformed {
                tracing::warn!(
                    table = live.name(),
                    "{}:{line}: not an address or network: `{text}`; {} malformed line(s) skipped",
                    live.source(),
                    loaded.malformed
                );
            }
            true
        }
        Err((cause, why)) => {
            live.failed(cause);
            tracing::error!(
                table = live.name(),
                source = %live.source(),
                cause = cause.name(),
                reason,
                "IP table not reloaded, the last version keeps serving: {why}"
            );
            false
        }
    }
}

async fn follow_file(
    control: ControlPlane,
    live: Arc<LiveTable>,
    path: PathBuf,
    shutdown: CancellationToken,
) {
    let mut triggers = match Triggers::new(&control, &shutdown, true).and_then(|mut triggers| {
        triggers.watch_file(&path, "file changed")?;
        Ok(triggers)
    }) {
        Ok(triggers) => triggers,
        Err(err) => {
            tracing::error!(table = live.name(), "IP table not watched: {err:#}");
            return;
        }
    };
    while let Some(reason) = triggers.next().await {
        let started = Instant::now();
        let file = path.clone();
        let loaded = match tokio::task::spawn_blocking(move || read_file(&file)).await {
            Ok(loaded) => loaded,
            Err(err) => Err((TableFailure::Read, err.to_string())),
        };
        accept(&live, loaded, started.elapsed(), reason);
    }
}
