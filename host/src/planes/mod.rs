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
//!   one thread while another idles. Then [`balance`] moves connections
//!   between shards as their load shows: onto fewer shards while they wait
//!   for work more than they do it, apart when one is saturated.
//!
//! Nothing here knows what runs on them; every layer may use this leaf.

mod balance;

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    /// Per shard, the shard one of its connections is asked to move to
    /// ([`NO_MOVE`]: none), claimed by the first connection that can.
    moves: Vec<AtomicUsize>,
    /// Connections moved from one shard to another so far.
    moved: AtomicU64,
}

const NO_MOVE: usize = usize::MAX;

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
            moves: handles.iter().map(|_| AtomicUsize::new(NO_MOVE)).collect(),
            moved: AtomicU64::new(0),
            handles,
            next: AtomicUsize::new(0),
        }
    }

    /// Seats a connection on shard `index` and starts its task there.
    fn seat<W, F>(self: &Arc<Self>, index: usize, work: W) -> JoinHandle<F::Output>
    where
        W: FnOnce(Seat) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.connections[index].fetch_add(1, Ordering::Relaxed);
        let seat = Seat {
            shards: self.clone(),
            index,
        };
        self.handles[index].spawn(work(seat))
    }

    /// What each shard has done so far.
    fn readings(&self) -> Vec<(Duration, u64)> {
        self.handles
            .iter()
            .map(|handle| {
                let metrics = handle.metrics();
                (
                    metrics.worker_total_busy_duration(0),
                    metrics.worker_park_count(0),
                )
            })
            .collect()
    }
}

/// A connection's place on a shard: counted there for as long as it
/// lives, and where the balancer asks it to move.
#[derive(Debug)]
pub struct Seat {
    shards: Arc<Shards>,
    index: usize,
}

impl Seat {
    /// The shard this connection is asked to move to, if it is (the
    /// request is then its own: no other connection takes it).
    pub fn claim_move(&self) -> Option<usize> {
        let request = &self.shards.moves[self.index];
        if request.load(Ordering::Relaxed) == NO_MOVE {
            return None;
        }
        let target = request.swap(NO_MOVE, Ordering::Relaxed);
        (target != NO_MOVE && target != self.index && target < self.shards.handles.len())
            .then_some(target)
    }

    /// Continues the connection as `work` on shard `target`, seated there.
    pub fn move_to<W, F>(self, target: usize, work: W) -> JoinHandle<F::Output>
    where
        W: FnOnce(Seat) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let shards = self.shards.clone();
        shards.moved.fetch_add(1, Ordering::Relaxed);
        drop(self);
        shards.seat(target, work)
    }
}

impl Drop for Seat {
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

    /// Runs a connection's task, `work` given its [`Seat`], on the shard
    /// serving the fewest connections (what it spawns then stays there).
    pub fn spawn_connection<W, F>(&self, work: W) -> JoinHandle<F::Output>
    where
        W: FnOnce(Seat) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.seat(self.0.least_connections(), work)
    }

    /// Connections each data-plane thread serves now.
    pub fn connections_per_worker(&self) -> Vec<usize> {
        let counts = &self.0.connections;
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// Connections moved from one data-plane thread to another so far.
    pub fn connections_moved(&self) -> u64 {
        self.0.moved.load(Ordering::Relaxed)
    }

    /// Asks a connection of shard `from` to move to shard `to`, as the
    /// balancer does (`None`: withdraws the request).
    #[cfg(test)]
    pub(crate) fn ask_move(&self, from: usize, to: Option<usize>) {
        self.0.moves[from].store(to.unwrap_or(NO_MOVE), Ordering::Relaxed);
    }
}

/// The data plane's threads, each driving its shard until [`Self::stop`],
/// and the balancer's.
pub struct DataPlaneThreads {
    plane: DataPlane,
    stops: Vec<tokio::sync::oneshot::Sender<Duration>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    balancer: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl DataPlaneThreads {
    pub fn plane(&self) -> DataPlane {
        self.plane.clone()
    }

    /// Stops every shard, giving its tasks still running up to `grace`.
    /// Call it outside any runtime.
    pub fn stop(self, grace: Duration) {
        // First: no connection moves while the shards stop.
        if let Some((stop, thread)) = self.balancer {
            drop(stop);
            let _ = thread.join();
        }
        for request in &self.plane.0.moves {
            request.store(NO_MOVE, Ordering::Relaxed);
        }
        for stop in self.stops {
            let _ = stop.send(grace);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the data plane with `threads` shards, a thread each, and with
/// `rebalance` a thread moving connections between them (see [`balance`]).
pub fn start_data_plane(threads: usize, rebalance: bool) -> Result<DataPlaneThreads> {
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
    let balancer = match rebalance && shards.handles.len() > 1 {
        true => {
            let (stop, stopped) = mpsc::channel();
            let watched = shards.clone();
            let thread = std::thread::Builder::new()
                .name("spoa-balance".into())
                .spawn(move || run_balancer(&watched, &stopped))
                .context("starting the data plane's balancer")?;
            Some((stop, thread))
        }
        false => None,
    };
    Ok(DataPlaneThreads {
        plane: Plane(shards, PhantomData),
        stops,
        threads: joins,
        balancer,
    })
}

/// Samples the shards every [`balance::WINDOW`] and asks for the moves the
/// [`balance::Balancer`] makes, until `stopped` disconnects.
fn run_balancer(shards: &Shards, stopped: &mpsc::Receiver<()>) {
    let mut balancer = balance::Balancer::default();
    let mut before = (Instant::now(), shards.readings());
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(balance::WINDOW) {
        let now = (Instant::now(), shards.readings());
        let seconds = now.0.duration_since(before.0).as_secs_f64().max(1e-3);
        let samples: Vec<_> = (now.1.iter().zip(&before.1))
            .zip(&shards.connections)
            .map(
                |((&(busy, sleeps), &(busy_before, sleeps_before)), connections)| {
                    balance::ShardSample {
                        busy: busy.saturating_sub(busy_before).as_secs_f64() / seconds,
                        sleeps_per_s: sleeps.saturating_sub(sleeps_before) as f64 / seconds,
                        connections: connections.load(Ordering::Relaxed),
                    }
                },
            )
            .collect();
        before = now;
        // A request no connection took in its window is withdrawn: the
        // load it was made for has changed.
        let mut untaken = false;
        for request in &shards.moves {
            untaken |= request.swap(NO_MOVE, Ordering::Relaxed) != NO_MOVE;
        }
        if untaken {
            balancer.not_taken();
        }
        if let Some(chosen) = balancer.next(&samples) {
            tracing::debug!(?chosen, ?samples, "moving a connection between workers");
            shards.moves[chosen.from].store(chosen.to, Ordering::Relaxed);
        }
    }
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
        let threads = start_data_plane(2, false).expect("data plane");
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
        plane.spawn_connection(|seat| async move {
            let _seated = seat;
            let _ = sent.send(std::thread::current().id());
            let _ = closed.await;
        });
        (got.recv().expect("the connection ran"), close)
    }

    #[test]
    fn a_new_connection_goes_to_the_shard_serving_the_fewest() {
        let threads = start_data_plane(2, false).expect("data plane");
        let plane = threads.plane();
        let opened: Vec<_> = (0..4).map(|_| connection(&plane)).collect();
        assert_eq!(
            plane.connections_per_worker(),
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
            eventually(|| plane.connections_per_worker().contains(&0)),
            "closed connections leave their count: {:?}",
            plane.connections_per_worker()
        );
        for _ in 0..2 {
            let (thread, close) = connection(&plane);
            assert_eq!(thread, emptied, "to the shard with none");
            kept.push(close);
        }
        assert_eq!(plane.connections_per_worker(), [2, 2]);
        drop(kept);
        threads.stop(Duration::from_millis(100));
    }

    fn eventually(condition: impl FnMut() -> bool) -> bool {
        crate::test_support::eventually(Duration::from_secs(5), condition)
    }
}
