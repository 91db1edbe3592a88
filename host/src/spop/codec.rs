//! Length-prefixed framing over a byte stream, as `tokio_util` codec traits.
//!
//! The length limit is enforced on the 4-byte prefix, before a single byte of
//! the body is buffered: an HTTP request sent to the port by mistake reads as
//! a ~1.2 GB frame and is refused at once.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::LENGTH_PREFIX;
use super::error::DecodeError;
use super::frame::{Action, Frame};

/// Errors of the framed stream: the socket's, or the peer's bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A frame that SPOP cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// NB-ARGS is one byte: a message carries at most 255 arguments.
    #[error("a message has {0} arguments; SPOP carries at most 255")]
    TooManyArgs(usize),
}

/// SPOP framing with a maximum frame size (excluding the length prefix).
#[derive(Debug, Clone)]
pub struct SpopCodec {
    max_frame_size: u32,
}

impl SpopCodec {
    pub fn new(max_frame_size: u32) -> SpopCodec {
        SpopCodec { max_frame_size }
    }

    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Applies the size negotiated in HELLO to every later frame.
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size;
    }

    /// Splits the next whole frame off `src` without decoding it; `Ok(None)`
    /// until a whole frame is buffered.
    pub fn next_frame_bytes(&self, src: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > self.max_frame_size {
            return Err(DecodeError::FrameTooBig {
                len: u64::from(len),
                max: self.max_frame_size,
            });
        }
        if len == 0 {
            return Err(DecodeError::Invalid("zero-length frame"));
        }
        let total = LENGTH_PREFIX + len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        Ok(Some(src.split_to(len as usize)))
    }
}

impl Decoder for SpopCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.next_frame_bytes(src)? {
            Some(body) => Ok(Some(Frame::decode(body.freeze())?)),
            None => Ok(None),
        }
    }
}

impl Encoder<&Frame> for SpopCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame(frame, dst)?;
        Ok(())
    }
}

/// Appends `frame` with its length prefix to `dst`; returns the frame's size
/// without the prefix. A frame SPOP cannot carry is refused before anything
/// is written. (ACKs, the only frames whose size depends on guests, are
/// written with [`AckEncoder`], which enforces the max-frame-size.)
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) -> Result<usize, EncodeError> {
    if let Frame::Notify(notify) = frame
        && let Some(message) = notify.messages.iter().find(|m| m.args.len() > 255)
    {
        return Err(EncodeError::TooManyArgs(message.args.len()));
    }
    let start = dst.len();
    dst.put_u32(0);
    frame.encode(dst);
    let len = dst.len() - start - LENGTH_PREFIX;
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(len)
}

/// Writes one ACK frame straight into an output buffer, never past the
/// connection's max-frame-size: actions are added all-or-nothing per message,
/// and [`AckEncoder::room`] says how much space is left for them.
pub struct AckEncoder<'a> {
    dst: &'a mut BytesMut,
    start: usize,
    /// Largest frame (without its length prefix) allowed.
    max_frame_size: usize,
    actions: usize,
}

/// The actions did not fit: `needed` bytes, `room` left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFull {
    pub needed: usize,
    pub room: usize,
}

impl<'a> AckEncoder<'a> {
    /// Starts an ACK for `stream_id`/`frame_id`. The header always fits: the
    /// smallest max-frame-size SPOP allows (256) exceeds the largest header.
    pub fn begin(
        dst: &'a mut BytesMut,
        stream_id: u64,
        frame_id: u64,
        max_frame_size: u32,
    ) -> AckEncoder<'a> {
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(crate::spop::FrameType::Ack.code());
        dst.put_u32(crate::spop::FLAG_FIN);
        crate::spop::varint::encode(stream_id, dst);
        crate::spop::varint::encode(frame_id, dst);
        AckEncoder {
            dst,
            start,
            max_frame_size: max_frame_size as usize,
            actions: 0,
        }
    }

    fn frame_len(&self) -> usize {
        self.dst.len() - self.start - LENGTH_PREFIX
    }

    /// Bytes still available for actions in this frame.
    pub fn room(&self) -> usize {
        self.max_frame_size.saturating_sub(self.frame_len())
    }

    /// Appends every action of one message, or none of them if they do not
    /// all fit.
    pub fn push_all(&mut self, actions: &[Action]) -> Result<(), AckFull> {
        let needed: usize = actions.iter().map(Action::encoded_len).sum();
        let room = self.room();
        if needed > room {
            return Err(AckFull { needed, room });
        }
        for action in actions {
            action.encode(self.dst);
        }
        self.actions += actions.len();
        Ok(())
    }

    /// Completes the frame's length prefix; returns the number of actions.
    pub fn finish(self) -> usize {
        let len = self.frame_len() as u32;
        self.dst[self.start..self.start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        self.actions
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::spop::frame::{Ack, Action, Arg, KvList, Message, Notify, VarScope};
    use crate::spop::{Status, TypedData};

    fn hex(text: &str) -> BytesMut {
        let digits: Vec<u8> = text
            .split_whitespace()
            .map(|pair| u8::from_str_radix(pair, 16).expect("hex vector"))
            .collect();
        BytesMut::from(&digits[..])
    }

    fn decode_one(text: &str) -> Result<Frame, CodecError> {
        let mut buf = hex(text);
        let frame = SpopCodec::new(16380)
            .decode(&mut buf)?
            .expect("whole frame buffered");
        assert!(buf.is_empty(), "bytes left after the frame");
        Ok(frame)
    }

    fn encoded(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out).expect("encodable");
        out
    }

    const HEALTHCHECK_HELLO: &str = "00 00 00 4e 01 00 00 00 01 00 00 12 73 75 70 70 6f 72 74 65 64 2d 76 65 72 73 69 6f 6e 73 08 03 32 2e 30 0e 6d 61 78 2d 66 72 61 6d 65 2d 73 69 7a 65 03 fc f0 06 0c 63 61 70 61 62 69 6c 69 74 69 65 73 08 00 0b 68 65 61 6c 74 68 63 68 65 63 6b 11";
    const HAPROXY_HELLO: &str = "00 00 00 65 01 00 00 00 01 00 00 12 73 75 70 70 6f 72 74 65 64 2d 76 65 72 73 69 6f 6e 73 08 03 32 2e 30 0e 6d 61 78 2d 66 72 61 6d 65 2d 73 69 7a 65 03 fc f0 06 0c 63 61 70 61 62 69 6c 69 74 69 65 73 08 10 70 69 70 65 6c 69 6e 69 6e 67 2c 61 73 79 6e 63 09 65 6e 67 69 6e 65 2d 69 64 08 08 33 44 35 42 39 43 31 41";
    const AGENT_HELLO: &str = "00 00 00 40 65 00 00 00 01 00 00 07 76 65 72 73 69 6f 6e 08 03 32 2e 30 0e 6d 61 78 2d 66 72 61 6d 65 2d 73 69 7a 65 03 fc f0 06 0c 63 61 70 61 62 69 6c 69 74 69 65 73 08 0a 70 69 70 65 6c 69 6e 69 6e 67";
    const NOTIFY_CHECK_CLIENT_IP: &str = "00 00 00 1e 03 00 00 00 01 14 01 0f 63 68 65 63 6b 2d 63 6c 69 65 6e 74 2d 69 70 01 00 06 7f 00 00 01";
    const NOTIFY_HOST_ORDER_FLAGS: &str = "00 00 00 1e 03 01 00 00 00 14 01 0f 63 68 65 63 6b 2d 63 6c 69 65 6e 74 2d 69 70 01 00 06 7f 00 00 01";
    const NOTIFY_TWO_MESSAGES: &str = "00 00 00 46 03 00 00 00 01 fc 03 07 0f 63 68 65 63 6b 2d 63 6c 69 65 6e 74 2d 69 70 01 02 69 70 06 c0 00 02 01 0f 63 68 65 63 6b 2d 63 6c 69 65 6e 74 2d 69 70 01 02 69 70 07 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01";
    const ACK_SET_SCORE: &str =
        "00 00 00 16 67 00 00 00 01 fc 03 07 01 03 01 08 69 70 5f 73 63 6f 72 65 02 32";
    const ACK_EMPTY: &str = "00 00 00 07 67 00 00 00 01 14 01";
    const ACK_UNSET_FLAG: &str = "00 00 00 0f 67 00 00 00 01 01 01 02 02 02 04 66 6c 61 67";
    const DISCONNECT_NORMAL: &str = "00 00 00 25 66 00 00 00 01 00 00 0b 73 74 61 74 75 73 2d 63 6f 64 65 03 00 07 6d 65 73 73 61 67 65 08 06 6e 6f 72 6d 61 6c";
    const DISCONNECT_TOO_BIG: &str = "00 00 00 2f 66 00 00 00 01 00 00 0b 73 74 61 74 75 73 2d 63 6f 64 65 03 03 07 6d 65 73 73 61 67 65 08 10 66 72 61 6d 65 20 69 73 20 74 6f 6f 20 62 69 67";

    fn check_client_ip(value: TypedData, arg_name: &'static str) -> Message {
        Message {
            name: Bytes::from_static(b"check-client-ip"),
            args: vec![Arg {
                name: Bytes::from_static(arg_name.as_bytes()),
                value,
            }],
        }
    }

    #[test]
    fn healthcheck_hello_vector() {
        let Frame::HaproxyHello(kv) = decode_one(HEALTHCHECK_HELLO).expect("decodes") else {
            panic!("not a HELLO");
        };
        assert_eq!(kv.get_str("supported-versions"), Some(&b"2.0"[..]));
        assert_eq!(kv.get("max-frame-size"), Some(&TypedData::Uint32(16380)));
        assert_eq!(kv.get_str("capabilities"), Some(&b""[..]));
        assert_eq!(kv.get("healthcheck"), Some(&TypedData::Bool(true)));
        assert_eq!(encoded(&Frame::HaproxyHello(kv)), hex(HEALTHCHECK_HELLO));
    }

    #[test]
    fn haproxy_hello_vector() {
        let Frame::HaproxyHello(kv) = decode_one(HAPROXY_HELLO).expect("decodes") else {
            panic!("not a HELLO");
        };
        assert_eq!(kv.get_str("capabilities"), Some(&b"pipelining,async"[..]));
        assert_eq!(kv.get_str("engine-id"), Some(&b"3D5B9C1A"[..]));
        assert_eq!(encoded(&Frame::HaproxyHello(kv)), hex(HAPROXY_HELLO));
    }

    #[test]
    fn agent_hello_vector() {
        let hello = KvList::new()
            .with("version", TypedData::String(Bytes::from_static(b"2.0")))
            .with("max-frame-size", TypedData::Uint32(16380))
            .with(
                "capabilities",
                TypedData::String(Bytes::from_static(b"pipelining")),
            );
        let frame = Frame::AgentHello(hello);
        assert_eq!(encoded(&frame), hex(AGENT_HELLO));
        assert_eq!(decode_one(AGENT_HELLO).expect("decodes"), frame);
    }

    #[test]
    fn seed_notify_capture_decodes_to_stream_20_frame_1() {
        let expected = Frame::Notify(Notify {
            stream_id: 20,
            frame_id: 1,
            messages: vec![check_client_ip(TypedData::Ipv4(Ipv4Addr::LOCALHOST), "")],
        });
        assert_eq!(
            decode_one(NOTIFY_CHECK_CLIENT_IP).expect("decodes"),
            expected
        );
        assert_eq!(encoded(&expected), hex(NOTIFY_CHECK_CLIENT_IP));
    }

    #[test]
    fn host_order_flags_mean_fin_unset_status_10() {
        let err = decode_one(NOTIFY_HOST_ORDER_FLAGS).expect_err("must fail");
        let CodecError::Decode(err) = err else {
            panic!("not a decode error");
        };
        assert_eq!(err.status(), Status::FragmentationNotSupported);
        assert_eq!(err.status().code(), 10);
    }

    #[test]
    fn notify_with_two_messages_vector() {
        let expected = Frame::Notify(Notify {
            stream_id: 300,
            frame_id: 7,
            messages: vec![
                check_client_ip(TypedData::Ipv4(Ipv4Addr::new(192, 0, 2, 1)), "ip"),
                check_client_ip(
                    TypedData::Ipv6("2001:db8::1".parse::<Ipv6Addr>().expect("addr")),
                    "ip",
                ),
            ],
        });
        assert_eq!(decode_one(NOTIFY_TWO_MESSAGES).expect("decodes"), expected);
        assert_eq!(encoded(&expected), hex(NOTIFY_TWO_MESSAGES));
    }

    #[test]
    fn ack_vectors() {
        let ack = |stream_id, frame_id, actions| {
            Frame::Ack(Ack {
                stream_id,
                frame_id,
                actions,
            })
        };
        let set_score = ack(
            300,
            7,
            vec![Action::SetVar {
                scope: VarScope::Sess,
                name: Bytes::from_static(b"ip_score"),
                value: TypedData::Int32(50),
            }],
        );
        let empty = ack(20, 1, vec![]);
        let unset = ack(
            1,
            1,
            vec![Action::UnsetVar {
                scope: VarScope::Txn,
                name: Bytes::from_static(b"flag"),
            }],
        );
        for (frame, vector) in [
            (set_score, ACK_SET_SCORE),
            (empty, ACK_EMPTY),
            (unset, ACK_UNSET_FLAG),
        ] {
            assert_eq!(encoded(&frame), hex(vector));
            assert_eq!(decode_one(vector).expect("decodes"), frame);
        }
    }

    #[test]
    fn agent_disconnect_vectors() {
        for (status, vector) in [
            (Status::Normal, DISCONNECT_NORMAL),
            (Status::FrameTooBig, DISCONNECT_TOO_BIG),
        ] {
            let frame = Frame::AgentDisconnect(KvList::disconnect(status, status.message()));
            assert_eq!(encoded(&frame), hex(vector));
        }
    }

    #[test]
    fn oversized_prefix_is_refused_before_buffering() {
        let mut codec = SpopCodec::new(16380);
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let err = codec.decode(&mut http).expect_err("must refuse");
        assert!(matches!(
            err,
            CodecError::Decode(DecodeError::FrameTooBig {
                len: 0x4745_5420,
                ..
            })
        ));
        assert!(http.capacity() < 1024, "buffered the announced length");
    }

    #[test]
    fn zero_length_and_partial_frames() {
        let mut codec = SpopCodec::new(16380);
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(codec.decode(&mut zero).is_err());
        let whole = hex(NOTIFY_CHECK_CLIENT_IP);
        for cut in 0..whole.len() {
            let mut partial = BytesMut::from(&whole[..cut]);
            assert!(codec.decode(&mut partial).expect("no error").is_none());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut codec = SpopCodec::new(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}
