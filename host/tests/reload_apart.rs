//! Reload work off the data plane: a guest's files are read and hashed
//! once, on a blocking thread, and compiled (or read from the module cache)
//! and linked there too; only the smoke call, guest code, runs on the data
//! plane. Alone in its test binary: it measures another guest's latency,
//! which tests running beside it would disturb.

mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::agent::IPREP_TABLE;
use support::spop_client::{SpopClient, notify_frame};
use support::{eventually, hostile_guest, http};

/// Keeps 16 `check-client-ip` NOTIFYs in flight on one connection until
/// `stop`; returns each one's round trip.
fn timed_load(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut client = SpopClient::pipelined(addr);
    let mut sent = std::collections::HashMap::new();
    let mut next = 1u64;
    let mut send = |client: &mut SpopClient, sent: &mut std::collections::HashMap<u64, Instant>| {
        let frame = notify_frame(
            1,
            next,
            vec![support::spop_client::check_client_ip(Ipv4Addr::new(
                192, 0, 2, 1,
            ))],
        );
        sent.insert(next, Instant::now());
        client.send(&frame);
        next += 1;
    };
    for _ in 0..16 {
        send(&mut client, &mut sent);
    }
    let mut took = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let ack = client.recv_ack();
        if let Some(at) = sent.remove(&ack.frame_id) {
            took.push(at.elapsed());
        }
        send(&mut client, &mut sent);
    }
    took
}

/// p99 of another guest's round trips over `window`, under 4 × 16 in flight,
/// while `meanwhile` runs.
fn other_guest_p99(
    addr: std::net::SocketAddr,
    window: Duration,
    meanwhile: impl FnOnce(),
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || timed_load(addr, stop))
        })
        .collect();
    let started = Instant::now();
    meanwhile();
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = loads
        .into_iter()
        .flat_map(|load| load.join().expect("load thread"))
        .collect();
    all.sort();
    all[(all.len() * 99).div_ceil(100) - 1]
}

/// A Python guest's module (19 MB) is read, hashed, read from the module
/// cache and linked on blocking threads, once per reload: reloading it
/// again and again leaves another guest's p99 about where it was, even on
/// a single data-plane thread.
#[test]
fn reloading_a_19_mb_guest_leaves_another_guests_latency_alone() {
    let python = support::artifact("examples/iprep_python.wasm");
    let bytes = std::fs::read(&python).expect("the Python example (make examples)");
    assert!(bytes.len() > 15 << 20, "{} bytes", bytes.len());
    // Version B: the same component with a custom section appended, so the
    // two differ and both compile once (then come from the module cache).
    let mut version_b = bytes.clone();
    let payload = b"\x07version-b";
    version_b.push(0);
    version_b.push(payload.len() as u8);
    version_b.extend_from_slice(payload);
    let dir = tempfile::tempdir().expect("temp dir");
    let versions = [dir.path().join("a.wasm"), dir.path().join("b.wasm")];
    std::fs::write(&versions[0], &bytes).expect("a.wasm");
    std::fs::write(&versions[1], &version_b).expect("b.wasm");
    std::fs::write(dir.path().join("blocklist.txt"), "203.0.113.0/24\n").expect("list");
    support::install(&hostile_guest('A'), &dir.path().join("iprep.wasm"));
    support::install(&versions[0], &dir.path().join("big.wasm"));
    let big = r#"
[[guest]]
name = "big"
module = "big.wasm"
messages = ["check-client-ip-big"]
memory = "32MiB"
timeout = "200ms"
config = { threshold = 30 }
ip-tables = { blocklist = "blocklist.txt" }
"#;
    let (agent, metrics) =
        support::agent::start_config(dir.path(), &format!("{IPREP_TABLE}{big}"), &["-n", "1"]);
    let reloads_ok = || {
        http::metric_value(
            &http::scrape_metrics(metrics),
            "spoa_module_reloads_total{guest=\"big\",result=\"ok\"}",
        )
    };
    let mut swaps = 0.0;
    let mut swap = |to: usize| {
        support::install(&versions[to], &dir.path().join("big.wasm"));
        swaps += 1.0;
        let want = swaps;
        assert!(
            eventually(Duration::from_secs(120), || reloads_ok() >= want),
            "reload {want} never served:\n{}",
            agent.log_text()
        );
    };
    // Both versions compiled once, before anything is measured.
    swap(1);
    swap(0);

    let quiet = other_guest_p99(agent.addr(), Duration::from_secs(3), || {});
    let reloading = other_guest_p99(agent.addr(), Duration::from_secs(3), || {
        for round in 0..6 {
            swap(1 - round % 2);
        }
    });
    eprintln!(
        "the other guest's p99: {quiet:?} quiet, {reloading:?} while a 19 MB guest reloads 6 times"
    );
    // Measured on 2 cores (one data-plane thread, as here): +0.7 to +1.3 ms,
    // the hashing and cache reads sharing the cores; with the reads, hashes
    // and linking on the data plane, +2.0 to +2.5 ms. The bound leaves a
    // busy CI machine half a millisecond over the 1 ms aimed at.
    assert!(
        reloading <= quiet + Duration::from_micros(1500),
        "another guest's p99 went from {quiet:?} to {reloading:?} while a 19 MB guest reloaded"
    );
}
