//! NOTIFY frames → one handler batch → one ACK per NOTIFY that fits the
//! negotiated max-frame-size.

use bytes::BytesMut;

use super::handler::{BatchOutcome, FailureKind, Handler, HandlerFailure, MessageOutcome};
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

/// Sends every message of `batch` to `handler`, then appends one ACK per
/// NOTIFY to `out`, in the order the NOTIFYs came.
///
/// A failed message gets its failure policy's fallback actions (often none).
/// An ACK never exceeds `max_frame_size`: a message whose actions would not
/// fit gets none (logged and counted); the messages before it keep theirs.
/// The ACK itself is always sent, so HAProxy is never left waiting.
pub async fn answer(
    handler: &dyn Handler,
    batch: NotifyBatch,
    max_frame_size: u32,
    out: &mut BytesMut,
    tally: &mut NotifyTally,
) {
    let NotifyBatch {
        pending, messages, ..
    } = batch;
    let message_count = messages.len();
    let BatchOutcome {
        handler: handler_label,
        outcomes,
    } = handler.handle_batch(&messages).await;
    let mut outcomes = outcomes.into_iter();
    let mut names = messages.iter().map(|m| &m.name);
    if outcomes.len() != message_count {
        tracing::error!(
            handler = &*handler_label,
            expected = message_count,
            got = outcomes.len(),
            "handler answered the wrong number of messages; the missing ones get no actions"
        );
    }
    tally.notifies += pending.len() as u64;
    tally.messages += message_count as u64;
    for ack in pending {
        let mut encoder = AckEncoder::begin(out, ack.stream_id, ack.frame_id, max_frame_size);
        for name in names.by_ref().take(ack.messages) {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(HandlerFailure {
                    kind: FailureKind::InvalidOutput,
                    reason: "no answer from the handler".into(),
                    fallback: Vec::new(),
                })
            });
            let actions = actions_of(outcome, &handler_label, name, &ack);
            if let Err(full) = encoder.push_all(&actions) {
                tracing::warn!(
                    handler = &*handler_label,
                    spoe_message = %String::from_utf8_lossy(name),
                    size = full.needed,
                    room = full.room,
                    max_frame_size,
                    "actions do not fit in the ACK; dropped"
                );
                tally.ack_overflows += 1;
            }
        }
        tally.actions += encoder.finish() as u64;
    }
}

fn actions_of(
    outcome: MessageOutcome,
    handler_label: &str,
    name: &[u8],
    ack: &PendingAck,
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
                    stream_id = ack.stream_id,
                    frame_id = ack.frame_id,
                    "message answered without actions: {failure}"
                );
            }
            failure.fallback
        }
    }
}
