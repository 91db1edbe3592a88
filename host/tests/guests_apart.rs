//! Guests apart from the network: while four connections keep every guest
//! call looping to its deadline, health checks, new connections, `/metrics`,
//! other connections' messages and SIGTERM are still served.
//!
//! The deadline here is long (200 ms) so the bounds can be loose on a busy
//! CI machine and still tell the designs apart: a guest call that holds its
//! thread for the whole deadline (no yield every tick, or HELLOs handled on
//! the threads that run guests without yielding) makes a health check or
//! another connection's message wait ~200 ms or more; with the control plane
//! apart and calls yielding at every epoch tick they take about a tick.
//! The exact figures with the default 10 ms deadline are in BENCHMARKS.md
//! (`spoa-bench --spin 4 --healthchecks-per-sec 100`).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spoa_host::spop::Frame;
use support::agent::Agent;
use support::pki::{Pki, tls_client_config, tls_connect};
use support::spop_client::{
    SpopClient, check_client_ip, hello_frame, message, notify_frame, score_of,
};
use support::{free_port, hostile_guest, http};

const DEADLINE_MS: u64 = 200;

/// The tests that keep four guests spinning run one at a time: two of them
/// at once would measure each other's load on a 2-core machine, not the
/// agent (seen: 693 ms at p99 for the other connection).
static ONE_SPINNING_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spinning_alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_SPINNING_TEST
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Four connections that keep one `loop` message in flight each.
struct Spinners {
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start(addr: SocketAddr) -> Spinners {
        Spinners::start_with(move || SpopClient::connect(addr))
    }

    /// Four spinners, each on a client `connect` opens.
    fn start_with<S, C>(connect: C) -> Spinners
    where
        S: std::io::Read + std::io::Write,
        C: Fn() -> SpopClient<S> + Clone + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let threads = (0..4)
            .map(|id| {
                let (stop, acks, connect) = (stop.clone(), acks.clone(), connect.clone());
                std::thread::spawn(move || {
                    let mut client = connect();
                    client.hello("pipelining");
                    let mut frame_id = 1;
                    while !stop.load(Ordering::Relaxed) {
                        client.send(&notify_frame(id, frame_id, vec![message("loop", vec![])]));
                        match client.recv() {
                            Ok(Frame::Ack(_)) => acks.fetch_add(1, Ordering::Relaxed),
                            _ => return,
                        };
                        frame_id += 1;
                    }
                })
            })
            .collect();
        Spinners {
            stop,
            acks,
            threads,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.acks.load(Ordering::Relaxed)
    }
}

fn healthcheck(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut client = SpopClient::connect(addr);
    client.send(&hello_frame("2.0", 16380, "", true));
    match client.recv() {
        Ok(Frame::AgentHello(_)) => started.elapsed(),
        other => panic!("health check answered with {other:?}"),
    }
}

#[test]
fn spinning_guests_do_not_delay_the_network() {
    let _alone = spinning_alone();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let deadline = format!("{DEADLINE_MS}ms");
    let mut agent = Agent::start(
        &hostile_guest('A'),
        &[
            "--guest-timeout",
            &deadline,
            "--metrics-address",
            &metrics_addr,
            "--shutdown-timeout",
            "5s",
        ],
    );
    let spinners = Spinners::start(agent.addr());
    // Let every spinner get its first call going.
    std::thread::sleep(Duration::from_millis(3 * DEADLINE_MS));

    let checks: Vec<Duration> = (0..40)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            healthcheck(agent.addr())
        })
        .collect();
    let checks_p99 = percentile(checks, 99);

    let mut other = SpopClient::pipelined(agent.addr());
    let others: Vec<Duration> = (1..=40)
        .map(|frame_id| {
            let started = Instant::now();
            other.send(&notify_frame(
                9,
                frame_id,
                vec![check_client_ip(Ipv4Addr::new(192, 0, 2, 1))],
            ));
            let ack = other.recv_ack();
            assert!(score_of(&ack).is_some(), "the other connection is scored");
            started.elapsed()
        })
        .collect();
    let others_p99 = percentile(others, 99);

    let scrape_started = Instant::now();
    let metrics = http::scrape_metrics(metrics_port_addr(metrics_port));
    let scrape_took = scrape_started.elapsed();
    // Every kind's series exists from the start at 0: the spinning calls
    // must have made this one count.
    let timeouts = http::metric_value(
        &metrics,
        "spoa_guest_failures_total{guest=\"default\",kind=\"timeout\"}",
    );
    assert!(timeouts >= 1.0, "the looping calls timed out: {timeouts}");

    // SIGTERM while guests spin: every received NOTIFY is answered, then the
    // agent exits cleanly.
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(10));
    let spun = spinners.stop();
    let log = agent.log_text();

    assert!(spun >= 4, "spinners got their ACKs ({spun})");
    assert!(
        checks_p99 <= Duration::from_millis(50),
        "health checks waited {checks_p99:?} at p99 behind guests looping for {DEADLINE_MS} ms"
    );
    assert!(
        others_p99 <= Duration::from_millis(100),
        "another connection waited {others_p99:?} at p99"
    );
    assert!(
        scrape_took <= Duration::from_millis(100),
        "/metrics took {scrape_took:?}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM drained and exited:\n{log}"
    );
    eprintln!(
        "health check p99 {checks_p99:?}, other connection p99 {others_p99:?}, /metrics {scrape_took:?}"
    );
}

fn percentile(mut samples: Vec<Duration>, percent: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * percent).div_ceil(100) - 1]
}

/// A TLS health check as HAProxy's `check` over `ssl` makes it: connect,
/// handshake, HELLO with `healthcheck`, AGENT-HELLO.
fn tls_healthcheck(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut client = tls_connect(config, addr);
    client.send(&hello_frame("2.0", 16380, "", true));
    match client.recv() {
        Ok(Frame::AgentHello(_)) => started.elapsed(),
        other => panic!("TLS health check answered with {other:?}"),
    }
}

fn tls_healthchecks(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Vec<Duration> {
    (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            tls_healthcheck(config, addr)
        })
        .collect()
}

/// With mutual TLS, the handshake, HELLO and health checks run on the
/// control plane like plain TCP's: four connections whose guest calls loop
/// to their deadline leave TLS health checks where they were.
#[test]
fn spinning_guests_do_not_delay_tls_health_checks() {
    let _alone = spinning_alone();
    let pki = Pki::new();
    let deadline = format!("{DEADLINE_MS}ms");
    // One data-plane thread: with the handshake on the data plane, every
    // step of it waits a tick behind the spinning calls (measured: p50 +2.1
    // ms, p95 +4.4 ms); on the control plane it does not (+0.2 ms, -1.5 ms).
    let mut args = vec![
        "-n".to_string(),
        "1".to_string(),
        "--guest-timeout".to_string(),
        deadline,
    ];
    args.extend(pki.server_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&hostile_guest('A'), &args);
    let config = tls_client_config(&pki);
    let addr = agent.addr();
    let quiet = tls_healthchecks(&config, addr);
    let spinners = Spinners::start_with({
        let config = config.clone();
        move || tls_connect(&config, addr)
    });
    std::thread::sleep(Duration::from_millis(3 * DEADLINE_MS));
    let busy = tls_healthchecks(&config, addr);
    let spun = spinners.stop();
    assert!(spun >= 4, "the TLS spinners got their ACKs ({spun})");
    let (quiet_p50, quiet_p95) = (percentile(quiet.clone(), 50), percentile(quiet, 95));
    let (busy_p50, busy_p95) = (percentile(busy.clone(), 50), percentile(busy, 95));
    eprintln!(
        "TLS health checks: quiet p50 {quiet_p50:?} p95 {quiet_p95:?}; \
         4 guests spinning p50 {busy_p50:?} p95 {busy_p95:?}"
    );
    // The bounds: 1 ms at p50, as the design promises; 3 ms at p95 (not
    // 2), room for a CI machine whose two cores also run the test's
    // client threads.
    assert!(
        busy_p50 <= quiet_p50 + Duration::from_millis(1),
        "TLS health checks p50 {quiet_p50:?} quiet, {busy_p50:?} with guests spinning"
    );
    assert!(
        busy_p95 <= quiet_p95 + Duration::from_millis(3),
        "TLS health checks p95 {quiet_p95:?} quiet, {busy_p95:?} with guests spinning"
    );
}

fn metrics_port_addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A NOTIFY of k looping messages costs k deadlines of its own connection's
/// time, and nobody else's: each call has its own deadline.
#[test]
fn deadline_is_per_call_not_per_notify() {
    let agent = Agent::start(&hostile_guest('A'), &["--guest-timeout", "50ms"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let started = Instant::now();
    client.send(&notify_frame(
        1,
        1,
        vec![
            message("loop", vec![]),
            message("loop", vec![]),
            message("loop", vec![]),
            check_client_ip(Ipv4Addr::new(192, 0, 2, 9)),
        ],
    ));
    let ack = client.recv_ack();
    let took = started.elapsed();
    assert!(score_of(&ack).is_some(), "the last message still answered");
    assert!(
        took >= Duration::from_millis(150),
        "three calls each ran to their own 50 ms deadline, not a shared one ({took:?})"
    );
    // The warnings reach the test through a pipe: wait for them.
    assert!(
        support::eventually(Duration::from_secs(5), || {
            agent.log_text().matches("time budget").count() >= 3
        }),
        "{}",
        agent.log_text()
    );
}

/// Scheduling policy (0 = SCHED_OTHER, 2 = SCHED_RR) of each thread of
/// `pid`, by thread name, from /proc (field 41 of `stat`).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the agent's threads");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            // Fields from 3 on follow the name; the policy is field 41.
            let policy = rest.split_whitespace().nth(41 - 3)?.parse().ok()?;
            Some((name, policy))
        })
        .collect()
}

/// Health checks never wait for a time slice behind data-plane threads that
/// run guests: the control plane and the epoch ticker are real-time (when
/// the system grants it, else the agent says so), and no thread that runs
/// guest code ever is.
#[test]
fn only_the_control_plane_runs_at_real_time_priority() {
    let agent = Agent::start(&support::iprep_guest(), &["-n", "2"]);
    let policies = thread_policies(agent.pid());
    let control_is_realtime = policies
        .iter()
        .any(|(name, policy)| name == "spoa-control" && *policy == 2);
    assert!(
        control_is_realtime || agent.log_text().contains("SCHED_RR refused"),
        "{policies:?}\n{}",
        agent.log_text()
    );
    // The epoch ticker too (ticks on time bound looping guests); every
    // other thread — the data plane, file watchers, the store's sweeper —
    // runs at the normal policy.
    let realtime_threads = ["spoa-control", "spoa-host", "epoch-ticker"];
    if control_is_realtime {
        assert!(
            policies
                .iter()
                .any(|(name, policy)| name == "epoch-ticker" && *policy == 2),
            "{policies:?}"
        );
    }
    let others: Vec<_> = policies
        .iter()
        .filter(|(name, _)| !realtime_threads.contains(&name.as_str()))
        .collect();
    assert!(
        others.iter().any(|(name, _)| name == "spoa-data"),
        "{policies:?}"
    );
    assert!(
        others.iter().all(|(_, policy)| *policy == 0),
        "{policies:?}"
    );

    let normal = Agent::start(
        &support::iprep_guest(),
        &["-n", "2", "--control-priority", "normal"],
    );
    let policies = thread_policies(normal.pid());
    assert!(
        policies.iter().all(|(_, policy)| *policy == 0),
        "{policies:?}"
    );
}
