//! One SPOP connection's life: HELLO negotiation, health checks, pipelined
//! NOTIFY handling, ACK writing, DISCONNECT with the right status, timeouts.

mod connection;
mod dispatch;
mod handler;
mod hello;

pub use connection::{AgentContext, ConnectionSettings, disconnect_and_close, serve_connection};
pub use handler::{Answers, BatchFuture, FailureKind, Handler, HandlerFailure, MessageOutcome};
pub use hello::{Negotiated, agent_hello, negotiate};
