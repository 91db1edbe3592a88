//! Prometheus metrics. Every series the hot path touches is resolved to a
//! plain atomic handle once, at start-up, so counting costs one atomic add.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::agent::FailureKind;
use crate::sandbox::{LoadFailureCause, ModuleIdentity};
use crate::spop::{FrameType, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    path: String,
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    pub connections_current: Gauge,
    pub connections_total: Counter,
    pub connections_refused: Counter,
    frames_received: [Counter; 6],
    frames_sent: [Counter; 6],
    pub messages: Counter,
    pub actions: Counter,
    disconnects: Family<StatusLabels, Counter>,
    disconnect_handles: Vec<(Status, Counter)>,
    pub guest_calls: Counter,
    guest_failures: [Counter; FailureKind::ALL.len()],
    pub guest_call_seconds: Histogram,
    reloads_ok: Counter,
    reloads_unchanged: Counter,
    reloads_failed: Counter,
    reload_failure_causes: [Counter; LoadFailureCause::ALL.len()],
    module_info: Family<ModuleLabels, Gauge<i64, AtomicI64Compat>>,
}

type AtomicI64Compat = std::sync::atomic::AtomicI64;

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spoa");
        let connections_current = Gauge::default();
        registry.register(
            "connections_current",
            "Connections currently open",
            connections_current.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "connections",
            "Connections accepted",
            connections_total.clone(),
        );
        let connections_refused = Counter::<u64, AtomicU64>::default();
        registry.register(
            "connections_refused",
            "Connections refused because --max-connections was reached",
            connections_refused.clone(),
        );

        let received = Family::<FrameLabels, Counter>::default();
        registry.register(
            "frames_received",
            "Frames received, by type",
            received.clone(),
        );
        let sent = Family::<FrameLabels, Counter>::default();
        registry.register("frames_sent", "Frames sent, by type", sent.clone());
        let handles = |family: &Family<FrameLabels, Counter>| {
            FrameType::ALL.map(|t| {
                family
                    .get_or_create(&FrameLabels { r#type: t.name() })
                    .clone()
            })
        };

        let messages = Counter::default();
        registry.register("messages", "SPOE messages received", messages.clone());
        let actions = Counter::default();
        registry.register("actions", "Actions sent in ACKs", actions.clone());

        let disconnects = Family::<StatusLabels, Counter>::default();
        registry.register(
            "disconnects",
            "AGENT-DISCONNECT frames sent, by status code",
            disconnects.clone(),
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

        let guest_calls = Counter::default();
        registry.register(
            "guest_calls",
            "Calls of the guest's handle-message",
            guest_calls.clone(),
        );
        let failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "guest_failures",
            "Messages answered without actions because the guest failed, by kind",
            failures.clone(),
        );
        let guest_failures = FailureKind::ALL.map(|kind| {
            failures
                .get_or_create(&KindLabels { kind: kind.name() })
                .clone()
        });
        let guest_call_seconds = Histogram::new([
            1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 1e-2, 5e-2,
        ]);
        registry.register(
            "guest_call_seconds",
            "Duration of handle-message calls (one call in 16 is timed)",
            guest_call_seconds.clone(),
        );

        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "module_reloads",
            "Module reload attempts, by result",
            reloads.clone(),
        );
        let reloads_ok = reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .clone();
        let reloads_unchanged = reloads
            .get_or_create(&ResultLabels {
                result: "unchanged",
            })
            .clone();
        let reloads_failed = reloads
            .get_or_create(&ResultLabels { result: "failed" })
            .clone();
        let causes = Family::<CauseLabels, Counter>::default();
        registry.register(
            "module_reload_failures",
            "Rejected module loads and reloads, by the step that refused them",
            causes.clone(),
        );
        let reload_failure_causes = LoadFailureCause::ALL.map(|cause| {
            causes
                .get_or_create(&CauseLabels {
                    cause: cause.name(),
                })
                .clone()
        });
        let module_info = Family::<ModuleLabels, Gauge<i64, AtomicI64Compat>>::default();
        registry.register(
            "module_info",
            "The active handler module (value 1), labelled with its path and hash",
            module_info.clone(),
        );

        Metrics {
            registry,
            connections_current,
            connections_total,
            connections_refused,
            frames_received: handles(&received),
            frames_sent: handles(&sent),
            messages,
            actions,
            disconnects,
            disconnect_handles,
            guest_calls,
            guest_failures,
            guest_call_seconds,
            reloads_ok,
            reloads_unchanged,
            reloads_failed,
            reload_failure_causes,
            module_info,
        }
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
        self.guest_calls.inc_by(tally.messages);
        self.actions.inc_by(tally.actions);
        for (counter, &count) in self.guest_failures.iter().zip(&tally.failures) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
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

    /// Records a successful load and makes `identity` the one `module_info`
    /// reports.
    pub fn module_loaded(&self, identity: &ModuleIdentity, is_reload: bool) {
        if is_reload {
            self.reloads_ok.inc();
        }
        self.module_info.clear();
        self.module_info
            .get_or_create(&ModuleLabels {
                path: identity.path.display().to_string(),
                sha256: identity.sha256.clone(),
            })
            .set(1);
    }

    /// A reload found the module, configuration and data unchanged.
    pub fn reload_unchanged(&self) {
        self.reloads_unchanged.inc();
    }

    pub fn reload_failed(&self, cause: LoadFailureCause) {
        self.reloads_failed.inc();
        self.reload_failure_causes[cause.index()].inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
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
    /// Messages answered without their actions, by [`FailureKind::index`].
    pub failures: [u64; FailureKind::ALL.len()],
}
