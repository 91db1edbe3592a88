//! A misbehaving guest costs one message: never the connection, the process,
//! or another message. Each case goes through real SPOP traffic.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use spoa_host::spop::{Action, TypedData, VarScope};
use support::agent::{Agent, run_host};
use support::spop_client::{SpopClient, check_client_ip, encoded, message, notify_frame, score_of};
use support::{artifact, hostile_guest, source_fixture};

/// Sends one message named `name`, checks its ACK is empty and arrives within
/// `limit`, then checks the same connection still gets scores.
fn assert_costs_one_message(
    client: &mut SpopClient,
    name: &str,
    frame_id: u64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    client.send(&notify_frame(7, frame_id, vec![message(name, vec![])]));
    let ack = client.recv_ack();
    let took = started.elapsed();
    assert_eq!((ack.stream_id, ack.frame_id), (7, frame_id), "{name}");
    assert!(ack.actions.is_empty(), "{name}: {ack:?}");
    assert!(took < limit, "{name}: ACK took {took:?}");

    client.send(&notify_frame(
        8,
        frame_id + 1000,
        vec![check_client_ip(Ipv4Addr::LOCALHOST)],
    ));
    let ack = client.recv_ack();
    assert_eq!(
        score_of(&ack),
        Some(42),
        "{name}: next message not served: {ack:?}"
    );
    took
}

#[test]
fn every_misbehaviour_costs_exactly_one_message() {
    // A deadline generous enough that `huge` (building ~1 MB of actions,
    // ~10 ms) finishes on a loaded machine and fails for its size, not time.
    let mut agent = Agent::start(
        &hostile_guest('A'),
        &["--guest-timeout", "150ms", "--guest-memory", "16MiB"],
    );
    let mut client = SpopClient::pipelined(agent.addr());
    let bound = Duration::from_secs(2);
    for (i, name) in [
        "loop", "hog", "trap", "panic", "overflow", "huge", "bad-name", "error",
    ]
    .into_iter()
    .enumerate()
    {
        let took = assert_costs_one_message(&mut client, name, i as u64 + 1, bound);
        eprintln!("{name}: empty ACK after {took:?}");
    }
    assert!(agent.is_alive());
    let expected = [
        "exceeded its time budget",
        "exceeded its memory cap",
        "trapped",
        "do not fit in the ACK",
        "invalid output",
        "returned an error",
    ];
    // The warning is logged before the ACK leaves, but the test reads the
    // agent's stderr through a pipe: give the last lines a moment to arrive.
    support::eventually(Duration::from_secs(2), || {
        let log = agent.log_text();
        expected.iter().all(|e| log.contains(e))
    });
    let log = agent.log_text();
    for expected in expected {
        assert!(log.contains(expected), "log lacks `{expected}`:\n{log}");
    }
    // Warnings name the module and the message.
    assert!(log.contains("guest_hostile_a.wasm@"), "{log}");
    assert!(log.contains("spoe_message=loop"), "{log}");
}

#[test]
fn endless_loop_is_cut_near_the_deadline() {
    let agent = Agent::start(&hostile_guest('A'), &["--guest-timeout", "10ms"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let mut took: Vec<Duration> = (0..5)
        .map(|i| assert_costs_one_message(&mut client, "loop", i + 1, Duration::from_secs(1)))
        .collect();
    took.sort();
    let (median, worst) = (took[2], took[4]);
    eprintln!("endless loop with --guest-timeout 10ms: ACK after {took:?}");
    // The bound: cut within twice the deadline. The median, so that
    // one scheduling hiccup of a busy test machine does not decide it.
    assert!(
        median <= Duration::from_millis(20),
        "median {median:?}, worst {worst:?}"
    );
}

#[test]
fn other_connections_are_served_while_a_guest_loops() {
    // Long deadline so the effect is visible: five pipelined endless loops are
    // half a second of guest time on one connection.
    let agent = Agent::start(
        &hostile_guest('A'),
        &["--guest-timeout", "100ms", "-n", "2"],
    );
    let mut looping = SpopClient::pipelined(agent.addr());
    let mut healthy = SpopClient::pipelined(agent.addr());

    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend(encoded(&notify_frame(
            1,
            i + 1,
            vec![message("loop", vec![])],
        )));
    }
    looping.send_raw(&batch);
    std::thread::sleep(Duration::from_millis(20));
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        healthy.send(&notify_frame(
            2,
            i + 1,
            vec![check_client_ip(Ipv4Addr::LOCALHOST)],
        ));
        assert_eq!(score_of(&healthy.recv_ack()), Some(42));
        worst = worst.max(started.elapsed());
    }
    for _ in 0..5 {
        assert!(looping.recv_ack().actions.is_empty());
    }
    eprintln!("worst healthy latency while another connection looped: {worst:?}");
    // At most about one guest call (100 ms + a tick), never the whole batch.
    assert!(
        worst < Duration::from_millis(250),
        "healthy connection waited {worst:?} behind the looping guest"
    );
}

#[test]
fn a_trap_inside_a_notify_spares_its_sibling_messages() {
    let agent = Agent::start(&hostile_guest('A'), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    client.send(&notify_frame(
        3,
        9,
        vec![
            check_client_ip(Ipv4Addr::LOCALHOST),
            message("trap", vec![]),
            check_client_ip(Ipv4Addr::LOCALHOST),
        ],
    ));
    let ack = client.recv_ack();
    assert_eq!(ack.actions.len(), 2, "{ack:?}\n{}", agent.log_text());
}

#[test]
fn pipelined_good_messages_around_bad_ones_are_all_answered() {
    let agent = Agent::start(&hostile_guest('A'), &["--guest-timeout", "20ms"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let names = [
        "check-client-ip",
        "trap",
        "check-client-ip",
        "loop",
        "check-client-ip",
        "hog",
        "check-client-ip",
        "panic",
    ];
    let mut batch = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let msg = if *name == "check-client-ip" {
            check_client_ip(Ipv4Addr::LOCALHOST)
        } else {
            message(name, vec![])
        };
        batch.extend(encoded(&notify_frame(5, i as u64 + 1, vec![msg])));
    }
    client.send_raw(&batch);
    for _ in 0..names.len() {
        let ack = client.recv_ack();
        let name = names[ack.frame_id as usize - 1];
        if name == "check-client-ip" {
            assert_eq!(score_of(&ack), Some(42));
        } else {
            assert!(ack.actions.is_empty(), "{name}");
        }
    }
}

#[test]
fn error_var_reports_the_failure_kind() {
    let agent = Agent::start(
        &hostile_guest('A'),
        &["--guest-timeout", "20ms", "--error-var", "error"],
    );
    let mut client = SpopClient::pipelined(agent.addr());
    for (i, (name, kind)) in [
        ("loop", "timeout"),
        ("trap", "trap"),
        ("hog", "memory"),
        ("error", "error"),
        ("bad-name", "invalid_output"),
    ]
    .into_iter()
    .enumerate()
    {
        client.send(&notify_frame(1, i as u64 + 1, vec![message(name, vec![])]));
        let ack = client.recv_ack();
        assert_eq!(
            ack.actions,
            vec![Action::SetVar {
                scope: VarScope::Txn,
                name: "error".into(),
                value: TypedData::String(kind.into()),
            }],
            "{name}"
        );
    }
}

fn count_of(client: &mut SpopClient, frame_id: u64) -> u64 {
    client.send(&notify_frame(1, frame_id, vec![message("count", vec![])]));
    match client.recv_ack().actions.as_slice() {
        [Action::SetVar { value, .. }] => value.as_u64().expect("integer"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn reuse_mode_keeps_state_and_fresh_mode_does_not() {
    let agent = Agent::start(&hostile_guest('A'), &["-n", "1"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let first = count_of(&mut client, 1);
    let second = count_of(&mut client, 2);
    assert_eq!(second, first + 1, "one reused instance per worker");

    let agent = Agent::start(&hostile_guest('A'), &["-n", "1", "--fresh-instance"]);
    let mut client = SpopClient::pipelined(agent.addr());
    for i in 0..3 {
        assert_eq!(
            count_of(&mut client, i + 1),
            1,
            "fresh instance per message"
        );
    }
}

/// An instance that has served --guest-max-calls calls (the smoke call
/// included) is replaced: the guest's own call counter starts again.
#[test]
fn an_instance_is_replaced_after_its_max_calls() {
    let agent = Agent::start(&hostile_guest('A'), &["-n", "1", "--guest-max-calls", "3"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let counts: Vec<u64> = (1..=9).map(|i| count_of(&mut client, i)).collect();
    // The first instance made the smoke call: it answers 2 and 3.
    assert_eq!(counts, [2, 3, 1, 2, 3, 1, 2, 3, 1], "{counts:?}");
}

#[test]
fn guest_logs_reach_the_host_log_tagged_with_the_module() {
    let agent = Agent::start(&hostile_guest('A'), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    client.send(&notify_frame(1, 1, vec![message("log", vec![])]));
    client.recv_ack();
    assert!(
        support::eventually(Duration::from_secs(2), || {
            let log = agent.log_text();
            log.contains("hostile guest says hello through the host log")
                && log.contains("guest_hostile_a.wasm@")
        }),
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_guest_logging_in_a_loop_cannot_flood_the_host_log() {
    let agent = Agent::start(&hostile_guest('A'), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let flood = |client: &mut SpopClient, frame_id| {
        client.send(&notify_frame(
            1,
            frame_id,
            vec![message("log-flood", vec![])],
        ));
        let ack = client.recv_ack();
        assert_eq!(ack.actions.len(), 1, "the call itself still completes");
    };
    // A call that runs past a tick without a fiber is cut and run again on
    // one (its lines could appear twice): a looping call first puts the
    // module on fibers for good, so each flood below runs exactly once.
    client.send(&notify_frame(1, 1, vec![message("loop", vec![])]));
    client.recv_ack();
    std::thread::sleep(Duration::from_millis(200));
    let before = agent.log_text();
    let (dropped_before, lines_before) = (
        before.matches("dropping the rest").count(),
        before.matches("flood line").count(),
    );
    for frame_id in 2..=4 {
        flood(&mut client, frame_id);
    }
    assert!(support::eventually(Duration::from_secs(2), || {
        agent.log_text().matches("dropping the rest").count() == dropped_before + 3
    }));
    let log = agent.log_text();
    let lines = log.matches("flood line").count() - lines_before;
    assert_eq!(lines, 3 * 32, "32 lines per call reach the log");
    assert!(log.contains("flood line 31") && !log.contains("flood line 32"));
}

/// Start-up refuses modules that cannot be served, naming the problem.
fn assert_refused(module: &std::path::Path, expected: &str) {
    for args in [
        vec!["--module", module.to_str().expect("utf-8 path")],
        vec!["check", module.to_str().expect("utf-8 path")],
    ] {
        let mut full = args.clone();
        full.extend(["-p", "0"]);
        let output = if args[0] == "check" {
            run_host(&args)
        } else {
            run_host(&full)
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{module:?} accepted with {args:?}"
        );
        assert!(
            stderr.contains(expected),
            "{args:?}: stderr lacks `{expected}`:\n{stderr}"
        );
    }
}

#[test]
fn forbidden_imports_are_refused_at_load() {
    assert_refused(&source_fixture("forbidden-import.wat"), "cause: imports");
    assert_refused(
        &source_fixture("forbidden-import.wat"),
        "acme:net/raw-sockets@1.0.0",
    );
}

#[test]
fn components_of_another_world_are_refused_at_load() {
    assert_refused(&source_fixture("wrong-world.wat"), "cause: world");
    assert_refused(&source_fixture("wrong-world.wat"), "handle-message");
}

#[test]
fn garbage_and_core_modules_are_refused_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm this is not wasm at all").expect("write");
    assert_refused(&garbage, "cause: compile");
    assert_refused(
        &artifact("wasm32-unknown-unknown/release/guest_iprep.wasm"),
        "core WebAssembly module, not a component",
    );
    assert_refused(&dir.path().join("missing.wasm"), "cause: read");
}

#[test]
fn check_accepts_a_good_module() {
    let output = run_host(&["check", support::iprep_guest().to_str().expect("utf-8")]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok:"));
}

/// Messages are lowered into the guest borrowed from the frame when their
/// names are UTF-8, and converted (bad bytes replaced) when not: both reach
/// the guest whole, alone (a direct call) and in a batch.
#[test]
fn strings_and_names_reach_the_guest_whole_whether_utf8_or_not() {
    use bytes::Bytes;
    use spoa_host::spop::Arg;
    let agent = Agent::start(&artifact("fixtures/guest_batch.wasm"), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let echo = |name: &'static [u8]| {
        let mut msg = message(
            "echo",
            vec![("ip", TypedData::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))],
        );
        msg.args.push(Arg {
            name: Bytes::from_static(name),
            value: TypedData::String(Bytes::from_static(b"\xffvalue\x00")),
        });
        msg.args.push(Arg {
            name: Bytes::new(),
            value: TypedData::Binary(Bytes::from_static(&[0, 1, 2, 255])),
        });
        msg
    };
    let expected = |name: &str| {
        vec![
            Action::SetVar {
                scope: VarScope::Txn,
                name: Bytes::from_static(b"ip"),
                value: TypedData::Ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            },
            Action::SetVar {
                scope: VarScope::Txn,
                name: Bytes::copy_from_slice(name.as_bytes()),
                value: TypedData::String(Bytes::from_static(b"\xffvalue\x00")),
            },
            Action::SetVar {
                scope: VarScope::Txn,
                name: Bytes::from_static(b"arg2"),
                value: TypedData::Binary(Bytes::from_static(&[0, 1, 2, 255])),
            },
        ]
    };
    let cases: [(&'static [u8], &str); 2] = [(b"ua", "ua"), (b"u\xffa", "u\u{fffd}a")];
    for (frame_id, (name, seen)) in (1..).zip(cases) {
        client.send(&notify_frame(1, frame_id, vec![echo(name)]));
        assert_eq!(
            client.recv_ack().actions,
            expected(seen),
            "alone, name {name:?}"
        );
    }
    // One NOTIFY of two messages: one batch call (the fixture exports
    // `handle-messages`).
    for (frame_id, (name, seen)) in (10..).zip(cases) {
        client.send(&notify_frame(1, frame_id, vec![echo(name), echo(b"ua")]));
        let mut both = expected(seen);
        both.extend(expected("ua"));
        assert_eq!(client.recv_ack().actions, both, "in a batch, name {name:?}");
    }
}
