//! WASI 0.2 for guests, deny by default: what the standard toolchains import
//! links, and grants nothing the operator did not give.
//!
//! | capability | what a guest gets |
//! |---|---|
//! | environment, arguments | none |
//! | stdin | empty |
//! | stdout, stderr | each line becomes a log record (same limits as `log`) |
//! | clocks | real (frozen at the message's time with `--deterministic`) |
//! | random | the host's OS-seeded generators (seeded per message with `--deterministic`) |
//! | TCP, UDP, name lookup | every call fails; no socket is opened |
//! | outgoing HTTP | every request fails with an error; nothing is sent |
//! | filesystem | nothing, or `/data` read-only with `--guest-data` |
//! | `exit` | the call fails (kind `trap`) and the instance is discarded |

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use tokio::io::AsyncWrite;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpHooks;

use super::determinism::{Determinism, FrozenClock, SeededRandom};
use super::log::{GuestLog, Level};
use super::state::GuestState;

/// Where `--guest-data` appears inside the guest.
pub const DATA_MOUNT: &str = "/data";

/// Adds WASI 0.2 (every `0.2.x` import resolves by semver) and `wasi:http`'s
/// client interfaces, which componentize-js imports by default.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI 0.2")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        .map_err(anyhow::Error::from)
        .context("linking wasi:http")?;
    Ok(())
}

/// The WASI context of one instance: nothing but log streams and, if
/// granted, the read-only data directory.
pub fn instance_ctx(
    log: &Arc<GuestLog>,
    data_dir: Option<&Path>,
    determinism: Option<&Arc<Determinism>>,
) -> Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    if let Some(seeded) = determinism {
        builder
            .secure_random(SeededRandom(seeded.clone()))
            .insecure_random(SeededRandom(seeded.clone()))
            .insecure_random_seed(u128::from(seeded.next_u64()))
            .wall_clock(FrozenClock(seeded.clone()))
            .monotonic_clock(FrozenClock(seeded.clone()));
    }
    builder
        .stdout(LogStream::new(log.clone(), Level::Info))
        .stderr(LogStream::new(log.clone(), Level::Warn))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if let Some(dir) = data_dir {
        builder
            .preopened_dir(dir, DATA_MOUNT, FsPerms::ReadOnly)
            .map_err(|err| {
                anyhow::anyhow!(
                    "opening the guest data directory {}: {err:#}",
                    dir.display()
                )
            })?;
    }
    Ok(builder.build())
}

type HttpResult<T> = std::result::Result<T, wasmtime_wasi_http::Error>;

/// Refuses every outgoing HTTP request before any connection is made.
pub struct DenyHttp;

impl WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = HttpResult<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = HttpResult<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = HttpResult<()>> + Send>,
                )>,
            > + Send,
    > {
        tracing::debug!(target: "guest", uri = %request.uri(), "outgoing HTTP request refused");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A guest's stdout or stderr: complete lines become log records.
#[derive(Clone)]
struct LogStream {
    log: Arc<GuestLog>,
    level: Level,
    /// The unfinished line, shared by every handle WASI opens on the stream.
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    fn new(log: Arc<GuestLog>, level: Level) -> LogStream {
        LogStream {
            log,
            level,
            pending: Arc::default(),
        }
    }

    fn write_bytes(&self, mut bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&bytes[..end]);
            self.emit(&mut pending);
            bytes = &bytes[end + 1..];
        }
        pending.extend_from_slice(bytes);
        // A line that never ends is logged in pieces, never buffered forever.
        if pending.len() >= super::log::MAX_LOG_BYTES {
            self.emit(&mut pending);
        }
    }

    fn emit(&self, pending: &mut Vec<u8>) {
        let line = String::from_utf8_lossy(pending);
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            self.log.record(self.level, line);
        }
        pending.clear();
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
