//! SPOP frames: `TYPE:u8 FLAGS:u32 STREAM-ID:varint FRAME-ID:varint PAYLOAD`,
//! without the 4-byte length prefix (that is the codec's business).

use bytes::{Buf, BufMut, Bytes};

use super::data::{TypedData, bytes_encoded_len, decode_bytes, encode_bytes};
use super::error::{DecodeError, Status};
use super::{FLAG_ABORT, FLAG_FIN, varint};

/// Frame type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    HaproxyHello,
    HaproxyDisconnect,
    Notify,
    AgentHello,
    AgentDisconnect,
    Ack,
}

impl FrameType {
    pub const ALL: [FrameType; 6] = [
        FrameType::HaproxyHello,
        FrameType::HaproxyDisconnect,
        FrameType::Notify,
        FrameType::AgentHello,
        FrameType::AgentDisconnect,
        FrameType::Ack,
    ];

    /// Position in [`FrameType::ALL`], for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn code(self) -> u8 {
        match self {
            FrameType::HaproxyHello => 1,
            FrameType::HaproxyDisconnect => 2,
            FrameType::Notify => 3,
            FrameType::AgentHello => 101,
            FrameType::AgentDisconnect => 102,
            FrameType::Ack => 103,
        }
    }

    pub fn from_code(code: u8) -> Option<FrameType> {
        Some(match code {
            1 => FrameType::HaproxyHello,
            2 => FrameType::HaproxyDisconnect,
            3 => FrameType::Notify,
            101 => FrameType::AgentHello,
            102 => FrameType::AgentDisconnect,
            103 => FrameType::Ack,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameType::HaproxyHello => "haproxy-hello",
            FrameType::HaproxyDisconnect => "haproxy-disconnect",
            FrameType::Notify => "notify",
            FrameType::AgentHello => "agent-hello",
            FrameType::AgentDisconnect => "agent-disconnect",
            FrameType::Ack => "ack",
        }
    }
}

/// A list of `NAME:string VALUE:typed-data` pairs (HELLO and DISCONNECT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvList(pub Vec<(Bytes, TypedData)>);

impl KvList {
    pub fn new() -> KvList {
        KvList::default()
    }

    pub fn with(mut self, key: &'static str, value: TypedData) -> KvList {
        self.0.push((Bytes::from_static(key.as_bytes()), value));
        self
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&TypedData> {
        self.0
            .iter()
            .find(|(name, _)| name.as_ref() == key.as_bytes())
            .map(|(_, value)| value)
    }

    /// The value under `key` when it is a STRING.
    pub fn get_str(&self, key: &str) -> Option<&[u8]> {
        match self.get(key) {
            Some(TypedData::String(bytes)) => Some(bytes),
            _ => None,
        }
    }

    fn decode(src: &mut Bytes) -> Result<KvList, DecodeError> {
        let mut items = Vec::new();
        while src.has_remaining() {
            let name = decode_bytes(src)?;
            let value = TypedData::decode(src)?;
            items.push((name, value));
        }
        Ok(KvList(items))
    }

    fn encode(&self, dst: &mut impl BufMut) {
        for (name, value) in &self.0 {
            encode_bytes(name, dst);
            value.encode(dst);
        }
    }

    /// A DISCONNECT payload for `status`.
    pub fn disconnect(status: Status, message: &str) -> KvList {
        KvList::new()
            .with("status-code", TypedData::Uint32(status.code()))
            .with(
                "message",
                TypedData::String(Bytes::copy_from_slice(message.as_bytes())),
            )
    }

    /// A HAPROXY-HELLO payload as a peer speaking SPOP 2.0 sends it (the
    /// benchmark's and tests' clients).
    pub fn haproxy_hello(max_frame_size: u32, capabilities: &'static str) -> KvList {
        KvList::new()
            .with(
                "supported-versions",
                TypedData::String(Bytes::from_static(b"2.0")),
            )
            .with("max-frame-size", TypedData::Uint32(max_frame_size))
            .with(
                "capabilities",
                TypedData::String(Bytes::from_static(capabilities.as_bytes())),
            )
    }
}

/// The payload of a HELLO frame (HAPROXY-HELLO or AGENT-HELLO), typed.
/// Parsed here only; missing or mistyped keys read as `None`, and the
/// agent's policy decides what that means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// `supported-versions` (HAPROXY-HELLO): a comma list.
    pub supported_versions: Option<Bytes>,
    /// `version` (AGENT-HELLO).
    pub version: Option<Bytes>,
    /// `max-frame-size`, from any integer type; negative reads as `None`.
    pub max_frame_size: Option<u64>,
    /// `capabilities`: a comma list.
    pub capabilities: Option<Bytes>,
    /// `healthcheck`: true only for a boolean true.
    pub healthcheck: bool,
    /// `engine-id`.
    pub engine_id: Option<Bytes>,
}

impl Hello {
    pub fn parse(kv: &KvList) -> Hello {
        let string = |key| kv.get_str(key).map(Bytes::copy_from_slice);
        Hello {
            supported_versions: string("supported-versions"),
            version: string("version"),
            max_frame_size: kv.get("max-frame-size").and_then(TypedData::as_u64),
            capabilities: string("capabilities"),
            healthcheck: matches!(kv.get("healthcheck"), Some(TypedData::Bool(true))),
            engine_id: string("engine-id"),
        }
    }

    /// The key/value list of an AGENT-HELLO: `version`, `max-frame-size`
    /// (as UINT32) and `capabilities`.
    pub fn agent_kv(
        version: &'static str,
        max_frame_size: u32,
        capabilities: &'static str,
    ) -> KvList {
        KvList::new()
            .with(
                "version",
                TypedData::String(Bytes::from_static(version.as_bytes())),
            )
            .with("max-frame-size", TypedData::Uint32(max_frame_size))
            .with(
                "capabilities",
                TypedData::String(Bytes::from_static(capabilities.as_bytes())),
            )
    }
}

/// The payload of a DISCONNECT frame (either direction), typed. Parsed here
/// only, so the agent and every client read it the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// `status-code`; absent or not an integer reads as `None`.
    pub status_code: Option<u32>,
    /// `message`, lossily decoded; absent reads as empty.
    pub message: String,
}

impl Disconnect {
    pub fn parse(kv: &KvList) -> Disconnect {
        Disconnect {
            status_code: kv
                .get("status-code")
                .and_then(TypedData::as_u64)
                .and_then(|code| u32::try_from(code).ok()),
            message: kv
                .get_str("message")
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default(),
        }
    }
}

/// One argument of a message. `name` is empty for unnamed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: Bytes,
    pub value: TypedData,
}

/// One SPOE message of a NOTIFY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub name: Bytes,
    pub args: Vec<Arg>,
}

impl Message {
    pub fn decode(src: &mut Bytes) -> Result<Message, DecodeError> {
        let name = decode_bytes(src)?;
        if !src.has_remaining() {
            return Err(DecodeError::Invalid("message without NB-ARGS"));
        }
        let nb_args = src.get_u8();
        // Each argument takes at least two bytes (empty name, NULL), so the
        // capacity never exceeds what the frame could hold.
        let mut args = Vec::with_capacity(usize::from(nb_args).min(src.remaining() / 2));
        for _ in 0..nb_args {
            let name = decode_bytes(src)?;
            let value = TypedData::decode(src)?;
            args.push(Arg { name, value });
        }
        Ok(Message { name, args })
    }

    pub fn encode(&self, dst: &mut impl BufMut) {
        encode_bytes(&self.name, dst);
        // `encode_frame` refuses messages of more than 255 arguments.
        dst.put_u8(u8::try_from(self.args.len()).unwrap_or(u8::MAX));
        for arg in &self.args {
            encode_bytes(&arg.name, dst);
            arg.value.encode(dst);
        }
    }
}

/// NOTIFY: HAProxy asks the agent to process messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub stream_id: u64,
    pub frame_id: u64,
    pub messages: Vec<Message>,
}

/// The scope of a variable set or unset by an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VarScope {
    Proc,
    Sess,
    Txn,
    Req,
    Res,
}

impl VarScope {
    /// HAProxy's name for the scope.
    pub fn name(self) -> &'static str {
        match self {
            VarScope::Proc => "proc",
            VarScope::Sess => "sess",
            VarScope::Txn => "txn",
            VarScope::Req => "req",
            VarScope::Res => "res",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            VarScope::Proc => 0,
            VarScope::Sess => 1,
            VarScope::Txn => 2,
            VarScope::Req => 3,
            VarScope::Res => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<VarScope> {
        Some(match code {
            0 => VarScope::Proc,
            1 => VarScope::Sess,
            2 => VarScope::Txn,
            3 => VarScope::Req,
            4 => VarScope::Res,
            _ => return None,
        })
    }
}

/// Longest variable name an action may carry (HAProxy's own names are short;
/// this bounds what one action can cost in an ACK).
pub const MAX_VAR_NAME: usize = 255;

/// Checks a variable name for a SET-VAR or UNSET-VAR action.
pub fn check_var_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_VAR_NAME {
        return Err(format!(
            "variable name of {} bytes (must be 1..={MAX_VAR_NAME})",
            name.len()
        ));
    }
    Ok(())
}

pub const ACTION_SET_VAR: u8 = 1;
pub const ACTION_UNSET_VAR: u8 = 2;

/// One action of an ACK frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetVar {
        scope: VarScope,
        name: Bytes,
        value: TypedData,
    },
    UnsetVar {
        scope: VarScope,
        name: Bytes,
    },
}

impl Action {
    pub fn decode(src: &mut Bytes) -> Result<Action, DecodeError> {
        if src.remaining() < 3 {
            return Err(DecodeError::Invalid("truncated action"));
        }
        let action_type = src.get_u8();
        let nb_args = src.get_u8();
        let scope = VarScope::from_code(src.get_u8())
            .ok_or(DecodeError::Invalid("unknown variable scope"))?;
        match (action_type, nb_args) {
            (ACTION_SET_VAR, 3) => Ok(Action::SetVar {
                scope,
                name: decode_bytes(src)?,
                value: TypedData::decode(src)?,
            }),
            (ACTION_UNSET_VAR, 2) => Ok(Action::UnsetVar {
                scope,
                name: decode_bytes(src)?,
            }),
            _ => Err(DecodeError::Invalid("unknown action or wrong NB-ARGS")),
        }
    }

    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        match self {
            Action::SetVar { scope, name, value } => {
                dst.put_slice(&[ACTION_SET_VAR, 3, scope.code()]);
                encode_bytes(name, dst);
                value.encode(dst);
            }
            Action::UnsetVar { scope, name } => {
                dst.put_slice(&[ACTION_UNSET_VAR, 2, scope.code()]);
                encode_bytes(name, dst);
            }
        }
    }

    /// Exactly how many bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Action::SetVar { name, value, .. } => 3 + bytes_encoded_len(name) + value.encoded_len(),
            Action::UnsetVar { name, .. } => 3 + bytes_encoded_len(name),
        }
    }
}

/// ACK: the agent's answer to one NOTIFY, with the same ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub stream_id: u64,
    pub frame_id: u64,
    pub actions: Vec<Action>,
}

/// One SPOP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    HaproxyHello(KvList),
    HaproxyDisconnect(KvList),
    Notify(Notify),
    AgentHello(KvList),
    AgentDisconnect(KvList),
    Ack(Ack),
}

impl Frame {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::HaproxyHello(_) => FrameType::HaproxyHello,
            Frame::HaproxyDisconnect(_) => FrameType::HaproxyDisconnect,
            Frame::Notify(_) => FrameType::Notify,
            Frame::AgentHello(_) => FrameType::AgentHello,
            Frame::AgentDisconnect(_) => FrameType::AgentDisconnect,
            Frame::Ack(_) => FrameType::Ack,
        }
    }

    /// Decodes one whole frame (length prefix already removed). Strings in the
    /// result share `src`'s buffer.
    pub fn decode(mut src: Bytes) -> Result<Frame, DecodeError> {
        if src.remaining() < 5 {
            return Err(DecodeError::Invalid("frame shorter than its header"));
        }
        let frame_type =
            FrameType::from_code(src.get_u8()).ok_or(DecodeError::Invalid("unknown frame type"))?;
        let flags = src.get_u32();
        let stream_id = varint::decode(&mut src)?;
        let frame_id = varint::decode(&mut src)?;
        // Host-order flags (`01 00 00 00`) land here too: FIN is not set.
        if flags & FLAG_FIN == 0 || flags & FLAG_ABORT != 0 {
            return Err(DecodeError::Fragmented);
        }
        let is_connection_frame = !matches!(frame_type, FrameType::Notify | FrameType::Ack);
        if is_connection_frame && (stream_id != 0 || frame_id != 0) {
            return Err(DecodeError::Invalid("HELLO/DISCONNECT with non-zero ids"));
        }
        let frame = match frame_type {
            FrameType::HaproxyHello => Frame::HaproxyHello(KvList::decode(&mut src)?),
            FrameType::HaproxyDisconnect => Frame::HaproxyDisconnect(KvList::decode(&mut src)?),
            FrameType::AgentHello => Frame::AgentHello(KvList::decode(&mut src)?),
            FrameType::AgentDisconnect => Frame::AgentDisconnect(KvList::decode(&mut src)?),
            FrameType::Notify => {
                let mut messages = Vec::with_capacity(1);
                while src.has_remaining() {
                    messages.push(Message::decode(&mut src)?);
                }
                Frame::Notify(Notify {
                    stream_id,
                    frame_id,
                    messages,
                })
            }
            FrameType::Ack => {
                let mut actions = Vec::new();
                while src.has_remaining() {
                    actions.push(Action::decode(&mut src)?);
                }
                Frame::Ack(Ack {
                    stream_id,
                    frame_id,
                    actions,
                })
            }
        };
        Ok(frame)
    }

    /// Appends the frame, without length prefix, to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let (stream_id, frame_id) = match self {
            Frame::Notify(n) => (n.stream_id, n.frame_id),
            Frame::Ack(a) => (a.stream_id, a.frame_id),
            _ => (0, 0),
        };
        dst.put_u8(self.frame_type().code());
        dst.put_u32(FLAG_FIN);
        varint::encode(stream_id, dst);
        varint::encode(frame_id, dst);
        match self {
            Frame::HaproxyHello(kv)
            | Frame::HaproxyDisconnect(kv)
            | Frame::AgentHello(kv)
            | Frame::AgentDisconnect(kv) => kv.encode(dst),
            Frame::Notify(notify) => notify.messages.iter().for_each(|m| m.encode(dst)),
            Frame::Ack(ack) => ack.actions.iter().for_each(|a| a.encode(dst)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::data::tests::arb_typed_data;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn arb_scope() -> impl Strategy<Value = VarScope> {
        (0u8..5).prop_map(|c| VarScope::from_code(c).expect("valid scope"))
    }

    fn arb_action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (arb_scope(), arb_bytes(), arb_typed_data())
                .prop_map(|(scope, name, value)| Action::SetVar { scope, name, value }),
            (arb_scope(), arb_bytes()).prop_map(|(scope, name)| Action::UnsetVar { scope, name }),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            arb_bytes(),
            proptest::collection::vec(
                (arb_bytes(), arb_typed_data()).prop_map(|(name, value)| Arg { name, value }),
                0..6,
            ),
        )
            .prop_map(|(name, args)| Message { name, args })
    }

    fn arb_kv() -> impl Strategy<Value = KvList> {
        proptest::collection::vec((arb_bytes(), arb_typed_data()), 0..5).prop_map(KvList)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let messages = proptest::collection::vec(arb_message(), 0..4);
        let actions = proptest::collection::vec(arb_action(), 0..6);
        prop_oneof![
            arb_kv().prop_map(Frame::HaproxyHello),
            arb_kv().prop_map(Frame::HaproxyDisconnect),
            arb_kv().prop_map(Frame::AgentHello),
            arb_kv().prop_map(Frame::AgentDisconnect),
            (any::<[u64; 2]>(), messages).prop_map(|([stream_id, frame_id], messages)| {
                Frame::Notify(Notify {
                    stream_id,
                    frame_id,
                    messages,
                })
            }),
            (any::<[u64; 2]>(), actions).prop_map(|([stream_id, frame_id], actions)| {
                let ack = Ack {
                    stream_id,
                    frame_id,
                    actions,
                };
                Frame::Ack(ack)
            }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(frame in arb_frame()) {
            let mut out = Vec::new();
            frame.encode(&mut out);
            prop_assert_eq!(Frame::decode(Bytes::from(out)), Ok(frame));
        }

        #[test]
        fn action_encoded_len_is_exact(action in arb_action()) {
            let mut out = Vec::new();
            action.encode(&mut out);
            prop_assert_eq!(out.len(), action.encoded_len());
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_notify_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut frame = vec![3, 0, 0, 0, 1, 1, 1];
            frame.extend_from_slice(&body);
            let _ = Frame::decode(Bytes::from(frame));
        }
    }
}
