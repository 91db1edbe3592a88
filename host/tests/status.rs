//! `GET /status` and `spoa-host status` on a running agent: each guest's
//! module and hash, its state through a probation, a rollback, a refused
//! reload and a quarantine, and its calls and faults.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::agent::{IPREP_TABLE, quarantine_table, run_host, start_config};
use support::spop_client::{SpopClient, check_client_ip, message, notify_frame, score_of};
use support::{eventually, free_port, hostile_guest};

fn status(metrics: SocketAddr) -> Value {
    let response = support::http::get(metrics, "/status").expect("GET /status");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.header("Content-Type"),
        Some("application/json"),
        "{:?}",
        response.headers
    );
    serde_json::from_str(&response.body).expect("/status is JSON")
}

fn guest<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["guests"]
        .as_array()
        .expect("guests is a list")
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no guest {name} in {report:#}"))
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("module")))
}

fn install(dir: &Path, source: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    support::install(source, &target);
    target
}

/// [`IPREP_TABLE`] and a second guest.
fn two_guests() -> String {
    format!(
        r#"{IPREP_TABLE}
[[guest]]
name = "counter"
module = "counter.wasm"
messages = ["count"]
smoke-message = "which"
"#
    )
}

#[test]
fn status_follows_a_guest_through_probation_rollback_and_a_refused_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let iprep = install(dir.path(), &hostile_guest('A'), "iprep.wasm");
    let counter = install(dir.path(), &hostile_guest('A'), "counter.wasm");
    let version_a = sha256_of(&iprep);
    let (agent, metrics) = start_config(dir.path(), &two_guests(), &[]);

    let report = status(metrics);
    assert_eq!(
        report["guests"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    assert!(report["agent"]["version"].is_string(), "{report:#}");
    assert!(
        report["agent"]["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    for (name, path) in [("iprep", &iprep), ("counter", &counter)] {
        let guest = guest(&report, name);
        assert_eq!(guest["state"], "serving", "{guest:#}");
        assert_eq!(
            guest["module"]["path"],
            path.display().to_string(),
            "{guest:#}"
        );
        assert_eq!(guest["module"]["sha256"], version_a, "{guest:#}");
        assert!(guest["last_reload"].is_null(), "{guest:#}");
        assert!(guest["probation"].is_null(), "{guest:#}");
    }

    let mut client = SpopClient::pipelined(agent.addr());
    let mut frame_id = 0;
    let mut ask = |client: &mut SpopClient, ip| {
        frame_id += 1;
        client.send(&notify_frame(1, frame_id, vec![check_client_ip(ip)]));
        client.recv_ack()
    };
    for _ in 0..3 {
        assert_eq!(score_of(&ask(&mut client, Ipv4Addr::LOCALHOST)), Some(42));
    }
    // Version C passes its smoke call and traps on every other address.
    install(dir.path(), &hostile_guest('C'), "iprep.wasm");
    let version_c = sha256_of(&iprep);
    assert!(
        eventually(Duration::from_secs(10), || guest(&status(metrics), "iprep")
            ["state"]
            == "probation"),
        "{:#}\n{}",
        status(metrics),
        agent.log_text()
    );
    let report = status(metrics);
    let on_probation = guest(&report, "iprep");
    assert_eq!(
        on_probation["module"]["sha256"], version_c,
        "{on_probation:#}"
    );
    assert_eq!(
        on_probation["last_reload"]["result"], "ok",
        "{on_probation:#}"
    );
    assert_eq!(on_probation["last_reload"]["trigger"], "module changed");
    assert_eq!(on_probation["probation"]["calls"], 0, "{on_probation:#}");
    assert_eq!(on_probation["probation"]["calls_to_pass"], 100);
    assert_eq!(on_probation["probation"]["fault_limit"], 20);
    assert_eq!(guest(&report, "counter")["state"], "serving");

    let mut failed = 0;
    while score_of(&ask(&mut client, Ipv4Addr::new(198, 51, 100, 7))) != Some(42) {
        failed += 1;
        assert!(failed <= 100, "never rolled back");
    }
    let report = status(metrics);
    let rolled_back = guest(&report, "iprep");
    assert_eq!(rolled_back["state"], "rolled_back", "{rolled_back:#}");
    assert_eq!(
        rolled_back["module"]["sha256"], version_a,
        "{rolled_back:#}"
    );
    assert_eq!(rolled_back["rolled_back"]["from"]["sha256"], version_c);
    assert_eq!(rolled_back["rolled_back"]["to"]["sha256"], version_a);
    let calls = rolled_back["calls"].as_u64().expect("calls");
    assert!(calls > 3 + failed, "{rolled_back:#}");
    assert_eq!(rolled_back["faults"], failed, "{rolled_back:#}");
    assert_eq!(rolled_back["failures"]["trap"], failed, "{rolled_back:#}");

    // A file that is not a component: refused at its first step, and the
    // restored version keeps serving.
    std::fs::write(dir.path().join("broken.wasm"), b"not a component").expect("write");
    install(dir.path(), &dir.path().join("broken.wasm"), "iprep.wasm");
    assert!(
        eventually(Duration::from_secs(10), || guest(&status(metrics), "iprep")
            ["last_reload"]["result"]
            == "failed"),
        "{:#}\n{}",
        status(metrics),
        agent.log_text()
    );
    let report = status(metrics);
    let refused = guest(&report, "iprep");
    assert_eq!(refused["state"], "rolled_back", "{refused:#}");
    assert_eq!(refused["module"]["sha256"], version_a, "{refused:#}");
    assert!(refused["last_reload"]["cause"].is_string(), "{refused:#}");
    let cause = refused["last_reload"]["cause"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The command prints the same, as a table.
    let output = run_host(&["status", "--metrics-address", &metrics.to_string()]);
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    eprintln!("{table}");
    assert!(
        table.lines().any(|line| line.starts_with("iprep ")
            && line.contains("rolled_back")
            && line.contains(&version_a[..12])
            && line.ends_with(&iprep.display().to_string())),
        "{table}"
    );
    assert!(
        table.contains(&format!(": failed ({cause}), on module changed")),
        "{table}"
    );
    assert!(
        table.contains(&format!("from {} ({})", iprep.display(), &version_c[..12])),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("counter ") && line.contains("serving")),
        "{table}"
    );
    let json = run_host(&[
        "status",
        "--metrics-address",
        &metrics.to_string(),
        "--json",
    ]);
    let printed: Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(
        guest(&printed, "iprep")["rolled_back"],
        refused["rolled_back"]
    );

    // A configuration reload that changes the guest's table restarts it on
    // another module: a reload that succeeded, and no rollback stands.
    let version_b = sha256_of(&install(dir.path(), &hostile_guest('B'), "iprep-b.wasm"));
    support::write_atomically(
        &dir.path().join("agent.toml"),
        &two_guests().replace("module = \"iprep.wasm\"", "module = \"iprep-b.wasm\""),
    );
    assert!(
        eventually(Duration::from_secs(10), || guest(&status(metrics), "iprep")
            ["module"]["sha256"]
            == version_b),
        "{:#}\n{}",
        status(metrics),
        agent.log_text()
    );
    let report = status(metrics);
    let restarted = guest(&report, "iprep");
    assert!(restarted["rolled_back"].is_null(), "{restarted:#}");
    assert_ne!(restarted["state"], "rolled_back", "{restarted:#}");
    assert_eq!(restarted["last_reload"]["result"], "ok", "{restarted:#}");
    assert_eq!(
        restarted["last_reload"]["trigger"], "configuration file changed",
        "{restarted:#}"
    );
}

#[test]
fn status_says_until_when_a_guest_is_quarantined() {
    let dir = tempfile::tempdir().expect("temp dir");
    install(dir.path(), &hostile_guest('A'), "hostile.wasm");
    let (agent, metrics) = start_config(dir.path(), &quarantine_table("30s"), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    for frame_id in 1..=5 {
        client.send(&notify_frame(1, frame_id, vec![message("trap", vec![])]));
        client.recv_ack();
    }
    let asked_at = SystemTime::now();
    let report = status(metrics);
    let flaky = guest(&report, "flaky");
    assert_eq!(flaky["state"], "quarantined", "{flaky:#}");
    assert_eq!(flaky["faults"], 5, "{flaky:#}");
    let until = flaky["quarantined_until"]
        .as_str()
        .expect("an end")
        .to_owned();
    // RFC 3339 compares in time order within one format: about 30 s ahead.
    let in_25_s = spoa_host::metrics::status::rfc3339(asked_at + Duration::from_secs(25));
    let in_35_s = spoa_host::metrics::status::rfc3339(asked_at + Duration::from_secs(35));
    assert!(
        in_25_s <= until && until <= in_35_s,
        "{until} not about 30 s after now"
    );

    let output = run_host(&["status", "--metrics-address", &metrics.to_string()]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains(&format!("quarantined until {until}")),
        "{table}"
    );
    assert!(table.contains("unanswered: trap 5"), "{table}");
}

#[test]
fn status_without_an_agent_says_where_it_looked() {
    let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let output = run_host(&["status", "--metrics-address", &address.to_string()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("http://{address}/status")),
        "{stderr}"
    );
}
