//! Prometheus metrics, and the status report (`/status`). Every series the
//! hot path touches is resolved to a plain atomic handle once, at start-up,
//! so counting costs one atomic add.
//!
//! Must not know the agent's, the executors' or the guests' types: they
//! count through these handles and report through [`status::StatusSource`].

pub mod http;
pub mod status;
mod tables;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::kv::{KvFailureCause, KvStats, KvStore};
use crate::planes::DataPlane;
use crate::sandbox::{LoadFailureCause, ModuleIdentity};
use crate::spop::{FrameType, Status};
use crate::tables::IpTables;
use status::{GuestHistory, ModuleRef, ReloadRecord, RollbackRecord, StatusSource, rfc3339};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u32,
}

/// Guest names come from the operator's configuration only, so every
/// `guest` label has bounded cardinality.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestLabels {
    guest: String,
}

/// A guest's own counter: both labels come from the operator's
/// configuration (the guest and the names it allows it), never the guest.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestCounterLabels {
    guest: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    MaxConnections,
    AllowList,
    Tls,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 3] = [
        RefusalReason::MaxConnections,
        RefusalReason::AllowList,
        RefusalReason::Tls,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            RefusalReason::MaxConnections => "max_connections",
            RefusalReason::AllowList => "allow_list",
            RefusalReason::Tls => "tls",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestKindLabels {
    guest: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestResultLabels {
    guest: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    guest: String,
    path: String,
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestCauseLabels {
    guest: String,
    cause: &'static str,
}

type HistogramFamily = Family<GuestLabels, Histogram, fn() -> Histogram>;

fn call_seconds_histogram() -> Histogram {
    Histogram::new([
        1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 1e-2, 5e-2,
    ])
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    pub connections_current: Gauge,
    pub connections_total: Counter,
    connections_refused: [Counter; RefusalReason::ALL.len()],
    frames_received: [Counter; 6],
    frames_sent: [Counter; 6],
    pub messages: Counter,
    pub actions: Counter,
    records: RecordCounters,
    ack_overflows: Counter,
    pub unrouted_messages: Counter,
    config_reloads: Family<ResultLabels, Counter>,
    disconnects: Family<StatusLabels, Counter>,
    disconnect_handles: Vec<(Status, Counter)>,
    guests: GuestFamilies,
    kv: KvSeries,
    /// The store whose figures are read at each scrape.
    kv_store: Mutex<Option<KvStore>>,
    tables: tables::TableSeries,
    ip_tables: Mutex<Option<IpTables>>,
    worker_connections: Family<WorkerLabels, Gauge>,
    connections_moved: Counter,
    /// The data plane whose threads' connections are read at each scrape.
    data_plane: Mutex<Option<DataPlane>>,
    started_at: SystemTime,
    /// The guests serving now, for `/status`. Weak: the router holds these
    /// metrics.
    guests_now: Mutex<Option<Weak<dyn StatusSource>>>,
}

/// The shared key-value store's series, set from [`KvStore::stats`] at each
/// scrape (the store counts under its own locks; nothing here is on its
/// hot path).
struct KvSeries {
    entries: Gauge,
    bytes: Gauge,
    limit_bytes: Gauge,
    evictions: Counter,
    expired: Counter,
    failures: [Counter; KvFailureCause::ALL.len()],
    reconnects: Counter,
    up: Gauge,
}

impl KvSeries {
    fn register(r: &mut Registrar) -> KvSeries {
        let failures: Family<CauseLabels, Counter> = r.series(
            "kv_failures",
            "Guest key-value calls that failed, by cause: unavailable (store unreachable), timeout (past the call's deadline), invalid (the call was wrong)",
        );
        KvSeries {
            entries: r.series("kv_entries", "Entries in the in-process key-value store"),
            bytes: r.series(
                "kv_bytes",
                "Bytes held by the in-process key-value store (keys, values, 96 per entry)",
            ),
            limit_bytes: r.series(
                "kv_limit_bytes",
                "Most bytes the in-process key-value store holds (--kv-memory)",
            ),
            evictions: r.series(
                "kv_evictions",
                "Live entries evicted (least recently used) to make room",
            ),
            expired: r.series("kv_expired", "Expired entries removed"),
            failures: handles(
                &failures,
                KvFailureCause::ALL.map(|cause| CauseLabels {
                    cause: cause.name(),
                }),
            ),
            reconnects: r.series(
                "kv_reconnects",
                "Times the Redis store came back after failing",
            ),
            up: r.series(
                "kv_up",
                "1 while the key-value store answers (Redis: 0 from a call that finds it unreachable until one succeeds)",
            ),
        }
    }

    fn update(&self, stats: &KvStats) {
        self.entries.set(stats.entries as i64);
        self.bytes.set(stats.bytes as i64);
        self.limit_bytes.set(stats.limit_bytes as i64);
        raise_to(&self.evictions, stats.evictions);
        raise_to(&self.expired, stats.expired);
        for (counter, &count) in self.failures.iter().zip(stats.failures.iter()) {
            raise_to(counter, count);
        }
        raise_to(&self.reconnects, stats.reconnects);
        self.up.set(i64::from(stats.up));
    }
}

/// Raises a counter to `to`, a total kept elsewhere (the store's, a
/// table's) and copied at each scrape.
fn raise_to(counter: &Counter, to: u64) {
    counter.inc_by(to.saturating_sub(counter.get()));
}

/// The per-guest series, labelled `guest`.
#[derive(Clone)]
struct GuestFamilies {
    calls: Family<GuestLabels, Counter>,
    failures: Family<GuestKindLabels, Counter>,
    call_seconds: HistogramFamily,
    reloads: Family<GuestResultLabels, Counter>,
    reload_failures: Family<GuestCauseLabels, Counter>,
    module_info: Family<ModuleLabels, Gauge<i64, AtomicI64Compat>>,
    quarantines: Family<GuestLabels, Counter>,
    quarantined: Family<GuestLabels, Gauge<i64, AtomicI64Compat>>,
    rollbacks: Family<GuestLabels, Counter>,
    shadow: Family<GuestResultLabels, Counter>,
    canaries: Family<GuestResultLabels, Counter>,
    canary_serving: Family<GuestLabels, Gauge<i64, AtomicI64Compat>>,
    counters: Family<GuestCounterLabels, Counter>,
    /// The `module_info` labels set now for each guest, to remove on the
    /// next change (a guest restarted by a configuration reload shares them).
    module_labels: Arc<Mutex<HashMap<String, ModuleLabels>>>,
    /// Each guest's reload and rollback history, by name (shared the same
    /// way).
    histories: Arc<Mutex<HashMap<String, Arc<Mutex<GuestHistory>>>>>,
}

type AtomicI64Compat = std::sync::atomic::AtomicI64;

/// The recording's counters (`spoa_records_*`), kept by its writer.
#[derive(Clone, Default)]
pub struct RecordCounters {
    pub written: Counter,
    pub dropped: Counter,
}

/// Registers series under the `spoa_` prefix and hands each back to keep.
struct Registrar<'r>(&'r mut Registry);

impl Registrar<'_> {
    fn series<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.with(name, help, M::default())
    }

    fn with<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// Each label's series of `family`, resolved once.
fn handles<L, M, const N: usize>(family: &Family<L, M>, labels: [L; N]) -> [M; N]
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone + Default,
{
    labels.map(|label| family.get_or_create(&label).clone())
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spoa");
        let mut r = Registrar(&mut registry);
        let connections_current = r.series("connections_current", "Connections currently open");
        let connections_total = r.series("connections", "Connections accepted");
        let worker_connections = r.series(
            "worker_connections",
            "Connections each data-plane thread (--workers) serves now",
        );
        let connections_moved = r.series(
            "connection_moves",
            "Connections moved from one data-plane thread to another, as their load showed (--no-rebalance: none)",
        );
        let refused: Family<ReasonLabels, Counter<u64, AtomicU64>> = r.series(
            "connections_refused",
            "Connections refused, by reason: max_connections (status 13), allow_list (closed before a byte is read), tls (failed handshake)",
        );
        let by_type = FrameType::ALL.map(|t| FrameLabels { r#type: t.name() });
        let received: Family<FrameLabels, Counter> =
            r.series("frames_received", "Frames received, by type");
        let sent: Family<FrameLabels, Counter> = r.series("frames_sent", "Frames sent, by type");
        let messages = r.series("messages", "SPOE messages received");
        let actions = r.series("actions", "Actions sent in ACKs");
        let disconnects: Family<StatusLabels, Counter> = r.series(
            "disconnects",
            "AGENT-DISCONNECT frames sent, by status code",
        );
        let disconnect_handles = Status::ALL
            .iter()
            .map(|&s| {
                (
                    s,
                    disconnects
                        .get_or_create(&StatusLabels { status: s.code() })
                        .clone(),
                )
            })
            .collect();
        let ack_overflows = r.series(
            "ack_overflows",
            "Messages whose actions did not fit in the ACK and were dropped",
        );
        let unrouted_messages = r.series(
            "unrouted_messages",
            "Messages that no guest declares, answered without actions",
        );
        let config_reloads: Family<ResultLabels, Counter> =
            r.series("config_reloads", "Reloads of the --config file, by result");
        for result in ["ok", "unchanged", "failed"] {
            let _ = config_reloads.get_or_create(&ResultLabels { result });
        }
        let records = RecordCounters {
            written: r.series(
                "records_written",
                "Messages and their answers written to the recording (--record)",
            ),
            dropped: r.series(
                "records_dropped",
                "Sampled messages not recorded: the writer's queue was full, or a write failed",
            ),
        };
        let guests = GuestFamilies::register(&mut r);
        let kv = KvSeries::register(&mut r);
        let table_series = tables::TableSeries::register(&mut r);
        let connections_refused = handles(
            &refused,
            RefusalReason::ALL.map(|reason| ReasonLabels {
                reason: reason.name(),
            }),
        );

        Metrics {
            registry,
            connections_current,
            connections_total,
            connections_refused,
            frames_received: handles(&received, by_type.clone()),
            frames_sent: handles(&sent, by_type),
            messages,
            actions,
            ack_overflows,
            unrouted_messages,
            config_reloads,
            disconnects,
            disconnect_handles,
            guests,
            kv,
            records,
            kv_store: Mutex::new(None),
            tables: table_series,
            ip_tables: Mutex::new(None),
            worker_connections,
            connections_moved,
            data_plane: Mutex::new(None),
            started_at: SystemTime::now(),
            guests_now: Mutex::new(None),
        }
    }

    /// The recording's counters (`spoa_records_written_total`,
    /// `spoa_records_dropped_total`).
    pub fn record_counters(&self) -> RecordCounters {
        self.records.clone()
    }

    /// Reports `guests` in `/status` from now on.
    pub fn watch_guests(&self, guests: &Arc<dyn StatusSource>) {
        *self.guests_now.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(guests));
    }

    fn guest_statuses(&self) -> Vec<status::GuestStatus> {
        let source = self
            .guests_now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        source.map_or_else(Vec::new, |source| source.guest_statuses())
    }

    /// What `GET /status` answers.
    pub fn status_report(&self) -> status::StatusReport {
        status::StatusReport {
            agent: status::AgentStatus {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: rfc3339(self.started_at),
                uptime_seconds: SystemTime::now()
                    .duration_since(self.started_at)
                    .map_or(0, |d| d.as_secs()),
            },
            guests: self.guest_statuses(),
        }
    }

    /// Shows the figures of `tables` (`spoa_ip_table_*`) from now on.
    pub fn watch_ip_tables(&self, tables: IpTables) {
        *self.ip_tables.lock().unwrap_or_else(|p| p.into_inner()) = Some(tables);
    }

    /// Shows how `plane`'s threads share the connections from now on.
    pub fn watch_data_plane(&self, plane: DataPlane) {
        *self.data_plane.lock().unwrap_or_else(|p| p.into_inner()) = Some(plane);
    }

    /// Shows `store`'s figures (`spoa_kv_*`) from now on.
    pub fn watch_kv(&self, store: KvStore) {
        *self.kv_store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    /// Adds what one batch of NOTIFY frames did. Connections count locally
    /// and publish once per batch: at a million messages per second, several
    /// atomic increments per message on counters shared by every worker cost
    /// more than the counting itself (the cache lines bounce between cores).
    pub fn record_notify_batch(&self, tally: &NotifyTally) {
        if tally.notifies == 0 {
            return;
        }
        self.frames_received[FrameType::Notify.index()].inc_by(tally.notifies);
        self.frames_sent[FrameType::Ack.index()].inc_by(tally.notifies);
        self.messages.inc_by(tally.messages);
        self.actions.inc_by(tally.actions);
        if tally.ack_overflows > 0 {
            self.ack_overflows.inc_by(tally.ack_overflows);
        }
    }

    /// A reload of the `--config` file: `ok`, `unchanged` or `failed`.
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The series of the guest called `name`, resolved once, with a
    /// `failures_total` series for each of `failure_kinds` (the labels of the
    /// executor's failure kinds, indexed as `record_batch` counts them).
    pub fn guest(&self, name: &str, failure_kinds: &[&'static str]) -> GuestMetrics {
        GuestMetrics::new(&self.guests, name, failure_kinds)
    }

    pub fn connection_refused(&self, reason: RefusalReason) {
        self.connections_refused[reason as usize].inc();
    }

    pub fn frame_received(&self, frame_type: FrameType) {
        self.frames_received[frame_type.index()].inc();
    }

    pub fn frames_sent(&self, frame_type: FrameType, count: u64) {
        self.frames_sent[frame_type.index()].inc_by(count);
    }

    pub fn disconnect_sent(&self, status: Status) {
        match self.disconnect_handles.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.disconnects
                    .get_or_create(&StatusLabels {
                        status: status.code(),
                    })
                    .inc();
            }
        }
        self.frames_sent(FrameType::AgentDisconnect, 1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(store) = &*self.kv_store.lock().unwrap_or_else(|p| p.into_inner()) {
            self.kv.update(&store.stats());
        }
        if let Some(tables) = &*self.ip_tables.lock().unwrap_or_else(|p| p.into_inner()) {
            self.tables.update(tables);
        }
        if let Some(plane) = &*self.data_plane.lock().unwrap_or_else(|p| p.into_inner()) {
            for (worker, connections) in plane.connections_per_worker().into_iter().enumerate() {
                self.worker_connections
                    .get_or_create(&WorkerLabels {
                        worker: worker.to_string(),
                    })
                    .set(connections as i64);
            }
            raise_to(&self.connections_moved, plane.connections_moved());
        }
        // A quarantine ends on the clock, not at the next message: a guest
        // that gets none would stay at 1 until one came.
        for guest in self.guest_statuses() {
            self.guests
                .quarantined
                .get_or_create(&GuestLabels { guest: guest.name })
                .set(i64::from(guest.quarantined_until.is_some()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Per-batch counts of NOTIFY work, published by [`Metrics::record_notify_batch`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyTally {
    /// NOTIFY frames received, each answered by one ACK.
    pub notifies: u64,
    /// Messages in them, each one guest call.
    pub messages: u64,
    /// Actions sent in the ACKs.
    pub actions: u64,
    /// Messages whose actions did not fit in their ACK.
    pub ack_overflows: u64,
}

impl GuestFamilies {
    fn register(r: &mut Registrar) -> GuestFamilies {
        GuestFamilies {
            calls: r.series("guest_calls", "Calls of a guest's handle-message"),
            failures: r.series(
                "guest_failures",
                "Messages a guest did not answer, by guest and kind",
            ),
            call_seconds: r.with(
                "guest_call_seconds",
                "Duration of handle-message calls (one call in 16 is timed)",
                Family::new_with_constructor(call_seconds_histogram),
            ),
            reloads: r.series(
                "module_reloads",
                "Module reload attempts, by guest and result",
            ),
            reload_failures: r.series(
                "module_reload_failures",
                "Rejected module loads and reloads, by guest and the step that refused them",
            ),
            module_info: r.series(
                "module_info",
                "The module serving each guest (value 1), labelled with its path and hash",
            ),
            quarantines: r.series(
                "guest_quarantines",
                "Times a guest was quarantined after too many failures",
            ),
            quarantined: r.series("guest_quarantined", "1 while a guest is quarantined"),
            rollbacks: r.series(
                "guest_rollbacks",
                "New module versions rolled back to the last good one",
            ),
            shadow: r.series(
                "shadow",
                "Messages copied to a guest's shadow version, by result: same or differ (its answer and the served one), failed, dropped (its queue was full)",
            ),
            canaries: r.series(
                "canaries",
                "Canary versions by outcome: started, promoted (fault rate no worse than the stable version's), rolled_back",
            ),
            canary_serving: r.series(
                "canary_serving",
                "1 while a canary version serves a share of the guest's messages",
            ),
            counters: r.series(
                "guest_counter",
                "Counters a guest increments (spoa:agent/metrics), by guest and the name the operator allowed",
            ),
            module_labels: Default::default(),
            histories: Default::default(),
        }
    }
}

/// A guest's shadow counters (`spoa_shadow_total{guest,result}`).
#[derive(Clone, Default)]
pub struct ShadowCounters {
    pub same: Counter,
    pub differ: Counter,
    pub failed: Counter,
    pub dropped: Counter,
}

/// One guest's series, each resolved to its atomic handle.
#[derive(Clone)]
pub struct GuestMetrics {
    families: GuestFamilies,
    name: String,
    calls: Counter,
    failures: Vec<Counter>,
    pub call_seconds: Histogram,
    reloads_ok: Counter,
    reloads_unchanged: Counter,
    reloads_failed: Counter,
    reloads_skipped: Counter,
    reload_failure_causes: [Counter; LoadFailureCause::ALL.len()],
    quarantines: Counter,
    quarantined: Gauge<i64, AtomicI64Compat>,
    rollbacks: Counter,
    failure_kinds: Vec<&'static str>,
    history: Arc<Mutex<GuestHistory>>,
}

impl GuestMetrics {
    /// Where this guest's own counters are kept
    /// (`spoa_guest_counter_total{guest,name}`).
    pub fn counters(&self) -> crate::sandbox::CounterSource {
        let (family, guest) = (self.families.counters.clone(), self.name.clone());
        Arc::new(move |name: &str| {
            family
                .get_or_create(&GuestCounterLabels {
                    guest: guest.clone(),
                    name: name.to_owned(),
                })
                .clone()
        })
    }

    fn canary_outcome(&self, result: &'static str) {
        self.families
            .canaries
            .get_or_create(&GuestResultLabels {
                guest: self.name.clone(),
                result,
            })
            .inc();
    }

    fn canary_gauge(&self, serving: bool) {
        let labels = GuestLabels {
            guest: self.name.clone(),
        };
        self.families
            .canary_serving
            .get_or_create(&labels)
            .set(i64::from(serving));
    }

    pub fn canary_started(&self) {
        for result in ["promoted", "rolled_back"] {
            let _ = self.families.canaries.get_or_create(&GuestResultLabels {
                guest: self.name.clone(),
                result,
            });
        }
        self.canary_outcome("started");
        self.canary_gauge(true);
    }

    pub fn canary_ended(&self, promoted: bool) {
        self.canary_outcome(if promoted { "promoted" } else { "rolled_back" });
        self.canary_gauge(false);
    }

    /// This guest's shadow counters, created at 0.
    pub fn shadow(&self) -> ShadowCounters {
        let result = |result| {
            self.families
                .shadow
                .get_or_create(&GuestResultLabels {
                    guest: self.name.clone(),
                    result,
                })
                .clone()
        };
        ShadowCounters {
            same: result("same"),
            differ: result("differ"),
            failed: result("failed"),
            dropped: result("dropped"),
        }
    }

    fn new(families: &GuestFamilies, name: &str, failure_kinds: &[&'static str]) -> GuestMetrics {
        let guest = || GuestLabels {
            guest: name.to_owned(),
        };
        let result = |result| {
            families
                .reloads
                .get_or_create(&GuestResultLabels {
                    guest: name.to_owned(),
                    result,
                })
                .clone()
        };
        GuestMetrics {
            families: families.clone(),
            name: name.to_owned(),
            calls: families.calls.get_or_create(&guest()).clone(),
            failures: failure_kinds
                .iter()
                .map(|&kind| {
                    families
                        .failures
                        .get_or_create(&GuestKindLabels {
                            guest: name.to_owned(),
                            kind,
                        })
                        .clone()
                })
                .collect(),
            call_seconds: families.call_seconds.get_or_create(&guest()).clone(),
            reloads_ok: result("ok"),
            reloads_unchanged: result("unchanged"),
            reloads_failed: result("failed"),
            reloads_skipped: result("rejected_before"),
            reload_failure_causes: LoadFailureCause::ALL.map(|cause| {
                families
                    .reload_failures
                    .get_or_create(&GuestCauseLabels {
                        guest: name.to_owned(),
                        cause: cause.name(),
                    })
                    .clone()
            }),
            quarantines: families.quarantines.get_or_create(&guest()).clone(),
            quarantined: families.quarantined.get_or_create(&guest()).clone(),
            rollbacks: families.rollbacks.get_or_create(&guest()).clone(),
            failure_kinds: failure_kinds.to_vec(),
            history: families
                .histories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.to_owned())
                .or_default()
                .clone(),
        }
    }

    /// Unanswered messages so far, by failure kind.
    pub fn failure_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.failure_kinds
            .iter()
            .zip(&self.failures)
            .map(|(&kind, counter)| (kind, counter.get()))
    }

    /// The guest's last reload and rollback.
    pub fn history(&self) -> GuestHistory {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn edit_history(&self, edit: impl FnOnce(&mut GuestHistory)) {
        edit(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A reload starts, because of `trigger`; its result is recorded by the
    /// call that counts it.
    pub fn reload_started(&self, trigger: &'static str) {
        self.edit_history(|history| history.reload_trigger = Some(trigger));
    }

    fn reload_ended(&self, result: &str, cause: Option<&str>) {
        self.edit_history(|history| {
            history.last_reload = Some(ReloadRecord {
                at: rfc3339(SystemTime::now()),
                result: result.to_owned(),
                cause: cause.map(str::to_owned),
                trigger: history.reload_trigger.take().map(str::to_owned),
            });
        });
    }

    /// Adds one batch's calls and failures (by the index of their kind in
    /// the `failure_kinds` the series were made with).
    pub fn record_batch(&self, calls: u64, failures: &[u64]) {
        if calls > 0 {
            self.calls.inc_by(calls);
        }
        for (counter, &count) in self.failures.iter().zip(failures) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
    }

    /// Calls of this guest so far.
    pub fn calls_total(&self) -> u64 {
        self.calls.get()
    }

    /// Makes `identity` the module `module_info` reports for this guest;
    /// counts a successful reload unless it is the first load.
    pub fn module_serving(&self, identity: &ModuleIdentity, is_reload: bool) {
        if is_reload {
            self.reloads_ok.inc();
            self.reload_ended("ok", None);
            self.edit_history(|history| history.rolled_back = None);
        }
        let labels = ModuleLabels {
            guest: self.name.clone(),
            path: identity.path.display().to_string(),
            sha256: identity.sha256.clone(),
        };
        let mut current = self
            .families
            .module_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = current.insert(self.name.clone(), labels.clone()) {
            self.families.module_info.remove(&previous);
        }
        self.families.module_info.get_or_create(&labels).set(1);
    }

    /// The guest is gone (removed from the configuration).
    pub fn retire(&self) {
        let mut current = self
            .families
            .module_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = current.remove(&self.name) {
            self.families.module_info.remove(&previous);
        }
        self.families
            .histories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
        self.quarantined.set(0);
    }

    /// A configuration reload restarted this guest (its table changed): a
    /// reload that succeeded, after which no rollback stands.
    pub fn restarted(&self, trigger: &'static str) {
        self.reload_started(trigger);
        self.reload_ended("ok", None);
        self.edit_history(|history| history.rolled_back = None);
    }

    /// A reload found the module, configuration and data unchanged.
    pub fn reload_unchanged(&self) {
        self.reloads_unchanged.inc();
        self.reload_ended("unchanged", None);
    }

    /// A reload found the version that was rolled back, unchanged.
    pub fn reload_skipped_rejected(&self) {
        self.reloads_skipped.inc();
        self.reload_ended("rejected_before", None);
    }

    pub fn reload_failed(&self, cause: LoadFailureCause) {
        self.reloads_failed.inc();
        self.reload_failure_causes[cause.index()].inc();
        self.reload_ended("failed", Some(cause.name()));
    }

    pub fn quarantine_started(&self) {
        self.quarantines.inc();
        self.quarantined.set(1);
    }

    pub fn quarantine_ended(&self) {
        self.quarantined.set(0);
    }

    /// `rejected` failed its probation; `restored` serves again.
    pub fn rolled_back(&self, rejected: &ModuleIdentity, restored: &ModuleIdentity) {
        self.rollbacks.inc();
        self.module_serving(restored, false);
        self.edit_history(|history| {
            history.rolled_back = Some(RollbackRecord {
                from: ModuleRef::of(rejected),
                to: ModuleRef::of(restored),
                at: rfc3339(SystemTime::now()),
            });
        });
    }
}
