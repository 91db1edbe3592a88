//! spoa-host: an SPOP agent host that runs SPOE message handlers as sandboxed
//! WebAssembly components.
//!
//! Data flows one way: bytes → [`spop::Frame`] → [`agent`] turns NOTIFY
//! frames into batches of messages → a [`agent::Handler`]: the
//! [`guests::router`] sends each message to the guest that declares it,
//! whose [`exec`]utor runs it on the data plane through the [`sandbox`] →
//! actions → ACK → bytes. The control plane (accept, TLS handshakes, HELLO,
//! health checks, `/metrics` and `/status`) never runs guest code.
//!
//! The folders, lowest first; each imports only folders above it in this
//! list (no cycles):
//! - [`spop`]: the protocol (frames, typed data, the codec); nothing else.
//! - [`kv`], [`tables`]: the state guests share (key-value buckets, IP tables).
//! - [`net`]: listeners, TLS, allow-lists: byte streams and peers.
//! - [`sandbox`]: wasmtime, WASI and the host's imports; calls one guest.
//! - [`metrics`]: the Prometheus series, the status report, and the
//!   `/metrics` and `/status` endpoint.
//! - [`agent`]: a connection's SPOP life, and the [`agent::Handler`] trait.
//! - [`record`]: a sampled share of live messages and their answers, to
//!   rotating JSON-lines files (`--record`).
//! - [`exec`]: one guest's executor and failure policy (a `Handler`).
//! - [`settings`]: the command line and the `--config` file, as specs.
//! - [`guests`]: starting guests, reloading modules and `--config`, routing.
//! - [`cmd`]: the commands (serve, check, call, haproxy-config, status): the
//!   top.
//!
//! [`planes`] (the two runtimes as types), [`watch`] (file and SIGHUP
//! triggers) and [`realtime`] (thread priority) are leaves any layer may
//! use.

pub mod agent;
pub mod cmd;
pub mod exec;
pub mod guests;
pub mod kv;
pub mod metrics;
#[cfg(feature = "native-iprep")]
pub mod native;
pub mod net;
pub mod planes;
pub mod realtime;
pub mod record;
pub mod sandbox;
pub mod settings;
pub mod spop;
pub mod tables;
pub mod watch;

/// Helpers for the unit tests of every layer.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, Instant};

    /// Polls `condition` for up to `limit`: a loaded machine may delay
    /// what the test waits for, never forever.
    pub(crate) fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        condition()
    }
}
