//! Every hostile input from the protocol reference gets its DISCONNECT status
//! (or a clean close), and the agent keeps serving every other connection.

mod support;

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spoa_host::spop::{Action, Frame, KvList, TypedData};
use support::agent::Agent;
use support::iprep_guest;
use support::spop_client::{
    SpopClient, check_client_ip, encoded, hello_frame, message, notify_frame, score_of,
};

/// A connected client that finished HELLO (max-frame-size 16380).
fn ready(agent: &Agent) -> SpopClient {
    SpopClient::pipelined(agent.addr())
}

/// A fresh healthy connection still gets scores.
fn assert_still_serving(agent: &mut Agent) {
    assert!(agent.is_alive(), "agent died:\n{}", agent.log_text());
    let mut client = ready(agent);
    client.send(&notify_frame(
        1,
        1,
        vec![check_client_ip(Ipv4Addr::LOCALHOST)],
    ));
    assert!(score_of(&client.recv_ack()).is_some());
}

fn expect_status(client: &mut SpopClient, code: u32) {
    let (status, message) = client.expect_disconnect();
    assert_eq!(status, code, "message: {message}");
    client.expect_closed();
}

/// Sends `raw` on a fresh connection (after HELLO when `after_hello`) and
/// expects AGENT-DISCONNECT `code`, then checks the agent serves others.
fn case(after_hello: bool, raw: &[u8], code: u32) {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    let mut client = if after_hello {
        ready(&agent)
    } else {
        SpopClient::connect(agent.addr())
    };
    client.send_raw(raw);
    expect_status(&mut client, code);
    assert_still_serving(&mut agent);
}

/// A frame with an arbitrary body: length prefix + bytes.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// NOTIFY header (FIN, stream 1, frame 1) followed by `payload`.
fn notify_with(payload: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 0, 0, 0, 1, 1, 1];
    body.extend_from_slice(payload);
    framed(&body)
}

#[test]
fn garbage_instead_of_hello_is_an_invalid_frame() {
    case(false, &framed(&[0xff; 12]), 4);
}

#[test]
fn http_request_is_refused_as_too_big_without_buffering() {
    let started = Instant::now();
    case(false, b"GET / HTTP/1.1\r\nHost: agent\r\n\r\n", 3);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn notify_before_hello_is_an_invalid_frame() {
    case(
        false,
        &encoded(&notify_frame(
            1,
            1,
            vec![check_client_ip(Ipv4Addr::LOCALHOST)],
        )),
        4,
    );
}

#[test]
fn length_beyond_negotiated_size_gets_status_3_before_the_body() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::connect(agent.addr());
    client.send(&hello_frame("2.0", 1024, "pipelining", false));
    assert!(matches!(client.recv(), Ok(Frame::AgentHello(_))));
    // Only the prefix: the agent must answer without waiting for 2000 bytes.
    client.send_raw(&2000u32.to_be_bytes());
    expect_status(&mut client, 3);
    assert_still_serving(&mut agent);
}

#[test]
fn zero_length_frame_is_invalid() {
    case(true, &[0, 0, 0, 0], 4);
}

#[test]
fn unknown_frame_type_is_invalid() {
    case(true, &framed(&[42, 0, 0, 0, 1, 0, 0]), 4);
}

#[test]
fn agent_frames_sent_to_the_agent_are_invalid() {
    let ack = Frame::Ack(spoa_host::spop::Ack {
        stream_id: 1,
        frame_id: 1,
        actions: vec![],
    });
    case(true, &encoded(&ack), 4);
    case(true, &encoded(&Frame::AgentHello(KvList::new())), 4);
    case(true, &encoded(&Frame::AgentDisconnect(KvList::new())), 4);
}

#[test]
fn second_hello_is_invalid() {
    case(true, &encoded(&hello_frame("2.0", 16380, "", false)), 4);
}

#[test]
fn varint_longer_than_ten_bytes_is_invalid() {
    let mut body = vec![3, 0, 0, 0, 1];
    body.extend_from_slice(&[0xff; 11]);
    body.push(1);
    case(true, &framed(&body), 4);
}

#[test]
fn nb_args_beyond_the_args_present_is_invalid() {
    // "m" with NB-ARGS 3 but a single argument.
    case(true, &notify_with(&[1, b'm', 3, 0, 0]), 4);
}

#[test]
fn reserved_data_types_are_invalid() {
    for reserved in 10u8..=15 {
        case(true, &notify_with(&[1, b'm', 1, 0, reserved]), 4);
    }
}

#[test]
fn string_length_past_the_end_is_invalid() {
    case(true, &notify_with(&[1, b'm', 1, 0, 8, 50, b'a', b'b']), 4);
}

#[test]
fn fin_unset_or_host_order_flags_get_status_10() {
    let mut host_order = encoded(&notify_frame(
        20,
        1,
        vec![check_client_ip(Ipv4Addr::LOCALHOST)],
    ));
    host_order[5..9].copy_from_slice(&[1, 0, 0, 0]);
    case(true, &host_order, 10);
    let mut abort = encoded(&notify_frame(20, 1, vec![]));
    abort[5..9].copy_from_slice(&[0, 0, 0, 3]);
    case(true, &abort, 10);
}

#[test]
fn hello_missing_keys_or_bad_values_get_their_status() {
    let s = |v: &str| TypedData::String(Bytes::copy_from_slice(v.as_bytes()));
    let cases: Vec<(KvList, u32)> = vec![
        (
            KvList::new()
                .with("max-frame-size", TypedData::Uint32(16380))
                .with("capabilities", s("")),
            5,
        ),
        (
            KvList::new()
                .with("supported-versions", s("2.0"))
                .with("capabilities", s("")),
            6,
        ),
        (
            KvList::new()
                .with("supported-versions", s("2.0"))
                .with("max-frame-size", TypedData::Uint32(16380)),
            7,
        ),
        (
            KvList::new()
                .with("supported-versions", s("1.0, 9.9"))
                .with("max-frame-size", TypedData::Uint32(16380))
                .with("capabilities", s("")),
            8,
        ),
        (
            KvList::new()
                .with("supported-versions", s("2.0"))
                .with("max-frame-size", TypedData::Uint32(255))
                .with("capabilities", s("")),
            9,
        ),
    ];
    let mut agent = Agent::start(&iprep_guest(), &[]);
    for (hello, code) in cases {
        let mut client = SpopClient::connect(agent.addr());
        client.send(&Frame::HaproxyHello(hello));
        expect_status(&mut client, code);
    }
    assert_still_serving(&mut agent);
}

#[test]
fn several_versions_with_spaces_are_accepted() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::connect(agent.addr());
    client.send(&hello_frame(
        " 1.0 ,2.0 , 3.0",
        16380,
        " async , pipelining ",
        false,
    ));
    match client.recv() {
        Ok(Frame::AgentHello(kv)) => {
            assert_eq!(kv.get_str("capabilities"), Some(&b"pipelining"[..]))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn silent_peer_is_closed_after_the_hello_timeout() {
    let mut agent = Agent::start(&iprep_guest(), &["--hello-timeout", "300ms"]);
    let mut client = SpopClient::connect(agent.addr());
    let started = Instant::now();
    expect_status(&mut client, 2);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_still_serving(&mut agent);
}

#[test]
fn idle_connection_is_closed_after_the_idle_timeout() {
    let mut agent = Agent::start(&iprep_guest(), &["--idle-timeout", "300ms"]);
    let mut client = ready(&agent);
    expect_status(&mut client, 2);
    assert_still_serving(&mut agent);
}

#[test]
fn truncated_frame_then_close_is_a_clean_end() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    let mut client = ready(&agent);
    let frame = encoded(&notify_frame(
        1,
        1,
        vec![check_client_ip(Ipv4Addr::LOCALHOST)],
    ));
    client.send_raw(&frame[..frame.len() - 3]);
    client.stream().shutdown(Shutdown::Write).expect("shutdown");
    client.expect_closed();
    assert_still_serving(&mut agent);
    assert!(!agent.log_text().contains("ERROR"), "{}", agent.log_text());
}

#[test]
fn close_or_reset_without_disconnect_is_a_normal_end() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    for _ in 0..50 {
        let client = ready(&agent);
        drop(client);
    }
    for _ in 0..50 {
        let mut client = ready(&agent);
        // SO_LINGER 0: close sends a TCP reset.
        assert!(socket2_linger_zero(client.stream()).is_some());
        drop(client);
    }
    assert_still_serving(&mut agent);
    // The whole log, read to its end after the agent exited.
    let log = agent.stop();
    assert!(log.contains("spoa-host stopped"), "{log}");
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "EOF/reset logged as a problem:\n{log}"
    );
}

/// Sets SO_LINGER to zero so that closing the socket resets the connection.
fn socket2_linger_zero(stream: &mut std::net::TcpStream) -> Option<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: valid fd owned by `stream`, pointer to a live struct of the declared size.
    let rc = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &linger,
            std::mem::size_of::<Linger>() as u32,
        )
    };
    (rc == 0).then_some(())
}

#[test]
fn notifies_before_a_bad_frame_are_answered_first() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    let mut client = ready(&agent);
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(encoded(&notify_frame(
            9,
            i + 1,
            vec![check_client_ip(Ipv4Addr::LOCALHOST)],
        )));
    }
    batch.extend(framed(&[42, 0, 0, 0, 1, 0, 0]));
    client.send_raw(&batch);
    for i in 0..10 {
        let ack = client.recv_ack();
        assert_eq!(ack.frame_id, i + 1);
        assert!(score_of(&ack).is_some());
    }
    expect_status(&mut client, 4);
    assert_still_serving(&mut agent);
}

#[test]
fn non_utf8_strings_binary_and_every_type_reach_the_guest() {
    // The fixture's `echo` returns every argument as a variable of the same
    // name and value: what comes back is what the guest received.
    let agent = Agent::start(&support::hostile_guest('A'), &[]);
    let mut client = ready(&agent);
    let args = vec![
        ("ip", TypedData::Ipv6("2001:db8::1".parse().expect("addr"))),
        (
            "s",
            TypedData::String(Bytes::from_static(&[0xff, 0xfe, b'x'])),
        ),
        ("b", TypedData::Binary(Bytes::from_static(&[0, 1, 2]))),
        ("n", TypedData::Null),
        ("t", TypedData::Bool(true)),
        ("i", TypedData::Int32(-7)),
        ("u", TypedData::Uint32(7)),
        ("l", TypedData::Int64(-1)),
        ("q", TypedData::Uint64(u64::MAX)),
        ("", TypedData::Ipv4(Ipv4Addr::BROADCAST)),
    ];
    client.send(&notify_frame(4, 4, vec![message("echo", args.clone())]));
    let ack = client.recv_ack();
    let echoed: Vec<(String, TypedData)> = ack
        .actions
        .iter()
        .map(|action| match action {
            Action::SetVar { name, value, .. } => {
                (String::from_utf8_lossy(name).into_owned(), value.clone())
            }
            other => panic!("unexpected action {other:?}"),
        })
        .collect();
    let expected: Vec<(String, TypedData)> = args
        .into_iter()
        .enumerate()
        .map(|(i, (name, value))| {
            let name = if name.is_empty() {
                format!("arg{i}")
            } else {
                name.to_owned()
            };
            (name, value)
        })
        .collect();
    assert_eq!(echoed, expected, "every value reaches the guest unchanged");
}

#[test]
fn max_connections_refuses_extra_peers_cleanly() {
    let mut agent = Agent::start(&iprep_guest(), &["--max-connections", "2"]);
    // The start-up probe of the port held a slot until the agent saw it close.
    let mut first = ready_once_a_slot_is_free(&agent);
    let mut second = ready_once_a_slot_is_free(&agent);
    let mut third = SpopClient::connect(agent.addr());
    expect_status(&mut third, 13);
    for client in [&mut first, &mut second] {
        client.send(&notify_frame(
            1,
            1,
            vec![check_client_ip(Ipv4Addr::LOCALHOST)],
        ));
        assert!(score_of(&client.recv_ack()).is_some());
    }
    drop(first);
    // A slot frees up once the agent sees the close.
    let _third = ready_once_a_slot_is_free(&agent);
    assert!(agent.is_alive());
}

/// Each peer refused for --max-connections is counted once as a refusal and
/// once as a DISCONNECT sent (status 13): the two series agree.
#[test]
fn a_refused_peer_is_counted_once_and_its_disconnect_once() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let metrics_arg = metrics.to_string();
    let agent = Agent::start(
        &iprep_guest(),
        &["--max-connections", "1", "--metrics-address", &metrics_arg],
    );
    let _held = ready_once_a_slot_is_free(&agent);
    let page = support::http::scrape_metrics(metrics);
    let refused = "spoa_connections_refused_total{reason=\"max_connections\"}";
    let disconnects = "spoa_disconnects_total{status=\"13\"}";
    let (refused_before, sent_before) = (
        support::http::metric_value(&page, refused),
        support::http::metric_value(&page, disconnects),
    );
    for _ in 0..3 {
        let mut extra = SpopClient::connect(agent.addr());
        expect_status(&mut extra, 13);
    }
    let page = support::http::scrape_metrics(metrics);
    assert_eq!(
        support::http::metric_value(&page, refused) - refused_before,
        3.0
    );
    assert_eq!(
        support::http::metric_value(&page, disconnects) - sent_before,
        3.0
    );
}

/// HELLO, retried while the agent refuses with status 13 (all slots taken).
fn ready_once_a_slot_is_free(agent: &Agent) -> SpopClient {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut client = SpopClient::connect(agent.addr());
        client.send(&hello_frame("2.0", 16380, "pipelining", false));
        match client.recv() {
            Ok(Frame::AgentHello(_)) => return client,
            other if Instant::now() < deadline => {
                assert!(
                    matches!(&other, Ok(Frame::AgentDisconnect(kv)) if kv.get("status-code").and_then(|v| v.as_u64()) == Some(13)),
                    "{other:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("no free slot within 3 s: {other:?}"),
        }
    }
}

#[test]
fn sigterm_answers_every_received_notify_then_disconnects_with_status_0() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    let mut clients: Vec<SpopClient> = (0..4).map(|_| ready(&agent)).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        let mut batch = Vec::new();
        for i in 0..200u64 {
            batch.extend(encoded(&notify_frame(
                c as u64,
                i + 1,
                vec![check_client_ip(Ipv4Addr::LOCALHOST)],
            )));
        }
        client.send_raw(&batch);
    }
    agent.signal("TERM");
    for client in &mut clients {
        let mut acked = 0;
        loop {
            match client.recv() {
                Ok(Frame::Ack(ack)) => {
                    assert!(score_of(&ack).is_some());
                    acked += 1;
                }
                Ok(Frame::AgentDisconnect(kv)) => {
                    assert_eq!(support::spop_client::disconnect_fields(&kv).0, 0);
                    break;
                }
                other => panic!("unexpected {other:?} after {acked} ACKs"),
            }
        }
        assert_eq!(acked, 200, "every NOTIFY sent before SIGTERM is answered");
    }
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits");
    assert!(status.success(), "{status:?}");
    // New connections are refused once stopped.
    assert!(std::net::TcpStream::connect(agent.addr()).is_err());
}

#[test]
fn peer_that_stops_reading_does_not_block_others() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    let mut stuck = ready(&agent);
    // Flood without ever reading the ACKs.
    let frame = encoded(&notify_frame(
        1,
        1,
        vec![check_client_ip(Ipv4Addr::LOCALHOST)],
    ));
    let mut batch = Vec::new();
    for _ in 0..2000 {
        batch.extend_from_slice(&frame);
    }
    stuck
        .stream()
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for _ in 0..20 {
        if stuck.stream().write_all(&batch).is_err() {
            break;
        }
    }
    assert_still_serving(&mut agent);
    // The stuck peer itself still gets its answers once it reads.
    assert!(matches!(stuck.recv(), Ok(Frame::Ack(_))));
}
