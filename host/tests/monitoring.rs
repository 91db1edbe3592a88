//! `examples/monitoring/`: the alerting rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), the dashboard's queries
//! parse as PromQL, and every metric either file names is exported by a
//! running agent under exactly that name.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::agent::{IPREP_TABLE, start_config};
use support::http::scrape_metrics;
use support::{hostile_guest, workspace_root};

fn monitoring(file: &str) -> PathBuf {
    workspace_root().join("examples/monitoring").join(file)
}

/// `promtool`, or a loud failure (Debian: the `prometheus` package).
fn promtool() -> PathBuf {
    let candidate = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let runs = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "promtool not found (tried `{candidate}`): install it (apt-get install -y prometheus) \
         or set PROMTOOL_BIN"
    );
    PathBuf::from(candidate)
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alerting_rules_are_valid_and_every_alert_passes_its_unit_tests() {
    let dir = workspace_root().join("examples/monitoring");
    let checked = run_promtool(&["check", "rules", "spoa-host-alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(&["test", "rules", "spoa-host-alerts.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a test case.
    let rules = std::fs::read_to_string(dir.join("spoa-host-alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("spoa-host-alerts.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test case in which {alert} fires"
        );
    }
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    queries
}

#[test]
fn the_dashboard_queries_parse_as_promql() {
    let text = std::fs::read_to_string(monitoring("spoa-host-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "spoa-host");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:?}");
    // As recording rules, with Grafana's variables filled in the way it
    // does, promtool parses each query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().enumerate() {
        let query = query
            .replace("$__rate_interval", "1m")
            .replace("$__range", "6h")
            .replace("$instance", ".*")
            .replace("$guest", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{index}\n        expr: {}\n",
            serde_json::to_string(&query).expect("a JSON string is a YAML string")
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dashboard-rules.yml"), rules).expect("write");
    let checked = run_promtool(&["check", "rules", "dashboard-rules.yml"], dir.path());
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// The metric names `text` mentions (`spoa_...`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("spoa_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported_under_that_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    support::install(&hostile_guest('A'), &dir.path().join("iprep.wasm"));
    let (_agent, metrics) = start_config(dir.path(), IPREP_TABLE, &[]);
    let scraped = scrape_metrics(metrics);
    let exported: BTreeSet<String> = scraped
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    let mut used = BTreeSet::new();
    for file in ["spoa-host-dashboard.json", "spoa-host-alerts.yml"] {
        let text = std::fs::read_to_string(monitoring(file)).expect("monitoring file");
        let names = metric_names(&text);
        assert!(names.len() >= 8, "{file}: {names:?}");
        used.extend(names);
    }
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
    for family in [
        "spoa_guest_calls_total",
        "spoa_guest_call_seconds_bucket",
        "spoa_guest_failures_total",
        "spoa_guest_quarantined",
        "spoa_guest_rollbacks_total",
        "spoa_module_reloads_total",
        "spoa_kv_up",
        "spoa_connections_current",
        "spoa_connections_refused_total",
    ] {
        assert!(
            used.contains(family),
            "the monitoring files never use {family}"
        );
    }
}
