//! The Debian package (`make deb`): lintian finds no error in it; installed
//! with `dpkg -i`, its guest passes `spoa-host check`, the agent started
//! exactly as its systemd unit starts it (the unit's user, command line and
//! cache directory) serves the installed configuration, a real HAProxy
//! configured by `spoa-host haproxy-config` from that file scores a real
//! request through it, `spoa-host status` reads it, and the package is
//! removed and purged cleanly.
//!
//! Installing needs root (CI runs as root); elsewhere these tests fail unless
//! `SPOA_SKIP_DEB=1` skips them explicitly.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::haproxy::{self, haproxy_binary};
use support::{eventually, http, wait_for_port, workspace_root};

const UNIT: &str = "/usr/lib/systemd/system/spoa-host.service";
const CONFIG: &str = "/etc/spoa-host/spoa-host.toml";
const GUEST: &str = "/usr/share/spoa-host/guest_iprep.wasm";
const BINARY: &str = "/usr/bin/spoa-host";

/// `target/debian/spoa-host_VERSION_amd64.deb`, built by `make deb`.
fn package() -> Option<PathBuf> {
    let dir = workspace_root().join("target/debian");
    let found = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spoa-host_") && n.ends_with("_amd64.deb"))
        });
    if found.is_none() && skipped("no package in target/debian (make deb builds it)") {
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!(
            "no spoa-host_*_amd64.deb in {}: run `make deb`",
            dir.display()
        )
    }))
}

fn skipped(why: &str) -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !in_ci && std::env::var("SPOA_SKIP_DEB").is_ok_and(|v| v == "1") {
        eprintln!("!!! SKIPPED: {why}, and SPOA_SKIP_DEB=1");
        return true;
    }
    false
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn lintian_finds_no_error_in_the_package() {
    let Some(deb) = package() else {
        return;
    };
    let lintian = Command::new("lintian")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(lintian, "lintian not found: apt-get install -y lintian");
    let output = run(
        "lintian",
        &["--fail-on", "error", &deb.display().to_string()],
    );
    eprintln!("lintian:\n{}", text(&output));
    assert!(
        output.status.success(),
        "lintian found errors:\n{}",
        text(&output)
    );
    assert!(!text(&output).contains("\nE: "), "{}", text(&output));
}

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "spoa-host"]);
    }
}

/// The agent as the unit starts it; killed on drop.
struct UnitAgent {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Whether the unit's LimitRTPRIO could be given to it.
    realtime_granted: bool,
}

impl UnitAgent {
    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for UnitAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `KEY=` values of the unit, with its continued lines joined.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.replace("\\\n", " ")
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// Starts the unit's `ExecStart` as its `User`, with its `CacheDirectory`
/// made as systemd makes it (no systemd runs here).
fn start_as_the_unit_does(unit: &str) -> UnitAgent {
    let user = unit_values(unit, "User")
        .pop()
        .expect("the unit names its User");
    let exec = unit_values(unit, "ExecStart")
        .pop()
        .expect("the unit has an ExecStart");
    for cache in unit_values(unit, "CacheDirectory") {
        let path = format!("/var/cache/{cache}");
        let made = run(
            "install",
            &["-d", "-o", &user, "-g", &user, "-m", "0700", &path],
        );
        assert!(made.status.success(), "{}", text(&made));
    }
    let rtprio = unit_values(unit, "LimitRTPRIO")
        .pop()
        .unwrap_or_else(|| "0".into());
    let mut setpriv = vec![
        format!("--reuid={user}"),
        format!("--regid={user}"),
        "--init-groups".to_owned(),
    ];
    if unit_values(unit, "NoNewPrivileges")
        .iter()
        .any(|v| v == "yes")
    {
        setpriv.push("--no-new-privs".to_owned());
    }
    let argv: Vec<&str> = exec.split_whitespace().collect();
    // Raising a hard limit needs CAP_SYS_RESOURCE, which systemd has and
    // some containers do not give even to root.
    let limit = format!("--rtprio={rtprio}:{rtprio}");
    let can_limit = run("prlimit", &[&limit, "true"]).status.success();
    if !can_limit {
        eprintln!(
            "prlimit cannot set LimitRTPRIO={rtprio} here (no CAP_SYS_RESOURCE): the agent runs without it"
        );
    }
    let mut command = if can_limit {
        let mut command = Command::new("prlimit");
        command.args([limit.as_str(), "--", "setpriv"]);
        command
    } else {
        Command::new("setpriv")
    };
    let mut child = command
        .args(&setpriv)
        .arg("--")
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the installed agent");
    let log = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    UnitAgent {
        child,
        log,
        realtime_granted: can_limit,
    }
}

fn assert_free(address: SocketAddr) {
    assert!(
        TcpListener::bind(address).is_ok(),
        "{address} is taken: the installed configuration listens there (stop what holds it)"
    );
}

/// The frontend's rules (see `haproxy::start_generated`): the engine and
/// variable prefix are those of the installed configuration's `[haproxy]`
/// table.
const RULES: &str = r#"    http-after-response set-header X-IP-Score "%[var(sess.iprep.ip_score)]" if { var(sess.iprep.ip_score) -m found }"#;

#[test]
fn the_installed_package_serves_haproxy_and_is_removed_cleanly() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let Some(deb) = package() else {
        return;
    };
    // SAFETY of the check: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if !root && skipped("installing the package needs root") {
        return;
    }
    assert!(
        root,
        "installing the package needs root (CI runs as root); SPOA_SKIP_DEB=1 skips this outside CI"
    );
    let _ = run("dpkg", &["--purge", "spoa-host"]);

    let installed = run("dpkg", &["-i", &deb.display().to_string()]);
    let _purge = Installed;
    assert!(installed.status.success(), "dpkg -i:\n{}", text(&installed));
    for path in [BINARY, CONFIG, GUEST, UNIT] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let user = run("getent", &["passwd", "spoa-host"]);
    assert!(user.status.success(), "the package made no spoa-host user");
    let conffiles = run(
        "dpkg-query",
        &["--showformat=${Conffiles}", "--show", "spoa-host"],
    );
    assert!(text(&conffiles).contains(CONFIG), "{}", text(&conffiles));

    let checked = run(BINARY, &["check", "--no-cache", GUEST]);
    assert!(
        checked.status.success(),
        "spoa-host check {GUEST}:\n{}",
        text(&checked)
    );

    let unit = std::fs::read_to_string(UNIT).expect("the installed unit");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let verified = run("systemd-analyze", &["verify", UNIT]);
        assert!(
            verified.status.success(),
            "systemd-analyze verify:\n{}",
            text(&verified)
        );
    } else {
        eprintln!("systemd-analyze not installed: the unit's syntax is not verified");
    }
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitRTPRIO=1",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let agent_address: SocketAddr = ([127, 0, 0, 1], 12345).into();
    let metrics_address: SocketAddr = ([127, 0, 0, 1], 9345).into();
    // Where systemd runs, the package started the unit itself.
    let agent = if Path::new("/run/systemd/system").exists() {
        None
    } else {
        assert_free(agent_address);
        assert_free(metrics_address);
        Some(start_as_the_unit_does(&unit))
    };
    let agent_log = || agent.as_ref().map(UnitAgent::log_text).unwrap_or_default();
    assert!(
        wait_for_port(agent_address, Duration::from_secs(20)),
        "the installed agent never listened on {agent_address}:\n{}",
        agent_log()
    );
    if agent.is_some() {
        assert!(
            eventually(Duration::from_secs(5), || agent_log()
                .contains("spoa-host listening")),
            "{}",
            agent_log()
        );
    }
    if agent.as_ref().is_some_and(|a| a.realtime_granted) {
        assert!(
            agent_log().contains("control plane at real-time priority"),
            "LimitRTPRIO did not give the control plane its priority:\n{}",
            agent_log()
        );
    }
    // Started as the unit starts it, the agent has nothing to warn about:
    // its real-time priority (LimitRTPRIO) and its cache directory work.
    let warnings: Vec<String> = agent_log()
        .lines()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .map(str::to_owned)
        .collect();
    assert!(
        warnings.is_empty(),
        "the installed agent warned:\n{}",
        warnings.join("\n")
    );

    let version = haproxy::config_version(&binary);
    let proxy = haproxy::start_generated(&binary, "iprep", RULES, |section| {
        haproxy::haproxy_config(Path::new(BINARY), Path::new(CONFIG), version, section)
    });
    let mut score = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            score = http::get(proxy.http, "/")
                .ok()
                .and_then(|r| r.header("X-IP-Score").map(str::to_owned));
            score.is_some()
        }),
        "no scored response; haproxy log:\n{}\nagent log:\n{}",
        proxy.log_text(),
        agent_log()
    );
    let score: u32 = score.unwrap_or_default().parse().expect("a number");
    assert!(score <= 100, "{score}");

    // The installed `status` finds the installed agent by default.
    let status = run(BINARY, &["status"]);
    assert!(
        status.status.success(),
        "spoa-host status:\n{}",
        text(&status)
    );
    let table = text(&status);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("iprep ") && l.contains("serving") && l.ends_with(GUEST)),
        "{table}"
    );
    drop(proxy);
    drop(agent);

    let removed = run("dpkg", &["--remove", "spoa-host"]);
    assert!(
        removed.status.success(),
        "dpkg --remove:\n{}",
        text(&removed)
    );
    assert!(!Path::new(BINARY).exists(), "{BINARY} left after removal");
    assert!(
        Path::new(CONFIG).exists(),
        "a removed package keeps its conffile until purged"
    );
    let purged = run("dpkg", &["--purge", "spoa-host"]);
    assert!(purged.status.success(), "dpkg --purge:\n{}", text(&purged));
    for path in [CONFIG, GUEST, UNIT, "/var/cache/spoa-host"] {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    let status = run("dpkg-query", &["--show", "spoa-host"]);
    assert!(
        !status.status.success(),
        "still known to dpkg:\n{}",
        text(&status)
    );
}
