//! The handler currently serving messages, swappable while traffic flows.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::sandbox::{GuestFailure, LoadedModule};
use crate::spop;

/// What answers messages.
pub enum Handler {
    /// A sandboxed WebAssembly component (the product).
    Wasm(Arc<LoadedModule>),
    /// The IP-reputation logic compiled natively, for measuring what the
    /// sandbox costs (`--native-iprep`). Same algorithm as `guest-iprep`.
    NativeIprep,
}

impl Handler {
    pub fn handle(&self, message: &spop::Message) -> Result<Vec<spop::Action>, GuestFailure> {
        match self {
            Handler::Wasm(module) => module.handle(message),
            Handler::NativeIprep => Ok(native_iprep(message)),
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Handler::Wasm(module) => module.label(),
            Handler::NativeIprep => "native-iprep",
        }
    }
}

/// The guest's algorithm (see `guest-iprep`): `check-client-ip` gets
/// `sess.ip_score` in 0..=100 by multiply-shift of a random u64.
fn native_iprep(message: &spop::Message) -> Vec<spop::Action> {
    if &message.name[..] != b"check-client-ip" {
        return Vec::new();
    }
    let random: u64 = rand::random();
    let score = ((u128::from(random) * 101) >> 64) as i32;
    vec![spop::Action::SetVar {
        scope: spop::VarScope::Sess,
        name: bytes::Bytes::from_static(b"ip_score"),
        value: spop::TypedData::Int32(score),
    }]
}

/// The active handler. Reading it is one atomic load; replacing it never
/// disturbs a NOTIFY already being handled (that NOTIFY keeps its `Arc`).
pub struct HandlerSlot {
    current: ArcSwap<Handler>,
}

impl HandlerSlot {
    pub fn new(handler: Handler) -> HandlerSlot {
        HandlerSlot {
            current: ArcSwap::from_pointee(handler),
        }
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<Handler>> {
        self.current.load()
    }

    pub fn replace(&self, handler: Handler) {
        self.current.store(Arc::new(handler));
    }
}
