//! `spoa-host call`: one guest call, or a file of cases, with the serving
//! sandbox and no network — how a guest author tries a guest without HAProxy.
//!
//! Output (one JSON object on stdout):
//! - success: `{"ok":true,"actions":[{"action":"set-var","scope":"sess",
//!   "name":"ip_score","value":{"type":"int32","value":42}}]}`
//! - failure: `{"ok":false,"failure":{"kind":"timeout","reason":"…"}}`
//!
//! A value is `{"type":T,"value":V}`: `null` has no value; `bool` a boolean;
//! the integer types a number; `ipv4`/`ipv6` the address text; `str` the text
//! (invalid UTF-8 replaced by U+FFFD); `bin` lowercase hex.
//!
//! A cases file is a JSON array (or JSON lines, as a `--record` recording
//! is) of
//! `{"name":"…","message":"check-client-ip","args":["ip=ipv4:192.0.2.1"],
//!   "expect":[…actions…]}` or `…,"expect_failure":"error"}`. In an expected
//! action, a value without `"value"` matches any value of that type (for
//! random scores).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::format::{JsonAction, action_to_json};
use crate::sandbox::{GuestFailure, LoadedModule, Sandbox};
use crate::settings::cli::{CallArgs, parse_typed_arg};
use crate::spop;

#[derive(Debug, Serialize)]
struct JsonFailure {
    kind: &'static str,
    reason: String,
}

#[derive(Debug, Serialize)]
struct CallReport {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    actions: Option<Vec<JsonAction>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<JsonFailure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    name: Option<String>,
    message: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    expect: Option<Vec<JsonAction>>,
    #[serde(default)]
    expect_failure: Option<String>,
    // What a recording's lines add (see `record::format`): a recording is a
    // cases file.
    #[serde(default)]
    unix_ms: Option<u64>,
    #[allow(dead_code, reason = "read so that a recording's line parses as a case")]
    #[serde(default)]
    time: Option<String>,
    #[allow(dead_code, reason = "read so that a recording's line parses as a case")]
    #[serde(default)]
    guest: Option<String>,
    #[allow(dead_code, reason = "read so that a recording's line parses as a case")]
    #[serde(default)]
    module_sha256: Option<String>,
    #[allow(dead_code, reason = "read so that a recording's line parses as a case")]
    #[serde(default)]
    redacted: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CaseResult {
    name: String,
    passed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    differences: Vec<String>,
    result: CallReport,
}

#[derive(Debug, Serialize)]
struct CasesReport {
    ok: bool,
    cases: usize,
    passed: usize,
    results: Vec<CaseResult>,
}

fn report(outcome: &Result<Vec<spop::Action>, GuestFailure>) -> CallReport {
    match outcome {
        Ok(actions) => CallReport {
            ok: true,
            actions: Some(actions.iter().map(action_to_json).collect()),
            failure: None,
        },
        Err(failure) => CallReport {
            ok: false,
            actions: None,
            failure: Some(JsonFailure {
                kind: crate::exec::failure_kind(failure).name(),
                reason: failure.to_string(),
            }),
        },
    }
}

/// Whether `got` matches `expected`; a value without `value` matches any
/// value of its type.
fn matches(expected: &JsonAction, got: &JsonAction) -> bool {
    let value_matches = match (&expected.value, &got.value) {
        (None, None) => true,
        (Some(want), Some(have)) => {
            want.kind == have.kind && (want.value.is_none() || want.value == have.value)
        }
        _ => false,
    };
    expected.action == got.action
        && expected.scope == got.scope
        && expected.name == got.name
        && value_matches
}

fn differences(case: &Case, outcome: &Result<Vec<spop::Action>, GuestFailure>) -> Vec<String> {
    let mut found = Vec::new();
    match (outcome, &case.expect_failure) {
        (Err(failure), Some(kind)) if crate::exec::failure_kind(failure).name() == kind => {}
        (Err(failure), Some(kind)) => {
            found.push(format!(
                "expected failure `{kind}`, got `{}`: {failure}",
                crate::exec::failure_kind(failure).name()
            ));
        }
        (Ok(_), Some(kind)) => found.push(format!("expected failure `{kind}`, got actions")),
        (Err(failure), None) => found.push(format!("expected actions, got failure: {failure}")),
        (Ok(actions), None) => {
            let got: Vec<JsonAction> = actions.iter().map(action_to_json).collect();
            let expected = case.expect.as_deref().unwrap_or_default();
            if got.len() != expected.len() {
                found.push(format!(
                    "expected {} actions, got {}",
                    expected.len(),
                    got.len()
                ));
            }
            for (index, (want, have)) in expected.iter().zip(&got).enumerate() {
                if !matches(want, have) {
                    found.push(format!(
                        "action {index}: expected {}, got {}",
                        serde_json::to_string(want).unwrap_or_default(),
                        serde_json::to_string(have).unwrap_or_default()
                    ));
                }
            }
        }
    }
    found
}

fn message(name: &str, args: Vec<spop::Arg>) -> spop::Message {
    spop::Message {
        name: bytes::Bytes::copy_from_slice(name.as_bytes()),
        args,
    }
}

/// A sandbox for one process outside `serve` (`call`, the benchmarks): the
/// store and IP tables of the flags, no configuration file.
pub fn standalone_sandbox(
    kv: &crate::settings::cli::KvArgs,
    sandbox: &crate::settings::cli::SandboxArgs,
    deterministic: Option<u64>,
) -> anyhow::Result<Sandbox> {
    let kv_spec = kv
        .settings()
        .spec(&Default::default())
        .map_err(anyhow::Error::msg)?;
    let store = crate::kv::KvStore::open(&kv_spec).map_err(anyhow::Error::msg)?;
    let config = crate::sandbox::SandboxConfig {
        deterministic,
        ..sandbox.to_config()
    };
    Ok(Sandbox::new(config, store)?
        .with_ip_tables(crate::tables::IpTables::new(kv_spec.redis_url())))
}

/// Runs `spoa-host call`; returns whether everything succeeded (or every
/// case passed).
pub fn run(args: &CallArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sandbox = standalone_sandbox(&args.kv, &args.sandbox, args.deterministic)?;
        let module = crate::guests::module_reload::load(
            &sandbox,
            None,
            &args.module,
            &args.sandbox.grants(),
        )
        .await
        .map_err(|err| crate::cmd::rejected(&args.module, err))?
        .module;
        match &args.cases {
            Some(path) => run_cases(&module, path).await,
            None => {
                let name = args.message.as_deref().unwrap_or_default();
                let message = message(name, args.args.clone());
                let outcome = module.call_at(&message, None).await;
                println!("{}", serde_json::to_string(&report(&outcome))?);
                Ok(outcome.is_ok())
            }
        }
    })
}

/// A JSON array of cases, or JSON lines of them (a recording).
fn parse_cases(text: &str) -> anyhow::Result<Vec<Case>> {
    if text.trim_start().starts_with('[') {
        return Ok(serde_json::from_str(text)?);
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|err| anyhow::anyhow!("line {}: {err}", index + 1))
        })
        .collect()
}

async fn run_cases(module: &LoadedModule, path: &Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cases = parse_cases(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut results = Vec::with_capacity(cases.len());
    for (index, case) in cases.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| format!("case {index}"));
        let args = case
            .args
            .iter()
            .map(|arg| parse_typed_arg(arg))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
        let message = message(&case.message, args);
        let outcome = module.call_at(&message, case.unix_ms).await;
        let differences = differences(case, &outcome);
        results.push(CaseResult {
            name,
            passed: differences.is_empty(),
            differences,
            result: report(&outcome),
        });
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let summary = CasesReport {
        ok: passed == results.len(),
        cases: results.len(),
        passed,
        results,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(summary.ok)
}
