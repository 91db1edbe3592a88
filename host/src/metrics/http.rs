//! A minimal, read-only HTTP/1.x endpoint: `GET /metrics` for Prometheus
//! scrapes and `GET /status` (JSON: what each guest runs now).
//!
//! Deliberately tiny (one request per connection, no keep-alive): two
//! read-only pages do not justify an HTTP stack in the agent's dependency
//! tree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::planes::ControlPlane;

const MAX_REQUEST: usize = 8192;

/// Serves both pages on the control plane: a scrape or a status request is
/// answered even while every guest is busy.
pub async fn spawn(
    control: &ControlPlane,
    address: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = {
        let _on_control = control.enter();
        TcpListener::bind(address)
    }
    .await
    .with_context(|| format!("binding the metrics address {address}"))?;
    tracing::info!(%address, "metrics at http://{address}/metrics, status at /status");
    let plane = control.clone();
    control.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            if let Ok((stream, _)) = accepted {
                let metrics = metrics.clone();
                plane.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), respond(stream, &metrics))
                        .await;
                });
            }
        }
    });
    Ok(())
}

async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = match requested_path(line) {
        Some("/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        Some("/status") => (
            "200 OK",
            "application/json",
            // Plain data: serializing it cannot fail.
            serde_json::to_string_pretty(&metrics.status_report()).unwrap_or_default() + "\n",
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /status\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The path of a `GET` request line (`GET /status HTTP/1.1`), without its
/// query; `None` for any other method.
fn requested_path(line: &[u8]) -> Option<&str> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if parts.next()? != "GET" {
        return None;
    }
    let target = parts.next()?;
    Some(target.split('?').next().unwrap_or(target))
}

#[cfg(test)]
mod tests {
    use super::requested_path;

    #[test]
    fn request_lines_name_their_path() {
        assert_eq!(requested_path(b"GET /status HTTP/1.1"), Some("/status"));
        assert_eq!(requested_path(b"GET /metrics"), Some("/metrics"));
        assert_eq!(
            requested_path(b"GET /metrics?x=1 HTTP/1.0"),
            Some("/metrics")
        );
        assert_eq!(requested_path(b"POST /status HTTP/1.1"), None);
        assert_eq!(requested_path(b"\xff"), None);
    }
}
