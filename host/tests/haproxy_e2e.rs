//! End to end: real HTTP requests → real HAProxy (the configuration in
//! `examples/`) → SPOE → real spoa-host → wasm guest → ACK → HAProxy's
//! decision and the X-IP-Score header.

mod support;

use std::collections::HashSet;

use support::agent::Agent;
use support::haproxy::{self, haproxy_binary};
use support::{http, iprep_guest};

const THRESHOLD: u32 = 30;

#[test]
fn haproxy_scores_real_requests_and_denies_low_scores() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let agent = Agent::start(&iprep_guest(), &[]);
    let proxy = haproxy::start(&binary, &[agent.addr()], THRESHOLD, |c| c);

    proxy.wait_until_scored(&agent);

    let mut scores = HashSet::new();
    let (mut allowed, mut denied) = (0, 0);
    for i in 0..60 {
        let response = http::get(proxy.http, &format!("/req/{i}")).expect("HTTP request");
        let score: i64 = response
            .header("X-IP-Score")
            .unwrap_or_else(|| panic!("request {i} has no X-IP-Score (status {})", response.status))
            .parse()
            .expect("numeric score");
        assert!((0..=100).contains(&score), "score {score} out of range");
        if score < i64::from(THRESHOLD) {
            assert_eq!(response.status, 403, "score {score} must be denied");
            denied += 1;
        } else {
            assert_eq!(response.status, 200, "score {score} must be allowed");
            assert!(response.body.contains("hello"));
            allowed += 1;
        }
        scores.insert(score);
    }
    assert!(scores.len() >= 10, "scores should vary: {scores:?}");
    assert!(
        allowed > 0 && denied > 0,
        "allowed {allowed}, denied {denied}"
    );
    assert!(
        !proxy.log_text().contains("error"),
        "haproxy reported errors:\n{}",
        proxy.log_text()
    );
}
