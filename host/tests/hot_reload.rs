//! Hot reload under continuous pipelined load: swap guest A for guest B, then
//! a broken module, then back — with zero lost or failed messages.

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoa_host::spop::{Action, TypedData};
use support::agent::{Agent, run_host};
use support::haproxy::{self, haproxy_binary};
use support::spop_client::{SpopClient, encoded, message, notify_frame};
use support::{eventually, hostile_guest, http};

/// What the load generator saw.
#[derive(Default)]
struct Observed {
    /// (when, version, connection) of every answer, in arrival order.
    answers: Vec<(Instant, String, usize)>,
    failures: Vec<String>,
}

/// Keeps `depth` NOTIFYs (`which`) in flight on one connection until `stop`.
fn run_load(
    connection: usize,
    addr: std::net::SocketAddr,
    depth: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Observed>>,
) -> u64 {
    let mut client = SpopClient::pipelined(addr);
    let mut next = 1u64;
    let mut in_flight = 0u64;
    let mut sent = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            let mut batch = Vec::new();
            while in_flight < depth {
                batch.extend(encoded(&notify_frame(
                    1,
                    next,
                    vec![message("which", vec![])],
                )));
                next += 1;
                in_flight += 1;
                sent += 1;
            }
            client.send_raw(&batch);
        }
        if in_flight == 0 {
            return sent;
        }
        let ack = match client.recv() {
            Ok(spoa_host::spop::Frame::Ack(ack)) => ack,
            other => {
                seen.lock()
                    .expect("lock")
                    .failures
                    .push(format!("{other:?}"));
                return sent;
            }
        };
        in_flight -= 1;
        let version = match ack.actions.as_slice() {
            [
                Action::SetVar {
                    value: TypedData::String(v),
                    ..
                },
            ] => String::from_utf8_lossy(v).into_owned(),
            other => {
                seen.lock()
                    .expect("lock")
                    .failures
                    .push(format!("frame {}: {other:?}", ack.frame_id));
                continue;
            }
        };
        seen.lock()
            .expect("lock")
            .answers
            .push((Instant::now(), version, connection));
    }
}

/// Replaces `dst` the way deploy tools do: write a temporary file, rename.
fn replace_atomically(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("tmp");
    std::fs::copy(src, &tmp).expect("copy");
    std::fs::rename(&tmp, dst).expect("rename");
}

/// Overwrites `dst` in place, as an editor or `cp` does.
fn replace_in_place(bytes: &[u8], dst: &Path) {
    std::fs::write(dst, bytes).expect("write");
}

/// Waits until the load sees `version` answers after `since`; returns the delay.
fn switch_delay(seen: &Mutex<Observed>, version: &str, since: Instant) -> Option<Duration> {
    let mut found = None;
    eventually(Duration::from_secs(3), || {
        let seen = seen.lock().expect("lock");
        found = seen
            .answers
            .iter()
            .find(|(at, v, _)| *at >= since && v == version)
            .map(|(at, _, _)| *at - since);
        found.is_some()
    });
    found
}

#[test]
fn swap_under_pipelined_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("handler.wasm");
    std::fs::copy(hostile_guest('A'), &module).expect("copy A");
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let mut agent = Agent::start(
        &module,
        &[
            "--guest-timeout",
            "200ms",
            "--metrics-address",
            &metrics_addr.to_string(),
        ],
    );
    let reloads = |result: &str| {
        support::http::metric_value(
            &support::http::scrape_metrics(metrics_addr),
            &format!("spoa_module_reloads_total{{guest=\"default\",result=\"{result}\"}}"),
        )
    };

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Observed::default()));
    let loaders: Vec<_> = (0..4)
        .map(|connection| {
            let (stop, seen, addr) = (stop.clone(), seen.clone(), agent.addr());
            std::thread::spawn(move || run_load(connection, addr, 16, stop, seen))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // A → B by atomic rename.
    let swapped = Instant::now();
    replace_atomically(&hostile_guest('B'), &module);
    let to_b = switch_delay(&seen, "B", swapped).expect("answers switch to B");
    eprintln!("A → B (rename): first answer from B after {to_b:?}");
    assert!(to_b < Duration::from_secs(1), "{to_b:?}");

    // A broken module: rejected, B keeps answering.
    let broken = Instant::now();
    replace_in_place(b"\0asm\x0d\0\x01\0 definitely not a component", &module);
    assert!(
        eventually(Duration::from_secs(3), || agent
            .log_text()
            .contains("reload rejected")),
        "{}",
        agent.log_text()
    );
    std::thread::sleep(Duration::from_millis(700));
    {
        let seen = seen.lock().expect("lock");
        // A batch dispatched on A just before the swap may still answer
        // after it on a loaded machine; half a second on, only B answers.
        let settled = broken + Duration::from_millis(500);
        let after: Vec<_> = seen
            .answers
            .iter()
            .filter(|(at, _, _)| *at > settled)
            .collect();
        assert!(!after.is_empty(), "no answers after the broken module");
        assert!(
            after.iter().all(|(_, v, _)| v == "B"),
            "a broken module must not serve: {:?}",
            after
                .iter()
                .map(|(_, v, _)| v)
                .collect::<std::collections::HashSet<_>>()
        );
    }

    // Back to A by in-place write.
    let back = Instant::now();
    replace_in_place(&std::fs::read(hostile_guest('A')).expect("read A"), &module);
    let to_a = switch_delay(&seen, "A", back).expect("answers switch back to A");
    eprintln!("B → A (in-place write): first answer from A after {to_a:?}");
    assert!(to_a < Duration::from_secs(1), "{to_a:?}");

    // SIGHUP with unchanged bytes: not swapped (no new "ok" reload, one
    // "unchanged"), still serving.
    assert_eq!(reloads("ok"), 2.0, "A → B and B → A");
    agent.signal("HUP");
    assert!(
        eventually(Duration::from_secs(3), || reloads("unchanged") == 1.0),
        "{}",
        agent.log_text()
    );
    assert_eq!(reloads("ok"), 2.0, "an unchanged module is not swapped");
    std::thread::sleep(Duration::from_millis(200));

    stop.store(true, Ordering::Relaxed);
    let sent: u64 = loaders.into_iter().map(|h| h.join().expect("loader")).sum();
    let seen = seen.lock().expect("lock");
    eprintln!(
        "messages served during the reload test: {} of {sent}",
        seen.answers.len()
    );
    assert!(
        seen.failures.is_empty(),
        "failed messages: {:?}",
        &seen.failures[..seen.failures.len().min(5)]
    );
    assert_eq!(seen.answers.len() as u64, sent, "every message answered");
    assert!(agent.is_alive());
    assert!(
        agent
            .log_text()
            .contains("module, configuration and data unchanged; not swapping"),
        "{}",
        agent.log_text()
    );
    // On each connection, answers go A…A B…B A…A: a NOTIFY handled after
    // the swap never gets the old module, and nothing flips back and forth.
    for connection in 0..4 {
        let mut versions: Vec<&str> = seen
            .answers
            .iter()
            .filter(|(_, _, c)| *c == connection)
            .map(|(_, v, _)| v.as_str())
            .collect();
        versions.dedup();
        assert_eq!(versions, ["A", "B", "A"], "connection {connection}");
    }
}

#[test]
fn sighup_reloads_a_module_replaced_without_watching() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("handler.wasm");
    std::fs::copy(hostile_guest('A'), &module).expect("copy A");
    let agent = Agent::start(&module, &["--no-watch"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let which = |client: &mut SpopClient, id| {
        client.send(&notify_frame(1, id, vec![message("which", vec![])]));
        format!("{:?}", client.recv_ack().actions)
    };
    assert!(
        which(&mut client, 1).contains(r#"String(b"A")"#),
        "version A serves first"
    );
    replace_atomically(&hostile_guest('B'), &module);
    std::thread::sleep(Duration::from_millis(300));
    // Not watched: still A.
    client.send(&notify_frame(
        1,
        3,
        vec![support::spop_client::check_client_ip(Ipv4Addr::LOCALHOST)],
    ));
    assert_eq!(support::spop_client::score_of(&client.recv_ack()), Some(42));
    agent.signal("HUP");
    assert!(eventually(Duration::from_secs(3), || {
        client.send(&notify_frame(
            1,
            4,
            vec![support::spop_client::check_client_ip(Ipv4Addr::LOCALHOST)],
        ));
        support::spop_client::score_of(&client.recv_ack()) == Some(58)
    }));
}

#[test]
fn check_subcommand_validates_like_a_reload() {
    let good = run_host(&["check", hostile_guest('B').to_str().expect("utf-8")]);
    assert!(good.status.success(), "{good:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"not wasm").expect("write");
    let output = run_host(&["check", bad.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rejected (cause: compile)"));
}

#[test]
fn swap_through_haproxy_under_traffic() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("handler.wasm");
    std::fs::copy(hostile_guest('A'), &module).expect("copy A");
    let agent = Agent::start(&module, &[]);
    // Threshold 0: nothing is denied, every response carries the score.
    let proxy = haproxy::start(&binary, &[agent.addr()], 0, |c| c);
    assert!(
        eventually(Duration::from_secs(10), || {
            http::get(proxy.http, "/")
                .map(|r| r.header("X-IP-Score") == Some("42"))
                .unwrap_or(false)
        }),
        "{}",
        proxy.log_text()
    );

    let traffic = http::Traffic::start(proxy.http, |response| match response {
        Ok(r) => r.header("X-IP-Score").unwrap_or("missing").to_string(),
        Err(e) => format!("error: {e}"),
    });
    std::thread::sleep(Duration::from_millis(300));
    replace_atomically(&hostile_guest('B'), &module);
    assert!(eventually(Duration::from_secs(3), || {
        traffic.last().as_deref() == Some("58")
    }));
    std::thread::sleep(Duration::from_millis(300));
    let scores: Vec<String> = traffic.stop().into_iter().map(|(_, s)| s).collect();
    let bad: Vec<_> = scores.iter().filter(|s| *s != "42" && *s != "58").collect();
    eprintln!(
        "requests through HAProxy during the reload: {}",
        scores.len()
    );
    assert!(bad.is_empty(), "requests without a score: {bad:?}");
    assert!(scores.iter().any(|s| s == "58"));
}
