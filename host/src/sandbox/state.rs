//! Per-store host state: what a guest can reach through its imports, and the
//! resource limiter that caps its memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{Level, config_store, spoa};
use super::determinism::Determinism;
use super::log::{GuestLog, LogBudget};
use super::wasi::{self, DenyHttp};
use crate::kv::{BucketGrants, KvStore};
use crate::tables::GrantedTables;

/// Most random bytes one `get-random-bytes` call returns.
const MAX_RANDOM_BYTES: u32 = 4096;
/// Host resources (open files, streams, HTTP fields…) one instance may hold
/// at once: each can hold host memory or a file descriptor outside the
/// memory cap, so a guest that leaks them fails its calls instead of
/// exhausting the host.
const MAX_HOST_RESOURCES: usize = 1024;
/// Table elements an instance may grow to (function tables of Rust guests are
/// small; this only stops a guest from exhausting host memory through tables).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Operator-given settings a guest reads through `wasi:config/store`.
pub type GuestConfig = BTreeMap<String, String>;

/// Host state stored in each wasmtime `Store`.
pub struct GuestState {
    pub log: Arc<GuestLog>,
    /// `--deterministic`: where randomness comes from instead of the OS.
    determinism: Option<Arc<Determinism>>,
    memory_cap: usize,
    /// Set when the limiter refused a growth, so the resulting trap can be
    /// reported as a memory-limit violation rather than a generic trap.
    pub memory_exceeded: bool,
    /// Epoch ticks the current call has seen, the ticks they stand for
    /// (see [`super::ticker`]), and how many it may use.
    pub ticks_seen: u64,
    pub ticks_used: u64,
    pub deadline_ticks: u64,
    /// The running call was entered directly (it cannot yield).
    pub direct_call: bool,
    /// Set when a direct call was cut after a whole tick, to be run again on
    /// a fiber.
    pub cut_for_fiber: bool,
    /// The import whose stub cut the direct call (see [`super::direct`]).
    pub cut_at_import: Option<Arc<str>>,
    /// The module's flag that its calls run on fibers from now on.
    pub module_on_fibers: Arc<std::sync::atomic::AtomicBool>,
    /// The long-call slot the running call holds, once it has run past its
    /// first tick (see `Sandbox::long_calls`); released when the call ends.
    pub long_call_slot: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
    config: Arc<GuestConfig>,
    /// The agent's shared store, and the buckets this guest may open.
    kv: KvStore,
    pub(super) kv_grants: Arc<BucketGrants>,
    /// The IP tables this guest may open.
    pub(super) ip_tables: GrantedTables,
    /// The counters this guest may increment (`spoa:agent/metrics`).
    pub(super) counters: super::counters::GuestCounters,
    /// The running batch call's answers (`handle-messages`).
    pub(super) batch: super::batch::BatchAnswers,
    /// Set for the smoke call: an empty store of its own, so proving a new
    /// version never writes to the shared state.
    pub(super) smoke_kv: Option<KvStore>,
    /// Set for the smoke call too: counters nothing reads.
    pub(super) smoke_counters: Option<super::counters::GuestCounters>,
    /// When the running call started, and its budget: store calls are held
    /// to what is left of it.
    pub(super) call_started: Instant,
    /// The running call's budget: `--guest-timeout`, or during `init`
    /// `--guest-init-timeout`.
    pub(super) call_timeout: Duration,
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: DenyHttp,
}

/// The shared store a guest's instances use, and what it may open in it.
#[derive(Clone)]
pub struct KvAccess {
    pub store: KvStore,
    pub grants: Arc<BucketGrants>,
}

impl GuestState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        module_name: Arc<str>,
        memory_cap: usize,
        deadline_ticks: u64,
        call_timeout: Duration,
        config: Arc<GuestConfig>,
        data_dir: Option<&Path>,
        kv: KvAccess,
        log_budget: Arc<LogBudget>,
        determinism: Option<Arc<Determinism>>,
    ) -> Result<GuestState> {
        let log = Arc::new(GuestLog::new(module_name, log_budget));
        Ok(GuestState {
            wasi: wasi::instance_ctx(&log, data_dir, determinism.as_ref())?,
            determinism,
            log,
            memory_cap,
            memory_exceeded: false,
            ticks_seen: 0,
            ticks_used: 0,
            deadline_ticks,
            direct_call: false,
            cut_for_fiber: false,
            cut_at_import: None,
            module_on_fibers: Default::default(),
            long_call_slot: Default::default(),
            config,
            kv: kv.store,
            kv_grants: kv.grants,
            ip_tables: GrantedTables::default(),
            counters: Default::default(),
            batch: Default::default(),
            smoke_kv: None,
            smoke_counters: None,
            call_started: Instant::now(),
            call_timeout,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HOST_RESOURCES);
                table
            },
            http: WasiHttpCtx::new(),
            http_hooks: DenyHttp,
        })
    }
}

impl GuestState {
    /// The store this call uses: the shared one, or the smoke call's own.
    pub(super) fn kv_store(&self) -> &KvStore {
        self.smoke_kv.as_ref().unwrap_or(&self.kv)
    }

    /// When the running call's budget ends.
    pub(super) fn call_deadline(&self) -> Instant {
        self.call_started + self.call_timeout
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "guest memory limit exceeded: {current} bytes in use, {desired} requested, cap {} \
                 (raise it with --guest-memory)",
                self.memory_cap
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl spoa::agent::types::Host for GuestState {}

impl spoa::agent::random::Host for GuestState {
    fn get_random_u64(&mut self) -> u64 {
        match &self.determinism {
            Some(seeded) => seeded.next_u64(),
            None => rand::random(),
        }
    }

    fn get_random_bytes(&mut self, len: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; len.min(MAX_RANDOM_BYTES) as usize];
        match &self.determinism {
            Some(seeded) => seeded.fill(&mut bytes),
            None => rand::fill(&mut bytes[..]),
        }
        bytes
    }
}

impl spoa::agent::log::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        self.log.record(level, &message);
    }
}

impl config_store::Host for GuestState {
    fn get(&mut self, key: String) -> Result<Option<String>, config_store::Error> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config_store::Error> {
        Ok(self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
