//! One accepted byte stream, whatever carries it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

/// Where a connection comes from, for logs.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// A connection's stream.
pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<MovableTcp>>),
}

/// A stream taken off one runtime's reactor, to be registered with another.
pub enum Detached {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    /// The session whole (its buffers and keys), its socket detached.
    Tls(Box<TlsStream<MovableTcp>>),
}

impl Transport {
    /// Takes the stream off the current runtime's reactor.
    pub fn detach(self) -> io::Result<Detached> {
        Ok(match self {
            Transport::Tcp(stream) => Detached::Tcp(stream.into_std()?),
            Transport::Unix(stream) => Detached::Unix(stream.into_std()?),
            Transport::Tls(mut session) => {
                session.get_mut().0.detach()?;
                Detached::Tls(session)
            }
        })
    }
}

impl Detached {
    /// Registers the stream with the current runtime's reactor.
    pub fn attach(self) -> io::Result<Transport> {
        Ok(match self {
            Detached::Tcp(stream) => Transport::Tcp(TcpStream::from_std(stream)?),
            Detached::Unix(stream) => Transport::Unix(UnixStream::from_std(stream)?),
            Detached::Tls(mut session) => {
                session.get_mut().0.attach()?;
                Transport::Tls(session)
            }
        })
    }
}

/// The socket under a TLS session. tokio-rustls cannot rebuild a session
/// from its parts, so the socket is what moves: it is taken off one
/// runtime's reactor and registered with another while the session around
/// it stays whole. That lets a TLS connection be handshaken and greeted on
/// the control plane, where no guest can delay it, and served on the data
/// plane, exactly as a plain one is.
pub struct MovableTcp {
    attached: Option<TcpStream>,
    detached: Option<std::net::TcpStream>,
}

impl MovableTcp {
    pub fn new(stream: TcpStream) -> MovableTcp {
        MovableTcp {
            attached: Some(stream),
            detached: None,
        }
    }

    fn detach(&mut self) -> io::Result<()> {
        if let Some(stream) = self.attached.take() {
            self.detached = Some(stream.into_std()?);
        }
        Ok(())
    }

    fn attach(&mut self) -> io::Result<()> {
        if let Some(stream) = self.detached.take() {
            self.attached = Some(TcpStream::from_std(stream)?);
        }
        Ok(())
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match &mut self.attached {
            Some(stream) => Ok(Pin::new(stream)),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS socket used while moving between runtimes",
            )),
        }
    }
}

impl AsyncRead for MovableTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl AsyncWrite for MovableTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_shutdown(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl Transport {
    /// Reads what is already there without waiting (`WouldBlock` if
    /// nothing is).
    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tokio_util::io::poll_read_buf(Pin::new(self), &mut cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
