//! Loading a handler component: compile (or take it from the cache), check
//! it against the world, pre-link its imports, and prove it with a smoke
//! call before it serves. Then running calls on a pool of its instances.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre};

use super::bindings::{HandlerIndices, blocking};
use super::cache::CompileCache;
use super::engine::{InstanceMode, Sandbox};
use super::instance::{BatchRun, BatchStop, GuestFailure, GuestInstance};
use super::log::LogBudget;
use super::state::{GuestConfig, GuestState};
use crate::kv::BucketGrants;
use crate::spop;
use crate::tables::{GrantedTables, TableGrants};

/// What identifies the module currently serving: logged on each load and
/// exported as metric labels.
#[derive(Debug, Clone)]
pub struct ModuleIdentity {
    pub path: PathBuf,
    pub size: usize,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
}

impl ModuleIdentity {
    /// A short name for logs: the file name and the hash prefix.
    pub fn label(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        format!("{name}@{}", &self.sha256[..12])
    }
}

/// What the operator grants a guest, and how it is proven at load.
#[derive(Debug, Clone)]
pub struct GuestSettings {
    /// Served through `wasi:config/store`.
    pub config: Arc<GuestConfig>,
    /// Mounted read-only at `/data`.
    pub data_dir: Option<PathBuf>,
    /// The message of the smoke call made before a module serves.
    pub smoke_message: spop::Message,
    /// The `wasi:keyvalue` buckets the guest may open.
    pub kv_grants: Arc<BucketGrants>,
    /// The IP tables the guest may open: the grants, and the tables they
    /// resolve to (filled in when the module is loaded).
    pub ip_table_grants: TableGrants,
    pub ip_tables: GrantedTables,
    /// The counter names the guest may increment, and their counters
    /// (filled in when the module is loaded).
    pub counter_grants: super::counters::CounterGrants,
    pub counters: super::counters::GuestCounters,
}

/// The step at which a module was refused; failed reloads are counted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadFailureCause {
    Read,
    Config,
    Compile,
    World,
    Imports,
    Instantiate,
    Init,
    Smoke,
}

impl LoadFailureCause {
    pub const ALL: [LoadFailureCause; 8] = [
        LoadFailureCause::Read,
        LoadFailureCause::Config,
        LoadFailureCause::Compile,
        LoadFailureCause::World,
        LoadFailureCause::Imports,
        LoadFailureCause::Instantiate,
        LoadFailureCause::Init,
        LoadFailureCause::Smoke,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            LoadFailureCause::Read => "read",
            LoadFailureCause::Config => "config",
            LoadFailureCause::Compile => "compile",
            LoadFailureCause::World => "world",
            LoadFailureCause::Imports => "imports",
            LoadFailureCause::Instantiate => "instantiate",
            LoadFailureCause::Init => "init",
            LoadFailureCause::Smoke => "smoke",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Why a module was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(
        "this is a core WebAssembly module, not a component: build the guest for \
         wasm32-wasip2, or with componentize-py / componentize-js (see README, \"Writing a guest\")"
    )]
    CoreModule,
    #[error("compiling the component: {0:#}")]
    Compile(anyhow::Error),
    #[error(
        "{0:#}; the host provides spoa:agent (random, log, expiry, ip-table, metrics, batch, packed), \
         wasi:config/store, wasi:keyvalue@0.2.0-draft (store, atomics, batch) and WASI 0.2 \
         (with nothing granted); nothing else can be imported"
    )]
    Imports(anyhow::Error),
    #[error("the component does not implement the spoa:agent/handler world: {0:#}")]
    World(anyhow::Error),
    #[error("instantiating the component: {0}")]
    Instantiate(GuestFailure),
    #[error("{0}")]
    Init(GuestFailure),
    #[error(
        "smoke call with message `{message}` failed: {failure} (name another message with --smoke-message)"
    )]
    Smoke {
        message: String,
        failure: GuestFailure,
    },
}

impl LoadError {
    pub fn cause(&self) -> LoadFailureCause {
        match self {
            LoadError::Read { .. } => LoadFailureCause::Read,
            LoadError::Config(_) => LoadFailureCause::Config,
            LoadError::CoreModule | LoadError::Compile(_) => LoadFailureCause::Compile,
            LoadError::Imports(_) => LoadFailureCause::Imports,
            LoadError::World(_) => LoadFailureCause::World,
            LoadError::Instantiate(_) => LoadFailureCause::Instantiate,
            LoadError::Init(_) => LoadFailureCause::Init,
            LoadError::Smoke { .. } => LoadFailureCause::Smoke,
        }
    }
}

/// A validated, pre-linked handler, ready to answer messages.
pub struct LoadedModule {
    pub(crate) sandbox: Sandbox,
    pub(crate) instance_pre: InstancePre<GuestState>,
    /// For a component that imports WASI that can wait: the linking of its
    /// direct calls, where those imports cut the call (see
    /// [`super::direct`]). Instances for fiber calls come from
    /// `instance_pre`.
    pub(crate) direct_pre: Option<InstancePre<GuestState>>,
    pub(crate) indices: HandlerIndices,
    /// Set when the component's calls can be entered directly, without a
    /// fiber (≈0.3 µs less): it imports no store, and any WASI that can
    /// wait is stubbed in `direct_pre`.
    pub(crate) blocking_indices: Option<blocking::HandlerIndices>,
    /// Set once a direct call ran past one epoch tick, or reached an import
    /// that can wait: from then on every call of this module is entered on
    /// a fiber and yields every tick, so a guest that runs long never holds
    /// its thread again.
    pub(crate) slow_call_seen: Arc<AtomicBool>,
    pub(crate) settings: GuestSettings,
    pub identity: ModuleIdentity,
    pub(crate) label: Arc<str>,
    /// The log rate every instance of this module shares.
    pub(crate) log_budget: Arc<LogBudget>,
    /// Instances between calls (reuse mode). Dropped with the module, so a
    /// reload never serves an instance of the old version.
    idle: Mutex<Vec<GuestInstance>>,
    /// Whether the component imports host functions that can wait (WASI).
    host_can_wait: bool,
    /// The optional `init` export (`handler-with-init`), called once on each
    /// new instance.
    pub(crate) init: Option<wasmtime::component::ComponentExportIndex>,
    /// The optional `handle-messages` export (`handler-with-batch`).
    pub(crate) batch: Option<wasmtime::component::ComponentExportIndex>,
    /// The optional `handle-packed-messages` export
    /// (`handler-with-packed-batch`), entered instead of `batch`.
    pub(crate) packed_batch: Option<wasmtime::component::ComponentExportIndex>,
    /// What a message of this module has cost lately in a batch call, in
    /// nanoseconds (a moving average; 0 until measured): a batch is given
    /// about as many messages as it can answer in its share of a tick, so a
    /// slow guest (Python, JavaScript) is not handed dozens of messages to
    /// lower and lift only to answer a few.
    batch_cost_ns: AtomicU64,
}

/// A batch call is asked to return once it has run this fraction of the
/// epoch tick (`batch.answer` says `false`), so the first ACK of a burst
/// waits for at most a tick, not the burst, and the thread is given up at
/// every tick as a long call gives it up.
const BATCH_SHARE_OF_TICK: u32 = 1;

/// A packed batch's guest may hold its answers back for about this
/// fraction of a tick (`answer-every`): ACKs wait that much at most for the
/// host call their answers share.
const ANSWER_GROUP_SHARE_OF_TICK: u64 = 4;

/// What a batch call answered, in order, and how many of the messages
/// after those must now run one by one (through [`InstanceLease::call`]),
/// their answers given as each is ready.
pub struct BatchAnswered {
    pub outcomes: Vec<Result<Vec<spop::Action>, GuestFailure>>,
    pub then_one_by_one: usize,
}

/// An instance taken from a module's pool for a run of calls.
pub struct InstanceLease<'m> {
    module: &'m LoadedModule,
    instance: Option<GuestInstance>,
}

impl InstanceLease<'_> {
    /// Calls `handle-message`; see [`LoadedModule::call`].
    ///
    /// The usual call (an instance at hand, a component entered directly)
    /// is made right here; everything else (instantiating, a call on a
    /// fiber, the re-run of a cut call) is a future of its own, boxed, so the
    /// futures that await this one stay small (moving a large future into
    /// its box was measurable per batch).
    pub async fn call(
        &mut self,
        message: &spop::Message,
    ) -> Result<Vec<spop::Action>, GuestFailure> {
        let module = self.module;
        if module.enters_directly()
            && let Some(instance) = self.instance.take().or_else(|| module.take_idle())
            && let Some(result) = self.call_directly(instance, message)
        {
            return result;
        }
        Box::pin(self.call_slowly(message)).await
    }

    /// Answers the first of `messages` with one call of `handle-messages`:
    /// all of them, unless the call returned when `batch.answer` told it
    /// its share of the thread was used (the rest are for the next call).
    /// What a call leaves unanswered otherwise runs one message at a time:
    /// after a failure (trap, timeout, memory) the message it was on gets it
    /// and the ones after it run through `handle-message` on another
    /// instance; after a direct call is cut to move to a fiber, the message
    /// it was on runs again, on a fiber.
    pub async fn call_batch(&mut self, messages: &[spop::Message]) -> BatchAnswered {
        let module = self.module;
        let share = module.tick() / BATCH_SHARE_OF_TICK;
        let answer_every = module.answer_every();
        let started = Instant::now();
        let direct = if module.enters_directly() {
            let at_hand = match self.instance.take().or_else(|| module.take_idle()) {
                Some(instance) => Some(instance),
                // A failure here is reported by the call on a fiber, which
                // tries again.
                None => Box::pin(module.new_instance(false)).await.ok(),
            };
            at_hand.and_then(|instance| {
                self.call_batch_directly(instance, messages, share, answer_every)
            })
        } else {
            None
        };
        let run = match direct {
            Some(run) => run,
            None => Box::pin(self.call_batch_slowly(messages, share, answer_every)).await,
        };
        let BatchRun {
            answers: mut outcomes,
            stop,
            asked_to_return,
            grouped,
        } = run;
        let answered = outcomes.len().min(messages.len());
        module.record_batch_cost(started.elapsed(), answered);
        let done = |outcomes| BatchAnswered {
            outcomes,
            then_one_by_one: 0,
        };
        let rerun_from = match stop {
            BatchStop::Returned if answered == messages.len() => return done(outcomes),
            BatchStop::Returned if asked_to_return && answered > 0 => return done(outcomes),
            // A failure after the last answer costs no message (the
            // instance is dropped all the same).
            BatchStop::Failed(_) if answered == messages.len() => return done(outcomes),
            BatchStop::Returned => {
                outcomes.push(Err(GuestFailure::InvalidOutput(format!(
                    "handle-messages returned without answering message {answered} of {}",
                    messages.len()
                ))));
                answered + 1
            }
            // Answers were held back: any of the unanswered messages may
            // have failed, so all of them run again, and the one that
            // fails again gets its failure then.
            BatchStop::Failed(_) if grouped => answered,
            BatchStop::Failed(failure) => {
                outcomes.push(Err(failure));
                answered + 1
            }
            BatchStop::CutForFiber => answered,
        };
        outcomes.truncate(messages.len());
        BatchAnswered {
            outcomes,
            then_one_by_one: messages.len().saturating_sub(rerun_from),
        }
    }

    /// A batch call entered directly; `None` when the instance cannot be
    /// (it is kept for a call on a fiber).
    fn call_batch_directly(
        &mut self,
        mut instance: GuestInstance,
        messages: &[spop::Message],
        share: Duration,
        answer_every: u32,
    ) -> Option<BatchRun> {
        let Some(run) = instance.call_batch_directly(messages, share, answer_every) else {
            self.instance = Some(instance);
            return None;
        };
        if matches!(run.stop, BatchStop::CutForFiber) {
            self.module.moved_to_fibers(&instance);
            return Some(run);
        }
        self.keep_after_batch(instance, &run.stop);
        Some(run)
    }

    /// A batch call on a fiber, held to the budget of all its messages.
    async fn call_batch_slowly(
        &mut self,
        messages: &[spop::Message],
        share: Duration,
        answer_every: u32,
    ) -> BatchRun {
        let module = self.module;
        let mut instance = match module.instance_for_fiber(self.instance.take()) {
            Some(instance) => instance,
            None => match module.new_instance(false).await {
                Ok(instance) => instance,
                Err(failure) => {
                    return BatchRun {
                        answers: Vec::new(),
                        stop: BatchStop::Failed(failure),
                        asked_to_return: false,
                        grouped: false,
                    };
                }
            },
        };
        let run = if module.host_can_wait {
            let progress = instance.batch_progress();
            let per_message = module.wall_clock_bound(module.sandbox.config.call_timeout);
            let call = instance.call_batch_yielding(messages, share, answer_every);
            held_to_each_answer(call, &progress, per_message).await
        } else {
            Some(
                instance
                    .call_batch_yielding(messages, share, answer_every)
                    .await,
            )
        };
        let run = match run {
            Some(run) => run,
            None => BatchRun {
                answers: instance.take_batch_answers(),
                stop: BatchStop::Failed(GuestFailure::Timeout),
                asked_to_return: false,
                grouped: instance.holds_answers(messages.len(), answer_every),
            },
        };
        self.keep_after_batch(instance, &run.stop);
        run
    }

    fn keep_after_batch(&mut self, instance: GuestInstance, stop: &BatchStop) {
        let result = match stop {
            BatchStop::Failed(failure) => Err(failure.clone()),
            _ => Ok(Vec::new()),
        };
        self.keep(instance, &result);
    }

    /// A call that needs a new instance, or a fiber.
    async fn call_slowly(
        &mut self,
        message: &spop::Message,
    ) -> Result<Vec<spop::Action>, GuestFailure> {
        let module = self.module;
        if module.enters_directly() {
            // No instance was at hand: a new one, entered directly.
            let instance = module.new_instance(false).await?;
            if let Some(result) = self.call_directly(instance, message) {
                return result;
            }
        }
        let mut instance = match module.instance_for_fiber(self.instance.take()) {
            Some(instance) => instance,
            None => module.new_instance(false).await?,
        };
        let result = module.bounded(instance.call_yielding(message)).await;
        self.keep(instance, &result);
        result
    }

    /// Calls `instance` directly; `None` when the message must run on a
    /// fiber instead: the component cannot be entered directly (the instance
    /// is kept for that), or the call was cut after a whole tick because it
    /// could not yield. A cut instance is dropped (its state is unknown) and
    /// the module's calls run on fibers from then on, so the caller runs the
    /// message again on another instance (pooled or new), on a fiber with its
    /// whole budget.
    fn call_directly(
        &mut self,
        mut instance: GuestInstance,
        message: &spop::Message,
    ) -> Option<Result<Vec<spop::Action>, GuestFailure>> {
        let Some(result) = instance.call_directly(message) else {
            self.instance = Some(instance);
            return None;
        };
        if instance.was_cut_for_fiber() {
            self.module.moved_to_fibers(&instance);
            return None;
        }
        self.keep(instance, &result);
        Some(result)
    }

    /// Keeps `instance` for the next call, unless it serves one message
    /// only (a fresh instance), the call poisoned it, or it has served its
    /// `--guest-max-calls` (an instance that ages is replaced before a slow
    /// leak in the guest fails a message at the memory cap).
    fn keep(&mut self, instance: GuestInstance, result: &Result<Vec<spop::Action>, GuestFailure>) {
        let config = &self.module.sandbox.config;
        let reusable = config.instance_mode == InstanceMode::Reuse
            && !matches!(result, Err(failure) if failure.poisons_instance())
            && instance.calls() < config.max_calls_per_instance;
        if reusable {
            self.instance = Some(instance);
        }
    }
}

impl Drop for InstanceLease<'_> {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.module.put_idle(instance);
        }
    }
}

/// A component compiled and linked, ready to instantiate.
struct Prepared {
    instance_pre: InstancePre<GuestState>,
    direct_pre: Option<InstancePre<GuestState>>,
    indices: HandlerIndices,
    blocking_indices: Option<blocking::HandlerIndices>,
    host_can_wait: bool,
    init: Option<wasmtime::component::ComponentExportIndex>,
    batch: Option<wasmtime::component::ComponentExportIndex>,
    packed_batch: Option<wasmtime::component::ComponentExportIndex>,
    from_cache: bool,
}

/// The hex SHA-256 of a module: what identifies its version.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Core modules start `\0asm` + version 1; components use a different layer.
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

impl Sandbox {
    /// Reads, compiles and validates the component at `path`. Compilation
    /// runs on a blocking thread; the smoke call runs on the caller's
    /// runtime, which must be the guest runtime when serving.
    pub async fn load_file(
        &self,
        path: &Path,
        settings: GuestSettings,
    ) -> Result<Arc<LoadedModule>, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        self.load_bytes(path, bytes, settings).await
    }

    /// Compiles and validates `bytes` (binary component, or component text),
    /// hashing them on the caller's thread (the commands; the agent hashes
    /// on a blocking thread and calls [`Sandbox::load_hashed`]).
    pub async fn load_bytes(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        settings: GuestSettings,
    ) -> Result<Arc<LoadedModule>, LoadError> {
        let sha256 = sha256_hex(&bytes);
        self.load_hashed(path, bytes, sha256, settings).await
    }

    /// Compiles and validates `bytes`, whose hex SHA-256 is `sha256`.
    pub async fn load_hashed(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        sha256: String,
        settings: GuestSettings,
    ) -> Result<Arc<LoadedModule>, LoadError> {
        if bytes.starts_with(&CORE_MODULE_HEADER) {
            return Err(LoadError::CoreModule);
        }
        let size = bytes.len();
        let this = self.clone();
        let digest = sha256.clone();
        // Compiling (or reading the cache) and linking take milliseconds to
        // seconds for a large guest: a blocking thread's work, not that of
        // a thread serving messages. Only the smoke call, guest code, runs
        // on the caller's runtime.
        let Prepared {
            instance_pre,
            direct_pre,
            indices,
            blocking_indices,
            host_can_wait,
            init,
            batch,
            packed_batch,
            from_cache,
        } = tokio::task::spawn_blocking(move || this.prepare(&bytes, &digest))
            .await
            .map_err(|join| LoadError::Compile(anyhow::anyhow!("compile task failed: {join}")))??;

        let identity = ModuleIdentity {
            path: path.to_path_buf(),
            size,
            sha256,
            loaded_at: SystemTime::now(),
            from_cache,
        };
        let label: Arc<str> = identity.label().into();
        let module = Arc::new(LoadedModule {
            sandbox: self.clone(),
            instance_pre,
            direct_pre,
            indices,
            blocking_indices,
            slow_call_seen: Arc::new(AtomicBool::new(false)),
            settings,
            identity,
            label,
            log_budget: Arc::default(),
            idle: Mutex::new(Vec::new()),
            host_can_wait,
            init,
            batch,
            packed_batch,
            batch_cost_ns: AtomicU64::new(0),
        });
        module.smoke_test().await?;
        Ok(module)
    }

    /// The compiled component, from the cache when it holds this exact
    /// module compiled with these engine settings.
    /// Compiles `bytes` and links the component against the host's imports.
    fn prepare(&self, bytes: &[u8], sha256: &str) -> Result<Prepared, LoadError> {
        let (component, from_cache) = self.compile(bytes, sha256)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| LoadError::Imports(err.into()))?;
        let indices =
            HandlerIndices::new(&instance_pre).map_err(|err| LoadError::World(err.into()))?;
        let component_type = component.component_type();
        let imports = || component_type.imports(&self.engine);
        let host_can_wait = imports().any(|(name, _)| super::bindings::import_can_wait(name));
        let always_on_fibers = imports().any(|(name, _)| super::bindings::always_waits(name));
        let direct_pre = match (always_on_fibers, host_can_wait) {
            (false, true) => {
                super::direct::link_for_direct_calls(&self.engine, &self.linker, &component)
            }
            _ => None,
        };
        let enters_directly = !always_on_fibers && (!host_can_wait || direct_pre.is_some());
        let blocking_indices = if enters_directly {
            Some(
                blocking::HandlerIndices::new(&instance_pre)
                    .map_err(|err| LoadError::World(err.into()))?,
            )
        } else {
            None
        };
        Ok(Prepared {
            direct_pre,
            init: find_init(&component),
            batch: component.get_export_index(None, "handle-messages"),
            packed_batch: component.get_export_index(None, "handle-packed-messages"),
            instance_pre,
            indices,
            blocking_indices,
            host_can_wait,
            from_cache,
        })
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<(Component, bool), LoadError> {
        let cache = self
            .config
            .cache_dir
            .as_deref()
            .and_then(CompileCache::open);
        if let Some(cache) = &cache
            && let Some(component) = cache.get(&self.engine, sha256)
        {
            return Ok((component, true));
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|err| LoadError::Compile(err.into()))?;
        if let Some(cache) = &cache {
            cache.put(&self.engine, sha256, &component);
        }
        Ok((component, false))
    }
}

impl LoadedModule {
    /// Instantiates the module and calls it once with the smoke message. A
    /// trap, timeout, exit or memory blow-up rejects the module; an `err`
    /// answer or unusable actions do not (a guest may legitimately refuse a
    /// message it does not know).
    async fn smoke_test(&self) -> Result<(), LoadError> {
        let message = &self.settings.smoke_message;
        let (instance, outcome) = match self.smoke_call(message).await? {
            // It reached an import that can wait, on an instance linked for
            // direct calls: the module now runs on fibers, and so does the
            // smoke call, on an instance linked for real.
            (cut, _) if cut.was_cut_for_fiber() => {
                self.moved_to_fibers(&cut);
                self.smoke_call(message).await?
            }
            // A direct call that traps on an instance linked for direct
            // calls: proven again on fibers, linked for real, before the
            // module is refused or served.
            (stubbed, Err(GuestFailure::Trap(reason))) if stubbed.is_stubbed() => {
                tracing::info!(
                    module = %self.label,
                    reason = %reason,
                    "the smoke call trapped in a direct call: this module's calls run on fibers"
                );
                self.slow_call_seen.store(true, Ordering::Relaxed);
                self.smoke_call(message).await?
            }
            called => called,
        };
        match outcome {
            Ok(_) | Err(GuestFailure::Returned(_)) | Err(GuestFailure::InvalidOutput(_)) => {
                if self.sandbox.config.instance_mode == InstanceMode::Reuse {
                    self.put_idle(instance);
                }
                Ok(())
            }
            Err(failure) => Err(LoadError::Smoke {
                message: String::from_utf8_lossy(&message.name).into_owned(),
                failure,
            }),
        }
    }

    async fn smoke_call(
        &self,
        message: &spop::Message,
    ) -> Result<(GuestInstance, Result<Vec<spop::Action>, GuestFailure>), LoadError> {
        let mut instance = self
            .new_instance(true)
            .await
            .map_err(|failure| match failure {
                GuestFailure::Init(_) => LoadError::Init(failure),
                other => LoadError::Instantiate(other),
            })?;
        instance.use_smoke_store(true);
        // An instance linked for direct calls is proven by one: a stub
        // that does not link as the serving calls need fails here, not in
        // every message.
        let outcome = match instance.is_stubbed() {
            true => match instance.call_directly(message) {
                Some(outcome) => outcome,
                None => self.bounded(instance.call_yielding(message)).await,
            },
            false => self.bounded(instance.call_yielding(message)).await,
        };
        instance.use_smoke_store(false);
        Ok((instance, outcome))
    }

    /// Runs `handle-message` for one message and returns its validated
    /// actions. Never panics on guest behaviour; a failure costs this
    /// message only.
    pub async fn call(&self, message: &spop::Message) -> Result<Vec<spop::Action>, GuestFailure> {
        self.lease().call(message).await
    }

    /// [`call`](Self::call) as of `unix_ms` (`None`: the fixed time): with
    /// `--deterministic`, the call's randomness is seeded from `message` and
    /// its clocks stand at that time; otherwise the same as `call`.
    pub async fn call_at(
        &self,
        message: &spop::Message,
        unix_ms: Option<u64>,
    ) -> Result<Vec<spop::Action>, GuestFailure> {
        if let Some(seeded) = self.sandbox.determinism() {
            seeded.begin_message(message, unix_ms);
        }
        self.call(message).await
    }

    /// An instance to call several messages with in a row (one pool
    /// round-trip per batch, not per message). It goes back to the pool when
    /// the lease is dropped, unless a failure poisoned it.
    pub fn lease(&self) -> InstanceLease<'_> {
        InstanceLease {
            module: self,
            instance: None,
        }
    }

    /// Holds `work` to the call deadline in wall-clock time, also while it
    /// waits in the host (a WASI sleep, a poll): epoch interruption only
    /// stops running guest code. Dropping the future abandons the instance.
    /// A component that imports nothing that can wait (no WASI) needs no
    /// timer: the epoch deadline alone bounds it.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, GuestFailure>>,
    ) -> Result<T, GuestFailure> {
        self.bounded_to(self.sandbox.config.call_timeout, work)
            .await
    }

    async fn bounded_to<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, GuestFailure>>,
    ) -> Result<T, GuestFailure> {
        if !self.host_can_wait {
            return work.await;
        }
        tokio::time::timeout(self.wall_clock_bound(timeout), work)
            .await
            .unwrap_or(Err(GuestFailure::Timeout))
    }

    /// How long a call with this budget may take in wall-clock time.
    fn wall_clock_bound(&self, timeout: Duration) -> Duration {
        timeout.saturating_add(timeout.max(WALL_CLOCK_GRACE))
    }

    /// A new instance, its start code held to the call deadline and its
    /// `init` (if it exports one) to the init deadline.
    async fn new_instance(&self, smoke: bool) -> Result<GuestInstance, GuestFailure> {
        let stubbed = self.enters_directly() && self.direct_pre.is_some();
        let made = self.new_instance_once(smoke).await;
        // Start code or `init` that reached an import that can wait moved
        // the module to fibers: made again, linked for real.
        if stubbed && made.is_err() && !self.enters_directly() {
            tracing::info!(
                module = %self.label,
                "a new instance reached an import that can wait: this module's calls run on fibers from now on"
            );
            return self.new_instance_once(smoke).await;
        }
        made
    }

    async fn new_instance_once(&self, smoke: bool) -> Result<GuestInstance, GuestFailure> {
        let config = &self.sandbox.config;
        if self.init.is_none() {
            return self
                .bounded_to(config.call_timeout, GuestInstance::new(self, smoke))
                .await;
        }
        let budget = config.call_timeout + config.init_timeout;
        // Past the wall-clock bound with an `init`, it is the init's limit
        // that was passed (start code is held to a message's budget).
        match self
            .bounded_to(budget, GuestInstance::new(self, smoke))
            .await
        {
            Err(GuestFailure::Timeout) => Err(GuestFailure::Init(
                "it ran past its time limit (--guest-init-timeout)".into(),
            )),
            other => other,
        }
    }

    /// The guest's time slice on a data-plane thread (the epoch tick).
    pub fn tick(&self) -> Duration {
        self.sandbox.pace.tick()
    }

    /// How many of the `remaining` messages of a burst the next entry into
    /// the guest is given: 1 without the batch export, else up to
    /// `--guest-batch` (a batch call that runs its share of a tick returns
    /// early, so slow messages do not make long entries).
    pub fn batch_size(&self, remaining: usize) -> usize {
        if (self.batch.is_none() && self.packed_batch.is_none()) || remaining <= 1 {
            return remaining.min(1);
        }
        let cap = self.sandbox.config.max_batch.max(1) as usize;
        let fits = match self.batch_cost_ns.load(Ordering::Relaxed) {
            0 => cap,
            cost => (self.tick().as_nanos() as u64 / BATCH_SHARE_OF_TICK as u64 / cost) as usize,
        };
        // Never fewer than two once batches are possible: an estimate
        // inflated by a busy machine must not turn batching off.
        fits.max(2).min(cap).min(remaining)
    }

    /// Which export a read burst's messages enter the guest through, for
    /// the load log: the packed batch, the typed batch, or one call each.
    pub fn entered_by(&self) -> &'static str {
        match (&self.packed_batch, &self.batch) {
            (Some(_), _) => "handle-packed-messages",
            (None, Some(_)) => "handle-messages",
            (None, None) => "handle-message",
        }
    }

    /// How many answers the guest of a packed batch may hold back before it
    /// hands them over: as many as it answers in its share of a tick, by
    /// what its messages cost lately (1 until measured).
    fn answer_every(&self) -> u32 {
        match self.batch_cost_ns.load(Ordering::Relaxed) {
            0 => 1,
            cost => {
                let every = self.tick().as_nanos() as u64 / ANSWER_GROUP_SHARE_OF_TICK / cost;
                let cap = self.sandbox.config.max_answer_group.max(1);
                u32::try_from(every).unwrap_or(u32::MAX).clamp(1, cap)
            }
        }
    }

    /// Folds what a batch call took per message into the moving average.
    fn record_batch_cost(&self, took: Duration, messages: usize) {
        let sample = (took.as_nanos() as u64 / messages.max(1) as u64).max(1);
        let old = self.batch_cost_ns.load(Ordering::Relaxed);
        let new = match old {
            0 => sample,
            old => old - old / 4 + sample / 4,
        };
        self.batch_cost_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// Whether calls enter the component directly, without a fiber: it
    /// imports nothing that can wait, and none of its calls ran a whole tick.
    pub(crate) fn enters_directly(&self) -> bool {
        self.blocking_indices.is_some() && !self.slow_call_seen.load(Ordering::Relaxed)
    }

    /// Says why a direct call was cut, once its module's calls all run on
    /// fibers.
    fn moved_to_fibers(&self, cut: &GuestInstance) {
        self.slow_call_seen.store(true, Ordering::Relaxed);
        // Instances linked for direct calls only serve no call from now on.
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|instance| !instance.is_stubbed());
        match cut.cut_at_import() {
            Some(import) => tracing::info!(
                module = %self.label,
                import,
                "a direct call reached an import that can wait: this module's calls run on fibers from now on"
            ),
            None => tracing::info!(
                module = %self.label,
                "a direct call ran a whole tick: this module's calls run on fibers from now on"
            ),
        }
    }

    /// An instance at hand for a call on a fiber: `held`, else an idle one,
    /// never one linked for direct calls only (dropped instead).
    fn instance_for_fiber(&self, held: Option<GuestInstance>) -> Option<GuestInstance> {
        if let Some(instance) = held.filter(|instance| !instance.is_stubbed()) {
            return Some(instance);
        }
        loop {
            match self.take_idle() {
                Some(instance) if instance.is_stubbed() => continue,
                other => return other,
            }
        }
    }

    fn take_idle(&self) -> Option<GuestInstance> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, instance: GuestInstance) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.sandbox.config.max_concurrent_calls as usize {
            idle.push(instance);
        }
    }

    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    pub fn settings(&self) -> &GuestSettings {
        &self.settings
    }
}

/// The wall-clock bound is twice the deadline (at least the deadline plus
/// this): a guest spinning in wasm is cut by the epoch, which counts only the
/// time it runs, and the timer only catches calls that wait in the host,
/// without failing healthy guests on a busy machine.
const WALL_CLOCK_GRACE: Duration = Duration::from_millis(10);

/// Runs a batch call on a fiber, holding each message to the wall-clock
/// bound of one call from the previous answer (`progress`, updated by
/// `batch.answer`): a guest waiting in the host (a WASI sleep or poll) is
/// cut as a single call would be. `None` when it was cut.
async fn held_to_each_answer(
    call: impl Future<Output = BatchRun>,
    progress: &super::batch::Progress,
    per_message: Duration,
) -> Option<BatchRun> {
    // Counted from now: what the instance's last batch left there is stale
    // (and the call has not started until it is polled).
    progress.answered_at(Instant::now());
    tokio::pin!(call);
    loop {
        let last_answer = progress.last_answer();
        tokio::select! {
            biased;
            run = &mut call => return Some(run),
            _ = tokio::time::sleep_until((last_answer + per_message).into()) => {
                if progress.last_answer() == last_answer {
                    return None;
                }
            }
        }
    }
}

/// The `init` export, when the component has one. Its type is checked on
/// the first instance (the smoke call's): a wrong one refuses the module.
fn find_init(component: &Component) -> Option<wasmtime::component::ComponentExportIndex> {
    component.get_export_index(None, "init")
}
