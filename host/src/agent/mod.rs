//! One SPOP connection's life: HELLO negotiation, health checks, pipelined
//! NOTIFY handling, ACK writing, DISCONNECT with the right status, timeouts.

mod connection;
mod dispatch;
mod handler;
mod hello;

pub use connection::linger as linger_briefly;
pub use connection::{AgentContext, ConnectionSettings, serve_connection};
pub use handler::{Handler, HandlerSlot};
pub use hello::{Negotiated, agent_hello, negotiate};
