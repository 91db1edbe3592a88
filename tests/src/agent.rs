//! A real `spoa-host` process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{free_port, wait_for_port, workspace_root};

/// The `spoa-host` binary built by `make` (debug or release, newest wins),
/// or `$SPOA_HOST_BIN`.
pub fn host_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SPOA_HOST_BIN") {
        return PathBuf::from(path);
    }
    let candidates = ["release", "debug"].map(|profile| {
        workspace_root()
            .join("target")
            .join(profile)
            .join("spoa-host")
    });
    candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("spoa-host is not built: run `make test`"))
}

/// A running agent; killed on drop.
pub struct Agent {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
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
                    std::env::var("SPOA_TEST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning spoa-host");
            let log = Arc::new(Mutex::new(Vec::new()));
            if let Some(stderr) = child.stderr.take() {
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if std::env::var_os("SPOA_TEST_ECHO").is_some() {
                            eprintln!("[agent] {line}");
                        }
                        log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    }
                });
            }
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut agent = Agent { child, port, log };
            if wait_for_port(addr, Duration::from_secs(20)) {
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
        .output()
        .expect("running spoa-host")
}
