//! spoa-host: an SPOP agent host that runs SPOE message handlers as sandboxed
//! WebAssembly components.
//!
//! Data flows one way: bytes → [`spop::Frame`] → [`agent`] turns a NOTIFY into
//! messages → [`sandbox`] calls the guest → actions → ACK → bytes.

pub mod agent;
pub mod cli;
pub mod metrics;
pub mod metrics_http;
pub mod reload;
pub mod run;
pub mod sandbox;
pub mod server;
pub mod spop;
