//! The data plane's threads and the connections they serve, on the real
//! agent: connections under a light load end up on one worker, a saturated
//! worker hands one of its connections to an idle one (TLS sessions too),
//! and `--no-rebalance` keeps them where they were placed.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spoa_host::spop::Ack;
use support::agent::Agent;
use support::http::{metric_value, scrape_metrics};
use support::pki::{Pki, tls_client_config, tls_connect};
use support::spop_client::{SpopClient, check_client_ip, notify_frame, set_vars};
use support::{artifact, eventually, iprep_guest};

const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// Whether `ack` sets `ip_score` (guest-iprep sets it alone, the examples
/// beside `ip_blocked`).
fn scored(ack: &Ack) -> bool {
    set_vars(ack).any(|(name, value)| name == "ip_score" && value.as_i64().is_some())
}

/// Sends NOTIFY `id` and checks its ACK carries a score.
fn one_notify<S: std::io::Read + std::io::Write>(client: &mut SpopClient<S>, id: u64) {
    client.send(&notify_frame(id, 1, vec![check_client_ip(IP)]));
    let ack = client.recv_ack();
    assert_eq!(ack.stream_id, id, "the ACK answers this NOTIFY");
    assert!(scored(&ack), "an ACK without a score: {ack:?}");
}

/// One NOTIFY every 5 ms on each of `clients` for `run`; how many.
fn light_load<S: std::io::Read + std::io::Write>(
    clients: &mut [SpopClient<S>],
    run: Duration,
) -> u64 {
    let started = Instant::now();
    let mut id = 0;
    while started.elapsed() < run {
        for client in clients.iter_mut() {
            id += 1;
            one_notify(client, id);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    id
}

/// Keeps 64 NOTIFYs in flight on `client` until `stop` (a worker serving
/// two such connections of a slow guest always has work waiting); every
/// ACK must carry a score. Returns how many were answered.
fn pipeline(mut client: SpopClient, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut sent = 0u64;
        for _ in 0..64 {
            sent += 1;
            client.send(&notify_frame(sent, 1, vec![check_client_ip(IP)]));
        }
        let mut answered = 0;
        while answered < sent {
            let ack = client.recv_ack();
            assert!(scored(&ack), "an ACK without a score: {ack:?}");
            answered += 1;
            if !stop.load(Ordering::Relaxed) {
                sent += 1;
                client.send(&notify_frame(sent, 1, vec![check_client_ip(IP)]));
            }
        }
        answered
    })
}

/// Connections on each of the two workers.
fn workers(page: &str) -> [f64; 2] {
    [0, 1].map(|worker| {
        metric_value(
            page,
            &format!("spoa_worker_connections{{worker=\"{worker}\"}}"),
        )
    })
}

fn sorted(mut shares: [f64; 2]) -> [f64; 2] {
    shares.sort_by(f64::total_cmp);
    shares
}

/// An agent with two workers and `/metrics`, serving `module`.
fn start(module: &std::path::Path, extra: &[&str]) -> (Agent, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let metrics_flag = metrics.to_string();
    let mut args = vec!["--workers", "2", "--metrics-address", &metrics_flag];
    args.extend_from_slice(extra);
    (Agent::start(module, &args), metrics)
}

/// Two connections placed one per worker, then under a light load for 3 s:
/// both end up on one worker, and still carry NOTIFYs after.
fn assert_merged_under_light_load<S: std::io::Read + std::io::Write>(
    clients: &mut [SpopClient<S>],
    metrics: SocketAddr,
) {
    let placed = workers(&scrape_metrics(metrics));
    assert_eq!(placed, [1.0, 1.0], "placed one per worker");
    let sent = light_load(clients, Duration::from_secs(3));
    assert!(sent > 100, "only {sent} NOTIFYs in 3 s");
    let page = scrape_metrics(metrics);
    assert_eq!(
        sorted(workers(&page)),
        [0.0, 2.0],
        "both on one worker:\n{page}"
    );
    let moves = metric_value(&page, "spoa_connection_moves_total");
    assert!(moves >= 1.0, "{page}");
    light_load(clients, Duration::from_millis(600));
}

#[test]
fn connections_under_a_light_load_move_onto_one_worker() {
    let (agent, metrics) = start(&iprep_guest(), &[]);
    let mut clients: Vec<_> = (0..2)
        .map(|_| SpopClient::pipelined(agent.addr()))
        .collect();
    assert_merged_under_light_load(&mut clients, metrics);
}

#[test]
fn tls_connections_move_with_their_sessions() {
    let pki = Pki::new();
    let tls_args = pki.server_args();
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let (agent, metrics) = start(&iprep_guest(), &tls_args);
    let config = tls_client_config(&pki);
    let mut clients: Vec<_> = (0..2)
        .map(|_| {
            let mut client = tls_connect(&config, agent.addr());
            client.hello("pipelining");
            client
        })
        .collect();
    assert_merged_under_light_load(&mut clients, metrics);
}

#[test]
fn with_no_rebalance_connections_stay_where_they_were_placed() {
    let (agent, metrics) = start(&iprep_guest(), &["--no-rebalance"]);
    let mut clients: Vec<_> = (0..2)
        .map(|_| SpopClient::pipelined(agent.addr()))
        .collect();
    let sent = light_load(&mut clients, Duration::from_secs(2));
    assert!(sent > 100, "only {sent} NOTIFYs in 2 s");
    let page = scrape_metrics(metrics);
    assert_eq!(
        workers(&page),
        [1.0, 1.0],
        "one connection per worker:\n{page}"
    );
    assert_eq!(
        metric_value(&page, "spoa_connection_moves_total"),
        0.0,
        "{page}"
    );
}

#[test]
fn a_saturated_worker_hands_a_connection_to_an_idle_one() {
    // The Python example: its messages cost tens of microseconds each.
    let module = artifact("examples/iprep_python.wasm");
    let (agent, metrics) = start(
        &module,
        &["--guest-memory", "32MiB", "--guest-timeout", "200ms"],
    );
    let mut clients: Vec<_> = (0..2)
        .map(|_| SpopClient::pipelined(agent.addr()))
        .collect();
    // Light first: both connections end up on one worker.
    let merged = eventually(Duration::from_secs(10), || {
        light_load(&mut clients, Duration::from_millis(500));
        sorted(workers(&scrape_metrics(metrics))) == [0.0, 2.0]
    });
    assert!(
        merged,
        "not merged while light:\n{}",
        scrape_metrics(metrics)
    );
    // Then the same two saturate that worker: one goes back to the idle one.
    let stop = Arc::new(AtomicBool::new(false));
    let drivers: Vec<_> = clients
        .into_iter()
        .map(|c| pipeline(c, stop.clone()))
        .collect();
    let spread = eventually(Duration::from_secs(15), || {
        workers(&scrape_metrics(metrics)) == [1.0, 1.0]
    });
    stop.store(true, Ordering::Relaxed);
    let answered: u64 = drivers.into_iter().map(|d| d.join().expect("driver")).sum();
    let page = scrape_metrics(metrics);
    assert!(
        spread,
        "still on one worker after 15 s of saturation:\n{page}"
    );
    assert!(answered > 32, "{answered} answered");
    assert!(
        metric_value(&page, "spoa_connection_moves_total") >= 2.0,
        "{page}"
    );
}
