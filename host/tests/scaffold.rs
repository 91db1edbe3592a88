//! `spoa-host new NAME --lang L` as a new guest author runs it, for each of
//! the four languages, from a clean directory: scaffold, `./build.sh`,
//! `spoa-host call NAME.wasm --cases cases.json`, then serving over SPOP
//! with the scaffold's block list. Each step's time is printed (`--nocapture`).

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use support::agent::{Agent, host_binary};
use support::spop_client::{Session, check_client_ip, set_vars};

fn step(what: &str, dir: &Path, command: &mut Command) {
    let started = Instant::now();
    let output = command.current_dir(dir).output().expect(what);
    assert!(
        output.status.success(),
        "{what} failed in {}:\nstdout:\n{}\nstderr:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
}

fn scaffold_build_call_and_serve(lang: &str) {
    let root = tempfile::tempdir().expect("temp dir");
    let name = format!("my-{lang}-guest");
    let host = host_binary();
    step(
        &format!("spoa-host new {name} --lang {lang}"),
        root.path(),
        Command::new(&host).args(["new", &name, "--lang", lang]),
    );
    let dir = root.path().join(&name);
    for file in ["build.sh", "cases.json", "README.md", "blocklist.txt"] {
        assert!(dir.join(file).is_file(), "{lang}: {file} missing");
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
    assert!(
        readme.lines().count() <= 30,
        "{lang}: README of {} lines",
        readme.lines().count()
    );

    // The C tools are where `make c-tools` puts them.
    let tools = support::workspace_root().join("target/tools/bin");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    step(
        &format!("{lang}: ./build.sh"),
        &dir,
        Command::new("./build.sh").env("PATH", &path),
    );
    let module = dir.join(format!("{name}.wasm"));
    assert!(module.is_file(), "{lang}: ./build.sh wrote no {name}.wasm");
    step(
        &format!("{lang}: spoa-host call {name}.wasm --cases cases.json"),
        &dir,
        Command::new(&host).args(["call", &format!("{name}.wasm"), "--cases", "cases.json"]),
    );

    let started = Instant::now();
    let blocklist = format!("blocklist={}", dir.join("blocklist.txt").display());
    let agent = Agent::start(
        &module,
        &[
            "--ip-table",
            &blocklist,
            "--guest-memory",
            "64MiB",
            "--guest-timeout",
            "50ms",
        ],
    );
    let mut session = Session::connect(agent.addr());
    let scores: Vec<i64> = [Ipv4Addr::new(192, 0, 2, 5), Ipv4Addr::new(198, 51, 100, 7)]
        .into_iter()
        .map(|ip| {
            let ack = session.notify(vec![check_client_ip(ip)]);
            let vars: Vec<_> = set_vars(&ack).collect();
            assert_eq!(vars.len(), 2, "{lang}: {vars:?}");
            assert_eq!(vars[0].0, "ip_score");
            assert_eq!(vars[1].0, "ip_blocked");
            vars[0].1.as_i64().expect("an integer score")
        })
        .collect();
    eprintln!(
        "{lang}: serving, first answers over SPOP: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(scores[0], 0, "{lang}: a listed address scores 0");
    assert!((0..=100).contains(&scores[1]), "{lang}: {}", scores[1]);
}

#[test]
fn a_new_rust_guest_builds_passes_its_cases_and_serves() {
    scaffold_build_call_and_serve("rust");
}

#[test]
fn a_new_python_guest_builds_passes_its_cases_and_serves() {
    scaffold_build_call_and_serve("python");
}

#[test]
fn a_new_javascript_guest_builds_passes_its_cases_and_serves() {
    scaffold_build_call_and_serve("javascript");
}

#[test]
fn a_new_c_guest_builds_passes_its_cases_and_serves() {
    scaffold_build_call_and_serve("c");
}

#[test]
fn new_refuses_an_existing_directory_and_a_bad_name() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("taken")).expect("mkdir");
    for (name, why) in [("taken", "exists already"), ("Bad", "NAME `Bad`")] {
        let output = Command::new(host_binary())
            .args(["new", name, "--lang", "c"])
            .current_dir(root.path())
            .output()
            .expect("spoa-host new");
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(why),
            "{output:?}"
        );
    }
}
