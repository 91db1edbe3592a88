//! Who may talk to the agent: mutual TLS, a source allow-list and a Unix
//! socket, with a real HAProxy; refusals that never reach a guest.
//! Certificates are generated for each test with the `openssl` command.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::agent::Agent;
use support::haproxy::{self, haproxy_binary};
use support::http::{self, metric_value, scrape_metrics};
use support::spop_client::SpopClient;
use support::{eventually, free_port, iprep_guest};

struct Pki(support::pki::Pki);

impl Pki {
    fn new() -> Pki {
        Pki(support::pki::Pki::new())
    }

    fn path(&self, name: &str) -> String {
        self.0.path(name)
    }

    fn agent_args(&self, metrics: SocketAddr) -> Vec<String> {
        let mut args = vec!["--module".to_string(), iprep_guest().display().to_string()];
        args.extend(self.0.server_args());
        args.extend(["--metrics-address".to_string(), metrics.to_string()]);
        args.push("--debug".to_string());
        args
    }
}

impl Pki {
    /// An agent requiring client certificates from `ca.pem`, and HAProxy
    /// connecting to it over TLS with `client_bundle` (or no certificate).
    fn agent_behind_haproxy(
        &self,
        binary: &Path,
        client_bundle: Option<&str>,
    ) -> (Agent, SocketAddr, haproxy::Haproxy) {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let agent = Agent::start_with(&self.agent_args(metrics));
        let mut options = format!("ssl verify required ca-file {}", self.path("ca.pem"));
        if let Some(bundle) = client_bundle {
            options.push_str(&format!(" crt {}", self.path(bundle)));
        }
        let proxy = start_haproxy(binary, &agent.addr().to_string(), &options);
        (agent, metrics, proxy)
    }
}

/// The example HAProxy configuration with the agent's `server` line given
/// `options` (TLS) or another address (`unix@…`).
fn start_haproxy(binary: &Path, agent: &str, options: &str) -> haproxy::Haproxy {
    let agent = agent.to_string();
    let options = options.to_string();
    haproxy::start(&binary.to_path_buf(), &[], 0, move |config| {
        config
            .replace("\"${AGENT1_ADDR-127.0.0.1:12345}\"", &agent)
            .replace(" check inter 1s", &format!(" {options} check inter 300ms"))
    })
}

/// How many of `count` requests (`{path}0`, `{path}1`, …) came back scored.
fn scored_of(proxy: &haproxy::Haproxy, count: usize, path: &str) -> usize {
    (0..count)
        .filter(|i| {
            http::get(proxy.http, &format!("{path}{i}"))
                .expect("request")
                .header("X-IP-Score")
                .is_some()
        })
        .count()
}

fn assert_marked_down(proxy: &haproxy::Haproxy) {
    assert!(
        eventually(Duration::from_secs(10), || proxy
            .log_text()
            .contains("is DOWN")),
        "the health check never marked the agent down:\n{}",
        proxy.log_text()
    );
}

const REFUSED_TLS: &str = "spoa_connections_refused_total{reason=\"tls\"}";

#[test]
fn haproxy_scores_over_mutual_tls() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let pki = Pki::new();
    let (agent, metrics, proxy) = pki.agent_behind_haproxy(&binary, Some("client-bundle.pem"));
    assert!(
        eventually(Duration::from_secs(10), || proxy.scores()),
        "no score over mutual TLS; haproxy log:\n{}\nagent log:\n{}",
        proxy.log_text(),
        agent.log_text()
    );
    assert_eq!(scored_of(&proxy, 20, "/"), 20);
    let text = scrape_metrics(metrics);
    assert!(metric_value(&text, "spoa_messages_total") >= 20.0);
    assert_eq!(metric_value(&text, REFUSED_TLS), 0.0);
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_and_haproxy_marks_the_agent_down() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let pki = Pki::new();
    let (agent, metrics, proxy) = pki.agent_behind_haproxy(&binary, Some("stranger-bundle.pem"));
    assert_marked_down(&proxy);
    assert_eq!(
        scored_of(&proxy, 5, "/"),
        0,
        "scored without a valid certificate"
    );
    let text = scrape_metrics(metrics);
    assert!(metric_value(&text, REFUSED_TLS) >= 1.0);
    assert_eq!(
        metric_value(&text, "spoa_messages_total"),
        0.0,
        "no guest was called"
    );
    let log = agent.log_text();
    assert!(
        log.contains("WARN") && log.contains("not signed by a CA in --tls-client-ca"),
        "a refused certificate is a warning that says what to do:\n{log}"
    );
    assert_eq!(
        log.matches("TLS handshake refused").count(),
        1,
        "logged once per peer address:\n{log}"
    );
}

/// HAProxy presenting an X.509 v1 client certificate (what `openssl x509
/// -req` makes without an extensions file): the agent says so at the
/// default log level, and how to issue a v3 one.
#[test]
fn an_x509_v1_client_certificate_is_refused_with_the_reason_in_words() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let pki = Pki::new();
    let (agent, _metrics, proxy) = pki.agent_behind_haproxy(&binary, Some("v1-bundle.pem"));
    assert!(
        eventually(Duration::from_secs(10), || agent
            .log_text()
            .contains("X.509 v1 certificate")),
        "no explanation in the agent's log:\n{}\nhaproxy:\n{}",
        agent.log_text(),
        proxy.log_text()
    );
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("X.509 v1 certificate"))
        .expect("the line");
    assert!(line.contains("WARN") && line.contains("-extfile"), "{line}");
}

#[test]
fn plain_spop_on_a_tls_port_is_refused_without_calling_a_guest() {
    let pki = Pki::new();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let agent = Agent::start_with(&pki.agent_args(metrics));
    let mut client = SpopClient::connect(agent.addr());
    client.set_read_timeout(Duration::from_secs(5));
    client.send(&support::spop_client::hello_frame(
        "2.0",
        16380,
        "pipelining",
        false,
    ));
    // What the peer sees: at most a TLS alert record (type 21), then the close.
    let mut answer = Vec::new();
    use std::io::Read;
    client
        .stream()
        .read_to_end(&mut answer)
        .expect("closed by the agent");
    assert!(
        answer.is_empty() || answer[0] == 21,
        "expected a TLS alert or nothing, got {answer:02x?}"
    );
    assert!(eventually(Duration::from_secs(5), || metric_value(
        &scrape_metrics(metrics),
        REFUSED_TLS
    ) >= 1.0));
}

#[test]
fn a_source_outside_the_allow_list_is_refused_before_a_byte_is_read() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let agent = Agent::start(
        &iprep_guest(),
        &[
            "--allow-from",
            "192.0.2.0/24",
            "--allow-from",
            "2001:db8::/32",
            "--metrics-address",
            &metrics.to_string(),
        ],
    );
    let proxy = start_haproxy(&binary, &agent.addr().to_string(), "");
    assert_marked_down(&proxy);
    assert_eq!(scored_of(&proxy, 1, "/"), 0);
    let text = scrape_metrics(metrics);
    assert!(
        metric_value(
            &text,
            "spoa_connections_refused_total{reason=\"allow_list\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric_value(&text, "spoa_connections_total"),
        0.0,
        "never served"
    );

    // The same agent, allowing loopback: scored.
    let allowed = Agent::start(&iprep_guest(), &["--allow-from", "127.0.0.0/8"]);
    let proxy = start_haproxy(&binary, &allowed.addr().to_string(), "");
    assert!(
        eventually(Duration::from_secs(10), || proxy.scores()),
        "{}",
        proxy.log_text()
    );
}

#[test]
fn haproxy_scores_over_a_unix_socket_and_a_stale_socket_file_is_replaced() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    // A socket file left by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let agent = Agent::start(
        &iprep_guest(),
        &[
            "--unix",
            &socket.display().to_string(),
            "--unix-mode",
            "660",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let proxy = start_haproxy(&binary, &format!("unix@{}", socket.display()), "");
    assert!(
        eventually(Duration::from_secs(10), || proxy.scores()),
        "no score over the Unix socket; haproxy log:\n{}\nagent log:\n{}",
        proxy.log_text(),
        agent.log_text()
    );
    // A second agent on the same, live socket is refused.
    let output = support::agent::run_host(&[
        "--module",
        &iprep_guest().display().to_string(),
        "--unix",
        &socket.display().to_string(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
}

#[test]
fn a_peer_without_a_client_certificate_is_refused() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let pki = Pki::new();
    let (_agent, metrics, proxy) = pki.agent_behind_haproxy(&binary, None);
    assert_marked_down(&proxy);
    let text = scrape_metrics(metrics);
    assert!(metric_value(&text, REFUSED_TLS) >= 1.0);
    assert_eq!(metric_value(&text, "spoa_messages_total"), 0.0);
}

/// The certificate the agent presents, as `openssl s_client` sees it.
fn served_subject(pki: &Pki, addr: SocketAddr) -> String {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(pki.path("ca.pem"))
        .arg("-cert")
        .arg(pki.path("client.pem"))
        .arg("-key")
        .arg(pki.path("client.key"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find(|line| line.starts_with("subject="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn certificates_are_reloaded_when_they_change_and_sessions_in_progress_go_on() {
    let Some(binary) = haproxy_binary() else {
        return;
    };
    let pki = Pki::new();
    let (agent, _metrics, proxy) = pki.agent_behind_haproxy(&binary, Some("client-bundle.pem"));
    assert!(eventually(Duration::from_secs(10), || proxy.scores()));
    assert!(served_subject(&pki, agent.addr()).contains("server"));

    // Renew: the new chain and key replace the files (as a deploy tool or
    // cert-manager would, by rename).
    for (from, to) in [("renewed.key", "server.key"), ("renewed.pem", "server.pem")] {
        std::fs::copy(pki.path(from), pki.path(&format!("{to}.new"))).expect("copy");
        std::fs::rename(pki.path(&format!("{to}.new")), pki.path(to)).expect("rename");
    }
    assert!(
        eventually(Duration::from_secs(10), || served_subject(
            &pki,
            agent.addr()
        )
        .contains("renewed")),
        "the renewed certificate is not served:\n{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("TLS certificate reloaded"));
    // HAProxy's sessions opened before go on scoring.
    assert_eq!(
        scored_of(&proxy, 10, "/after/"),
        10,
        "unscored after the reload"
    );
}

/// Starts spoa-host with `args` (no `-a`), returns its log up to "listening".
fn startup_log(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(support::agent::host_binary())
        .args(["--module", &iprep_guest().display().to_string()])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning spoa-host");
    let stderr = child.stderr.take().expect("stderr");
    let mut log = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("spoa-host listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

#[test]
fn loopback_by_default_and_one_warning_when_exposed_without_tls_or_allow_list() {
    let port = free_port().to_string();
    let default = startup_log(&["-p", &port]);
    assert!(default.contains("127.0.0.1:"), "{default}");
    assert!(!default.contains("WARN"), "{default}");

    let port = free_port().to_string();
    let exposed = startup_log(&["-a", "0.0.0.0", "-p", &port]);
    assert_eq!(
        exposed
            .matches("listening beyond loopback without TLS client certificates or an allow-list")
            .count(),
        1,
        "{exposed}"
    );
    assert!(exposed.contains("--allow-from") && exposed.contains("--tls-cert"));

    let port = free_port().to_string();
    let listed = startup_log(&["-a", "0.0.0.0", "-p", &port, "--allow-from", "10.0.0.0/8"]);
    assert!(!listed.contains("beyond loopback"), "{listed}");
}

/// `spoa-host check --tls-cert … --tls-key … --tls-client-ca …` finds the
/// mistakes before a deploy: an X.509 v1 certificate, a key of another
/// certificate, and a client CA file holding a certificate that is no CA.
#[test]
fn check_validates_the_tls_files_before_a_deploy() {
    let pki = Pki::new();
    let check = |cert: &str, key: &str, ca: &str| {
        let (cert, key, ca) = (pki.path(cert), pki.path(key), pki.path(ca));
        let output = support::agent::run_host(&[
            "check",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ]);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = check("server.pem", "server.key", "ca.pem");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("--tls-key matches --tls-cert") && out.contains("`CN=server`"),
        "{out}"
    );

    let (code, out) = check("v1.pem", "v1.key", "ca.pem");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("X.509 v1") && out.contains("-extfile"),
        "{out}"
    );

    let (code, out) = check("server.pem", "client.key", "ca.pem");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not the key of --tls-cert"), "{out}");

    let (code, out) = check("server.pem", "server.key", "client.pem");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not a CA"), "{out}");
}
