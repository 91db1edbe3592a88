//! spoa-host: an SPOP agent host that runs SPOE message handlers as sandboxed
//! WebAssembly components.
//!
//! Data flows one way: bytes → [`spop::Frame`] → [`agent`] turns a NOTIFY into
//! messages → [`sandbox`] calls the guest → actions → ACK → bytes.

pub mod spop;
