//! What the agent asks of whatever answers messages. The agent owns this
//! trait; the sandboxed executor (and the benchmark's native handler)
//! implement it, so no wasmtime type ever reaches the connection code.

use crate::spop;
use std::future::Future;
use std::pin::Pin;

/// Why a message got no actions from its handler. Each kind indexes its own
/// `spoa_guest_failures_total` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The call ran past its deadline (CPU or wall clock).
    Timeout,
    /// The guest tried to grow its memory past the cap.
    Memory,
    /// The guest trapped (panic, `unreachable`, stack overflow, `exit`…).
    Trap,
    /// The guest returned `err`.
    Error,
    /// The guest returned actions the host cannot send (bad names…).
    InvalidOutput,
    /// A guest instance could not be created.
    Instantiate,
    /// The guest is quarantined after too many failures: answered at once
    /// by its failure policy, without a call.
    Quarantined,
    /// The guest's queue of waiting batches is full.
    Overloaded,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::Trap,
        FailureKind::Error,
        FailureKind::InvalidOutput,
        FailureKind::Instantiate,
        FailureKind::Quarantined,
        FailureKind::Overloaded,
    ];

    /// The stable name used in metrics, logs and `--error-var` values.
    pub const fn name(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Trap => "trap",
            FailureKind::Error => "error",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::Instantiate => "instantiate",
            FailureKind::Quarantined => "quarantined",
            FailureKind::Overloaded => "overloaded",
        }
    }

    /// Position in [`FailureKind::ALL`], for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether this failure says the handler itself is broken (what
    /// quarantine and rollback count), rather than a deliberate `err`
    /// answer or a refusal by the host's own policy.
    pub const fn is_fault(self) -> bool {
        matches!(
            self,
            FailureKind::Timeout
                | FailureKind::Memory
                | FailureKind::Trap
                | FailureKind::InvalidOutput
                | FailureKind::Instantiate
        )
    }
}

/// A message the handler could not answer, with the reason for the log and
/// what its failure policy answers instead (`--error-var`, or nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerFailure {
    pub kind: FailureKind,
    pub reason: String,
    pub fallback: Vec<spop::Action>,
}

impl std::fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.kind.name())
    }
}

/// The answer to one message.
pub type MessageOutcome = Result<Vec<spop::Action>, HandlerFailure>;

/// Where a handler puts its answers: one per message, in message order, as
/// soon as it has each, so the connection can send a NOTIFY's ACK while the
/// handler still works on the messages after it.
pub trait Answers: Send {
    /// The answer to the next message; `handler` names the version that
    /// gave it (for logs).
    fn answered(&mut self, handler: &str, outcome: MessageOutcome);
}

/// A batch's messages, borrowed for as long as the handler's future runs.
pub type Batch<'a> = &'a [spop::Message];

/// Where a handler puts a batch's answers (see [`Answers`]).
pub type AnswerSink<'a> = &'a mut dyn Answers;

pub type BatchFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Answers SPOE messages.
///
/// The connection hands over every message of a read burst at once and
/// awaits the future on its own task, so an implementation pays its fixed
/// costs (a permit, an instance from a pool) once per burst. It gives each
/// answer to `answers` as soon as it has it, and yields its thread at least
/// once per epoch tick while it runs guest code: what it has answered by
/// then is sent while it waits for its next turn.
pub trait Handler: Send + Sync + 'static {
    fn handle_batch<'a>(&'a self, messages: Batch<'a>, answers: AnswerSink<'a>) -> BatchFuture<'a>;

    /// Which independent part of the handler answers `message` (for several
    /// guests, the guest's index). NOTIFY frames of different parts are
    /// answered concurrently, so a slow part never delays another's ACKs.
    fn partition(&self, _message: &spop::Message) -> usize {
        0
    }
}

/// Collects answers in a vector (tests, `spoa-host call`).
impl Answers for Vec<MessageOutcome> {
    fn answered(&mut self, _handler: &str, outcome: MessageOutcome) {
        self.push(outcome);
    }
}
