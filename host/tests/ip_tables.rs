//! Host-owned IP tables (`spoa:agent/ip-table`) and the `init` export, with
//! the `guest-tables` fixture (it reports exactly what the tables answer):
//! lists and MaxMind DB files, IPv6 and IPv4-mapped addresses, grants, a
//! million networks over SPOP, reloads under load (to a good file and to a
//! malformed one), and a Redis set shared by two agents while Redis goes
//! down and comes back. Every data file is generated here.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spoa_host::spop::{Ack, Message, TypedData};
use support::agent::{Agent, run_host};
use support::http::{metric_value, scrape_metrics};
use support::lists::write_big_list;
use support::redis::RedisServer;
use support::spop_client::{Session, SpopClient, message, notify_frame, string};
use support::{artifact, eventually, write_atomically};

fn tables_guest() -> PathBuf {
    artifact("fixtures/guest_tables.wasm")
}

/// `spoa-host call` on the fixture with `args`.
fn run_fixture(args: &[&str]) -> std::process::Output {
    let module = tables_guest();
    let mut full = vec!["call", module.to_str().expect("utf-8")];
    full.extend_from_slice(args);
    run_host(&full)
}

/// `spoa-host call` on the fixture, which must refuse: what it said.
fn refused(args: &[&str]) -> String {
    let output = run_fixture(args);
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `spoa-host call` on the fixture; the answered variables by name.
fn call(args: &[&str]) -> BTreeMap<String, serde_json::Value> {
    let output = run_fixture(args);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("call prints JSON");
    report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|action| action["action"] == "set-var")
        .map(|action| {
            (
                action["name"].as_str().expect("a name").to_owned(),
                action["value"]["value"].clone(),
            )
        })
        .collect()
}

fn lookup(table_flag: &str, table: &str, ip: &str) -> BTreeMap<String, serde_json::Value> {
    let ip_arg = format!("ip={}:{ip}", if ip.contains(':') { "ipv6" } else { "ipv4" });
    let table_arg = format!("table=str:{table}");
    call(&[
        "--message",
        "lookup",
        "--arg",
        &table_arg,
        "--arg",
        &ip_arg,
        "--ip-table",
        table_flag,
    ])
}

#[test]
fn lists_answer_the_most_specific_network_for_ipv4_ipv6_and_mapped_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("blocklist.netset");
    std::fs::write(
        &list,
        "# FireHOL-style list with labels\n\
         10.0.0.0/8 wide\n\
         10.1.0.0/16,narrower\n\
         10.1.2.0/24 ; SBL42\n\
         192.0.2.7\n\
         2001:db8::/32 documentation\n\
         2001:db8:1::/48 inner\n",
    )
    .expect("writing the list");
    let grant = format!("blocklist={}", list.display());
    let hit = |ip: &str| lookup(&grant, "blocklist", ip);

    let inner = hit("10.1.2.3");
    assert_eq!(inner["found"], true);
    assert_eq!(inner["network"], "10.1.2.0/24");
    assert_eq!(inner["label"], "SBL42");
    assert_eq!(inner["len"], 6);
    assert_eq!(hit("10.1.9.9")["label"], "narrower");
    assert_eq!(hit("10.200.0.1")["network"], "10.0.0.0/8");
    assert_eq!(hit("192.0.2.7")["network"], "192.0.2.7/32");
    assert!(!hit("192.0.2.7").contains_key("label"));
    assert_eq!(hit("192.0.2.8")["found"], false);
    assert_eq!(hit("11.0.0.1")["found"], false);
    // IPv6, nested.
    assert_eq!(hit("2001:db8:1::5")["network"], "2001:db8:1::/48");
    assert_eq!(hit("2001:db8:2::5")["label"], "documentation");
    assert_eq!(hit("2001:db9::1")["found"], false);
    // An IPv4-mapped IPv6 address matches the IPv4 network.
    let mapped = hit("::ffff:10.1.2.3");
    assert_eq!(mapped["network"], "10.1.2.0/24");
}

#[test]
fn a_maxmind_db_gives_a_country_code_and_an_as_number() {
    #[derive(serde::Serialize)]
    struct Country {
        iso_code: String,
    }
    #[derive(serde::Serialize)]
    struct Record {
        country: Country,
        autonomous_system_number: u32,
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("geo.mmdb");
    let mut writer = mmdb_writer::Writer::new("spoa-host-test");
    let record = |iso: &str, asn| Record {
        country: Country {
            iso_code: iso.into(),
        },
        autonomous_system_number: asn,
    };
    writer
        .insert(
            "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
            &record("FR", 64500),
        )
        .expect("inserting");
    writer
        .insert(
            "2001:db8::/32".parse::<ipnet::IpNet>().unwrap(),
            &record("DE", 64501),
        )
        .expect("inserting");
    std::fs::write(&path, writer.to_bytes().expect("encoding")).expect("writing the db");

    let grant = format!("geo={}", path.display());
    let fields = |ip: &str| {
        let ip_arg = format!("ip={}:{ip}", if ip.contains(':') { "ipv6" } else { "ipv4" });
        call(&[
            "--message",
            "fields",
            "--arg",
            "table=str:geo",
            "--arg",
            &ip_arg,
            "--arg",
            "paths=str:country.iso_code,autonomous_system_number,city.names.en",
            "--ip-table",
            &grant,
        ])
    };
    let v4 = fields("192.0.2.10");
    assert_eq!(v4["found"], true);
    assert_eq!(v4["network"], "192.0.2.0/24");
    assert_eq!(v4["f0"], "FR");
    assert_eq!(v4["f1"], 64500);
    assert!(!v4.contains_key("f2"), "a missing field is none: {v4:?}");
    let mapped = fields("::ffff:192.0.2.10");
    assert_eq!(mapped["f0"], "FR");
    let v6 = fields("2001:db8::77");
    assert_eq!(v6["f0"], "DE");
    assert_eq!(v6["f1"], 64501);
    assert_eq!(fields("198.51.100.1")["found"], false);
    // `lookup` on a database: the network, no label.
    let hit = lookup(&grant, "geo", "192.0.2.10");
    assert_eq!(hit["network"], "192.0.2.0/24");
    assert!(!hit.contains_key("label"));
}

#[test]
fn a_table_not_granted_or_badly_named_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "192.0.2.0/24\n").expect("writing");
    let grant = format!("blocklist={}", list.display());
    assert_eq!(
        lookup(&grant, "allowlist", "192.0.2.1")["open"],
        "access-denied (error 1)"
    );
    assert_eq!(
        lookup(&grant, "no/such", "192.0.2.1")["open"],
        "no-such-table (error 0)"
    );
    assert_eq!(lookup(&grant, "blocklist", "192.0.2.1")["open"], "ok");
}

#[test]
fn a_list_without_one_valid_line_is_refused_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("broken.txt");
    std::fs::write(&list, "# a comment\nnot an address\n300.1.1.1/8\n").expect("writing");
    let grant = format!("blocklist={}", list.display());
    let stderr = refused(&["--message", "noop", "--ip-table", &grant]);
    assert!(
        stderr.contains("broken.txt") && stderr.contains("line 2") && stderr.contains("not an"),
        "{stderr}"
    );
    // A file that is not there is refused too.
    let missing = format!("blocklist={}", dir.path().join("missing.txt").display());
    let stderr = refused(&["--message", "noop", "--ip-table", &missing]);
    assert!(stderr.contains("missing.txt"), "{stderr}");
}

#[test]
fn init_runs_once_per_instance_outside_the_message_deadline() {
    // 30 ms of init under a 10 ms message budget: init has its own limit.
    let answers = call(&[
        "--message",
        "inits",
        "--guest-timeout",
        "10ms",
        "--guest-config",
        "init=spin-ms=30",
    ]);
    assert_eq!(answers["inits"], 1);

    let refused_init = |config: &str, extra: &[&str]| {
        let config = format!("init={config}");
        let mut args = vec!["--message", "inits", "--guest-config", &config];
        args.extend_from_slice(extra);
        refused(&args)
    };
    let failed = refused_init("fail", &[]);
    assert!(
        failed.contains("cause: init") && failed.contains("init refused on purpose"),
        "{failed}"
    );
    let slow = refused_init("spin-ms=5000", &["--guest-init-timeout", "50ms"]);
    assert!(
        slow.contains("cause: init") && slow.contains("--guest-init-timeout"),
        "{slow}"
    );
    let trapped = refused_init("trap", &[]);
    assert!(trapped.contains("cause: init"), "{trapped}");
}

// ---- Over SPOP, with a running agent ----

fn metrics_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding");
    listener.local_addr().expect("address")
}

fn lookup_message(table: &str, ip: IpAddr) -> Message {
    let ip = match ip {
        IpAddr::V4(v4) => TypedData::Ipv4(v4),
        IpAddr::V6(v6) => TypedData::Ipv6(v6),
    };
    message("lookup", vec![("table", string(table)), ("ip", ip)])
}

/// The variables of one message's answer, by name.
fn vars(ack: &Ack) -> BTreeMap<String, TypedData> {
    support::spop_client::set_vars(ack).collect()
}

fn text(value: Option<&TypedData>) -> Option<String> {
    match value? {
        TypedData::String(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// An agent serving the fixture with `list` as its table `blocklist` (and
/// `extra` flags), and its metrics address.
fn agent_with_blocklist(list: &std::path::Path, extra: &[&str]) -> (Agent, SocketAddr) {
    let metrics = metrics_address();
    let (grant, metrics_arg) = (format!("blocklist={}", list.display()), metrics.to_string());
    let mut args = vec!["--ip-table", &grant, "--metrics-address", &metrics_arg];
    args.extend_from_slice(extra);
    (Agent::start(&tables_guest(), &args), metrics)
}

/// A session asking the guest under test.
struct Client(Session);

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client(Session::connect(addr))
    }

    fn ask(&mut self, msg: Message) -> BTreeMap<String, TypedData> {
        vars(&self.0.notify(vec![msg]))
    }

    fn label(&mut self, ip: &str) -> Option<String> {
        let answer = self.ask(lookup_message("blocklist", ip.parse().unwrap()));
        text(answer.get("label"))
    }

    fn found(&mut self, ip: &str) -> bool {
        let answer = self.ask(lookup_message("blocklist", ip.parse().unwrap()));
        matches!(answer.get("found"), Some(TypedData::Bool(true)))
    }
}

#[test]
fn a_million_networks_load_once_and_serve_over_spop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("blocklist.txt");
    let distinct = write_big_list(&list, 1_000_000, "192.0.2.0/24 known\n") + 1;
    let (mut agent, metrics) = agent_with_blocklist(&list, &["-n", "2"]);
    let mut client = Client::connect(agent.addr());
    assert_eq!(client.label("192.0.2.1").as_deref(), Some("known"));
    assert!(!client.found("198.51.100.1"));
    let page = scrape_metrics(metrics);
    let entries = metric_value(
        &page,
        &format!(
            "spoa_ip_table_entries{{table=\"blocklist\",source=\"{}\"}}",
            list.display()
        ),
    );
    // Random networks repeat now and then: each is held once.
    assert_eq!(entries, distinct as f64);
    let log = agent.stop();
    let loaded = log
        .lines()
        .find(|line| line.contains("IP table loaded"))
        .expect("the load is logged");
    eprintln!("{loaded}");
    assert_eq!(
        log.matches("IP table loaded").count(),
        1,
        "one load for the agent (the smoke call and every instance share it)"
    );
}

#[test]
fn a_table_reloads_under_load_losing_nothing_and_a_bad_file_keeps_the_last_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("blocklist.txt");
    write_big_list(&list, 200_000, "192.0.2.0/24 first\n");
    let (mut agent, metrics) = agent_with_blocklist(&list, &[]);
    let addr = agent.addr();
    // Four connections, each with 16 NOTIFYs in flight, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut spop = SpopClient::pipelined(addr);
                let (mut sent, mut acked) = (0u64, 0u64);
                let mut waiting = std::collections::HashSet::new();
                let ip: IpAddr = "192.0.2.1".parse().unwrap();
                while !stop.load(Ordering::Relaxed) || acked < sent {
                    while sent - acked < 16 && !stop.load(Ordering::Relaxed) {
                        sent += 1;
                        waiting.insert(sent);
                        spop.send(&notify_frame(
                            1,
                            sent,
                            vec![lookup_message("blocklist", ip)],
                        ));
                    }
                    let ack = spop.recv_ack();
                    acked += 1;
                    assert!(waiting.remove(&ack.frame_id), "one ACK per NOTIFY: {ack:?}");
                    let label = text(vars(&ack).get("label"));
                    assert!(label.is_some(), "every answer has a whole table: {ack:?}");
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                assert!(waiting.is_empty());
                (sent, acked)
            })
        })
        .collect();
    let mut client = Client::connect(addr);
    for (round, label) in ["second", "third"].iter().enumerate() {
        write_big_list(
            &list.with_extension("new"),
            200_000,
            &format!("192.0.2.0/24 {label}\n"),
        );
        std::fs::rename(list.with_extension("new"), &list).expect("renaming");
        assert!(
            eventually(Duration::from_secs(20), || client
                .label("192.0.2.1")
                .as_deref()
                == Some(*label)),
            "round {round}: the new version serves"
        );
    }
    // A malformed file: the last version keeps serving, the failure counted.
    write_atomically(&list, "this is not\na list of networks\n");
    let failures = format!(
        "spoa_ip_table_loads_total{{table=\"blocklist\",source=\"{}\",result=\"malformed\"}}",
        list.display()
    );
    assert!(eventually(Duration::from_secs(10), || {
        metric_value(&scrape_metrics(metrics), &failures) == 1.0
    }));
    assert_eq!(client.label("192.0.2.1").as_deref(), Some("third"));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        let (sent, acked) = loader.join().expect("a load thread");
        assert_eq!(sent, acked);
    }
    assert!(answered.load(Ordering::Relaxed) > 100);
    let log = agent.stop();
    assert_eq!(
        log.matches("module loaded").count(),
        1,
        "a table reload does not reload the guest:\n{log}"
    );
    assert!(log.contains("no line is an address or network"), "{log}");
}

#[test]
fn a_redis_set_feeds_two_agents_and_the_last_version_serves_while_redis_is_down() {
    let mut redis = RedisServer::start();
    redis.cli(&["SADD", "spoa:blocklist", "192.0.2.0/24 scanner"]);
    let module = tables_guest();
    let metrics = metrics_address();
    let url = redis.url();
    let start = |metrics: Option<SocketAddr>| {
        let mut args = vec![
            "--kv".to_string(),
            url.clone(),
            "--ip-table".into(),
            "blocklist=redis-set:spoa:blocklist".into(),
        ];
        if let Some(metrics) = metrics {
            args.push("--metrics-address".into());
            args.push(metrics.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start(&module, &args)
    };
    let (first, second) = (start(Some(metrics)), start(None));
    let mut clients = [
        Client::connect(first.addr()),
        Client::connect(second.addr()),
    ];
    for client in &mut clients {
        assert_eq!(client.label("192.0.2.9").as_deref(), Some("scanner"));
        assert!(!client.found("198.51.100.7"));
    }
    // A security system adds an address: every agent blocks it within a second.
    redis.cli(&["SADD", "spoa:blocklist", "198.51.100.7"]);
    let added = Instant::now();
    for client in &mut clients {
        assert!(eventually(Duration::from_secs(5), || client.found("198.51.100.7")));
    }
    eprintln!("served by both agents {:?} after SADD", added.elapsed());
    assert!(added.elapsed() < Duration::from_secs(3));

    // Redis goes down: the last version keeps serving, the failures counted.
    redis.kill();
    let unavailable = "spoa_ip_table_loads_total{table=\"blocklist\",source=\"redis-set:spoa:blocklist\",result=\"unavailable\"}";
    assert!(eventually(Duration::from_secs(10), || {
        metric_value(&scrape_metrics(metrics), unavailable) >= 1.0
    }));
    for client in &mut clients {
        assert!(client.found("198.51.100.7"));
        assert_eq!(client.label("192.0.2.9").as_deref(), Some("scanner"));
    }
    // Back, empty (nothing persisted), then fed again.
    redis.restart();
    redis.cli(&["SADD", "spoa:blocklist", "203.0.113.5 returned"]);
    for client in &mut clients {
        assert!(eventually(Duration::from_secs(10), || {
            client.label("203.0.113.5").as_deref() == Some("returned")
        }));
        assert!(
            !client.found("198.51.100.7"),
            "the new version replaced the old"
        );
    }
}

/// guest-iprep's README: an address in its `blocklist` table scores 0 (every
/// time: a random score of 0 is one in 101); without a table it is random.
#[test]
fn guest_iprep_scores_zero_for_an_address_in_its_blocklist_table() {
    let module = support::iprep_guest();
    let list = support::workspace_root().join("examples/guests/rust/data/blocklist.txt");
    let grant = format!("blocklist={}", list.display());
    let score = |ip: &str, table: bool| {
        let ip_arg = format!("ip={ip}");
        let mut args = vec![
            "call",
            module.to_str().unwrap(),
            "--message",
            "check-client-ip",
        ];
        args.extend(["--arg", &ip_arg]);
        if table {
            args.extend(["--ip-table", &grant]);
        }
        let output = run_host(&args);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        report["actions"][0]["value"]["value"]
            .as_i64()
            .expect("a score")
    };
    for _ in 0..5 {
        assert_eq!(score("ipv4:192.0.2.1", true), 0);
        assert_eq!(score("ipv6:2001:db8::1", true), 0);
    }
    let unlisted: std::collections::HashSet<i64> =
        (0..8).map(|_| score("ipv4:198.51.100.7", true)).collect();
    assert!(unlisted.len() > 1, "random scores: {unlisted:?}");
    let untabled: std::collections::HashSet<i64> =
        (0..8).map(|_| score("ipv4:192.0.2.1", false)).collect();
    assert!(untabled.len() > 1, "no table, no block list: {untabled:?}");
}

/// Every new instance runs `init` before its first message: fresh instances
/// (one per message) and instances replaced after --guest-max-calls.
#[test]
fn init_runs_on_every_new_instance() {
    let module = tables_guest();
    for flags in [&["--fresh-instance"][..], &["--guest-max-calls", "2"][..]] {
        let agent = Agent::start(&module, flags);
        let mut client = Client::connect(agent.addr());
        for _ in 0..6 {
            let answer = client.ask(message("inits", vec![]));
            assert_eq!(
                answer.get("inits"),
                Some(&TypedData::Uint32(1)),
                "{flags:?}: {answer:?}"
            );
        }
    }
}
