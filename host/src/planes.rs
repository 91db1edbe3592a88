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
//!   4 connections of 16 messages in flight). A new connection goes to the
//!   shard serving the fewest, so connections that close (HAProxy's
//!   `timeout idle`, a reload of HAProxy) never leave the survivors on
//!   one thread while another idles.
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
    /// Connections each shard serves now (see [`DataPlane::spawn_connection`]).
    connections: Vec<AtomicUsize>,
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

    /// The shard serving the fewest connections; ties go round robin, so
    /// a burst of connects is dealt out evenly too.
    fn least_connections(&self) -> usize {
        let shards = self.handles.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % shards;
        (0..shards)
            .map(|offset| (start + offset) % shards)
            .min_by_key(|&index| self.connections[index].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    fn new(handles: Vec<Handle>) -> Shards {
        Shards {
            connections: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
            handles,
            next: AtomicUsize::new(0),
        }
    }
}

/// Counts a connection on its shard for as long as its task lives.
struct OnShard {
    shards: Arc<Shards>,
    index: usize,
}

impl Drop for OnShard {
    fn drop(&mut self) {
        self.shards.connections[self.index].fetch_sub(1, Ordering::Relaxed);
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
        Plane(Arc::new(Shards::new(vec![handle])), PhantomData)
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

    /// Runs a connection's task on the shard serving the fewest
    /// connections (what it spawns then stays there).
    pub fn spawn_connection<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let shards = &self.0;
        let index = shards.least_connections();
        shards.connections[index].fetch_add(1, Ordering::Relaxed);
        let counted = OnShard {
            shards: shards.clone(),
            index,
        };
        shards.handles[index].spawn(async move {
            let _counted = counted;
            work.await
        })
    }

    /// Connections each shard serves now.
    #[cfg(test)]
    fn connections(&self) -> Vec<usize> {
        let counts = &self.0.connections;
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
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
    let shards = Arc::new(Shards::new(
        runtimes.iter().map(|rt| rt.handle().clone()).collect(),
    ));
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

    /// A connection that keeps its shard until `close` fires, reporting
    /// the thread it runs on.
    fn connection(plane: &DataPlane) -> (ThreadId, tokio::sync::oneshot::Sender<()>) {
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let (sent, got) = mpsc::channel();
        plane.spawn_connection(async move {
            let _ = sent.send(std::thread::current().id());
            let _ = closed.await;
        });
        (got.recv().expect("the connection ran"), close)
    }

    #[test]
    fn a_new_connection_goes_to_the_shard_serving_the_fewest() {
        let threads = start_data_plane(2).expect("data plane");
        let plane = threads.plane();
        let opened: Vec<_> = (0..4).map(|_| connection(&plane)).collect();
        assert_eq!(
            plane.connections(),
            [2, 2],
            "four connects, dealt out evenly"
        );
        // Both connections of one shard close: round robin would put the
        // next two on different shards; the fewest puts both on the empty one.
        let emptied = opened[0].0;
        let mut kept = Vec::new();
        for (thread, close) in opened {
            match thread == emptied {
                true => drop(close),
                false => kept.push(close),
            }
        }
        assert!(
            eventually(|| plane.connections().contains(&0)),
            "closed connections leave their count: {:?}",
            plane.connections()
        );
        for _ in 0..2 {
            let (thread, close) = connection(&plane);
            assert_eq!(thread, emptied, "to the shard with none");
            kept.push(close);
        }
        assert_eq!(plane.connections(), [2, 2]);
        drop(kept);
        threads.stop(Duration::from_millis(100));
    }

    fn eventually(condition: impl FnMut() -> bool) -> bool {
        crate::test_support::eventually(Duration::from_secs(5), condition)
    }
}
