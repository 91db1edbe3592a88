//! `[guest.shadow]`: a candidate version answering a copy of a share of the
//! guest's messages, compared with the served answers, never serving one,
//! never writing to the shared store; with a real HAProxy under traffic.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, start_config};
use support::http::{metric_value, scrape_metrics};
use support::spop_client::{Session, check_client_ip, score_of, set_vars};
use support::{artifact, eventually, hostile_guest, install};

fn shadow_config(share: f64, extra: &str) -> String {
    format!(
        r#"
[[guest]]
name = "iprep"
module = "served.wasm"
messages = ["check-client-ip"]
{extra}
[guest.shadow]
module = "candidate.wasm"
share = {share}
"#
    )
}

fn shadow_series(metrics: SocketAddr, result: &str) -> f64 {
    metric_value(
        &scrape_metrics(metrics),
        &format!("spoa_shadow_total{{guest=\"iprep\",result=\"{result}\"}}"),
    )
}

fn start(dir: &Path, served: &Path, candidate: &Path, config: &str) -> (Agent, SocketAddr) {
    install(served, &dir.join("served.wasm"));
    install(candidate, &dir.join("candidate.wasm"));
    start_config(dir, config, &[])
}

/// Hostile guest A serving (score 42), B (58) its shadow at `share`.
fn a_shadowed_by_b(share: f64) -> (tempfile::TempDir, Agent, SocketAddr) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent, metrics) = start(
        dir.path(),
        &hostile_guest('A'),
        &hostile_guest('B'),
        &shadow_config(share, ""),
    );
    (dir, agent, metrics)
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc000_0200 + i)
}

#[test]
fn a_shadow_is_compared_with_the_served_answers_and_never_serves() {
    for (candidate, result) in [('A', "same"), ('B', "differ"), ('C', "failed")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (agent, metrics) = start(
            dir.path(),
            &hostile_guest('A'),
            &hostile_guest(candidate),
            // C passes its smoke call only for 127.0.0.1, then traps.
            &shadow_config(1.0, r#"smoke-args = ["ip=ipv4:127.0.0.1"]"#),
        );
        let mut session = Session::connect(agent.addr());
        for i in 0..40 {
            let ack = session.notify(vec![check_client_ip(ip(i))]);
            assert_eq!(score_of(&ack), Some(42), "served by A, shadow {candidate}");
        }
        assert!(
            eventually(Duration::from_secs(10), || shadow_series(metrics, result)
                == 40.0),
            "shadow {candidate}: {} {result}\n{}",
            shadow_series(metrics, result),
            scrape_metrics(metrics)
        );
        for other in ["same", "differ", "failed", "dropped"] {
            if other != result {
                assert_eq!(shadow_series(metrics, other), 0.0, "{candidate} {other}");
            }
        }
        // The series counts before the line reaches the log.
        let logged = || agent.log_text().contains("shadow answered differently");
        match result {
            "same" => assert!(!logged(), "{}", agent.log_text()),
            _ => assert!(
                eventually(Duration::from_secs(5), logged),
                "{}",
                agent.log_text()
            ),
        }
    }
}

#[test]
fn a_share_of_the_messages_goes_to_the_shadow() {
    let (_dir, agent, metrics) = a_shadowed_by_b(0.25);
    let mut session = Session::connect(agent.addr());
    for chunk in 0..20 {
        session.notify(
            (0..100)
                .map(|i| check_client_ip(ip(chunk * 100 + i)))
                .collect(),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let copied = shadow_series(metrics, "differ");
    // 500 expected; a binomial's spread is about 19.
    assert!((400.0..600.0).contains(&copied), "{copied} of 2000");
}

/// The rate-limit guest counts per address in the shared store: with a
/// shadow of itself writing there too, every count would come twice.
#[test]
fn a_shadow_never_writes_to_the_shared_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = artifact("guest_ratelimit.wasm");
    let (agent, metrics) = start(
        dir.path(),
        &guest,
        &guest,
        &shadow_config(1.0, "config = { limit = 1000 }"),
    );
    let mut session = Session::connect(agent.addr());
    let address = ip(7);
    for expected in 1..=20i64 {
        let ack = session.notify(vec![check_client_ip(address)]);
        let count = set_vars(&ack)
            .find(|(name, _)| name == "rate_count")
            .and_then(|(_, value)| value.as_i64());
        assert_eq!(count, Some(expected), "{ack:?}");
    }
    // The shadow counted in its own store: the same answers.
    assert!(eventually(Duration::from_secs(10), || shadow_series(
        metrics, "same"
    ) == 20.0));
}

/// Real HAProxy traffic while the shadow answers everything differently:
/// every response carries the served score.
#[test]
fn haproxy_traffic_is_served_by_the_guest_while_its_shadow_runs() {
    let Some(binary) = support::haproxy::haproxy_binary() else {
        return;
    };
    let (_dir, agent, metrics) = a_shadowed_by_b(1.0);
    let proxy = support::haproxy::start(&binary, &[agent.addr()], 0, |c| c);
    proxy.wait_until_scored(&agent);
    let traffic = support::http::Traffic::start(proxy.http, |response| match response {
        Ok(r) => r.header("X-IP-Score").unwrap_or("missing").to_string(),
        Err(e) => format!("error: {e}"),
    });
    std::thread::sleep(Duration::from_secs(2));
    let scores = traffic.stop();
    assert!(scores.len() > 50, "{} requests", scores.len());
    let wrong: Vec<_> = scores.iter().filter(|(_, s)| s != "42").collect();
    assert!(wrong.is_empty(), "{wrong:?}");
    assert!(
        eventually(Duration::from_secs(10), || {
            shadow_series(metrics, "differ") + shadow_series(metrics, "dropped")
                >= scores.len() as f64
        }),
        "{}",
        scrape_metrics(metrics)
    );
}

/// `deterministic = SEED`: a shadow's answers come from the seed and the
/// message, so two agents' shadows answer the same message alike.
#[test]
fn a_deterministic_shadow_answers_a_message_the_same_in_every_agent() {
    let shadow_answer = || {
        let dir = tempfile::tempdir().expect("temp dir");
        let (agent, metrics) = start(
            dir.path(),
            &hostile_guest('A'),
            &artifact("examples/iprep_rust.wasm"),
            &shadow_config(1.0, "").replace("share = 1", "share = 1\ndeterministic = 7"),
        );
        Session::connect(agent.addr()).notify(vec![check_client_ip(ip(9))]);
        assert!(eventually(Duration::from_secs(10), || {
            shadow_series(metrics, "differ") == 1.0
        }));
        // The counter moves before the line is logged, and the log reaches
        // the test through a pipe: wait for the line too.
        let logged_line = || {
            let log = agent.log_text();
            let line = log
                .lines()
                .find(|line| line.contains("shadow answered differently"));
            line.map(str::to_owned)
        };
        assert!(
            eventually(Duration::from_secs(10), || logged_line().is_some()),
            "the difference is logged"
        );
        let line = logged_line().expect("the difference is logged");
        line[line.find("shadow_answer").expect("the shadow's answer")..].to_owned()
    };
    let first = shadow_answer();
    assert!(first.contains("ip_score"), "{first}");
    assert_eq!(first, shadow_answer());
}
