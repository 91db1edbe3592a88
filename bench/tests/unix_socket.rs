//! `spoa-bench --unix` loads an agent over its Unix socket as it does over
//! TCP: every NOTIFY answered, none lost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// The `spoa-host` of this build: the test runs from `target/PROFILE/deps`.
fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/PROFILE/deps");
    let host = profile.join("spoa-host");
    // `make test` builds it in the same `cargo test --workspace`; run alone,
    // this test takes whatever `spoa-host` was built last.
    assert!(
        host.exists(),
        "{} is missing: run the tests with `make test` (or build `-p spoa-host` first)",
        host.display()
    );
    host
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn load_over_a_unix_socket_is_answered_in_full() {
    let module = workspace_root().join("target/guest_iprep.wasm");
    assert!(
        module.exists(),
        "{} is missing: run `make guest`",
        module.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("agent log");
    let mut agent = Agent(
        Command::new(host_binary())
            .arg("--module")
            .arg(&module)
            .arg("--unix")
            .arg(&socket)
            .arg("--no-cache")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spoa-host starts"),
    );
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("the agent exited ({status}):\n{}", agent_log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the agent never listened on {}:\n{}",
            socket.display(),
            agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = Command::new(env!("CARGO_BIN_EXE_spoa-bench"))
        .arg("--unix")
        .arg(&socket)
        .args(["-d", "1s", "--warmup", "200ms", "-c", "2", "-p", "8"])
        .output()
        .expect("spoa-bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = report
        .lines()
        .find(|line| line.trim_start().starts_with("messages "))
        .unwrap_or_else(|| panic!("no messages line in:\n{report}"));
    let answered: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(answered > 100, "{line}");
    assert!(
        line.contains("errors 0") && line.contains("lost ACKs 0"),
        "{line}"
    );
}
