//! End to end with two guests: a real HAProxy, configured by
//! `spoa-host haproxy-config`, sends two SPOE messages for every request
//! (IP reputation, User-Agent score) to one `spoa-host --config`; both
//! variables are set on the same request, and each guest is reloaded while
//! requests flow without a response losing either score.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::agent::Agent;
use support::haproxy::{self, haproxy_binary};
use support::http::{self, metric_value, scrape_metrics};
use support::{artifact, eventually, free_port, iprep_guest};

const AGENT_CONFIG: &str = r#"
[haproxy]
engine = "guests"
var-prefix = "spoa"
backend = "spoa-agents"
SERVERS

[[guest]]
name = "iprep"
module = "iprep.wasm"
messages = ["check-client-ip"]

[guest.spoe.check-client-ip]
args = ["ip=src"]

[[guest]]
name = "ua"
module = "ua.wasm"
messages = ["check-user-agent"]
config-file = "ua.conf"

[guest.spoe.check-user-agent]
args = ["ua=req.hdr(user-agent)"]
"#;

/// The frontend's rules (see `haproxy::start_generated`).
const RULES: &str = r#"    http-after-response set-header X-IP-Score "%[var(sess.spoa.ip_score)]" if { var(sess.spoa.ip_score) -m found }
    http-after-response set-header X-UA-Score "%[var(txn.spoa.ua_score)]" if { var(txn.spoa.ua_score) -m found }"#;

fn install(dir: &std::path::Path, source: &std::path::Path, name: &str) {
    support::install(source, &dir.join(name));
}

fn write(dir: &std::path::Path, name: &str, text: &str) {
    support::write_atomically(&dir.join(name), text);
}

/// What the request loop saw: UA scores in order, and any response that
/// missed a score.
#[derive(Default)]
struct Seen {
    ua_scores: Vec<i64>,
    missing: Vec<String>,
}

#[test]
fn two_guests_score_the_same_request_and_reload_one_at_a_time_without_a_lost_score() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path().to_path_buf();
    install(&dir, &iprep_guest(), "iprep.wasm");
    install(&dir, &artifact("guest_uascore.wasm"), "ua.wasm");
    write(&dir, "ua.conf", "score = 90\n");
    write(&dir, "agent.toml", &AGENT_CONFIG.replace("SERVERS", ""));
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let agent = Agent::start_with(&[
        "--config".into(),
        dir.join("agent.toml").display().to_string(),
        "--metrics-address".into(),
        metrics.to_string(),
    ]);

    // HAProxy's side, generated from the same file (with the agent's address).
    write(
        &dir,
        "haproxy-side.toml",
        &AGENT_CONFIG.replace("SERVERS", &format!("servers = [\"{}\"]", agent.addr())),
    );
    let haproxy_side = dir.join("haproxy-side.toml");
    let proxy = haproxy::start_generated(&binary, "guests", RULES, |section| {
        haproxy::generated_config(&binary, &haproxy_side, section)
    });

    let browser = [(
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    )];
    assert!(
        eventually(Duration::from_secs(10), || {
            http::get_with(proxy.http, "/", &browser)
                .map(|r| r.header("X-IP-Score").is_some() && r.header("X-UA-Score").is_some())
                .unwrap_or(false)
        }),
        "no doubly scored response; haproxy log:\n{}\nagent log:\n{}",
        proxy.log_text(),
        agent.log_text()
    );
    let curl = http::get_with(proxy.http, "/", &[("User-Agent", "curl/8.5.0")]).expect("request");
    assert_eq!(curl.header("X-UA-Score"), Some("10"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let load = {
        let (stop, seen, http_addr) = (stop.clone(), seen.clone(), proxy.http);
        std::thread::spawn(move || {
            let mut requests = 0;
            while !stop.load(Ordering::Relaxed) {
                requests += 1;
                let response = match http::get_with(http_addr, &format!("/r/{requests}"), &browser)
                {
                    Ok(response) => response,
                    Err(err) => {
                        seen.lock()
                            .unwrap()
                            .missing
                            .push(format!("request failed: {err}"));
                        continue;
                    }
                };
                let ip = response
                    .header("X-IP-Score")
                    .and_then(|s| s.parse::<i64>().ok());
                let ua = response
                    .header("X-UA-Score")
                    .and_then(|s| s.parse::<i64>().ok());
                let mut seen = seen.lock().unwrap();
                match (ip, ua) {
                    (Some(ip), Some(ua)) if (0..=100).contains(&ip) => seen.ua_scores.push(ua),
                    _ => seen.missing.push(format!(
                        "request {requests}: status {}, headers {:?}",
                        response.status, response.headers
                    )),
                }
            }
            requests
        })
    };
    let requests_seen = || seen.lock().unwrap().ua_scores.len();
    assert!(eventually(Duration::from_secs(10), || requests_seen() >= 30));

    // Reload the IP-reputation guest: another build of the same logic.
    install(&dir, &artifact("examples/iprep_rust.wasm"), "iprep.wasm");
    assert!(
        eventually(Duration::from_secs(10), || metric_value(
            &scrape_metrics(metrics),
            "spoa_module_reloads_total{guest=\"iprep\",result=\"ok\"}"
        ) == 1.0),
        "{}",
        agent.log_text()
    );
    let after_iprep = requests_seen();
    assert!(eventually(Duration::from_secs(10), || requests_seen()
        >= after_iprep + 30));

    // Reload the User-Agent guest through its configuration.
    write(&dir, "ua.conf", "score = 80\n");
    assert!(
        eventually(Duration::from_secs(10), || seen
            .lock()
            .unwrap()
            .ua_scores
            .last()
            == Some(&80)),
        "the new UA configuration never served:\n{}",
        agent.log_text()
    );
    let after_ua = requests_seen();
    assert!(eventually(Duration::from_secs(10), || requests_seen() >= after_ua + 30));
    stop.store(true, Ordering::Relaxed);
    let requests = load.join().expect("load thread");

    let seen = seen.lock().unwrap();
    assert!(
        seen.missing.is_empty(),
        "{} of {requests} responses missed a score: {:?}",
        seen.missing.len(),
        &seen.missing[..seen.missing.len().min(5)]
    );
    // Scores switch once, from 90 to 80, and never back.
    let first_80 = seen
        .ua_scores
        .iter()
        .position(|&s| s == 80)
        .expect("80 seen");
    assert!(seen.ua_scores[..first_80].iter().all(|&s| s == 90));
    assert!(seen.ua_scores[first_80..].iter().all(|&s| s == 80));
    let text = scrape_metrics(metrics);
    assert_eq!(
        metric_value(
            &text,
            "spoa_module_reloads_total{guest=\"ua\",result=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "spoa_guest_failures_total{guest=\"iprep\",kind=\"timeout\"}"
        ),
        0.0
    );
    eprintln!("{requests} requests through HAProxy, every one scored by both guests");
}
