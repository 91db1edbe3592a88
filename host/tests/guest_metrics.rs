//! Guests' own counters (`spoa:agent/metrics`, WIT 0.1.5): the names the
//! operator allows appear as `spoa_guest_counter_total{guest,name}`, other
//! names are refused, and the smoke call and shadows count nowhere.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use spoa_host::spop::TypedData;
use support::agent::{Agent, start_config};
use support::http::{assert_metrics, scrape_metrics};
use support::spop_client::{Session, message, set_vars, string};
use support::{artifact, eventually, free_port, hostile_guest};

fn bump(counter: &str, by: u32) -> spoa_host::spop::Message {
    message(
        "bump",
        vec![("counter", string(counter)), ("by", TypedData::Uint32(by))],
    )
}

fn bumped(session: &mut Session, counter: &str, by: u32) -> String {
    let ack = session.notify(vec![bump(counter, by)]);
    let vars: Vec<(String, TypedData)> = set_vars(&ack).collect();
    match vars.as_slice() {
        [(name, TypedData::String(text))] if name == "bumped" => {
            String::from_utf8_lossy(text).into_owned()
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

fn metrics_agent(module: &std::path::Path, extra: &[&str]) -> (Agent, SocketAddr) {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics_arg = metrics.to_string();
    let mut args = vec!["--metrics-address", &metrics_arg];
    args.extend_from_slice(extra);
    (Agent::start(module, &args), metrics)
}

#[test]
fn allowed_counters_count_and_other_names_are_refused() {
    // The smoke call bumps `rule_hits` by 100, on counters nothing reads.
    let (agent, metrics) = metrics_agent(
        &hostile_guest('A'),
        &[
            "--guest-metric",
            "rule_hits",
            "--guest-metric",
            "blocked",
            "--smoke-message",
            "bump",
            "--smoke-arg",
            "counter=str:rule_hits",
            "--smoke-arg",
            "by=uint32:100",
        ],
    );
    let mut session = Session::connect(agent.addr());
    assert_eq!(bumped(&mut session, "rule_hits", 2), "ok");
    assert_eq!(bumped(&mut session, "rule_hits", 3), "ok");
    assert_eq!(bumped(&mut session, "other", 1), "not-allowed");
    assert_eq!(bumped(&mut session, "Rule_Hits", 1), "not-allowed");
    let page = scrape_metrics(metrics);
    assert_metrics(
        &page,
        &[
            (
                "spoa_guest_counter_total{guest=\"default\",name=\"rule_hits\"}",
                5.0,
            ),
            // Allowed and never incremented: the series is there at 0.
            (
                "spoa_guest_counter_total{guest=\"default\",name=\"blocked\"}",
                0.0,
            ),
        ],
    );
    assert!(!page.contains("name=\"other\""), "{page}");
}

#[test]
fn without_a_grant_every_name_is_refused_and_no_series_appears() {
    let (agent, metrics) = metrics_agent(&hostile_guest('A'), &[]);
    let mut session = Session::connect(agent.addr());
    assert_eq!(bumped(&mut session, "rule_hits", 1), "not-allowed");
    assert!(!scrape_metrics(metrics).contains("spoa_guest_counter_total{"));
}

#[test]
fn a_bad_counter_name_is_refused_at_start() {
    let output = support::agent::run_host(&[
        "check",
        &hostile_guest('A').display().to_string(),
        "--guest-metric",
        "Bad-Name",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("counter name `Bad-Name`"),
        "{output:?}"
    );
}

/// A `--config` agent serving `module` as guest `name` for `message`, with
/// `rule_hits` allowed, and `extra` TOML after its `[[guest]]` keys.
fn counting_guest(
    name: &str,
    module: &std::path::Path,
    message: &str,
    extra: &str,
) -> (tempfile::TempDir, Agent, SocketAddr) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[[guest]]\nname = \"{name}\"\nmodule = \"{}\"\nmessages = [\"{message}\"]\nmetrics = [\"rule_hits\"]\n{extra}",
        module.display()
    );
    let (agent, metrics) = start_config(dir.path(), &config, &[]);
    (dir, agent, metrics)
}

/// The WAF-style example: guest-uascore counts the messages a `suspicious`
/// rule matched, per guest of a `--config` file, as `metrics = [...]` allows.
#[test]
fn the_user_agent_guest_counts_rule_hits_per_guest() {
    let (_dir, agent, metrics) = counting_guest(
        "ua",
        &artifact("guest_uascore.wasm"),
        "check-user-agent",
        "",
    );
    let mut session = Session::connect(agent.addr());
    for ua in [
        "curl/8.5.0",
        "Mozilla/5.0 Firefox/128.0",
        "sqlmap/1.8",
        "Mozilla/5.0",
    ] {
        session.notify(vec![message("check-user-agent", vec![("ua", string(ua))])]);
    }
    let series = "spoa_guest_counter_total{guest=\"ua\",name=\"rule_hits\"}";
    assert!(eventually(Duration::from_secs(5), || {
        support::http::metric_value(&scrape_metrics(metrics), series) == 2.0
    }));
}

/// A shadow answers a copy of every message (`share = 1`) with the same
/// module, and counts into counters of its own: the served series counts
/// each message once.
#[test]
fn a_shadow_counts_nowhere() {
    let module = hostile_guest('A');
    let shadow = format!(
        "smoke-message = \"bump\"\n\n[guest.shadow]\nmodule = \"{}\"\nshare = 1.0\n",
        module.display()
    );
    let (_dir, agent, metrics) = counting_guest("hostile", &module, "bump", &shadow);
    let mut session = Session::connect(agent.addr());
    for _ in 0..5 {
        assert_eq!(bumped(&mut session, "rule_hits", 1), "ok");
    }
    let shadowed = "spoa_shadow_total{guest=\"hostile\",result=\"same\"}";
    assert!(eventually(Duration::from_secs(5), || {
        support::http::metric_value(&scrape_metrics(metrics), shadowed) == 5.0
    }));
    assert_metrics(
        &scrape_metrics(metrics),
        &[(
            "spoa_guest_counter_total{guest=\"hostile\",name=\"rule_hits\"}",
            5.0,
        )],
    );
}
