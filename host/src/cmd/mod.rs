//! The commands: serving (`serve`: the two planes, the listeners and their
//! accept loop in `accept`), `check`, `call`, `replay`, `haproxy-config`, `status` and `new`. This is
//! the top of the crate: it wires settings, guests, the agent and the
//! network together, and nothing below imports it.

pub mod accept;
pub mod call;
pub mod check;
pub mod haproxy_config;
pub mod new;
pub mod replay;
pub mod serve;
pub mod status;

use std::process::ExitCode;

use crate::settings::cli::{Cli, Command, LogFormat};

pub use check::rejected;

pub fn main_with(cli: Cli) -> ExitCode {
    let (debug, format) = (cli.serve.debug, cli.serve.log_format);
    init_logging(debug, format);
    let result = match cli.command {
        Some(Command::Check {
            module,
            tls_cert,
            tls_key,
            tls_client_ca,
            sandbox,
        }) => {
            let tls_ok = match (&tls_cert, &tls_key) {
                (Some(cert), Some(key)) => check::check_tls(cert, key, tls_client_ca.as_deref()),
                _ => true,
            };
            match module {
                Some(module) => check::check(&module, &sandbox).map(|()| tls_ok),
                None => Ok(tls_ok),
            }
        }
        Some(Command::Call(args)) => call::run(&args),
        Some(Command::HaproxyConfig(args)) => haproxy_config::print(&args).map(|()| true),
        Some(Command::Status(args)) => status::print(&args).map(|()| true),
        Some(Command::Replay(args)) => replay::run(&args),
        Some(Command::New(args)) => new::run(&args).map(|()| true),
        None => serve::serve_blocking(cli.serve).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
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
