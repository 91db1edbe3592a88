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
    unix: Option<(UnixListener, PathBuf, FileId)>,
}

/// Device and inode of the socket file this process bound, so exit removes
/// only that file, not one a later instance bound at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

fn file_id(path: &std::path::Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| FileId(meta.dev(), meta.ino()))
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
            Some(settings) => {
                let listener = bind_unix(settings)?;
                let id = file_id(&settings.path)
                    .with_context(|| format!("{} vanished", settings.path.display()))?;
                Some((listener, settings.path.clone(), id))
            }
            None => None,
        };
        Ok(Listeners { tcp, unix })
    }

    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn unix_path(&self) -> Option<&PathBuf> {
        self.unix.as_ref().map(|(_, path, _)| path)
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
                Some((listener, _, _)) => listener.accept().await,
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
        if let Some((_, path, id)) = &self.unix
            && file_id(path) == Some(*id)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the Unix socket. A socket file left by a process that is gone is
/// replaced; one a live process still listens on (or that cannot be
/// checked), or a file that is not a socket, is an error. The mode is set
/// right after binding: keep the socket in a directory only the agent (and
/// HAProxy's group) can enter, so nobody can connect or swap the file in
/// between.
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
            // Nobody listens: a socket left by a process that is gone.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing a stale socket file");
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            // Not allowed to connect, for one: it may well be alive.
            Err(err) => anyhow::bail!(
                "{} exists and cannot be checked ({err}); not replacing it",
                path.display()
            ),
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}
