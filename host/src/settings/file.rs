//! The `--config FILE` (TOML): global settings, one `[[guest]]` table per
//! guest, and the `[haproxy]` table `spoa-host haproxy-config` reads.
//!
//! Every guest key falls back to the command line's sandbox flags
//! (`--guest-timeout`, `--guest-memory`, …), which fall back to their
//! defaults; relative paths are relative to the file's directory.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::exec::{ExecutorLimits, FailurePolicy, QuarantinePolicy, RollbackPolicy};
use crate::record::redact::Redaction;
use crate::sandbox::{GrantSources, InstanceMode, SandboxConfig};
use crate::settings::cli::{SandboxArgs, parse_duration, parse_size, parse_typed_arg};
use crate::settings::kv::KvSettings;
use crate::settings::record::RecordSettings;
use crate::spop;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    address: Option<IpAddr>,
    port: Option<u16>,
    workers: Option<u16>,
    /// `false`, as `--no-rebalance`.
    rebalance: Option<bool>,
    max_frame_size: Option<u32>,
    metrics_address: Option<SocketAddr>,
    /// `kv = "redis://…"` or `"memory"`, as `--kv`.
    kv: Option<String>,
    kv_memory: Option<String>,
    kv_prefix: Option<String>,
    #[serde(default)]
    haproxy: HaproxyTable,
    #[serde(default)]
    record: RecordTable,
    #[serde(default, rename = "guest")]
    guests: Vec<GuestTable>,
}

/// `[record]`: as the `--record*` flags, which win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RecordTable {
    dir: Option<PathBuf>,
    share: Option<f64>,
    max_bytes: Option<String>,
    /// Argument name to `keep`, `drop` or `hash`.
    #[serde(default)]
    redact: BTreeMap<String, String>,
}

impl RecordTable {
    /// The settings, with `dir` relative to the file's directory.
    fn settings(self, base: &Path) -> Result<RecordSettings, String> {
        if let Some(share) = self.share
            && !(0.0..=1.0).contains(&share)
        {
            return Err(format!("share: {share} is not from 0 to 1"));
        }
        let max_bytes = self
            .max_bytes
            .as_deref()
            .map(crate::settings::cli::parse_size)
            .transpose()
            .map_err(|err| format!("max-bytes: {err}"))?;
        let redact = self
            .redact
            .into_iter()
            .map(|(name, rule)| {
                let rule =
                    Redaction::parse(&rule).map_err(|err| format!("redact.{name}: {err}"))?;
                Ok((name, rule))
            })
            .collect::<Result<_, String>>()?;
        Ok(RecordSettings {
            dir: self.dir.map(|dir| base.join(dir)),
            share: self.share,
            max_bytes: max_bytes.map(|bytes| bytes as u64),
            redact,
        })
    }
}

/// `[haproxy]`: what `spoa-host haproxy-config` prints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HaproxyTable {
    /// The SPOE engine (`filter spoe engine NAME`) and its scope.
    pub engine: Option<String>,
    /// The `spoe-agent` name.
    pub agent: Option<String>,
    /// `option var-prefix`: variables come back as `txn.PREFIX.NAME`.
    pub var_prefix: Option<String>,
    /// The backend of agents.
    pub backend: Option<String>,
    /// The agents' addresses (default: this agent's address and port).
    #[serde(default)]
    pub servers: Vec<String>,
    /// The health check options of each `server` line (default
    /// `inter 1s fall 3 rise 2`).
    pub check: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GuestTable {
    name: String,
    module: PathBuf,
    messages: Vec<String>,
    timeout: Option<String>,
    memory: Option<String>,
    instance: Option<String>,
    concurrency: Option<u32>,
    queue: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    config_file: Option<PathBuf>,
    data: Option<PathBuf>,
    smoke_message: Option<String>,
    #[serde(default)]
    smoke_args: Vec<String>,
    /// The wasi:keyvalue buckets it may open (default: `--kv-bucket`, else
    /// `default`).
    kv_buckets: Option<Vec<String>>,
    /// The IP tables it may open, by name (default: `--ip-table`).
    ip_tables: Option<BTreeMap<String, String>>,
    /// The counters it may increment (default: `--guest-metric`).
    metrics: Option<Vec<String>>,
    /// The time limit of its `init` export (default: `--guest-init-timeout`).
    init_timeout: Option<String>,
    /// Calls a reused instance serves (default: `--guest-max-calls`).
    max_calls: Option<u64>,
    /// Most messages per batch call (default: `--guest-batch`).
    batch: Option<u32>,
    /// Most answers a packed batch holds back (default: `--guest-answer-group`).
    answer_group: Option<u32>,
    #[serde(default)]
    on_failure: FailureTable,
    shadow: Option<ShadowTable>,
    canary: Option<CanaryTable>,
    #[serde(default)]
    spoe: BTreeMap<String, SpoeTable>,
}

/// `[guest.shadow]`: a candidate version that answers a copy of a share of
/// the guest's messages, compared with what was served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ShadowTable {
    module: PathBuf,
    share: f64,
    /// Seeded randomness and frozen clocks, as `--deterministic SEED`.
    deterministic: Option<u64>,
}

/// `[guest.canary]`: a new version serving a share of the guest's
/// messages until it is promoted or rolled back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CanaryTable {
    module: PathBuf,
    share: f64,
    promote_after: u64,
}

/// A guest's canary, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    pub module: PathBuf,
    /// 0 to 1.
    pub share: f64,
    /// Messages it serves before the verdict.
    pub promote_after: u64,
}

/// A guest's shadow, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSpec {
    pub module: PathBuf,
    /// 0 to 1.
    pub share: f64,
    pub deterministic: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FailureTable {
    error_var: Option<String>,
    quarantine: Option<bool>,
    quarantine_failures: Option<u64>,
    quarantine_ratio: Option<f64>,
    quarantine_window: Option<String>,
    quarantine_backoff: Option<String>,
    quarantine_max_backoff: Option<String>,
    rollback: Option<bool>,
    rollback_calls: Option<u64>,
    rollback_ratio: Option<f64>,
}

/// `[guest.spoe.MESSAGE]`: how HAProxy sends a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpoeTable {
    /// `args` of the `spoe-message`, e.g. `["ip=src"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// `event` of the `spoe-message` (default `on-frontend-http-request`).
    pub event: Option<String>,
    /// An optional ACL condition, e.g. `if { path_beg /login }`.
    pub condition: Option<String>,
}

impl GuestSpec {
    /// Whether `other` runs the same guest (module, limits, grants, policy):
    /// then a configuration reload keeps its executor and instances, and
    /// only its routing may change.
    pub fn runs_like(&self, other: &GuestSpec) -> bool {
        self.name == other.name
            && self.module == other.module
            && self.sandbox == other.sandbox
            && self.limits == other.limits
            && self.grants == other.grants
            && self.policy == other.policy
    }
}

/// The event a message is sent on when its table names none.
pub const DEFAULT_EVENT: &str = "on-frontend-http-request";

/// One guest, resolved: everything needed to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestSpec {
    pub name: String,
    pub module: PathBuf,
    /// The messages it answers; empty: every message (the `--module` form).
    pub messages: Vec<String>,
    pub sandbox: SandboxConfig,
    pub limits: ExecutorLimits,
    pub grants: GrantSources,
    pub policy: FailurePolicy,
    pub spoe: BTreeMap<String, SpoeTable>,
    pub shadow: Option<ShadowSpec>,
    pub canary: Option<CanarySpec>,
}

/// A whole agent configuration: the global settings the file sets and the
/// guests.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub path: PathBuf,
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub workers: Option<u16>,
    pub rebalance: Option<bool>,
    pub max_frame_size: Option<u32>,
    pub metrics_address: Option<SocketAddr>,
    /// The shared store's settings (the command line's flags win).
    pub kv: KvSettings,
    /// The recording's settings (the command line's flags win).
    pub record: RecordSettings,
    pub haproxy: HaproxyTable,
    pub guests: Vec<GuestSpec>,
}

impl AgentConfig {
    /// Reads and validates `path`; `defaults` are the command line's sandbox
    /// flags and `error_var` its `--error-var`.
    pub fn load(
        path: &Path,
        defaults: &SandboxArgs,
        error_var: Option<&str>,
    ) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AgentConfig::parse(path, &text, defaults, error_var)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        defaults: &SandboxArgs,
        error_var: Option<&str>,
    ) -> Result<AgentConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|err| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if file.guests.is_empty() {
            return Err(invalid("no [[guest]] table".into()));
        }
        if let Some(size) = file.max_frame_size
            && !(spop::MIN_FRAME_SIZE..=crate::settings::cli::MAX_FRAME_SIZE_LIMIT).contains(&size)
        {
            return Err(invalid(format!(
                "max-frame-size {size} is out of range ({}..={})",
                spop::MIN_FRAME_SIZE,
                crate::settings::cli::MAX_FRAME_SIZE_LIMIT
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut guests = Vec::with_capacity(file.guests.len());
        for table in file.guests {
            let name = table.name.clone();
            let spec = resolve_guest(table, base, defaults, error_var)
                .map_err(|message| invalid(format!("guest `{name}`: {message}")))?;
            guests.push(spec);
        }
        check_unique(&guests).map_err(invalid)?;
        let kv = KvSettings {
            kv: file.kv,
            kv_memory: file
                .kv_memory
                .as_deref()
                .map(crate::settings::cli::parse_size)
                .transpose()
                .map_err(|err| invalid(format!("kv-memory: {err}")))?,
            kv_prefix: file.kv_prefix,
        };
        kv.spec(&KvSettings::default())
            .map_err(|err| invalid(format!("kv: {err}")))?;
        let record = file
            .record
            .settings(base)
            .map_err(|err| invalid(format!("[record] {err}")))?;
        // Pasted into haproxy.cfg by `haproxy-config`: one line's words.
        let haproxy_words = file.haproxy.servers.iter().chain(&file.haproxy.check);
        if let Some(bad) = haproxy_words
            .into_iter()
            .find(|w| w.chars().any(char::is_control))
        {
            return Err(invalid(format!(
                "[haproxy]: {bad:?} holds a control character (a line break?)"
            )));
        }
        Ok(AgentConfig {
            kv,
            record,
            path: path.to_path_buf(),
            address: file.address,
            port: file.port,
            workers: file.workers,
            rebalance: file.rebalance,
            max_frame_size: file.max_frame_size,
            metrics_address: file.metrics_address,
            haproxy: file.haproxy,
            guests,
        })
    }
}

/// Guest names are unique, and so is every message name across guests.
fn check_unique(guests: &[GuestSpec]) -> Result<(), String> {
    let mut names = HashMap::new();
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for guest in guests {
        if names.insert(guest.name.as_str(), ()).is_some() {
            return Err(format!("two guests are named `{}`", guest.name));
        }
        for message in &guest.messages {
            if let Some(other) = owners.insert(message, &guest.name) {
                return Err(format!(
                    "message `{message}` is declared by guests `{other}` and `{}`",
                    guest.name
                ));
            }
        }
    }
    Ok(())
}

fn resolve_guest(
    table: GuestTable,
    base: &Path,
    defaults: &SandboxArgs,
    error_var: Option<&str>,
) -> Result<GuestSpec, String> {
    check_guest_name(&table.name)?;
    check_messages(&table)?;
    let sandbox = resolve_sandbox(&table, defaults)?;
    let limits = ExecutorLimits {
        concurrency: sandbox.max_concurrent_calls,
        queue: table
            .queue
            .unwrap_or_else(|| default_queue(sandbox.max_concurrent_calls)),
    };
    let grants = resolve_grants(&table, base, defaults)?;
    let policy = resolve_policy(&table.on_failure, error_var)?;
    let shadow = match &table.shadow {
        Some(shadow) if !(0.0..=1.0).contains(&shadow.share) => {
            return Err(format!("shadow.share: {} is not from 0 to 1", shadow.share));
        }
        Some(shadow) => Some(ShadowSpec {
            module: base.join(&shadow.module),
            share: shadow.share,
            deterministic: shadow.deterministic,
        }),
        None => None,
    };
    let canary = match &table.canary {
        Some(canary) if !(0.0..=1.0).contains(&canary.share) => {
            return Err(format!("canary.share: {} is not from 0 to 1", canary.share));
        }
        Some(canary) if canary.promote_after == 0 => {
            return Err("canary.promote-after: must be at least 1".into());
        }
        Some(canary) => Some(CanarySpec {
            module: base.join(&canary.module),
            share: canary.share,
            promote_after: canary.promote_after,
        }),
        None => None,
    };
    Ok(GuestSpec {
        shadow,
        canary,
        name: table.name,
        module: base.join(table.module),
        messages: table.messages,
        sandbox,
        limits,
        grants,
        policy,
        spoe: table.spoe,
    })
}

/// `messages`: SPOE message names, each once; `[guest.spoe.*]` describes
/// only those.
fn check_messages(table: &GuestTable) -> Result<(), String> {
    if table.messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    let mut seen = std::collections::HashSet::new();
    for message in &table.messages {
        if message.is_empty() || message.len() > 255 || message.contains(char::is_whitespace) {
            return Err(format!("`{message}` is not a SPOE message name"));
        }
        if !seen.insert(message) {
            return Err(format!("message `{message}` is listed twice"));
        }
    }
    for (declared, spoe) in &table.spoe {
        if !table.messages.contains(declared) {
            return Err(format!(
                "[guest.spoe.{declared}] describes a message not in `messages`"
            ));
        }
        if let Some(condition) = &spoe.condition {
            let keyword = condition.split_whitespace().next().unwrap_or_default();
            if keyword != "if" && keyword != "unless" {
                return Err(format!(
                    "[guest.spoe.{declared}] condition must start with `if` or `unless`"
                ));
            }
        }
    }
    Ok(())
}

/// The flags' sandbox limits, with what the guest's table sets instead.
fn resolve_sandbox(table: &GuestTable, defaults: &SandboxArgs) -> Result<SandboxConfig, String> {
    let mut sandbox = defaults.to_config();
    sandbox.call_timeout = duration(&table.timeout, sandbox.call_timeout, "timeout")?;
    if sandbox.call_timeout.is_zero() {
        return Err("timeout: must be more than 0".into());
    }
    sandbox.init_timeout = duration(&table.init_timeout, sandbox.init_timeout, "init-timeout")?;
    if let Some(memory) = &table.memory {
        sandbox.memory_cap = parse_size(memory).map_err(|err| format!("memory: {err}"))?;
    }
    if let Some(instance) = &table.instance {
        sandbox.instance_mode = match instance.as_str() {
            "reuse" => InstanceMode::Reuse,
            "fresh" => InstanceMode::Fresh,
            other => return Err(format!("instance: `{other}` is not reuse or fresh")),
        };
    }
    let within = |value: Option<u32>, range: std::ops::RangeInclusive<u32>, key: &str| match value {
        Some(value) if !range.contains(&value) => Err(format!(
            "{key}: must be {} to {}",
            range.start(),
            range.end()
        )),
        value => Ok(value),
    };
    if let Some(concurrency) = within(table.concurrency, 1..=1000, "concurrency")? {
        sandbox.max_concurrent_calls = concurrency;
    }
    if let Some(batch) = within(table.batch, 1..=4096, "batch")? {
        sandbox.max_batch = batch;
    }
    if let Some(group) = within(table.answer_group, 1..=4096, "answer-group")? {
        sandbox.max_answer_group = group;
    }
    if let Some(max_calls) = table.max_calls {
        if max_calls == 0 {
            return Err("max-calls: must be at least 1".into());
        }
        sandbox.max_calls_per_instance = max_calls;
    }
    Ok(sandbox)
}

/// What the guest may see: its configuration, data, buckets and IP tables
/// (paths relative to the configuration file), and its smoke message.
fn resolve_grants(
    table: &GuestTable,
    base: &Path,
    defaults: &SandboxArgs,
) -> Result<GrantSources, String> {
    let first_message = &table.messages[0];
    let smoke_message = spop::Message {
        name: Bytes::copy_from_slice(
            table
                .smoke_message
                .as_deref()
                .unwrap_or(first_message)
                .as_bytes(),
        ),
        args: table
            .smoke_args
            .iter()
            .map(|arg| parse_typed_arg(arg).map_err(|err| format!("smoke-args: {err}")))
            .collect::<Result<_, _>>()?,
    };
    let config_pairs = table
        .config
        .iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                _ => return Err(format!("config.{key}: only strings, numbers and booleans")),
            };
            Ok((key.clone(), text))
        })
        .collect::<Result<_, _>>()?;
    let kv_buckets = match &table.kv_buckets {
        Some(names) => crate::kv::BucketGrants::from_names(names)
            .map_err(|err| format!("kv-buckets: {err}"))?,
        None => defaults.grants().kv_buckets,
    };
    let ip_tables = match &table.ip_tables {
        Some(tables) => {
            let pairs: Vec<(String, String)> = tables
                .iter()
                .map(|(name, source)| (name.clone(), source.clone()))
                .collect();
            crate::tables::TableGrants::from_pairs(&pairs)
                .map_err(|err| format!("ip-tables: {err}"))?
                .relative_to(base)
        }
        None => defaults.grants().ip_tables,
    };
    let counters = match &table.metrics {
        Some(names) => {
            crate::sandbox::CounterGrants::from_names(names)
                .map_err(|err| format!("metrics: {err}"))?;
            names.clone()
        }
        None => defaults.grants().counters,
    };
    Ok(GrantSources {
        ip_tables,
        counters,
        config_pairs,
        config_file: table.config_file.as_ref().map(|file| base.join(file)),
        data_dir: table.data.as_ref().map(|dir| base.join(dir)),
        smoke_message,
        kv_buckets,
    })
}

/// The duration `text` says, or `default` when the key is absent.
fn duration(text: &Option<String>, default: Duration, key: &str) -> Result<Duration, String> {
    match text {
        Some(text) => parse_duration(text).map_err(|err| format!("{key}: {err}")),
        None => Ok(default),
    }
}

/// Batches that may wait for a guest's permits by default.
pub fn default_queue(concurrency: u32) -> u32 {
    concurrency.saturating_mul(4)
}

/// Guest names appear in metric labels and logs: short and plain.
fn check_guest_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(())
    } else {
        Err("a name is 1 to 64 letters, digits, `-` or `_`".into())
    }
}

fn resolve_policy(table: &FailureTable, error_var: Option<&str>) -> Result<FailurePolicy, String> {
    let error_var = match table.error_var.as_deref().or(error_var) {
        Some(name) => {
            spop::check_var_name(name.as_bytes()).map_err(|err| format!("error-var: {err}"))?;
            Some(Bytes::copy_from_slice(name.as_bytes()))
        }
        None => None,
    };
    let ratio = |value: Option<f64>, default: f64, key: &str| match value {
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(_) => Err(format!("{key}: must be between 0 and 1")),
        None => Ok(default),
    };
    let quarantine = if table.quarantine.unwrap_or(true) {
        let d = QuarantinePolicy::default();
        let policy = QuarantinePolicy {
            failures: table.quarantine_failures.unwrap_or(d.failures).max(1),
            ratio: ratio(table.quarantine_ratio, d.ratio, "quarantine-ratio")?,
            window: duration(&table.quarantine_window, d.window, "quarantine-window")?,
            backoff: duration(&table.quarantine_backoff, d.backoff, "quarantine-backoff")?,
            max_backoff: duration(
                &table.quarantine_max_backoff,
                d.max_backoff,
                "quarantine-max-backoff",
            )?,
        };
        if policy.window.is_zero() || policy.backoff.is_zero() {
            return Err("quarantine-window and quarantine-backoff must be more than 0".into());
        }
        Some(QuarantinePolicy {
            max_backoff: policy.max_backoff.max(policy.backoff),
            ..policy
        })
    } else {
        None
    };
    let rollback = if table.rollback.unwrap_or(true) {
        let d = RollbackPolicy::default();
        Some(RollbackPolicy {
            calls: table.rollback_calls.unwrap_or(d.calls).max(1),
            ratio: ratio(table.rollback_ratio, d.ratio, "rollback-ratio")?,
        })
    } else {
        None
    };
    Ok(FailurePolicy {
        error_var,
        quarantine,
        rollback,
    })
}

/// The one-guest form: `--module FILE` answers every message.
pub fn single_guest(module: PathBuf, sandbox: &SandboxArgs, error_var: Option<&str>) -> GuestSpec {
    let config = sandbox.to_config();
    GuestSpec {
        name: SINGLE_GUEST_NAME.into(),
        module,
        messages: Vec::new(),
        limits: ExecutorLimits {
            concurrency: config.max_concurrent_calls,
            queue: default_queue(config.max_concurrent_calls),
        },
        sandbox: config,
        grants: sandbox.grants(),
        policy: FailurePolicy {
            error_var: error_var.map(|name| Bytes::copy_from_slice(name.as_bytes())),
            ..FailurePolicy::default()
        },
        spoe: BTreeMap::new(),
        shadow: None,
        canary: None,
    }
}

/// The `guest` label of the `--module` form.
pub const SINGLE_GUEST_NAME: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(
            Path::new("/etc/spoa/agent.toml"),
            text,
            &SandboxArgs::defaults(),
            None,
        )
    }

    #[test]
    fn the_record_table_reads_like_the_flags_with_its_directory_beside_the_file() {
        let config = parse(
            "[record]\ndir = \"record\"\nshare = 0.05\nmax-bytes = \"1MiB\"\n\
             redact = { cookie = \"hash\", authorization = \"drop\" }\n\
             [[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n",
        )
        .expect("valid");
        let spec = config
            .record
            .spec(&RecordSettings::default())
            .expect("recording");
        assert_eq!(spec.dir, PathBuf::from("/etc/spoa/record"));
        assert_eq!((spec.share, spec.max_bytes), (0.05, 1 << 20));
        let bad = parse(
            "[record]\ndir = \"r\"\nredact = { cookie = \"mask\" }\n\
             [[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n",
        );
        assert!(
            bad.expect_err("refused")
                .to_string()
                .contains("[record] redact.cookie: `mask` is not keep, drop or hash")
        );
    }

    const TWO_GUESTS: &str = r#"
        port = 12400
        address = "127.0.0.1"

        [haproxy]
        var-prefix = "sec"

        [[guest]]
        name = "iprep"
        module = "guest_iprep.wasm"
        messages = ["check-client-ip"]
        timeout = "20ms"
        config = { threshold = 30, strict = true }

        [guest.on-failure]
        error-var = "error"
        quarantine-failures = 5

        [guest.spoe.check-client-ip]
        args = ["ip=src"]

        [[guest]]
        name = "ua"
        module = "/opt/guests/ua.wasm"
        messages = ["check-ua", "check-path"]
        instance = "fresh"
        concurrency = 8

        [guest.on-failure]
        rollback = false
    "#;

    #[test]
    fn a_full_file_resolves_with_defaults_and_relative_paths() {
        let config = parse(TWO_GUESTS).expect("valid");
        assert_eq!(config.port, Some(12400));
        assert_eq!(config.haproxy.var_prefix.as_deref(), Some("sec"));
        let [iprep, ua] = &config.guests[..] else {
            panic!("two guests")
        };
        assert_eq!(iprep.module, Path::new("/etc/spoa/guest_iprep.wasm"));
        assert_eq!(iprep.sandbox.call_timeout, Duration::from_millis(20));
        assert_eq!(iprep.sandbox.memory_cap, 16 << 20, "the CLI default");
        assert_eq!(
            iprep.grants.config_pairs,
            vec![
                ("strict".to_string(), "true".to_string()),
                ("threshold".to_string(), "30".to_string())
            ]
        );
        assert_eq!(iprep.policy.error_var.as_deref(), Some(&b"error"[..]));
        assert_eq!(
            iprep.policy.quarantine.as_ref().map(|q| q.failures),
            Some(5)
        );
        assert_eq!(&iprep.grants.smoke_message.name[..], b"check-client-ip");
        assert_eq!(ua.module, Path::new("/opt/guests/ua.wasm"));
        assert_eq!(ua.sandbox.instance_mode, InstanceMode::Fresh);
        assert_eq!(ua.limits.concurrency, 8);
        assert_eq!(ua.limits.queue, 32);
        assert!(ua.policy.rollback.is_none());
        assert!(ua.policy.quarantine.is_some());
    }

    #[test]
    fn one_message_declared_by_two_guests_is_refused() {
        let text = r#"
            [[guest]]
            messages = ["check-client-ip"]
            name = "a"
            module = "a.wasm"
            [[guest]]
            name = "b"
            messages = ["other", "check-client-ip"]
            module = "b.wasm"
        "#;
        let err = parse(text).expect_err("duplicate").to_string();
        assert!(
            err.contains("message `check-client-ip` is declared by guests `a` and `b`"),
            "{err}"
        );
    }

    #[test]
    fn ip_tables_and_the_init_timeout_resolve_per_guest() {
        let text = "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n\
                    init-timeout = \"250ms\"\n\
                    ip-tables = { blocklist = \"lists/level1.netset\", feed = \"redis-set:bad\", geo = \"/var/lib/GeoIP/c.mmdb\" }\n\
                    [[guest]]\nname = \"b\"\nmodule = \"b.wasm\"\nmessages = [\"n\"]";
        let config = parse(text).expect("valid");
        let a = &config.guests[0];
        assert_eq!(a.sandbox.init_timeout, Duration::from_millis(250));
        assert_eq!(
            a.grants.ip_tables.describe(),
            "blocklist=/etc/spoa/lists/level1.netset,feed=redis-set:bad,geo=/var/lib/GeoIP/c.mmdb",
            "relative paths are relative to the file"
        );
        let b = &config.guests[1];
        assert!(b.grants.ip_tables.is_empty());
        assert_eq!(
            b.sandbox.init_timeout,
            Duration::from_secs(1),
            "the flag's default"
        );
        for (bad, key) in [
            ("ip-tables = { \"no/slash\" = \"x\" }", "ip-tables"),
            ("ip-tables = { a = \"\" }", "ip-tables"),
            ("init-timeout = \"soon\"", "init-timeout"),
        ] {
            let text =
                format!("[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n{bad}");
            let err = parse(&text).expect_err(bad).to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn shared_state_settings_resolve() {
        let text = "kv = \"redis://127.0.0.1:6379\"\nkv-memory = \"1MiB\"\n\
                    [[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n\
                    kv-buckets = [\"rate\", \"bans\"]\n\
                    [[guest]]\nname = \"b\"\nmodule = \"b.wasm\"\nmessages = [\"n\"]";
        let config = parse(text).expect("valid");
        assert_eq!(
            config.kv.spec(&KvSettings::default()),
            Ok(crate::kv::KvBackendSpec::Redis {
                url: "redis://127.0.0.1:6379".into(),
                prefix: "spoa:".into()
            })
        );
        assert_eq!(config.kv.kv_memory, Some(1 << 20));
        assert_eq!(
            config.guests[0].grants.kv_buckets,
            crate::kv::BucketGrants::Only(vec!["bans".into(), "rate".into()])
        );
        assert_eq!(
            config.guests[1].grants.kv_buckets,
            crate::kv::BucketGrants::default()
        );
        // The command line wins over the file.
        let flags = KvSettings {
            kv: Some("memory".into()),
            ..Default::default()
        };
        assert_eq!(
            flags.spec(&config.kv),
            Ok(crate::kv::KvBackendSpec::Memory {
                limit_bytes: 1 << 20
            })
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("", "no [[guest]] table"),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = []",
                "`messages` is empty",
            ),
            (
                "[[guest]]\nname = \"a b\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]",
                "a name is",
            ),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\ntimeout = \"soon\"",
                "timeout",
            ),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n[guest.spoe.n]\nargs = []",
                "not in `messages`",
            ),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\nmodul = 1",
                "unknown field",
            ),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n[[guest]]\nname = \"a\"\nmodule = \"b.wasm\"\nmessages = [\"n\"]",
                "two guests are named `a`",
            ),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n[guest.on-failure]\nerror-var = \"\"",
                "error-var",
            ),
            (
                "kv = \"mongodb://x\"\n[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]",
                "expected `memory` or a redis",
            ),
            (
                "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\nkv-buckets = [\"a:b\"]",
                "kv-buckets",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}\n→ {err}");
        }
    }
}
