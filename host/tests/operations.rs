//! What an operator relies on: the metrics endpoint, JSON logs, the example
//! files, and failover between two agents behind one HAProxy.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::haproxy::{self, haproxy_binary};
use support::spop_client::{SpopClient, check_client_ip, message, notify_frame};
use support::{eventually, free_port, hostile_guest, http, iprep_guest, workspace_root};

fn scrape(addr: SocketAddr) -> String {
    http::scrape_metrics(addr)
}

fn value(metrics: &str, series: &str) -> f64 {
    http::metric_value(metrics, series)
}

#[test]
fn metrics_endpoint_exposes_moving_series() {
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let agent = Agent::start(
        &hostile_guest('A'),
        &["--metrics-address", &metrics_addr.to_string()],
    );
    let before = scrape(metrics_addr);
    assert_eq!(value(&before, "spoa_messages_total"), 0.0);
    assert!(
        before.contains("spoa_module_info{guest=\"default\",path="),
        "{before}"
    );
    assert!(before.contains("guest_hostile_a.wasm"));

    let mut client = SpopClient::pipelined(agent.addr());
    for i in 0..40 {
        client.send(&notify_frame(
            1,
            i + 1,
            vec![check_client_ip(Ipv4Addr::LOCALHOST)],
        ));
        client.recv_ack();
    }
    client.send(&notify_frame(1, 100, vec![message("trap", vec![])]));
    client.recv_ack();
    // A stray HTTP request: DISCONNECT status 3.
    let mut stray = SpopClient::connect(agent.addr());
    stray.send_raw(b"GET / HTTP/1.1\r\n\r\n");
    let _ = stray.expect_disconnect();

    let after = scrape(metrics_addr);
    assert_eq!(value(&after, "spoa_messages_total"), 41.0);
    assert_eq!(
        value(&after, "spoa_guest_calls_total{guest=\"default\"}"),
        41.0
    );
    assert_eq!(value(&after, "spoa_actions_total"), 40.0);
    assert_eq!(
        value(&after, "spoa_frames_received_total{type=\"notify\"}"),
        41.0
    );
    assert_eq!(value(&after, "spoa_frames_sent_total{type=\"ack\"}"), 41.0);
    assert_eq!(
        value(
            &after,
            "spoa_guest_failures_total{guest=\"default\",kind=\"trap\"}"
        ),
        1.0
    );
    assert_eq!(value(&after, "spoa_disconnects_total{status=\"3\"}"), 1.0);
    assert!(value(&after, "spoa_connections_total") >= 2.0);
    assert!(value(&after, "spoa_connections_current") >= 1.0);
    assert!(value(&after, "spoa_guest_call_seconds_count{guest=\"default\"}") >= 1.0);
    assert!(after.lines().any(
        |l| l.starts_with("spoa_guest_call_seconds_bucket{") && l.contains("guest=\"default\"")
    ));
    assert_eq!(
        value(
            &after,
            "spoa_module_reloads_total{guest=\"default\",result=\"failed\"}"
        ),
        0.0
    );
    assert!(http::get(metrics_addr, "/other").expect("404").status == 404);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let agent = Agent::start(&iprep_guest(), &["--log-format", "json"]);
    let mut client = SpopClient::connect(agent.addr());
    client.send_raw(b"GET / HTTP/1.1\r\n\r\n");
    let _ = client.expect_disconnect();
    assert!(eventually(Duration::from_secs(2), || agent
        .log_text()
        .contains("frame is too big")));
    let log = agent.log_text();
    for line in log.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":"),
            "not a JSON log line: {line}"
        );
    }
    assert!(log.contains("\"status\":\"3 (frame is too big)\""), "{log}");
}

#[test]
fn example_files_are_valid_for_the_installed_haproxy() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let dir = haproxy::examples_dir(&binary);
    let output = std::process::Command::new(&binary)
        .args(["-c", "-f"])
        .arg(dir.join("haproxy.cfg"))
        .env("SPOE_CONF", dir.join("spoe-iprep.conf"))
        .output()
        .expect("haproxy -c");
    assert!(output.status.success(), "{output:?}");
    let unit =
        std::fs::read_to_string(workspace_root().join("examples/spoa-host.service")).expect("unit");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("--module /etc/spoa-host/handler.wasm"));
}

/// The lines of an HAProxy file that configure something (no comments, no
/// blank lines).
fn directives(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The end-to-end tests run the example files; those are exactly what
/// `spoa-host haproxy-config` generates from `examples/spoa-host.toml`, so
/// every HAProxy test runs the generated configuration (`mode spop` on 3.x).
#[test]
fn the_example_files_are_what_haproxy_config_generates() {
    let agent_config = workspace_root().join("examples/spoa-host.toml");
    for (version, dir) in [("2.6", "haproxy-2.6"), ("3", "haproxy-3.x")] {
        let generate = |section: &str| {
            haproxy::haproxy_config(
                &support::agent::host_binary(),
                &agent_config,
                version,
                section,
            )
        };
        let examples = workspace_root().join("examples").join(dir);
        let spoe = std::fs::read_to_string(examples.join("spoe-iprep.conf")).expect("spoe");
        assert_eq!(
            directives(&spoe),
            directives(&generate("spoe")),
            "{dir}/spoe-iprep.conf differs from `haproxy-config --haproxy {version}`"
        );
        let cfg = std::fs::read_to_string(examples.join("haproxy.cfg")).expect("haproxy.cfg");
        let backend = directives(&generate("backend"));
        let start = cfg
            .find(&format!("\n{}\n", backend[0]))
            .unwrap_or_else(|| panic!("{dir}/haproxy.cfg has no `{}`", backend[0]));
        assert_eq!(
            directives(&cfg[start..]),
            backend,
            "{dir}/haproxy.cfg's agents backend differs from `haproxy-config --haproxy {version} --section backend`"
        );
    }
}

/// Two agents behind one HAProxy; one is killed under load. Requests keep
/// getting scores from the other.
#[test]
fn failover_between_two_agents() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let (first, second, proxy) = two_agents_behind_haproxy(&binary);

    // Outcomes: "score", "error:<reason>" or "http:<failure>".
    let traffic = http::Traffic::start(proxy.http, |response| match response {
        Ok(r) if r.header("X-IP-Score").is_some() => "score".to_string(),
        Ok(r) => format!(
            "error:{} status {}",
            r.header("X-IP-Score-Error").unwrap_or("none"),
            r.status
        ),
        Err(e) => format!("http:{e}"),
    });
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    drop(first); // SIGKILL: an abrupt crash, no DISCONNECT.
    std::thread::sleep(Duration::from_secs(3));
    let outcomes = traffic.stop();
    let after_kill: Vec<_> = outcomes.iter().filter(|(at, _)| *at >= killed_at).collect();
    let failed: Vec<_> = after_kill.iter().filter(|(_, o)| o != "score").collect();
    let settled: Vec<_> = after_kill
        .iter()
        .filter(|(at, _)| *at >= killed_at + Duration::from_millis(1500))
        .collect();
    eprintln!(
        "failover: {} requests after the kill, {} without a score ({:?}), {} after the first 1.5 s",
        after_kill.len(),
        failed.len(),
        failed
            .iter()
            .map(|(_, o)| o.as_str())
            .take(5)
            .collect::<Vec<_>>(),
        settled.len()
    );
    assert!(!settled.is_empty());
    assert!(
        settled.iter().all(|(_, o)| o == "score"),
        "requests still failing 1.5 s after the failover"
    );
    // HTTP itself never fails: with set-on-error the request goes on without a score.
    assert!(
        failed.iter().all(|(_, o)| o.starts_with("error:")),
        "{failed:?}"
    );
    // With `option redispatch` and `retries` in the example, HAProxy moves
    // new agent connections to the healthy server at once; only a message
    // already on the wire to the killed agent can be lost (measured: 0 with
    // HAProxy 2.6.12, 3.0.0, 3.1.0 and 3.2.0; without redispatch 3.0 lost 73
    // of 268). HAProxy 2.8.0 refuses to open a new agent connection on a
    // thread that lost all of its own while its message rate is high, and
    // fails those messages (SPOE error 2) for about a second whatever the
    // configuration: there only the settling above is required.
    let version = haproxy::haproxy_version(&binary);
    if version == (2, 6) || version >= (3, 0) {
        assert!(
            failed.len() <= 4,
            "{} requests lost their score in the failover",
            failed.len()
        );
    }
    assert!(second.log_text().contains("listening"));
}

/// An agent that hangs (SIGSTOP) instead of dying: requests routed to it wait
/// for the SPOE `timeout processing` (500 ms in the example), then go on
/// without a score and with `txn.iprep.error` set (`option set-on-error`),
/// until the health check marks the agent down and `on-marked-down
/// shutdown-sessions` closes its connections.
#[test]
fn hung_agent_costs_the_processing_timeout_then_fails_over() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let (first, second, proxy) = two_agents_behind_haproxy(&binary);
    first.signal("STOP");
    let started = Instant::now();
    let mut outcomes = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let sent = Instant::now();
        let response = http::get(proxy.http, "/").expect("HTTP never fails");
        outcomes.push((
            sent - started,
            sent.elapsed(),
            response.header("X-IP-Score").is_some(),
            response.header("X-IP-Score-Error").map(str::to_string),
        ));
    }
    first.signal("CONT");
    let errors: Vec<_> = outcomes.iter().filter(|o| !o.2).collect();
    eprintln!(
        "hung agent: {} requests in 5 s, {} without a score; their latency {:?}, error var {:?}",
        outcomes.len(),
        errors.len(),
        errors.iter().map(|o| o.1).collect::<Vec<_>>(),
        errors
            .iter()
            .filter_map(|o| o.3.clone())
            .collect::<Vec<_>>()
    );
    for (_, latency, _, error) in &errors {
        // At most one `timeout processing` (500 ms), less when the connection
        // is shut down as the check marks the agent down.
        assert!(*latency < Duration::from_millis(900), "{latency:?}");
        assert!(error.is_some(), "set-on-error sets txn.iprep.error");
    }
    // Once the health check has marked the hung agent down, every request is scored.
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.0 > Duration::from_secs(3))
        .collect();
    assert!(
        !late.is_empty() && late.iter().all(|o| o.2),
        "still failing after 3 s"
    );
    assert!(second.log_text().contains("listening"));
}

/// Two agents as servers of the example's SPOE backend, HAProxy scoring.
fn two_agents_behind_haproxy(binary: &std::path::PathBuf) -> (Agent, Agent, haproxy::Haproxy) {
    const AGENT1: &str = "    server agent1 \"${AGENT1_ADDR-127.0.0.1:12345}\" check inter 1s rise 1 fall 1 on-marked-down shutdown-sessions";
    let first = Agent::start(&iprep_guest(), &[]);
    let second = Agent::start(&iprep_guest(), &[]);
    let proxy = haproxy::start(binary, &[first.addr(), second.addr()], 0, |config| {
        assert!(
            config.contains(AGENT1),
            "the example's agent1 server line changed"
        );
        let agent2 = AGENT1
            .replace("agent1", "agent2")
            .replace("AGENT1_ADDR", "AGENT2_ADDR")
            .replace("12345", "12346");
        config.replace(AGENT1, &format!("{AGENT1}\n{agent2}"))
    });
    assert!(eventually(Duration::from_secs(10), || proxy.scores()));
    (first, second, proxy)
}
