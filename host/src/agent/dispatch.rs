//! NOTIFY frames → one handler batch → one ACK per NOTIFY, each encoded
//! into the connection's outbox as soon as its last message is answered,
//! never larger than the negotiated max-frame-size.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;

use super::handler::{Answers, FailureKind, Handler, HandlerFailure, MessageOutcome};
use crate::metrics::NotifyTally;
use crate::spop::codec::AckEncoder;
use crate::spop::{Action, Message, Notify};

/// The ids of a NOTIFY whose messages went to the handler, and how many.
struct PendingAck {
    stream_id: u64,
    frame_id: u64,
    messages: usize,
}

/// NOTIFY frames of one read burst that go to the same handler parts,
/// answered together.
pub struct NotifyBatch {
    /// The set of [`Handler::partition`]s its messages go to (one bit each;
    /// partitions past 63 share the last bit).
    pub parts: u64,
    pending: Vec<PendingAck>,
    messages: Vec<Message>,
}

impl NotifyBatch {
    pub fn new(parts: u64) -> NotifyBatch {
        NotifyBatch {
            parts,
            pending: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// The partition set of a NOTIFY's messages.
    pub fn parts_of(handler: &dyn Handler, notify: &Notify) -> u64 {
        notify.messages.iter().fold(0, |parts, message| {
            parts | 1 << handler.partition(message).min(63)
        })
    }

    pub fn push(&mut self, notify: Notify) {
        self.pending.push(PendingAck {
            stream_id: notify.stream_id,
            frame_id: notify.frame_id,
            messages: notify.messages.len(),
        });
        if self.messages.is_empty() {
            // The usual batch of one NOTIFY keeps its vector.
            self.messages = notify.messages;
        } else {
            self.messages.extend(notify.messages);
        }
    }
}

/// The ACKs a connection's batches have encoded and it has not written yet.
/// Shared by the connection and its batches (which may run as tasks of
/// their own): a batch appends each ACK as soon as its NOTIFY is answered,
/// and wakes the connection when it has to wait with ACKs left unsent.
#[derive(Default)]
pub struct Outbox {
    encoded: Mutex<Encoded>,
    has_acks: AtomicBool,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct Encoded {
    acks: BytesMut,
    tally: NotifyTally,
}

impl Outbox {
    /// Moves the ACKs encoded so far to the end of `out`, and returns what
    /// they did (for the metrics).
    pub fn take_into(&self, out: &mut BytesMut) -> NotifyTally {
        if !self.has_acks.swap(false, Ordering::Acquire) {
            return NotifyTally::default();
        }
        let mut encoded = self.encoded.lock().unwrap_or_else(|p| p.into_inner());
        if out.is_empty() {
            std::mem::swap(out, &mut encoded.acks);
        } else {
            out.extend_from_slice(&encoded.acks);
            encoded.acks.clear();
        }
        std::mem::take(&mut encoded.tally)
    }

    /// Resolves once a batch that had to wait left ACKs here.
    pub async fn ready(&self) {
        self.ready.notified().await
    }
}

/// The handler's answers, turned into ACKs in NOTIFY order.
struct AckWriter<'a> {
    outbox: &'a Outbox,
    messages: &'a [Message],
    pending: std::vec::IntoIter<PendingAck>,
    /// The NOTIFY being answered, and the actions of its messages so far.
    current: Option<PendingAck>,
    actions: Vec<Vec<Action>>,
    answered: usize,
    max_frame_size: u32,
    /// The handler version that answered last (for the log of a handler
    /// that answers too few messages).
    last_handler: String,
}

impl<'a> AckWriter<'a> {
    fn new(
        outbox: &'a Outbox,
        messages: &'a [Message],
        pending: Vec<PendingAck>,
        max_frame_size: u32,
    ) -> AckWriter<'a> {
        let mut writer = AckWriter {
            outbox,
            messages,
            pending: pending.into_iter(),
            current: None,
            actions: Vec::new(),
            answered: 0,
            max_frame_size,
            last_handler: String::new(),
        };
        writer.next_notify();
        writer
    }

    /// Moves to the next NOTIFY with messages; NOTIFYs without any are
    /// acknowledged on the way.
    fn next_notify(&mut self) {
        self.current = None;
        while let Some(ack) = self.pending.next() {
            if ack.messages > 0 {
                self.current = Some(ack);
                return;
            }
            self.write_ack(&ack, "");
        }
    }

    /// Encodes the ACK of `ack` with the actions collected for it.
    fn write_ack(&mut self, ack: &PendingAck, handler: &str) {
        let mut encoded = self
            .outbox
            .encoded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Encoded { acks, tally } = &mut *encoded;
        let first = self.answered - ack.messages;
        let mut encoder = AckEncoder::begin(acks, ack.stream_id, ack.frame_id, self.max_frame_size);
        for (offset, actions) in self.actions.drain(..).enumerate() {
            if let Err(full) = encoder.push_all(&actions) {
                let name = self
                    .messages
                    .get(first + offset)
                    .map(|m| &m.name[..])
                    .unwrap_or_default();
                tracing::warn!(
                    handler,
                    spoe_message = %String::from_utf8_lossy(name),
                    size = full.needed,
                    room = full.room,
                    max_frame_size = self.max_frame_size,
                    "actions do not fit in the ACK; dropped"
                );
                tally.ack_overflows += 1;
            }
        }
        tally.actions += encoder.finish() as u64;
        tally.notifies += 1;
        tally.messages += ack.messages as u64;
        drop(encoded);
        self.outbox.has_acks.store(true, Ordering::Release);
    }

    /// Answers every message still unanswered (the handler gave fewer
    /// answers than messages) with a failure.
    fn finish(&mut self) {
        let handler = std::mem::take(&mut self.last_handler);
        let handler = handler.as_str();
        let missing = self.messages.len() - self.answered.min(self.messages.len());
        if missing > 0 {
            tracing::error!(
                handler,
                expected = self.messages.len(),
                got = self.answered,
                "handler answered too few messages; the missing ones get no actions"
            );
        }
        while self.current.is_some() {
            self.answered(
                handler,
                Err(HandlerFailure {
                    kind: FailureKind::InvalidOutput,
                    reason: "no answer from the handler".into(),
                    fallback: Vec::new(),
                }),
            );
        }
    }
}

impl Answers for AckWriter<'_> {
    fn answered(&mut self, handler: &str, outcome: MessageOutcome) {
        let Some(ack) = &self.current else {
            tracing::error!(handler, "handler answered more messages than it was given");
            return;
        };
        let (stream_id, frame_id, messages) = (ack.stream_id, ack.frame_id, ack.messages);
        if self.last_handler != handler {
            handler.clone_into(&mut self.last_handler);
        }
        let name = self
            .messages
            .get(self.answered)
            .map(|m| &m.name[..])
            .unwrap_or_default();
        self.actions
            .push(actions_of(outcome, handler, name, stream_id, frame_id));
        self.answered += 1;
        if self.actions.len() == messages
            && let Some(ack) = self.current.take()
        {
            self.write_ack(&ack, handler);
            self.next_notify();
        }
    }
}

/// Sends every message of `batch` to `handler` and encodes one ACK per
/// NOTIFY into `outbox`, in the order the NOTIFYs came, each as soon as its
/// messages are answered.
///
/// A failed message gets its failure policy's fallback actions (often none).
/// An ACK never exceeds `max_frame_size`: a message whose actions would not
/// fit gets none (logged and counted); the messages before it keep theirs.
/// The ACK itself is always sent, so HAProxy is never left waiting.
pub async fn answer(
    handler: &dyn Handler,
    batch: NotifyBatch,
    max_frame_size: u32,
    outbox: &Outbox,
) {
    let NotifyBatch {
        pending, messages, ..
    } = batch;
    let mut writer = AckWriter::new(outbox, &messages, pending, max_frame_size);
    WakeOnPending {
        work: handler.handle_batch(&messages, &mut writer),
        outbox,
    }
    .await;
    writer.finish();
}

/// Wakes the connection each time the handler has to wait with ACKs left
/// in the outbox: they are written while it waits.
struct WakeOnPending<'o, F> {
    work: F,
    outbox: &'o Outbox,
}

impl<F: Future + Unpin> Future for WakeOnPending<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = Pin::new(&mut self.work).poll(cx);
        if polled.is_pending() && self.outbox.has_acks.load(Ordering::Acquire) {
            self.outbox.ready.notify_one();
        }
        polled
    }
}

fn actions_of(
    outcome: MessageOutcome,
    handler_label: &str,
    name: &[u8],
    stream_id: u64,
    frame_id: u64,
) -> Vec<Action> {
    match outcome {
        Ok(actions) => actions,
        Err(failure) => {
            // A quarantined or overloaded guest would log once per message
            // for as long as it lasts; its own state change is logged.
            if matches!(
                failure.kind,
                FailureKind::Quarantined | FailureKind::Overloaded
            ) {
                tracing::debug!(
                    handler = handler_label,
                    spoe_message = %String::from_utf8_lossy(name),
                    "message answered by the failure policy: {failure}"
                );
            } else {
                tracing::warn!(
                    handler = handler_label,
                    spoe_message = %String::from_utf8_lossy(name),
                    stream_id,
                    frame_id,
                    "message answered without actions: {failure}"
                );
            }
            failure.fallback
        }
    }
}
