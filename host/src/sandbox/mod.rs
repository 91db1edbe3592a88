//! The WebAssembly sandbox: compiles and validates handler components, runs
//! `handle-message` under CPU and memory limits, and turns guest output into
//! SPOP actions. Knows nothing of sockets.

mod bindings;
mod convert;
mod engine;
mod instance;
mod module;
mod state;

pub use engine::{InstanceMode, Sandbox, SandboxConfig};
pub use instance::GuestFailure;
pub use module::{LoadedModule, ModuleIdentity};
