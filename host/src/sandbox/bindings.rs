//! Host-side bindings generated from `wit/` — the one place the WIT world is
//! named, so the rest of the sandbox uses plain Rust types.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
});

pub use spoa::agent::log::Level;
pub use spoa::agent::types as wit;
