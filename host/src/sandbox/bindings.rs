//! Host-side bindings generated from `wit/` — the one place the WIT world is
//! named, so the rest of the sandbox uses plain Rust types.
//!
//! `handle-message` is called asynchronously: a call that runs long yields at
//! every epoch tick, so other calls on the same guest thread get their turn,
//! and WASI calls that wait (a clock, a stream, a key-value store) never
//! block a thread.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: {
        // A store call may wait on the network (Redis); the table lookups
        // of a bucket handle can fail, which traps.
        "wasi:keyvalue": async | trappable,
        "spoa:agent/expiry": async | trappable,
        // Lookups never wait; a bad table handle traps.
        "spoa:agent/ip-table": trappable,
    },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": super::kv::Bucket,
        "spoa:agent/ip-table.table": super::tables::OpenTable,
    },
});

pub use spoa::agent::expiry;
pub use spoa::agent::ip_table;
pub use spoa::agent::log::Level;
pub use spoa::agent::types as wit;
pub use wasi::config::store as config_store;
pub use wasi::keyvalue::{atomics as kv_atomics, batch as kv_batch, store as kv_store};

/// The same world with a synchronous `handle-message`, for components that
/// import nothing that can wait in the host (no WASI): a synchronous call
/// skips the fiber an async call needs (≈0.3 µs of a ≈1 µs call). Such a
/// call cannot yield; its deadline still holds.
pub mod blocking {
    // Only the export: the imports are linked once, by the world above (an
    // async host function cannot be linked for a synchronous world).
    wasmtime::component::bindgen!({
        world: "spoa:blocking/handler-export",
        path: "../wit",
        inline: "
            package spoa:blocking;

            world handler-export {
                use spoa:agent/types@0.1.3.{message, action};
                export handle-message: func(msg: message) -> result<list<action>, string>;
            }
        ",
        with: { "spoa:agent/types": super::spoa::agent::types },
    });

    pub use HandlerExport as Handler;
    pub use HandlerExportIndices as HandlerIndices;
}
