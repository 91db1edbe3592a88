//! Command-line interface: flags in the spirit of HAProxy's example agent
//! (`-p`, `-a`, `-n`, `-d`, `-m`), plus the sandbox, reload and operations
//! options.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::sandbox::{GrantSources, InstanceMode, SandboxConfig};
use crate::settings::kv::KvSettings;
use crate::spop::{self, MIN_FRAME_SIZE};

/// The listen port when neither the command line nor the file sets one.
pub const DEFAULT_PORT: u16 = 12345;
/// The listen address when neither the command line nor the file sets one:
/// loopback, so nothing is reachable from elsewhere unless asked for.
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// The largest `--max-frame-size` accepted.
pub const MAX_FRAME_SIZE_LIMIT: u32 = 16 * 1024 * 1024;

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
    /// (compile, check the world and imports, instantiate, smoke call),
    /// and/or the TLS files (version, expiry, key match, a client CA that is
    /// a CA), then exit 0 if they would be accepted, 1 if not. Serves nothing.
    Check {
        /// The component to check.
        #[arg(required_unless_present = "tls_cert")]
        module: Option<PathBuf>,
        /// The agent's certificate chain (PEM), checked with --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The agent's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The CA file client certificates are verified against.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Run one guest call (or a file of test cases) with the same sandbox
    /// flags, without a network or HAProxy, and print the result as JSON.
    /// Exits 0 on success, 1 on failure (or any case that differs).
    Call(CallArgs),
    /// Print HAProxy's side of a --config file: the SPOE configuration
    /// (`spoe-agent`, one `spoe-message` per declared message, timeouts from
    /// the guests' deadlines), or the backend of agents to add to
    /// haproxy.cfg.
    HaproxyConfig(HaproxyConfigArgs),
    /// Print what a running agent serves: each guest's module and hash, its
    /// state (serving, on probation, quarantined, rolled back), its last
    /// reload, and its calls and faults, read from `GET /status` on the
    /// agent's metrics address. Read-only.
    Status(StatusArgs),
    /// Run a recording (--record) against another version of a guest and
    /// report, per message name, the answers that are the same, differ or
    /// fail, and which variables changed and how. Exits 1 when more than
    /// --max-diff messages differ.
    Replay(ReplayArgs),
    /// Write a new guest: a directory NAME holding the IP-reputation guest
    /// in --lang, a ./build.sh that writes NAME.wasm, a cases.json that
    /// `spoa-host call NAME.wasm --cases cases.json` passes, a block list
    /// and a README.
    New(NewArgs),
}

/// `spoa-host new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The guest's name: its directory, crate and NAME.wasm (a-z, 0-9, -
    /// and _, starting with a letter).
    pub name: String,
    /// The language of the guest.
    #[arg(long, value_enum)]
    pub lang: GuestLanguage,
    /// Where the SDKs are: a spoa-host source tree (spoa-guest/ and sdk/).
    /// Default: $SPOA_SDK, else the tree this binary was built from.
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

/// The languages `spoa-host new` writes guests in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestLanguage {
    Rust,
    Python,
    Javascript,
    C,
}

impl GuestLanguage {
    pub fn name(self) -> &'static str {
        match self {
            GuestLanguage::Rust => "Rust",
            GuestLanguage::Python => "Python",
            GuestLanguage::Javascript => "JavaScript",
            GuestLanguage::C => "C",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The agent's --metrics-address [default: the `metrics-address` of
    /// --config, else 127.0.0.1:9345].
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The agent's configuration file, for its `metrics-address`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the JSON document as served instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HaproxyConfigArgs {
    /// The agent's configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The HAProxy version to write for: 2.6 (2.6 to 3.0) or 3 (3.1 and later).
    #[arg(long, value_enum, default_value_t = HaproxyVersion::V3)]
    pub haproxy: HaproxyVersion,
    /// What to print: the SPOE file (`filter spoe ... config FILE`) or the
    /// backend section.
    #[arg(long, value_enum, default_value_t = HaproxySection::Spoe)]
    pub section: HaproxySection,
    /// The sandbox flags the agent runs with (their --guest-timeout is the
    /// deadline of guests whose table sets none).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The agent's --error-var, if it runs with one.
    #[arg(long, value_name = "NAME", value_parser = parse_var_name)]
    pub error_var: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HaproxyVersion {
    /// HAProxy 2.6 to 3.0 (SPOE applets; backend `mode tcp`).
    #[value(name = "2.6")]
    V2_6,
    /// HAProxy 3.1 and later (backend `mode spop`).
    #[value(name = "3")]
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HaproxySection {
    /// The SPOE configuration file.
    Spoe,
    /// The `backend` of agents, for haproxy.cfg.
    Backend,
}

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The component to call.
    pub module: PathBuf,
    /// The SPOE message name.
    #[arg(long, value_name = "NAME", required_unless_present = "cases")]
    pub message: Option<String>,
    /// An argument, repeatable: NAME=TYPE:VALUE with TYPE one of null, bool,
    /// int32, uint32, int64, uint64, ipv4, ipv6, str, bin (hex), e.g.
    /// `ip=ipv4:192.0.2.1`, `ua=str:curl/8`, `flag=null:`.
    #[arg(long = "arg", value_name = "NAME=TYPE:VALUE", value_parser = parse_typed_arg)]
    pub args: Vec<spop::Arg>,
    /// Run the cases of this JSON file instead (see README, "Trying a guest"),
    /// and report every difference from the expected actions.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["message", "args"])]
    pub cases: Option<PathBuf>,
    /// Seed the guest's randomness from SEED and each message's content, and
    /// stop its clocks at 2026-01-01T00:00:00Z (a case's recorded time with
    /// --cases): the same module, message and seed give the same answer.
    #[arg(long, value_name = "SEED")]
    pub deterministic: Option<u64>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub kv: KvArgs,
}

impl ReplayArgs {
    /// The baseline's sandbox flags: NEW's, with its own --guest-config.
    pub fn baseline_sandbox(&self) -> SandboxArgs {
        let mut sandbox = self.sandbox.clone();
        if !self.baseline_guest_config.is_empty() {
            sandbox.guest_config = self.baseline_guest_config.clone();
        }
        sandbox
    }
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A recording made with --record: one file, or its directory (every
    /// file in it, oldest first).
    #[arg(value_name = "RECORDING")]
    pub recording: PathBuf,
    /// The version to try.
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,
    /// Compare with this version's answers instead of the recorded ones.
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Seed randomness from SEED and each message, and stop the clocks at
    /// each message's recorded time (see `call --deterministic`).
    #[arg(long, value_name = "SEED")]
    pub deterministic: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when more than N messages differ or fail (default 0).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_diff: u64,
    /// Differences shown per changed variable.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub examples: usize,
    /// Only the records of this guest (a recording of several guests holds
    /// them all).
    #[arg(long, value_name = "NAME")]
    pub guest: Option<String>,
    /// The baseline's --guest-config, when only its configuration differs
    /// from NEW's (repeatable; default: NEW's).
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::sandbox::parse_pair, requires = "baseline")]
    pub baseline_guest_config: Vec<(String, String)>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub kv: KvArgs,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The handler component (.wasm) that answers every SPOE message (the
    /// one-guest form). Reloaded when the file changes (in place or by
    /// rename) and on SIGHUP.
    #[cfg_attr(
        feature = "native-iprep",
        arg(long, value_name = "PATH", required_unless_present_any = ["native_iprep", "config"], conflicts_with = "config")
    )]
    #[cfg_attr(
        not(feature = "native-iprep"),
        arg(
            long,
            value_name = "PATH",
            required_unless_present = "config",
            conflicts_with = "config"
        )
    )]
    pub module: Option<PathBuf>,

    /// Several guests (TOML; see README, "Several guests"): global settings
    /// and one [[guest]] table per guest, each answering the messages it
    /// declares. The sandbox flags below are the defaults of every guest.
    /// Reloaded when it changes and on SIGHUP.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = ["guest_config", "guest_config_file", "guest_data", "smoke_message"])]
    pub config: Option<PathBuf>,

    /// TCP port to listen on (default 12345; overrides the file's `port`).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,

    /// Address to listen on, IPv4 or IPv6 (default 127.0.0.1; overrides the
    /// file's `address`). Listening beyond loopback without --tls-cert or
    /// --allow-from lets anyone who reaches the port send messages.
    #[arg(short = 'a', long)]
    pub address: Option<IpAddr>,

    /// Also (or, without -p/-a, only) listen on this Unix socket. A stale
    /// socket file left by a process that is gone is replaced.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,

    /// Permission bits of the --unix socket file, in octal (who may connect).
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_mode, requires = "unix")]
    pub unix_mode: u32,

    /// Serve TCP over TLS with this certificate chain (PEM). Reloaded when
    /// the file changes; connections in progress keep their session.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require a client certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Accept TCP connections only from this network (CIDR, IPv4 or IPv6;
    /// repeatable). Others are closed before a byte is read.
    #[arg(long, value_name = "CIDR", value_parser = crate::net::parse_network)]
    pub allow_from: Vec<ipnet::IpNet>,

    /// Worker threads serving established connections and running their
    /// guest calls (default: one per CPU). Accepting, HELLOs, health checks,
    /// /metrics and signals run on a thread of their own, which never runs
    /// guest code.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Keep each connection on the worker it was given. By default the
    /// workers' load moves connections between them: onto fewer workers
    /// while they wait for work more than they do it, apart again when one
    /// is saturated.
    #[arg(long)]
    pub no_rebalance: bool,

    /// Debug logging (same as RUST_LOG=debug; RUST_LOG wins when set).
    #[arg(short = 'd', long)]
    pub debug: bool,

    /// Largest frame the agent accepts and sends, in bytes (default 16380);
    /// the size used on a connection is the smaller of this and HAProxy's
    /// announcement.
    #[arg(short = 'm', long,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_FRAME_SIZE)..=i64::from(MAX_FRAME_SIZE_LIMIT)))]
    pub max_frame_size: Option<u32>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    #[command(flatten)]
    pub kv: KvArgs,

    #[command(flatten)]
    pub record: RecordArgs,

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
    /// (timeout, memory, trap, error, invalid_output, quarantined, overloaded)
    /// instead of sending no action. With var-prefix `iprep` and name `error`:
    /// `txn.iprep.error`. With --config, the default of every guest.
    #[arg(long, value_name = "NAME", value_parser = parse_var_name)]
    pub error_var: Option<String>,

    /// Scheduling of the control plane's threads (accept, HELLO, health
    /// checks, /metrics, signals) and of the epoch ticker. `realtime`
    /// (SCHED_RR, priority 1) lets a health check through at once while
    /// guests keep every core busy; it needs CAP_SYS_NICE or an
    /// RLIMIT_RTPRIO of 1 (systemd: LimitRTPRIO=1), and falls back to
    /// `normal` without them.
    #[arg(long, value_enum, default_value_t = ControlPriority::Realtime)]
    pub control_priority: ControlPriority,

    /// Do not watch module, configuration and data files for changes (SIGHUP
    /// still reloads).
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
    #[cfg(feature = "native-iprep")]
    #[arg(long, conflicts_with_all = ["module", "config"])]
    pub native_iprep: bool,
}

/// How the control plane's threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlPriority {
    /// SCHED_RR priority 1: the control plane's work is short (accept, a
    /// HELLO, a scrape), and at real-time priority it never waits for a
    /// time slice behind data-plane threads running guests.
    Realtime,
    /// The default time-sharing policy.
    Normal,
}

impl ControlPriority {
    /// Applies the policy to the calling thread (threads it starts inherit
    /// it). Refusal is logged once and leaves the thread as it was.
    pub fn apply_to_this_thread(self) {
        static REPORTED: std::sync::Once = std::sync::Once::new();
        if self == ControlPriority::Normal {
            return;
        }
        let error = crate::realtime::request_for_this_thread().err();
        REPORTED.call_once(|| match error {
            None => tracing::info!("control plane at real-time priority (SCHED_RR 1)"),
            Some(err) => tracing::info!(
                "control plane at normal priority: SCHED_RR refused ({err}); grant CAP_SYS_NICE \
                 or LimitRTPRIO=1 so health checks never wait behind busy guests"
            ),
        });
    }
}

/// Recording live messages and their answers, for `spoa-host replay`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct RecordArgs {
    /// Record a share of the messages answered, with their answers, the
    /// guest, its module's SHA-256 and the time, as JSON lines in files in
    /// DIR (see docs/operators.md, "Recording and replay").
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// The share of messages recorded, 0 to 1 (default 0.01: 1 %).
    #[arg(long, value_name = "FRACTION", value_parser = crate::settings::record::parse_share)]
    pub record_share: Option<f64>,

    /// Most bytes all the recording files hold together (default 100MiB); a
    /// new file starts at a quarter of it, and the oldest go first.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub record_max_bytes: Option<usize>,

    /// NAME=keep|drop|hash: what the recording keeps of argument NAME: its
    /// value (the default), nothing, or a hash (repeatable).
    #[arg(long, value_name = "NAME=RULE", value_parser = crate::record::redact::RedactRules::parse_rule)]
    pub record_redact: Vec<(String, crate::record::redact::Redaction)>,
}

impl RecordArgs {
    /// What the flags set (the rest is left to the file, then the defaults).
    pub fn settings(&self) -> crate::settings::record::RecordSettings {
        crate::settings::record::RecordSettings {
            dir: self.record.clone(),
            share: self.record_share,
            max_bytes: self.record_max_bytes.map(|bytes| bytes as u64),
            redact: self.record_redact.clone(),
        }
    }
}

/// Where guests' shared state (`wasi:keyvalue`) lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct KvArgs {
    /// The key-value store guests share: `memory` (in this process, the
    /// default) or `redis://HOST:PORT[/DB]` (shared by every agent using that
    /// Redis; connects lazily, reconnects by itself).
    #[arg(long, value_name = "memory|redis://HOST:PORT")]
    pub kv: Option<String>,

    /// Most memory the in-process store holds, counting keys, values and 96
    /// bytes per entry (default 64MiB); past it, the least recently used
    /// entries are evicted.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub kv_memory: Option<usize>,

    /// Prefix of every Redis key (default `spoa:`): keys are
    /// PREFIX BUCKET:KEY.
    #[arg(long, value_name = "PREFIX")]
    pub kv_prefix: Option<String>,
}

impl KvArgs {
    /// What the flags set (the rest is left to the file, then the defaults).
    pub fn settings(&self) -> KvSettings {
        KvSettings {
            kv: self.kv.clone(),
            kv_memory: self.kv_memory,
            kv_prefix: self.kv_prefix.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Time budget of one handle-message call: the time it runs (counted in
    /// 500 µs ticks, not the time its thread spent on other calls or was
    /// descheduled), and in wall-clock time while it waits in the host (a WASI
    /// sleep or poll). A guest over budget is interrupted and the message gets
    /// no actions. Keep it well under the SPOE `timeout processing`.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub guest_timeout: Duration,

    /// Linear-memory cap per guest instance (suffixes KiB, MiB, GiB).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub guest_memory: usize,

    /// A fresh guest instance for every message (nothing survives between
    /// messages; ≈5 µs per call) instead of reusing pooled instances.
    #[arg(long)]
    pub fresh_instance: bool,

    /// Calls a reused instance serves before a new one replaces it: a guest
    /// that leaks memory slowly is recycled before it fails a message at
    /// --guest-memory. The default costs a Rust guest nothing measurable
    /// (one ≈5 µs instantiation per 100,000 calls) and a Python or
    /// JavaScript guest under 0.2 µs a call (5–16 ms per 100,000 calls).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_max_calls: u64,

    /// Most messages of a read burst one entry into a guest's
    /// `handle-messages` export takes (guests without it get one call per
    /// message). A batch call is also asked to return once it has run an
    /// epoch tick, so slow messages never make long entries.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub guest_batch: u32,

    /// Most answers a guest with the packed batch export (0.1.6; every
    /// guest of the Rust SDK) may hold back and hand to the host in one
    /// call. The host asks for fewer when messages are slow (a group waits
    /// at most a quarter of an epoch tick). 1: each answer at once, and a
    /// failure costs exactly the message being handled, with nothing run
    /// twice (see the WIT's `handle-packed-messages`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub guest_answer_group: u32,

    /// Most batches of guest calls running at once; more wait in line. Also
    /// the most instances kept per module.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub guest_concurrency: u32,

    /// Where compiled modules are kept between starts and reloads (default:
    /// $XDG_CACHE_HOME/spoa-host or ~/.cache/spoa-host). Only files this
    /// host wrote are ever loaded.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile the module at every start and reload.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// A configuration value the guest reads through wasi:config/store,
    /// repeatable; overrides the same key of --guest-config-file.
    #[arg(long = "guest-config", value_name = "KEY=VALUE", value_parser = crate::sandbox::parse_pair)]
    pub guest_config: Vec<(String, String)>,

    /// A file of KEY=VALUE lines (# comments) for wasi:config/store. Changing
    /// it reloads the guest, as a module change does.
    #[arg(long, value_name = "FILE")]
    pub guest_config_file: Option<PathBuf>,

    /// A directory the guest sees read-only at /data (its only directory).
    /// A change inside it reloads the guest: new instances see the new files.
    #[arg(long, value_name = "DIR")]
    pub guest_data: Option<PathBuf>,

    /// The message of the smoke call a module must survive before it serves
    /// (with its --smoke-arg arguments). Default: check-client-ip with
    /// ip=ipv4:127.0.0.1. An `err` answer or no actions are fine; a trap,
    /// timeout or memory blow-up rejects the module.
    #[arg(long, value_name = "NAME")]
    pub smoke_message: Option<String>,

    /// An argument of the smoke message, repeatable (NAME=TYPE:VALUE).
    #[arg(long = "smoke-arg", value_name = "NAME=TYPE:VALUE", value_parser = parse_typed_arg, requires = "smoke_message")]
    pub smoke_args: Vec<spop::Arg>,

    /// A wasi:keyvalue bucket the guest may open, repeatable; `*` grants
    /// every bucket. Default: `default` only (the empty name opens it too).
    #[arg(long = "kv-bucket", value_name = "NAME", value_parser = parse_bucket_grant)]
    pub kv_buckets: Vec<String>,

    /// An IP table the guest may open as NAME (spoa:agent/ip-table),
    /// repeatable. PATH is a list (an address or network per line, `#`
    /// comments, an optional label after it: FireHOL, Spamhaus DROP, CSV) or
    /// a MaxMind DB file (.mmdb), or `redis-set:KEY` (a Redis set's members,
    /// with --kv redis://…). Loaded once per agent, shared by every guest
    /// granted it, and reloaded when it changes, without reloading the guest.
    #[arg(long = "ip-table", value_name = "NAME=PATH", value_parser = crate::tables::parse_grant)]
    pub ip_tables: Vec<(String, String)>,

    /// A counter the guest may increment (spoa:agent/metrics), repeatable:
    /// it appears as spoa_guest_counter_total{guest,name}. Other names are
    /// refused, so the guest adds no series but these (at most 32; a-z, 0-9
    /// and _).
    #[arg(long = "guest-metric", value_name = "NAME", value_parser = parse_counter_name)]
    pub guest_metrics: Vec<String>,

    /// Time limit of a guest's optional `init` export, called once on each
    /// new instance before its first message (outside the per-message
    /// --guest-timeout).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub guest_init_timeout: Duration,
}

impl SandboxArgs {
    /// The flags' defaults, as a command line without them gives.
    pub fn defaults() -> SandboxArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            sandbox: SandboxArgs,
        }
        Only::parse_from(["spoa-host"]).sandbox
    }

    pub fn to_config(&self) -> SandboxConfig {
        SandboxConfig {
            call_timeout: self.guest_timeout,
            init_timeout: self.guest_init_timeout,
            memory_cap: self.guest_memory,
            instance_mode: if self.fresh_instance {
                InstanceMode::Fresh
            } else {
                InstanceMode::Reuse
            },
            max_concurrent_calls: self.guest_concurrency,
            max_calls_per_instance: self.guest_max_calls,
            max_batch: self.guest_batch,
            max_answer_group: self.guest_answer_group,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(default_cache_dir)
            },
            long_call_slots: 1,
            realtime_ticker: false,
            deterministic: None,
        }
    }

    /// What a guest's files grant it, from these flags (`--module`, and the
    /// defaults of every `[[guest]]`).
    pub fn grants(&self) -> GrantSources {
        let smoke_message = match &self.smoke_message {
            Some(name) => spop::Message {
                name: bytes::Bytes::copy_from_slice(name.as_bytes()),
                args: self.smoke_args.clone(),
            },
            None => default_smoke_message(),
        };
        GrantSources {
            config_pairs: self.guest_config.clone(),
            config_file: self.guest_config_file.clone(),
            data_dir: self.guest_data.clone(),
            smoke_message,
            // Each name was validated by `parse_bucket_grant`.
            kv_buckets: crate::kv::BucketGrants::from_names(&self.kv_buckets).unwrap_or_default(),
            // Each pair was validated by `parse_grant`.
            ip_tables: crate::tables::TableGrants::from_pairs(&self.ip_tables).unwrap_or_default(),
            // Validated (and their number bounded) when a load reads them.
            counters: self.guest_metrics.clone(),
        }
    }
}

/// `--module`'s smoke call without `--smoke-message`: what the IP-reputation
/// example answers, `check-client-ip` with `ip` = 127.0.0.1 (the sandbox
/// calls whatever it is given).
fn default_smoke_message() -> spop::Message {
    spop::Message {
        name: bytes::Bytes::from_static(b"check-client-ip"),
        args: vec![spop::Arg {
            name: bytes::Bytes::from_static(b"ip"),
            value: spop::TypedData::Ipv4(std::net::Ipv4Addr::LOCALHOST),
        }],
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("spoa-host"))
}

/// Parses octal permission bits (`600`, `0660`).
fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal mode (e.g. 660)"))
}

/// Validates a variable name as guest actions' names are validated.
fn parse_var_name(text: &str) -> Result<String, String> {
    spop::check_var_name(text.as_bytes())?;
    Ok(text.to_owned())
}

pub use crate::spop::notation::{parse_typed_arg, parse_typed_value};

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
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|err| format!("`{text}`: {err}"))?;
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than a day"));
    }
    Ok(duration)
}

/// The longest duration any flag or key accepts: arithmetic on durations
/// (back-offs that double, deadlines twice over) then never overflows.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn parse_counter_name(text: &str) -> Result<String, String> {
    crate::sandbox::check_counter_name(text)?;
    Ok(text.to_owned())
}

fn parse_bucket_grant(text: &str) -> Result<String, String> {
    if text != "*" {
        crate::kv::validate_bucket_name(text)?;
    }
    Ok(text.to_owned())
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
    fn error_var_is_validated_like_guest_names() {
        assert!(parse_var_name("error").is_ok());
        assert!(parse_var_name("").is_err());
        assert!(parse_var_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
