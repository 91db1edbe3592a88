//! End to end with shared state: two `spoa-host` agents behind one real
//! HAProxy share a real Redis through the rate-limit guest. A client over
//! the limit is denied whichever agent answers and allowed again after the
//! expiry; with Redis killed during traffic, requests keep flowing with the
//! guest's fallback score; once Redis is back, shared state works again.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::haproxy::{self, haproxy_binary};
use support::http::{self, Response, metric_value, scrape_metrics};
use support::redis::RedisServer;
use support::{artifact, eventually, free_port};

const LIMIT: usize = 5;

const AGENT_CONFIG: &str = r#"
kv = "REDIS_URL"

[haproxy]
engine = "rate"
var-prefix = "rl"
backend = "spoa-agents"
SERVERS

[[guest]]
name = "rate"
module = "ratelimit.wasm"
messages = ["check-client-ip"]
config = { limit = 5, window = "3s", ban = "4s" }

[guest.spoe.check-client-ip]
args = ["ip=src"]
"#;

/// The frontend's rules (see `haproxy::start_generated`).
const RULES: &str = r#"    http-request deny deny_status 429 if { var(txn.rl.blocked) -m bool }
    http-after-response set-header X-IP-Score "%[var(txn.rl.ip_score)]" if { var(txn.rl.ip_score) -m found }
    http-after-response set-header X-Rate-Count "%[var(txn.rl.rate_count)]" if { var(txn.rl.rate_count) -m found }
    http-after-response set-header X-SPOE-Error "%[var(txn.rl.error)]" if { var(txn.rl.error) -m found }"#;

/// One request's outcome as the test cares about it.
#[derive(Debug)]
struct Outcome {
    status: u16,
    score: Option<i64>,
    count: Option<i64>,
    /// The agent answered (no SPOE processing error).
    answered: bool,
}

fn request(proxy: SocketAddr) -> Outcome {
    let response: Response = http::get(proxy, "/").expect("request through haproxy");
    let number = |name: &str| response.header(name).and_then(|v| v.parse::<i64>().ok());
    Outcome {
        status: response.status,
        score: number("X-IP-Score"),
        count: number("X-Rate-Count"),
        answered: response.header("X-SPOE-Error").is_none()
            && response.header("X-IP-Score").is_some(),
    }
}

fn messages(metrics: SocketAddr) -> f64 {
    metric_value(&scrape_metrics(metrics), "spoa_messages_total")
}

#[test]
fn two_agents_share_a_rate_limit_through_redis_and_survive_its_loss() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path().to_path_buf();
    support::install(
        &artifact("guest_ratelimit.wasm"),
        &dir.join("ratelimit.wasm"),
    );
    let agent_config = AGENT_CONFIG.replace("REDIS_URL", &redis.url());
    support::write_atomically(
        &dir.join("agent.toml"),
        &agent_config.replace("SERVERS", ""),
    );
    let start_agent = || {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let agent = Agent::start_with(&[
            "--config".into(),
            dir.join("agent.toml").display().to_string(),
            "--metrics-address".into(),
            metrics.to_string(),
        ]);
        (agent, metrics)
    };
    let (mut agent_a, metrics_a) = start_agent();
    let (agent_b, metrics_b) = start_agent();
    let servers = format!("servers = [\"{}\", \"{}\"]", agent_a.addr(), agent_b.addr());
    support::write_atomically(
        &dir.join("haproxy-side.toml"),
        &agent_config.replace("SERVERS", &servers),
    );
    let proxy = haproxy::start_generated(&binary, "rate", RULES, |section| {
        haproxy::generated_config(&binary, &dir.join("haproxy-side.toml"), section)
    });
    let logs = || {
        format!(
            "haproxy:\n{}\nagent A:\n{}\nagent B:\n{}",
            proxy.log_text(),
            agent_a.log_text(),
            agent_b.log_text()
        )
    };

    // Over the limit: denied.
    assert!(
        eventually(Duration::from_secs(10), || request(proxy.http).count
            == Some(1)),
        "no counted response:\n{}",
        logs()
    );
    let mut outcomes = Vec::new();
    for _ in 0..LIMIT + 3 {
        outcomes.push(request(proxy.http));
    }
    let first_denied = outcomes
        .iter()
        .position(|o| o.status == 429)
        .unwrap_or_else(|| panic!("never denied: {outcomes:?}\n{}", logs()));
    assert!(first_denied <= LIMIT, "{outcomes:?}");
    assert!(
        outcomes[first_denied..].iter().all(|o| o.status == 429),
        "{outcomes:?}"
    );
    assert!(
        messages(metrics_a) > 0.0 && messages(metrics_b) > 0.0,
        "both agents answer: A {} B {} messages",
        messages(metrics_a),
        messages(metrics_b)
    );

    // Allowed again after the expiry.
    assert!(
        eventually(Duration::from_secs(10), || {
            let outcome = request(proxy.http);
            outcome.status == 200 && outcome.count == Some(1)
        }),
        "not allowed again after the ban expired:\n{}",
        logs()
    );

    // Redis killed during traffic: every request is served, with the
    // guest's fallback score.
    redis.kill();
    let started = Instant::now();
    let mut during_outage = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        during_outage.push(request(proxy.http));
    }
    let fallback = during_outage
        .iter()
        .filter(|o| o.status == 200 && o.answered && o.score == Some(50) && o.count.is_none())
        .count();
    assert!(
        during_outage.iter().all(|o| o.status == 200),
        "{during_outage:?}"
    );
    assert!(
        fallback >= during_outage.len() - 1 && fallback >= 5,
        "{fallback} fallback answers of {}: {during_outage:?}",
        during_outage.len()
    );

    // Back: shared state works again, and a limit reached through either
    // agent holds on the other.
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || request(proxy.http)
            .count
            .is_some()),
        "no counted response after Redis came back:\n{}",
        logs()
    );
    assert!(
        eventually(Duration::from_secs(10), || request(proxy.http).status
            == 429),
        "never denied after Redis came back:\n{}",
        logs()
    );
    // Agent A goes away; from now on only B answers, and every answer it
    // gives denies: the ban both agents' counts led to is in Redis.
    agent_a.stop();
    let b_before = messages(metrics_b);
    let started = Instant::now();
    let mut from_b = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        let outcome = request(proxy.http);
        if outcome.answered || outcome.status == 429 {
            from_b.push(outcome);
        }
    }
    assert!(
        from_b.len() >= 3,
        "B answered {} requests:\n{}\n{}",
        from_b.len(),
        proxy.log_text(),
        agent_b.log_text()
    );
    assert!(
        from_b.iter().all(|o| o.status == 429 && o.count.is_none()),
        "{from_b:?}"
    );
    assert!(messages(metrics_b) >= b_before + 3.0);
}
