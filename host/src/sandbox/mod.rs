//! The WebAssembly sandbox: compiles and validates handler components, runs
//! `handle-message` under CPU and memory limits with WASI granted nothing but
//! what the operator gives (configuration, a read-only data directory), and
//! turns guest output into SPOP actions. Knows nothing of sockets.

mod batch;
mod bindings;
mod borrowed;
mod cache;
mod convert;
mod counters;
pub mod determinism;
mod direct;
mod engine;
mod grants;
mod instance;
mod kv;
mod log;
mod module;
mod packed;
mod state;
mod tables;
mod ticker;
mod wasi;

pub use counters::{CounterGrants, CounterSource, GuestCounters, check_counter_name};
pub use engine::{InstanceMode, Sandbox, SandboxConfig};
pub use grants::{GrantSources, parse_pair};
pub use instance::GuestFailure;
pub use module::{
    BatchAnswered, GuestSettings, LoadError, LoadFailureCause, LoadedModule, ModuleIdentity,
    sha256_hex,
};
pub use state::GuestConfig;
pub use wasi::DATA_MOUNT;
