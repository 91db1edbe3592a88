//! A real `redis-server` (Debian package `redis-server`) on a free port,
//! with nothing persisted; killed on drop. Tests that need it fail, never
//! skip, when it is missing.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for_port};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

fn binary() -> String {
    let found = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    found.unwrap_or_else(|| {
        panic!(
            "redis-server not found: the shared-state tests run a real Redis. \
             Install it (Debian/Ubuntu: apt-get install redis-server), or run `make test`, \
             which installs it when apt-get can be used."
        )
    })
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Kills the server at once (as a crash would): its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.addr(), Duration::from_secs(10)),
            "redis-server did not listen on {}",
            self.addr()
        );
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("running redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
