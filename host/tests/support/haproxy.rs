//! A real `haproxy` process running one of the configurations in `examples/`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{free_port, wait_for_port, workspace_root};

/// The start of an HTTP proxy configuration the end-to-end tests build
/// around a generated SPOE backend: logging to stderr, HTTP defaults, and
/// the `web` frontend's header; each test appends that frontend's lines.
pub const HTTP_PROXY_HEAD: &str = "
global
    log stderr format short local0 notice

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend web";

/// The `haproxy` binary, or a loud failure. Tests never skip silently: set
/// `SPOA_SKIP_HAPROXY=1` to skip them explicitly (never done in CI).
pub fn haproxy_binary() -> Option<PathBuf> {
    let candidate = std::env::var("HAPROXY_BIN").unwrap_or_else(|_| "haproxy".into());
    let found = Command::new(&candidate)
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        let binary = PathBuf::from(candidate);
        // The HAProxy 3.x pass of `make test` sets this, so a wrong binary
        // fails every test instead of passing them on the other version.
        if let Ok(expected) = std::env::var("SPOA_EXPECT_HAPROXY") {
            let (major, minor) = haproxy_version(&binary);
            assert_eq!(
                major.to_string(),
                expected,
                "SPOA_EXPECT_HAPROXY={expected}, but {} is HAProxy {major}.{minor}",
                binary.display()
            );
        }
        return Some(binary);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !in_ci && std::env::var("SPOA_SKIP_HAPROXY").is_ok_and(|v| v == "1") {
        eprintln!("!!! SKIPPED: haproxy not found and SPOA_SKIP_HAPROXY=1");
        return None;
    }
    panic!(
        "haproxy not found (tried `{candidate}`): install it (apt-get install -y haproxy) \
         or set HAPROXY_BIN; outside CI, SPOA_SKIP_HAPROXY=1 skips these tests explicitly"
    );
}

/// `(major, minor)` of the installed HAProxy.
pub fn haproxy_version(binary: &PathBuf) -> (u32, u32) {
    let output = Command::new(binary).arg("-v").output().expect("haproxy -v");
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().nth(2).unwrap_or("0.0").to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `haproxy-config --haproxy` for the installed HAProxy's version.
pub fn config_version(binary: &PathBuf) -> &'static str {
    if haproxy_version(binary) >= (3, 1) {
        "3"
    } else {
        "2.6"
    }
}

/// `HOST haproxy-config --config CONFIG --haproxy VERSION --section SECTION`.
pub fn haproxy_config(
    host: &std::path::Path,
    config: &std::path::Path,
    version: &str,
    section: &str,
) -> String {
    let output = Command::new(host)
        .args(["haproxy-config", "--config"])
        .arg(config)
        .args(["--haproxy", version, "--section", section])
        .output()
        .expect("running spoa-host haproxy-config");
    assert!(output.status.success(), "haproxy-config: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// `spoa-host haproxy-config --config CONFIG --section SECTION` for the
/// installed HAProxy's version.
pub fn generated_config(binary: &PathBuf, config: &std::path::Path, section: &str) -> String {
    haproxy_config(
        &super::agent::host_binary(),
        config,
        config_version(binary),
        section,
    )
}

/// Starts HAProxy with the SPOE file and backend `generate(section)` prints,
/// and a frontend (after [`HTTP_PROXY_HEAD`]) filtering with SPOE engine
/// `engine`, then `rules` (its `http-request`/`http-after-response` lines),
/// answering "ok" from a backend of its own.
pub fn start_generated(
    binary: &PathBuf,
    engine: &str,
    rules: &str,
    generate: impl Fn(&str) -> String,
) -> Haproxy {
    let frontend = format!(
        r#"
    bind "${{HTTP_BIND}}"
    filter spoe engine {engine} config "${{CONF_DIR}}/spoe.conf"
{rules}
    default_backend app

backend app
    http-request return status 200 content-type text/plain string "ok\n"
"#
    );
    let config = format!("{HTTP_PROXY_HEAD}{frontend}\n{}", generate("backend"));
    start_files(
        binary,
        &[("haproxy.cfg", config), ("spoe.conf", generate("spoe"))],
    )
}

/// The examples directory matching the installed HAProxy.
pub fn examples_dir(binary: &PathBuf) -> PathBuf {
    let (major, minor) = haproxy_version(binary);
    let name = if (major, minor) >= (3, 1) {
        "haproxy-3.x"
    } else {
        "haproxy-2.6"
    };
    workspace_root().join("examples").join(name)
}

/// A running HAProxy; killed on drop.
pub struct Haproxy {
    child: Child,
    pub http: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    config: PathBuf,
    env: Vec<(String, String)>,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `haproxy -db -f CONFIG` where CONFIG is the example configuration
/// with `edit` applied (identity for most tests), the agents at
/// `agent_addrs`, and the HTTP frontend on a free port.
pub fn start(
    binary: &PathBuf,
    agent_addrs: &[SocketAddr],
    threshold: u32,
    edit: impl Fn(String) -> String,
) -> Haproxy {
    start_with(binary, agent_addrs, threshold, edit, |spoe| spoe)
}

/// Like [`start`], with the example SPOE configuration edited by `edit_spoe`.
pub fn start_with(
    binary: &PathBuf,
    agent_addrs: &[SocketAddr],
    threshold: u32,
    edit: impl Fn(String) -> String,
    edit_spoe: impl Fn(String) -> String,
) -> Haproxy {
    let examples = examples_dir(binary);
    let dir = tempfile::tempdir().expect("temp dir");
    let config =
        std::fs::read_to_string(examples.join("haproxy.cfg")).expect("example haproxy.cfg");
    let config_path = dir.path().join("haproxy.cfg");
    std::fs::write(&config_path, edit(config)).expect("writing haproxy.cfg");
    let spoe = std::fs::read_to_string(examples.join("spoe-iprep.conf")).expect("example spoe");
    let spoe_conf = dir.path().join("spoe-iprep.conf");
    std::fs::write(&spoe_conf, edit_spoe(spoe)).expect("writing the spoe conf");
    let mut env = vec![
        ("SPOE_CONF".to_string(), spoe_conf.display().to_string()),
        ("SCORE_THRESHOLD".to_string(), threshold.to_string()),
    ];
    for (index, addr) in agent_addrs.iter().enumerate() {
        env.push((format!("AGENT{}_ADDR", index + 1), addr.to_string()));
    }
    launch(binary, dir, config_path, env)
}

/// Starts `haproxy -db -f DIR/haproxy.cfg` with `files` (name, content)
/// written to a fresh DIR. The configuration finds DIR in `${CONF_DIR}` and
/// binds its HTTP frontend to `${HTTP_BIND}`.
pub fn start_files(binary: &PathBuf, files: &[(&str, String)]) -> Haproxy {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("writing a haproxy file");
    }
    let config_path = dir.path().join("haproxy.cfg");
    let env = vec![("CONF_DIR".to_string(), dir.path().display().to_string())];
    launch(binary, dir, config_path, env)
}

fn launch(
    binary: &PathBuf,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    extra_env: Vec<(String, String)>,
) -> Haproxy {
    for _attempt in 0..5 {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut command = Command::new(binary);
        command
            .args(["-db", "-f"])
            .arg(&config_path)
            .env("HTTP_BIND", http.to_string())
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning haproxy");
        let log = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("SPOA_TEST_ECHO").is_some() {
                        eprintln!("[haproxy] {line}");
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let env: Vec<(String, String)> = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        let mut haproxy = Haproxy {
            child,
            http,
            log,
            config: config_path.clone(),
            env,
            binary: binary.clone(),
            _dir: tempfile::tempdir().expect("temp dir"),
        };
        if wait_for_port(http, Duration::from_secs(10)) {
            haproxy._dir = dir;
            return haproxy;
        }
        if let Ok(Some(_)) = haproxy.child.try_wait()
            && haproxy.log_text().contains("cannot bind")
        {
            continue;
        }
        panic!("haproxy did not start:\n{}", haproxy.log_text());
    }
    panic!("could not find a free port for haproxy");
}

impl Haproxy {
    /// Whether a `GET /` comes back with an `X-IP-Score` now.
    pub fn scores(&self) -> bool {
        super::http::get(self.http, "/")
            .map(|r| r.header("X-IP-Score").is_some())
            .unwrap_or(false)
    }

    /// Waits up to 10 s for a scored response: the first request may race
    /// HAProxy's first connection to the agent. Fails with both logs.
    pub fn wait_until_scored(&self, agent: &super::agent::Agent) {
        assert!(
            super::eventually(Duration::from_secs(10), || self.scores()),
            "no scored response; haproxy log:\n{}\nagent log:\n{}",
            self.log_text(),
            agent.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reloads HAProxy the way the classic reload does: a new process takes
    /// over the listeners (`-sf OLD`) and the old one finishes its work and
    /// exits. Returns the old process.
    pub fn soft_reload(&mut self) -> Child {
        let new = Command::new(&self.binary)
            .args(["-db", "-f"])
            .arg(&self.config)
            .arg("-sf")
            .arg(self.child.id().to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the new haproxy");
        std::mem::replace(&mut self.child, new)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
