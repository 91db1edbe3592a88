//! The bytes of a packed batch (`handle-packed-messages`, WIT 0.1.6):
//! messages as a NOTIFY frame carries them, answers as an ACK frame carries
//! actions. Plain Rust: [`export_handler!`](crate::export_handler) decodes
//! and encodes with it, and it runs natively in unit tests.

use crate::{Action, Arg, Message, TypedData, VarScope};

const TYPE_NULL: u8 = 0;
const TYPE_BOOL: u8 = 1;
const TYPE_INT32: u8 = 2;
const TYPE_UINT32: u8 = 3;
const TYPE_INT64: u8 = 4;
const TYPE_UINT64: u8 = 5;
const TYPE_IPV4: u8 = 6;
const TYPE_IPV6: u8 = 7;
const TYPE_STRING: u8 = 8;
const TYPE_BINARY: u8 = 9;
const FLAG_TRUE: u8 = 0x10;

const ANSWER_OK: u8 = 0x00;
const ANSWER_ERR: u8 = 0x01;
const ACTION_SET_VAR: u8 = 1;
const ACTION_UNSET_VAR: u8 = 2;

/// Why packed messages did not decode (the host never sends such bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads messages from the front of packed bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, Malformed> {
        let (&first, rest) = self
            .bytes
            .split_first()
            .ok_or(Malformed("truncated message"))?;
        self.bytes = rest;
        Ok(first)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if len > self.bytes.len() {
            return Err(Malformed("length past the end of the messages"));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    /// HAProxy's varint: below 240 one byte, then 7-bit groups.
    fn varint(&mut self) -> Result<u64, Malformed> {
        let first = self.byte()?;
        if first < 240 {
            return Ok(u64::from(first));
        }
        let mut value = u128::from(first);
        let mut shift = 4u32;
        for _ in 1..10 {
            let byte = self.byte()?;
            value += u128::from(byte) << shift;
            if byte < 128 {
                return u64::try_from(value).map_err(|_| Malformed("varint overflows u64"));
            }
            shift += 7;
        }
        Err(Malformed("varint longer than 10 bytes"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| Malformed("length too large"))?)
    }

    fn text(&mut self) -> Result<String, Malformed> {
        let bytes = self.bytes()?;
        Ok(match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn typed_data(&mut self) -> Result<TypedData, Malformed> {
        let type_byte = self.byte()?;
        Ok(match type_byte & 0x0F {
            TYPE_NULL => TypedData::Null,
            TYPE_BOOL => TypedData::Boolean(type_byte & FLAG_TRUE != 0),
            TYPE_INT32 => TypedData::Int32(self.varint()? as i64 as i32),
            TYPE_UINT32 => TypedData::Uint32(self.varint()? as u32),
            TYPE_INT64 => TypedData::Int64(self.varint()? as i64),
            TYPE_UINT64 => TypedData::Uint64(self.varint()?),
            TYPE_IPV4 => {
                let [a, b, c, d] = self.array::<4>()?;
                TypedData::Ipv4((a, b, c, d))
            }
            TYPE_IPV6 => {
                let octets = self.array::<16>()?;
                let group = |i: usize| u16::from_be_bytes([octets[2 * i], octets[2 * i + 1]]);
                TypedData::Ipv6((
                    group(0),
                    group(1),
                    group(2),
                    group(3),
                    group(4),
                    group(5),
                    group(6),
                    group(7),
                ))
            }
            TYPE_STRING => TypedData::String(self.bytes()?.to_vec()),
            TYPE_BINARY => TypedData::Binary(self.bytes()?.to_vec()),
            _ => return Err(Malformed("reserved data type")),
        })
    }

    fn message(&mut self) -> Result<Message, Malformed> {
        let name = self.text()?;
        let nb_args = self.byte()?;
        let mut args = Vec::with_capacity(usize::from(nb_args));
        for _ in 0..nb_args {
            let name = self.text()?;
            let value = self.typed_data()?;
            args.push(Arg { name, value });
        }
        Ok(Message { name, args })
    }
}

/// Decodes `count` packed messages.
pub fn decode_messages(bytes: &[u8], count: u32) -> Result<Vec<Message>, Malformed> {
    let mut reader = Reader { bytes };
    // Each message takes at least two bytes: a count the bytes cannot hold
    // is refused before any allocation.
    let count = (count as usize).min(bytes.len() / 2 + 1);
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(reader.message()?);
    }
    Ok(messages)
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    if value < 240 {
        out.push(value as u8);
        return;
    }
    out.push((value as u8) | 0xF0);
    value = (value - 240) >> 4;
    while value >= 128 {
        out.push((value as u8) | 0x80);
        value = (value - 128) >> 7;
    }
    out.push(value as u8);
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_typed_data(value: &TypedData, out: &mut Vec<u8>) {
    match value {
        TypedData::Null => out.push(TYPE_NULL),
        TypedData::Boolean(value) => out.push(TYPE_BOOL | if *value { FLAG_TRUE } else { 0 }),
        TypedData::Int32(value) => {
            out.push(TYPE_INT32);
            put_varint(i64::from(*value) as u64, out);
        }
        TypedData::Uint32(value) => {
            out.push(TYPE_UINT32);
            put_varint(u64::from(*value), out);
        }
        TypedData::Int64(value) => {
            out.push(TYPE_INT64);
            put_varint(*value as u64, out);
        }
        TypedData::Uint64(value) => {
            out.push(TYPE_UINT64);
            put_varint(*value, out);
        }
        TypedData::Ipv4((a, b, c, d)) => {
            out.push(TYPE_IPV4);
            out.extend_from_slice(&[*a, *b, *c, *d]);
        }
        TypedData::Ipv6((a, b, c, d, e, f, g, h)) => {
            out.push(TYPE_IPV6);
            for group in [a, b, c, d, e, f, g, h] {
                out.extend_from_slice(&group.to_be_bytes());
            }
        }
        TypedData::String(bytes) => {
            out.push(TYPE_STRING);
            put_bytes(bytes, out);
        }
        TypedData::Binary(bytes) => {
            out.push(TYPE_BINARY);
            put_bytes(bytes, out);
        }
    }
}

fn scope_code(scope: VarScope) -> u8 {
    match scope {
        VarScope::Proc => 0,
        VarScope::Sess => 1,
        VarScope::Txn => 2,
        VarScope::Req => 3,
        VarScope::Res => 4,
    }
}

/// Appends one answer (what `handle-message` would return) to `out`.
pub fn encode_answer(answer: &Result<Vec<Action>, String>, out: &mut Vec<u8>) {
    match answer {
        Ok(actions) => {
            out.push(ANSWER_OK);
            put_varint(actions.len() as u64, out);
            for action in actions {
                match action {
                    Action::SetVar(set) => {
                        out.extend_from_slice(&[ACTION_SET_VAR, 3, scope_code(set.scope)]);
                        put_bytes(set.name.as_bytes(), out);
                        put_typed_data(&set.value, out);
                    }
                    Action::UnsetVar(unset) => {
                        out.extend_from_slice(&[ACTION_UNSET_VAR, 2, scope_code(unset.scope)]);
                        put_bytes(unset.name.as_bytes(), out);
                    }
                }
            }
        }
        Err(reason) => {
            out.push(ANSWER_ERR);
            put_bytes(reason.as_bytes(), out);
        }
    }
}

/// Answers held back until `answer-every` of them are ready.
pub(crate) struct HeldAnswers {
    /// The index of the first answer in `bytes`.
    first: usize,
    held: usize,
    every: usize,
    bytes: Vec<u8>,
}

impl HeldAnswers {
    pub(crate) fn new(every: u32) -> HeldAnswers {
        HeldAnswers {
            first: 0,
            held: 0,
            every: every.max(1) as usize,
            bytes: Vec::new(),
        }
    }

    /// The index the next answer must have to be held with the others.
    pub(crate) fn next(&self) -> usize {
        self.first + self.held
    }

    /// Holds one more answer; whether the group is full.
    pub(crate) fn hold(&mut self, answer: &Result<Vec<Action>, String>) -> bool {
        encode_answer(answer, &mut self.bytes);
        self.held += 1;
        self.held >= self.every
    }

    /// The answers held, to hand over: their first index and bytes.
    pub(crate) fn take(&mut self) -> Option<(usize, Vec<u8>)> {
        if self.held == 0 {
            return None;
        }
        let first = self.first;
        self.first += self.held;
        self.held = 0;
        Some((first, std::mem::take(&mut self.bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protocol_vectors() {
        for (value, bytes) in [
            (0u64, &[0x00][..]),
            (239, &[0xef]),
            (240, &[0xf0, 0x00]),
            (2287, &[0xff, 0x7f]),
            (2288, &[0xf0, 0x80, 0x00]),
        ] {
            let mut out = Vec::new();
            put_varint(value, &mut out);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(Reader { bytes }.varint(), Ok(value));
        }
    }

    #[test]
    fn a_check_client_ip_message_decodes_from_its_frame_bytes() {
        // MESSAGE-NAME "check-client-ip", NB-ARGS 1, "ip", IPV4 192.0.2.1,
        // then a message without arguments.
        let mut bytes = vec![15];
        bytes.extend_from_slice(b"check-client-ip");
        bytes.extend_from_slice(&[1, 2, b'i', b'p', TYPE_IPV4, 192, 0, 2, 1]);
        bytes.extend_from_slice(&[1, b'x', 0]);
        let messages = decode_messages(&bytes, 2).expect("decodes");
        assert_eq!(messages[0].name, "check-client-ip");
        assert_eq!(messages[0].args[0].name, "ip");
        assert_eq!(messages[0].args[0].value, TypedData::Ipv4((192, 0, 2, 1)));
        assert_eq!(messages[1].name, "x");
        assert!(messages[1].args.is_empty());
        assert!(decode_messages(&bytes[..bytes.len() - 1], 2).is_err());
    }

    #[test]
    fn every_value_decodes_as_it_was_encoded() {
        let values = [
            TypedData::Null,
            TypedData::Boolean(true),
            TypedData::Boolean(false),
            TypedData::Int32(-7),
            TypedData::Uint32(u32::MAX),
            TypedData::Int64(i64::MIN),
            TypedData::Uint64(u64::MAX),
            TypedData::Ipv4((10, 0, 0, 1)),
            TypedData::Ipv6((0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            TypedData::String(vec![0xff, b'a']),
            TypedData::Binary(vec![0, 1, 2]),
        ];
        for value in values {
            let mut out = Vec::new();
            put_typed_data(&value, &mut out);
            assert_eq!(Reader { bytes: &out }.typed_data(), Ok(value));
        }
    }

    #[test]
    fn answers_are_encoded_as_the_wit_describes() {
        let mut out = Vec::new();
        encode_answer(
            &Ok(vec![
                Action::set(VarScope::Sess, "ip_score", 42u32),
                Action::UnsetVar(crate::UnsetVar {
                    scope: VarScope::Txn,
                    name: "f".into(),
                }),
            ]),
            &mut out,
        );
        encode_answer(&Err("no".into()), &mut out);
        let mut expected = vec![ANSWER_OK, 2, ACTION_SET_VAR, 3, 1, 8];
        expected.extend_from_slice(b"ip_score");
        expected.extend_from_slice(&[TYPE_UINT32, 42, ACTION_UNSET_VAR, 2, 2, 1, b'f']);
        expected.extend_from_slice(&[ANSWER_ERR, 2, b'n', b'o']);
        assert_eq!(out, expected);
    }

    #[test]
    fn answers_are_held_until_a_group_is_full() {
        let mut held = HeldAnswers::new(2);
        assert!(!held.hold(&Ok(vec![])));
        assert!(held.hold(&Ok(vec![])));
        let (first, bytes) = held.take().expect("two answers");
        assert_eq!((first, bytes.len()), (0, 4));
        assert_eq!(held.next(), 2);
        assert!(held.take().is_none());
    }
}
