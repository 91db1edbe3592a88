//! DISCONNECT status codes and the typed decoding errors that map onto them.

use std::fmt;

/// SPOP DISCONNECT status codes (SPOE.txt, "Errors & timeouts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Normal,
    Io,
    Timeout,
    FrameTooBig,
    InvalidFrame,
    NoVersion,
    NoMaxFrameSize,
    NoCapabilities,
    UnsupportedVersion,
    BadMaxFrameSize,
    FragmentationNotSupported,
    InterlacedFrames,
    FrameIdNotFound,
    ResourceAllocation,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 15] = [
        Status::Normal,
        Status::Io,
        Status::Timeout,
        Status::FrameTooBig,
        Status::InvalidFrame,
        Status::NoVersion,
        Status::NoMaxFrameSize,
        Status::NoCapabilities,
        Status::UnsupportedVersion,
        Status::BadMaxFrameSize,
        Status::FragmentationNotSupported,
        Status::InterlacedFrames,
        Status::FrameIdNotFound,
        Status::ResourceAllocation,
        Status::Unknown,
    ];

    /// The numeric `status-code` sent on the wire.
    pub fn code(self) -> u32 {
        match self {
            Status::Normal => 0,
            Status::Io => 1,
            Status::Timeout => 2,
            Status::FrameTooBig => 3,
            Status::InvalidFrame => 4,
            Status::NoVersion => 5,
            Status::NoMaxFrameSize => 6,
            Status::NoCapabilities => 7,
            Status::UnsupportedVersion => 8,
            Status::BadMaxFrameSize => 9,
            Status::FragmentationNotSupported => 10,
            Status::InterlacedFrames => 11,
            Status::FrameIdNotFound => 12,
            Status::ResourceAllocation => 13,
            Status::Unknown => 99,
        }
    }

    /// The status for a wire code; unknown codes map to `Unknown`.
    pub fn from_code(code: u32) -> Status {
        Status::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .unwrap_or(Status::Unknown)
    }

    /// The human-readable `message` sent next to the code, worded as HAProxy
    /// words it so operators see familiar text in their logs.
    pub fn message(self) -> &'static str {
        match self {
            Status::Normal => "normal",
            Status::Io => "I/O error",
            Status::Timeout => "a timeout occurred",
            Status::FrameTooBig => "frame is too big",
            Status::InvalidFrame => "invalid frame received",
            Status::NoVersion => "version value not found",
            Status::NoMaxFrameSize => "max-frame-size value not found",
            Status::NoCapabilities => "capabilities value not found",
            Status::UnsupportedVersion => "unsupported version",
            Status::BadMaxFrameSize => "max-frame-size too big or too small",
            Status::FragmentationNotSupported => "fragmentation not supported",
            Status::InterlacedFrames => "invalid interlaced frames",
            Status::FrameIdNotFound => "frame-id not found",
            Status::ResourceAllocation => "resource allocation error",
            Status::Unknown => "an unknown error occurred",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.message())
    }
}

/// Why bytes could not be decoded as SPOP. Each variant knows the
/// DISCONNECT status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds max-frame-size {max}")]
    FrameTooBig { len: u64, max: u32 },
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
    #[error("fragmented frame (FIN not set, or ABORT set) but fragmentation is not supported")]
    Fragmented,
}

impl DecodeError {
    pub fn status(&self) -> Status {
        match self {
            DecodeError::FrameTooBig { .. } => Status::FrameTooBig,
            DecodeError::Invalid(_) => Status::InvalidFrame,
            DecodeError::Fragmented => Status::FragmentationNotSupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::from_code(status.code()), status);
        }
        assert_eq!(Status::from_code(42), Status::Unknown);
    }
}
