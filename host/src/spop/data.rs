//! SPOP typed data: one type byte (low nibble = type, high nibble = flags)
//! followed by a type-specific body.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut, Bytes};

use super::error::DecodeError;
use super::varint;

pub const TYPE_NULL: u8 = 0;
pub const TYPE_BOOL: u8 = 1;
pub const TYPE_INT32: u8 = 2;
pub const TYPE_UINT32: u8 = 3;
pub const TYPE_INT64: u8 = 4;
pub const TYPE_UINT64: u8 = 5;
pub const TYPE_IPV4: u8 = 6;
pub const TYPE_IPV6: u8 = 7;
pub const TYPE_STRING: u8 = 8;
pub const TYPE_BINARY: u8 = 9;
/// The BOOL value lives in the flag nibble.
pub const FLAG_TRUE: u8 = 0x10;

/// One SPOP value. Strings and binaries share the frame's buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedData {
    Null,
    Bool(bool),
    Int32(i32),
    Uint32(u32),
    Int64(i64),
    Uint64(u64),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// Raw bytes: SPOP does not promise UTF-8.
    String(Bytes),
    Binary(Bytes),
}

impl TypedData {
    /// Reads one value from the front of `src`.
    pub fn decode(src: &mut Bytes) -> Result<TypedData, DecodeError> {
        if !src.has_remaining() {
            return Err(DecodeError::Invalid("missing typed data"));
        }
        let type_byte = src.get_u8();
        let value = match type_byte & 0x0F {
            TYPE_NULL => TypedData::Null,
            TYPE_BOOL => TypedData::Bool(type_byte & FLAG_TRUE != 0),
            TYPE_INT32 => TypedData::Int32(decode_int32(varint::decode(src)?)?),
            TYPE_UINT32 => TypedData::Uint32(
                u32::try_from(varint::decode(src)?)
                    .map_err(|_| DecodeError::Invalid("UINT32 value out of range"))?,
            ),
            TYPE_INT64 => TypedData::Int64(varint::decode(src)? as i64),
            TYPE_UINT64 => TypedData::Uint64(varint::decode(src)?),
            TYPE_IPV4 => {
                let octets: [u8; 4] = take_array(src)?;
                TypedData::Ipv4(Ipv4Addr::from(octets))
            }
            TYPE_IPV6 => {
                let octets: [u8; 16] = take_array(src)?;
                TypedData::Ipv6(Ipv6Addr::from(octets))
            }
            TYPE_STRING => TypedData::String(decode_bytes(src)?),
            TYPE_BINARY => TypedData::Binary(decode_bytes(src)?),
            _ => return Err(DecodeError::Invalid("reserved data type")),
        };
        Ok(value)
    }

    /// Appends the value to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        match self {
            TypedData::Null => dst.put_u8(TYPE_NULL),
            TypedData::Bool(value) => {
                dst.put_u8(TYPE_BOOL | if *value { FLAG_TRUE } else { 0 });
            }
            TypedData::Int32(value) => {
                dst.put_u8(TYPE_INT32);
                // Sign-extend to 64 bits, as HAProxy does.
                varint::encode(i64::from(*value) as u64, dst);
            }
            TypedData::Uint32(value) => {
                dst.put_u8(TYPE_UINT32);
                varint::encode(u64::from(*value), dst);
            }
            TypedData::Int64(value) => {
                dst.put_u8(TYPE_INT64);
                varint::encode(*value as u64, dst);
            }
            TypedData::Uint64(value) => {
                dst.put_u8(TYPE_UINT64);
                varint::encode(*value, dst);
            }
            TypedData::Ipv4(addr) => {
                dst.put_u8(TYPE_IPV4);
                dst.put_slice(&addr.octets());
            }
            TypedData::Ipv6(addr) => {
                dst.put_u8(TYPE_IPV6);
                dst.put_slice(&addr.octets());
            }
            TypedData::String(bytes) => {
                dst.put_u8(TYPE_STRING);
                encode_bytes(bytes, dst);
            }
            TypedData::Binary(bytes) => {
                dst.put_u8(TYPE_BINARY);
                encode_bytes(bytes, dst);
            }
        }
    }

    /// Exactly how many bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            TypedData::Null | TypedData::Bool(_) => 0,
            TypedData::Int32(value) => varint::encoded_len(i64::from(*value) as u64),
            TypedData::Uint32(value) => varint::encoded_len(u64::from(*value)),
            TypedData::Int64(value) => varint::encoded_len(*value as u64),
            TypedData::Uint64(value) => varint::encoded_len(*value),
            TypedData::Ipv4(_) => 4,
            TypedData::Ipv6(_) => 16,
            TypedData::String(bytes) | TypedData::Binary(bytes) => bytes_encoded_len(bytes),
        }
    }

    /// The value as an integer, whichever of the four integer types carries it
    /// (HAProxy itself reads them all back into a signed 64-bit integer).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            TypedData::Int32(v) => u64::try_from(v).ok(),
            TypedData::Uint32(v) => Some(u64::from(v)),
            TypedData::Int64(v) => u64::try_from(v).ok(),
            TypedData::Uint64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a signed integer, whichever integer type carries it.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            TypedData::Int32(v) => Some(i64::from(v)),
            TypedData::Uint32(v) => Some(i64::from(v)),
            TypedData::Int64(v) => Some(v),
            TypedData::Uint64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// INT32 travels sign-extended to 64 bits. A peer that zero-extends instead
/// (a negative i32 sent as its u32 bit pattern) is accepted too: the bits are
/// unambiguous and rejecting them would tear down a whole connection.
fn decode_int32(raw: u64) -> Result<i32, DecodeError> {
    if let Ok(value) = i32::try_from(raw as i64) {
        return Ok(value);
    }
    u32::try_from(raw)
        .map(|bits| bits as i32)
        .map_err(|_| DecodeError::Invalid("INT32 value out of range"))
}

fn take_array<const N: usize>(src: &mut Bytes) -> Result<[u8; N], DecodeError> {
    if src.remaining() < N {
        return Err(DecodeError::Invalid("truncated address"));
    }
    let mut out = [0u8; N];
    src.copy_to_slice(&mut out);
    Ok(out)
}

/// Reads a varint length and that many bytes, sharing `src`'s buffer.
pub fn decode_bytes(src: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = varint::decode(src)?;
    if len > src.remaining() as u64 {
        return Err(DecodeError::Invalid(
            "string length past the end of the frame",
        ));
    }
    Ok(src.split_to(len as usize))
}

/// Writes a varint length and the bytes.
pub fn encode_bytes(bytes: &[u8], dst: &mut impl BufMut) {
    varint::encode(bytes.len() as u64, dst);
    dst.put_slice(bytes);
}

pub fn bytes_encoded_len(bytes: &[u8]) -> usize {
    varint::encoded_len(bytes.len() as u64) + bytes.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_typed_data() -> impl Strategy<Value = TypedData> {
        prop_oneof![
            Just(TypedData::Null),
            any::<bool>().prop_map(TypedData::Bool),
            any::<i32>().prop_map(TypedData::Int32),
            any::<u32>().prop_map(TypedData::Uint32),
            any::<i64>().prop_map(TypedData::Int64),
            any::<u64>().prop_map(TypedData::Uint64),
            any::<[u8; 4]>().prop_map(|o| TypedData::Ipv4(o.into())),
            any::<[u8; 16]>().prop_map(|o| TypedData::Ipv6(o.into())),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|v| TypedData::String(Bytes::from(v))),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|v| TypedData::Binary(Bytes::from(v))),
        ]
    }

    fn decode_all(bytes: &'static [u8]) -> Result<TypedData, DecodeError> {
        let mut src = Bytes::from_static(bytes);
        let value = TypedData::decode(&mut src)?;
        assert!(src.is_empty(), "trailing bytes");
        Ok(value)
    }

    #[test]
    fn booleans_live_in_the_flag_bits() {
        assert_eq!(decode_all(&[0x01]), Ok(TypedData::Bool(false)));
        assert_eq!(decode_all(&[0x11]), Ok(TypedData::Bool(true)));
        let mut out = Vec::new();
        TypedData::Bool(true).encode(&mut out);
        assert_eq!(out, [0x11]);
    }

    #[test]
    fn int32_is_sign_extended_both_ways() {
        let minus_one: &[u8] = &[
            0x02, 0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e,
        ];
        assert_eq!(decode_all(minus_one), Ok(TypedData::Int32(-1)));
        let mut out = Vec::new();
        TypedData::Int32(-1).encode(&mut out);
        assert_eq!(out, minus_one);
        // Zero-extended u32 bit pattern of -1 is tolerated.
        assert_eq!(
            decode_all(&[0x02, 0xff, 0xf0, 0xfe, 0xfe, 0x7e]),
            Ok(TypedData::Int32(-1))
        );
        // Neither interpretation fits: rejected.
        assert!(decode_all(&[0x02, 0xf0, 0x80, 0x80, 0x80, 0x80, 0x10]).is_err());
    }

    #[test]
    fn int64_minus_five_matches_the_reference() {
        assert_eq!(
            decode_all(&[
                0x04, 0xfb, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e
            ]),
            Ok(TypedData::Int64(-5))
        );
    }

    #[test]
    fn addresses_and_non_utf8_strings() {
        assert_eq!(
            decode_all(&[0x06, 127, 0, 0, 1]),
            Ok(TypedData::Ipv4(Ipv4Addr::LOCALHOST))
        );
        let mut v6 = vec![0x07];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        let mut src = Bytes::from(v6);
        assert_eq!(
            TypedData::decode(&mut src),
            Ok(TypedData::Ipv6("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            decode_all(&[0x08, 0x02, 0xff, 0xfe]),
            Ok(TypedData::String(Bytes::from_static(&[0xff, 0xfe])))
        );
    }

    #[test]
    fn hostile_bodies_are_rejected() {
        for reserved in 10u8..=15 {
            let mut src = Bytes::from(vec![reserved, 0, 0, 0]);
            assert_eq!(
                TypedData::decode(&mut src),
                Err(DecodeError::Invalid("reserved data type"))
            );
        }
        assert!(decode_all(&[0x08, 0x05, b'a']).is_err());
        assert!(decode_all(&[0x06, 1, 2]).is_err());
        assert!(decode_all(&[0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(value in arb_typed_data()) {
            let mut out = Vec::new();
            value.encode(&mut out);
            prop_assert_eq!(out.len(), value.encoded_len());
            let mut src = Bytes::from(out);
            prop_assert_eq!(TypedData::decode(&mut src), Ok(value));
            prop_assert!(src.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let mut src = Bytes::from(bytes);
            let _ = TypedData::decode(&mut src);
        }
    }
}
