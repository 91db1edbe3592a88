//! The shared wasmtime engine: compilation settings, the epoch ticker that
//! enforces per-call deadlines, and the linker holding the host's imports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Handler;
use super::state::GuestState;
use super::ticker::TickPace;
use crate::kv::KvStore;
use crate::tables::IpTables;

/// Instances a reload may hold on top of the serving ones: its smoke call,
/// and a `spoa-host check` or `call` in the same process.
const INSTANCES_FOR_LOADING: u32 = 4;

/// How guest instances are kept between messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// Instances are pooled and reused for every message until one traps or
    /// the module is replaced. Linear memory and globals survive between
    /// messages (of any connection).
    Reuse,
    /// A new instance for every message: nothing survives between messages.
    Fresh,
}

/// Limits applied to every guest call. The defaults live in the CLI
/// (`cli::SandboxArgs`), the one place they are defined.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Wall-clock budget of one `handle-message` call.
    pub call_timeout: Duration,
    /// Budget of the optional `init` export, called once per new instance.
    pub init_timeout: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory_cap: usize,
    pub instance_mode: InstanceMode,
    /// Calls a reused instance serves before it is replaced by a new one.
    pub max_calls_per_instance: u64,
    /// Most messages one call of the batch export (`handle-messages`) takes.
    pub max_batch: u32,
    /// Most answers the guest of a packed batch (`handle-packed-messages`)
    /// may hold back before it hands them to the host together; 1 hands
    /// each over at once.
    pub max_answer_group: u32,
    /// Most guest calls in progress at once; also sizes the instance pool.
    pub max_concurrent_calls: u32,
    /// Where compiled modules are cached (`None`: compile at every load).
    pub cache_dir: Option<PathBuf>,
    /// Most calls of this guest running past their first epoch tick at once
    /// (the threads' worth of time a guest whose calls all run long can
    /// take). The serving agent sets it from its data-plane threads.
    pub long_call_slots: u32,
    /// Run the epoch ticker at real-time priority (the serving agent's
    /// `--control-priority realtime`): ticks on time are what bound a
    /// looping guest to its slots and its deadline on a busy machine.
    pub realtime_ticker: bool,
    /// `--deterministic SEED`: seeded randomness, frozen clocks and a fresh
    /// instance per message (see [`super::determinism`]).
    pub deterministic: Option<u64>,
}

/// Everything needed to compile and run guests; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<GuestState>>,
    pub(crate) config: Arc<SandboxConfig>,
    /// Epoch ticks a call may run before it is interrupted.
    pub(crate) deadline_ticks: u64,
    /// Epoch ticks an `init` call may run.
    pub(crate) init_ticks: u64,
    /// See [`SandboxConfig::long_call_slots`].
    pub(crate) long_calls: Arc<LongCalls>,
    /// The epoch ticker's pace, which long calls set.
    pub(crate) pace: Arc<TickPace>,
    /// The agent's shared key-value store.
    pub(crate) kv: KvStore,
    /// The agent's IP tables, which guests' grants name.
    pub(crate) ip_tables: IpTables,
    /// Set with [`SandboxConfig::deterministic`].
    pub(crate) determinism: Option<Arc<super::determinism::Determinism>>,
    /// Where guests' counters are kept; none: counters nothing reads.
    pub(crate) counters: Option<super::counters::CounterSource>,
}

/// A guest's long-call slots: the share of the data plane its calls that
/// run past a whole tick may take together.
pub(crate) struct LongCalls {
    slots: Arc<tokio::sync::Semaphore>,
}

impl LongCalls {
    fn new(slots: u32) -> LongCalls {
        LongCalls {
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1) as usize)),
        }
    }

    /// Waits for a slot. The semaphore is never closed.
    pub(crate) async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }
}

impl Sandbox {
    /// A sandbox whose guests share `kv` (`wasi:keyvalue`).
    pub fn new(mut config: SandboxConfig, kv: KvStore) -> Result<Sandbox> {
        if config.deterministic.is_some() {
            config.instance_mode = InstanceMode::Fresh;
        }
        let mut wasm_config = Config::new();
        wasm_config.wasm_component_model(true);
        // Deadlines by epoch: a counter bump from a ticker thread, checked at
        // loop back-edges and function entries — far cheaper than fuel.
        wasm_config.epoch_interruption(true);
        // A trap is reported by its code and the message it cost; symbolised
        // backtraces would make every trap slower and every log line longer.
        wasm_config.wasm_backtrace_max_frames(None);
        if config.instance_mode == InstanceMode::Fresh {
            // A fresh instance per message: mapping and unmapping linear memory
            // each time costs ~100 µs in page faults; pooled slots are reset
            // with madvise instead.
            let slots = config.max_concurrent_calls + INSTANCES_FOR_LOADING;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(slots)
                .total_core_instances(slots * 16)
                .total_memories(slots * 2)
                .total_tables(slots * 4)
                .total_stacks(slots)
                .max_memory_size(config.memory_cap)
                // Reset the pages a small guest touches with memset rather
                // than madvise: no page faults or TLB shootdowns per message.
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(1 << 16);
            wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm_config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        let tick = super::ticker::epoch_tick(config.call_timeout);
        // One tick more than the budget: the first tick may come at once, and
        // a guest must get at least its whole budget.
        let deadline_ticks = config.call_timeout.as_nanos().div_ceil(tick.as_nanos()) as u64 + 1;
        let init_ticks = config.init_timeout.as_nanos().div_ceil(tick.as_nanos()) as u64 + 1;
        let pace = super::ticker::spawn(&engine, tick, config.realtime_ticker)?;

        let mut linker = Linker::new(&engine);
        Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking host imports")?;
        super::bindings::batch::add_to_linker::<GuestState, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(anyhow::Error::from)
        .context("linking the batch import")?;
        super::bindings::packed::add_to_linker::<GuestState, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(anyhow::Error::from)
        .context("linking the packed import")?;
        super::wasi::add_to_linker(&mut linker)?;
        Ok(Sandbox {
            engine,
            linker: Arc::new(linker),
            long_calls: Arc::new(LongCalls::new(config.long_call_slots)),
            determinism: config
                .deterministic
                .map(super::determinism::Determinism::new),
            config: Arc::new(config),
            deadline_ticks,
            init_ticks,
            pace,
            kv,
            ip_tables: IpTables::default(),
            counters: None,
        })
    }

    /// With `--deterministic`: what the next call's randomness and clocks
    /// come from ([`super::determinism::Determinism::begin_message`]).
    pub fn determinism(&self) -> Option<&super::determinism::Determinism> {
        self.determinism.as_deref()
    }

    /// The same sandbox, its guests' table grants resolved in `tables`.
    pub fn with_ip_tables(mut self, tables: IpTables) -> Sandbox {
        self.ip_tables = tables;
        self
    }

    pub fn ip_tables(&self) -> &IpTables {
        &self.ip_tables
    }

    /// The same sandbox, its guests' counters kept by `source` (the agent's
    /// metrics).
    pub fn with_counters(mut self, source: super::counters::CounterSource) -> Sandbox {
        self.counters = Some(source);
        self
    }

    pub fn counters(&self) -> Option<&super::counters::CounterSource> {
        self.counters.as_ref()
    }
}
