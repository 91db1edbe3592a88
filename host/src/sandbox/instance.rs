//! Running `handle-message`: one instance and its store, deadlines, and
//! classification of guest failures.

use wasmtime::component::TypedFunc;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{Handler, blocking, wit};
use super::borrowed::{HandleOutput, MessageRef};
use super::convert::{actions_from_wit, message_to_wit};
use super::log::truncated;
use super::module::LoadedModule;
use super::packed::pack_messages;
use super::state::{GuestState, KvAccess};
use crate::spop;

/// Longest failure reason kept from a guest (its `err` text or a trap).
pub(crate) const MAX_REASON_BYTES: usize = 512;

/// The batch export's typed function.
type BatchFunc = TypedFunc<(Vec<wit::Message>,), ()>;
type BorrowedBatchFunc<'a> = TypedFunc<(Vec<MessageRef<'a>>,), ()>;

/// The packed batch export's type (`handle-packed-messages`, 0.1.6).
type PackedFunc<'a> = TypedFunc<(u32, &'a [u8], u32), ()>;

/// The batch export an instance is entered through, when it has one.
#[derive(Clone, Copy)]
enum BatchExport {
    /// `handle-messages`, and whether it was also typed for borrowed
    /// messages.
    Typed { func: BatchFunc, borrows: bool },
    /// `handle-packed-messages`: one list of bytes in, several answers per
    /// host call out.
    Packed(wasmtime::component::Func),
}

/// A batch's messages as its export takes them: lowered borrowed when
/// every name is UTF-8, or packed into bytes.
enum BatchInput<'a> {
    Borrowed(BatchFunc, Vec<MessageRef<'a>>),
    Owned(BatchFunc, Vec<wit::Message>),
    Packed {
        func: wasmtime::component::Func,
        count: u32,
        bytes: Vec<u8>,
        answer_every: u32,
    },
}

impl<'a> BatchInput<'a> {
    fn typed(func: BatchFunc, messages: &'a [spop::Message]) -> BatchInput<'a> {
        match messages
            .iter()
            .map(MessageRef::of)
            .collect::<Option<Vec<_>>>()
        {
            Some(borrowed) => BatchInput::Borrowed(func, borrowed),
            None => BatchInput::Owned(func, messages.iter().map(message_to_wit).collect()),
        }
    }
}

/// `func`, typed for a packed batch.
fn packed_batch<'a>(func: wasmtime::component::Func) -> PackedFunc<'a> {
    // SAFETY: only called with a `func` typed as `PackedFunc` when the
    // instance was made; the lifetime is no part of the component type.
    unsafe { PackedFunc::new_unchecked(func) }
}

/// `func`, typed for borrowed messages.
fn borrowed_batch<'a>(func: &BatchFunc) -> BorrowedBatchFunc<'a> {
    // SAFETY: only called when `func` was also typed for `Vec<MessageRef>`
    // when the instance was made (`batch_borrows`); the lifetime is no part
    // of the component type.
    unsafe { BorrowedBatchFunc::new_unchecked(*func.func()) }
}

/// How a batch call ended, beside the answers it gave (which stand).
#[derive(Debug)]
pub(crate) enum BatchStop {
    /// It returned; messages it did not answer are the guest's fault.
    Returned,
    /// It failed while handling the first message it had not answered.
    Failed(GuestFailure),
    /// A direct call cut after a whole tick (see
    /// [`GuestInstance::was_cut_for_fiber`]): the message it was on, and the
    /// ones after it, run again on fibers.
    CutForFiber,
}

/// What a batch call gave: the answers to its first messages, in order.
pub(crate) struct BatchRun {
    pub answers: Vec<Result<Vec<spop::Action>, GuestFailure>>,
    pub stop: BatchStop,
    /// Whether `batch.answer` asked the guest to return early (its share
    /// of the thread was used): the messages left are not its fault.
    pub asked_to_return: bool,
    /// Whether the guest held answers back (a packed batch answered in
    /// groups): after a failure, any of the unanswered messages may have
    /// caused it.
    pub grouped: bool,
}

/// Why a message got no actions from the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFailure {
    #[error("guest exceeded its time budget (raise it with --guest-timeout)")]
    Timeout,
    #[error("guest exceeded its memory cap (raise it with --guest-memory)")]
    MemoryExceeded,
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest called exit({0})")]
    Exit(i32),
    #[error("guest returned an error: {0}")]
    Returned(String),
    #[error("guest returned invalid output: {0}")]
    InvalidOutput(String),
    #[error("guest could not be instantiated: {0}")]
    Instantiate(String),
    #[error("the guest's init failed: {0}")]
    Init(String),
}

impl GuestFailure {
    /// Whether the instance must be thrown away: after a trap its state is
    /// unknown (and wasmtime refuses to re-enter it).
    pub(crate) fn poisons_instance(&self) -> bool {
        !matches!(
            self,
            GuestFailure::Returned(_) | GuestFailure::InvalidOutput(_)
        )
    }
}

/// One instantiated guest with its store, and its `handle-message` export
/// typed both ways: entered on a fiber that yields at every epoch tick, or
/// (for components that cannot wait in the host) entered directly.
pub(crate) struct GuestInstance {
    store: Store<GuestState>,
    /// See [`GuestInstance::is_stubbed`].
    stubbed: bool,
    /// Calls made on this instance (the smoke call's included).
    calls: u64,
    yielding: Handler,
    blocking: Option<blocking::Handler>,
    /// `handle-message` for direct calls with a borrowed message (see
    /// [`super::borrowed`]), typed when the instance was made.
    direct_handle: Option<wasmtime::component::Func>,
    /// The optional batch export: `handle-packed-messages` when the
    /// component has it, else `handle-messages`.
    batch: Option<BatchExport>,
    /// The bytes of the last packed batch, kept for the next.
    packed_bytes: Vec<u8>,
}

/// What a call does at an epoch tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtTick {
    /// A direct call that has not yet run a whole tick goes on.
    Continue,
    /// A direct call that ran a whole tick is cut, to run again on a fiber
    /// with its whole budget (before the deadline is checked: the slow pace
    /// may have charged this tick more than the budget had left).
    CutForFiber,
    /// Its budget of ticks is used up.
    Interrupt,
    /// A fiber call gives up its thread for a turn (holding, or waiting
    /// for, one of the guest's long-call slots past its first tick).
    YieldOrWaitForSlot,
}

/// Counts one tick of a call and decides what it does. Ticks are counted
/// while the call runs: time the thread spent on other calls, or
/// descheduled by the kernel, is not charged to it, so a busy machine does
/// not fail healthy guests. The first tick may come right after the call
/// started and counts one; later ones count the ticks they lasted
/// (`ticks_of_last_tick`: more than one at the ticker's slow pace).
fn at_tick(
    ticks_seen: &mut u64,
    ticks_used: &mut u64,
    deadline_ticks: u64,
    direct_call: bool,
    ticks_of_last_tick: impl FnOnce() -> u64,
) -> AtTick {
    *ticks_seen += 1;
    *ticks_used += match *ticks_seen {
        1 => 1,
        _ => ticks_of_last_tick(),
    };
    // A second tick means it ran for a whole tick.
    let ran_a_whole_tick = *ticks_seen >= 2;
    if direct_call {
        return if ran_a_whole_tick {
            AtTick::CutForFiber
        } else {
            AtTick::Continue
        };
    }
    if *ticks_used >= deadline_ticks {
        return AtTick::Interrupt;
    }
    AtTick::YieldOrWaitForSlot
}

impl GuestInstance {
    /// Instantiates `module`. Start code is held to the call deadline too.
    /// A smoke instance gets an empty store of its own before its `init`
    /// runs: a version being proven never touches the shared state.
    pub(crate) async fn new(
        module: &LoadedModule,
        smoke: bool,
    ) -> Result<GuestInstance, GuestFailure> {
        let sandbox = &module.sandbox;
        let state = GuestState::new(
            module.label.clone(),
            sandbox.config.memory_cap,
            sandbox.deadline_ticks,
            sandbox.config.call_timeout,
            module.settings.config.clone(),
            module.settings.data_dir.as_deref(),
            KvAccess {
                store: sandbox.kv.clone(),
                grants: module.settings.kv_grants.clone(),
            },
            module.log_budget.clone(),
            sandbox.determinism.clone(),
        )
        .map_err(|err| GuestFailure::Instantiate(format!("{err:#}")))?;
        let mut state = state;
        state.ip_tables = module.settings.ip_tables.clone();
        state.counters = module.settings.counters.clone();
        state.module_on_fibers = module.slow_call_seen.clone();
        if smoke {
            state.smoke_kv = Some(crate::kv::KvStore::scratch());
            state.smoke_counters = Some(state.counters.detached());
        }
        let mut store = Store::new(&sandbox.engine, state);
        store.limiter(|state| state);
        // Every tick a yielding call yields, so the other connections on
        // this thread run; once it has used its budget of ticks it is
        // interrupted. tokio's `yield_now` also makes the worker poll for
        // I/O before it resumes the call, so a frame that arrived for another
        // connection is seen within a tick. A call that runs past its first
        // tick must hold one of the guest's long-call slots to go on: a guest
        // whose calls all run long takes at most that many threads' worth of
        // time, and its calls waiting for a slot do not use their budget.
        // A direct call cannot yield: once it runs a whole tick it is cut,
        // run again on a fiber, and the module yields from then on.
        let slow_seen = module.slow_call_seen.clone();
        let long_calls = sandbox.long_calls.clone();
        let pace = sandbox.pace.clone();
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            let decision = at_tick(
                &mut state.ticks_seen,
                &mut state.ticks_used,
                state.deadline_ticks,
                state.direct_call,
                || pace.ticks_of_last_tick(),
            );
            match decision {
                AtTick::Continue => Ok(UpdateDeadline::Continue(1)),
                AtTick::Interrupt => Err(Trap::Interrupt.into()),
                AtTick::CutForFiber => {
                    pace.long_call_running();
                    slow_seen.store(true, std::sync::atomic::Ordering::Relaxed);
                    state.cut_for_fiber = true;
                    Err(Trap::Interrupt.into())
                }
                AtTick::YieldOrWaitForSlot => {
                    // A fiber call is a slow guest's (WASI, an
                    // interpreter): its first tick already asks for the fast
                    // pace, so it yields every tick from its second one on.
                    pace.long_call_running();
                    let ran_a_whole_tick = state.ticks_seen >= 2;
                    let holds_slot = state
                        .long_call_slot
                        .lock()
                        .map(|slot| slot.is_some())
                        .unwrap_or(true);
                    if !ran_a_whole_tick || holds_slot {
                        return Ok(UpdateDeadline::YieldCustom(
                            1,
                            Box::pin(tokio::task::yield_now()),
                        ));
                    }
                    let slot = state.long_call_slot.clone();
                    let long_calls = long_calls.clone();
                    Ok(UpdateDeadline::YieldCustom(
                        1,
                        Box::pin(async move {
                            if let Some(permit) = long_calls.acquire().await
                                && let Ok(mut slot) = slot.lock()
                            {
                                *slot = Some(permit);
                            }
                        }),
                    ))
                }
            }
        });
        store.set_epoch_deadline(1);
        // An instance for direct calls, when its module needs stubs for them.
        let stubbed = module.enters_directly() && module.direct_pre.is_some();
        let pre = match &module.direct_pre {
            Some(direct) if stubbed => direct,
            _ => &module.instance_pre,
        };
        let instance = match pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(err) => {
                return Err(match classify(&store, err) {
                    GuestFailure::Trap(reason) => GuestFailure::Instantiate(reason),
                    other => other,
                });
            }
        };
        // Start code that ran long took a long-call slot; the calls take their own.
        if let Ok(mut slot) = store.data().long_call_slot.lock() {
            slot.take();
        }
        let load_failed = |err: wasmtime::Error| GuestFailure::Instantiate(format!("{err:#}"));
        let yielding = module
            .indices
            .load(&mut store, &instance)
            .map_err(load_failed)?;
        let blocking = match &module.blocking_indices {
            Some(indices) if stubbed || module.direct_pre.is_none() => {
                Some(indices.load(&mut store, &instance).map_err(load_failed)?)
            }
            _ => None,
        };
        let direct_handle = match &blocking {
            Some(_) => instance
                .get_typed_func::<(MessageRef<'static>,), HandleOutput>(
                    &mut store,
                    "handle-message",
                )
                .ok()
                .map(|typed| *typed.func()),
            None => None,
        };
        let wrong_type = |export: &'static str| {
            move |err: wasmtime::Error| {
                GuestFailure::Instantiate(format!("`{export}` has the wrong type: {err:#}"))
            }
        };
        let batch = match (&module.packed_batch, &module.batch) {
            (Some(index), _) => Some(BatchExport::Packed(
                *instance
                    .get_typed_func::<(u32, &[u8], u32), ()>(&mut store, index)
                    .map_err(wrong_type("handle-packed-messages"))?
                    .func(),
            )),
            (None, Some(index)) => Some(BatchExport::Typed {
                // Typed for borrowed messages too: `borrowed_batch` relies on it.
                borrows: instance
                    .get_typed_func::<(Vec<MessageRef<'static>>,), ()>(&mut store, index)
                    .is_ok(),
                func: instance
                    .get_typed_func::<(Vec<wit::Message>,), ()>(&mut store, index)
                    .map_err(wrong_type("handle-messages"))?,
            }),
            (None, None) => None,
        };
        if let Some(init) = &module.init {
            let budget = InitBudget {
                ticks: sandbox.init_ticks,
                timeout: sandbox.config.init_timeout,
            };
            run_init(&mut store, &instance, init, budget).await?;
        }
        Ok(GuestInstance {
            store,
            stubbed,
            calls: 0,
            yielding,
            blocking,
            direct_handle,
            batch,
            packed_bytes: Vec::new(),
        })
    }

    /// Gives the instance an empty store of its own (the smoke call; kept
    /// if its `init` already has one), or back the shared one.
    pub(crate) fn use_smoke_store(&mut self, smoke: bool) {
        let state = self.store.data_mut();
        if !smoke {
            state.smoke_kv = None;
            state.smoke_counters = None;
        } else if state.smoke_kv.is_none() {
            state.smoke_kv = Some(crate::kv::KvStore::scratch());
            state.smoke_counters = Some(state.counters.detached());
        }
    }

    /// Calls made on this instance so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls
    }

    /// Whether the last call was a direct call cut after a whole tick, or
    /// at an import that can wait: its message must be run again on a
    /// fiber, on a fresh instance.
    pub(crate) fn was_cut_for_fiber(&self) -> bool {
        self.store.data().cut_for_fiber
    }

    /// The import that cut the last call, if a stub did (not a tick).
    pub(crate) fn cut_at_import(&self) -> Option<&str> {
        self.store.data().cut_at_import.as_deref()
    }

    /// Whether the instance was linked for direct calls only (its waiting
    /// WASI imports are stubs): it never serves a call on a fiber.
    pub(crate) fn is_stubbed(&self) -> bool {
        self.stubbed
    }

    /// Calls `handle-message` directly, without a fiber, when the component
    /// allows it (`None` otherwise). A call that runs a whole tick is cut
    /// (see [`GuestInstance::was_cut_for_fiber`]).
    pub(crate) fn call_directly(
        &mut self,
        message: &spop::Message,
    ) -> Option<Result<Vec<spop::Action>, GuestFailure>> {
        let handler = self.blocking.as_ref()?;
        self.calls += 1;
        start_call(&mut self.store);
        self.store.data_mut().direct_call = true;
        let outcome = match (self.direct_handle, MessageRef::of(message)) {
            (Some(func), Some(input)) => {
                // SAFETY: `func` was typed with these very types when the
                // instance was made; only the lifetime differs, and it is
                // no part of the component type.
                let typed = unsafe {
                    wasmtime::component::TypedFunc::<(MessageRef<'_>,), HandleOutput>::new_unchecked(
                        func,
                    )
                };
                typed
                    .call(&mut self.store, (input,))
                    .map(|(result,)| result)
            }
            _ => handler.call_handle_message(&mut self.store, &message_to_wit(message)),
        };
        self.store.data_mut().direct_call = false;
        Some(self.outcome(outcome))
    }

    /// Calls `handle-message` on a fiber: the call yields its thread at
    /// every tick and may wait in the host.
    pub(crate) async fn call_yielding(
        &mut self,
        message: &spop::Message,
    ) -> Result<Vec<spop::Action>, GuestFailure> {
        let input = message_to_wit(message);
        self.calls += 1;
        start_call(&mut self.store);
        // Only a call on a fiber can reach the store (a component that
        // imports it is never entered directly): the store's deadline
        // starts here, and direct calls skip the clock.
        self.store.data_mut().call_started = std::time::Instant::now();
        let outcome = self
            .yielding
            .call_handle_message(&mut self.store, &input)
            .await;
        if let Ok(mut slot) = self.store.data().long_call_slot.lock() {
            slot.take();
        }
        self.outcome(outcome)
    }

    /// Calls `handle-messages` directly (`None` when the component cannot
    /// be entered directly, or has no batch export).
    pub(crate) fn call_batch_directly(
        &mut self,
        messages: &[spop::Message],
        share: std::time::Duration,
        answer_every: u32,
    ) -> Option<BatchRun> {
        self.blocking.as_ref()?;
        let export = self.batch?;
        let grouped = self.holds_answers(messages.len(), answer_every);
        let input = self.start_batch(export, messages, false, share, answer_every);
        self.store.data_mut().direct_call = true;
        let outcome = match input {
            BatchInput::Borrowed(func, input) => {
                borrowed_batch(&func).call(&mut self.store, (input,))
            }
            BatchInput::Owned(func, input) => func.call(&mut self.store, (input,)),
            BatchInput::Packed {
                func,
                count,
                bytes,
                answer_every,
            } => {
                let outcome =
                    packed_batch(func).call(&mut self.store, (count, &bytes, answer_every));
                self.packed_bytes = bytes;
                outcome
            }
        };
        self.store.data_mut().direct_call = false;
        Some(self.batch_run(outcome, grouped))
    }

    /// Calls `handle-messages` on a fiber; see [`Self::call_yielding`].
    pub(crate) async fn call_batch_yielding(
        &mut self,
        messages: &[spop::Message],
        share: std::time::Duration,
        answer_every: u32,
    ) -> BatchRun {
        let Some(export) = self.batch else {
            return BatchRun {
                answers: Vec::new(),
                stop: BatchStop::Failed(GuestFailure::Instantiate(
                    "the component has no batch export".into(),
                )),
                asked_to_return: false,
                grouped: false,
            };
        };
        let grouped = self.holds_answers(messages.len(), answer_every);
        let input = self.start_batch(export, messages, true, share, answer_every);
        self.store.data_mut().call_started = std::time::Instant::now();
        let outcome = match input {
            BatchInput::Borrowed(func, input) => {
                borrowed_batch(&func)
                    .call_async(&mut self.store, (input,))
                    .await
            }
            BatchInput::Owned(func, input) => func.call_async(&mut self.store, (input,)).await,
            BatchInput::Packed {
                func,
                count,
                bytes,
                answer_every,
            } => {
                let outcome = packed_batch(func)
                    .call_async(&mut self.store, (count, &bytes, answer_every))
                    .await;
                self.packed_bytes = bytes;
                outcome
            }
        };
        if let Ok(mut slot) = self.store.data().long_call_slot.lock() {
            slot.take();
        }
        self.batch_run(outcome, grouped)
    }

    fn batch_run(&mut self, outcome: wasmtime::Result<()>, grouped: bool) -> BatchRun {
        let (answers, asked_to_return) = self.store.data_mut().batch.finish();
        let stop = match outcome {
            Ok(()) => BatchStop::Returned,
            Err(_) if self.was_cut_for_fiber() => BatchStop::CutForFiber,
            Err(err) => BatchStop::Failed(classify(&self.store, err)),
        };
        BatchRun {
            answers,
            stop,
            asked_to_return,
            grouped,
        }
    }

    /// Whether a batch of `messages` given `answer_every` lets the guest
    /// hold answers back (a packed batch answered in groups).
    pub(crate) fn holds_answers(&self, messages: usize, answer_every: u32) -> bool {
        matches!(self.batch, Some(BatchExport::Packed(_))) && answer_every > 1 && messages > 1
    }

    /// What the wall-clock watchdog of a batch call on a fiber reads.
    pub(crate) fn batch_progress(&self) -> super::batch::Progress {
        self.store.data().batch.progress.clone()
    }

    /// Resets the per-call state for a batch of `messages` and lowers them.
    fn start_batch<'a>(
        &mut self,
        export: BatchExport,
        messages: &'a [spop::Message],
        on_fiber: bool,
        share: std::time::Duration,
        answer_every: u32,
    ) -> BatchInput<'a> {
        self.calls += messages.len() as u64;
        start_call(&mut self.store);
        self.store
            .data_mut()
            .batch
            .start(messages.len(), on_fiber, share);
        match export {
            BatchExport::Packed(func) => {
                let mut bytes = std::mem::take(&mut self.packed_bytes);
                pack_messages(messages, &mut bytes);
                let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
                BatchInput::Packed {
                    func,
                    count,
                    bytes,
                    answer_every: answer_every.clamp(1, count.max(1)),
                }
            }
            BatchExport::Typed {
                func,
                borrows: true,
            } => BatchInput::typed(func, messages),
            BatchExport::Typed {
                func,
                borrows: false,
            } => BatchInput::Owned(func, messages.iter().map(message_to_wit).collect()),
        }
    }

    /// The answers a batch call gave before it was abandoned (its future
    /// dropped at the wall-clock bound).
    pub(crate) fn take_batch_answers(&mut self) -> Vec<Result<Vec<spop::Action>, GuestFailure>> {
        self.store.data_mut().batch.finish().0
    }

    fn outcome(
        &self,
        outcome: wasmtime::Result<Result<Vec<wit::Action>, String>>,
    ) -> Result<Vec<spop::Action>, GuestFailure> {
        match outcome {
            Ok(Ok(actions)) => actions_from_wit(actions).map_err(GuestFailure::InvalidOutput),
            Ok(Err(reason)) => Err(GuestFailure::Returned(
                truncated(&reason, MAX_REASON_BYTES).to_owned(),
            )),
            Err(err) => Err(classify(&self.store, err)),
        }
    }
}

/// What an `init` call may take: its epoch ticks, and the wall-clock budget
/// its store calls are held to.
struct InitBudget {
    ticks: u64,
    timeout: std::time::Duration,
}

/// Calls the guest's `init` on a fiber, under the init deadline instead of
/// the per-message one (the epoch ticks, and the store calls' budget).
async fn run_init(
    store: &mut Store<GuestState>,
    instance: &wasmtime::component::Instance,
    init: &wasmtime::component::ComponentExportIndex,
    budget: InitBudget,
) -> Result<(), GuestFailure> {
    let failed = |failure: GuestFailure| GuestFailure::Init(failure.to_string());
    let func = instance
        .get_typed_func::<(), (Result<(), String>,)>(&mut *store, init)
        .map_err(|err| GuestFailure::Init(format!("`init` has the wrong type: {err:#}")))?;
    start_call(store);
    let state = store.data_mut();
    let per_message = (state.deadline_ticks, state.call_timeout);
    state.deadline_ticks = budget.ticks;
    state.call_timeout = budget.timeout;
    state.call_started = std::time::Instant::now();
    let outcome = func.call_async(&mut *store, ()).await;
    let state = store.data_mut();
    (state.deadline_ticks, state.call_timeout) = per_message;
    if let Ok(mut slot) = store.data().long_call_slot.lock() {
        slot.take();
    }
    match outcome {
        Ok((Ok(()),)) => Ok(()),
        Ok((Err(reason),)) => Err(GuestFailure::Init(
            truncated(&reason, MAX_REASON_BYTES).to_owned(),
        )),
        Err(err) => Err(match classify(store, err) {
            GuestFailure::Timeout => {
                GuestFailure::Init("it ran past its time limit (--guest-init-timeout)".into())
            }
            other => failed(other),
        }),
    }
}

/// Resets the per-call state a call starts with.
fn start_call(store: &mut Store<GuestState>) {
    let state = store.data_mut();
    state.ticks_seen = 0;
    state.ticks_used = 0;
    state.log.start_call();
    store.set_epoch_deadline(1);
}

fn classify(store: &Store<GuestState>, err: wasmtime::Error) -> GuestFailure {
    if store.data().memory_exceeded {
        return GuestFailure::MemoryExceeded;
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return GuestFailure::Exit(exit.0);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestFailure::Timeout,
        Some(trap) => GuestFailure::Trap(trap.to_string()),
        None => GuestFailure::Trap(truncated(&format!("{err:#}"), MAX_REASON_BYTES).to_owned()),
    }
}

#[cfg(test)]
mod tick_tests {
    use super::{AtTick, at_tick};

    /// Runs ticks until the decision is not to go on; returns the decisions.
    fn ticks(deadline: u64, direct: bool, pace: u64) -> Vec<AtTick> {
        let (mut seen, mut used) = (0, 0);
        let mut decisions = Vec::new();
        loop {
            let decision = at_tick(&mut seen, &mut used, deadline, direct, || pace);
            decisions.push(decision);
            if decision != AtTick::Continue && decision != AtTick::YieldOrWaitForSlot {
                return decisions;
            }
            assert!(decisions.len() < 100, "never stopped");
        }
    }

    #[test]
    fn a_direct_call_is_cut_at_its_second_tick_whatever_its_budget() {
        for deadline in [1, 2, 20] {
            assert_eq!(
                ticks(deadline, true, 4),
                [AtTick::Continue, AtTick::CutForFiber]
            );
        }
    }

    #[test]
    fn a_fiber_call_yields_at_each_tick_until_its_budget_is_used() {
        // 20 ticks at the fast pace: the first counts one, each later one.
        let decisions = ticks(20, false, 1);
        assert_eq!(decisions.len(), 20);
        assert!(
            decisions[..19]
                .iter()
                .all(|d| *d == AtTick::YieldOrWaitForSlot)
        );
        assert_eq!(decisions[19], AtTick::Interrupt);
    }

    #[test]
    fn a_slow_tick_charges_the_ticks_it_lasted() {
        // At the slow pace (4 ticks each), a 20-tick budget lasts 1 + 4 × 5.
        let decisions = ticks(20, false, 4);
        assert_eq!(decisions.len(), 6, "{decisions:?}");
        assert_eq!(decisions.last(), Some(&AtTick::Interrupt));
    }

    #[test]
    fn a_budget_of_one_tick_ends_at_the_first() {
        assert_eq!(ticks(1, false, 1), [AtTick::Interrupt]);
    }
}
