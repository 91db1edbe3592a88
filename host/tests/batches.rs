//! The batch export (`handle-messages`, WIT 0.1.4) through real SPOP
//! traffic, with `tests/fixtures/guest-batch` (built with the SDK, so it
//! exports it): a burst enters the guest in batches capped by
//! `--guest-batch`; a failure inside a batch costs only its message; each
//! ACK leaves as soon as its NOTIFY is answered; and a run of short calls
//! gives up its thread every tick.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use spoa_host::spop::{Ack, TypedData};
use support::agent::Agent;
use support::spop_client::{Session, SpopClient, encoded, message, notify_frame};

fn batch_guest() -> std::path::PathBuf {
    support::artifact("fixtures/guest_batch.wasm")
}

fn int(value: i64) -> TypedData {
    TypedData::Int64(value)
}

/// The `txn` variables an ACK sets, in order, as (name, value) pairs.
fn vars(ack: &Ack) -> Vec<(String, TypedData)> {
    support::spop_client::set_vars(ack).collect()
}

/// The values of every `name` variable an ACK sets, in order.
fn values_of(ack: &Ack, name: &str) -> Vec<i64> {
    vars(ack)
        .into_iter()
        .filter(|(n, _)| n == name)
        .filter_map(|(_, v)| v.as_i64())
        .collect()
}

/// Sends `count` NOTIFYs of `build(i)` in one write on a new connection and
/// returns each ACK with the time it arrived after the write.
fn burst(
    addr: SocketAddr,
    count: u64,
    build: impl Fn(u64) -> Vec<spoa_host::spop::Message>,
) -> Vec<(Ack, Duration)> {
    let mut client = SpopClient::pipelined(addr);
    client.set_read_timeout(Duration::from_secs(20));
    let mut bytes = Vec::new();
    for frame_id in 1..=count {
        bytes.extend(encoded(&notify_frame(1, frame_id, build(frame_id))));
    }
    let sent = Instant::now();
    client
        .stream()
        .write_all(&bytes)
        .expect("sending the burst");
    (0..count)
        .map(|_| {
            let ack = client.recv_ack();
            (ack, sent.elapsed())
        })
        .collect()
}

/// Warms the batch sizing up: a few bursts of cheap messages, so the cost
/// the host measures per message is a warm instance's.
fn warm_up(addr: SocketAddr) {
    for _ in 0..3 {
        burst(addr, 32, |_| vec![message("count", vec![])]);
    }
}

#[test]
fn a_burst_enters_the_guest_in_batches_no_larger_than_the_cap() {
    let biggest_batch = |args: &[&str]| {
        let agent = Agent::start(&batch_guest(), args);
        warm_up(agent.addr());
        let acks = burst(agent.addr(), 64, |_| vec![message("count", vec![])]);
        assert_eq!(acks.len(), 64, "every NOTIFY answered");
        acks.iter()
            .flat_map(|(ack, _)| values_of(ack, "batch"))
            .max()
            .expect("a batch size")
    };
    let default = biggest_batch(&[]);
    assert!(
        default > 1,
        "a burst enters the guest more than one message at a time: {default}"
    );
    let capped = biggest_batch(&["--guest-batch", "4"]);
    assert!(
        (2..=4).contains(&capped),
        "--guest-batch 4 caps a batch at 4: {capped}"
    );
    assert_eq!(
        biggest_batch(&["--guest-batch", "1"]),
        0,
        "--guest-batch 1: one handle-message call per message"
    );
}

/// The agent's arguments for the failure tests: a deadline of `timeout`,
/// the failure kind in `txn.err`, a small memory cap, and `more`.
fn failure_agent(timeout: &str, more: &[&str]) -> Agent {
    let mut args = vec![
        "--guest-timeout",
        timeout,
        "--error-var",
        "err",
        "--guest-memory",
        "32MiB",
    ];
    args.extend_from_slice(more);
    Agent::start(&batch_guest(), &args)
}

/// One NOTIFY of five messages, the third one `culprit`, each answer handed
/// to the host as soon as it is ready (`--guest-answer-group 1`): the two
/// before it keep their answers from the batch, the culprit gets none (its
/// failure kind through --error-var), and the two after it are handled
/// again one by one (`txn.batch` = 0), on an instance that has not run the
/// batch (but for `skip`, which leaves its instance sound).
fn one_failure_in_a_batch(culprit: &str, expected_kind: &str) {
    let agent = failure_agent("50ms", &["--guest-answer-group", "1"]);
    warm_up(agent.addr());
    let mut session = Session::connect(agent.addr());
    let mut messages: Vec<_> = (0..5).map(|_| message("count", vec![])).collect();
    messages[2] = message(culprit, vec![]);
    let ack = session.notify(messages);
    let vars = vars(&ack);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "count", "batch", "count", "batch", "err", "count", "batch", "count", "batch"
        ],
        "{culprit}: {vars:?}"
    );
    let batch: Vec<i64> = values_of(&ack, "batch");
    // A batch that used its share of a tick returns early and the host
    // enters it again with the rest: a batch, but maybe not of all five.
    assert!(
        batch[..2].iter().all(|&size| size > 1),
        "{culprit}: answered in a batch: {vars:?}"
    );
    assert_eq!(
        batch[2..],
        [0, 0],
        "{culprit}: handled again one by one: {vars:?}"
    );
    assert_eq!(
        vars[4].1,
        TypedData::String(expected_kind.as_bytes().to_vec().into()),
        "{culprit}"
    );
    if culprit != "skip" {
        let counts = values_of(&ack, "count");
        assert!(
            counts[2] < counts[1],
            "{culprit}: the messages after it ran on another instance: {counts:?}"
        );
    }
    // The connection and the guest go on.
    let next = session.notify(vec![message("count", vec![])]);
    assert_eq!(values_of(&next, "count").len(), 1, "{culprit}");
}

#[test]
fn a_trap_in_a_batch_costs_only_its_message() {
    one_failure_in_a_batch("trap", "trap");
}

#[test]
fn a_timeout_in_a_batch_costs_only_its_message() {
    one_failure_in_a_batch("loop", "timeout");
}

#[test]
fn a_memory_blow_up_in_a_batch_costs_only_its_message() {
    one_failure_in_a_batch("hog", "memory");
}

#[test]
fn an_answer_out_of_turn_costs_only_its_message() {
    one_failure_in_a_batch("out-of-turn", "trap");
}

#[test]
fn a_batch_that_returns_early_costs_only_the_first_message_it_left() {
    one_failure_in_a_batch("skip", "invalid_output");
}

/// A guest that traps after it answered the last message of its batch
/// (batches of two: frames 3 and 4): that message keeps its answer, the
/// failure costs no message, and the next batch is answered in full.
#[test]
fn a_trap_after_the_last_answer_of_a_batch_costs_no_message() {
    let agent = Agent::start(
        &batch_guest(),
        &["--error-var", "err", "--guest-batch", "2"],
    );
    warm_up(agent.addr());
    let acks = burst(agent.addr(), 8, |frame_id| match frame_id {
        4 => vec![message("answer-then-trap", vec![])],
        _ => vec![message("count", vec![])],
    });
    for (ack, _) in &acks {
        let vars = vars(ack);
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        let expected: &[&str] = if ack.frame_id == 4 {
            &[]
        } else {
            &["count", "batch"]
        };
        assert_eq!(names, expected, "frame {}: {vars:?}", ack.frame_id);
    }
}

/// Five messages, the second one `culprit`, with answers held back in
/// groups (the default for a packed batch, after the warm-up measured cheap
/// messages): the guest fails before it hands over any answer of the group,
/// so the host cannot tell which message failed. Every message of the group
/// runs again one by one (`txn.batch` = 0), and only the culprit, failing
/// again, gets the failure; the messages after it run on another instance
/// than the one before it. (`timeout`: the memory hog fails twice, and on a
/// loaded machine must reach its cap before its deadline both times.)
fn one_failure_in_a_group_of_held_answers(culprit: &str, expected_kind: &str, timeout: &str) {
    let agent = failure_agent(timeout, &[]);
    warm_up(agent.addr());
    let mut session = Session::connect(agent.addr());
    let mut messages: Vec<_> = (0..5).map(|_| message("count", vec![])).collect();
    messages[1] = message(culprit, vec![]);
    let ack = session.notify(messages);
    let vars = vars(&ack);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "count", "batch", "err", "count", "batch", "count", "batch", "count", "batch"
        ],
        "{culprit}: {vars:?}"
    );
    assert_eq!(
        values_of(&ack, "batch"),
        [0, 0, 0, 0],
        "{culprit}: the group ran again one by one: {vars:?}"
    );
    assert_eq!(
        vars[2].1,
        TypedData::String(expected_kind.as_bytes().to_vec().into()),
        "{culprit}"
    );
    let counts = values_of(&ack, "count");
    assert!(
        counts[1] <= counts[0],
        "{culprit}: after the culprit, another instance: {counts:?}"
    );
    let next = session.notify(vec![message("count", vec![])]);
    assert_eq!(values_of(&next, "count").len(), 1, "{culprit}");
}

#[test]
fn a_trap_among_held_answers_costs_only_its_message() {
    one_failure_in_a_group_of_held_answers("trap", "trap", "50ms");
}

#[test]
fn a_timeout_among_held_answers_costs_only_its_message() {
    one_failure_in_a_group_of_held_answers("loop", "timeout", "50ms");
}

#[test]
fn a_memory_blow_up_among_held_answers_costs_only_its_message() {
    one_failure_in_a_group_of_held_answers("hog", "memory", "2s");
}

#[test]
fn an_error_answer_in_a_batch_leaves_the_rest_of_the_batch_alone() {
    let agent = Agent::start(&batch_guest(), &["--error-var", "err"]);
    warm_up(agent.addr());
    let mut session = Session::connect(agent.addr());
    let mut messages: Vec<_> = (0..5).map(|_| message("count", vec![])).collect();
    messages[2] = message("error", vec![]);
    let ack = session.notify(messages);
    let batch = values_of(&ack, "batch");
    assert_eq!(batch.len(), 4, "{:?}", vars(&ack));
    assert!(
        batch.iter().all(|&size| size > 1),
        "all in batches: {:?}",
        vars(&ack)
    );
}

/// 50 pipelined NOTIFYs of a message that takes about 2 ms: the first ACK
/// leaves after about one message's time, not the burst's (HAProxy's
/// `timeout processing` counts per NOTIFY).
#[test]
fn each_ack_leaves_as_soon_as_its_notify_is_answered() {
    for args in [&[][..], &["--guest-batch", "1"][..]] {
        let mut full = vec!["--guest-timeout", "100ms"];
        full.extend_from_slice(args);
        let agent = Agent::start(&batch_guest(), &full);
        warm_up(agent.addr());
        let acks = burst(agent.addr(), 50, |_| {
            vec![message("spin", vec![("us", int(2000))])]
        });
        let first = acks[0].1;
        let last = acks[acks.len() - 1].1;
        for (ack, _) in &acks {
            assert!(
                vars(ack).iter().any(|(n, _)| n == "done"),
                "{args:?}: every spin answered: {:?}",
                vars(ack)
            );
        }
        assert!(
            first * 5 < last,
            "{args:?}: the first ACK ({first:?}) left long before the last ({last:?})"
        );
    }
}

/// A burst of direct calls of about 0.3 ms each (under a tick, so none is
/// cut) on a one-thread data plane: another connection's message is
/// answered within a few ticks, not after the burst's ~60 ms.
#[test]
fn a_run_of_short_calls_gives_up_its_thread_every_tick() {
    for args in [&[][..], &["--guest-batch", "1"][..]] {
        let mut full = vec!["-n", "1"];
        full.extend_from_slice(args);
        let agent = Agent::start(&batch_guest(), &full);
        let addr = agent.addr();
        warm_up(addr);
        let mut other = Session::connect(addr);
        other.notify(vec![message("count", vec![])]);
        let mut spinner = SpopClient::pipelined(addr);
        let mut bytes = Vec::new();
        for frame_id in 1..=200 {
            let spin = message("spin", vec![("us", int(300))]);
            bytes.extend(encoded(&notify_frame(1, frame_id, vec![spin])));
        }
        let started = Instant::now();
        spinner
            .stream()
            .write_all(&bytes)
            .expect("sending the burst");
        std::thread::sleep(Duration::from_millis(5));
        let asked = Instant::now();
        other.notify(vec![message("count", vec![])]);
        let waited = asked.elapsed();
        for _ in 0..200 {
            spinner.recv_ack();
        }
        let burst_took = started.elapsed();
        assert!(
            waited * 4 < burst_took,
            "{args:?}: the other connection waited {waited:?}, the burst took {burst_took:?}"
        );
        assert!(
            waited < Duration::from_millis(15),
            "{args:?}: the other connection waited {waited:?}"
        );
    }
}

/// A guest with WASI (its calls run on fibers, under a wall-clock bound per
/// answer) that was idle longer than that bound: each burst after the pause
/// is answered in full, the first message's time counted from when its
/// batch started, not from the instance's last answer.
#[test]
fn a_batch_on_a_fiber_after_a_pause_answers_every_message() {
    let module = support::artifact("examples/iprep_rust.wasm");
    let grant = format!(
        "blocklist={}",
        support::workspace_root()
            .join("examples/guests/rust/data/blocklist.txt")
            .display()
    );
    let agent = Agent::start(&module, &["--ip-table", &grant, "-n", "1"]);
    let mut session = Session::connect(agent.addr());
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(40));
        let check = || {
            message(
                "check-client-ip",
                vec![("ip", TypedData::Ipv4("198.51.100.7".parse().expect("ip")))],
            )
        };
        let ack = session.notify((0..4).map(|_| check()).collect());
        assert_eq!(
            values_of(&ack, "ip_score").len(),
            4,
            "round {round}: {:?}",
            vars(&ack)
        );
    }
}

/// The load log names the export a burst enters the guest through: the
/// packed batch for an SDK guest of 0.1.6, the typed batch for one built
/// against 0.1.5 (which has no packed export), one call per message for
/// one of 0.1.0 (which has no batch export).
#[test]
fn the_load_log_names_the_export_each_world_is_entered_through() {
    for (module, export) in [
        (batch_guest(), "handle-packed-messages"),
        (
            support::source_fixture("prebuilt/guest_iprep_0_1_5.wasm"),
            "handle-messages",
        ),
        (
            support::source_fixture("prebuilt/guest_iprep_0_1_0.wasm"),
            "handle-message",
        ),
    ] {
        let agent = Agent::start(&module, &[]);
        let expected = format!("entered_by=\"{export}\"");
        // The log is read from the agent's stderr as it comes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.log_text().contains(&expected) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            agent.log_text().contains(&expected),
            "{}: {expected} in {}",
            module.display(),
            agent.log_text()
        );
    }
}
