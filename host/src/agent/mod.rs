//! One SPOP connection's life: HELLO negotiation, health checks, pipelined
//! NOTIFY handling, ACK writing, DISCONNECT with the right status, timeouts.
//!
//! Owns the [`Handler`] trait the guests are served through. Must not know
//! wasmtime, guests' files or reloads, nor which listener a stream came
//! from: it gets a byte stream, a peer and a handler.

mod connection;
mod dispatch;
mod handler;
mod hello;

pub use connection::{AgentContext, ConnectionSettings, disconnect_and_close, serve_connection};
pub use handler::{
    AnswerSink, Answers, Batch, BatchFuture, FailureKind, Handler, HandlerFailure, MessageOutcome,
};
pub use hello::{Negotiated, agent_hello, negotiate};
