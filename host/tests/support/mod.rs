//! Test harness: real `spoa-host` and `haproxy` processes on free loopback
//! ports, an SPOP client built on the host's own codec, and a plain HTTP
//! client. Every process started here is killed when its guard drops.
//! Each test binary uses part of it.
#![allow(dead_code)]

pub mod agent;
pub mod haproxy;
pub mod http;
pub mod lists;
pub mod pki;
pub mod redis;
pub mod spop_client;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root (where `Makefile` and `target/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A built artifact under `target/`, or a clear failure telling how to build it.
pub fn artifact(relative: &str) -> PathBuf {
    let path = workspace_root().join("target").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `make test`, which builds the guests and the host first",
        path.display()
    );
    path
}

/// The IP-reputation guest component built by `make`.
pub fn iprep_guest() -> PathBuf {
    artifact("guest_iprep.wasm")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `condition` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hostile guest fixture, version "A" or "B" (built by `make fixtures`).
pub fn hostile_guest(version: char) -> PathBuf {
    artifact(&format!(
        "fixtures/guest_hostile_{}.wasm",
        version.to_ascii_lowercase()
    ))
}

/// A fixture file kept in the repository (`tests/fixtures/NAME`).
pub fn source_fixture(name: &str) -> PathBuf {
    workspace_root().join("tests").join("fixtures").join(name)
}

/// Puts `source`'s content at `target` as a deploy tool would: written
/// aside, then renamed over it (one atomic change for the watchers).
pub fn install(source: &std::path::Path, target: &std::path::Path) {
    let aside = aside(target);
    std::fs::copy(source, &aside).expect("copying aside");
    std::fs::rename(&aside, target).expect("renaming into place");
}

/// Writes `text` to `target` the same way.
pub fn write_atomically(target: &std::path::Path, text: &str) {
    let aside = aside(target);
    std::fs::write(&aside, text).expect("writing aside");
    std::fs::rename(&aside, target).expect("renaming into place");
}

fn aside(target: &std::path::Path) -> PathBuf {
    let name = target
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    target.with_file_name(format!(".{name}.new"))
}
