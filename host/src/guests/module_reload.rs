//! Hot reload: a changed module file, configuration file or data directory,
//! or SIGHUP → read and hash the files once, on a blocking thread → unless
//! they are the version serving (or the one rolled back), validate the
//! module on the data plane → swap it in atomically. Anything that fails
//! validation is rejected and the current version keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::exec::{GuestExecutor, ModuleVersion};
use crate::planes::DataPlane;
use crate::sandbox::{GrantSources, GuestSettings, LoadError, LoadedModule, Sandbox, sha256_hex};
use crate::watch::Triggers;

/// Reloads one guest's module.
pub struct Reloader {
    sandbox: Sandbox,
    path: PathBuf,
    grants: GrantSources,
    executor: Arc<GuestExecutor>,
    /// Where loads and their smoke calls run.
    data_plane: DataPlane,
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
        entered_by = module.entered_by(),
        reason,
        "module loaded"
    );
}

/// A validated module and the version of the files it was loaded from.
pub struct Loaded {
    pub module: Arc<LoadedModule>,
    pub version: ModuleVersion,
}

/// A guest's files as read once: the module's bytes and hash, the grants,
/// and the version they make.
pub struct Files {
    bytes: Vec<u8>,
    settings: GuestSettings,
    pub version: ModuleVersion,
}

/// Reads the module and the grants and hashes them, on a blocking thread:
/// a Python or JavaScript module is 12-40 MB, and the data directory can hold
/// thousands of files, work that must not hold a thread serving messages.
pub async fn read_files(path: &Path, grants: &GrantSources) -> Result<Files, LoadError> {
    let (path, grants) = (path.to_path_buf(), grants.clone());
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let settings = grants.read().map_err(LoadError::Config)?;
        let version = ModuleVersion {
            module_sha256: sha256_hex(&bytes),
            grants: settings.fingerprint(),
        };
        Ok(Files {
            bytes,
            settings,
            version,
        })
    })
    .await
    .map_err(|join| LoadError::Compile(anyhow::anyhow!("reading the files failed: {join}")))?
}

/// Loads the module at `path` with the grants read now, on the data plane
/// (`on`) or on the caller's runtime.
pub async fn load(
    sandbox: &Sandbox,
    on: Option<&DataPlane>,
    path: &Path,
    grants: &GrantSources,
) -> Result<Loaded, LoadError> {
    let files = read_files(path, grants).await?;
    load_files(sandbox, on, path, grants, files).await
}

/// Loads what [`read_files`] read: the version is exactly the bytes and
/// grants compiled, even if the files change meanwhile (a change that lands
/// during the load differs from it and reloads again).
async fn load_files(
    sandbox: &Sandbox,
    on: Option<&DataPlane>,
    path: &Path,
    grants: &GrantSources,
    files: Files,
) -> Result<Loaded, LoadError> {
    let (sandbox, path, table_grants) = (
        sandbox.clone(),
        path.to_path_buf(),
        grants.ip_tables.clone(),
    );
    let work = async move {
        let Files {
            bytes,
            mut settings,
            version,
        } = files;
        // Tables are built on blocking threads, once per agent: a guest
        // reload reuses the tables already loaded.
        settings.ip_tables = sandbox
            .ip_tables()
            .resolve(&table_grants)
            .await
            .map_err(LoadError::Config)?;
        settings.counters =
            crate::sandbox::GuestCounters::resolve(&settings.counter_grants, sandbox.counters());
        let module = sandbox
            .load_hashed(&path, bytes, version.module_sha256.clone(), settings)
            .await?;
        Ok(Loaded { module, version })
    };
    match on {
        Some(data_plane) => data_plane.run(work).await.map_err(LoadError::Compile)?,
        None => work.await,
    }
}

impl Reloader {
    pub fn new(
        sandbox: Sandbox,
        path: PathBuf,
        grants: GrantSources,
        executor: Arc<GuestExecutor>,
        data_plane: DataPlane,
    ) -> Reloader {
        Reloader {
            sandbox,
            path,
            grants,
            executor,
            data_plane,
        }
    }

    /// Validates the files and swaps the new version in, unless nothing
    /// changed since the version serving now, or they are the version rolled
    /// back last.
    pub async fn reload(self: &Arc<Self>, reason: &'static str) -> ReloadResult {
        let guest = self.executor.name();
        let metrics = self.executor.metrics();
        metrics.reload_started(reason);
        let files = match read_files(&self.path, &self.grants).await {
            Ok(files) => files,
            Err(err) => return self.rejected(&err, reason),
        };
        if files.version == self.executor.active_version() {
            tracing::info!(
                guest,
                reason,
                "module, configuration and data unchanged; not swapping"
            );
            metrics.reload_unchanged();
            return ReloadResult::Unchanged;
        }
        if self.executor.rejected().as_ref() == Some(&files.version) {
            tracing::warn!(
                guest,
                reason,
                path = %self.path.display(),
                "these files were rolled back; not loading them again until they change"
            );
            metrics.reload_skipped_rejected();
            return ReloadResult::RejectedBefore;
        }
        let started = Instant::now();
        match load_files(
            &self.sandbox,
            Some(&self.data_plane),
            &self.path,
            &self.grants,
            files,
        )
        .await
        {
            Ok(Loaded { module, version }) => {
                log_loaded(guest, &module, reason, started.elapsed());
                self.executor.replace(module, version);
                ReloadResult::Swapped
            }
            Err(err) => self.rejected(&err, reason),
        }
    }

    fn rejected(&self, err: &LoadError, reason: &'static str) -> ReloadResult {
        self.executor.metrics().reload_failed(err.cause());
        tracing::error!(
            guest = self.executor.name(),
            path = %self.path.display(),
            reason,
            cause = err.cause().name(),
            "reload rejected, current version keeps serving: {err}"
        );
        ReloadResult::Rejected
    }

    /// Reloads on `triggers` and on changes to the module, its
    /// configuration file and its data.
    pub fn spawn_triggers(self: Arc<Self>, mut triggers: Triggers) -> Result<()> {
        triggers.watch_file(&self.path, "module changed")?;
        if let Some(file) = &self.grants.config_file {
            triggers.watch_file(file, "configuration changed")?;
        }
        if let Some(dir) = &self.grants.data_dir {
            triggers.watch_tree(dir, "data changed")?;
        }
        // The loop runs on the data plane: loads and smoke calls run guest
        // code, which never runs on the control plane.
        let data_plane = self.data_plane.clone();
        data_plane.spawn(async move {
            while let Some(reason) = triggers.next().await {
                self.reload(reason).await;
            }
        });
        Ok(())
    }
}
