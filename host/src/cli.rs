//! Command-line interface: flags in the spirit of HAProxy's example agent
//! (`-p`, `-a`, `-n`, `-d`, `-m`), plus the sandbox, reload and operations
//! options.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::sandbox::InstanceMode;
use crate::spop::{DEFAULT_MAX_FRAME_SIZE, MIN_FRAME_SIZE};

#[derive(Debug, Parser)]
#[command(
    name = "spoa-host",
    version,
    about = "SPOP agent for HAProxy's SPOE filter, running message handlers as sandboxed WebAssembly components",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a handler component exactly as a load or reload would
    /// (compile, check the world and imports, instantiate, smoke call), then
    /// exit 0 if it would be accepted, 1 if not. Serves nothing.
    Check {
        /// The component to check.
        module: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The handler component (.wasm) that answers SPOE messages. Reloaded when
    /// the file changes (in place or by rename) and on SIGHUP.
    #[arg(long, value_name = "PATH", required_unless_present = "native_iprep")]
    pub module: Option<PathBuf>,

    /// TCP port to listen on.
    #[arg(short = 'p', long, default_value_t = 12345)]
    pub port: u16,

    /// Address to listen on (IPv4 or IPv6).
    #[arg(short = 'a', long, default_value = "0.0.0.0")]
    pub address: IpAddr,

    /// Worker threads serving connections (default: one per CPU). Each worker
    /// keeps its own guest instance.
    #[arg(short = 'n', long)]
    pub workers: Option<usize>,

    /// Debug logging (same as RUST_LOG=debug; RUST_LOG wins when set).
    #[arg(short = 'd', long)]
    pub debug: bool,

    /// Largest frame the agent accepts and sends, in bytes; the size used on a
    /// connection is the smaller of this and HAProxy's announcement.
    #[arg(short = 'm', long, default_value_t = DEFAULT_MAX_FRAME_SIZE,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_FRAME_SIZE)..=16 * 1024 * 1024))]
    pub max_frame_size: u32,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// A peer must complete HELLO within this time, or gets DISCONNECT
    /// status 2 (timeout).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hello_timeout: Duration,

    /// Close connections idle for this long with status 2; 0 disables (HAProxy
    /// manages idle SPOE connections itself).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most simultaneous connections; more are refused with DISCONNECT status
    /// 13 (resource allocation error).
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// On SIGTERM/SIGINT, how long to wait for connections to answer what they
    /// received and close.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// When a guest call fails, set this txn-scope variable to the failure kind
    /// (timeout, memory, trap, error, invalid_output) instead of sending no
    /// action. With var-prefix `iprep` and name `error`: `txn.iprep.error`.
    #[arg(long, value_name = "NAME")]
    pub error_var: Option<String>,

    /// Do not watch the module file for changes (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,

    /// Serve Prometheus metrics over HTTP at this address (e.g. 127.0.0.1:9345).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Benchmarking aid: answer with the IP-reputation logic compiled natively
    /// instead of a WebAssembly module, to measure the sandbox's cost.
    #[arg(long, conflicts_with = "module")]
    pub native_iprep: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Wall-clock budget of one handle-message call; a guest running longer is
    /// interrupted and the message gets no actions. Keep it well under the SPOE
    /// `timeout processing`.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub guest_timeout: Duration,

    /// Linear-memory cap per guest instance (suffixes KiB, MiB, GiB).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub guest_memory: usize,

    /// A fresh guest instance for every message (nothing survives between
    /// messages; ≈5 µs per call, ≈12 µs of CPU per message over SPOP) instead
    /// of one reused instance per worker.
    #[arg(long)]
    pub fresh_instance: bool,
}

impl SandboxArgs {
    pub fn to_config(&self) -> crate::sandbox::SandboxConfig {
        crate::sandbox::SandboxConfig {
            call_timeout: self.guest_timeout,
            memory_cap: self.guest_memory,
            instance_mode: if self.fresh_instance {
                InstanceMode::Fresh
            } else {
                InstanceMode::Reuse
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `250us`, `10ms`, `5s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 10ms, 5s)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use us, ms, s, m)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("`{text}`: {err}"))
}

/// Parses `16MiB`, `512KiB`, `1GiB`, `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 16MiB)"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB, GiB)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1TiB").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
