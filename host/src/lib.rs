//! spoa-host: an SPOP agent host that runs SPOE message handlers as sandboxed
//! WebAssembly components.
//!
//! Data flows one way: bytes → [`spop::Frame`] → [`agent`] turns NOTIFY
//! frames into batches of messages → a [`agent::Handler`]: the [`exec`]utor
//! runs them on the guest threads through the [`sandbox`] → actions → ACK →
//! bytes. The network threads never run guest code.

pub mod agent;
pub mod call;
pub mod cli;
pub mod exec;
pub mod metrics;
pub mod metrics_http;
#[cfg(feature = "native-iprep")]
pub mod native;
pub mod reload;
pub mod run;
pub mod sandbox;
pub mod server;
pub mod spop;
