//! HAProxy's variable-length integer encoding (the "peers" varint, not LEB128).
//!
//! Values below 240 take one byte. Larger values set the top four bits of the
//! first byte and continue in 7-bit groups, each biased by the previous range.

use bytes::{Buf, BufMut};

use super::error::DecodeError;

/// A u64 never needs more than this many bytes; longer runs are rejected
/// (HAProxy itself does not check, so a hostile peer could loop it forever).
pub const MAX_LEN: usize = 10;

/// Appends `value` to `dst`.
pub fn encode(mut value: u64, dst: &mut impl BufMut) {
    if value < 240 {
        dst.put_u8(value as u8);
        return;
    }
    dst.put_u8((value as u8) | 0xF0);
    value = (value - 240) >> 4;
    while value >= 128 {
        dst.put_u8((value as u8) | 0x80);
        value = (value - 128) >> 7;
    }
    dst.put_u8(value as u8);
}

/// The number of bytes `encode(value)` writes.
pub fn encoded_len(mut value: u64) -> usize {
    if value < 240 {
        return 1;
    }
    let mut len = 2;
    value = (value - 240) >> 4;
    while value >= 128 {
        len += 1;
        value = (value - 128) >> 7;
    }
    len
}

/// Reads one varint from the front of `src`.
pub fn decode(src: &mut impl Buf) -> Result<u64, DecodeError> {
    let first = take_byte(src)?;
    if first < 240 {
        return Ok(u64::from(first));
    }
    // Accumulate in u128 so an overlong or overflowing run is detected
    // instead of silently wrapping.
    let mut value = u128::from(first);
    let mut shift = 4u32;
    for _ in 1..MAX_LEN {
        let byte = take_byte(src)?;
        value += u128::from(byte) << shift;
        if byte < 128 {
            return u64::try_from(value).map_err(|_| DecodeError::Invalid("varint overflows u64"));
        }
        shift += 7;
    }
    Err(DecodeError::Invalid("varint longer than 10 bytes"))
}

fn take_byte(src: &mut impl Buf) -> Result<u8, DecodeError> {
    if src.has_remaining() {
        Ok(src.get_u8())
    } else {
        Err(DecodeError::Invalid("truncated varint"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The vectors from the protocol reference.
    const VECTORS: &[(u64, &[u8])] = &[
        (0, &[0x00]),
        (239, &[0xef]),
        (240, &[0xf0, 0x00]),
        (2287, &[0xff, 0x7f]),
        (2288, &[0xf0, 0x80, 0x00]),
        (264432, &[0xf0, 0x80, 0x80, 0x00]),
        (4294967295, &[0xff, 0xf0, 0xfe, 0xfe, 0x7e]),
        (
            u64::MAX,
            &[0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
        ),
        (
            -5i64 as u64,
            &[0xfb, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
        ),
    ];

    #[test]
    fn reference_vectors_encode_and_decode() {
        for &(value, bytes) in VECTORS {
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(encoded_len(value), bytes.len());
            let mut src = bytes;
            assert_eq!(decode(&mut src), Ok(value), "decoding {bytes:02x?}");
            assert!(src.is_empty());
        }
    }

    #[test]
    fn overlong_and_truncated_runs_are_rejected() {
        let mut overlong: &[u8] = &[0xff; 11];
        assert_eq!(
            decode(&mut overlong),
            Err(DecodeError::Invalid("varint longer than 10 bytes"))
        );
        let mut overflow: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode(&mut overflow).is_err());
        let mut truncated: &[u8] = &[0xf0, 0x80];
        assert_eq!(
            decode(&mut truncated),
            Err(DecodeError::Invalid("truncated varint"))
        );
    }

    proptest! {
        #[test]
        fn round_trip(value: u64) {
            let mut out = Vec::new();
            encode(value, &mut out);
            prop_assert_eq!(out.len(), encoded_len(value));
            prop_assert!(out.len() <= MAX_LEN);
            let mut src = out.as_slice();
            prop_assert_eq!(decode(&mut src), Ok(value));
            prop_assert!(src.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let mut src = bytes.as_slice();
            let _ = decode(&mut src);
        }
    }
}
