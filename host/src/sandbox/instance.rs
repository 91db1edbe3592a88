//! Running `handle-message`: instance reuse per worker thread (or a fresh
//! instance per message), deadlines, and classification of guest failures.

use std::cell::RefCell;

use wasmtime::{Store, Trap};

use super::bindings::Handler;
use super::convert::{actions_from_wit, message_to_wit};
use super::engine::InstanceMode;
use super::module::LoadedModule;
use super::state::GuestState;
use crate::spop;

/// Why a message got no actions from the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFailure {
    #[error("guest exceeded its time budget")]
    Timeout,
    #[error("guest exceeded its memory cap")]
    MemoryExceeded,
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest returned an error: {0}")]
    Returned(String),
    #[error("guest returned invalid output: {0}")]
    InvalidOutput(String),
    #[error("guest could not be instantiated: {0}")]
    Instantiate(String),
}

impl GuestFailure {
    /// A short stable name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GuestFailure::Timeout => "timeout",
            GuestFailure::MemoryExceeded => "memory",
            GuestFailure::Trap(_) => "trap",
            GuestFailure::Returned(_) => "error",
            GuestFailure::InvalidOutput(_) => "invalid_output",
            GuestFailure::Instantiate(_) => "instantiate",
        }
    }

    /// Whether the instance must be thrown away: after a trap its state is
    /// unknown (and wasmtime refuses to re-enter it).
    fn poisons_instance(&self) -> bool {
        matches!(
            self,
            GuestFailure::Timeout
                | GuestFailure::MemoryExceeded
                | GuestFailure::Trap(_)
                | GuestFailure::Instantiate(_)
        )
    }
}

/// One instantiated guest with its store.
pub(crate) struct GuestInstance {
    generation: u64,
    store: Store<GuestState>,
    bindings: Handler,
}

impl GuestInstance {
    pub(crate) fn new(module: &LoadedModule) -> anyhow::Result<GuestInstance> {
        let state = GuestState::new(module.label.clone(), module.sandbox.config.memory_cap);
        let mut store = Store::new(&module.sandbox.engine, state);
        store.limiter(|state| state);
        // Instantiation runs guest start code: it is held to the deadline too.
        store.set_epoch_deadline(module.sandbox.deadline_ticks);
        let bindings = module.pre.instantiate(&mut store)?;
        Ok(GuestInstance {
            generation: module.generation,
            store,
            bindings,
        })
    }

    pub(crate) fn call(
        &mut self,
        module: &LoadedModule,
        message: &spop::Message,
    ) -> Result<Vec<spop::Action>, GuestFailure> {
        let input = message_to_wit(message);
        self.store.set_epoch_deadline(module.sandbox.deadline_ticks);
        self.store.data_mut().log_lines_this_call = 0;
        match self.bindings.call_handle_message(&mut self.store, &input) {
            Ok(Ok(actions)) => actions_from_wit(actions).map_err(GuestFailure::InvalidOutput),
            Ok(Err(reason)) => Err(GuestFailure::Returned(truncate(reason))),
            Err(err) => Err(self.classify(err)),
        }
    }

    fn classify(&self, err: wasmtime::Error) -> GuestFailure {
        if self.store.data().memory_exceeded {
            return GuestFailure::MemoryExceeded;
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => GuestFailure::Timeout,
            Some(trap) => GuestFailure::Trap(trap.to_string()),
            None => GuestFailure::Trap(truncate(format!("{err:#}"))),
        }
    }
}

fn truncate(mut text: String) -> String {
    const MAX: usize = 512;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

thread_local! {
    /// The reused instance of this worker thread. Borrowed only for the
    /// duration of one synchronous call, never across an `.await`.
    static CACHED: RefCell<Option<GuestInstance>> = const { RefCell::new(None) };
}

impl LoadedModule {
    /// Runs `handle-message` for one message and returns its validated actions.
    pub fn handle(&self, message: &spop::Message) -> Result<Vec<spop::Action>, GuestFailure> {
        match self.sandbox.config.instance_mode {
            InstanceMode::Fresh => GuestInstance::new(self)
                .map_err(|err| GuestFailure::Instantiate(format!("{err:#}")))?
                .call(self, message),
            InstanceMode::Reuse => CACHED.with(|cell| {
                let mut slot = cell.borrow_mut();
                let cached = match slot.take() {
                    Some(instance) if instance.generation == self.generation => instance,
                    _ => GuestInstance::new(self)
                        .map_err(|err| GuestFailure::Instantiate(format!("{err:#}")))?,
                };
                let mut instance = cached;
                let result = instance.call(self, message);
                let keep = !matches!(&result, Err(failure) if failure.poisons_instance());
                if keep {
                    *slot = Some(instance);
                }
                result
            }),
        }
    }
}
