//! The listening sockets: TCP, a Unix socket, or both.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// `--unix PATH` and `--unix-mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSettings {
    pub path: PathBuf,
    /// Permission bits of the socket file (who may connect).
    pub mode: u32,
}

/// A connection just accepted.
pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

/// The agent's listening sockets.
pub struct Listeners {
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
}

impl Listeners {
    pub async fn bind(tcp: Option<SocketAddr>, unix: Option<&UnixSettings>) -> Result<Listeners> {
        let tcp = match tcp {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding {address}"))?,
            ),
            None => None,
        };
        let unix = match unix {
            Some(settings) => Some((bind_unix(settings)?, settings.path.clone())),
            None => None,
        };
        Ok(Listeners { tcp, unix })
    }

    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn unix_path(&self) -> Option<&PathBuf> {
        self.unix.as_ref().map(|(_, path)| path)
    }

    pub async fn accept(&self) -> io::Result<Accepted> {
        let tcp = async {
            match &self.tcp {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        let unix = async {
            match &self.unix {
                Some((listener, _)) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = tcp => accepted.map(|(stream, peer)| Accepted::Tcp(stream, peer)),
            accepted = unix => accepted.map(|(stream, _)| Accepted::Unix(stream)),
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the Unix socket. A socket file left by a process that is gone is
/// replaced; one a live process still listens on, or a file that is not a
/// socket, is an error.
fn bind_unix(settings: &UnixSettings) -> Result<UnixListener> {
    let path = &settings.path;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "{} exists and is not a socket; not replacing it",
            path.display()
        );
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => anyhow::bail!("{} is in use by another process", path.display()),
            Err(_) => {
                tracing::info!(path = %path.display(), "removing a stale socket file");
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}
