//! Who may talk to the agent, and over what: TCP (with a source
//! allow-list), TLS with optional client certificates, and a Unix socket.
//! Knows nothing of SPOP: it hands the agent a byte stream and a peer.

mod allow;
mod listen;
mod tls;
mod tls_check;
mod tls_refusal;
mod transport;

pub use allow::{AllowList, parse_network};
pub use listen::{Accepted, Listeners, UnixSettings};
pub use tls::{TlsFiles, TlsServer};
pub use tls_check::{TlsReport, check_tls_files};
pub use tls_refusal::explain as explain_tls_refusal;
pub use transport::{Detached, MovableTcp, Peer, Transport};
