//! The bytes of a packed batch (`handle-packed-messages`, 0.1.6): messages
//! packed as a NOTIFY frame carries them, and the guest's answers parsed
//! and checked as `handle-message`'s results are.

use bytes::{Buf, Bytes};

use super::instance::{GuestFailure, MAX_REASON_BYTES};
use super::log::truncated;
use crate::spop::{self, varint};

/// Most actions one answer may carry: more is that message's
/// `InvalidOutput` (an ACK could not carry them anyway), and they are read
/// past, not kept, so a guest cannot make the host hold more actions than
/// this per message.
pub(crate) const MAX_ACTIONS_PER_ANSWER: u64 = 255;

/// The first byte of an answer.
const ANSWER_OK: u8 = 0x00;
const ANSWER_ERR: u8 = 0x01;

/// Appends `messages` to `out` in the NOTIFY frame's encoding.
pub(crate) fn pack_messages(messages: &[spop::Message], out: &mut Vec<u8>) {
    out.clear();
    for message in messages {
        message.encode(out);
    }
}

/// One answer: the actions the message gets, or why it gets none.
pub(crate) type PackedAnswer = Result<Vec<spop::Action>, GuestFailure>;

/// Why a buffer of answers could not be read: the guest broke the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packed answer {index} does not parse: {reason}")]
pub(crate) struct MalformedAnswers {
    /// The answer (counted from the buffer's first) that does not parse.
    pub index: usize,
    pub reason: &'static str,
}

/// Reads every answer of `bytes`, at most `room` of them. An answer that
/// parses but carries an invalid variable name is that message's
/// `InvalidOutput`; a buffer that does not parse, is empty, or holds more
/// than `room` answers is [`MalformedAnswers`].
pub(crate) fn parse_answers(
    bytes: Bytes,
    room: usize,
    out: &mut Vec<PackedAnswer>,
) -> Result<usize, MalformedAnswers> {
    let mut src = bytes;
    let mut parsed = 0;
    if !src.has_remaining() {
        return Err(MalformedAnswers {
            index: 0,
            reason: "no answer in the buffer",
        });
    }
    while src.has_remaining() {
        let malformed = |reason| MalformedAnswers {
            index: parsed,
            reason,
        };
        if parsed == room {
            return Err(malformed("more answers than messages left in the batch"));
        }
        let answer = match src.get_u8() {
            ANSWER_OK => parse_actions(&mut src).map_err(malformed)?,
            ANSWER_ERR => {
                let reason = spop::data::decode_bytes(&mut src)
                    .map_err(|_| malformed("truncated error reason"))?;
                let reason = String::from_utf8_lossy(&reason);
                Err(GuestFailure::Returned(
                    truncated(&reason, MAX_REASON_BYTES).to_owned(),
                ))
            }
            _ => return Err(malformed("unknown answer tag (expected 0x00 or 0x01)")),
        };
        out.push(answer);
        parsed += 1;
    }
    Ok(parsed)
}

/// NB-ACTIONS and the actions of one `ok` answer. One invalid name rejects
/// the whole list, as `actions_from_wit` does.
fn parse_actions(src: &mut Bytes) -> Result<PackedAnswer, &'static str> {
    let count = varint::decode(src).map_err(|_| "truncated NB-ACTIONS")?;
    // Each action takes at least four bytes (type, NB-ARGS, scope, an
    // empty name): a count the bytes cannot hold is refused before any
    // allocation.
    if count > (src.remaining() / 4) as u64 {
        return Err("NB-ACTIONS larger than the answer");
    }
    let mut invalid = (count > MAX_ACTIONS_PER_ANSWER)
        .then(|| format!("{count} actions for one message (at most {MAX_ACTIONS_PER_ANSWER})"));
    let mut actions = Vec::with_capacity(if invalid.is_some() {
        0
    } else {
        count.min(16) as usize
    });
    for _ in 0..count {
        let action = spop::Action::decode(src).map_err(|_| "an action does not parse")?;
        if invalid.is_some() {
            // The answer is refused already: read past the rest.
            continue;
        }
        let name = match &action {
            spop::Action::SetVar { name, .. } | spop::Action::UnsetVar { name, .. } => name,
        };
        match spop::check_var_name(name) {
            Ok(()) => actions.push(action),
            Err(reason) => invalid = Some(reason),
        }
    }
    Ok(match invalid {
        Some(reason) => Err(GuestFailure::InvalidOutput(reason)),
        None => Ok(actions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use proptest::prelude::*;
    use spop::{Action, TypedData, VarScope};

    fn ok_answer(actions: &[Action]) -> Vec<u8> {
        let mut out = vec![ANSWER_OK];
        varint::encode(actions.len() as u64, &mut out);
        for action in actions {
            action.encode(&mut out);
        }
        out
    }

    fn parse(bytes: Vec<u8>, room: usize) -> Result<Vec<PackedAnswer>, MalformedAnswers> {
        let mut out = Vec::new();
        parse_answers(Bytes::from(bytes), room, &mut out).map(|_| out)
    }

    #[test]
    fn answers_come_back_as_the_actions_and_reasons_they_encode() {
        let score = Action::SetVar {
            scope: VarScope::Sess,
            name: Bytes::from_static(b"ip_score"),
            value: TypedData::Uint32(42),
        };
        let unset = Action::UnsetVar {
            scope: VarScope::Txn,
            name: Bytes::from_static(b"flag"),
        };
        let mut bytes = ok_answer(&[score.clone(), unset.clone()]);
        bytes.push(ANSWER_ERR);
        spop::data::encode_bytes(b"no such rule", &mut bytes);
        bytes.extend(ok_answer(&[]));
        let answers = parse(bytes, 3).expect("parses");
        assert_eq!(
            answers,
            vec![
                Ok(vec![score, unset]),
                Err(GuestFailure::Returned("no such rule".into())),
                Ok(vec![]),
            ]
        );
    }

    #[test]
    fn an_invalid_name_costs_its_message_only() {
        let bad = Action::UnsetVar {
            scope: VarScope::Txn,
            name: Bytes::new(),
        };
        let mut bytes = ok_answer(&[bad]);
        bytes.extend(ok_answer(&[]));
        let answers = parse(bytes, 2).expect("parses");
        assert!(matches!(answers[0], Err(GuestFailure::InvalidOutput(_))));
        assert_eq!(answers[1], Ok(vec![]));
    }

    #[test]
    fn too_many_actions_cost_their_message_only() {
        let unset = Action::UnsetVar {
            scope: VarScope::Txn,
            name: Bytes::from_static(b"f"),
        };
        let actions = vec![unset; MAX_ACTIONS_PER_ANSWER as usize + 1];
        let mut bytes = ok_answer(&actions);
        bytes.extend(ok_answer(&actions[..MAX_ACTIONS_PER_ANSWER as usize]));
        let answers = parse(bytes, 2).expect("parses");
        assert!(matches!(answers[0], Err(GuestFailure::InvalidOutput(_))));
        assert_eq!(
            answers[1].as_ref().map(Vec::len),
            Ok(MAX_ACTIONS_PER_ANSWER as usize)
        );
    }

    #[test]
    fn a_broken_buffer_is_malformed_at_the_answer_that_breaks() {
        let mut bytes = ok_answer(&[]);
        bytes.put_u8(7);
        assert_eq!(parse(bytes, 2).unwrap_err().index, 1);
        assert!(parse(Vec::new(), 1).is_err());
        assert_eq!(parse(ok_answer(&[]).repeat(3), 2).unwrap_err().index, 2);
        // NB-ACTIONS the bytes cannot hold.
        assert!(parse(vec![ANSWER_OK, 200], 1).is_err());
    }

    #[test]
    fn packed_messages_decode_back_as_the_frame_carried_them() {
        let messages = vec![
            spop::Message {
                name: Bytes::from_static(b"check-client-ip"),
                args: vec![spop::Arg {
                    name: Bytes::from_static(b"ip"),
                    value: TypedData::Ipv4("192.0.2.1".parse().expect("addr")),
                }],
            },
            spop::Message {
                name: Bytes::from_static(b"other"),
                args: Vec::new(),
            },
        ];
        let mut packed = Vec::new();
        pack_messages(&messages, &mut packed);
        let mut src = Bytes::from(packed);
        for message in &messages {
            assert_eq!(&spop::Message::decode(&mut src).expect("decodes"), message);
        }
        assert!(!src.has_remaining());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256), room in 0usize..8) {
            let mut out = Vec::new();
            let parsed = parse_answers(Bytes::from(bytes), room, &mut out);
            if let Ok(n) = parsed {
                prop_assert!(n <= room);
                prop_assert_eq!(n, out.len());
            }
        }
    }
}
