//! A real `spoa-host` process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{eventually, free_port};

/// The `spoa-host` binary cargo built for this very test run (same profile
/// and features), so a test can never run a stale one.
pub fn host_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spoa-host"))
}

/// One guest `iprep` serving `check-client-ip` from `iprep.wasm` (the
/// hostile guest, whose smoke call wants an address), for `--config` files.
pub const IPREP_TABLE: &str = r#"
[[guest]]
name = "iprep"
module = "iprep.wasm"
messages = ["check-client-ip"]
smoke-args = ["ip=ipv4:127.0.0.1"]
"#;

/// A guest `flaky` (the hostile guest as `hostile.wasm`) quarantined after 5
/// faults in half its calls within 10 s, for `backoff`.
pub fn quarantine_table(backoff: &str) -> String {
    format!(
        r#"
[[guest]]
name = "flaky"
module = "hostile.wasm"
messages = ["trap", "check-client-ip"]
smoke-message = "check-client-ip"
smoke-args = ["ip=ipv4:127.0.0.1"]
[guest.on-failure]
error-var = "error"
quarantine-failures = 5
quarantine-ratio = 0.5
quarantine-window = "10s"
quarantine-backoff = "{backoff}"
"#
    )
}

/// Writes `config` to `DIR/agent.toml` and starts `spoa-host --config` on
/// it with a metrics address (returned) and `extra` arguments.
pub fn start_config(dir: &Path, config: &str, extra: &[&str]) -> (Agent, SocketAddr) {
    let path = dir.join("agent.toml");
    super::write_atomically(&path, config);
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut args = vec![
        "--config".to_string(),
        path.display().to_string(),
        "--metrics-address".to_string(),
        metrics.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (Agent::start_with(&args), metrics)
}

/// The log line the agent writes once its listener is bound.
const LISTENING: &str = "spoa-host listening";

/// A running agent; killed on drop.
pub struct Agent {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts `spoa-host --module MODULE ARGS…` on a free port and waits until
    /// it accepts connections.
    pub fn start(module: &Path, args: &[&str]) -> Agent {
        let mut full = vec!["--module".to_string(), module.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        Agent::start_with(&full)
    }

    /// Starts `spoa-host ARGS… -a 127.0.0.1 -p PORT`.
    pub fn start_with(args: &[String]) -> Agent {
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new(host_binary())
                .args(args)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .env(
                    "RUST_LOG",
                    if args.iter().any(|a| a == "--debug") {
                        "debug".into()
                    } else {
                        std::env::var("SPOA_TEST_LOG").unwrap_or_else(|_| "info".into())
                    },
                )
                .env("XDG_CACHE_HOME", test_cache_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning spoa-host");
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut log_reader = None;
            if let Some(stderr) = child.stderr.take() {
                let log = log.clone();
                log_reader = Some(std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if std::env::var_os("SPOA_TEST_ECHO").is_some() {
                            eprintln!("[agent] {line}");
                        }
                        log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    }
                }));
            }
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut agent = Agent {
                child,
                port,
                log,
                log_reader,
            };
            // Readiness from the log, not by connecting: a probe connection
            // would hold one of the agent's --max-connections slots.
            if eventually(Duration::from_secs(30), || {
                agent.log_text().contains(LISTENING) || !agent.is_alive()
            }) && agent.log_text().contains(LISTENING)
            {
                return agent;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                // Port taken by someone else between probe and bind: retry.
                if agent.log_text().contains("Address already in use") {
                    continue;
                }
                panic!("spoa-host exited with {status}:\n{}", agent.log_text());
            }
            panic!("spoa-host did not listen on {addr}:\n{}", agent.log_text());
        }
        panic!("could not find a free port for spoa-host");
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (e.g. "TERM", "HUP") to the agent.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Stops the agent with SIGTERM, waits for it to exit and for its log to
    /// be read to the end, and returns the whole log: a check for what the
    /// agent did *not* log is only sound on all of it.
    pub fn stop(&mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(15));
        assert!(status.is_some(), "agent did not exit on SIGTERM");
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        self.log_text()
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `spoa-host ARGS…` to completion (for `check` and start-up failures).
pub fn run_host(args: &[&str]) -> std::process::Output {
    Command::new(host_binary())
        .args(args)
        .env("XDG_CACHE_HOME", test_cache_dir())
        .output()
        .expect("running spoa-host")
}

/// The compiled-module cache the tests' agents share, inside `target/`.
pub fn test_cache_dir() -> PathBuf {
    super::workspace_root().join("target").join("test-cache")
}
