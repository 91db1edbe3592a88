//! One guest's executor: where its calls run (the data plane, apart from the
//! control plane that accepts connections, runs TLS handshakes, answers
//! HELLOs and health checks, serves `/metrics` and handles signals), the
//! version serving it and the swap to the next one, and its failure policy
//! (quarantine, probation, rollback). Must not know files, sockets or SPOP
//! framing: it takes modules and batches of messages.
//!
//! An established connection lives on the data plane and calls the guest
//! right there, holding a permit (at most `max_concurrent_calls` batches are
//! in calls at once; the rest wait in line): once per message, or, when the
//! guest exports `handle-messages`, once per slice of the read burst. Each
//! answer goes to the connection as soon as it is given, so a NOTIFY's ACK
//! does not wait for the rest of its burst. Guest code gives up its thread
//! at every epoch tick (500 µs): a long call at its ticks, a run of short
//! calls or batches between two of them, so the other connections on that
//! thread keep flowing; a call is cut at its deadline. See `docs/design/guest-executor.md` for the measurements
//! behind this choice (a hand-off to separate guest threads per batch cost
//! more than half the throughput).

mod canary;
mod policy;
pub mod shadow;
mod status;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use tokio::sync::Semaphore;

pub use policy::{FailurePolicy, QuarantinePolicy, RollbackPolicy};
use policy::{Probation, Quarantine, QuarantineChange, Verdict};

use crate::agent::{AnswerSink, Answers, Batch, BatchFuture, FailureKind, Handler, HandlerFailure};
use crate::metrics::GuestMetrics;
use crate::record::Recorder;
use crate::sandbox::{GuestFailure, LoadedModule};
use crate::spop;

/// One guest call in this many is timed for `spoa_guest_call_seconds`:
/// prometheus-client's histogram takes a lock per observation, and two clock
/// reads per message are measurable at a million messages per second.
const TIME_ONE_CALL_IN: u32 = 16;

thread_local! {
    static CALLS_UNTIL_TIMED: Cell<u32> = const { Cell::new(0) };
}

fn should_time_this_call() -> bool {
    CALLS_UNTIL_TIMED.with(|left| match left.get() {
        0 => {
            left.set(TIME_ONE_CALL_IN - 1);
            true
        }
        n => {
            left.set(n - 1);
            false
        }
    })
}

/// What identifies a version for reloads: the module's hash and the
/// fingerprint of its grants (configuration, data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleVersion {
    pub module_sha256: String,
    pub grants: String,
}

/// A module version known to serve well.
#[derive(Clone)]
struct Proven {
    module: Arc<LoadedModule>,
    version: ModuleVersion,
}

/// The version serving a guest now.
struct Serving {
    module: Arc<LoadedModule>,
    version: ModuleVersion,
    /// `guest/file@hash`, for logs.
    label: Arc<str>,
    /// Set while a new version is on probation.
    probation: Option<Probation>,
    /// What a failed probation rolls back to.
    last_good: Option<Proven>,
}

impl Serving {
    fn new(
        guest: &str,
        proven: Proven,
        probation: Option<Probation>,
        last_good: Option<Proven>,
    ) -> Serving {
        Serving {
            label: format!("{guest}/{}", proven.module.label()).into(),
            module: proven.module,
            version: proven.version,
            probation,
            last_good,
        }
    }

    fn proven(&self) -> Proven {
        Proven {
            module: self.module.clone(),
            version: self.version.clone(),
        }
    }
}

/// Bounds of one guest's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorLimits {
    /// Most batches in calls at once.
    pub concurrency: u32,
    /// Most batches waiting for a permit; more are answered at once as
    /// `overloaded`.
    pub queue: u32,
}

/// Runs one guest's calls; implements the agent's [`Handler`].
pub struct GuestExecutor {
    name: Arc<str>,
    serving: ArcSwap<Serving>,
    permits: Arc<Semaphore>,
    queue_limit: usize,
    waiting: AtomicUsize,
    policy: FailurePolicy,
    quarantine: Option<Quarantine>,
    /// The version rolled back last: not loaded again until the files differ.
    rejected: Mutex<Option<ModuleVersion>>,
    metrics: GuestMetrics,
    /// Offered every answer (`--record`).
    recorder: Option<Arc<Recorder>>,
    /// Copied a share of the answers (`[guest.shadow]`).
    shadow: Option<Arc<shadow::Shadow>>,
    /// Serves a share of the batches until promoted or dropped
    /// (`[guest.canary]`).
    canary: ArcSwapOption<canary::Canary>,
}

impl GuestExecutor {
    pub fn new(
        name: &str,
        module: Arc<LoadedModule>,
        version: ModuleVersion,
        limits: ExecutorLimits,
        policy: FailurePolicy,
        metrics: GuestMetrics,
    ) -> GuestExecutor {
        GuestExecutor {
            serving: ArcSwap::from_pointee(Serving::new(
                name,
                Proven { module, version },
                None,
                None,
            )),
            name: name.into(),
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1) as usize)),
            queue_limit: limits.queue as usize,
            waiting: AtomicUsize::new(0),
            quarantine: policy.quarantine.clone().map(Quarantine::new),
            policy,
            rejected: Mutex::new(None),
            metrics,
            recorder: None,
            shadow: None,
            canary: ArcSwapOption::empty(),
        }
    }

    /// Serves `share` of the batches with `module` until it has served
    /// `promote_after` messages, then promotes or drops it.
    pub fn with_canary(
        self,
        module: Arc<LoadedModule>,
        version: ModuleVersion,
        share: f64,
        promote_after: u64,
    ) -> GuestExecutor {
        let serving = Serving::new(&self.name, Proven { module, version }, None, None);
        tracing::info!(
            guest = &*self.name,
            canary = %serving.label,
            share,
            promote_after,
            "canary serving a share of the messages"
        );
        self.metrics.canary_started();
        self.canary.store(Some(Arc::new(canary::Canary::new(
            serving,
            share,
            promote_after,
        ))));
        self
    }

    /// Counts a batch, and carries out the canary's verdict once it has one.
    fn judge_canary(&self, canary: &canary::Canary, calls: u64, faults: u64) {
        let (promote, record) = match canary.tally.answered(calls, faults) {
            canary::CanaryVerdict::Undecided => return,
            canary::CanaryVerdict::Promote(record) => (true, record),
            canary::CanaryVerdict::RollBack(record) => (false, record),
        };
        self.canary.store(None);
        let (guest, label) = (&*self.name, &canary.serving.label);
        if promote {
            tracing::info!(guest, canary = %label, ?record, "canary promoted: its fault rate is no worse than the stable version's");
            let serving = &canary.serving;
            self.replace(serving.module.clone(), serving.version.clone());
        } else {
            tracing::warn!(guest, canary = %label, ?record, "canary rolled back: its fault rate is worse than the stable version's");
        }
        self.metrics.canary_ended(promote);
    }

    /// Copies a share of the answers to `shadow` from now on.
    pub fn shadowed_by(mut self, shadow: Option<Arc<shadow::Shadow>>) -> GuestExecutor {
        self.shadow = shadow;
        self
    }

    /// Offers every answer to `recorder` from now on.
    pub fn recording_to(mut self, recorder: Option<Arc<Recorder>>) -> GuestExecutor {
        self.recorder = recorder;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metrics(&self) -> &GuestMetrics {
        &self.metrics
    }

    /// The module serving now.
    pub fn active(&self) -> Arc<LoadedModule> {
        self.serving.load().module.clone()
    }

    /// The version serving now.
    pub fn active_version(&self) -> ModuleVersion {
        self.serving.load().version.clone()
    }

    /// The version rolled back last, if any.
    pub fn rejected(&self) -> Option<ModuleVersion> {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `module` serve the next batches; batches already running finish
    /// on the module they started with. With a rollback policy, the new
    /// version is on probation and the current one (or the last good one, if
    /// the current is itself on probation) is kept to roll back to.
    pub fn replace(&self, module: Arc<LoadedModule>, version: ModuleVersion) {
        let current = self.serving.load_full();
        let (probation, last_good) = match &self.policy.rollback {
            Some(policy) => (
                Some(Probation::new(policy.clone())),
                Some(match (&current.probation, &current.last_good) {
                    (Some(_), Some(last_good)) => last_good.clone(),
                    _ => current.proven(),
                }),
            ),
            None => (None, None),
        };
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let identity = module.identity.clone();
        self.serving.store(Arc::new(Serving::new(
            &self.name,
            Proven { module, version },
            probation,
            last_good,
        )));
        // After the swap: `/status` never shows the new reload beside the
        // old module.
        self.metrics.module_serving(&identity, true);
    }

    /// Takes over from `previous`, the executor this one replaces (a changed
    /// guest table): the version `previous` rolled back stays refused, and
    /// with a rollback policy this executor's first version is on probation
    /// with `previous`'s as the last good one.
    pub fn take_over_from(&self, previous: &GuestExecutor) {
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = previous.rejected();
        let Some(policy) = &self.policy.rollback else {
            return;
        };
        let current = self.serving.load_full();
        let old = previous.serving.load_full();
        let last_good = match (&old.probation, &old.last_good) {
            (Some(_), Some(last_good)) => last_good.clone(),
            _ => old.proven(),
        };
        self.serving.store(Arc::new(Serving::new(
            &self.name,
            current.proven(),
            Some(Probation::new(policy.clone())),
            Some(last_good),
        )));
    }

    /// Publishes the serving module in `module_info` (once the executor
    /// serves: a configuration reload that fails publishes nothing).
    pub fn announce_serving(&self) {
        self.metrics.module_serving(&self.active().identity, false);
        self.metrics.quarantine_ended();
    }

    /// Answers every message of a batch the guest is not called for.
    fn refuse(
        &self,
        label: &str,
        count: usize,
        kind: FailureKind,
        reason: &str,
        answers: &mut dyn Answers,
    ) {
        let mut failures = [0; FailureKind::ALL.len()];
        failures[kind.index()] = count as u64;
        self.metrics.record_batch(0, &failures);
        for _ in 0..count {
            answers.answered(label, Err(self.failure(kind, reason.to_owned())));
        }
    }

    fn failure(&self, kind: FailureKind, reason: String) -> HandlerFailure {
        HandlerFailure {
            kind,
            reason,
            fallback: self.fallback(kind),
        }
    }

    /// What the failure policy answers a failed message with.
    fn fallback(&self, kind: FailureKind) -> Vec<spop::Action> {
        match &self.policy.error_var {
            Some(name) => vec![spop::Action::SetVar {
                scope: spop::VarScope::Txn,
                name: name.clone(),
                value: spop::TypedData::String(Bytes::from_static(kind.name().as_bytes())),
            }],
            None => Vec::new(),
        }
    }

    /// Whether the guest is quarantined now (logging the end of one).
    fn quarantined(&self) -> bool {
        let Some(quarantine) = &self.quarantine else {
            return false;
        };
        match quarantine.check() {
            Ok(quarantined) => quarantined,
            Err(()) => {
                tracing::info!(
                    guest = &*self.name,
                    "quarantine over; calling the guest again"
                );
                self.metrics.quarantine_ended();
                false
            }
        }
    }

    /// Counts a batch's faults against the probation of the version that
    /// answered it or, once no probation is under way, the quarantine: a new
    /// version that fails is rolled back, not quarantined.
    fn judge(&self, serving: &Arc<Serving>, calls: u64, faults: u64) {
        let now = Instant::now();
        if let Some(probation) = &serving.probation {
            match probation.record(calls, faults, now) {
                Verdict::Undecided => return,
                Verdict::Passed => {
                    // Keep the version, drop the one kept for a rollback.
                    let proven = Serving::new(&self.name, serving.proven(), None, None);
                    self.serving.compare_and_swap(serving, Arc::new(proven));
                    tracing::info!(guest = &*self.name, module = %serving.module.label(), "new version passed probation");
                }
                Verdict::Failed {
                    calls,
                    faults,
                    since,
                } => {
                    self.roll_back(serving, calls, faults, since);
                    return;
                }
            }
        }
        if faults > 0
            && let Some(quarantine) = &self.quarantine
            && let Some(QuarantineChange::Started {
                backoff,
                faults,
                calls,
            }) = quarantine.record(calls, faults, self.metrics.calls_total(), now)
        {
            tracing::warn!(
                guest = &*self.name,
                faults,
                calls,
                backoff_ms = backoff.as_millis() as u64,
                "guest quarantined: its messages are answered by its failure policy until the back-off ends"
            );
            self.metrics.quarantine_started();
        }
    }

    fn roll_back(&self, failed: &Arc<Serving>, calls: u64, faults: u64, since: Duration) {
        let Some(last_good) = failed.last_good.clone() else {
            return;
        };
        let restored = Arc::new(Serving::new(&self.name, last_good.clone(), None, None));
        let previous = self.serving.compare_and_swap(failed, restored);
        if !Arc::ptr_eq(&previous, failed) {
            return; // another version was swapped in meanwhile
        }
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = Some(failed.version.clone());
        tracing::error!(
            guest = &*self.name,
            rejected = %failed.module.label(),
            restored = %last_good.module.label(),
            faults,
            calls,
            since_first_call_ms = since.as_secs_f64() * 1e3,
            "new version rolled back to the last good one; it is not loaded again until its files change"
        );
        self.metrics
            .rolled_back(&failed.module.identity, &last_good.module.identity);
    }
}

impl Handler for GuestExecutor {
    fn handle_batch<'a>(&'a self, messages: Batch<'a>, answers: AnswerSink<'a>) -> BatchFuture<'a> {
        let canary = self
            .canary
            .load_full()
            .filter(|canary| canary.tally.takes_a_batch());
        let serving = match &canary {
            Some(canary) => canary.serving.clone(),
            None => self.serving.load_full(),
        };
        let count = messages.len();
        Box::pin(async move {
            let label = serving.label.clone();
            let mut recording;
            let answers: &mut dyn Answers = match &self.recorder {
                Some(recorder) => {
                    let sha256 = serving.module.identity.sha256.as_str();
                    recording = recorder.answers(answers, messages, &self.name, sha256);
                    &mut recording
                }
                None => answers,
            };
            let mut shadowed;
            let answers: &mut dyn Answers = match &self.shadow {
                Some(shadow) => {
                    shadowed = shadow.answers(answers, messages);
                    &mut shadowed
                }
                None => answers,
            };
            if self.quarantined() {
                let reason = "guest quarantined";
                return self.refuse(&label, count, FailureKind::Quarantined, reason, answers);
            }
            let _permit = match self.permits.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    let waiting = WaitingGuard::enter(&self.waiting);
                    if waiting.before >= self.queue_limit {
                        let reason = "guest queue full";
                        return self.refuse(
                            &label,
                            count,
                            FailureKind::Overloaded,
                            reason,
                            answers,
                        );
                    }
                    let permit = self.permits.acquire().await;
                    drop(waiting);
                    // The semaphore is never closed.
                    match permit {
                        Ok(permit) => permit,
                        Err(_) => {
                            return self.refuse(
                                &label,
                                count,
                                FailureKind::Overloaded,
                                "closed",
                                answers,
                            );
                        }
                    }
                }
            };
            let mut tally = CallTally::default();
            let module = &serving.module;
            let mut lease = module.lease();
            let mut turn = Turn::start(module.tick());
            let mut next = 0;
            // Messages a failed batch left, to run one by one.
            let mut one_by_one = 0;
            while next < count {
                let size = if one_by_one > 0 {
                    one_by_one -= 1;
                    1
                } else {
                    module.batch_size(count - next)
                };
                let entry = &messages[next..next + size];
                let started = should_time_this_call().then(Instant::now);
                let answered = if size == 1 {
                    let result = lease.call(&entry[0]).await;
                    answers.answered(&label, tally.outcome(self, result));
                    1
                } else {
                    // Boxed: the batch call's state must not grow the future every
                    // batch is moved into (one call per message is the hot path).
                    let batch = Box::pin(lease.call_batch(entry)).await;
                    let answered = batch.outcomes.len();
                    debug_assert!(
                        answered > 0 || batch.then_one_by_one > 0,
                        "a batch call answers a message or leaves them to run one by one"
                    );
                    // Never stuck: a batch that answered nothing has its
                    // messages run one by one.
                    one_by_one = match (answered, batch.then_one_by_one) {
                        (0, 0) => size,
                        (_, left) => left,
                    };
                    for result in batch.outcomes {
                        answers.answered(&label, tally.outcome(self, result));
                    }
                    answered
                };
                next += answered;
                if let Some(started) = started {
                    let per_message = started.elapsed().as_secs_f64() / answered.max(1) as f64;
                    self.metrics.call_seconds.observe(per_message);
                }
                // Fair turns per tick of guest code, not per call: a run of
                // short calls yields as a long call does at its ticks.
                if next < count && turn.is_over() {
                    tokio::task::yield_now().await;
                    turn = Turn::start(module.tick());
                }
            }
            drop(lease);
            self.metrics.record_batch(count as u64, &tally.failures);
            if let Some(canary) = &canary {
                self.judge_canary(canary, count as u64, tally.faults);
                return;
            }
            if let Some(running) = &*self.canary.load() {
                running.tally.stable_answered(count as u64, tally.faults);
            }
            if tally.faults > 0 || serving.probation.is_some() {
                self.judge(&serving, count as u64, tally.faults);
            }
        })
    }
}

/// A batch's failures by kind, and how many say the guest is broken.
#[derive(Default)]
struct CallTally {
    failures: [u64; FailureKind::ALL.len()],
    faults: u64,
}

impl CallTally {
    fn outcome(
        &mut self,
        executor: &GuestExecutor,
        result: Result<Vec<spop::Action>, GuestFailure>,
    ) -> crate::agent::MessageOutcome {
        result.map_err(|failure| {
            let kind = failure_kind(&failure);
            self.failures[kind.index()] += 1;
            if kind.is_fault() {
                self.faults += 1;
            }
            executor.failure(kind, failure.to_string())
        })
    }
}

/// The time a batch has run guest code since it last gave up its thread.
struct Turn {
    started: Instant,
    slice: Duration,
}

impl Turn {
    fn start(slice: Duration) -> Turn {
        Turn {
            started: Instant::now(),
            slice,
        }
    }

    fn is_over(&self) -> bool {
        self.started.elapsed() >= self.slice
    }
}

/// Counts a batch waiting for a permit for as long as it lives, also when
/// the batch is dropped while it waits.
struct WaitingGuard<'a> {
    waiting: &'a AtomicUsize,
    before: usize,
}

impl<'a> WaitingGuard<'a> {
    fn enter(waiting: &'a AtomicUsize) -> WaitingGuard<'a> {
        WaitingGuard {
            before: waiting.fetch_add(1, Ordering::Relaxed),
            waiting,
        }
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The agent's failure kind (metrics, `--error-var`) of a guest failure.
pub fn failure_kind(failure: &GuestFailure) -> FailureKind {
    match failure {
        GuestFailure::Timeout => FailureKind::Timeout,
        GuestFailure::MemoryExceeded => FailureKind::Memory,
        GuestFailure::Trap(_) | GuestFailure::Exit(_) => FailureKind::Trap,
        GuestFailure::Returned(_) => FailureKind::Error,
        GuestFailure::InvalidOutput(_) => FailureKind::InvalidOutput,
        GuestFailure::Instantiate(_) | GuestFailure::Init(_) => FailureKind::Instantiate,
    }
}
