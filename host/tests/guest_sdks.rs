//! The SDKs' plain parts in their languages' own runtimes (Python's
//! unittest, `node --test`, a native gcc build of the C SDK's test), and
//! the header-list parsers of all four SDKs against what a real HAProxy
//! sends as `req.hdrs_bin`: captured by recording (`--record`), parsed by
//! the Rust SDK, and every other SDK held to the same headers.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agent::Agent;
use support::{eventually, workspace_root};

fn run(what: &str, command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // unittest reports on stderr, node --test on stdout.
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Real request headers, as HAProxy hands them to an agent: a long cookie
/// takes a two-byte length, a value with a colon, and the names as sent.
const COOKIE_LEN: usize = 300;

/// The `req.hdrs_bin` of one request through a real HAProxy, as bytes.
fn capture_from_haproxy(binary: &PathBuf) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().display().to_string();
    let agent = Agent::start(
        &support::iprep_guest(),
        &["--record", &record, "--record-share", "1"],
    );
    let proxy = support::haproxy::start_with(
        binary,
        &[agent.addr()],
        0,
        |c| c,
        |spoe| spoe.replace("args ip=src", "args ip=src hdrs=req.hdrs_bin"),
    );
    let cookie = "c".repeat(COOKIE_LEN);
    let probe = || {
        support::http::get_with(
            proxy.http,
            "/",
            &[("X-Probe", "hello: world"), ("Cookie", &cookie)],
        )
        .is_ok_and(|response| response.header("X-IP-Score").is_some())
    };
    assert!(
        eventually(Duration::from_secs(10), probe),
        "no scored response: {}",
        proxy.log_text()
    );
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = recorded_hdrs(dir.path());
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no recorded hdrs argument; agent log:\n{}",
            agent.log_text()
        )
    })
}

fn recorded_hdrs(dir: &Path) -> Option<Vec<u8>> {
    for entry in std::fs::read_dir(dir).ok()? {
        let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).ok()?;
            for arg in record["args"].as_array()? {
                if let Some(hex) = arg.as_str().and_then(|a| a.strip_prefix("hdrs=bin:")) {
                    let bytes = hex::decode(hex).ok()?;
                    if bytes.windows(7).any(|w| w.eq_ignore_ascii_case(b"x-probe")) {
                        return Some(bytes);
                    }
                }
            }
        }
    }
    None
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[test]
fn every_sdk_parses_the_headers_a_real_haproxy_sends() {
    let Some(binary) = support::haproxy::haproxy_binary() else {
        return;
    };
    let bytes = capture_from_haproxy(&binary);
    let headers = spoa_guest::headers::parse(&bytes).expect("the Rust SDK parses it");
    let expected: Vec<(String, String)> = headers
        .iter()
        .map(|h| (latin1(h.name), latin1(h.value)))
        .collect();
    assert_eq!(
        spoa_guest::headers::find(&headers, "x-probe"),
        Some(&b"hello: world"[..]),
        "{expected:?}"
    );
    assert_eq!(
        spoa_guest::headers::find(&headers, "cookie").map(<[u8]>::len),
        Some(COOKIE_LEN)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let hex_file = dir.path().join("hdrs.hex");
    let expect_file = dir.path().join("hdrs.json");
    std::fs::write(&hex_file, hex::encode(&bytes)).expect("writing the capture");
    let pairs: Vec<[&str; 2]> = expected
        .iter()
        .map(|(n, v)| [n.as_str(), v.as_str()])
        .collect();
    std::fs::write(&expect_file, serde_json::to_string(&pairs).expect("json")).expect("writing");
    let sdk = workspace_root().join("sdk");

    // Python and JavaScript compare inside their tests (HDRS_BIN set: not skipped).
    let python = run(
        "the Python SDK's tests",
        Command::new("python3")
            .args(["-m", "unittest", "discover", "-v", "-s"])
            .arg(sdk.join("python/tests"))
            .env("PYTHONPATH", sdk.join("python/src"))
            .env("HDRS_BIN", &hex_file)
            .env("HDRS_EXPECT", &expect_file),
    );
    assert!(
        python.contains("test_a_list_from_haproxy") && !python.contains("skipped"),
        "{python}"
    );
    let node = run(
        "the JavaScript SDK's tests",
        Command::new("node")
            .arg("--test")
            .arg(sdk.join("javascript/test"))
            .env("HDRS_BIN", &hex_file)
            .env("HDRS_EXPECT", &expect_file),
    );
    assert!(node.contains("# skipped 0"), "{node}");

    // C prints what it parsed.
    let c_test = dir.path().join("test_sdk");
    run(
        "building the C SDK's test with gcc",
        Command::new("gcc")
            .args(["-Wall", "-Werror", "-O1", "-I"])
            .arg(sdk.join("c"))
            .arg("-o")
            .arg(&c_test)
            .arg(sdk.join("c/tests/test_sdk.c"))
            .arg(sdk.join("c/spoa_headers.c"))
            .arg(sdk.join("c/spoa_memory_store.c")),
    );
    let printed = Command::new(&c_test)
        .arg(&hex_file)
        .output()
        .expect("the C SDK's test");
    assert!(printed.status.success(), "{printed:?}");
    let printed = String::from_utf8_lossy(&printed.stdout);
    let from_c: Vec<String> = printed.lines().map(str::to_owned).collect();
    let want: Vec<String> = expected.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    assert_eq!(from_c, want);
}

/// The SDKs' own tests without a capture (headers and store doubles), as a
/// guest author runs them.
#[test]
fn the_python_and_javascript_sdk_tests_pass_in_their_runtimes() {
    let sdk = workspace_root().join("sdk");
    run(
        "the Python SDK's tests",
        Command::new("python3")
            .args(["-m", "unittest", "discover", "-s"])
            .arg(sdk.join("python/tests"))
            .env("PYTHONPATH", sdk.join("python/src")),
    );
    run(
        "the JavaScript SDK's tests",
        Command::new("node")
            .arg("--test")
            .arg(sdk.join("javascript/test")),
    );
}

/// A C guest that uses stdio imports WASI preview 1 through wasi-libc:
/// `sdk/c/build-guest.sh` adapts it with the reactor adapter of the
/// `wasi-preview1-component-adapter-provider` crate (`make c-tools`), and
/// the line it prints reaches the host's log. The SDK alone imports no WASI
/// (the example's component imports no `wasi:cli` or `wasi:io`).
#[test]
fn a_c_guest_using_stdio_is_adapted_and_its_output_is_logged() {
    let root = workspace_root();
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("stdio.wasm");
    run(
        "sdk/c/build-guest.sh",
        Command::new(root.join("sdk/c/build-guest.sh"))
            .arg(&module)
            .arg(root.join("wit"))
            .arg(root.join("tests/fixtures/guest-c-stdio/app.c")),
    );
    let output =
        support::agent::run_host(&["call", &module.display().to_string(), "--message", "hello"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(r#""name":"printed","value":{"type":"int32","value":21}"#),
        "{stdout}"
    );
    assert!(stderr.contains("hello from a C guest"), "{stderr}");

    // WASI 0.2 proper (`wasi:cli`, `wasi:io`), not the host's `wasi:config`.
    let imports_wasi = |bytes: &[u8]| {
        [&b"wasi:cli/"[..], b"wasi:io/"]
            .iter()
            .any(|name| bytes.windows(name.len()).any(|w| w == *name))
    };
    assert!(imports_wasi(
        &std::fs::read(&module).expect("the stdio guest")
    ));
    let example = std::fs::read(support::artifact("examples/iprep_c.wasm")).expect("the C example");
    assert!(!imports_wasi(&example), "the C example imports WASI");
}
