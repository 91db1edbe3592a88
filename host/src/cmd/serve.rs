//! `spoa-host` serving: settings → the two planes → the key-value store
//! and IP tables → guests → listeners, signals, reloads and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentContext, ConnectionSettings, Handler};
use crate::cmd::accept::{ServerSettings, serve};
use crate::guests::{ConfigReloader, Guest, GuestServices, start_router, start_single};
use crate::kv::KvStore;
use crate::metrics::Metrics;
use crate::metrics::status::StatusSource;
use crate::net::{AllowList, Listeners, TlsFiles, TlsServer, UnixSettings};
use crate::planes::{ControlPlane, Planes, start_data_plane};
use crate::settings::cli::ServeArgs;
use crate::settings::file::{AgentConfig, single_guest};
use crate::settings::serve::ServeSettings;

/// How long stopping waits for data-plane tasks still running (the drain
/// itself is bounded by --shutdown-timeout before this).
const DATA_PLANE_STOP: Duration = Duration::from_secs(1);

/// Two runtimes: the control plane (one thread: accept, HELLO, health
/// checks, refusals, `/metrics`, signals, reload triggers), which never runs
/// a guest, and the data plane (`-n` threads: established connections and
/// their guest calls).
pub fn serve_blocking(args: ServeArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => Some(AgentConfig::load(
            path,
            &args.sandbox,
            args.error_var.as_deref(),
        )?),
        None => None,
    };
    let settings = ServeSettings::resolve(&args, config.as_ref()).map_err(anyhow::Error::msg)?;
    let data_plane = start_data_plane(settings.workers, settings.rebalance)?;
    let priority = args.control_priority;
    priority.apply_to_this_thread();
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("spoa-control")
        .on_thread_start(move || priority.apply_to_this_thread())
        .enable_all()
        .build()
        .context("starting the control plane")?;
    let planes = Planes {
        control: ControlPlane::from_handle(control.handle().clone()),
        data: data_plane.plane(),
    };
    let result = control.block_on(serve_async(args, settings, config, planes));
    drop(control);
    data_plane.stop(DATA_PLANE_STOP);
    result
}

async fn serve_async(
    args: ServeArgs,
    settings: ServeSettings,
    config: Option<AgentConfig>,
    planes: Planes,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let ServeSettings {
        listen,
        metrics_address,
        max_frame_size,
        workers: data_plane_threads,
        rebalance: _,
        kv: kv_spec,
        record,
    } = settings;
    // Table reloads are watched from the control plane and built on its
    // blocking threads; a Redis feed polls from there too.
    let ip_tables = crate::tables::IpTables::watching(
        planes.control.clone(),
        shutdown.clone(),
        kv_spec.redis_url(),
    );
    // On the data plane: a Redis connection is driven where the guest calls
    // that use it run, never on the control plane.
    let kv = planes
        .data
        .spawn(async move { KvStore::open(&kv_spec) })
        .await
        .context("opening the key-value store")?
        .map_err(anyhow::Error::msg)?;
    tracing::info!(store = %kv.describe(), "guest key-value store");
    metrics.watch_kv(kv.clone());
    metrics.watch_ip_tables(ip_tables.clone());
    metrics.watch_data_plane(planes.data.clone());
    let recorder = record
        .map(|spec| crate::record::Recorder::start(&spec, metrics.record_counters()))
        .transpose()?;
    let runtime = GuestServices {
        ip_tables,
        kv,
        recorder,
        planes: planes.clone(),
        metrics: metrics.clone(),
        watch: !args.no_watch,
        shutdown: shutdown.clone(),
        long_call_slots: data_plane_threads.saturating_sub(1).max(1) as u32,
        realtime_ticker: args.control_priority == crate::settings::cli::ControlPriority::Realtime,
    };
    let (handler, statuses, _guests) = build_handler(&args, config, &runtime).await?;
    if let Some(statuses) = statuses {
        metrics.watch_guests(&statuses);
    }

    if let Some(address) = metrics_address {
        crate::metrics::http::spawn(&planes.control, address, metrics.clone(), shutdown.clone())
            .await?;
    }

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = Arc::new(TlsServer::new(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            })?);
            let triggers = crate::watch::Triggers::new(&planes.control, &shutdown, !args.no_watch)?;
            tls.clone().spawn_reloads(&planes.control, triggers)?;
            Some(tls)
        }
        _ => None,
    };
    let allow = AllowList::new(args.allow_from.clone());
    let unix = args.unix.as_ref().map(|path| UnixSettings {
        path: path.clone(),
        mode: args.unix_mode,
    });
    let listeners = Listeners::bind(listen, unix.as_ref()).await?;
    if let Some(address) = listeners.tcp_address() {
        // TLS without client certificates encrypts, but anyone can still talk.
        let authenticated = tls
            .as_ref()
            .is_some_and(|tls| tls.requires_client_certificate());
        warn_if_exposed(address, authenticated, !allow.is_empty());
    }
    tracing::info!(
        address = ?listeners.tcp_address(),
        unix = ?listeners.unix_path(),
        tls = tls.is_some(),
        client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_certificate()),
        allow_from = ?args.allow_from,
        max_frame_size,
        "spoa-host listening"
    );

    let ctx = Arc::new(AgentContext {
        handler,
        data_plane: planes.data.clone(),
        metrics,
        settings: ConnectionSettings {
            max_frame_size,
            hello_timeout: args.hello_timeout,
            idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
        },
    });
    spawn_signal_handler(&planes.control, shutdown.clone())?;
    serve(
        listeners,
        ctx,
        ServerSettings {
            max_connections: args.max_connections,
            drain_timeout: args.shutdown_timeout,
            allow,
            tls,
            handshake_timeout: args.hello_timeout,
        },
        shutdown,
    )
    .await;
    tracing::info!("spoa-host stopped");
    Ok(())
}

/// The router over the guests (with their reload triggers, which live as
/// long as the returned guests) and where `/status` reads them, or the
/// native benchmark handler.
async fn build_handler(
    args: &ServeArgs,
    config: Option<AgentConfig>,
    runtime: &GuestServices,
) -> Result<(
    Arc<dyn Handler>,
    Option<Arc<dyn StatusSource>>,
    Vec<Arc<Guest>>,
)> {
    #[cfg(feature = "native-iprep")]
    if args.native_iprep {
        tracing::warn!("serving with the native IP-reputation handler (benchmarking aid)");
        return Ok((
            Arc::new(crate::native::NativeIprep::default()),
            None,
            Vec::new(),
        ));
    }
    match config {
        Some(config) => {
            let (router, guests) = start_router(runtime, &config.guests).await?;
            ConfigReloader {
                runtime: runtime.clone(),
                config,
                sandbox_defaults: args.sandbox.clone(),
                error_var: args.error_var.clone(),
                router: router.clone(),
                guests,
            }
            .spawn()?;
            Ok((router.clone(), Some(router), Vec::new()))
        }
        None => {
            let path = args
                .module
                .clone()
                .context("--module or --config is required")?;
            let spec = single_guest(path, &args.sandbox, args.error_var.as_deref());
            let guest = start_single(runtime, spec).await?;
            Ok((
                guest.executor.clone(),
                Some(guest.executor.clone()),
                vec![Arc::new(guest)],
            ))
        }
    }
}

/// One warning at start-up when anyone who can reach the port may talk to
/// the agent: SPOP has no authentication of its own.
fn warn_if_exposed(address: SocketAddr, client_certificates: bool, allow_list: bool) {
    if address.ip().is_loopback() || client_certificates || allow_list {
        return;
    }
    tracing::warn!(
        %address,
        "listening beyond loopback without TLS client certificates or an allow-list: anyone \
         who can reach this port can send messages to the guests. Add --tls-cert/--tls-key \
         with --tls-client-ca (HAProxy's client certificate), or --allow-from with HAProxy's \
         addresses, or listen on 127.0.0.1 or a Unix socket (--unix)"
    );
}

/// First SIGTERM/SIGINT: graceful shutdown. A second one: exit at once.
fn spawn_signal_handler(control: &ControlPlane, shutdown: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _on_control = control.enter();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    control.spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down: answering received messages, then closing connections");
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(1);
    });
    Ok(())
}
