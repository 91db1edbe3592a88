//! Host-side bindings generated from `wit/` — the one place the WIT world is
//! named, so the rest of the sandbox uses plain Rust types.
//!
//! `handle-message` is called asynchronously: a call that runs long yields at
//! every epoch tick, so other calls on the same data-plane thread get their turn,
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

/// The imports of this package (and its WIT dependencies) that can wait in
/// the host: the ones the `imports` above make `async`. A component that
/// imports one of them (or WASI but `wasi:config`, whose host functions are
/// async in wasmtime-wasi) is always called on a fiber; see
/// [`import_can_wait`]. A test holds this table and the macro's to each other.
pub const IMPORTS_THAT_WAIT: &[&str] = &["wasi:keyvalue", "spoa:agent/expiry"];

/// Whether a call into the import `name` can wait in the host, and so needs
/// a fiber: configuration, randomness, logging and IP tables answer at once.
pub fn import_can_wait(name: &str) -> bool {
    always_waits(name) || (name.starts_with("wasi:") && !name.starts_with("wasi:config/"))
}

/// Whether a component importing `name` runs every call on a fiber: the
/// store's calls are what a guest imports it for. A WASI import that can
/// wait does not put every call on a fiber: see [`super::direct`].
pub fn always_waits(name: &str) -> bool {
    IMPORTS_THAT_WAIT
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

pub use batch_import::spoa::agent::{batch, packed};
pub use spoa::agent::expiry;
pub use spoa::agent::ip_table;
pub use spoa::agent::log::Level;
pub use spoa::agent::metrics as guest_metrics;
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
                use spoa:agent/types@0.1.6.{message, action};
                export handle-message: func(msg: message) -> result<list<action>, string>;
            }
        ",
        with: { "spoa:agent/types": super::spoa::agent::types },
    });

    pub use HandlerExport as Handler;
    pub use HandlerExportIndices as HandlerIndices;
}

/// The `batch` (0.1.4) and `packed` (0.1.6) interfaces, linked beside the
/// `handler` world's imports: a component of `handler-with-batch` or
/// `handler-with-packed-batch` imports them, one of an older world does not.
pub mod batch_import {
    wasmtime::component::bindgen!({
        world: "spoa:host-batch/imports",
        path: "../wit",
        inline: "
            package spoa:host-batch;

            world imports {
                import spoa:agent/batch@0.1.6;
                import spoa:agent/packed@0.1.6;
            }
        ",
        // An answer out of turn traps the guest.
        imports: { default: trappable },
        with: { "spoa:agent/types": super::spoa::agent::types },
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interfaces the bindgen invocation above makes `async`, read from
    /// this file's source.
    fn async_in_bindgen() -> Vec<String> {
        let source = include_str!("bindings.rs");
        let start = source.find("imports: {").expect("the imports block");
        let block = &source[start..start + source[start..].find("},").expect("its end")];
        block
            .lines()
            .filter(|line| line.contains("async"))
            .filter_map(|line| line.split('"').nth(1).map(str::to_owned))
            .collect()
    }

    #[test]
    fn the_async_imports_and_the_table_of_waiting_imports_agree() {
        let mut from_macro = async_in_bindgen();
        from_macro.sort();
        let mut table: Vec<String> = IMPORTS_THAT_WAIT.iter().map(|s| s.to_string()).collect();
        table.sort();
        assert_eq!(from_macro, table);
    }

    #[test]
    fn what_can_wait() {
        for name in [
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft",
            "spoa:agent/expiry@0.1.2",
            "wasi:clocks/monotonic-clock@0.2.6",
            "wasi:io/poll@0.2.0",
        ] {
            assert!(import_can_wait(name), "{name}");
        }
        for name in [
            "wasi:config/store@0.2.0-rc.1",
            "spoa:agent/random@0.1.0",
            "spoa:agent/log@0.1.3",
            "spoa:agent/ip-table@0.1.3",
            "spoa:agent/types@0.1.3",
            "spoa:agent/batch@0.1.4",
            "spoa:agent/metrics@0.1.5",
            "spoa:agent/packed@0.1.6",
        ] {
            assert!(!import_can_wait(name), "{name}");
        }
    }
}
