//! Several guests in one agent (`--config`): routing by message name,
//! isolation between guests, quarantine, automatic rollback, configuration
//! reload — over real SPOP connections to a real `spoa-host`.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spoa_host::spop::{Ack, Action, TypedData, VarScope};
use support::agent::{Agent, run_host};
use support::http::{assert_metrics, metric_value, scrape_metrics};
use support::spop_client::{
    SpopClient, check_client_ip, encoded, message, notify_frame, score_of, string,
};
use support::{artifact, eventually, free_port, hostile_guest};

/// A directory holding the config file and copies of the modules, so tests
/// can replace them.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Installs `source` as `name`, as a deploy tool would.
    fn install(&self, source: &Path, name: &str) -> PathBuf {
        let target = self.path(name);
        support::install(source, &target);
        target
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let target = self.path("agent.toml");
        support::write_atomically(&target, text);
        target
    }

    fn start(&self, text: &str, extra: &[&str]) -> (Agent, std::net::SocketAddr) {
        support::agent::start_config(self.dir.path(), text, extra)
    }
}

fn set_var(ack: &Ack, name: &str) -> Option<(VarScope, TypedData)> {
    ack.actions.iter().find_map(|action| match action {
        Action::SetVar {
            scope,
            name: n,
            value,
        } if &n[..] == name.as_bytes() => Some((*scope, value.clone())),
        _ => None,
    })
}

fn error_var(ack: &Ack) -> Option<String> {
    match set_var(ack, "error") {
        Some((_, TypedData::String(text))) => Some(String::from_utf8_lossy(&text).into_owned()),
        _ => None,
    }
}

// The file's address and port could not be bound by a test (a documentation
// address, a privileged port): the agent starts because -a and -p on its
// command line override them.
const ROUTING: &str = r#"
address = "192.0.2.1"
port = 1

[[guest]]
name = "iprep"
module = "iprep.wasm"
messages = ["check-client-ip"]

[[guest]]
name = "ua"
module = "ua.wasm"
messages = ["check-user-agent"]
config = { score = 77 }
"#;

#[test]
fn each_message_goes_to_the_guest_that_declares_it_and_the_ack_keeps_their_order() {
    let setup = Setup::new();
    setup.install(&hostile_guest('A'), "iprep.wasm");
    setup.install(&artifact("guest_uascore.wasm"), "ua.wasm");
    let (agent, metrics) = setup.start(ROUTING, &["--debug"]);
    let mut client = SpopClient::pipelined(agent.addr());
    let browser = message(
        "check-user-agent",
        vec![("ua", string("Mozilla/5.0 Firefox"))],
    );
    client.send(&notify_frame(
        1,
        1,
        vec![
            browser.clone(),
            message("nobody-declares-this", vec![]),
            check_client_ip(Ipv4Addr::new(192, 0, 2, 1)),
            message("nobody-declares-this", vec![]),
            message("check-user-agent", vec![("ua", string("curl/8"))]),
        ],
    ));
    let ack = client.recv_ack();
    let answers: Vec<(&[u8], Option<i64>)> = ack
        .actions
        .iter()
        .map(|action| match action {
            Action::SetVar { name, value, .. } => (&name[..], value.as_i64()),
            other => panic!("unexpected action {other:?}"),
        })
        .collect();
    assert_eq!(
        answers,
        vec![
            (&b"ua_score"[..], Some(77)),
            (&b"ip_score"[..], Some(42)),
            (&b"ua_score"[..], Some(10)),
        ],
        "each guest answered its messages, in the NOTIFY's order"
    );
    let text = scrape_metrics(metrics);
    assert_metrics(
        &text,
        &[
            ("spoa_unrouted_messages_total", 2.0),
            ("spoa_guest_calls_total{guest=\"iprep\"}", 1.0),
            ("spoa_guest_calls_total{guest=\"ua\"}", 2.0),
        ],
    );
    assert!(
        text.contains("spoa_module_info{guest=\"ua\",path="),
        "{text}"
    );
    let log = agent.log_text();
    assert_eq!(
        log.matches("no guest declares this message").count(),
        1,
        "logged once per name:\n{log}"
    );
}

#[test]
fn a_message_declared_twice_is_refused_at_start() {
    let setup = Setup::new();
    let config = setup.write_config(
        // The array of tables written inline, as a generator may write it.
        r#"guest = [
            { name = "a", module = "a.wasm", messages = ["check-client-ip"] },
            { name = "b", module = "b.wasm", messages = ["check-client-ip"] },
        ]"#,
    );
    let output = run_host(&["--config", &config.display().to_string()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("message `check-client-ip` is declared by guests `a` and `b`"),
        "{stderr}"
    );
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// On one pipelined connection, NOTIFYs for a guest that loops to its
/// deadline (200 ms) or traps are interleaved with NOTIFYs for another
/// guest, up to 8 of the looping guest's in flight (as HAProxy keeps a
/// bounded number of frames in flight): the other guest's ACKs must not wait
/// for the looping one.
#[test]
fn a_guest_looping_to_its_deadline_does_not_delay_another_guests_messages() {
    let setup = Setup::new();
    let module = setup.install(&hostile_guest('A'), "hostile.wasm");
    let module = module.display();
    let (agent, _metrics) = setup.start(
        &format!(
            r#"
            [[guest]]
            name = "spinner"
            module = "{module}"
            messages = ["loop", "trap", "which"]
            timeout = "200ms"
            smoke-message = "which"
            [guest.on-failure]
            quarantine = false

            [[guest]]
            name = "fast"
            module = "{module}"
            messages = ["check-client-ip"]
            "#
        ),
        &[],
    );
    let mut client = SpopClient::pipelined(agent.addr());
    client.set_read_timeout(Duration::from_secs(5));
    // SPOA_TEST_NOSPIN=1 measures the same traffic with a guest that answers
    // at once (the baseline).
    let baseline = std::env::var_os("SPOA_TEST_NOSPIN").is_some();
    let mut fast_latency = Vec::new();
    let mut spins_out = 0;
    let mut next_id = 0u64;
    for round in 0..60u64 {
        let mut frames = Vec::new();
        if spins_out < 8 {
            let spin = match (baseline, round % 4) {
                (true, _) => "which",
                (false, 3) => "trap",
                (false, _) => "loop",
            };
            next_id += 1;
            frames.extend(encoded(&notify_frame(
                1,
                next_id * 2 + 1,
                vec![message(spin, vec![])],
            )));
            spins_out += 1;
        }
        next_id += 1;
        let fast_id = next_id * 2;
        frames.extend(encoded(&notify_frame(
            1,
            fast_id,
            vec![check_client_ip(Ipv4Addr::LOCALHOST)],
        )));
        let sent = Instant::now();
        client.send_raw(&frames);
        loop {
            let ack = client.recv_ack();
            if ack.frame_id == fast_id {
                assert_eq!(score_of(&ack), Some(42));
                fast_latency.push(sent.elapsed());
                break;
            }
            assert_eq!(ack.frame_id % 2, 1, "an ACK for an earlier fast message?");
            spins_out -= 1;
        }
    }
    while spins_out > 0 {
        let ack = client.recv_ack();
        assert_eq!(ack.frame_id % 2, 1);
        spins_out -= 1;
    }
    if std::env::var_os("SPOA_TEST_SAMPLES").is_some() {
        let mut sorted = fast_latency.clone();
        sorted.sort();
        eprintln!("{sorted:?}");
    }
    let (p50, p99) = percentiles(fast_latency);
    eprintln!("other guest (baseline: {baseline}): p50 {p50:?}, p99 {p99:?}");
    assert!(
        p99 < Duration::from_millis(50),
        "the fast guest waited {p99:?} at p99 behind a 200 ms looping guest"
    );
}

#[test]
fn a_guest_that_keeps_failing_is_quarantined_then_tried_again() {
    let setup = Setup::new();
    setup.install(&hostile_guest('A'), "hostile.wasm");
    let (agent, metrics) = setup.start(&support::agent::quarantine_table("700ms"), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let mut frame_id = 0;
    let mut ask = |client: &mut SpopClient, msg| {
        frame_id += 1;
        client.send(&notify_frame(1, frame_id, vec![msg]));
        client.recv_ack()
    };
    for _ in 0..5 {
        let ack = ask(&mut client, message("trap", vec![]));
        assert_eq!(error_var(&ack).as_deref(), Some("trap"));
    }
    // Quarantined: even a message it would answer is refused at once.
    let quarantined_at = Instant::now();
    let ack = ask(&mut client, check_client_ip(Ipv4Addr::LOCALHOST));
    assert_eq!(error_var(&ack).as_deref(), Some("quarantined"), "{ack:?}");
    let text = scrape_metrics(metrics);
    assert_metrics(
        &text,
        &[
            ("spoa_guest_quarantines_total{guest=\"flaky\"}", 1.0),
            ("spoa_guest_quarantined{guest=\"flaky\"}", 1.0),
        ],
    );
    assert_eq!(
        metric_value(
            &text,
            "spoa_guest_failures_total{guest=\"flaky\",kind=\"quarantined\"}"
        ),
        1.0
    );
    // After the back-off it is called again.
    std::thread::sleep(Duration::from_millis(750).saturating_sub(quarantined_at.elapsed()));
    let ack = ask(&mut client, check_client_ip(Ipv4Addr::LOCALHOST));
    assert_eq!(score_of(&ack), Some(42), "{ack:?}");
    let text = scrape_metrics(metrics);
    assert_eq!(
        metric_value(&text, "spoa_guest_quarantined{guest=\"flaky\"}"),
        0.0
    );
    // The log arrives through a pipe and a thread: soon, not at once.
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = agent.log_text();
            log.contains("guest quarantined") && log.contains("quarantine over")
        }),
        "{}",
        agent.log_text()
    );
}

const ROLLBACK: &str = r#"
[[guest]]
name = "iprep"
module = "iprep.wasm"
messages = ["check-client-ip"]
smoke-args = ["ip=ipv4:127.0.0.1"]

[[guest]]
name = "counter"
module = "counter.wasm"
messages = ["count"]
smoke-message = "which"
"#;

/// Sends check-client-ip from a non-loopback address until `done` says stop;
/// returns how many were sent.
fn ask_until(
    client: &mut SpopClient,
    frame_id: &mut u64,
    mut done: impl FnMut(&Ack) -> bool,
) -> u64 {
    for sent in 1..=500 {
        *frame_id += 1;
        client.send(&notify_frame(
            1,
            *frame_id,
            vec![check_client_ip(Ipv4Addr::new(198, 51, 100, 7))],
        ));
        if done(&client.recv_ack()) {
            return sent;
        }
    }
    panic!("never done after 500 messages");
}

fn count(client: &mut SpopClient, frame_id: &mut u64) -> Option<i64> {
    *frame_id += 1;
    client.send(&notify_frame(1, *frame_id, vec![message("count", vec![])]));
    match set_var(&client.recv_ack(), "count") {
        Some((_, value)) => value.as_i64(),
        None => None,
    }
}

#[test]
fn a_new_version_that_fails_every_call_is_rolled_back_and_not_loaded_again() {
    let setup = Setup::new();
    setup.install(&hostile_guest('A'), "iprep.wasm");
    setup.install(&hostile_guest('A'), "counter.wasm");
    let (agent, metrics) = setup.start(ROLLBACK, &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let mut frame_id = 0;
    // The smoke call was the instance's first.
    assert_eq!(count(&mut client, &mut frame_id), Some(2));

    // Version C passes the smoke call (from 127.0.0.1) and traps on every
    // real address.
    setup.install(&hostile_guest('C'), "iprep.wasm");
    assert!(
        eventually(Duration::from_secs(10), || metric_value(
            &scrape_metrics(metrics),
            "spoa_module_reloads_total{guest=\"iprep\",result=\"ok\"}"
        ) == 1.0),
        "version C was not loaded:\n{}",
        agent.log_text()
    );
    let mut failed = 0;
    let calls = ask_until(&mut client, &mut frame_id, |ack| {
        if score_of(ack) == Some(42) {
            return true;
        }
        failed += 1;
        false
    });
    eprintln!("rolled back after {failed} failed calls");
    assert!(
        failed >= 1 && calls <= 100,
        "{failed} failures, {calls} calls"
    );
    let text = scrape_metrics(metrics);
    assert_eq!(
        metric_value(&text, "spoa_guest_rollbacks_total{guest=\"iprep\"}"),
        1.0
    );
    assert!(
        text.contains("guest_hostile_a") || text.contains("iprep.wasm"),
        "{text}"
    );
    let log = agent.log_text();
    let rollback_line = log
        .lines()
        .find(|line| line.contains("new version rolled back"))
        .unwrap_or_else(|| panic!("no rollback logged:\n{log}"));
    eprintln!("{rollback_line}");

    // The same files again: not loaded.
    agent.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || metric_value(
            &scrape_metrics(metrics),
            "spoa_module_reloads_total{guest=\"iprep\",result=\"rejected_before\"}"
        ) >= 1.0),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        ask_until(&mut client, &mut frame_id, |ack| score_of(ack) == Some(42)),
        1
    );

    // A changed file is loaded (and passes probation).
    setup.install(&hostile_guest('B'), "iprep.wasm");
    assert!(
        eventually(Duration::from_secs(10), || {
            frame_id += 1;
            client.send(&notify_frame(
                1,
                frame_id,
                vec![check_client_ip(Ipv4Addr::new(198, 51, 100, 7))],
            ));
            score_of(&client.recv_ack()) == Some(58)
        }),
        "version B never served:\n{}",
        agent.log_text()
    );
    // Reloading one guest never touched the other's instance.
    assert_eq!(count(&mut client, &mut frame_id), Some(3));
}

#[test]
fn configuration_reload_adds_guests_keeps_the_others_and_refuses_duplicates() {
    let setup = Setup::new();
    setup.install(&hostile_guest('A'), "counter.wasm");
    setup.install(&artifact("guest_uascore.wasm"), "ua.wasm");
    let one = r#"
        [[guest]]
        name = "counter"
        smoke-message = "which"
        messages = ["count"]
        module = "counter.wasm"
    "#;
    let (agent, metrics) = setup.start(one, &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let mut frame_id = 0;
    // The smoke call was the instance's first.
    assert_eq!(count(&mut client, &mut frame_id), Some(2));
    let ua = || message("check-user-agent", vec![("ua", string("curl/8"))]);
    frame_id += 1;
    client.send(&notify_frame(1, frame_id, vec![ua()]));
    assert!(client.recv_ack().actions.is_empty(), "not routed yet");

    // Add a guest.
    setup.write_config(&format!(
        "{one}\n[[guest]]\nname = \"ua\"\nmodule = \"ua.wasm\"\nmessages = [\"check-user-agent\"]\n"
    ));
    assert!(
        eventually(Duration::from_secs(10), || {
            frame_id += 1;
            client.send(&notify_frame(1, frame_id, vec![ua()]));
            set_var(&client.recv_ack(), "ua_score").is_some()
        }),
        "the new guest never answered:\n{}",
        agent.log_text()
    );
    assert_eq!(
        count(&mut client, &mut frame_id),
        Some(3),
        "counter kept its instance"
    );

    // A duplicate declaration is refused; everything keeps serving.
    setup.write_config(&format!(
        "{one}\n[[guest]]\nname = \"ua\"\nmodule = \"ua.wasm\"\nmessages = [\"check-user-agent\", \"count\"]\n"
    ));
    assert!(
        eventually(Duration::from_secs(10), || metric_value(
            &scrape_metrics(metrics),
            "spoa_config_reloads_total{result=\"failed\"}"
        ) >= 1.0),
        "{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("is declared by guests"));
    assert_eq!(count(&mut client, &mut frame_id), Some(4));
    frame_id += 1;
    client.send(&notify_frame(1, frame_id, vec![ua()]));
    assert!(set_var(&client.recv_ack(), "ua_score").is_some());
}

#[test]
fn haproxy_config_prints_what_haproxy_accepts() {
    let haproxy = match support::haproxy::haproxy_binary() {
        Some(binary) => binary,
        None => return,
    };
    let setup = Setup::new();
    let config = setup.write_config(&format!(
        "{ROUTING}\n[guest.spoe.check-user-agent]\nargs = [\"ua=req.hdr(user-agent)\"]\n"
    ));
    let section = |name: &str| support::haproxy::generated_config(&haproxy, &config, name);
    let spoe = section("spoe");
    std::fs::write(setup.path("spoe.conf"), &spoe).expect("writing");
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n\
         frontend web\n    bind 127.0.0.1:{}\n    filter spoe engine spoa-host config {}\n\n{}",
        free_port(),
        setup.path("spoe.conf").display(),
        section("backend")
    );
    std::fs::write(setup.path("haproxy.cfg"), &cfg).expect("writing");
    let check = std::process::Command::new(&haproxy)
        .args(["-c", "-f"])
        .arg(setup.path("haproxy.cfg"))
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "haproxy refused:\n{cfg}\n{spoe}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
