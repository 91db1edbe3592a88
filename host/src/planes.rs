//! The agent's two runtimes, as types: where a task runs shows in the
//! signature that starts it.
//!
//! - The **control plane** (one thread, real-time priority when granted)
//!   accepts connections, runs TLS handshakes, HELLOs and health checks,
//!   serves `/metrics` and `/status`, handles signals and watches files. It
//!   never runs guest code, so a guest can never delay it.
//! - The **data plane** (`--workers` threads) serves established
//!   connections and runs the guests' calls, loads and smoke calls. Each
//!   thread is a runtime of its own (a shard) with its own reactor: a
//!   connection, and the batches it spawns, stay on the thread it was given,
//!   so no message's wake-up crosses threads (a shared multi-threaded
//!   runtime spent more of its time in those wake-ups than in the guest, at
//!   4 connections of 16 messages in flight).
//!
//! Nothing here knows what runs on them; every layer may use this leaf.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// One of the two runtimes; `K` says which ([`Control`] or [`Data`]), so
/// a signature that takes a [`ControlPlane`] cannot be handed the other.
#[derive(Debug)]
pub struct Plane<K>(Arc<Shards>, PhantomData<K>);

/// The runtimes of a plane: one multi-threaded runtime (the control plane,
/// a test's), or one single-threaded runtime per data-plane thread.
#[derive(Debug)]
struct Shards {
    handles: Vec<Handle>,
    /// Where the next task from outside the plane goes (round robin).
    next: AtomicUsize,
}

thread_local! {
    /// The shard this thread runs, as (its plane's `Shards` address, its
    /// index), so work spawned from a shard stays on it.
    static CURRENT_SHARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

impl Shards {
    fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    fn pick(self: &Arc<Self>) -> &Handle {
        let (plane, index) = CURRENT_SHARD.get();
        if plane == self.id()
            && let Some(handle) = self.handles.get(index)
        {
            return handle;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }
}

/// Marks the runtime that must stay responsive.
#[derive(Debug)]
pub enum Control {}

/// Marks the runtime that runs guests.
#[derive(Debug)]
pub enum Data {}

pub type ControlPlane = Plane<Control>;
pub type DataPlane = Plane<Data>;

/// Both, as the serving command starts them.
#[derive(Clone, Debug)]
pub struct Planes {
    pub control: ControlPlane,
    pub data: DataPlane,
}

// Not derived: a derive would ask the marker `K` to be `Clone`.
impl<K> Clone for Plane<K> {
    fn clone(&self) -> Self {
        Plane(self.0.clone(), PhantomData)
    }
}

impl<K> Plane<K> {
    /// `handle` is this plane's runtime (the caller knows: it built it, or
    /// runs a test or a command where no guest runs).
    pub fn from_handle(handle: Handle) -> Plane<K> {
        Plane(
            Arc::new(Shards {
                handles: vec![handle],
                next: AtomicUsize::new(0),
            }),
            PhantomData,
        )
    }

    /// Runs `work` on the plane: on this thread's shard when called from
    /// one, else on the next shard in turn.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.pick().spawn(work)
    }

    fn handle(&self) -> &Handle {
        self.0.pick()
    }
}

impl ControlPlane {
    /// Makes the control plane the current runtime until the guard drops:
    /// what registers with a runtime's drivers (signals) registers there.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle().enter()
    }

    /// Runs blocking work (file reads, parsing) on the control plane's
    /// blocking threads.
    pub fn spawn_blocking<F, R>(&self, work: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.handle().spawn_blocking(work)
    }
}

impl DataPlane {
    /// Runs `work` there and waits for it (loads and their smoke calls run
    /// guest code, which never runs on the control plane).
    pub async fn run<F>(&self, work: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(work).await.context("data-plane task failed")
    }
}

/// The data plane's threads, each driving its shard until [`Self::stop`].
pub struct DataPlaneThreads {
    plane: DataPlane,
    stops: Vec<tokio::sync::oneshot::Sender<Duration>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DataPlaneThreads {
    pub fn plane(&self) -> DataPlane {
        self.plane.clone()
    }

    /// Stops every shard, giving its tasks still running up to `grace`.
    /// Call it outside any runtime.
    pub fn stop(self, grace: Duration) {
        for stop in self.stops {
            let _ = stop.send(grace);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the data plane with `threads` shards, a thread each.
pub fn start_data_plane(threads: usize) -> Result<DataPlaneThreads> {
    let runtimes = (0..threads.max(1))
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the data plane")
        })
        .collect::<Result<Vec<Runtime>>>()?;
    let shards = Arc::new(Shards {
        handles: runtimes.iter().map(|rt| rt.handle().clone()).collect(),
        next: AtomicUsize::new(0),
    });
    let mut stops = Vec::new();
    let mut joins = Vec::new();
    for (index, runtime) in runtimes.into_iter().enumerate() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<Duration>();
        let plane = shards.id();
        let thread = std::thread::Builder::new()
            .name("spoa-data".into())
            .spawn(move || {
                CURRENT_SHARD.set((plane, index));
                let grace = runtime.block_on(stopped).unwrap_or(Duration::ZERO);
                runtime.shutdown_timeout(grace);
            })
            .context("starting a data-plane thread")?;
        stops.push(stop);
        joins.push(thread);
    }
    Ok(DataPlaneThreads {
        plane: Plane(shards, PhantomData),
        stops,
        threads: joins,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread::ThreadId;

    use super::*;

    fn thread_of(plane: &DataPlane) -> ThreadId {
        let (sent, got) = mpsc::channel();
        plane.spawn(async move { sent.send(std::thread::current().id()) });
        got.recv().expect("the task ran")
    }

    #[test]
    fn work_from_outside_goes_round_robin_and_work_from_a_shard_stays_there() {
        let threads = start_data_plane(2).expect("data plane");
        let plane = threads.plane();
        let (first, second) = (thread_of(&plane), thread_of(&plane));
        assert_ne!(first, second, "two tasks from outside, two shards");
        assert_eq!(thread_of(&plane), first, "the third is back on the first");

        let (sent, got) = mpsc::channel();
        let inner = plane.clone();
        plane.spawn(async move {
            let outer = std::thread::current().id();
            for _ in 0..4 {
                let sent = sent.clone();
                inner.spawn(async move { sent.send((outer, std::thread::current().id())) });
            }
        });
        for _ in 0..4 {
            let (outer, spawned) = got.recv().expect("the task ran");
            assert_eq!(outer, spawned, "spawned from a shard, run on it");
        }
        threads.stop(Duration::from_millis(100));
    }
}
