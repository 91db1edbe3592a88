//! `spoa-host replay RECORDING --module NEW`: every recorded message run on
//! NEW (with the sandbox flags the agent takes), its answer compared with
//! the recorded one, or with a `--baseline` version's, and a report per
//! message name: how many answers are the same, differ or fail, and for
//! those that differ, which variables changed, how, and on which messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::record::files::recording_files;
use crate::record::format::{JsonAction, JsonValue, Record, action_to_json};
use crate::sandbox::LoadedModule;
use crate::settings::cli::ReplayArgs;
use crate::spop::{self, notation};

/// What a message was answered with.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Actions(Vec<JsonAction>),
    /// The failure kind.
    Failed(String),
}

#[derive(Debug, Default, Serialize)]
struct Report {
    ok: bool,
    /// `recording` or the baseline module's path.
    compared_with: String,
    messages: u64,
    same: u64,
    different: u64,
    failed: u64,
    max_diff: u64,
    by_message: BTreeMap<String, MessageReport>,
}

#[derive(Debug, Default, Serialize)]
struct MessageReport {
    messages: u64,
    same: u64,
    different: u64,
    failed: u64,
    /// NEW's failures by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    failures: BTreeMap<String, u64>,
    /// `scope.name` of each variable that changed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    variables: BTreeMap<String, VariableReport>,
}

#[derive(Debug, Default, Serialize)]
struct VariableReport {
    /// Messages where it changed.
    changed: u64,
    /// `FROM → TO` and how many messages changed so.
    changes: BTreeMap<String, u64>,
    examples: Vec<Example>,
}

#[derive(Debug, Serialize)]
struct Example {
    args: Vec<String>,
    from: String,
    to: String,
}

/// Runs `spoa-host replay`; returns whether at most `--max-diff` messages
/// differ or fail.
pub fn run(args: &ReplayArgs) -> Result<bool> {
    let records = read_recording(&args.recording)?;
    let records: Vec<Record> = records
        .into_iter()
        .filter(|record| {
            args.guest
                .as_ref()
                .is_none_or(|guest| &record.guest == guest)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let new = load(args, &args.module, &args.sandbox).await?;
        let baseline = match &args.baseline {
            Some(path) => Some(load(args, path, &args.baseline_sandbox()).await?),
            None => None,
        };
        replay(args, &records, &new, baseline.as_deref()).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text_report(args, &report));
    }
    Ok(report.ok)
}

async fn load(
    args: &ReplayArgs,
    path: &Path,
    sandbox_args: &crate::settings::cli::SandboxArgs,
) -> Result<std::sync::Arc<LoadedModule>> {
    let sandbox = super::call::standalone_sandbox(&args.kv, sandbox_args, args.deterministic)?;
    let loaded = crate::guests::module_reload::load(&sandbox, None, path, &sandbox_args.grants())
        .await
        .map_err(|err| super::rejected(path, err))?;
    Ok(loaded.module)
}

/// A file's records, or those of every recording file in a directory,
/// oldest first.
fn read_recording(path: &Path) -> Result<Vec<Record>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        recording_files(path)
            .with_context(|| format!("listing {}", path.display()))?
            .into_iter()
            .map(|(file, _)| file)
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut records = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // The last line of a file being written may be cut short.
            match serde_json::from_str::<Record>(line) {
                Ok(record) => records.push(record),
                Err(_) if index + 1 == text.lines().count() && !text.ends_with('\n') => {}
                Err(err) => anyhow::bail!("{} line {}: {err}", file.display(), index + 1),
            }
        }
    }
    Ok(records)
}

async fn answer(module: &LoadedModule, message: &spop::Message, unix_ms: u64) -> Answer {
    match module.call_at(message, Some(unix_ms)).await {
        Ok(actions) => Answer::Actions(actions.iter().map(action_to_json).collect()),
        Err(failure) => Answer::Failed(crate::exec::failure_kind(&failure).name().to_owned()),
    }
}

fn recorded(record: &Record) -> Answer {
    match (&record.expect, &record.expect_failure) {
        (_, Some(kind)) => Answer::Failed(kind.clone()),
        (Some(actions), None) => Answer::Actions(actions.clone()),
        (None, None) => Answer::Actions(Vec::new()),
    }
}

async fn replay(
    args: &ReplayArgs,
    records: &[Record],
    new: &LoadedModule,
    baseline: Option<&LoadedModule>,
) -> Result<Report> {
    let mut report = Report {
        compared_with: args
            .baseline
            .as_ref()
            .map_or("recording".to_owned(), |path| path.display().to_string()),
        max_diff: args.max_diff,
        ..Report::default()
    };
    for (index, record) in records.iter().enumerate() {
        let message = spop::Message {
            name: bytes::Bytes::copy_from_slice(record.message.as_bytes()),
            args: record
                .args
                .iter()
                .map(|arg| notation::parse_typed_arg(arg))
                .collect::<Result<_, _>>()
                .map_err(|err| anyhow::anyhow!("record {}: {err}", index + 1))?,
        };
        let expected = match baseline {
            Some(module) => answer(module, &message, record.unix_ms).await,
            None => recorded(record),
        };
        let got = answer(new, &message, record.unix_ms).await;
        let entry = report.by_message.entry(record.message.clone()).or_default();
        entry.messages += 1;
        report.messages += 1;
        if got == expected {
            entry.same += 1;
            report.same += 1;
            continue;
        }
        if let Answer::Failed(kind) = &got {
            entry.failed += 1;
            report.failed += 1;
            *entry.failures.entry(kind.clone()).or_default() += 1;
        } else {
            entry.different += 1;
            report.different += 1;
        }
        for (variable, from, to) in changed_variables(&expected, &got) {
            let variable = entry.variables.entry(variable).or_default();
            variable.changed += 1;
            *variable
                .changes
                .entry(format!("{from} → {to}"))
                .or_default() += 1;
            if variable.examples.len() < args.examples {
                variable.examples.push(Example {
                    args: record.args.clone(),
                    from,
                    to,
                });
            }
        }
    }
    report.ok = report.different + report.failed <= args.max_diff;
    Ok(report)
}

/// The variables each answer sets (`scope.name` → value text, `unset` for
/// an unset-var), or `(answer)` → the failure.
fn variables(answer: &Answer) -> BTreeMap<String, String> {
    match answer {
        Answer::Failed(kind) => {
            BTreeMap::from([("(answer)".to_owned(), format!("failed: {kind}"))])
        }
        Answer::Actions(actions) => actions
            .iter()
            .map(|action| {
                let value = match &action.value {
                    Some(value) => value_text(value),
                    None => "unset".to_owned(),
                };
                (format!("{}.{}", action.scope, action.name), value)
            })
            .collect(),
    }
}

/// What changed from `expected` to `got`: (variable, from, to), `absent`
/// where one answer does not set it.
fn changed_variables(expected: &Answer, got: &Answer) -> Vec<(String, String, String)> {
    let (before, after) = (variables(expected), variables(got));
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let from = before.get(name).map_or("absent", String::as_str);
            let to = after.get(name).map_or("absent", String::as_str);
            (from != to).then(|| (name.clone(), from.to_owned(), to.to_owned()))
        })
        .collect()
}

/// `TYPE:VALUE`, as `call --arg` writes values.
fn value_text(value: &JsonValue) -> String {
    match &value.value {
        Some(serde_json::Value::String(text)) => format!("{}:{text}", value.kind),
        Some(other) => format!("{}:{other}", value.kind),
        None => format!("{}:", value.kind),
    }
}

fn text_report(args: &ReplayArgs, report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replay: {} messages on {}, compared with {}",
        report.messages,
        args.module.display(),
        if args.baseline.is_some() {
            format!("the baseline {}", report.compared_with)
        } else {
            "the recorded answers".to_owned()
        }
    );
    for (name, message) in &report.by_message {
        let _ = writeln!(
            out,
            "{name}: {} messages: {} same, {} different, {} failed",
            message.messages, message.same, message.different, message.failed
        );
        for (kind, count) in &message.failures {
            let _ = writeln!(out, "  failed ({kind}): {count}");
        }
        for (variable, changes) in &message.variables {
            let _ = writeln!(out, "  {variable} changed in {} messages", changes.changed);
            for (change, count) in &changes.changes {
                let _ = writeln!(out, "    {change}: {count}");
            }
            for example in &changes.examples {
                let _ = writeln!(
                    out,
                    "    e.g. {}: {} → {}",
                    example.args.join(" "),
                    example.from,
                    example.to
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "{} of {} messages differ or fail (at most {} allowed): {}",
        report.different + report.failed,
        report.messages,
        report.max_diff,
        if report.ok { "ok" } else { "FAILED" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(scope: &str, name: &str, kind: &str, value: serde_json::Value) -> JsonAction {
        JsonAction {
            action: "set-var".into(),
            scope: scope.into(),
            name: name.into(),
            value: Some(JsonValue {
                kind: kind.into(),
                value: Some(value),
            }),
        }
    }

    #[test]
    fn a_change_names_the_variable_and_both_values() {
        let before = Answer::Actions(vec![
            set("sess", "ip_score", "int32", 30.into()),
            set("txn", "ip_blocked", "bool", false.into()),
        ]);
        let after = Answer::Actions(vec![
            set("sess", "ip_score", "int32", 30.into()),
            set("txn", "ip_blocked", "bool", true.into()),
            set("txn", "ip_country", "str", "FR".into()),
        ]);
        assert_eq!(
            changed_variables(&before, &after),
            vec![
                (
                    "txn.ip_blocked".into(),
                    "bool:false".into(),
                    "bool:true".into()
                ),
                ("txn.ip_country".into(), "absent".into(), "str:FR".into()),
            ]
        );
        let failed = Answer::Failed("timeout".into());
        assert_eq!(
            changed_variables(&before, &failed)[0],
            ("(answer)".into(), "absent".into(), "failed: timeout".into())
        );
    }
}
