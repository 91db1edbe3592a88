//! The WASI surface, probed from inside: a guest written in Python
//! (componentize-py, `tests/fixtures/guest-sandbox-py`) tries, one message
//! each, what the sandbox must refuse — reading the host's files, listing
//! `/`, the environment, writing into the granted directory, connecting to
//! the agent itself, resolving a name, sleeping past the deadline — and
//! reports what it saw as `txn.outcome`. Each refusal must reach the guest as
//! an ordinary error (no trap, nothing leaked), reading the granted `/data`
//! must work, and every probe costs at most its own message: the same SPOP
//! connection keeps being served.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spoa_host::spop::{Action, Message, TypedData, VarScope};
use support::agent::{Agent, run_host};
use support::spop_client::{SpopClient, message, notify_frame};
use support::{artifact, free_port, http};

/// Enough for any probe on a loaded machine, short enough that the 5 s
/// `sleep` is obviously cut. Measured on two cores: under 1 ms per probe
/// idle, 7 ms for the first call of a fresh CPython instance, 108 ms at
/// worst with both cores oversubscribed four times over.
const GUEST_TIMEOUT: Duration = Duration::from_millis(300);

/// What the `sleep` ACK may take beyond the deadline.
const CUT_MARGIN: Duration = Duration::from_millis(700);

const BLOCKLIST: &str = "192.0.2.0/24\n2001:db8::/32\n";

/// The component `tests/fixtures/guest-sandbox-py/build.sh` writes.
fn sandbox_guest() -> PathBuf {
    artifact("fixtures/guest_sandbox_py.wasm")
}

/// A connection to an agent running the probe guest.
struct Probe {
    agent: Agent,
    metrics: SocketAddr,
    client: SpopClient,
    frame_id: u64,
}

impl Probe {
    fn start(module: &Path, data: &Path) -> Probe {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let timeout = format!("{}ms", GUEST_TIMEOUT.as_millis());
        let data = data.to_str().expect("UTF-8 temp dir");
        let sandbox = [
            "--guest-data",
            data,
            "--guest-memory",
            "64MiB",
            "--guest-timeout",
            &timeout,
            "--guest-metric",
            "rule_hits",
        ];
        // Compile (10 to 14 s for the 18 MB component on two cores) into
        // the shared cache first, outside the agent's start-up wait.
        let mut check = vec!["check", module.to_str().expect("UTF-8 path")];
        check.extend(sandbox);
        let check = run_host(&check);
        assert!(
            check.status.success(),
            "spoa-host check refused the probe guest:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let metrics_arg = metrics.to_string();
        let mut args = sandbox.to_vec();
        args.extend(["--metrics-address", &metrics_arg]);
        let agent = Agent::start(module, &args);
        let client = SpopClient::pipelined(agent.addr());
        Probe {
            agent,
            metrics,
            client,
            frame_id: 0,
        }
    }

    /// Sends one message; returns its ACK's actions and how long it took.
    fn call(&mut self, msg: Message) -> (Vec<Action>, Duration) {
        self.frame_id += 1;
        let started = Instant::now();
        self.client.send(&notify_frame(1, self.frame_id, vec![msg]));
        let ack = self.client.recv_ack();
        let took = started.elapsed();
        assert_eq!(
            (ack.stream_id, ack.frame_id),
            (1, self.frame_id),
            "ACK for another frame\nagent log:\n{}",
            self.agent.log_text()
        );
        (ack.actions, took)
    }

    /// The `txn.outcome` the guest reports for `name`; then checks the same
    /// connection still serves the next message.
    fn outcome(&mut self, name: &str, args: Vec<(&str, TypedData)>) -> String {
        let (actions, took) = self.call(message(name, args));
        let outcome = match actions.as_slice() {
            [
                Action::SetVar {
                    scope: VarScope::Txn,
                    name: var,
                    value: TypedData::String(text),
                },
            ] if &var[..] == b"outcome" => String::from_utf8_lossy(text).into_owned(),
            other => panic!(
                "{name}: expected one set-var txn.outcome, got {other:?}\nagent log:\n{}",
                self.agent.log_text()
            ),
        };
        eprintln!("{name} ({took:?}): {outcome:?}");
        self.assert_still_served(name);
        outcome
    }

    /// Asks `name` and checks the guest was refused; returns the outcome.
    fn assert_refused(&mut self, name: &str) -> String {
        let outcome = self.outcome(name, vec![]);
        assert!(
            refused(&outcome),
            "{name}: {outcome}\nagent log:\n{}",
            self.log()
        );
        outcome
    }

    /// The smoke message, answered with no action, on the same connection.
    fn assert_still_served(&mut self, after: &str) {
        let (actions, _) = self.call(message("check-client-ip", vec![]));
        assert!(
            actions.is_empty(),
            "check-client-ip after {after}: {actions:?}\nagent log:\n{}",
            self.agent.log_text()
        );
    }

    fn metric(&self, series: &str) -> f64 {
        http::metric_value(&http::scrape_metrics(self.metrics), series)
    }

    /// Failed guest calls of any kind.
    fn guest_failures(&self) -> f64 {
        http::scrape_metrics(self.metrics)
            .lines()
            .filter(|line| line.starts_with("spoa_guest_failures_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn log(&self) -> String {
        self.agent.log_text()
    }
}

/// The guest saw an error (`denied: …` for PermissionError, `error: …` for
/// anything else), not `ok: …`.
fn refused(outcome: &str) -> bool {
    outcome.starts_with("denied: ") || outcome.starts_with("error: ")
}

/// The files of `dir` with their contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("reading the data dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let content = std::fs::read(entry.path()).expect("reading a data file");
            (entry.file_name().to_string_lossy().into_owned(), content)
        })
        .collect()
}

#[test]
fn the_wasi_surface_refuses_everything_but_reading_data() {
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(data.path().join("blocklist.txt"), BLOCKLIST).expect("writing blocklist.txt");
    let files_before = snapshot(data.path());
    let mut probe = Probe::start(&sandbox_guest(), data.path());

    // The host's files: no directory but /data exists for the guest.
    let outcome = probe.assert_refused("open-passwd");
    assert!(!outcome.contains("root:"), "{outcome}");
    probe.assert_refused("list-root");

    // The shared key-value store, from Python: granted `default` works
    // (expiry, counters), an ungranted bucket is `access-denied`.
    let outcome = probe.outcome("kv", vec![]);
    assert_eq!(
        outcome,
        "ok: get=b'v' n=1,3 ttl=yes secret=Error_AccessDenied",
        "agent log:\n{}",
        probe.log()
    );

    // The same through the SDK package (spoa.HostStore), and its counters:
    // `rule_hits` is allowed, `not_allowed` is not.
    let outcome = probe.outcome("sdk", vec![]);
    assert_eq!(
        outcome,
        "ok: get=b'v' n=2 ttl=yes secret=access denied (bucket not granted) counted=True refused=False",
        "agent log:\n{}",
        probe.log()
    );

    // stdout and stderr lines become the guest's log records.
    let outcome = probe.outcome("print", vec![]);
    assert_eq!(outcome, "ok: printed");
    assert!(
        support::eventually(Duration::from_secs(5), || {
            let log = probe.log();
            log.contains("sandbox probe line on stdout")
                && log.contains("sandbox probe line on stderr")
        }),
        "stdout/stderr not in the agent log:\n{}",
        probe.log()
    );

    // No environment variables and no arguments (the agent itself has
    // RUST_LOG, XDG_CACHE_HOME, PATH, HOME…).
    let outcome = probe.outcome("read-env", vec![]);
    assert!(
        outcome.starts_with("ok: 0 variables, HOME=None, PATH=None, argv=[]"),
        "read-env: {outcome}\nagent log:\n{}",
        probe.log()
    );

    // /data is read-only: neither a new file nor an existing one is written.
    let outcome = probe.outcome("write-data", vec![]);
    let attempts: Vec<&str> = outcome.split(" | ").collect();
    assert!(
        matches!(
            attempts.as_slice(),
            [created, overwritten]
                if created.strip_prefix("create /data/x.txt: ").is_some_and(refused)
                    && overwritten
                        .strip_prefix("overwrite /data/blocklist.txt: ")
                        .is_some_and(refused)
        ),
        "write-data: {outcome}\nagent log:\n{}",
        probe.log()
    );
    assert_eq!(
        snapshot(data.path()),
        files_before,
        "write-data changed the data directory ({outcome})"
    );

    // …but it is readable: the grant works.
    let outcome = probe.outcome("read-data", vec![]);
    assert_eq!(
        outcome,
        format!("ok: {BLOCKLIST}"),
        "read-data\nagent log:\n{}",
        probe.log()
    );

    // No socket reaches anything, not even the agent's own port.
    let connections = probe.metric("spoa_connections_total");
    let port = TypedData::Int64(probe.agent.port.into());
    let outcome = probe.outcome("connect-agent", vec![("port", port)]);
    let attempts: Vec<&str> = outcome.split(" | ").collect();
    assert!(
        matches!(
            attempts.as_slice(),
            [created, raw]
                if created.strip_prefix("create_connection: ").is_some_and(refused)
                    && (raw.strip_prefix("socket.connect: socket(): ").is_some_and(refused)
                        || raw.strip_prefix("socket.connect: connect(): ").is_some_and(refused))
        ),
        "connect-agent: {outcome}\nagent log:\n{}",
        probe.log()
    );
    // An accepted connection would be counted as soon as the agent accepts it.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        probe.metric("spoa_connections_total"),
        connections,
        "the guest connected to the agent ({outcome})\nagent log:\n{}",
        probe.log()
    );

    probe.assert_refused("resolve");

    // So far the guest answered every probe itself: no call failed.
    assert_eq!(
        probe.guest_failures(),
        0.0,
        "a probe failed in the host\nagent log:\n{}",
        probe.log()
    );

    // A 5 s sleep is cut at the deadline and costs that message only.
    let (actions, took) = probe.call(message("sleep", vec![]));
    eprintln!("sleep: empty ACK after {took:?} (--guest-timeout {GUEST_TIMEOUT:?})");
    assert!(
        actions.is_empty(),
        "sleep: {actions:?}\nagent log:\n{}",
        probe.log()
    );
    assert!(
        took >= GUEST_TIMEOUT && took < GUEST_TIMEOUT + CUT_MARGIN,
        "sleep: ACK after {took:?} with --guest-timeout {GUEST_TIMEOUT:?}\nagent log:\n{}",
        probe.log()
    );
    probe.assert_still_served("sleep");
    assert_eq!(
        probe.metric("spoa_guest_failures_total{guest=\"default\",kind=\"timeout\"}"),
        1.0,
        "sleep\nagent log:\n{}",
        probe.log()
    );
    assert_eq!(probe.guest_failures(), 1.0, "{}", probe.log());
    // The warning is logged before the ACK leaves; the pipe may lag a little.
    let cut = |log: &str| {
        log.lines().any(|line| {
            line.contains("spoe_message=sleep") && line.contains("exceeded its time budget")
        })
    };
    support::eventually(Duration::from_secs(2), || cut(&probe.log()));
    let log = probe.log();
    assert!(cut(&log), "no timeout warning for sleep:\n{log}");

    // `exit` fails that call (kind trap) and nothing else. (WASI 0.2's exit
    // carries only success or failure: `os._exit(3)` arrives as exit(1).)
    let (actions, _) = probe.call(message("exit", vec![]));
    assert!(actions.is_empty(), "exit: {actions:?}\n{}", probe.log());
    probe.assert_still_served("exit");
    assert_eq!(
        probe.metric("spoa_guest_failures_total{guest=\"default\",kind=\"trap\"}"),
        1.0,
        "exit\nagent log:\n{}",
        probe.log()
    );
    support::eventually(Duration::from_secs(2), || {
        probe.log().contains("guest called exit(")
    });
    assert!(
        probe.log().contains("guest called exit("),
        "{}",
        probe.log()
    );

    // Afterwards (a fresh instance replaced the abandoned one) the same
    // connection is served and the grant still works.
    let outcome = probe.outcome("read-data", vec![]);
    assert_eq!(outcome, format!("ok: {BLOCKLIST}"), "{}", probe.log());
    assert!(probe.agent.is_alive(), "{}", probe.log());
    assert_eq!(snapshot(data.path()), files_before);
    assert!(!data.path().join("x.txt").exists());
}
