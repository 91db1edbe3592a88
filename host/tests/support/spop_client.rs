//! A blocking SPOP client playing HAProxy's part, built on the host's codec.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spoa_host::spop::codec::encode_frame;
use spoa_host::spop::{
    Ack, Action, Arg, Frame, KvList, Message, Notify, SpopCodec, TypedData, VarScope,
};
use tokio_util::codec::Decoder;

#[derive(Debug)]
pub enum RecvError {
    /// The agent closed the connection (EOF or reset).
    Closed,
    Timeout,
    Decode(String),
}

/// Over TCP by default; [`SpopClient::over`] takes any stream (TLS).
pub struct SpopClient<S = TcpStream> {
    stream: S,
    buf: BytesMut,
    codec: SpopCodec,
}

impl SpopClient {
    pub fn connect(addr: SocketAddr) -> SpopClient {
        let stream = TcpStream::connect(addr).expect("connecting to the agent");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("setting a read timeout");
        let _ = stream.set_nodelay(true);
        SpopClient {
            stream,
            buf: BytesMut::new(),
            codec: SpopCodec::new(16 * 1024 * 1024),
        }
    }

    /// Connected and past the HELLO, with pipelining: ready for NOTIFYs.
    pub fn pipelined(addr: SocketAddr) -> SpopClient {
        let mut client = SpopClient::connect(addr);
        client.hello("pipelining");
        client
    }

    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream
            .set_read_timeout(Some(limit))
            .expect("setting a read timeout");
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl<S: Read + Write> SpopClient<S> {
    pub fn over(stream: S) -> SpopClient<S> {
        SpopClient {
            stream,
            buf: BytesMut::new(),
            codec: SpopCodec::new(16 * 1024 * 1024),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the agent");
    }

    /// Writes, reporting failure instead of panicking (the agent may have
    /// closed already, which some tests expect).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, frame: &Frame) {
        self.send_raw(&encoded(frame));
    }

    pub fn recv(&mut self) -> Result<Frame, RecvError> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(err) => return Err(RecvError::Decode(err.to_string())),
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(RecvError::Timeout);
                }
                Err(_) => return Err(RecvError::Closed),
            }
        }
    }

    /// HELLO with the given capabilities; returns the AGENT-HELLO payload.
    pub fn hello(&mut self, capabilities: &str) -> KvList {
        self.send(&hello_frame("2.0", 16380, capabilities, false));
        match self.recv() {
            Ok(Frame::AgentHello(kv)) => kv,
            other => panic!("expected AGENT-HELLO, got {other:?}"),
        }
    }

    pub fn recv_ack(&mut self) -> Ack {
        match self.recv() {
            Ok(Frame::Ack(ack)) => ack,
            other => panic!("expected ACK, got {other:?}"),
        }
    }

    /// The next frame must be AGENT-DISCONNECT; returns its status code and message.
    pub fn expect_disconnect(&mut self) -> (u32, String) {
        match self.recv() {
            Ok(Frame::AgentDisconnect(kv)) => disconnect_fields(&kv),
            other => panic!("expected AGENT-DISCONNECT, got {other:?}"),
        }
    }

    /// After the agent's last frame: the connection must be closed by the agent.
    pub fn expect_closed(&mut self) {
        match self.recv() {
            Err(RecvError::Closed) => {}
            other => panic!("expected the agent to close the connection, got {other:?}"),
        }
    }
}

pub fn disconnect_fields(kv: &KvList) -> (u32, String) {
    let disconnect = spoa_host::spop::Disconnect::parse(kv);
    (
        disconnect.status_code.expect("status-code present"),
        disconnect.message,
    )
}

pub fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(frame, &mut out).expect("test frames are encodable");
    out.to_vec()
}

pub fn hello_frame(
    versions: &str,
    max_frame_size: u32,
    capabilities: &str,
    healthcheck: bool,
) -> Frame {
    let mut kv = KvList::new()
        .with("supported-versions", string(versions))
        .with("max-frame-size", TypedData::Uint32(max_frame_size))
        .with("capabilities", string(capabilities));
    if healthcheck {
        kv = kv.with("healthcheck", TypedData::Bool(true));
    }
    Frame::HaproxyHello(kv)
}

pub fn string(text: &str) -> TypedData {
    TypedData::String(Bytes::copy_from_slice(text.as_bytes()))
}

pub fn message(name: &str, args: Vec<(&str, TypedData)>) -> Message {
    Message {
        name: Bytes::copy_from_slice(name.as_bytes()),
        args: args
            .into_iter()
            .map(|(n, value)| Arg {
                name: Bytes::copy_from_slice(n.as_bytes()),
                value,
            })
            .collect(),
    }
}

pub fn check_client_ip(ip: Ipv4Addr) -> Message {
    message("check-client-ip", vec![("ip", TypedData::Ipv4(ip))])
}

pub fn notify_frame(stream_id: u64, frame_id: u64, messages: Vec<Message>) -> Frame {
    Frame::Notify(Notify {
        stream_id,
        frame_id,
        messages,
    })
}

/// The `ip_score` an ACK sets, if it sets exactly that.
pub fn score_of(ack: &Ack) -> Option<i64> {
    match ack.actions.as_slice() {
        [
            Action::SetVar {
                scope: VarScope::Sess,
                name,
                value,
            },
        ] if &name[..] == b"ip_score" => value.as_i64(),
        _ => None,
    }
}

/// The variables an ACK sets, in order, as (name, value) pairs.
pub fn set_vars(ack: &Ack) -> impl Iterator<Item = (String, TypedData)> + '_ {
    ack.actions.iter().filter_map(|action| match action {
        spoa_host::spop::Action::SetVar { name, value, .. } => {
            Some((String::from_utf8_lossy(name).into_owned(), value.clone()))
        }
        _ => None,
    })
}

/// A connection after a pipelining HELLO that sends NOTIFYs one at a time,
/// on stream 1, with frame ids counting from 1.
pub struct Session {
    pub spop: SpopClient,
    /// The frame id of the next NOTIFY.
    pub next_frame: u64,
}

impl Session {
    pub fn connect(addr: std::net::SocketAddr) -> Session {
        Session {
            spop: SpopClient::pipelined(addr),
            next_frame: 1,
        }
    }

    /// Sends one NOTIFY with `messages` and returns its ACK.
    pub fn notify(&mut self, messages: Vec<Message>) -> Ack {
        let frame_id = self.next_frame;
        self.next_frame += 1;
        self.spop.send(&notify_frame(1, frame_id, messages));
        let ack = self.spop.recv_ack();
        assert_eq!(ack.frame_id, frame_id, "the ACK answers this NOTIFY");
        ack
    }
}
