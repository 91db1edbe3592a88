//! The per-connection state machine.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use super::handler::HandlerSlot;
use super::hello::{Negotiated, agent_hello, negotiate};
use crate::metrics::{Metrics, NotifyTally};
use crate::spop::codec::encode_frame;
use crate::spop::{DecodeError, Frame, KvList, SpopCodec, Status};

/// Per-connection settings from the command line.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The agent's own max-frame-size; the negotiated one is never larger.
    pub max_frame_size: u32,
    /// A peer must complete HELLO within this time.
    pub hello_timeout: Duration,
    /// Close a connection with no traffic for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// See [`Dispatcher::error_var`].
    pub error_var: Option<Bytes>,
}

/// What every connection shares.
pub struct AgentContext {
    pub handler: Arc<HandlerSlot>,
    pub metrics: Arc<Metrics>,
    pub settings: ConnectionSettings,
}

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// EOF or reset from the peer: a normal end (HAProxy 3.1+ closes without
    /// DISCONNECT; health checks close right after AGENT-HELLO).
    PeerClosed {
        unfinished_frame: bool,
    },
    /// HAPROXY-DISCONNECT: answer with AGENT-DISCONNECT and close.
    PeerDisconnect(KvList),
    /// The agent ends the connection with this status.
    Disconnect(Status, String),
    /// A health-check HELLO was answered.
    HealthcheckDone,
    /// The agent is shutting down.
    Shutdown,
    Io(io::Error),
}

/// How long and how much to drain after our DISCONNECT before closing, so the
/// peer reads the frame instead of a TCP reset caused by unread input.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// Keep at least this much free space when reading.
const READ_RESERVE: usize = 4096;
/// Guest calls run on the worker thread. After this much NOTIFY work the
/// connection flushes and yields, so the worker polls I/O and other
/// connections wait at most one guest call, never a whole pipelined batch.
const WORK_BEFORE_YIELD: Duration = Duration::from_millis(1);

/// What processing the read buffer left to do.
enum Step {
    /// Every whole frame was handled; wait for more bytes.
    NeedInput,
    /// Frames remain but this turn's budget is spent.
    Yield,
    /// The connection must end.
    End(End),
}

/// Serves one accepted connection until it ends.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<AgentContext>,
    shutdown: CancellationToken,
) {
    ctx.metrics.connections_total.inc();
    ctx.metrics.connections_current.inc();
    let mut connection = Connection {
        codec: SpopCodec::new(ctx.settings.max_frame_size),
        stream,
        peer,
        read_buf: BytesMut::with_capacity(READ_RESERVE),
        write_buf: BytesMut::new(),
        ctx,
    };
    let end = connection.session(&shutdown).await;
    connection.finish(end).await;
    connection.ctx.metrics.connections_current.dec();
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    codec: SpopCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    ctx: Arc<AgentContext>,
}

/// What one read attempt produced.
enum ReadOutcome {
    Data,
    Closed,
    Failed(io::Error),
}

impl Connection {
    async fn session(&mut self, shutdown: &CancellationToken) -> End {
        let hello_timeout = self.ctx.settings.hello_timeout;
        let negotiated = match timeout(hello_timeout, self.handshake(shutdown)).await {
            Err(_) => {
                return End::Disconnect(
                    Status::Timeout,
                    format!("no HELLO within {hello_timeout:?}"),
                );
            }
            Ok(Err(end)) => return end,
            Ok(Ok(negotiated)) => negotiated,
        };
        tracing::debug!(peer = %self.peer, ?negotiated, "HELLO negotiated");
        self.codec.set_max_frame_size(negotiated.max_frame_size);
        encode_frame(
            &Frame::AgentHello(agent_hello(&negotiated)),
            &mut self.write_buf,
        );
        self.ctx
            .metrics
            .frames_sent(crate::spop::FrameType::AgentHello, 1);
        if let Err(err) = self.flush().await {
            return End::Io(err);
        }
        if negotiated.healthcheck {
            return End::HealthcheckDone;
        }
        self.serve_notifies(&negotiated, shutdown).await
    }

    /// Reads the first frame, which must be HAPROXY-HELLO.
    async fn handshake(&mut self, shutdown: &CancellationToken) -> Result<Negotiated, End> {
        let frame = loop {
            match self.codec.next_frame_bytes(&mut self.read_buf) {
                Ok(Some(body)) => break Frame::decode(body.freeze()).map_err(decode_end)?,
                Ok(None) => {}
                Err(err) => return Err(decode_end(err)),
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                outcome = self.read_more() => match outcome {
                    ReadOutcome::Data => {}
                    ReadOutcome::Closed => return Err(self.closed_end()),
                    ReadOutcome::Failed(err) => return Err(End::Io(err)),
                },
            }
        };
        self.ctx.metrics.frame_received(frame.frame_type());
        match frame {
            Frame::HaproxyHello(hello) => negotiate(&hello, self.ctx.settings.max_frame_size)
                .map_err(|status| End::Disconnect(status, "HAPROXY-HELLO refused".into())),
            Frame::HaproxyDisconnect(kv) => Err(End::PeerDisconnect(kv)),
            other => Err(End::Disconnect(
                Status::InvalidFrame,
                format!("{} before HAPROXY-HELLO", other.frame_type().name()),
            )),
        }
    }

    async fn serve_notifies(
        &mut self,
        negotiated: &Negotiated,
        shutdown: &CancellationToken,
    ) -> End {
        loop {
            let step = self.process_buffered(negotiated);
            if let Err(err) = self.flush().await {
                return End::Io(err);
            }
            match step {
                Step::NeedInput => {}
                Step::Yield => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Step::End(end) => return end,
            }
            let idle = self.ctx.settings.idle_timeout;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // Answer what the kernel already holds for us, then leave.
                    self.read_ready_without_waiting();
                    return self.process_all(negotiated).await.unwrap_or(End::Shutdown);
                }
                outcome = read_with_idle_timeout(&mut self.stream, &mut self.read_buf, idle) => {
                    match outcome {
                        Some(ReadOutcome::Data) => {}
                        Some(ReadOutcome::Closed) => {
                            // Frames completed by the last read are still owed an answer.
                            let stop = self.process_all(negotiated).await;
                            return stop.unwrap_or_else(|| self.closed_end());
                        }
                        Some(ReadOutcome::Failed(err)) => return End::Io(err),
                        None => return End::Disconnect(Status::Timeout, "idle timeout".into()),
                    }
                }
            }
        }
    }

    /// Handles and answers every whole frame in the read buffer, yielding
    /// between turns. Returns how the connection must end, if it must.
    async fn process_all(&mut self, negotiated: &Negotiated) -> Option<End> {
        loop {
            let step = self.process_buffered(negotiated);
            if let Err(err) = self.flush().await {
                return Some(End::Io(err));
            }
            match step {
                Step::NeedInput => return None,
                Step::Yield => tokio::task::yield_now().await,
                Step::End(end) => return Some(end),
            }
        }
    }

    /// Handles whole frames from the read buffer, appending answers to the
    /// write buffer, until the buffer holds no whole frame or the turn's
    /// budget is spent.
    fn process_buffered(&mut self, negotiated: &Negotiated) -> Step {
        let mut tally = NotifyTally::default();
        let step = self.process_buffered_counting(negotiated, &mut tally);
        self.ctx.metrics.record_notify_batch(&tally);
        step
    }

    fn process_buffered_counting(
        &mut self,
        negotiated: &Negotiated,
        tally: &mut NotifyTally,
    ) -> Step {
        let started = std::time::Instant::now();
        let handler = self.ctx.handler.current();
        let dispatcher = Dispatcher {
            metrics: &self.ctx.metrics,
            error_var: self.ctx.settings.error_var.as_ref(),
        };
        loop {
            let body = match self.codec.next_frame_bytes(&mut self.read_buf) {
                Ok(Some(body)) => body,
                Ok(None) => return Step::NeedInput,
                Err(err) => return Step::End(decode_end(err)),
            };
            let frame = match Frame::decode(body.freeze()) {
                Ok(frame) => frame,
                Err(err) => return Step::End(decode_end(err)),
            };
            // NOTIFY frames are counted in the batch tally.
            if !matches!(frame, Frame::Notify(_)) {
                self.ctx.metrics.frame_received(frame.frame_type());
            }
            match frame {
                Frame::Notify(notify) => {
                    dispatcher.answer(
                        &handler,
                        notify,
                        negotiated.max_frame_size,
                        &mut self.write_buf,
                        tally,
                    );
                    if started.elapsed() >= WORK_BEFORE_YIELD {
                        return Step::Yield;
                    }
                }
                Frame::HaproxyDisconnect(kv) => return Step::End(End::PeerDisconnect(kv)),
                Frame::HaproxyHello(_) => {
                    return Step::End(End::Disconnect(
                        Status::InvalidFrame,
                        "HAPROXY-HELLO after the handshake".into(),
                    ));
                }
                other => {
                    return Step::End(End::Disconnect(
                        Status::InvalidFrame,
                        format!("{} frame sent to the agent", other.frame_type().name()),
                    ));
                }
            }
        }
    }

    async fn read_more(&mut self) -> ReadOutcome {
        reserve(&mut self.read_buf);
        match self.stream.read_buf(&mut self.read_buf).await {
            Ok(0) => ReadOutcome::Closed,
            Ok(_) => ReadOutcome::Data,
            Err(err) => ReadOutcome::Failed(err),
        }
    }

    fn read_ready_without_waiting(&mut self) {
        loop {
            reserve(&mut self.read_buf);
            match self.stream.try_read_buf(&mut self.read_buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn closed_end(&self) -> End {
        End::PeerClosed {
            unfinished_frame: !self.read_buf.is_empty(),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        result
    }

    async fn finish(&mut self, end: End) {
        let peer = self.peer;
        match end {
            End::PeerClosed { unfinished_frame } => {
                tracing::debug!(%peer, unfinished_frame, "peer closed the connection");
            }
            End::HealthcheckDone => {
                tracing::debug!(%peer, "health check answered");
                let _ = self.stream.shutdown().await;
            }
            End::Io(err) if is_disconnection(&err) => {
                tracing::debug!(%peer, "connection ended: {err}");
            }
            End::Io(err) => tracing::warn!(%peer, "I/O error: {err}"),
            End::PeerDisconnect(kv) => {
                let status = kv
                    .get("status-code")
                    .and_then(|v| v.as_u64())
                    .unwrap_or_default();
                let message = kv
                    .get_str("message")
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default();
                tracing::debug!(%peer, status, message, "HAPROXY-DISCONNECT received");
                self.disconnect(Status::Normal, Status::Normal.message())
                    .await;
            }
            End::Shutdown => {
                tracing::debug!(%peer, "closing for shutdown");
                self.disconnect(Status::Normal, "agent is shutting down")
                    .await;
            }
            End::Disconnect(status, reason) => {
                if status == Status::Timeout {
                    tracing::info!(%peer, %status, "{reason}");
                } else {
                    tracing::warn!(%peer, %status, "closing connection: {reason}");
                }
                self.disconnect(status, status.message()).await;
            }
        }
    }

    /// Sends AGENT-DISCONNECT, half-closes, and drains briefly so the peer
    /// gets the frame rather than a reset.
    async fn disconnect(&mut self, status: Status, message: &str) {
        encode_frame(
            &Frame::AgentDisconnect(KvList::disconnect(status, message)),
            &mut self.write_buf,
        );
        self.ctx.metrics.disconnect_sent(status);
        if self.flush().await.is_err() {
            return;
        }
        let _ = self.stream.shutdown().await;
        linger(&mut self.stream).await;
    }
}

fn decode_end(err: DecodeError) -> End {
    End::Disconnect(err.status(), err.to_string())
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_RESERVE / 4 {
        buf.reserve(READ_RESERVE);
    }
}

async fn read_with_idle_timeout(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    idle: Option<Duration>,
) -> Option<ReadOutcome> {
    reserve(buf);
    let read = stream.read_buf(buf);
    let result = match idle {
        Some(limit) => timeout(limit, read).await.ok()?,
        None => read.await,
    };
    Some(match result {
        Ok(0) => ReadOutcome::Closed,
        Ok(_) => ReadOutcome::Data,
        Err(err) => ReadOutcome::Failed(err),
    })
}

/// Reads and discards until EOF, a byte budget, or a short time limit.
pub async fn linger(stream: &mut TcpStream) {
    let mut scratch = [0u8; 4096];
    let mut drained = 0usize;
    let _ = timeout(LINGER_TIME, async {
        while drained < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Errors that mean "the peer went away": normal for SPOP, not worth a warning.
fn is_disconnection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}
