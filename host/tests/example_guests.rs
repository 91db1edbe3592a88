//! The example guests of `examples/guests/` (Rust, Python, JavaScript, C), as
//! `make examples` builds them into `target/examples/iprep_<lang>.wasm`,
//! served by a real spoa-host: the block list from the IP table `blocklist`
//! (a million networks too), the threshold from the configuration, random
//! scores, other messages, several messages in one NOTIFY; configuration and
//! table reloads; a MaxMind DB country table; and end to end behind a real
//! HAProxy.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use spoa_host::spop::{Ack, Action, Message, TypedData, VarScope};
use support::agent::{Agent, run_host};
use support::haproxy::{self, haproxy_binary};
use support::spop_client::{Session, message, notify_frame};
use support::{artifact, eventually, http};

const THRESHOLD: i64 = 30;

/// The block list of the examples' own `data/blocklist.txt`.
const EXAMPLE_BLOCKLIST: &[&str] = &["192.0.2.0/24", "2001:db8::/32"];

/// How long a reload may take to show in the answers.
const RELOAD_LIMIT: Duration = Duration::from_secs(10);

/// The sandbox flags each example is served with. Measured on this 2-core
/// machine while it compiled other work: the memory cap must hold the
/// initial linear memory (Rust 1088 KiB, Python 12864 KiB, JavaScript
/// 9280 KiB); Python stays there, the JavaScript heap grows (a 16 MiB cap
/// fails a call every ~20,000 on one instance, 64 MiB none in 67,000). A new
/// instance's first call took under 1 ms in Rust, 5–16 ms in Python, 3–12 ms
/// in JavaScript; many new instances at once share the data-plane threads and
/// need more (with 64 calls in flight, a few timeouts at 10–20 ms, none at
/// 50 ms). Hence generous deadlines for a loaded test machine.
fn sandbox_flags(lang: &str) -> &'static [&'static str] {
    match lang {
        "rust" | "c" => &[],
        "python" => &["--guest-memory", "32MiB", "--guest-timeout", "200ms"],
        "js" => &["--guest-memory", "128MiB", "--guest-timeout", "200ms"],
        other => panic!("no example guest in {other}"),
    }
}

/// `target/examples/iprep_<lang>.wasm`, checked once per test binary with
/// `spoa-host check` and the flags it is served with. That also compiles it
/// into the tests' module cache, so agents started in parallel load it from
/// there instead of each compiling 13–18 MB of component at once.
fn example_guest(lang: &str) -> PathBuf {
    static CHECKED: [OnceLock<()>; 4] = [const { OnceLock::new() }; 4];
    let index = ["rust", "python", "js", "c"]
        .iter()
        .position(|known| *known == lang)
        .unwrap_or_else(|| panic!("no example guest in {lang}"));
    let module = artifact(&format!("examples/iprep_{lang}.wasm"));
    CHECKED[index].get_or_init(|| {
        let data = data_dir(EXAMPLE_BLOCKLIST);
        let (module, data) = (
            module.display().to_string(),
            data.path().display().to_string(),
        );
        let grant = format!("blocklist={data}/blocklist.txt");
        let mut args = vec!["check", &module, "--ip-table", &grant];
        args.extend_from_slice(sandbox_flags(lang));
        let output = run_host(&args);
        assert!(
            output.status.success(),
            "spoa-host check {module} refused the example:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
    module
}

/// A directory holding `blocklist.txt` with these lines (the examples'
/// IP table `blocklist`).
fn data_dir(blocklist: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_blocklist(dir.path(), blocklist);
    dir
}

fn write_blocklist(dir: &Path, lines: &[&str]) {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(dir.join("blocklist.txt"), text).expect("writing blocklist.txt");
}

/// Starts an agent serving the example in `lang` with its sandbox flags,
/// `--ip-table blocklist=DATA/blocklist.txt` and the extra `args`.
fn start_example(lang: &str, data: &Path, args: &[&str]) -> Agent {
    let module = example_guest(lang);
    let grant = format!("blocklist={}", data.join("blocklist.txt").display());
    let mut all = vec!["--ip-table", &grant];
    all.extend_from_slice(sandbox_flags(lang));
    all.extend_from_slice(args);
    Agent::start(&module, &all)
}

/// The guests' answer to one `check-client-ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    score: i64,
    blocked: bool,
}

const LISTED: Verdict = Verdict {
    score: 0,
    blocked: true,
};

/// The answer to one `check-client-ip` within `actions`, which must be
/// exactly `set-var sess ip_score int32` then `set-var txn ip_blocked bool`.
fn verdict_of(actions: &[Action]) -> Verdict {
    match actions {
        [
            Action::SetVar {
                scope: VarScope::Sess,
                name: score_name,
                value: TypedData::Int32(score),
            },
            Action::SetVar {
                scope: VarScope::Txn,
                name: blocked_name,
                value: TypedData::Bool(blocked),
            },
        ] if &score_name[..] == b"ip_score" && &blocked_name[..] == b"ip_blocked" => Verdict {
            score: i64::from(*score),
            blocked: *blocked,
        },
        other => {
            panic!("expected ip_score (sess, int32) and ip_blocked (txn, bool), got {other:?}")
        }
    }
}

fn check_ip(ip: &str) -> Message {
    let value = match ip.parse::<IpAddr>().expect("test address") {
        IpAddr::V4(v4) => TypedData::Ipv4(v4),
        IpAddr::V6(v6) => TypedData::Ipv6(v6),
    };
    message("check-client-ip", vec![("ip", value)])
}

/// One SPOP connection to an agent, numbering its frames.
struct Client {
    session: Session,
}

impl Client {
    fn connect(agent: &Agent) -> Client {
        Client {
            session: Session::connect(agent.addr()),
        }
    }

    /// Sends one NOTIFY with `messages` and returns its ACK.
    fn notify(&mut self, messages: Vec<Message>) -> Ack {
        self.session.notify(messages)
    }

    fn check(&mut self, ip: &str) -> Verdict {
        verdict_of(&self.notify(vec![check_ip(ip)]).actions)
    }

    /// `count` checks of an address that is not listed: each score is in
    /// 0..=100 and blocked exactly when below `threshold`.
    fn unlisted_scores(&mut self, ip: &str, count: usize, threshold: i64) -> Vec<i64> {
        (0..count)
            .map(|_| {
                let verdict = self.check(ip);
                assert!(
                    (0..=100).contains(&verdict.score),
                    "{ip}: score {} out of 0..=100",
                    verdict.score
                );
                assert_eq!(
                    verdict.blocked,
                    verdict.score < threshold,
                    "{ip}: {verdict:?} with threshold {threshold}"
                );
                verdict.score
            })
            .collect()
    }
}

fn assert_vary(scores: &[i64]) {
    let distinct: HashSet<_> = scores.iter().collect();
    assert!(
        distinct.len() > 1,
        "{} random scores are all the same: {scores:?}",
        scores.len()
    );
}

/// The agent logs `text` (soon: its log arrives through a pipe and a thread).
fn assert_logged(agent: &Agent, text: &str) {
    assert!(
        eventually(Duration::from_secs(5), || agent.log_text().contains(text)),
        "the agent never logged `{text}`:\n{}",
        agent.log_text()
    );
}

/// No guest failure, rejected load or other trouble in the agent's log.
fn assert_quiet_log(agent: &Agent) {
    let log = agent.log_text();
    assert!(
        !log.contains(" WARN ") && !log.contains(" ERROR "),
        "the agent reported trouble:\n{log}"
    );
}

/// Everything the examples promise, over SPOP, for the example in `lang`.
fn example_scores_blocks_and_answers_in_order(lang: &str) {
    let data = data_dir(EXAMPLE_BLOCKLIST);
    let agent = start_example(lang, data.path(), &["--guest-config", "threshold=30"]);
    let mut client = Client::connect(&agent);

    // Listed addresses, IPv4 and IPv6, including an IPv4-mapped IPv6 one.
    for ip in [
        "192.0.2.1",
        "192.0.2.255",
        "2001:db8::5",
        "::ffff:192.0.2.7",
    ] {
        assert_eq!(client.check(ip), LISTED, "{lang}: {ip} is listed");
    }

    // Unlisted addresses: random scores against the configured threshold.
    // Fifty of them: a guest ignoring the threshold (default 20) scores in
    // 20..30 at least once, but for one run in a thousand.
    let scores = client.unlisted_scores("198.51.100.7", 50, THRESHOLD);
    assert_vary(&scores);
    let scores = client.unlisted_scores("2001:db9::1", 10, THRESHOLD);
    assert_vary(&scores);

    // Any other message: no action (and no failure).
    for name in ["check-client-ua", "check-client-ip-v2"] {
        let ack = client.notify(vec![message(
            name,
            vec![("ip", TypedData::Ipv4("192.0.2.1".parse().unwrap()))],
        )]);
        assert!(ack.actions.is_empty(), "{lang}: `{name}` got {ack:?}");
    }

    // Several messages in one NOTIFY: the answers come in message order.
    // (The random one could score 0 by chance and look listed; over several
    // NOTIFYs it cannot do so every time.)
    let mut middle_scores = Vec::new();
    for _ in 0..5 {
        let ack = client.notify(vec![
            check_ip("192.0.2.1"),
            message("something-else", vec![]),
            check_ip("198.51.100.7"),
            check_ip("2001:db8::5"),
        ]);
        assert_eq!(ack.actions.len(), 6, "{lang}: {ack:?}");
        assert_eq!(verdict_of(&ack.actions[0..2]), LISTED, "{lang}: {ack:?}");
        let middle = verdict_of(&ack.actions[2..4]);
        assert!((0..=100).contains(&middle.score), "{lang}: {ack:?}");
        assert_eq!(middle.blocked, middle.score < THRESHOLD, "{lang}: {ack:?}");
        assert_eq!(verdict_of(&ack.actions[4..6]), LISTED, "{lang}: {ack:?}");
        middle_scores.push(middle.score);
    }
    assert!(
        middle_scores.iter().any(|&score| score != 0),
        "{lang}: the unlisted address in the middle scored like a listed one every time: {middle_scores:?}"
    );

    // Pipelined NOTIFYs: each ACK answers its own frame.
    let first = client.session.next_frame;
    for i in 0..8u64 {
        let ip = if i.is_multiple_of(2) {
            "192.0.2.9"
        } else {
            "203.0.113.9"
        };
        client
            .session
            .spop
            .send(&notify_frame(2, first + i, vec![check_ip(ip)]));
    }
    client.session.next_frame += 8;
    let mut answered = HashSet::new();
    for _ in 0..8 {
        let ack = client.session.spop.recv_ack();
        let i = ack.frame_id.checked_sub(first).expect("a frame id we sent");
        assert!(
            i < 8 && answered.insert(i),
            "{lang}: frame {}",
            ack.frame_id
        );
        let verdict = verdict_of(&ack.actions);
        if i.is_multiple_of(2) {
            assert_eq!(verdict, LISTED, "{lang}: frame {}", ack.frame_id);
        } else {
            assert!((0..=100).contains(&verdict.score), "{lang}: {verdict:?}");
        }
    }

    assert_quiet_log(&agent);
}

#[test]
fn rust_example_scores_blocks_and_answers_in_order() {
    example_scores_blocks_and_answers_in_order("rust");
}

#[test]
fn python_example_scores_blocks_and_answers_in_order() {
    example_scores_blocks_and_answers_in_order("python");
}

#[test]
fn js_example_scores_blocks_and_answers_in_order() {
    example_scores_blocks_and_answers_in_order("js");
}

#[test]
fn c_example_scores_blocks_and_answers_in_order() {
    example_scores_blocks_and_answers_in_order("c");
}

/// A new threshold in `--guest-config-file` (a new version of the guest,
/// whose `init` reads it) and a new network in the block list (the table
/// alone, the guest untouched) reach the guest without a restart.
#[test]
fn rust_example_reloads_configuration_and_data() {
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("guest.conf");
    std::fs::write(&config, "# the example's settings\nthreshold=30\n").expect("writing config");
    let data = data_dir(&["192.0.2.0/24"]);
    let config_arg = config.display().to_string();
    let agent = start_example("rust", data.path(), &["--guest-config-file", &config_arg]);
    let mut client = Client::connect(&agent);

    assert_eq!(client.check("192.0.2.1"), LISTED);
    assert_vary(&client.unlisted_scores("198.51.100.7", 20, THRESHOLD));

    // (a) threshold 101: every score, listed or not, is below it. Before the
    // reload, twenty scores in a row below 30 happen once in 3·10^10.
    std::fs::write(&config, "# the example's settings\nthreshold=101\n").expect("rewriting config");
    assert!(
        eventually(RELOAD_LIMIT, || {
            (0..20).all(|_| client.check("198.51.100.7").blocked)
        }),
        "threshold 101 never applied:\n{}",
        agent.log_text()
    );
    let scores = client.unlisted_scores("198.51.100.7", 20, 101);
    assert_vary(&scores);
    assert_eq!(client.check("192.0.2.1"), LISTED);
    assert_logged(&agent, "reason=\"configuration changed\"");

    // (b) a new network appended to the block list.
    let guest_loads = agent.log_text().matches("module loaded").count();
    let mut blocklist = std::fs::OpenOptions::new()
        .append(true)
        .open(data.path().join("blocklist.txt"))
        .expect("opening blocklist.txt");
    writeln!(blocklist, "198.51.100.0/24").expect("appending to blocklist.txt");
    drop(blocklist);
    assert!(
        eventually(RELOAD_LIMIT, || {
            (0..5).all(|_| client.check("198.51.100.7") == LISTED)
        }),
        "198.51.100.0/24 never blocked:\n{}",
        agent.log_text()
    );
    for _ in 0..20 {
        assert_eq!(client.check("198.51.100.7"), LISTED);
    }
    assert_eq!(client.check("192.0.2.1"), LISTED);
    let scores = client.unlisted_scores("203.0.113.9", 20, 101);
    assert_vary(&scores);
    assert_logged(&agent, "reason=\"file changed\"");
    let log = agent.log_text();
    assert_eq!(
        log.matches("module loaded").count(),
        guest_loads,
        "the table reloads alone, the guest is not reloaded:\n{log}"
    );
    assert_quiet_log(&agent);
}

/// Real HTTP requests through HAProxy with the example configuration, to an
/// agent serving the example in `lang`. HAProxy's client is 127.0.0.1: listed,
/// it scores 0 and is denied; unlisted, it gets random scores and is denied
/// exactly below the threshold.
fn example_behind_haproxy(lang: &str) {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let threshold = format!("threshold={THRESHOLD}");

    // Listed.
    let listed = data_dir(&["127.0.0.0/8"]);
    let agent = start_example(lang, listed.path(), &["--guest-config", &threshold]);
    let proxy = haproxy::start(&binary, &[agent.addr()], THRESHOLD as u32, |c| c);
    proxy.wait_until_scored(&agent);
    for i in 0..5 {
        let response = http::get(proxy.http, &format!("/listed/{i}")).expect("HTTP request");
        assert_eq!(
            (response.status, response.header("X-IP-Score")),
            (403, Some("0")),
            "{lang}: a listed client is scored 0 and denied"
        );
    }
    assert_quiet_log(&agent);
    assert!(
        !proxy.log_text().contains("error"),
        "{lang}: haproxy reported errors:\n{}",
        proxy.log_text()
    );
    drop(proxy);
    drop(agent);

    // Not listed (an empty block list).
    let empty = data_dir(&[]);
    let agent = start_example(lang, empty.path(), &["--guest-config", &threshold]);
    let proxy = haproxy::start(&binary, &[agent.addr()], THRESHOLD as u32, |c| c);
    proxy.wait_until_scored(&agent);
    let mut scores = Vec::new();
    for i in 0..8 {
        let response = http::get(proxy.http, &format!("/unlisted/{i}")).expect("HTTP request");
        let score: i64 = response
            .header("X-IP-Score")
            .unwrap_or_else(|| panic!("{lang}: request {i} unscored ({})", response.status))
            .parse()
            .expect("numeric score");
        assert!((0..=100).contains(&score), "{lang}: score {score}");
        let expected = if score < THRESHOLD { 403 } else { 200 };
        assert_eq!(response.status, expected, "{lang}: score {score}");
        scores.push(score);
    }
    assert_vary(&scores);
    assert_quiet_log(&agent);
    assert!(
        !proxy.log_text().contains("error"),
        "{lang}: haproxy reported errors:\n{}",
        proxy.log_text()
    );
}

#[test]
fn python_example_behind_haproxy() {
    example_behind_haproxy("python");
}

#[test]
fn js_example_behind_haproxy() {
    example_behind_haproxy("js");
}

#[test]
fn c_example_behind_haproxy() {
    example_behind_haproxy("c");
}

/// Each example with a million-network block list (the host's table: the
/// guest parses nothing): listed and unlisted addresses answer as with two
/// lines, and the list is loaded once for the agent.
fn example_serves_a_million_networks(lang: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    // 1 000 000 networks in 1.0.0.0–126.255.255.255, plus 192.0.2.0/24.
    support::lists::write_big_list(
        &dir.path().join("blocklist.txt"),
        1_000_000,
        "192.0.2.0/24\n",
    );
    let agent = start_example(lang, dir.path(), &["--guest-config", "threshold=30"]);
    let mut client = Client::connect(&agent);
    for _ in 0..10 {
        assert_eq!(client.check("192.0.2.1"), LISTED);
        assert_eq!(client.check("::ffff:192.0.2.200"), LISTED);
    }
    assert_vary(&client.unlisted_scores("198.51.100.7", 20, 30));
    assert_eq!(agent.log_text().matches("IP table loaded").count(), 1);
    assert_quiet_log(&agent);
}

#[test]
fn rust_example_serves_a_million_networks() {
    example_serves_a_million_networks("rust");
}

#[test]
fn python_example_serves_a_million_networks() {
    example_serves_a_million_networks("python");
}

#[test]
fn js_example_serves_a_million_networks() {
    example_serves_a_million_networks("js");
}

#[test]
fn c_example_serves_a_million_networks() {
    example_serves_a_million_networks("c");
}

/// The Rust example with a MaxMind DB country table (written here by
/// mmdb-writer, as GeoLite2-Country lays records out): `txn.ip_country`, and
/// `blocked-countries` blocks a whole country.
#[test]
fn rust_example_reads_a_country_from_a_maxmind_db() {
    #[derive(serde::Serialize)]
    struct Country {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Record {
        country: Country,
    }
    let dir = data_dir(&[]);
    let db = dir.path().join("GeoLite2-Country.mmdb");
    let mut writer = mmdb_writer::Writer::new("GeoLite2-Country");
    for (network, iso_code) in [("198.51.100.0/24", "FR"), ("203.0.113.0/24", "KP")] {
        let network: ipnet::IpNet = network.parse().expect("a network");
        writer
            .insert(
                network,
                &Record {
                    country: Country { iso_code },
                },
            )
            .expect("inserting a record");
    }
    std::fs::write(&db, writer.to_bytes().expect("encoding the db")).expect("writing the db");
    let grant = format!("country={}", db.display());
    let agent = start_example(
        "rust",
        dir.path(),
        &[
            "--ip-table",
            &grant,
            "--guest-config",
            "blocked-countries=KP",
        ],
    );
    let mut client = Client::connect(&agent);
    let ack = client.notify(vec![check_ip("198.51.100.7")]);
    let country = ack.actions.iter().find_map(|action| match action {
        Action::SetVar {
            name,
            value: TypedData::String(code),
            ..
        } if &name[..] == b"ip_country" => Some(String::from_utf8_lossy(code).into_owned()),
        _ => None,
    });
    assert_eq!(country.as_deref(), Some("FR"), "{ack:?}");
    let ack = client.notify(vec![check_ip("203.0.113.9")]);
    assert_eq!(
        verdict_of(&ack.actions[..2]),
        LISTED,
        "a blocked country: {ack:?}"
    );
    assert_quiet_log(&agent);
}
