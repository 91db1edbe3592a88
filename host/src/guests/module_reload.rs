//! Hot reload: a changed module file, configuration file or data directory,
//! or SIGHUP → read the grants, validate the module on the data plane →
//! swap it in atomically. Anything that fails validation is rejected and the
//! current version keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::exec::{GuestExecutor, ModuleVersion};
use crate::sandbox::{GrantSources, LoadError, LoadedModule, Sandbox};
use crate::watch::Triggers;

/// Reloads one guest's module.
pub struct Reloader {
    sandbox: Sandbox,
    path: PathBuf,
    grants: GrantSources,
    executor: Arc<GuestExecutor>,
}

/// What a reload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Swapped,
    Unchanged,
    /// The files are the version rolled back last.
    RejectedBefore,
    Rejected,
}

/// Logs a module that starts serving.
pub fn log_loaded(guest: &str, module: &LoadedModule, reason: &str, took: Duration) {
    let id = &module.identity;
    tracing::info!(
        guest,
        path = %id.path.display(),
        size = id.size,
        sha256 = %id.sha256,
        from_cache = id.from_cache,
        took_ms = took.as_secs_f64() * 1e3,
        reason,
        "module loaded"
    );
}

/// A validated module and the version of the files it was loaded from.
pub struct Loaded {
    pub module: Arc<LoadedModule>,
    pub version: ModuleVersion,
}

/// Loads the module at `path` with the grants read now, on the data plane
/// (`executor_or_here`) or on the caller's.
pub async fn load(
    sandbox: &Sandbox,
    executor_or_here: Option<&GuestExecutor>,
    path: &Path,
    grants: &GrantSources,
) -> Result<Loaded, LoadError> {
    let (sandbox, path, grants) = (sandbox.clone(), path.to_path_buf(), grants.clone());
    let work = async move {
        let mut settings = grants.read().map_err(LoadError::Config)?;
        // Tables are built on blocking threads, once per agent: a guest
        // reload reuses the tables already loaded.
        settings.ip_tables = sandbox
            .ip_tables()
            .resolve(&grants.ip_tables)
            .await
            .map_err(LoadError::Config)?;
        // The grants as they are before the load: a change that lands during
        // the load differs from them and reloads again.
        let grants = settings.fingerprint();
        let module = sandbox.load_file(&path, settings).await?;
        let version = ModuleVersion {
            module_sha256: module.identity.sha256.clone(),
            grants,
        };
        Ok(Loaded { module, version })
    };
    match executor_or_here {
        Some(executor) => executor.run(work).await.map_err(LoadError::Compile)?,
        None => work.await,
    }
}

impl Reloader {
    pub fn new(
        sandbox: Sandbox,
        path: PathBuf,
        grants: GrantSources,
        executor: Arc<GuestExecutor>,
    ) -> Reloader {
        Reloader {
            sandbox,
            path,
            grants,
            executor,
        }
    }

    /// The version the files describe now, without compiling anything.
    fn current_files(&self) -> Option<ModuleVersion> {
        let bytes = std::fs::read(&self.path).ok()?;
        let settings = self.grants.read().ok()?;
        Some(ModuleVersion {
            module_sha256: hex::encode(Sha256::digest(&bytes)),
            grants: settings.fingerprint(),
        })
    }

    /// Validates the files and swaps the new version in, unless nothing
    /// changed since the version serving now, or they are the version rolled
    /// back last.
    pub async fn reload(self: &Arc<Self>, reason: &'static str) -> ReloadResult {
        let guest = self.executor.name();
        let metrics = self.executor.metrics();
        metrics.reload_started(reason);
        if let Some(files) = self.current_files() {
            if files == self.executor.active_version() {
                tracing::info!(
                    guest,
                    reason,
                    "module, configuration and data unchanged; not swapping"
                );
                metrics.reload_unchanged();
                return ReloadResult::Unchanged;
            }
            if self.executor.rejected().as_ref() == Some(&files) {
                tracing::warn!(
                    guest,
                    reason,
                    path = %self.path.display(),
                    "these files were rolled back; not loading them again until they change"
                );
                metrics.reload_skipped_rejected();
                return ReloadResult::RejectedBefore;
            }
        }
        let started = Instant::now();
        match load(
            &self.sandbox,
            Some(&self.executor),
            &self.path,
            &self.grants,
        )
        .await
        {
            Ok(Loaded { module, version }) => {
                log_loaded(guest, &module, reason, started.elapsed());
                self.executor.replace(module, version);
                ReloadResult::Swapped
            }
            Err(err) => {
                metrics.reload_failed(err.cause());
                tracing::error!(
                    guest,
                    path = %self.path.display(),
                    reason,
                    cause = err.cause().name(),
                    "reload rejected, current version keeps serving: {err}"
                );
                ReloadResult::Rejected
            }
        }
    }

    /// Starts the SIGHUP and (unless `watch` is false) file-change triggers.
    pub fn spawn_triggers(self: Arc<Self>, watch: bool, shutdown: CancellationToken) -> Result<()> {
        let mut triggers = Triggers::new(&shutdown)?;
        if watch {
            triggers.watch_file(&self.path, "module changed")?;
            if let Some(file) = &self.grants.config_file {
                triggers.watch_file(file, "configuration changed")?;
            }
            if let Some(dir) = &self.grants.data_dir {
                triggers.watch_tree(dir, "data changed")?;
            }
        }
        // The loop runs on the data plane: loads and smoke calls run guest
        // code, which never runs on the control plane.
        let executor = self.executor.clone();
        executor.spawn(async move {
            while let Some(reason) = triggers.next(&shutdown).await {
                self.reload(reason).await;
            }
        });
        Ok(())
    }
}
