//! Starting guests, and reloading the `--config` file: a changed file
//! starts the guests that are new or changed, keeps the others as they are
//! (their instances untouched), and swaps the routing table at once. A file
//! that fails validation, or a guest that fails to load, changes nothing.
//!
//! Owns when a guest's version changes (module files, `--config`); the swap
//! itself and what a failing version costs belong to `exec`. Must not know
//! SPOP frames, sockets or wasmtime types: it hands the sandbox files and
//! the executor modules.

pub mod module_reload;
pub mod router;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::exec::GuestExecutor;
use crate::exec::shadow::Shadow;
use crate::guests::module_reload::{Loaded, Reloader, load, log_loaded};
use crate::guests::router::{GuestSet, Router};
use crate::kv::KvStore;
use crate::metrics::Metrics;
use crate::planes::Planes;
use crate::sandbox::Sandbox;
use crate::settings::cli::SandboxArgs;
use crate::settings::file::{AgentConfig, GuestSpec};
use crate::watch::Triggers;

/// A running guest: its executor and its reload triggers, which stop when
/// the last `Guest` sharing them is dropped.
pub struct Guest {
    pub spec: GuestSpec,
    pub executor: Arc<GuestExecutor>,
    stop: Arc<StopOnDrop>,
}

/// Cancels a guest's reload triggers when dropped.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What starting guests needs.
#[derive(Clone)]
pub struct GuestServices {
    pub planes: Planes,
    pub metrics: Arc<Metrics>,
    /// Watch module, configuration and data files (SIGHUP works regardless).
    pub watch: bool,
    pub shutdown: CancellationToken,
    /// Each guest's long-call slots (see `SandboxConfig::long_call_slots`):
    /// one fewer than the data-plane threads, at least one, so a guest whose
    /// calls all run to their deadline always leaves a thread to the others.
    pub long_call_slots: u32,
    /// Guests' epoch tickers run at real-time priority.
    pub realtime_ticker: bool,
    /// Records a share of every guest's answers (`--record`).
    pub recorder: Option<Arc<crate::record::Recorder>>,
    /// The store every guest shares (`wasi:keyvalue`).
    pub kv: KvStore,
    /// The IP tables every guest's grants resolve in.
    pub ip_tables: crate::tables::IpTables,
}

impl GuestServices {
    /// Loads `path` with `spec`'s grants on the data plane; a refusal is
    /// shown to `refused`, then returned as "guest …: WHAT … rejected".
    async fn load_module(
        &self,
        sandbox: &Sandbox,
        spec: &GuestSpec,
        path: &std::path::Path,
        what: &str,
        refused: impl FnOnce(&crate::sandbox::LoadError),
    ) -> Result<Loaded> {
        let (sandbox, file, grants) = (sandbox.clone(), path.to_path_buf(), spec.grants.clone());
        let loaded = self
            .planes
            .data
            .spawn(async move { load(&sandbox, None, &file, &grants).await })
            .await
            .with_context(|| format!("loading the {what}"))?;
        loaded.map_err(|err| {
            refused(&err);
            anyhow::anyhow!(
                "guest `{}`: {what} {} rejected (cause: {}): {err}",
                spec.name,
                path.display(),
                err.cause().name()
            )
        })
    }

    /// Loads `spec`'s shadow version, with a store of its own, and starts
    /// it on the data plane.
    async fn start_shadow(
        &self,
        spec: &GuestSpec,
        shadow: &crate::settings::file::ShadowSpec,
        sandbox: &Sandbox,
        metrics: &crate::metrics::GuestMetrics,
    ) -> Result<Arc<Shadow>> {
        let config = crate::sandbox::SandboxConfig {
            deterministic: shadow.deterministic,
            ..(*sandbox.config).clone()
        };
        let private = Sandbox::new(config, KvStore::scratch())
            .with_context(|| format!("guest `{}`: creating its shadow's sandbox", spec.name))?
            .with_ip_tables(self.ip_tables.clone());
        let loaded = self
            .load_module(&private, spec, &shadow.module, "shadow module", |_| {})
            .await?;
        tracing::info!(
            guest = spec.name,
            shadow = %loaded.module.label,
            share = shadow.share,
            "shadow version started: it answers a copy of that share of the messages, compared with the served answers"
        );
        Ok(Shadow::start(
            &spec.name,
            loaded.module,
            shadow.share,
            metrics.shadow(),
            &self.planes.data,
        ))
    }

    /// Loads the guest's module on the data plane and starts its reload
    /// triggers.
    pub async fn start(&self, spec: GuestSpec) -> Result<Guest> {
        let sandbox_config = crate::sandbox::SandboxConfig {
            long_call_slots: self.long_call_slots,
            realtime_ticker: self.realtime_ticker,
            ..spec.sandbox.clone()
        };
        let metrics = self.metrics.guest(
            &spec.name,
            &crate::agent::FailureKind::ALL.map(|kind| kind.name()),
        );
        let sandbox = Sandbox::new(sandbox_config, self.kv.clone())
            .with_context(|| format!("guest `{}`: creating its sandbox", spec.name))?
            .with_ip_tables(self.ip_tables.clone())
            .with_counters(metrics.counters());
        let started = Instant::now();
        let Loaded { module, version } = self
            .load_module(&sandbox, &spec, &spec.module, "module", |err| {
                metrics.reload_failed(err.cause())
            })
            .await?;
        log_loaded(&spec.name, &module, "start", started.elapsed());
        let canary = match &spec.canary {
            Some(canary) => Some(
                self.load_module(&sandbox, &spec, &canary.module, "canary module", |_| {})
                    .await?,
            ),
            None => None,
        };
        let shadow = match &spec.shadow {
            Some(shadow) => Some(self.start_shadow(&spec, shadow, &sandbox, &metrics).await?),
            None => None,
        };
        let executor = GuestExecutor::new(
            &spec.name,
            module,
            version,
            spec.limits,
            spec.policy.clone(),
            metrics,
        )
        .recording_to(self.recorder.clone())
        .shadowed_by(shadow);
        let executor = match (canary, &spec.canary) {
            (Some(loaded), Some(canary)) => executor.with_canary(
                loaded.module,
                loaded.version,
                canary.share,
                canary.promote_after,
            ),
            _ => executor,
        };
        let executor = Arc::new(executor);
        let stop = self.shutdown.child_token();
        let reloader = Arc::new(Reloader::new(
            sandbox,
            spec.module.clone(),
            spec.grants.clone(),
            executor.clone(),
            self.planes.data.clone(),
        ));
        reloader.spawn_triggers(Triggers::new(&self.planes.control, &stop, self.watch)?)?;
        Ok(Guest {
            spec,
            executor,
            stop: Arc::new(StopOnDrop(stop)),
        })
    }

    /// Starts every guest of `specs`, reusing those of `running` whose
    /// definition is unchanged but for the messages they answer and how
    /// HAProxy sends them (routing only). A changed guest takes over from its
    /// predecessor of the same name (see [`GuestExecutor::take_over_from`]).
    async fn start_all(
        &self,
        specs: &[GuestSpec],
        running: &[Arc<Guest>],
    ) -> Result<Vec<Arc<Guest>>> {
        let mut guests = Vec::with_capacity(specs.len());
        for spec in specs {
            let same_name = running.iter().find(|guest| guest.spec.name == spec.name);
            match same_name {
                Some(guest) if guest.spec.runs_like(spec) => {
                    guests.push(Arc::new(Guest {
                        spec: spec.clone(),
                        executor: guest.executor.clone(),
                        stop: guest.stop.clone(),
                    }));
                }
                _ => {
                    let started = self.start(spec.clone()).await?;
                    if let Some(previous) = same_name {
                        started.executor.take_over_from(&previous.executor);
                    }
                    guests.push(Arc::new(started));
                }
            }
        }
        Ok(guests)
    }
}

/// The routing table of `guests`.
pub fn guest_set(guests: &[Arc<Guest>]) -> GuestSet {
    GuestSet::new(
        guests
            .iter()
            .map(|guest| (guest.executor.clone(), guest.spec.messages.clone()))
            .collect(),
    )
}

/// Starts one guest answering every message (the `--module` form): its
/// executor is the handler, without routing.
pub async fn start_single(runtime: &GuestServices, spec: GuestSpec) -> Result<Guest> {
    let guest = runtime.start(spec).await?;
    guest.executor.announce_serving();
    Ok(guest)
}

/// Starts the guests of a configuration and the router over them.
pub async fn start_router(
    runtime: &GuestServices,
    specs: &[GuestSpec],
) -> Result<(Arc<Router>, Vec<Arc<Guest>>)> {
    let guests = runtime.start_all(specs, &[]).await?;
    for guest in &guests {
        guest.executor.announce_serving();
    }
    let router = Arc::new(Router::new(guest_set(&guests), runtime.metrics.clone()));
    Ok((router, guests))
}

/// Reloads the `--config` file on change and on SIGHUP.
pub struct ConfigReloader {
    pub runtime: GuestServices,
    pub config: AgentConfig,
    pub sandbox_defaults: SandboxArgs,
    pub error_var: Option<String>,
    pub router: Arc<Router>,
    pub guests: Vec<Arc<Guest>>,
}

impl ConfigReloader {
    pub fn spawn(mut self) -> Result<()> {
        let shutdown = self.runtime.shutdown.clone();
        let mut triggers =
            Triggers::new(&self.runtime.planes.control, &shutdown, self.runtime.watch)?;
        triggers.watch_file(&self.config.path, "configuration file changed")?;
        let data_plane = self.runtime.planes.data.clone();
        data_plane.spawn(async move {
            while let Some(reason) = triggers.next().await {
                self.reload(reason).await;
            }
        });
        Ok(())
    }

    fn rejected(&self, reason: &'static str, err: &dyn std::fmt::Display) {
        self.runtime.metrics.config_reload("failed");
        tracing::error!(
            reason,
            "configuration reload rejected, current guests keep serving: {err}"
        );
    }

    async fn reload(&mut self, reason: &'static str) {
        let path = self.config.path.clone();
        let config =
            match AgentConfig::load(&path, &self.sandbox_defaults, self.error_var.as_deref()) {
                Ok(config) => config,
                Err(err) => return self.rejected(reason, &err),
            };
        if config.guests == self.config.guests {
            self.runtime.metrics.config_reload("unchanged");
            tracing::debug!(reason, "guest definitions unchanged");
            return;
        }
        let guests = match self.runtime.start_all(&config.guests, &self.guests).await {
            Ok(guests) => guests,
            Err(err) => return self.rejected(reason, &format!("{err:#}")),
        };
        self.router.replace(guest_set(&guests));
        for guest in &guests {
            let kept = self
                .guests
                .iter()
                .any(|old| Arc::ptr_eq(&old.executor, &guest.executor));
            if !kept {
                guest.executor.announce_serving();
                if self
                    .guests
                    .iter()
                    .any(|old| old.spec.name == guest.spec.name)
                {
                    guest.executor.metrics().restarted(reason);
                }
            }
        }
        for gone in self
            .guests
            .iter()
            .filter(|old| !guests.iter().any(|new| new.spec.name == old.spec.name))
        {
            gone.executor.metrics().retire();
            tracing::info!(guest = %gone.spec.name, "guest removed");
        }
        let settings_changed = config.address != self.config.address
            || config.port != self.config.port
            || config.workers != self.config.workers
            || config.rebalance != self.config.rebalance
            || config.max_frame_size != self.config.max_frame_size
            || config.metrics_address != self.config.metrics_address
            || config.kv != self.config.kv;
        if settings_changed {
            tracing::warn!(
                "global settings of the configuration file changed; they apply at the next start"
            );
        }
        tracing::info!(reason, guests = guests.len(), "configuration reloaded");
        self.runtime.metrics.config_reload("ok");
        self.guests = guests;
        self.config = config;
    }
}
