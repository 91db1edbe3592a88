//! The listeners: accepts connections — refusing sources outside
//! `--allow-from` before reading a byte, and peers that fail the TLS
//! handshake — up to `--max-connections`, refuses the rest cleanly, and
//! drains every connection on shutdown.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentContext, disconnect_and_close, serve_connection};
use crate::metrics::RefusalReason;
use crate::net::{Accepted, AllowList, Listeners, MovableTcp, Peer, TlsServer, Transport};
use crate::spop::Status;

/// Refused addresses logged once each, up to this many.
const MAX_LOGGED_REFUSALS: usize = 1024;

pub struct ServerSettings {
    pub max_connections: usize,
    /// How long shutdown waits for connections to finish before abandoning them.
    pub drain_timeout: Duration,
    /// TCP sources allowed to connect (empty: all).
    pub allow: AllowList,
    /// TLS on the TCP listener.
    pub tls: Option<Arc<TlsServer>>,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
}

/// Logs each refused address once (at debug level), bounded.
#[derive(Default)]
struct RefusalLog {
    seen: Mutex<HashSet<(IpAddr, RefusalReason)>>,
}

impl RefusalLog {
    fn first_time(&self, address: IpAddr, reason: RefusalReason) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.len() < MAX_LOGGED_REFUSALS && seen.insert((address, reason))
    }
}

/// Accepts until `shutdown` fires, then waits for connections to drain.
pub async fn serve(
    listeners: Listeners,
    ctx: Arc<AgentContext>,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Arc::new(RefusalLog::default());
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listeners.accept() => accepted,
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match &accepted {
            Accepted::Tcp(stream, address) => {
                if !settings.allow.allows(address.ip()) {
                    ctx.metrics.connection_refused(RefusalReason::AllowList);
                    if refusals.first_time(address.ip(), RefusalReason::AllowList) {
                        tracing::debug!(peer = %address, "connection refused: source not in --allow-from");
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                Peer::Tcp(*address)
            }
            Accepted::Unix(_) => Peer::Unix,
        };
        let stream = accepted;
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                ctx.metrics
                    .connection_refused(RefusalReason::MaxConnections);
                tracing::warn!(%peer, max = settings.max_connections, "connection refused: --max-connections reached");
                if settings.tls.is_some() && matches!(stream, Accepted::Tcp(..)) {
                    // A TLS peer could not read a plaintext DISCONNECT.
                    drop(stream);
                } else {
                    ctx.metrics.disconnect_sent(Status::ResourceAllocation);
                    tracker.spawn(refuse_busy(stream));
                }
                continue;
            }
        };
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        match (stream, &settings.tls) {
            (Accepted::Tcp(stream, address), Some(tls)) => {
                let tls = tls.clone();
                let refusals = refusals.clone();
                let timeout = settings.handshake_timeout;
                tracker.spawn(async move {
                    serve_tls(stream, address, tls, timeout, refusals, ctx, shutdown).await;
                    drop(permit);
                });
            }
            (Accepted::Tcp(stream, _), None) => {
                tracker.spawn(async move {
                    serve_connection(Transport::Tcp(stream), peer, ctx, shutdown).await;
                    drop(permit);
                });
            }
            (Accepted::Unix(stream), _) => {
                tracker.spawn(async move {
                    serve_connection(Transport::Unix(stream), peer, ctx, shutdown).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listeners);
    tracker.close();
    tracing::info!(connections = tracker.len(), "draining connections");
    if tokio::time::timeout(settings.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "drain timeout reached; closing remaining connections"
        );
    }
}

async fn refuse_busy(stream: Accepted) {
    let message = "too many connections";
    let status = Status::ResourceAllocation;
    match stream {
        Accepted::Tcp(mut stream, _) => {
            disconnect_and_close(&mut stream, bytes::BytesMut::new(), status, message).await
        }
        Accepted::Unix(mut stream) => {
            disconnect_and_close(&mut stream, bytes::BytesMut::new(), status, message).await
        }
    }
}

/// The TLS handshake runs here, on the control plane, as the HELLO and
/// health checks that follow it do, so no guest can delay them; the session
/// then moves to the data plane with its socket (`MovableTcp`), exactly as
/// a plain connection does. A peer that fails it (plain TCP, no client
/// certificate, one from another CA) is closed without a guest ever being
/// called.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    address: SocketAddr,
    tls: Arc<TlsServer>,
    timeout: Duration,
    refusals: Arc<RefusalLog>,
    ctx: Arc<AgentContext>,
    shutdown: CancellationToken,
) {
    let refused = |why: String, explained: Option<String>| {
        ctx.metrics.connection_refused(RefusalReason::Tls);
        if !refusals.first_time(address.ip(), RefusalReason::Tls) {
            return;
        }
        // A certificate the operator must fix is a warning (HAProxy marks
        // the agent DOWN and says nothing of why); the rest is noise.
        match explained {
            Some(what_to_do) => {
                tracing::warn!(peer = %address, "TLS handshake refused: {what_to_do} ({why})")
            }
            None => tracing::debug!(peer = %address, "TLS handshake refused: {why}"),
        }
    };
    let acceptor = tls.acceptor();
    match tokio::time::timeout(timeout, acceptor.accept(MovableTcp::new(stream))).await {
        Ok(Ok(session)) => {
            serve_connection(
                Transport::Tls(Box::new(session)),
                Peer::Tcp(address),
                ctx.clone(),
                shutdown,
            )
            .await
        }
        Ok(Err(err)) => refused(err.to_string(), crate::net::explain_tls_refusal(&err)),
        Err(_) => refused(format!("no handshake within {timeout:?}"), None),
    }
}
