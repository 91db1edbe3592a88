//! The host side of a batch call (`handle-messages`, 0.1.4, and
//! `handle-packed-messages`, 0.1.6): the answers a guest gives through
//! `batch.answer` or `packed.answer`, checked and kept in order, each
//! message's budget restarted at the previous answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::bindings::{batch, packed, wit};
use super::convert::actions_from_wit;
use super::instance::{GuestFailure, MAX_REASON_BYTES};
use super::log::truncated;
use super::packed::parse_answers;
use super::state::GuestState;
use crate::spop;

/// When a batch call last answered (or started): what its wall-clock
/// watchdog counts from.
#[derive(Clone)]
pub(crate) struct Progress(Arc<Mutex<Instant>>);

impl Default for Progress {
    fn default() -> Progress {
        Progress(Arc::new(Mutex::new(Instant::now())))
    }
}

impl Progress {
    pub(crate) fn last_answer(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn answered_at(&self, now: Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }
}

/// The running batch call's answers.
#[derive(Default)]
pub(crate) struct BatchAnswers {
    /// Messages in the running batch (0 outside a batch call, so an answer
    /// from `handle-message` is out of turn).
    expected: u32,
    /// Whether the call runs on a fiber, where store calls are held to what
    /// is left of the message's budget: its clock restarts at each answer.
    restarts_clock: bool,
    /// When the batch has had its share of the thread: from then on
    /// `answer` asks the guest to return.
    share_ends: Option<Instant>,
    /// Whether `answer` has asked the guest to return.
    asked_to_return: bool,
    /// Shared with the watchdog of a call on a fiber.
    pub(crate) progress: Progress,
    answers: Vec<Result<Vec<spop::Action>, GuestFailure>>,
}

impl BatchAnswers {
    /// Prepares for a batch of `messages`.
    pub(crate) fn start(&mut self, messages: usize, on_fiber: bool, share: std::time::Duration) {
        self.expected = u32::try_from(messages).unwrap_or(u32::MAX);
        self.restarts_clock = on_fiber;
        let now = Instant::now();
        self.share_ends = now.checked_add(share);
        self.asked_to_return = false;
        if on_fiber {
            self.progress.answered_at(now);
        }
        self.answers = Vec::with_capacity(messages);
    }

    /// Ends the batch call and hands over the answers given, and whether
    /// the guest was asked to return before the last one.
    pub(crate) fn finish(&mut self) -> (Vec<Result<Vec<spop::Action>, GuestFailure>>, bool) {
        self.expected = 0;
        (std::mem::take(&mut self.answers), self.asked_to_return)
    }
}

impl GuestState {
    /// Refuses answers that do not start at the first message unanswered.
    fn check_turn(&self, first: u32) -> wasmtime::Result<()> {
        let batch = &self.batch;
        let next = batch.answers.len() as u32;
        if first != next || first >= batch.expected {
            wasmtime::bail!(
                "batch answer for message {first} out of turn ({next} of {} answered)",
                batch.expected
            );
        }
        Ok(())
    }

    /// After answers were given: the next message has a whole call's
    /// budget, and whether the guest is to go on.
    fn answers_given(&mut self) -> bool {
        let batch = &mut self.batch;
        // A direct call is cut only when one message (or group of answers
        // held back) runs a whole tick; a guest that goes on after it was
        // asked to return is not given new ticks (its direct call is cut
        // within a tick, and it moves to fibers).
        if !batch.asked_to_return {
            self.ticks_seen = 0;
        }
        self.ticks_used = 0;
        self.log.start_call();
        let now = Instant::now();
        if batch.restarts_clock {
            self.call_started = now;
            batch.progress.answered_at(now);
        }
        if batch.answers.len() < batch.expected as usize
            && batch.share_ends.is_some_and(|end| now >= end)
        {
            batch.asked_to_return = true;
            return false;
        }
        true
    }
}

impl batch::Host for GuestState {
    fn answer(
        &mut self,
        index: u32,
        answer: Result<Vec<wit::Action>, String>,
    ) -> wasmtime::Result<bool> {
        self.check_turn(index)?;
        self.batch.answers.push(match answer {
            Ok(actions) => actions_from_wit(actions).map_err(GuestFailure::InvalidOutput),
            Err(reason) => Err(GuestFailure::Returned(
                truncated(&reason, MAX_REASON_BYTES).to_owned(),
            )),
        });
        Ok(self.answers_given())
    }
}

impl packed::Host for GuestState {
    fn answer(&mut self, first: u32, answers: Vec<u8>) -> wasmtime::Result<bool> {
        self.check_turn(first)?;
        let batch = &mut self.batch;
        let room = batch.expected as usize - batch.answers.len();
        // Answers before one that does not parse stand; the trap costs
        // what a trap in the batch costs.
        parse_answers(Bytes::from(answers), room, &mut batch.answers)
            .map_err(wasmtime::Error::msg)?;
        Ok(self.answers_given())
    }
}
