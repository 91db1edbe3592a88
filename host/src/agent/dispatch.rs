//! NOTIFY → guest calls → one ACK that fits the negotiated max-frame-size.

use std::cell::Cell;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::handler::Handler;
use crate::metrics::{Metrics, NotifyTally};
use crate::spop::codec::encode_frame;
use crate::spop::{Ack, Action, Frame, Notify, TypedData, VarScope};

/// One guest call in this many is timed for `spoa_guest_call_seconds`:
/// prometheus-client's histogram takes a lock per observation, and two clock
/// reads per message are measurable at a million messages per second. The
/// `spoa_guest_calls` counter still counts every call.
const TIME_ONE_CALL_IN: u32 = 16;

thread_local! {
    static CALLS_UNTIL_TIMED: Cell<u32> = const { Cell::new(0) };
}

fn should_time_this_call() -> bool {
    CALLS_UNTIL_TIMED.with(|left| match left.get() {
        0 => {
            left.set(TIME_ONE_CALL_IN - 1);
            true
        }
        n => {
            left.set(n - 1);
            false
        }
    })
}

/// Policy for answering NOTIFY frames.
pub struct Dispatcher<'a> {
    pub metrics: &'a Metrics,
    /// When set, a message whose guest call failed gets `set-var txn <name>`
    /// = the failure kind (`timeout`, `trap`, …) instead of no action at all.
    pub error_var: Option<&'a Bytes>,
}

impl Dispatcher<'_> {
    /// Calls the handler once per message and appends the ACK to `out`.
    ///
    /// The ACK never exceeds `max_frame_size`: a message whose actions would
    /// not fit gets none (logged and counted as `ack_too_big`); the messages
    /// before it keep theirs. The ACK itself is always sent, so HAProxy is
    /// never left waiting.
    ///
    /// Counts go to `tally`, which the caller publishes once per batch.
    pub fn answer(
        &self,
        handler: &Handler,
        notify: Notify,
        max_frame_size: u32,
        out: &mut BytesMut,
        tally: &mut NotifyTally,
    ) {
        let budget = (max_frame_size as usize)
            .saturating_sub(Ack::header_len(notify.stream_id, notify.frame_id));
        let mut used = 0usize;
        let mut actions: Vec<Action> = Vec::with_capacity(notify.messages.len());
        tally.notifies += 1;
        tally.messages += notify.messages.len() as u64;
        for message in &notify.messages {
            let started = should_time_this_call().then(Instant::now);
            let outcome = handler.handle(message);
            if let Some(started) = started {
                self.metrics
                    .guest_call_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            let produced = match outcome {
                Ok(produced) => produced,
                Err(failure) => {
                    tracing::warn!(
                        module = handler.label(),
                        spoe_message = %String::from_utf8_lossy(&message.name),
                        stream_id = notify.stream_id,
                        frame_id = notify.frame_id,
                        "message answered without actions: {failure}"
                    );
                    self.metrics.guest_failure(failure.kind());
                    self.error_actions(failure.kind())
                }
            };
            let size: usize = produced.iter().map(Action::encoded_len).sum();
            if used + size > budget {
                tracing::warn!(
                    module = handler.label(),
                    spoe_message = %String::from_utf8_lossy(&message.name),
                    size,
                    max_frame_size,
                    "actions do not fit in the ACK; dropped"
                );
                self.metrics.guest_failure("ack_too_big");
                continue;
            }
            used += size;
            actions.extend(produced);
        }
        tally.actions += actions.len() as u64;
        encode_frame(
            &Frame::Ack(Ack {
                stream_id: notify.stream_id,
                frame_id: notify.frame_id,
                actions,
            }),
            out,
        );
    }

    fn error_actions(&self, kind: &'static str) -> Vec<Action> {
        match self.error_var {
            Some(name) => vec![Action::SetVar {
                scope: VarScope::Txn,
                name: name.clone(),
                value: TypedData::String(Bytes::from_static(kind.as_bytes())),
            }],
            None => Vec::new(),
        }
    }
}
