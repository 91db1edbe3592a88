//! Shared state for guests (`wasi:keyvalue` + `spoa:agent/expiry`), with the
//! rate-limit guest over real SPOP connections to a real `spoa-host`: the
//! in-process store (shared, bounded, surviving reloads), bucket grants, and
//! Redis shared by two agents, lost and restored, and a store that never
//! answers.

mod support;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spoa_host::spop::{Ack, Action, TypedData, VarScope};
use support::agent::Agent;
use support::http::{metric_value, scrape_metrics};
use support::redis::RedisServer;
use support::spop_client::{Session, SpopClient, check_client_ip};
use support::{artifact, eventually, free_port};

fn ratelimit_guest() -> PathBuf {
    artifact("guest_ratelimit.wasm")
}

/// What the rate-limit guest answered for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rate {
    score: Option<i64>,
    count: Option<i64>,
    blocked: bool,
}

fn rates(ack: &Ack) -> Vec<Rate> {
    // One message per NOTIFY unless sent in a batch: split actions by the
    // `ip_score` each message starts with.
    let mut out: Vec<Rate> = Vec::new();
    for action in &ack.actions {
        let Action::SetVar {
            scope: VarScope::Txn,
            name,
            value,
        } = action
        else {
            panic!("unexpected action {action:?}");
        };
        match &name[..] {
            b"ip_score" => out.push(Rate {
                score: value.as_i64(),
                ..Rate::default()
            }),
            b"rate_count" => out.last_mut().expect("count after score").count = value.as_i64(),
            b"blocked" => {
                out.last_mut().expect("blocked after score").blocked =
                    matches!(value, TypedData::Bool(true))
            }
            other => panic!("unexpected variable {}", String::from_utf8_lossy(other)),
        }
    }
    out
}

/// A session asking the guest under test.
struct Client(Session);

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client(Session::connect(addr))
    }

    fn ask_many(&mut self, ips: &[Ipv4Addr]) -> Vec<Rate> {
        let messages = ips.iter().map(|&ip| check_client_ip(ip)).collect();
        let ack = self.0.notify(messages);
        let answers = rates(&ack);
        assert_eq!(answers.len(), ips.len(), "{ack:?}");
        answers
    }

    fn ask(&mut self, ip: Ipv4Addr) -> Rate {
        self.ask_many(&[ip])[0]
    }
}

fn metrics_address() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

fn start(module: &Path, metrics: SocketAddr, extra: &[&str]) -> Agent {
    let mut args = vec!["--metrics-address".to_string(), metrics.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(module, &args)
}

/// What the guest answers when it cannot count: a neutral score.
const FALLBACK: Rate = Rate {
    score: Some(50),
    count: None,
    blocked: false,
};

const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

#[test]
fn the_in_process_store_is_shared_by_every_connection_worker_and_instance_and_survives_reloads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rate.conf");
    support::write_atomically(&config, "limit = 1000\nwindow = 10m\n");
    let metrics = metrics_address();
    // Two workers and a fresh instance per message: no guest memory can
    // carry a count from one message to the next.
    let agent = start(
        &ratelimit_guest(),
        metrics,
        &[
            "-n",
            "2",
            "--fresh-instance",
            "--guest-config-file",
            config.to_str().expect("utf-8 path"),
        ],
    );
    let addr = agent.addr();
    let counts: Vec<i64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    (0..25)
                        .map(|_| client.ask(IP).count.expect("a count"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("client thread"))
            .collect()
    });
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=100).collect::<Vec<i64>>(),
        "every increment counted once"
    );

    // A new version of the guest (its configuration changed: limit 2000)
    // serves with the same state.
    support::write_atomically(&config, "limit = 2000\nwindow = 10m\n");
    let mut client = Client::connect(addr);
    let scored_by_new_limit = |rate: Rate| {
        let count = rate.count.expect("a count");
        count > 100 && rate.score == Some((2000 - count) * 100 / 2000)
    };
    assert!(
        eventually(Duration::from_secs(10), || scored_by_new_limit(
            client.ask(IP)
        )),
        "the reloaded guest did not take over:\n{}",
        agent.log_text()
    );
    let text = scrape_metrics(metrics);
    assert_eq!(metric_value(&text, "spoa_kv_entries"), 1.0);
    assert!(metric_value(&text, "spoa_kv_bytes") > 0.0);
}

#[test]
fn the_in_process_store_stays_within_its_limit_by_evicting_the_least_recently_used() {
    let metrics = metrics_address();
    let agent = start(
        &ratelimit_guest(),
        metrics,
        &["--kv-memory", "64KiB", "--guest-config", "limit=1000"],
    );
    let mut client = Client::connect(agent.addr());
    let ips: Vec<Ipv4Addr> = (0..3000u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect();
    for chunk in ips.chunks(100) {
        for answer in client.ask_many(chunk) {
            assert_eq!(answer.count, Some(1), "{answer:?}");
        }
    }
    let text = scrape_metrics(metrics);
    let (bytes, limit) = (
        metric_value(&text, "spoa_kv_bytes"),
        metric_value(&text, "spoa_kv_limit_bytes"),
    );
    assert_eq!(limit, 65536.0);
    assert!(bytes > 0.0 && bytes <= limit, "{bytes} of {limit}");
    assert!(
        metric_value(&text, "spoa_kv_evictions_total") > 1000.0,
        "{text}"
    );
    // The newest address is remembered, the oldest was evicted.
    assert_eq!(client.ask(ips[2999]).count, Some(2));
    assert_eq!(client.ask(ips[0]).count, Some(1));
}

#[test]
fn a_guest_opens_only_the_buckets_it_is_granted() {
    let denied = start(
        &ratelimit_guest(),
        metrics_address(),
        &["--guest-config", "bucket=private"],
    );
    let answer = Client::connect(denied.addr()).ask(IP);
    assert_eq!(answer, FALLBACK, "not granted: the guest's fallback");
    let granted = start(
        &ratelimit_guest(),
        metrics_address(),
        &["--guest-config", "bucket=private", "--kv-bucket", "private"],
    );
    assert_eq!(Client::connect(granted.addr()).ask(IP).count, Some(1));
}

#[test]
fn two_agents_share_state_through_redis_and_keep_serving_while_it_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    // A generous budget: a Redis round trip on a loaded 2-core test machine
    // can pass the default 10 ms, and this test is about sharing.
    let guest_args = [
        "--kv",
        url.as_str(),
        "--guest-config",
        "limit=5",
        "--guest-config",
        "ban=1m",
        "--guest-timeout",
        "200ms",
    ];
    let (metrics_a, metrics_b) = (metrics_address(), metrics_address());
    let agent_a = start(&ratelimit_guest(), metrics_a, &guest_args);
    let agent_b = start(&ratelimit_guest(), metrics_b, &guest_args);
    let (mut a, mut b) = (
        Client::connect(agent_a.addr()),
        Client::connect(agent_b.addr()),
    );
    let counts: Vec<Option<i64>> = (0..6)
        .map(|i| if i % 2 == 0 { a.ask(IP) } else { b.ask(IP) }.count)
        .collect();
    assert_eq!(counts, (1..=6).map(Some).collect::<Vec<_>>());
    // Over the limit on B; remembered on both.
    assert!(a.ask(IP).blocked);
    assert!(b.ask(IP).blocked);
    assert_eq!(redis.cli(&["EXISTS", "spoa:default:ban:192.0.2.10"]), "1");

    redis.kill();
    for client in [&mut a, &mut b] {
        for _ in 0..3 {
            let started = Instant::now();
            let answer = client.ask(IP);
            assert_eq!(answer, FALLBACK, "Redis down: the guest's fallback score");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }
    let text = scrape_metrics(metrics_a);
    assert!(metric_value(&text, "spoa_kv_failures_total{cause=\"unavailable\"}") >= 1.0);

    // Back (empty, as after a crash): shared state works again on both.
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || a.ask(IP).count.is_some()),
        "agent A did not reconnect:\n{}",
        agent_a.log_text()
    );
    let first = a.ask(IP).count.expect("a count");
    assert!(
        eventually(Duration::from_secs(10), || b
            .ask(IP)
            .count
            .is_some_and(|n| n > first)),
        "agent B does not share the restored store:\n{}",
        agent_b.log_text()
    );
    let text = scrape_metrics(metrics_a);
    assert!(
        metric_value(&text, "spoa_kv_reconnects_total") >= 1.0,
        "{text}"
    );
}

#[test]
fn a_store_that_hangs_costs_the_calls_in_flight_their_deadline_then_fails_fast() {
    // Accepts connections and reads, never replies.
    let silent = TcpListener::bind("127.0.0.1:0").expect("binding");
    let silent_addr = silent.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in silent.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let url = format!("redis://{silent_addr}");
    let metrics = metrics_address();
    let agent = start(
        &ratelimit_guest(),
        metrics,
        &["--kv", &url, "--guest-timeout", "20ms"],
    );
    let addr = agent.addr();
    let mut client = Client::connect(addr);
    // The first call waits for its deadline, then the guest answers its
    // fallback; the calls right after it fail at once.
    let started = Instant::now();
    assert_eq!(client.ask(IP).score, Some(50));
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(15), "{first:?}");
    let mut slow = 0;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(client.ask(IP).score, Some(50));
        if started.elapsed() >= Duration::from_millis(15) {
            slow += 1;
        }
    }
    assert!(slow <= 2, "{slow} of 20 calls waited for the hung store");

    // Health checks are answered while calls keep hitting the hung store.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut busy = Client::connect(addr);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(busy.ask(IP).score, Some(50));
            }
        });
        for _ in 0..10 {
            let started = Instant::now();
            let _probe = SpopClient::pipelined(addr);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let text = scrape_metrics(metrics);
    assert!(
        metric_value(&text, "spoa_kv_failures_total{cause=\"timeout\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric_value(&text, "spoa_kv_failures_total{cause=\"unavailable\"}") >= 1.0,
        "{text}"
    );
}

#[test]
fn both_backends_answer_every_operation_alike() {
    use spoa_host::kv::{KvBackendSpec, KvStore};
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let memory = KvStore::open(&KvBackendSpec::Memory {
            limit_bytes: 1 << 20,
        })
        .expect("memory store");
        let remote = KvStore::open(&KvBackendSpec::Redis {
            url: redis.url(),
            prefix: "t:".into(),
        })
        .expect("redis store");
        let (local, over_redis) = (transcript(&memory).await, transcript(&remote).await);
        for (a, b) in local.iter().zip(&over_redis) {
            assert_eq!(a, b, "in process vs Redis");
        }
        assert_eq!(local.len(), over_redis.len());
    });
}

/// Every operation a guest can make, with its outcome as text (errors by
/// cause only: their wording names the backend).
async fn transcript(store: &spoa_host::kv::KvStore) -> Vec<String> {
    fn show<T: std::fmt::Debug>(step: &str, result: Result<T, spoa_host::kv::KvError>) -> String {
        match result {
            Ok(value) => format!("{step}: {value:?}"),
            Err(err) => format!("{step}: error {}", err.cause().name()),
        }
    }
    let later = || Instant::now() + Duration::from_secs(2);
    let b = "default";
    let mut out = Vec::new();
    out.push(show(
        "set",
        store.set(later(), b, "k", b"v".to_vec(), None).await,
    ));
    out.push(show("get", store.get(later(), b, "k").await));
    out.push(show("exists", store.exists(later(), b, "k").await));
    out.push(show("get missing", store.get(later(), b, "nope").await));
    out.push(show(
        "incr",
        store.increment(later(), b, "n", 5, None).await,
    ));
    out.push(show(
        "incr",
        store.increment(later(), b, "n", 2, None).await,
    ));
    out.push(show("get counter", store.get(later(), b, "n").await));
    out.push(show("no expiry", store.expires_in(later(), b, "n").await));
    for (key, text) in [
        ("neg", "-5"),
        ("zeros", "007"),
        ("plus", "+5"),
        ("word", "abc"),
    ] {
        store
            .set(later(), b, key, text.as_bytes().to_vec(), None)
            .await
            .ok();
        out.push(show(key, store.increment(later(), b, key, 1, None).await));
        out.push(show(key, store.get(later(), b, key).await));
    }
    out.push(show(
        "max",
        store
            .increment(later(), b, "big", i64::MAX as u64, None)
            .await,
    ));
    out.push(show(
        "overflow",
        store.increment(later(), b, "big", 1, None).await,
    ));
    out.push(show(
        "delta too big",
        store.increment(later(), b, "x", u64::MAX, None).await,
    ));
    out.push(show(
        "window",
        store.increment(later(), b, "w", 1, Some(150)).await,
    ));
    out.push(show(
        "window again",
        store.increment(later(), b, "w", 1, Some(10_000)).await,
    ));
    let left = store.expires_in(later(), b, "w").await;
    out.push(format!(
        "window kept: {:?}",
        left.map(|l| l.is_some_and(|l| l <= Duration::from_millis(150)))
    ));
    out.push(show(
        "ttl 0",
        store.set(later(), b, "t", b"x".to_vec(), Some(0)).await,
    ));
    out.push(show(
        "ttl",
        store.set(later(), b, "t", b"x".to_vec(), Some(100)).await,
    ));
    out.push(show("before expiry", store.get(later(), b, "t").await));
    tokio::time::sleep(Duration::from_millis(250)).await;
    out.push(show("after expiry", store.get(later(), b, "t").await));
    out.push(show(
        "counter after expiry",
        store.increment(later(), b, "w", 1, Some(1000)).await,
    ));
    out.push(show("delete", store.delete(later(), b, "k").await));
    out.push(show("deleted", store.exists(later(), b, "k").await));
    let pairs = vec![
        ("a".to_string(), b"1".to_vec()),
        ("c".to_string(), b"3".to_vec()),
    ];
    out.push(show("set many", store.set_many(later(), b, pairs).await));
    let keys: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    out.push(show("get many", store.get_many(later(), b, &keys).await));
    out.push(show(
        "delete many",
        store.delete_many(later(), b, &keys).await,
    ));
    out.push(show("get many", store.get_many(later(), b, &keys).await));
    out.push(show(
        "long key",
        store.get(later(), b, &"k".repeat(2000)).await,
    ));
    for i in 0..5 {
        store
            .set(later(), "listing", &format!("key{i}"), vec![], None)
            .await
            .ok();
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_keys(later(), "listing", cursor)
            .await
            .expect("list-keys");
        listed.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    listed.sort();
    out.push(format!("listed: {listed:?}"));
    out
}
