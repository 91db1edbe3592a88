//! Recording live messages (`--record`), replaying them on another version
//! (`spoa-host replay`), recordings as `call --cases` files, and
//! deterministic runs (`--deterministic`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use spoa_host::spop::TypedData;
use support::agent::{Agent, run_host};
use support::http::{metric_value, scrape_metrics};
use support::spop_client::{Session, check_client_ip, message};
use support::{artifact, eventually, free_port, hostile_guest};

/// Every line of every recording file in `dir`, parsed.
fn records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("recording dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(file)
                .expect("recording file")
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn recording_agent(module: &Path, dir: &Path, extra: &[&str]) -> (Agent, SocketAddr) {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (dir, metrics_arg) = (dir.display().to_string(), metrics.to_string());
    let mut args = vec!["--record", &dir, "--metrics-address", &metrics_arg];
    args.extend_from_slice(extra);
    (Agent::start(module, &args), metrics)
}

fn wait_written(metrics: SocketAddr, count: f64) -> f64 {
    let written = || metric_value(&scrape_metrics(metrics), "spoa_records_written_total");
    eventually(Duration::from_secs(10), || written() >= count);
    written()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("module")))
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc000_0200 + i) // 192.0.2.x and on
}

/// Records `count` messages of hostile guest A (`ip_score` 42) into `dir`.
fn record_version_a(dir: &Path, count: u32) {
    let (_agent, metrics) = {
        let (agent, metrics) = recording_agent(&hostile_guest('A'), dir, &["--record-share", "1"]);
        let mut session = Session::connect(agent.addr());
        for i in 0..count {
            session.notify(vec![check_client_ip(ip(i))]);
        }
        (agent, metrics)
    };
    assert_eq!(wait_written(metrics, f64::from(count)), f64::from(count));
}

#[test]
fn every_answer_is_recorded_with_its_guest_module_time_and_redacted_arguments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = hostile_guest('A');
    let (agent, metrics) = recording_agent(
        &module,
        dir.path(),
        &[
            "--record-share",
            "1",
            "--record-redact",
            "cookie=hash",
            "--record-redact",
            "auth=drop",
        ],
    );
    let mut session = Session::connect(agent.addr());
    for i in 0..20 {
        session.notify(vec![message(
            "check-client-ip",
            vec![
                ("ip", TypedData::Ipv4(ip(i))),
                ("cookie", TypedData::String("session=secret".into())),
                ("auth", TypedData::String("Bearer xyz".into())),
            ],
        )]);
    }
    assert_eq!(wait_written(metrics, 20.0), 20.0);
    let records = records(dir.path());
    assert_eq!(records.len(), 20);
    let sha = sha256_hex(&module);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["guest"], "default", "{record}");
        assert_eq!(record["module_sha256"], sha.as_str());
        assert_eq!(record["message"], "check-client-ip");
        let args = record["args"].as_array().expect("args");
        assert_eq!(args[0], format!("ip=ipv4:{}", ip(i as u32)).as_str());
        assert!(
            args[1]
                .as_str()
                .is_some_and(|a| a.starts_with("cookie=str:sha256:")),
            "{record}"
        );
        assert_eq!(args.len(), 2, "auth is dropped: {record}");
        assert!(!record.to_string().contains("secret") && !record.to_string().contains("xyz"));
        assert_eq!(record["redacted"], serde_json::json!(["cookie", "auth"]));
        assert_eq!(
            record["expect"],
            serde_json::json!([{"action":"set-var","scope":"sess","name":"ip_score",
                                "value":{"type":"int32","value":42}}])
        );
        assert!(record["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(
            record["unix_ms"]
                .as_u64()
                .is_some_and(|ms| ms > 1_700_000_000_000)
        );
    }
    assert_eq!(
        metric_value(&scrape_metrics(metrics), "spoa_records_dropped_total"),
        0.0
    );
}

#[test]
fn a_share_of_the_messages_is_recorded_and_the_files_stay_within_their_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent, metrics) = recording_agent(
        &hostile_guest('A'),
        dir.path(),
        &["--record-share", "0.25", "--record-max-bytes", "64KiB"],
    );
    let mut session = Session::connect(agent.addr());
    let sent = 4000;
    for chunk in 0..sent / 100 {
        session.notify(
            (0..100)
                .map(|i| check_client_ip(ip(chunk * 100 + i)))
                .collect(),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let written = wait_written(metrics, 1.0);
    // 1000 expected; a binomial's spread is about 27.
    assert!((800.0..1200.0).contains(&written), "{written} of {sent}");
    let files: Vec<u64> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").metadata().expect("meta").len())
        .collect();
    let total: u64 = files.iter().sum();
    assert!(files.len() > 1, "rotated: {files:?}");
    assert!(total <= 64 * 1024, "{total} bytes in {files:?}");
}

#[test]
fn a_recording_is_a_cases_file_for_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    record_version_a(dir.path(), 5);
    let file = std::fs::read_dir(dir.path())
        .expect("dir")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    let cases = file.display().to_string();
    let same = run_host(&[
        "call",
        &hostile_guest('A').display().to_string(),
        "--cases",
        &cases,
    ]);
    assert!(same.status.success(), "{same:?}");
    let report: Value = serde_json::from_slice(&same.stdout).expect("json");
    assert_eq!(
        (report["cases"].as_u64(), report["passed"].as_u64()),
        (Some(5), Some(5))
    );
    let other = run_host(&[
        "call",
        &hostile_guest('B').display().to_string(),
        "--cases",
        &cases,
    ]);
    assert_eq!(other.status.code(), Some(1), "{other:?}");
}

#[test]
fn replay_reports_what_another_version_answers_differently() {
    let dir = tempfile::tempdir().expect("temp dir");
    record_version_a(dir.path(), 30);
    let recording = dir.path().display().to_string();
    let replay = |module: &Path, extra: &[&str]| {
        let module = module.display().to_string();
        let mut args = vec!["replay", &recording, "--module", &module];
        args.extend_from_slice(extra);
        run_host(&args)
    };

    let same = replay(&hostile_guest('A'), &[]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(
        text.contains("check-client-ip: 30 messages: 30 same, 0 different, 0 failed"),
        "{text}"
    );

    let changed = replay(&hostile_guest('B'), &["--json"]);
    assert_eq!(changed.status.code(), Some(1), "{changed:?}");
    let report: Value = serde_json::from_slice(&changed.stdout).expect("json");
    let message = &report["by_message"]["check-client-ip"];
    assert_eq!(message["different"], 30, "{report}");
    let score = &message["variables"]["sess.ip_score"];
    assert_eq!(score["changed"], 30);
    assert_eq!(score["changes"]["int32:42 → int32:58"], 30, "{report}");
    assert_eq!(score["examples"].as_array().map(Vec::len), Some(3));

    let tolerated = replay(&hostile_guest('B'), &["--max-diff", "30"]);
    assert_eq!(tolerated.status.code(), Some(0), "{tolerated:?}");
    let text = String::from_utf8_lossy(&tolerated.stdout);
    assert!(
        text.contains("sess.ip_score changed in 30 messages"),
        "{text}"
    );
    assert!(text.contains("int32:42 → int32:58: 30"), "{text}");

    // Against a baseline: B compared with B is the same everywhere.
    let baseline = hostile_guest('B').display().to_string();
    let against = replay(&hostile_guest('B'), &["--baseline", &baseline]);
    assert_eq!(against.status.code(), Some(0), "{against:?}");
}

/// `call --deterministic` for the example guests: the same seed and
/// message give the same output byte for byte; the score depends on both.
#[test]
fn deterministic_calls_give_identical_output() {
    for lang in ["rust", "js"] {
        let module = artifact(&format!("examples/iprep_{lang}.wasm"))
            .display()
            .to_string();
        let call = |seed: &str, ip: Ipv4Addr| {
            let arg = format!("ip=ipv4:{ip}");
            let output = run_host(&[
                "call",
                &module,
                "--message",
                "check-client-ip",
                "--arg",
                &arg,
                "--deterministic",
                seed,
            ]);
            assert!(output.status.success(), "{lang}: {output:?}");
            output.stdout
        };
        let first: Vec<Vec<u8>> = (0..8).map(|i| call("7", ip(i))).collect();
        let again: Vec<Vec<u8>> = (0..8).map(|i| call("7", ip(i))).collect();
        assert_eq!(first, again, "{lang}: the same seed and messages");
        let distinct: BTreeSet<&Vec<u8>> = first.iter().collect();
        assert!(
            distinct.len() > 1,
            "{lang}: the score depends on the message"
        );
        let other_seed: Vec<Vec<u8>> = (0..8).map(|i| call("8", ip(i))).collect();
        assert_ne!(first, other_seed, "{lang}: the score depends on the seed");
    }
}

/// Real traffic through HAProxy recorded, the guest's threshold raised, and
/// a deterministic replay against the old configuration: the report names
/// exactly the messages whose `ip_blocked` flipped.
#[test]
fn a_threshold_change_replayed_shows_exactly_the_flipped_messages() {
    let Some(binary) = support::haproxy::haproxy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let module = artifact("examples/iprep_rust.wasm");
    let (agent, metrics) = recording_agent(
        &module,
        dir.path(),
        &["--record-share", "1", "--guest-config", "threshold=20"],
    );
    let proxy = support::haproxy::start_with(
        &binary,
        &[agent.addr()],
        0,
        |c| c,
        |spoe| spoe.replace("args ip=src", "args ip=req.hdr_ip(x-forwarded-for)"),
    );
    let scored = |forwarded: &str| {
        support::http::get_with(proxy.http, "/", &[("X-Forwarded-For", forwarded)])
            .is_ok_and(|response| response.header("X-IP-Score").is_some())
    };
    assert!(
        eventually(Duration::from_secs(10), || scored("198.51.100.1")),
        "no score: {}",
        proxy.log_text()
    );
    let requests = 60;
    for i in 0..requests {
        let forwarded = ip(i).to_string();
        let response = support::http::get_with(proxy.http, "/", &[("X-Forwarded-For", &forwarded)])
            .expect("request");
        assert_eq!(response.status, 200);
    }
    // The first requests, before HAProxy's first connection, were recorded too.
    let total = wait_written(metrics, f64::from(requests));
    let recording = dir.path().display().to_string();
    let module_arg = module.display().to_string();

    // The old threshold's scores, deterministically: the expected flips.
    let cases = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect::<Vec<_>>();
    assert_eq!(cases.len(), 1, "one file at this size");
    let baseline = run_host(&[
        "call",
        &module_arg,
        "--cases",
        &cases[0],
        "--deterministic",
        "7",
        "--guest-config",
        "threshold=20",
    ]);
    let baseline: Value = serde_json::from_slice(&baseline.stdout).expect("json");
    let mut expected_flips = BTreeSet::new();
    let mut args_of = BTreeMap::new();
    for (record, result) in records(dir.path())
        .iter()
        .zip(baseline["results"].as_array().expect("results"))
    {
        let Some(score) = result["result"]["actions"]
            .as_array()
            .and_then(|actions| actions.iter().find(|a| a["name"] == "ip_score"))
            .and_then(|a| a["value"]["value"].as_i64())
        else {
            panic!("no score in {result}");
        };
        let args = record["args"].to_string();
        if (20..50).contains(&score) {
            expected_flips.insert(args.clone());
        }
        args_of.insert(args, score);
    }

    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            &recording,
            "--module",
            &module_arg,
            "--guest-config",
            "threshold=50",
            "--baseline",
            &module_arg,
            "--baseline-guest-config",
            "threshold=20",
            "--deterministic",
            "7",
        ];
        args.extend_from_slice(extra);
        run_host(&args)
    };
    let text = replay(&[]);
    assert_eq!(text.status.code(), Some(1), "{text:?}");
    eprintln!("{}", String::from_utf8_lossy(&text.stdout));
    let output = replay(&["--json", "--examples", "1000", "--max-diff", "1000"]);
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["messages"].as_f64(), Some(total), "{report}");
    let message = &report["by_message"]["check-client-ip"];
    let variables = message["variables"].as_object().expect("variables");
    assert_eq!(
        variables.keys().collect::<Vec<_>>(),
        ["txn.ip_blocked"],
        "only ip_blocked changes: {report}"
    );
    let blocked = &variables["txn.ip_blocked"];
    assert_eq!(
        blocked["changes"]
            .as_object()
            .map(|c| c.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["bool:false → bool:true".to_string()])
    );
    let reported: BTreeSet<String> = blocked["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|example| example["args"].to_string())
        .collect();
    assert_eq!(reported, expected_flips, "scores: {args_of:?}");
    assert!(
        !expected_flips.is_empty(),
        "some scores fall in 20..50: {args_of:?}"
    );
    assert_eq!(
        message["different"].as_u64(),
        Some(expected_flips.len() as u64)
    );
}
