//! NOTIFY frames → one handler batch → one ACK per NOTIFY that fits the
//! negotiated max-frame-size.

use bytes::{Bytes, BytesMut};

use super::handler::{BatchOutcome, FailureKind, Handler, HandlerFailure, MessageOutcome};
use crate::metrics::NotifyTally;
use crate::spop::codec::AckEncoder;
use crate::spop::{Action, Message, Notify, TypedData, VarScope};

/// The ids of a NOTIFY whose messages went to the handler, and how many.
struct PendingAck {
    stream_id: u64,
    frame_id: u64,
    messages: usize,
}

/// The NOTIFY frames of one read burst, answered together.
#[derive(Default)]
pub struct NotifyBatch {
    pending: Vec<PendingAck>,
    messages: Vec<Message>,
}

impl NotifyBatch {
    pub fn push(&mut self, notify: Notify) {
        self.pending.push(PendingAck {
            stream_id: notify.stream_id,
            frame_id: notify.frame_id,
            messages: notify.messages.len(),
        });
        self.messages.extend(notify.messages);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Policy for answering NOTIFY frames.
pub struct Dispatcher<'a> {
    /// When set, a message whose guest call failed gets `set-var txn <name>`
    /// = the failure kind (`timeout`, `trap`, …) instead of no action at all.
    pub error_var: Option<&'a Bytes>,
}

impl Dispatcher<'_> {
    /// Sends every message of `batch` to `handler`, then appends one ACK per
    /// NOTIFY to `out`, in the order the NOTIFYs came.
    ///
    /// An ACK never exceeds `max_frame_size`: a message whose actions would
    /// not fit gets none (logged and counted as `ack_too_big`); the messages
    /// before it keep theirs. The ACK itself is always sent, so HAProxy is
    /// never left waiting.
    pub async fn answer(
        &self,
        handler: &dyn Handler,
        batch: NotifyBatch,
        max_frame_size: u32,
        out: &mut BytesMut,
        tally: &mut NotifyTally,
    ) {
        let NotifyBatch { pending, messages } = batch;
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
                    })
                });
                let actions = self.actions_of(outcome, &handler_label, name, &ack, tally);
                if let Err(full) = encoder.push_all(&actions) {
                    tracing::warn!(
                        handler = &*handler_label,
                        spoe_message = %String::from_utf8_lossy(name),
                        size = full.needed,
                        room = full.room,
                        max_frame_size,
                        "actions do not fit in the ACK; dropped"
                    );
                    tally.failures[FailureKind::AckTooBig.index()] += 1;
                }
            }
            tally.actions += encoder.finish() as u64;
        }
    }

    fn actions_of(
        &self,
        outcome: MessageOutcome,
        handler_label: &str,
        name: &[u8],
        ack: &PendingAck,
        tally: &mut NotifyTally,
    ) -> Vec<Action> {
        match outcome {
            Ok(actions) => actions,
            Err(failure) => {
                tracing::warn!(
                    handler = handler_label,
                    spoe_message = %String::from_utf8_lossy(name),
                    stream_id = ack.stream_id,
                    frame_id = ack.frame_id,
                    "message answered without actions: {failure}"
                );
                tally.failures[failure.kind.index()] += 1;
                self.error_actions(failure.kind)
            }
        }
    }

    fn error_actions(&self, kind: FailureKind) -> Vec<Action> {
        match self.error_var {
            Some(name) => vec![Action::SetVar {
                scope: VarScope::Txn,
                name: name.clone(),
                value: TypedData::String(Bytes::from_static(kind.name().as_bytes())),
            }],
            None => Vec::new(),
        }
    }
}
