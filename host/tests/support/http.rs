//! A tiny blocking HTTP/1.1 client for end-to-end requests through HAProxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    get_with(addr, path, &[])
}

/// `GET path` with `Connection: close` and `headers`.
pub fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&String::from_utf8_lossy(&raw))
        .ok_or_else(|| std::io::Error::other(format!("unparsable response: {raw:?}")))
}

fn parse(raw: &str) -> Option<Response> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The agent's Prometheus text from `/metrics` at `addr`.
pub fn scrape_metrics(addr: SocketAddr) -> String {
    let response = get(addr, "/metrics").expect("scraping /metrics");
    assert_eq!(response.status, 200);
    response.body
}

/// The value of the series whose line starts with `series` (name plus labels).
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("series `{series}` missing from:\n{metrics}"))
}

/// Four clients sending `GET /` to an address in a loop, as steady traffic
/// while something is reloaded, crashed or replaced; each outcome is what
/// the test's `classify` makes of the response, with when it came.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    outcomes: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: SocketAddr, classify: fn(std::io::Result<Response>) -> String) -> Traffic {
        let stop = std::sync::Arc::<std::sync::atomic::AtomicBool>::default();
        let outcomes = std::sync::Arc::<std::sync::Mutex<Vec<_>>>::default();
        let clients = (0..4)
            .map(|_| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let outcome = classify(get(addr, "/"));
                        let mut outcomes = outcomes.lock().expect("lock");
                        outcomes.push((std::time::Instant::now(), outcome));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            outcomes,
            clients,
        }
    }

    /// The latest outcome so far.
    pub fn last(&self) -> Option<String> {
        let outcomes = self.outcomes.lock().expect("lock");
        outcomes.last().map(|(_, outcome)| outcome.clone())
    }

    /// Stops the clients; every outcome, in the order they came.
    pub fn stop(self) -> Vec<(std::time::Instant, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in self.clients {
            client.join().expect("client");
        }
        std::mem::take(&mut *self.outcomes.lock().expect("lock"))
    }
}

/// Asserts that each series in `expected` has its value on the `/metrics`
/// page `page`.
pub fn assert_metrics(page: &str, expected: &[(&str, f64)]) {
    for &(series, value) in expected {
        assert_eq!(metric_value(page, series), value, "{series} in:\n{page}");
    }
}
