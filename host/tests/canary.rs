//! `[guest.canary]`: a new version serving a share of the messages, promoted
//! when its fault rate is no worse than the stable version's, rolled back
//! otherwise; over SPOP and through a real HAProxy.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::agent::{Agent, start_config};
use support::http::{metric_value, scrape_metrics};
use support::spop_client::{Session, check_client_ip, score_of};
use support::{eventually, hostile_guest, install};

/// Hostile guest A (score 42) serving, `canary` ('B': 58; 'C': traps on
/// every address but 127.0.0.1) its canary at half the batches.
fn a_with_canary(canary: char, promote_after: u32) -> (tempfile::TempDir, Agent, SocketAddr) {
    let dir = tempfile::tempdir().expect("temp dir");
    install(&hostile_guest('A'), &dir.path().join("stable.wasm"));
    install(&hostile_guest(canary), &dir.path().join("canary.wasm"));
    let config = format!(
        r#"
[[guest]]
name = "iprep"
module = "stable.wasm"
messages = ["check-client-ip"]
smoke-args = ["ip=ipv4:127.0.0.1"]

[guest.canary]
module = "canary.wasm"
share = 0.5
promote-after = {promote_after}
"#
    );
    let (agent, metrics) = start_config(dir.path(), &config, &[]);
    (dir, agent, metrics)
}

fn canaries(metrics: SocketAddr, result: &str) -> f64 {
    metric_value(
        &scrape_metrics(metrics),
        &format!("spoa_canaries_total{{guest=\"iprep\",result=\"{result}\"}}"),
    )
}

fn serving(metrics: SocketAddr) -> f64 {
    metric_value(
        &scrape_metrics(metrics),
        "spoa_canary_serving{guest=\"iprep\"}",
    )
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc000_0200 + i)
}

/// The scores of `count` messages, one NOTIFY each (`None`: no score).
fn scores(agent: &Agent, count: u32) -> Vec<Option<i64>> {
    let mut session = Session::connect(agent.addr());
    (0..count)
        .map(|i| score_of(&session.notify(vec![check_client_ip(ip(i))])))
        .collect()
}

#[test]
fn a_canary_that_faults_is_rolled_back_and_the_stable_version_serves_on() {
    let (_dir, agent, metrics) = a_with_canary('C', 10);
    assert_eq!(serving(metrics), 1.0);
    let answers = scores(&agent, 200);
    let unanswered = answers.iter().filter(|s| s.is_none()).count();
    assert!(
        (10..=20).contains(&unanswered),
        "the canary cost its ten messages and no more: {answers:?}"
    );
    assert!(
        answers[100..].iter().all(|s| *s == Some(42)),
        "the stable version serves after the rollback: {answers:?}"
    );
    assert_eq!(canaries(metrics, "rolled_back"), 1.0);
    assert_eq!(canaries(metrics, "promoted"), 0.0);
    assert_eq!(serving(metrics), 0.0);
    assert!(agent.log_text().contains("canary rolled back"));
}

#[test]
fn a_canary_as_good_as_the_stable_version_is_promoted() {
    let (_dir, agent, metrics) = a_with_canary('B', 10);
    let answers = scores(&agent, 200);
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
    assert!(answers[..40].contains(&Some(42)) && answers[..40].contains(&Some(58)));
    assert!(
        answers[100..].iter().all(|s| *s == Some(58)),
        "the canary serves everything once promoted: {answers:?}"
    );
    assert_eq!(canaries(metrics, "promoted"), 1.0);
    assert_eq!(serving(metrics), 0.0);
    assert!(agent.log_text().contains("canary promoted"));
}

/// Through HAProxy, with client addresses from X-Forwarded-For (the faulty
/// canary traps on every address but 127.0.0.1).
#[test]
fn haproxy_traffic_rolls_back_a_faulty_canary_and_promotes_a_good_one() {
    let Some(binary) = support::haproxy::haproxy_binary() else {
        return;
    };
    for (canary, settled) in [('C', "42"), ('B', "58")] {
        let (_dir, agent, metrics) = a_with_canary(canary, 20);
        let proxy = support::haproxy::start_with(
            &binary,
            &[agent.addr()],
            0,
            |c| c,
            |spoe| spoe.replace("args ip=src", "args ip=req.hdr_ip(x-forwarded-for)"),
        );
        let score = |i: u32| {
            let forwarded = ip(i).to_string();
            support::http::get_with(proxy.http, "/", &[("X-Forwarded-For", &forwarded)])
                .map(|r| r.header("X-IP-Score").map(str::to_owned))
                .unwrap_or(None)
        };
        assert!(
            eventually(Duration::from_secs(10), || score(0).is_some()),
            "{}",
            proxy.log_text()
        );
        let result = if canary == 'C' {
            "rolled_back"
        } else {
            "promoted"
        };
        let mut sent = 0;
        while canaries(metrics, result) < 1.0 && sent < 500 {
            score(sent);
            sent += 1;
        }
        assert_eq!(
            canaries(metrics, result),
            1.0,
            "canary {canary} after {sent}"
        );
        let after: Vec<Option<String>> = (0..20).map(score).collect();
        assert!(
            after.iter().all(|s| s.as_deref() == Some(settled)),
            "canary {canary}: {after:?}"
        );
    }
}
