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

/// The same world with a synchronous `handle-message`, for components that
/// import nothing that can wait in the host (no WASI): a synchronous call
/// skips the fiber an async call needs (≈0.3 µs of a ≈1 µs call). Such a
/// call cannot yield; its deadline still holds.
pub mod blocking {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit",
        with: {
            "spoa:agent/types": super::spoa::agent::types,
            "spoa:agent/random": super::spoa::agent::random,
            "spoa:agent/log": super::spoa::agent::log,
            "wasi:config/store": super::wasi::config::store,
        },
    });
}
