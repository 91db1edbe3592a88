//! spoa-host over real TCP with the IP-reputation guest: handshake, health
//! check, pipelined NOTIFYs, ACK contents and ids.

mod support;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use spoa_host::spop::{Frame, TypedData};
use support::agent::Agent;
use support::iprep_guest;
use support::spop_client::{
    SpopClient, check_client_ip, encoded, hello_frame, message, notify_frame, score_of,
};

#[test]
fn handshake_negotiates_version_size_and_pipelining() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::connect(agent.addr());
    let hello = client.hello("pipelining,async");
    assert_eq!(hello.get_str("version"), Some(&b"2.0"[..]));
    assert_eq!(hello.get("max-frame-size"), Some(&TypedData::Uint32(16380)));
    assert_eq!(hello.get_str("capabilities"), Some(&b"pipelining"[..]));
}

#[test]
fn max_frame_size_is_the_smaller_of_both_sides() {
    let agent = Agent::start(&iprep_guest(), &["-m", "1024"]);
    let mut client = SpopClient::connect(agent.addr());
    client.send(&hello_frame("2.0", 16380, "pipelining", false));
    let Ok(Frame::AgentHello(kv)) = client.recv() else {
        panic!("no AGENT-HELLO")
    };
    assert_eq!(kv.get("max-frame-size"), Some(&TypedData::Uint32(1024)));

    let mut client = SpopClient::connect(agent.addr());
    client.send(&hello_frame("2.0", 512, "", false));
    let Ok(Frame::AgentHello(kv)) = client.recv() else {
        panic!("no AGENT-HELLO")
    };
    assert_eq!(kv.get("max-frame-size"), Some(&TypedData::Uint32(512)));
    assert_eq!(kv.get_str("capabilities"), Some(&b""[..]));
}

#[test]
fn health_check_is_answered_then_closed() {
    let mut agent = Agent::start(&iprep_guest(), &[]);
    // The exact bytes HAProxy 2.6's `option spop-check` sends.
    let healthcheck: Vec<u8> = "00 00 00 4e 01 00 00 00 01 00 00 12 73 75 70 70 6f 72 74 65 64 2d 76 65 72 73 69 6f 6e 73 08 03 32 2e 30 0e 6d 61 78 2d 66 72 61 6d 65 2d 73 69 7a 65 03 fc f0 06 0c 63 61 70 61 62 69 6c 69 74 69 65 73 08 00 0b 68 65 61 6c 74 68 63 68 65 63 6b 11"
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    for _ in 0..3 {
        let mut client = SpopClient::connect(agent.addr());
        client.send_raw(&healthcheck);
        match client.recv() {
            Ok(Frame::AgentHello(kv)) => {
                assert_eq!(kv.get_str("version"), Some(&b"2.0"[..]));
            }
            other => panic!("expected AGENT-HELLO, got {other:?}"),
        }
        client.expect_closed();
    }
    // The whole log, read to its end after the agent exited.
    let log = agent.stop();
    assert!(log.contains("spoa-host stopped"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn seed_notify_capture_gets_a_score_with_the_same_ids() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let capture: Vec<u8> = "00 00 00 1e 03 00 00 00 01 14 01 0f 63 68 65 63 6b 2d 63 6c 69 65 6e 74 2d 69 70 01 00 06 7f 00 00 01"
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    client.send_raw(&capture);
    let ack = client.recv_ack();
    assert_eq!((ack.stream_id, ack.frame_id), (20, 1));
    let score = score_of(&ack).expect("ip_score set");
    assert!((0..=100).contains(&score), "score {score}");
}

#[test]
fn sixty_four_pipelined_notifies_each_get_their_ack() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    // All 64 frames in one write, as a busy HAProxy would batch them.
    let mut batch = Vec::new();
    for i in 0..64u64 {
        let frame = notify_frame(
            1000 + i,
            i + 1,
            vec![check_client_ip(Ipv4Addr::new(10, 0, 0, i as u8))],
        );
        batch.extend_from_slice(&encoded(&frame));
    }
    client.send_raw(&batch);
    let mut seen = HashSet::new();
    let mut scores = HashSet::new();
    for _ in 0..64 {
        let ack = client.recv_ack();
        assert_eq!(
            ack.stream_id,
            1000 + ack.frame_id - 1,
            "ids travel together"
        );
        assert!(
            seen.insert(ack.frame_id),
            "duplicate ACK for frame {}",
            ack.frame_id
        );
        let score = score_of(&ack).expect("ip_score set");
        assert!((0..=100).contains(&score), "score {score}");
        scores.insert(score);
    }
    assert_eq!(seen.len(), 64);
    assert!(scores.len() > 10, "scores should vary, got {scores:?}");
}

#[test]
fn all_messages_of_one_notify_share_one_ack_and_others_get_nothing() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    client.send(&notify_frame(
        300,
        7,
        vec![
            check_client_ip(Ipv4Addr::new(192, 0, 2, 1)),
            message(
                "log-request",
                vec![("path", TypedData::String("/x".into()))],
            ),
            message(
                "check-client-ip",
                vec![("ip", TypedData::Ipv6("2001:db8::1".parse().expect("addr")))],
            ),
        ],
    ));
    let ack = client.recv_ack();
    assert_eq!((ack.stream_id, ack.frame_id), (300, 7));
    assert_eq!(
        ack.actions.len(),
        2,
        "one set-var per check-client-ip: {ack:?}"
    );

    client.send(&notify_frame(301, 8, vec![message("other", vec![])]));
    let ack = client.recv_ack();
    assert_eq!((ack.stream_id, ack.frame_id), (301, 8));
    assert!(ack.actions.is_empty());
}

/// HAProxy up to 3.2.0 sends a NOTIFY without a message when none of its
/// group's messages applies (3.4 skips it): it gets an empty ACK with the
/// frame's ids, and the NOTIFYs read with it are answered as usual.
#[test]
fn a_notify_without_messages_gets_an_empty_ack_with_its_ids() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    let scored = |stream_id| notify_frame(stream_id, 1, vec![check_client_ip(Ipv4Addr::LOCALHOST)]);
    // One write: the three frames arrive in one read, one batch.
    let mut frames = encoded(&scored(401));
    frames.extend(encoded(&notify_frame(403, 1, vec![])));
    frames.extend(encoded(&scored(405)));
    client.send_raw(&frames);
    let mut acks: Vec<_> = (0..3).map(|_| client.recv_ack()).collect();
    acks.sort_by_key(|ack| ack.stream_id);
    assert_eq!(
        acks.iter()
            .map(|ack| (ack.stream_id, ack.frame_id))
            .collect::<Vec<_>>(),
        [(401, 1), (403, 1), (405, 1)]
    );
    assert!(acks[1].actions.is_empty(), "{:?}", acks[1]);
    for scored in [&acks[0], &acks[2]] {
        assert!(score_of(scored).is_some(), "{scored:?}");
    }
}

#[test]
fn haproxy_disconnect_is_answered_with_status_0() {
    let agent = Agent::start(&iprep_guest(), &[]);
    let mut client = SpopClient::pipelined(agent.addr());
    client.send(&Frame::HaproxyDisconnect(
        spoa_host::spop::KvList::disconnect(spoa_host::spop::Status::Normal, "bye"),
    ));
    let (status, _) = client.expect_disconnect();
    assert_eq!(status, 0);
    client.expect_closed();
}
