//! Hot reload: a changed module file or SIGHUP → validate the new module off
//! the connection tasks → swap it in atomically. A module that fails
//! validation is rejected and the current one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{Handler, HandlerSlot};
use crate::metrics::Metrics;
use crate::sandbox::{LoadedModule, Sandbox};

/// Quiet period after a file event before reloading: editors and deploy tools
/// write in several steps.
const SETTLE: Duration = Duration::from_millis(50);

pub struct Reloader {
    sandbox: Sandbox,
    path: PathBuf,
    slot: Arc<HandlerSlot>,
    metrics: Arc<Metrics>,
    /// Hash of the module serving now, to skip reloads of identical bytes.
    active_sha256: Mutex<String>,
}

/// Logs a module that starts serving.
pub fn log_loaded(module: &LoadedModule, reason: &str, took: Duration) {
    let id = &module.identity;
    tracing::info!(
        path = %id.path.display(),
        size = id.size,
        sha256 = %id.sha256,
        loaded_at = ?id.loaded_at,
        took_ms = took.as_secs_f64() * 1e3,
        reason,
        "module loaded"
    );
}

impl Reloader {
    pub fn new(
        sandbox: Sandbox,
        path: PathBuf,
        slot: Arc<HandlerSlot>,
        metrics: Arc<Metrics>,
        active: &LoadedModule,
    ) -> Reloader {
        Reloader {
            sandbox,
            path,
            slot,
            metrics,
            active_sha256: Mutex::new(active.identity.sha256.clone()),
        }
    }

    /// Validates the file and swaps it in. Compilation runs on a blocking
    /// thread so no connection task stalls. Returns whether a swap happened.
    pub async fn reload(self: &Arc<Self>, reason: &'static str) -> bool {
        let this = self.clone();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || this.sandbox.load_file(&this.path)).await;
        let module = match loaded {
            Ok(Ok(module)) => module,
            Ok(Err(err)) => {
                self.metrics.reload_failed();
                tracing::error!(path = %self.path.display(), reason, "reload rejected, current module keeps serving: {err:#}");
                return false;
            }
            Err(join) => {
                self.metrics.reload_failed();
                tracing::error!(reason, "reload task failed: {join}");
                return false;
            }
        };
        {
            let mut active = self
                .active_sha256
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *active == module.identity.sha256 {
                tracing::debug!(reason, "module unchanged; not swapping");
                return false;
            }
            active.clone_from(&module.identity.sha256);
        }
        log_loaded(&module, reason, started.elapsed());
        self.metrics.module_loaded(&module.identity, true);
        self.slot.replace(Handler::Wasm(module));
        true
    }

    /// Starts the SIGHUP and (unless `watch` is false) file-change triggers.
    pub fn spawn_triggers(self: Arc<Self>, watch: bool, shutdown: CancellationToken) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<&'static str>(16);
        spawn_sighup(tx.clone(), shutdown.clone())?;
        // The watcher must live as long as the loop below.
        let watcher = if watch {
            Some(watch_file(&self.path, tx)?)
        } else {
            None
        };
        tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                let reason = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    reason = rx.recv() => match reason { Some(r) => r, None => return },
                };
                // Coalesce the burst of events one write produces.
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                self.reload(reason).await;
            }
        });
        Ok(())
    }
}

fn spawn_sighup(tx: mpsc::Sender<&'static str>, shutdown: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangup.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the module");
            let _ = tx.send("sighup").await;
        }
    });
    Ok(())
}

/// Watches the module's directory, not the file: an atomic rename replaces the
/// file's inode, which a watch on the file itself would lose.
fn watch_file(path: &Path, tx: mpsc::Sender<&'static str>) -> Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let file_name = path
        .file_name()
        .context("module path has no file name")?
        .to_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any
        ) && event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(file_name.as_os_str()));
        if relevant {
            let _ = tx.try_send("file changed");
        }
    })
    .context("creating the file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}
