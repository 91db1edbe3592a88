//! SPOP 2.0, the Stream Processing Offload Protocol HAProxy's SPOE filter
//! speaks to agents. Pure protocol: types, byte layouts and the framing codec.
//! No sockets, no timeouts, no WebAssembly — see `agent` for policy.

pub mod codec;
pub mod data;
pub mod error;
pub mod frame;
pub mod notation;
pub mod varint;

pub use codec::SpopCodec;
pub use data::TypedData;
pub use error::{DecodeError, Status};
pub use frame::{
    Ack, Action, Arg, Disconnect, Frame, FrameType, Hello, KvList, MAX_VAR_NAME, Message, Notify,
    VarScope, check_var_name,
};

/// The only SPOP version this crate speaks.
pub const SPOP_VERSION: &str = "2.0";
/// The smallest max-frame-size a peer may announce.
pub const MIN_FRAME_SIZE: u32 = 256;
/// HAProxy's default announcement: `tune.bufsize` (16384) minus 4.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16380;
/// Bytes of the big-endian length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// Frame flag: this is the last (and, without fragmentation, only) fragment.
pub const FLAG_FIN: u32 = 0x0000_0001;
/// Frame flag: abort a fragmented frame.
pub const FLAG_ABORT: u32 = 0x0000_0002;
