//! Host-side bindings generated from `wit/` — the one place the WIT world is
//! named, so the rest of the sandbox uses plain Rust types.
//!
//! `handle-message` is called asynchronously: a call that runs long yields at
//! every epoch tick, so other calls on the same guest thread get their turn,
//! and WASI calls that wait (a clock, a stream) never block a thread.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    exports: { default: async },
});

pub use spoa::agent::log::Level;
pub use spoa::agent::types as wit;
pub use wasi::config::store as config_store;
