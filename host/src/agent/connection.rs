//! The per-connection state machine, in two phases on two runtimes:
//!
//! - the control plane accepts, reads HAPROXY-HELLO, answers health checks
//!   and refusals. It never runs a guest, so a guest never delays them.
//! - once HELLO is done, the connection moves to the data plane (its socket
//!   re-registered with the data plane's reactor): NOTIFY frames go to the
//!   [`Handler`] as one batch per read burst, answered on the same thread,
//!   with no hand-off between threads per message. Asked to (see
//!   `planes::balance`), it moves to another data-plane thread the same
//!   way, between two read bursts, with no batch of its own unanswered.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::dispatch::{self, NotifyBatch, Outbox};
use super::handler::Handler;
use super::hello::{Negotiated, agent_hello, negotiate};
use crate::metrics::Metrics;
use crate::net::Detached;
use crate::net::{Peer, Transport};
use crate::planes::{DataPlane, Seat};
use crate::spop::codec::encode_frame;
use crate::spop::{DecodeError, Disconnect, Frame, FrameType, KvList, SpopCodec, Status};

/// Per-connection settings from the command line.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The agent's own max-frame-size; the negotiated one is never larger.
    pub max_frame_size: u32,
    /// A peer must complete HELLO within this time.
    pub hello_timeout: Duration,
    /// Close a connection with no traffic for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
}

/// What every connection shares.
#[derive(Clone)]
pub struct AgentContext {
    pub handler: Arc<dyn Handler>,
    /// The runtime established connections (and their guest calls) run on.
    pub data_plane: DataPlane,
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
    PeerDisconnect(Disconnect),
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
/// Most NOTIFY frames taken from the read buffer at once: a huge burst is
/// answered in slices, so its first ACKs do not wait for its last messages.
const MAX_BATCH: usize = 256;
/// Most batches of one connection answered at once; past it the connection
/// stops reading until one is done.
const MAX_IN_FLIGHT: usize = 32;

type AnswerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The answer to `batch`, its ACKs encoded into `outbox`, owning all it
/// needs so it can continue as a task of its own.
fn answer_batch(
    ctx: Arc<AgentContext>,
    batch: NotifyBatch,
    max_frame_size: u32,
    outbox: Arc<Outbox>,
) -> AnswerFuture {
    Box::pin(async move {
        dispatch::answer(&*ctx.handler, batch, max_frame_size, &outbox).await;
    })
}

/// A batch that had to wait (a call running past its first tick, a full
/// permit queue, a guest waiting in the host), continuing as a task of its
/// own while the connection reads and answers its other batches.
struct SpawnedBatch {
    parts: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Future for SpawnedBatch {
    /// The batch's parts, or `Err` when its task failed (its NOTIFYs cannot
    /// be answered: the connection ends).
    type Output = Result<u64, End>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let parts = self.parts;
        Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| match joined {
                Ok(()) => Ok(parts),
                Err(err) => Err(End::Disconnect(
                    Status::Unknown,
                    format!("answering a batch failed: {err}"),
                )),
            })
    }
}

/// What decoding the read buffer found after the NOTIFY frames it batched.
enum Next {
    /// No whole frame left: read more.
    NeedInput,
    /// The batch is full; more frames are buffered.
    MoreBuffered,
    /// The connection must end (after answering the batch).
    End(End),
}

/// Why [`Connection::serve_notifies`] returned.
enum Served {
    Ended(End),
    /// Asked to move to this data-plane shard, with nothing in flight.
    Moving(usize),
}

/// Tells the accepting task that the connection ended, wherever it was
/// served last; dropped unsent, the task serving it failed.
struct Ended(tokio::sync::oneshot::Sender<()>);

/// What one read attempt produced.
enum ReadOutcome {
    Data,
    Closed,
    Failed(io::Error),
    IdleTimeout,
}

/// Serves one accepted connection until it ends. Runs on the control plane;
/// after HELLO the connection continues on the data plane, and this task
/// waits for it (so the listener's drain and connection limit see it).
pub async fn serve_connection(
    stream: Transport,
    peer: Peer,
    ctx: Arc<AgentContext>,
    shutdown: CancellationToken,
) {
    let metrics = ctx.metrics.clone();
    metrics.connections_total.inc();
    metrics.connections_current.inc();
    let mut connection = Connection {
        stream,
        state: ConnectionState {
            codec: SpopCodec::new(ctx.settings.max_frame_size),
            peer: peer.clone(),
            read_buf: BytesMut::with_capacity(READ_RESERVE),
            write_buf: BytesMut::new(),
            ctx,
            waiting_parts: 0,
            outbox: Arc::default(),
            batches: Vec::new(),
        },
    };
    match connection.handshake_phase(&shutdown).await {
        Ok(negotiated) => match connection.into_data_plane(negotiated, shutdown) {
            Ok(ended) => {
                if ended.await.is_err() {
                    tracing::error!(%peer, "connection task failed");
                }
            }
            Err(err) => {
                tracing::warn!(%peer, "could not move the connection to the data plane: {err}")
            }
        },
        Err(end) => connection.finish(end).await,
    }
    metrics.connections_current.dec();
}

struct Connection {
    stream: Transport,
    state: ConnectionState,
}

/// What a connection keeps from one data-plane shard to the next.
struct OnShard {
    negotiated: Negotiated,
    shutdown: CancellationToken,
    ended: Ended,
}

impl OnShard {
    /// Serves the connection on the shard `seat` is on, until it ends or
    /// moves on (boxed: a move starts this again on the next shard).
    fn serve(
        self,
        detached: Detached,
        state: ConnectionState,
        seat: Seat,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let stream = match detached.attach() {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(peer = %state.peer, "could not register the connection: {err}");
                    let _ = self.ended.0.send(());
                    return;
                }
            };
            let mut connection = Connection { stream, state };
            match connection
                .serve_notifies(&self.negotiated, &self.shutdown, &seat)
                .await
            {
                Served::Ended(end) => {
                    connection.finish(end).await;
                    let _ = self.ended.0.send(());
                }
                Served::Moving(shard) => {
                    let Connection { stream, state } = connection;
                    match stream.detach() {
                        Ok(detached) => {
                            tracing::trace!(peer = %state.peer, shard, "connection moves to another worker");
                            seat.move_to(shard, move |seat| self.serve(detached, state, seat));
                        }
                        Err(err) => {
                            tracing::warn!(peer = %state.peer, "could not move the connection: {err}");
                            let _ = self.ended.0.send(());
                        }
                    }
                }
            }
        })
    }
}

/// Everything of a connection but its socket: what moves with it from the
/// control plane to the data plane.
struct ConnectionState {
    peer: Peer,
    codec: SpopCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    ctx: Arc<AgentContext>,
    /// Handler parts whose last batch had to wait: their next batches start
    /// as tasks of their own rather than on this connection's task.
    waiting_parts: u64,
    /// Where its batches encode their ACKs, each as soon as its NOTIFY is
    /// answered.
    outbox: Arc<Outbox>,
    /// The batches of one read burst, kept for its allocation.
    batches: Vec<NotifyBatch>,
}

impl Connection {
    /// HELLO, and the health check if it is one. `Ok` once the connection is
    /// established for NOTIFY frames.
    async fn handshake_phase(&mut self, shutdown: &CancellationToken) -> Result<Negotiated, End> {
        let hello_timeout = self.state.ctx.settings.hello_timeout;
        let negotiated = match timeout(hello_timeout, self.handshake(shutdown)).await {
            Err(_) => {
                return Err(End::Disconnect(
                    Status::Timeout,
                    format!("no HELLO within {hello_timeout:?}"),
                ));
            }
            Ok(Err(end)) => return Err(end),
            Ok(Ok(negotiated)) => negotiated,
        };
        tracing::debug!(peer = %self.state.peer, ?negotiated, "HELLO negotiated");
        self.state
            .codec
            .set_max_frame_size(negotiated.max_frame_size);
        encode_control(
            &Frame::AgentHello(agent_hello(&negotiated)),
            &mut self.state.write_buf,
        );
        self.state.ctx.metrics.frames_sent(FrameType::AgentHello, 1);
        if let Err(err) = self.flush().await {
            return Err(End::Io(err));
        }
        if negotiated.healthcheck {
            return Err(End::HealthcheckDone);
        }
        Ok(negotiated)
    }

    /// Moves the connection, with whatever it already buffered, to a task on
    /// the data plane, its socket registered with that runtime's reactor so
    /// its readiness never goes through the control plane. The receiver
    /// hears when it ends.
    fn into_data_plane(
        self,
        negotiated: Negotiated,
        shutdown: CancellationToken,
    ) -> io::Result<tokio::sync::oneshot::Receiver<()>> {
        let Connection { stream, mut state } = self;
        // A copy of its own: every batch holds a reference, and a count
        // shared by every connection would bounce between the cores.
        state.ctx = Arc::new((*state.ctx).clone());
        let detached = stream.detach()?;
        let (ended, on_end) = tokio::sync::oneshot::channel();
        let on_shard = OnShard {
            negotiated,
            shutdown,
            ended: Ended(ended),
        };
        let data_plane = state.ctx.data_plane.clone();
        data_plane.spawn_connection(move |seat| on_shard.serve(detached, state, seat));
        Ok(on_end)
    }

    /// Reads the first frame, which must be HAPROXY-HELLO.
    async fn handshake(&mut self, shutdown: &CancellationToken) -> Result<Negotiated, End> {
        let frame = loop {
            match self.state.codec.next_frame_bytes(&mut self.state.read_buf) {
                Ok(Some(body)) => break Frame::decode(body.freeze()).map_err(decode_end)?,
                Ok(None) => {}
                Err(err) => return Err(decode_end(err)),
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                outcome = self.read_more(None) => {
                    if let Some(end) = self.read_end(outcome) {
                        return Err(end);
                    }
                }
            }
        };
        self.state.ctx.metrics.frame_received(frame.frame_type());
        match frame {
            Frame::HaproxyHello(hello) => negotiate(&hello, self.state.ctx.settings.max_frame_size)
                .map_err(|status| End::Disconnect(status, "HAPROXY-HELLO refused".into())),
            Frame::HaproxyDisconnect(kv) => Err(End::PeerDisconnect(Disconnect::parse(&kv))),
            other => Err(End::Disconnect(
                Status::InvalidFrame,
                format!("{} before HAPROXY-HELLO", other.frame_type().name()),
            )),
        }
    }

    /// Reads NOTIFY frames and answers them until the connection ends.
    ///
    /// Each batch is polled once right away: a batch of fast guests completes
    /// then (no task, no hand-off), and its ACKs are written at once. A batch
    /// that has to wait continues as a task of its own, and the next batches
    /// of the same guests start as tasks directly, until one completes at
    /// once again: a guest running to its deadline delays only the NOTIFYs
    /// that wait for it (SPOP lets ACKs leave in any order with pipelining).
    async fn serve_notifies(
        &mut self,
        negotiated: &Negotiated,
        shutdown: &CancellationToken,
        seat: &Seat,
    ) -> Served {
        let mut in_flight = FuturesUnordered::new();
        let outbox = self.state.outbox.clone();
        // Asked to move: the connection reads nothing more until its
        // batches are answered, then moves between two bursts.
        let mut moving_to = None;
        let end = loop {
            if let Some(end) = self.dispatch_buffered(negotiated, &mut in_flight) {
                break end;
            }
            if let Err(err) = self.flush().await {
                break End::Io(err);
            }
            if moving_to.is_none() && !shutdown.is_cancelled() {
                moving_to = seat.claim_move();
            }
            // Every batch answered and its ACKs written: what the
            // connection holds is its state, which moves with it.
            if let Some(shard) = moving_to
                && in_flight.is_empty()
            {
                return Served::Moving(shard);
            }
            let idle = if in_flight.is_empty() {
                self.state.ctx.settings.idle_timeout
            } else {
                None
            };
            let can_read = in_flight.len() < MAX_IN_FLIGHT && moving_to.is_none();
            tokio::select! {
                biased;
                Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(end) = self.write_spawned(answered, &in_flight).await {
                        break end;
                    }
                }
                _ = outbox.ready() => self.take_acks(),
                _ = shutdown.cancelled() => {
                    // Answer what the kernel already holds for us, then leave.
                    // A connection just moved to the data plane has no
                    // readiness yet: one yield lets the runtime's I/O driver
                    // see what arrived before the read that does not wait.
                    tokio::task::yield_now().await;
                    self.read_ready_without_waiting();
                    break End::Shutdown;
                }
                outcome = self.read_more(idle), if can_read => {
                    if let Some(end) = self.read_end(outcome) {
                        break end;
                    }
                }
            }
        };
        // Every NOTIFY already accepted is answered before the connection
        // ends; after a peer's DISCONNECT or a protocol error nothing past it
        // is read.
        let answer_rest = matches!(end, End::Shutdown | End::PeerClosed { .. });
        loop {
            if answer_rest {
                let _ = self.dispatch_buffered(negotiated, &mut in_flight);
            }
            if self.flush().await.is_err() {
                // The peer is gone; the remaining answers have nowhere to go,
                // but their calls still finish (and are counted).
                while in_flight.next().await.is_some() {}
                break;
            }
            if in_flight.is_empty() {
                break;
            }
            tokio::select! {
                // A batch whose task failed loses its own NOTIFYs only: the
                // others are still answered (the loop's flush writes them).
                Some(answered) = in_flight.next() => {
                    self.take_acks();
                    if let Err(End::Disconnect(_, reason)) = answered {
                        tracing::error!(peer = %self.state.peer, "{reason}");
                    }
                }
                _ = outbox.ready() => self.take_acks(),
            }
        }
        Served::Ended(end)
    }

    /// Answers every whole frame in the read buffer, grouped by the handler
    /// parts their messages go to, while fewer than [`MAX_IN_FLIGHT`]
    /// batches wait. ACKs of batches that complete at once go to the write
    /// buffer. Returns how the connection must end, if a frame says so.
    fn dispatch_buffered(
        &mut self,
        negotiated: &Negotiated,
        in_flight: &mut FuturesUnordered<SpawnedBatch>,
    ) -> Option<End> {
        while in_flight.len() < MAX_IN_FLIGHT {
            let mut batches = std::mem::take(&mut self.state.batches);
            let next = self.take_batches(&mut batches);
            for batch in batches.drain(..) {
                let parts = batch.parts;
                let mut answer = answer_batch(
                    self.state.ctx.clone(),
                    batch,
                    negotiated.max_frame_size,
                    self.state.outbox.clone(),
                );
                if parts & self.state.waiting_parts == 0 {
                    // A future registers the waker of its latest poll, so a
                    // batch first polled with a no-op waker is woken
                    // correctly once its task polls it again.
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    let polled = answer.as_mut().poll(&mut cx);
                    // What it answered before it had to wait goes out now.
                    self.take_acks();
                    if polled.is_ready() {
                        self.state.waiting_parts &= !parts;
                        continue;
                    }
                }
                self.state.waiting_parts |= parts;
                in_flight.push(SpawnedBatch {
                    parts,
                    task: self.state.ctx.data_plane.spawn(answer),
                });
            }
            self.state.batches = batches;
            match next {
                Next::NeedInput => return None,
                Next::MoreBuffered => {}
                Next::End(end) => return Some(end),
            }
        }
        None
    }

    /// Moves the ACKs the batches have encoded to the write buffer.
    fn take_acks(&mut self) {
        let tally = self.state.outbox.take_into(&mut self.state.write_buf);
        self.state.ctx.metrics.record_notify_batch(&tally);
    }

    /// Writes the ACKs of a batch that ran as a task of its own. Once no
    /// batch of its parts is waiting any more, their next batch is tried at
    /// once again.
    async fn write_spawned(
        &mut self,
        answered: Result<u64, End>,
        in_flight: &FuturesUnordered<SpawnedBatch>,
    ) -> Result<(), End> {
        // What a batch encoded before its task failed still goes out.
        self.take_acks();
        let parts = answered?;
        if !in_flight.iter().any(|batch| batch.parts & parts != 0) {
            self.state.waiting_parts &= !parts;
        }
        self.flush().await.map_err(End::Io)
    }

    /// Decodes whole frames from the read buffer into `batches` (one per
    /// partition set) until the buffer holds no whole frame, [`MAX_BATCH`]
    /// NOTIFYs are taken, or a frame ends the connection.
    fn take_batches(&mut self, batches: &mut Vec<NotifyBatch>) -> Next {
        let mut taken = 0;
        while taken < MAX_BATCH {
            let body = match self.state.codec.next_frame_bytes(&mut self.state.read_buf) {
                Ok(Some(body)) => body,
                Ok(None) => return Next::NeedInput,
                Err(err) => return Next::End(decode_end(err)),
            };
            let frame = match Frame::decode(body.freeze()) {
                Ok(frame) => frame,
                Err(err) => return Next::End(decode_end(err)),
            };
            // NOTIFY frames are counted in the batch tally.
            if !matches!(frame, Frame::Notify(_)) {
                self.state.ctx.metrics.frame_received(frame.frame_type());
            }
            match frame {
                Frame::Notify(notify) => {
                    let parts = NotifyBatch::parts_of(&*self.state.ctx.handler, &notify);
                    let index = match batches.iter().position(|b| b.parts == parts) {
                        Some(index) => index,
                        None => {
                            batches.push(NotifyBatch::new(parts));
                            batches.len() - 1
                        }
                    };
                    batches[index].push(notify);
                    taken += 1;
                }
                Frame::HaproxyDisconnect(kv) => {
                    return Next::End(End::PeerDisconnect(Disconnect::parse(&kv)));
                }
                Frame::HaproxyHello(_) => {
                    return Next::End(End::Disconnect(
                        Status::InvalidFrame,
                        "HAPROXY-HELLO after the handshake".into(),
                    ));
                }
                other => {
                    return Next::End(End::Disconnect(
                        Status::InvalidFrame,
                        format!("{} frame sent to the agent", other.frame_type().name()),
                    ));
                }
            }
        }
        Next::MoreBuffered
    }

    /// One read into the buffer, bounded by `idle` when given.
    async fn read_more(&mut self, idle: Option<Duration>) -> ReadOutcome {
        reserve(&mut self.state.read_buf);
        let read = self.stream.read_buf(&mut self.state.read_buf);
        let result = match idle {
            Some(limit) => match timeout(limit, read).await {
                Ok(result) => result,
                Err(_) => return ReadOutcome::IdleTimeout,
            },
            None => read.await,
        };
        match result {
            Ok(0) => ReadOutcome::Closed,
            Ok(_) => ReadOutcome::Data,
            Err(err) => ReadOutcome::Failed(err),
        }
    }

    /// How a read outcome ends the connection, if it does.
    fn read_end(&self, outcome: ReadOutcome) -> Option<End> {
        match outcome {
            ReadOutcome::Data => None,
            ReadOutcome::Closed => Some(End::PeerClosed {
                unfinished_frame: !self.state.read_buf.is_empty(),
            }),
            ReadOutcome::Failed(err) => Some(End::Io(err)),
            ReadOutcome::IdleTimeout => {
                Some(End::Disconnect(Status::Timeout, "idle timeout".into()))
            }
        }
    }

    /// Takes what the kernel already holds, bounded: a peer that keeps
    /// sending during the drain cannot keep the task reading.
    fn read_ready_without_waiting(&mut self) {
        let limit =
            self.state.read_buf.len() + MAX_BATCH * self.state.codec.max_frame_size() as usize;
        while self.state.read_buf.len() < limit {
            reserve(&mut self.state.read_buf);
            match self.stream.try_read_buf(&mut self.state.read_buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.state.write_buf.is_empty() {
            return Ok(());
        }
        let mut result = self.stream.write_all(&self.state.write_buf).await;
        if result.is_ok() {
            // TLS buffers records: flushing pushes them to the socket (a
            // no-op for TCP and Unix streams).
            result = self.stream.flush().await;
        }
        self.state.write_buf.clear();
        result
    }

    async fn finish(&mut self, end: End) {
        let peer = self.state.peer.clone();
        let (status, message) = match end {
            End::PeerClosed { unfinished_frame } => {
                tracing::debug!(%peer, unfinished_frame, "peer closed the connection");
                return;
            }
            End::HealthcheckDone => {
                tracing::debug!(%peer, "health check answered");
                let _ = self.stream.shutdown().await;
                return;
            }
            End::Io(err) if is_disconnection(&err) => {
                tracing::debug!(%peer, "connection ended: {err}");
                return;
            }
            End::Io(err) => {
                tracing::warn!(%peer, "I/O error: {err}");
                return;
            }
            End::PeerDisconnect(disconnect) => {
                tracing::debug!(
                    %peer,
                    status = ?disconnect.status_code,
                    message = %disconnect.message,
                    "HAPROXY-DISCONNECT received"
                );
                (Status::Normal, Status::Normal.message())
            }
            End::Shutdown => {
                tracing::debug!(%peer, "closing for shutdown");
                (Status::Normal, "agent is shutting down")
            }
            End::Disconnect(status, reason) => {
                if status == Status::Timeout {
                    tracing::info!(%peer, %status, "{reason}");
                } else {
                    tracing::warn!(%peer, %status, "closing connection: {reason}");
                }
                (status, status.message())
            }
        };
        self.state.ctx.metrics.disconnect_sent(status);
        let pending = std::mem::take(&mut self.state.write_buf);
        disconnect_and_close(&mut self.stream, pending, status, message).await;
    }
}

/// Sends whatever is `pending` plus AGENT-DISCONNECT with `status`,
/// half-closes, and drains briefly so the peer reads the frame rather than a
/// reset caused by unread input. Bounded in time: a peer that reads nothing
/// cannot hold the task.
pub async fn disconnect_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mut pending: BytesMut,
    status: Status,
    message: &str,
) {
    encode_control(
        &Frame::AgentDisconnect(KvList::disconnect(status, message)),
        &mut pending,
    );
    let sent = timeout(LINGER_TIME * 2, async {
        stream.write_all(&pending).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
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

/// Encodes an AGENT-HELLO or AGENT-DISCONNECT, which carry no messages and
/// so always encode.
fn encode_control(frame: &Frame, out: &mut BytesMut) {
    if let Err(err) = encode_frame(frame, out) {
        tracing::error!("could not encode {}: {err}", frame.frame_type().name());
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::{Read, Write};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::ThreadId;

    use bytes::Bytes;

    use super::*;
    use crate::agent::{AnswerSink, Batch, BatchFuture};
    use crate::planes::start_data_plane;
    use crate::spop::{Action, Arg, Message, Notify, TypedData, VarScope};

    /// Answers each message with the number it carries, every third batch
    /// after a wait (so it continues as a task of its own, in flight when a
    /// move is asked for), noting the threads that answered.
    #[derive(Default)]
    struct Echo {
        batches: std::sync::atomic::AtomicUsize,
        threads: Mutex<HashSet<ThreadId>>,
    }

    impl Handler for Echo {
        fn handle_batch<'a>(
            &'a self,
            messages: Batch<'a>,
            answers: AnswerSink<'a>,
        ) -> BatchFuture<'a> {
            let waits = self.batches.fetch_add(1, Ordering::Relaxed) % 3 == 2;
            Box::pin(async move {
                if waits {
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
                let thread = std::thread::current().id();
                self.threads.lock().expect("not poisoned").insert(thread);
                for message in messages {
                    let value = message
                        .args
                        .first()
                        .map_or(TypedData::Null, |arg| arg.value.clone());
                    let action = Action::SetVar {
                        scope: VarScope::Txn,
                        name: Bytes::from_static(b"n"),
                        value,
                    };
                    answers.answered("echo", Ok(vec![action]));
                }
            })
        }
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out).expect("encodes");
        out.to_vec()
    }

    fn notify(number: u64) -> Frame {
        Frame::Notify(Notify {
            stream_id: number,
            frame_id: 1,
            messages: vec![Message {
                name: Bytes::from_static(b"m"),
                args: vec![Arg {
                    name: Bytes::from_static(b"n"),
                    value: TypedData::Uint64(number),
                }],
            }],
        })
    }

    /// Reads frames from `stream` until `count` have come.
    fn read_frames(
        stream: &mut std::net::TcpStream,
        buf: &mut BytesMut,
        count: usize,
    ) -> Vec<Frame> {
        let codec = SpopCodec::new(16380);
        let mut frames = Vec::new();
        let mut chunk = [0u8; 16384];
        while frames.len() < count {
            match codec.next_frame_bytes(buf).expect("a valid frame") {
                Some(body) => frames.push(Frame::decode(body.freeze()).expect("decodes")),
                None => {
                    let read = stream.read(&mut chunk).expect("the agent answers");
                    assert_ne!(read, 0, "the agent closed after {} frames", frames.len());
                    buf.extend_from_slice(&chunk[..read]);
                }
            }
        }
        frames
    }

    #[test]
    fn a_connection_moved_between_shards_again_and_again_answers_every_notify() {
        let threads = start_data_plane(2, false).expect("data plane");
        let plane = threads.plane();
        let control = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("control plane");
        let echo = Arc::new(Echo::default());
        let ctx = Arc::new(AgentContext {
            handler: echo.clone(),
            data_plane: plane.clone(),
            metrics: Arc::new(Metrics::new()),
            settings: ConnectionSettings {
                max_frame_size: 16380,
                hello_timeout: Duration::from_secs(5),
                idle_timeout: None,
            },
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("its address");
        let shutdown = CancellationToken::new();
        let served = control.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("registered");
            let (stream, peer) = listener.accept().await.expect("accepted");
            serve_connection(Transport::Tcp(stream), Peer::Tcp(peer), ctx, shutdown).await;
        });

        // Asks for a move to the other shard every 100 µs, whatever the
        // connection is doing.
        let stop = Arc::new(AtomicBool::new(false));
        let mover = {
            let (stop, plane) = (stop.clone(), plane.clone());
            std::thread::spawn(move || {
                for to in (0..2).cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    plane.ask_move(to, None);
                    plane.ask_move(1 - to, Some(to));
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };

        let mut client = std::net::TcpStream::connect(addr).expect("connects");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let hello = crate::spop::KvList::haproxy_hello(16380, "pipelining");
        client
            .write_all(&encoded(&Frame::HaproxyHello(hello)))
            .expect("sends");
        let mut buf = BytesMut::new();
        let agent_hello = read_frames(&mut client, &mut buf, 1);
        assert!(
            matches!(agent_hello[..], [Frame::AgentHello(_)]),
            "{agent_hello:?}"
        );

        const BURST: u64 = 8;
        for round in 0..300u64 {
            let numbers = round * BURST..(round + 1) * BURST;
            let bytes: Vec<u8> = numbers.clone().flat_map(|n| encoded(&notify(n))).collect();
            // In two writes, the first ending inside a frame: a move may
            // take a partial frame with it.
            let cut = bytes.len() / 2 + 3;
            client.write_all(&bytes[..cut]).expect("sends");
            std::thread::sleep(Duration::from_micros(50));
            client.write_all(&bytes[cut..]).expect("sends");
            let mut answered: Vec<u64> = read_frames(&mut client, &mut buf, BURST as usize)
                .into_iter()
                .map(|frame| match frame {
                    Frame::Ack(ack) => {
                        let expected = Action::SetVar {
                            scope: VarScope::Txn,
                            name: Bytes::from_static(b"n"),
                            value: TypedData::Uint64(ack.stream_id),
                        };
                        assert_eq!(
                            ack.actions,
                            [expected],
                            "the ACK of NOTIFY {}",
                            ack.stream_id
                        );
                        ack.stream_id
                    }
                    other => panic!("expected an ACK, got {other:?}"),
                })
                .collect();
            answered.sort_unstable();
            assert_eq!(answered, numbers.collect::<Vec<_>>(), "round {round}");
        }
        stop.store(true, Ordering::Relaxed);
        mover.join().expect("the mover stops");

        let seen = echo.threads.lock().expect("not poisoned").len();
        assert_eq!(seen, 2, "answered on both shards");
        let moves = plane.connections_moved();
        assert!(moves >= 50, "the connection moved {moves} times");
        drop(client);
        let ended =
            control.block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await });
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the connection's task ends: {ended:?}"
        );
        drop(control);
        threads.stop(Duration::from_millis(100));
    }
}
