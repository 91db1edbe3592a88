//! Where guest calls run: the data plane, a runtime apart from the control
//! plane that accepts connections, answers HELLOs and health checks, serves
//! `/metrics` and handles signals.
//!
//! An established connection lives on the data plane and calls the guest
//! right there, once per message of a read burst, holding a permit (at most
//! `max_concurrent_calls` batches are in calls at once; the rest wait in
//! line). A call that runs long yields its thread at every epoch tick (1 ms),
//! so the other connections on that thread keep flowing, and it is cut at
//! its deadline. See `docs/design/guest-executor.md` for the measurements
//! behind this choice (a hand-off to separate guest threads per batch cost
//! more than half the throughput).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Semaphore;

use crate::agent::{BatchFuture, BatchOutcome, FailureKind, Handler, HandlerFailure};
use crate::metrics::Metrics;
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

/// Starts the data plane. Drop it outside any runtime.
pub fn start_data_plane(threads: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("spoa-data")
        .enable_all()
        .build()
        .context("starting the data plane")
}

/// Runs guest calls for the agent; implements the agent's [`Handler`].
pub struct GuestExecutor {
    runtime: Handle,
    active: ArcSwap<LoadedModule>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl GuestExecutor {
    pub fn new(
        runtime: Handle,
        module: Arc<LoadedModule>,
        max_concurrent_calls: u32,
        metrics: Arc<Metrics>,
    ) -> GuestExecutor {
        GuestExecutor {
            runtime,
            active: ArcSwap::new(module),
            permits: Arc::new(Semaphore::new(max_concurrent_calls.max(1) as usize)),
            metrics,
        }
    }

    /// The module serving now.
    pub fn active(&self) -> Arc<LoadedModule> {
        self.active.load_full()
    }

    /// Makes `module` serve the next batches; batches already running finish
    /// on the module they started with.
    pub fn replace(&self, module: Arc<LoadedModule>) {
        self.active.store(module);
    }

    /// Starts a task on the data plane.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(work)
    }

    /// Runs `work` on the data plane (loads and their smoke calls run guest
    /// code too, and must not run on the control plane).
    pub async fn run<F>(&self, work: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .spawn(work)
            .await
            .context("guest runtime task failed")
    }
}

impl Handler for GuestExecutor {
    fn handle_batch<'a>(&'a self, messages: &'a [spop::Message]) -> BatchFuture<'a> {
        let module = self.active.load_full();
        let label = module.label().clone();
        let count = messages.len();
        Box::pin(async move {
            // The semaphore is never closed; a failed acquire cannot happen.
            let _permit = self.permits.acquire().await.ok();
            let metrics = &self.metrics;
            let mut outcomes = Vec::with_capacity(count);
            let mut lease = module.lease();
            for message in messages {
                let started = should_time_this_call().then(Instant::now);
                let result = lease.call(message).await;
                if let Some(started) = started {
                    metrics
                        .guest_call_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                outcomes.push(result.map_err(handler_failure));
            }
            BatchOutcome {
                handler: label,
                outcomes,
            }
        })
    }
}

fn handler_failure(failure: GuestFailure) -> HandlerFailure {
    HandlerFailure {
        kind: failure_kind(&failure),
        reason: failure.to_string(),
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
        GuestFailure::Instantiate(_) => FailureKind::Instantiate,
    }
}
