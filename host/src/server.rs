//! The listener: accepts connections up to `--max-connections`, refuses the
//! rest cleanly, and drains every connection on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentContext, disconnect_and_close, serve_connection};
use crate::spop::Status;

pub struct ServerSettings {
    pub max_connections: usize,
    /// How long shutdown waits for connections to finish before abandoning them.
    pub drain_timeout: Duration,
}

/// Accepts until `shutdown` fires, then waits for connections to drain.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<AgentContext>,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    serve_connection(stream, peer, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                ctx.metrics.connections_refused.inc();
                ctx.metrics.disconnect_sent(Status::ResourceAllocation);
                tracing::warn!(%peer, max = settings.max_connections, "connection refused: --max-connections reached");
                tracker.spawn(async move {
                    let mut stream = stream;
                    disconnect_and_close(
                        &mut stream,
                        bytes::BytesMut::new(),
                        Status::ResourceAllocation,
                        "too many connections",
                    )
                    .await;
                });
            }
        }
    }
    drop(listener);
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
