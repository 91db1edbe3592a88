//! Wiring: CLI → logging → sandbox → module → listener, signals, reload and
//! metrics.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentContext, ConnectionSettings, Handler, HandlerSlot};
use crate::cli::{Cli, Command, LogFormat, SandboxArgs, ServeArgs};
use crate::metrics::Metrics;
use crate::reload::{Reloader, log_loaded};
use crate::sandbox::Sandbox;
use crate::server::{ServerSettings, serve};

pub fn main_with(cli: Cli) -> ExitCode {
    let (debug, format) = (cli.serve.debug, cli.serve.log_format);
    init_logging(debug, format);
    let result = match cli.command {
        Some(Command::Check { module, sandbox }) => check(&module, &sandbox),
        None => serve_blocking(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("spoa-host: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(debug: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: &std::path::Path, sandbox_args: &SandboxArgs) -> Result<()> {
    let sandbox = Sandbox::new(sandbox_args.to_config())?;
    let started = Instant::now();
    let module = sandbox.load_file(path)?;
    let id = &module.identity;
    println!(
        "ok: {} implements spoa:agent/handler ({} bytes, sha256 {}, validated in {:.1} ms)",
        id.path.display(),
        id.size,
        id.sha256,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn serve_blocking(args: ServeArgs) -> Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("spoa-worker");
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = runtime.build().context("starting the runtime")?;
    runtime.block_on(serve_async(args))
}

async fn serve_async(args: ServeArgs) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let sandbox = Sandbox::new(args.sandbox.to_config())?;

    let (handler, reloader) = match &args.module {
        Some(path) => {
            let started = Instant::now();
            let module = sandbox.load_file(path)?;
            log_loaded(&module, "startup", started.elapsed());
            metrics.module_loaded(&module.identity, false);
            (Handler::Wasm(module.clone()), Some((path.clone(), module)))
        }
        None => {
            tracing::warn!("serving with the native IP-reputation handler (benchmarking aid)");
            (Handler::NativeIprep, None)
        }
    };
    let slot = Arc::new(HandlerSlot::new(handler));
    if let Some((path, module)) = reloader {
        let reloader = Arc::new(Reloader::new(
            sandbox.clone(),
            path,
            slot.clone(),
            metrics.clone(),
            &module,
        ));
        reloader.spawn_triggers(!args.no_watch, shutdown.clone())?;
    }

    if let Some(address) = args.metrics_address {
        crate::metrics_http::spawn(address, metrics.clone(), shutdown.clone()).await?;
    }

    let listen = std::net::SocketAddr::new(args.address, args.port);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        address = %listener.local_addr().unwrap_or(listen),
        max_frame_size = args.max_frame_size,
        guest_timeout = ?args.sandbox.guest_timeout,
        guest_memory = args.sandbox.guest_memory,
        fresh_instance = args.sandbox.fresh_instance,
        "spoa-host listening"
    );

    let ctx = Arc::new(AgentContext {
        handler: slot,
        metrics,
        settings: ConnectionSettings {
            max_frame_size: args.max_frame_size,
            hello_timeout: args.hello_timeout,
            idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
            error_var: args.error_var.map(Bytes::from),
        },
    });
    spawn_signal_handler(shutdown.clone())?;
    serve(
        listener,
        ctx,
        ServerSettings {
            max_connections: args.max_connections,
            drain_timeout: args.shutdown_timeout,
        },
        shutdown,
    )
    .await;
    tracing::info!("spoa-host stopped");
    Ok(())
}

/// First SIGTERM/SIGINT: graceful shutdown. A second one: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down: answering received messages, then closing connections");
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(1);
    });
    Ok(())
}
