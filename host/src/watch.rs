//! What starts a reload: SIGHUP, and changes to files and directory trees.
//! Shared by module, configuration-file, TLS and IP-table reloads; knows
//! nothing of what is reloaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::planes::ControlPlane;

/// Quiet period after a file event before reloading: editors and deploy tools
/// write in several steps.
const SETTLE: Duration = Duration::from_millis(50);

/// What starts a reload: SIGHUP, and changes to the files and trees it
/// watches. Shared by module, configuration-file and TLS reloads.
pub struct Triggers {
    tx: mpsc::Sender<&'static str>,
    rx: mpsc::Receiver<&'static str>,
    /// Off (`--no-watch`): files and trees are not watched, SIGHUP still is.
    watch: bool,
    shutdown: CancellationToken,
    /// Kept alive as long as the triggers are.
    watchers: Vec<notify::RecommendedWatcher>,
}

impl Triggers {
    /// SIGHUP triggers, until `shutdown`, listened for on the control plane;
    /// with `watch`, the files and trees given to `watch_file` and
    /// `watch_tree` too.
    pub fn new(
        control: &ControlPlane,
        shutdown: &CancellationToken,
        watch: bool,
    ) -> Result<Triggers> {
        let (tx, rx) = mpsc::channel(16);
        spawn_sighup(control, tx.clone(), shutdown.clone())?;
        Ok(Triggers {
            tx,
            rx,
            watch,
            shutdown: shutdown.clone(),
            watchers: Vec::new(),
        })
    }

    pub fn watch_file(&mut self, path: &Path, reason: &'static str) -> Result<()> {
        if self.watch {
            self.watchers
                .push(watch_file(path, reason, self.tx.clone())?);
        }
        Ok(())
    }

    pub fn watch_tree(&mut self, dir: &Path, reason: &'static str) -> Result<()> {
        if self.watch {
            self.watchers
                .push(watch_tree(dir, reason, self.tx.clone())?);
        }
        Ok(())
    }

    /// The next reason to reload, once the events of a write have stopped
    /// for a whole settle period (a file written in place in many steps
    /// gives events until its last byte); `None` at shutdown.
    pub async fn next(&mut self) -> Option<&'static str> {
        let reason = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            reason = self.rx.recv() => reason?,
        };
        loop {
            tokio::time::sleep(SETTLE).await;
            let mut more = false;
            while self.rx.try_recv().is_ok() {
                more = true;
            }
            if !more {
                return Some(reason);
            }
        }
    }
}

fn spawn_sighup(
    control: &ControlPlane,
    tx: mpsc::Sender<&'static str>,
    shutdown: CancellationToken,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = {
        let _on_control = control.enter();
        signal(SignalKind::hangup()).context("installing the SIGHUP handler")?
    };
    control.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangup.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading");
            let _ = tx.send("sighup").await;
        }
    });
    Ok(())
}

/// Watches a file's directory, not the file: an atomic rename replaces the
/// file's inode, which a watch on the file itself would lose.
fn watch_file(
    path: &Path,
    reason: &'static str,
    tx: mpsc::Sender<&'static str>,
) -> Result<notify::RecommendedWatcher> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Kubernetes mounts ConfigMaps and Secrets as symlinks through a
    // `..data` link that is swapped on update: no event names the file.
    watch(&dir, false, reason, tx, move |changed| {
        changed.file_name().is_some_and(|name| {
            name == file_name.as_os_str() || name.as_encoded_bytes().starts_with(b"..data")
        })
    })
}

/// Watches everything under a directory.
fn watch_tree(
    dir: &Path,
    reason: &'static str,
    tx: mpsc::Sender<&'static str>,
) -> Result<notify::RecommendedWatcher> {
    watch(dir, true, reason, tx, |_| true)
}

fn watch(
    dir: &Path,
    recursive: bool,
    reason: &'static str,
    tx: mpsc::Sender<&'static str>,
    relevant_path: impl Fn(&Path) -> bool + Send + 'static,
) -> Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any
        ) || (recursive && matches!(event.kind, EventKind::Remove(_)));
        let relevant = relevant && event.paths.iter().any(|p| relevant_path(p));
        if relevant {
            let _ = tx.try_send(reason);
        }
    })
    .context("creating the file watcher")?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(dir, mode)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}
