//! spoa-host: an SPOP agent host that runs SPOE message handlers as sandboxed
//! WebAssembly components.
//!
//! Data flows one way: bytes → [`spop::Frame`] → [`agent`] turns NOTIFY
//! frames into batches of messages → a [`agent::Handler`]: the [`router`]
//! sends each message to the guest that declares it, whose [`exec`]utor
//! runs it on the data plane through the [`sandbox`] → actions → ACK →
//! bytes. The control plane (accept, HELLO, health checks) never runs guest
//! code. [`config`] reads `--config`; [`guests`] starts and reloads guests.

pub mod agent;
pub mod call;
pub mod cli;
pub mod config;
pub mod exec;
pub mod guests;
pub mod haproxy_config;
pub mod kv;
pub mod metrics;
pub mod metrics_http;
#[cfg(feature = "native-iprep")]
pub mod native;
pub mod net;
pub mod realtime;
pub mod reload;
pub mod router;
pub mod run;
pub mod sandbox;
pub mod server;
pub mod spop;
pub mod tables;
pub mod watch;
