//! `spoa-host call`: one guest call or a file of cases, with the serving
//! sandbox, no network; JSON on stdout; exit 0 on success, 1 on failure.
//! Also the load check's smoke message and the compiled-module cache.

mod support;

use support::agent::run_host;
use support::{hostile_guest, iprep_guest};

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `spoa-host call MODULE ARGS…`, which must exit 0; its JSON report.
fn call_ok(module: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["call", module.to_str().expect("utf-8")];
    full.extend_from_slice(args);
    let output = run_host(&full);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    json(&output)
}

#[test]
fn the_readme_example_prints_an_ip_score() {
    let report = call_ok(
        &iprep_guest(),
        &["--message", "check-client-ip", "--arg", "ip=ipv4:192.0.2.1"],
    );
    assert_eq!(report["ok"], true);
    let action = &report["actions"][0];
    assert_eq!(action["action"], "set-var");
    assert_eq!(action["scope"], "sess");
    assert_eq!(action["name"], "ip_score");
    assert_eq!(action["value"]["type"], "int32");
    let score = action["value"]["value"].as_i64().expect("a number");
    assert!((0..=100).contains(&score), "{score}");
}

#[test]
fn every_type_round_trips_and_failures_say_their_kind() {
    let module = hostile_guest('A');
    let module = module.to_str().expect("utf-8");
    let output = run_host(&[
        "call",
        module,
        "--message",
        "echo",
        "--arg",
        "n=null:",
        "--arg",
        "b=bool:true",
        "--arg",
        "i=int32:-5",
        "--arg",
        "u=uint32:5",
        "--arg",
        "l=int64:-9000000000",
        "--arg",
        "q=uint64:18446744073709551615",
        "--arg",
        "v4=ipv4:192.0.2.1",
        "--arg",
        "v6=ipv6:2001:db8::1",
        "--arg",
        "s=str:héllo",
        "--arg",
        "x=bin:00ff10",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    let values: Vec<String> = report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| format!("{}={}", a["name"].as_str().unwrap_or(""), a["value"]))
        .collect();
    assert_eq!(
        values,
        [
            r#"n={"type":"null"}"#,
            r#"b={"type":"bool","value":true}"#,
            r#"i={"type":"int32","value":-5}"#,
            r#"u={"type":"uint32","value":5}"#,
            r#"l={"type":"int64","value":-9000000000}"#,
            r#"q={"type":"uint64","value":18446744073709551615}"#,
            r#"v4={"type":"ipv4","value":"192.0.2.1"}"#,
            r#"v6={"type":"ipv6","value":"2001:db8::1"}"#,
            r#"s={"type":"str","value":"héllo"}"#,
            r#"x={"type":"bin","value":"00ff10"}"#,
        ]
    );

    for (message, kind) in [
        ("trap", "trap"),
        ("error", "error"),
        ("bad-name", "invalid_output"),
    ] {
        let output = run_host(&["call", module, "--message", message]);
        assert_eq!(output.status.code(), Some(1), "{message}: {output:?}");
        let report = json(&output);
        assert_eq!(report["ok"], false, "{message}");
        assert_eq!(report["failure"]["kind"], kind, "{message}: {report}");
    }
    let output = run_host(&[
        "call",
        module,
        "--message",
        "loop",
        "--guest-timeout",
        "20ms",
    ]);
    assert_eq!(json(&output)["failure"]["kind"], "timeout");
}

#[test]
fn a_cases_file_reports_every_difference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = dir.path().join("cases.json");
    std::fs::write(
        &cases,
        r#"[
  {"name": "scored", "message": "check-client-ip", "args": ["ip=ipv4:192.0.2.1"],
   "expect": [{"action": "set-var", "scope": "sess", "name": "ip_score", "value": {"type": "int32", "value": 42}}]},
  {"name": "any score", "message": "check-client-ip",
   "expect": [{"action": "set-var", "scope": "sess", "name": "ip_score", "value": {"type": "int32"}}]},
  {"name": "refused", "message": "error", "expect_failure": "error"},
  {"name": "wrong value", "message": "check-client-ip",
   "expect": [{"action": "set-var", "scope": "sess", "name": "ip_score", "value": {"type": "int32", "value": 7}}]},
  {"name": "wrong kind", "message": "trap", "expect_failure": "timeout"}
]"#,
    )
    .expect("write cases");
    let module = hostile_guest('A');
    let output = run_host(&[
        "call",
        module.to_str().expect("utf-8"),
        "--cases",
        cases.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = json(&output);
    assert_eq!(report["cases"], 5);
    assert_eq!(report["passed"], 3, "{report:#}");
    let failed: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["passed"] == false)
        .map(|r| r["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(failed, ["wrong value", "wrong kind"]);
    let text = report.to_string();
    assert!(
        text.contains("expected failure `timeout`, got `trap`"),
        "{text}"
    );
}

#[test]
fn the_smoke_message_can_be_named_and_an_err_answer_is_accepted() {
    let module = hostile_guest('A');
    let module = module.to_str().expect("utf-8");
    // A guest that answers `err` to the smoke message is accepted.
    let output = run_host(&["check", module, "--smoke-message", "error"]);
    assert!(output.status.success(), "{output:?}");
    // One that loops on it is refused, naming the step.
    let output = run_host(&[
        "check",
        module,
        "--smoke-message",
        "loop",
        "--guest-timeout",
        "20ms",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cause: smoke") && stderr.contains("`loop`"),
        "{stderr}"
    );
}

#[test]
fn a_second_load_takes_the_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let module = iprep_guest();
    let args = [
        "check",
        module.to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ];
    let first = run_host(&args);
    assert!(first.status.success(), "{first:?}");
    assert!(!String::from_utf8_lossy(&first.stdout).contains("from the cache"));
    let second = run_host(&args);
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("compiled code from the cache"),
        "{second:?}"
    );
    // A planted file in its place is never loaded: the load compiles again.
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(&path, b"not code this host wrote").expect("plant");
        }
    }
    let third = run_host(&args);
    assert!(third.status.success(), "{third:?}");
    assert!(!String::from_utf8_lossy(&third.stdout).contains("from the cache"));
}

/// The WIT world only grows within 0.1.x: guests built against every
/// earlier world still load and answer. The committed fixtures were built
/// from those versions' trees: guest-iprep at 0.1.0 (0c7cb63), 0.1.1 (before
/// `wasi:keyvalue`), 0.1.2 (before `ip-table` and `init`) and 0.1.3 (16d1a0d,
/// before `batch`: it exports `init` and opens an IP table, but has no
/// `handle-messages`), 0.1.4 (47a4c30, before `metrics`: it exports
/// `handle-messages`), 0.1.5 (6880cc2, before `packed`: it exports
/// `handle-messages` but not `handle-packed-messages`), and the rate-limit
/// guest at 0.1.2 (it imports `wasi:keyvalue` and `expiry`).
#[test]
fn guests_built_against_older_0_1_worlds_still_load() {
    for (fixture, world) in [
        ("guest_iprep_0_1_0.wasm", "spoa:agent/random@0.1.0"),
        ("guest_iprep_0_1_1.wasm", "spoa:agent/random@0.1.1"),
        ("guest_iprep_0_1_2.wasm", "spoa:agent/random@0.1.2"),
        ("guest_iprep_0_1_3.wasm", "spoa:agent/ip-table@0.1.3"),
        ("guest_iprep_0_1_4.wasm", "spoa:agent/batch@0.1.4"),
        ("guest_iprep_0_1_5.wasm", "spoa:agent/batch@0.1.5"),
        ("guest_ratelimit_0_1_2.wasm", "spoa:agent/expiry@0.1.2"),
    ] {
        let module = support::source_fixture(&format!("prebuilt/{fixture}"));
        let bytes = std::fs::read(&module).expect("the prebuilt fixture");
        let imports_old_world = bytes.windows(world.len()).any(|w| w == world.as_bytes());
        assert!(imports_old_world, "{fixture} must import {world}");
        let report = call_ok(
            &module,
            &["--message", "check-client-ip", "--arg", "ip=ipv4:192.0.2.1"],
        );
        assert_eq!(
            report["actions"][0]["name"], "ip_score",
            "{fixture}: {report}"
        );
    }
}

/// A JavaScript guest (componentize-js, `tests/fixtures/guest-kv-js`) uses
/// the shared store through its generated bindings: a value with an expiry,
/// a counter within a window, and a bucket it was not granted.
#[test]
fn a_javascript_guest_uses_the_shared_store() {
    let report = call_ok(
        &support::artifact("fixtures/guest_kv_js.wasm"),
        &[
            "--message",
            "kv",
            "--guest-memory",
            "128MiB",
            "--guest-timeout",
            "200ms",
        ],
    );
    assert_eq!(
        report["actions"][0]["value"]["value"], "get=v n=1,3 ttl=true secret=access-denied",
        "{report}"
    );
}

/// The JavaScript SDK package (`spoa-guest`, sdk/javascript) inside the
/// host: its HostStore over the shared store and its counters, one name
/// allowed (`--guest-metric`) and one not.
#[test]
fn the_javascript_sdk_package_reaches_the_store_and_the_counters() {
    let report = call_ok(
        &support::artifact("fixtures/guest_kv_js.wasm"),
        &[
            "--message",
            "sdk",
            "--guest-metric",
            "rule_hits",
            "--guest-memory",
            "128MiB",
            "--guest-timeout",
            "200ms",
        ],
    );
    assert_eq!(
        report["actions"][0]["value"]["value"],
        "get=v n=2 ttl=true secret=StoreError: access denied (bucket not granted) counted=true refused=false",
        "{report}"
    );
}
