//! The agent's two runtimes, as types: where a task runs shows in the
//! signature that starts it.
//!
//! - The **control plane** (one thread, real-time priority when granted)
//!   accepts connections, runs TLS handshakes, HELLOs and health checks,
//!   serves `/metrics` and `/status`, handles signals and watches files. It
//!   never runs guest code, so a guest can never delay it.
//! - The **data plane** (`--workers` threads) serves established
//!   connections and runs the guests' calls, loads and smoke calls.
//!
//! Nothing here knows what runs on them; every layer may use this leaf.

use std::future::Future;
use std::marker::PhantomData;

use anyhow::{Context, Result};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// One of the two runtimes; `K` says which ([`Control`] or [`Data`]), so
/// a signature that takes a [`ControlPlane`] cannot be handed the other.
#[derive(Debug)]
pub struct Plane<K>(Handle, PhantomData<K>);

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
        Plane(handle, PhantomData)
    }

    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.spawn(work)
    }
}

impl ControlPlane {
    /// Makes the control plane the current runtime until the guard drops:
    /// what registers with a runtime's drivers (signals) registers there.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.0.enter()
    }

    /// Runs blocking work (file reads, parsing) on the control plane's
    /// blocking threads.
    pub fn spawn_blocking<F, R>(&self, work: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.0.spawn_blocking(work)
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
        self.0.spawn(work).await.context("data-plane task failed")
    }

    pub fn handle(&self) -> &Handle {
        &self.0
    }
}

/// Starts the data plane with `threads` workers. Drop it outside any
/// runtime.
pub fn start_data_plane(threads: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("spoa-data")
        .enable_all()
        .build()
        .context("starting the data plane")
}
