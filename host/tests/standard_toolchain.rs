//! A guest built the standard way (`cargo build --target wasm32-wasip2`)
//! imports WASI streams for its stdio. Its calls still enter it directly,
//! without a fiber, until one reaches a WASI function that can wait (a
//! print): that call runs again on a fiber, with nothing done twice, and
//! the module stays on fibers.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use spoa_host::spop::{Ack, Action, TypedData};
use support::agent::Agent;
use support::spop_client::{SpopClient, check_client_ip, message, notify_frame, score_of};
use support::{artifact, eventually, free_port};

fn calls_enter(metrics: SocketAddr) -> String {
    let response = support::http::get(metrics, "/status").expect("GET /status");
    let report: Value = serde_json::from_str(&response.body).expect("/status is JSON");
    report["guests"][0]["calls_enter"]
        .as_str()
        .unwrap_or_else(|| panic!("no calls_enter in {report:#}"))
        .to_owned()
}

fn start(fixture: &str) -> (Agent, SocketAddr) {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let agent = Agent::start(
        &artifact(fixture),
        &["--metrics-address", &metrics.to_string()],
    );
    (agent, metrics)
}

#[test]
fn a_wasip2_guest_that_never_prints_is_entered_directly() {
    let (agent, metrics) = start("fixtures/guest_iprep_wasip2.wasm");
    let mut client = SpopClient::pipelined(agent.addr());
    for frame_id in 1..=50 {
        client.send(&notify_frame(
            1,
            frame_id,
            vec![check_client_ip(Ipv4Addr::new(192, 0, 2, 7))],
        ));
        let score = score_of(&client.recv_ack()).expect("an ip_score");
        assert!((0..=100).contains(&score), "{score}");
    }
    assert_eq!(calls_enter(metrics), "directly", "{}", agent.log_text());
}

#[test]
fn a_wasip2_guest_moves_to_fibers_at_its_first_print_and_prints_once() {
    let (agent, metrics) = start("fixtures/guest_hostile_wasip2.wasm");
    let mut client = SpopClient::pipelined(agent.addr());
    let mut ask = |frame_id, name: &str| {
        client.send(&notify_frame(1, frame_id, vec![message(name, vec![])]));
        client.recv_ack()
    };
    let count = |ack: &Ack| match ack.actions.as_slice() {
        [
            Action::SetVar {
                value: TypedData::Uint32(n),
                ..
            },
        ] => *n,
        other => panic!("expected a count, got {other:?}"),
    };
    assert!(count(&ask(1, "count")) >= 1);
    assert_eq!(calls_enter(metrics), "directly", "{}", agent.log_text());

    // The panic hook writes to stderr: the direct call is cut before the
    // write, runs again on a fiber, prints there, and traps (its message
    // gets no actions).
    let ack = ask(2, "panic");
    assert!(ack.actions.is_empty(), "{ack:?}");
    assert!(
        eventually(Duration::from_secs(5), || agent
            .log_text()
            .contains("hostile guest panics on purpose")),
        "{}",
        agent.log_text()
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = agent.log_text();
    assert_eq!(
        log.matches("hostile guest panics on purpose").count(),
        1,
        "printed once: {log}"
    );
    assert!(
        log.contains("reached an import that can wait") && log.contains("get-stderr"),
        "the log names the import: {log}"
    );
    assert_eq!(calls_enter(metrics), "on_fibers");

    // The connection and the module go on, now on fibers.
    assert!(count(&ask(3, "count")) >= 1);
    assert!(agent.log_text().matches("can wait").count() == 1);
}
