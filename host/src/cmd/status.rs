//! `spoa-host status`: fetches `GET /status` from a running agent's metrics
//! address and prints it as a table (or as the JSON served, `--json`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::metrics::status::{GuestStatus, StatusReport};
use crate::settings::cli::{SandboxArgs, StatusArgs};
use crate::settings::file::AgentConfig;

/// Where `status` looks without `--metrics-address` or `--config`: the
/// address the README and the Debian package's configuration use.
const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9345";
const TIMEOUT: Duration = Duration::from_secs(5);
const MOST_BYTES: u64 = 16 << 20;

pub fn print(args: &StatusArgs) -> Result<()> {
    let address = metrics_address(args)?;
    let body = fetch(address)?;
    if args.json {
        print!("{body}");
        return Ok(());
    }
    let report: StatusReport = serde_json::from_str(&body)
        .with_context(|| format!("http://{address}/status did not answer a status report"))?;
    print!("{}", table(&report));
    Ok(())
}

fn metrics_address(args: &StatusArgs) -> Result<SocketAddr> {
    if let Some(address) = args.metrics_address {
        return Ok(address);
    }
    if let Some(path) = &args.config {
        let config = AgentConfig::load(path, &SandboxArgs::defaults(), None)?;
        return config.metrics_address.with_context(|| {
            format!(
                "{} sets no metrics-address: the agent serves no status",
                path.display()
            )
        });
    }
    Ok(DEFAULT_METRICS_ADDRESS.parse()?)
}

/// The body of `GET /status`, over plain HTTP/1.1 (the agent's endpoint
/// answers one request per connection and closes it).
fn fetch(address: SocketAddr) -> Result<String> {
    let url = format!("http://{address}/status");
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).with_context(|| {
        format!("connecting to {url}: is the agent running with --metrics-address {address}?")
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending the request to {url}"))?;
    let mut response = Vec::new();
    stream
        .take(MOST_BYTES)
        .read_to_end(&mut response)
        .with_context(|| format!("reading {url}"))?;
    let response = String::from_utf8(response).with_context(|| format!("{url}: not UTF-8"))?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("{url}: not an HTTP response");
    };
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) != Some("200") {
        bail!("{url} answered `{status_line}` (an agent older than `/status`?)");
    }
    Ok(body.to_owned())
}

/// One row per guest, then the details of those not simply serving.
pub fn table(report: &StatusReport) -> String {
    let mut out = format!(
        "spoa-host {}, up {} s (since {})\n\n",
        report.agent.version, report.agent.uptime_seconds, report.agent.started_at
    );
    if report.guests.is_empty() {
        out.push_str("no guests (the native benchmark handler serves)\n");
        return out;
    }
    let header = ["GUEST", "STATE", "CALLS", "FAULTS", "SHA-256", "MODULE"];
    let rows: Vec<[String; 6]> = report
        .guests
        .iter()
        .map(|guest| {
            [
                guest.name.clone(),
                guest.state.name().to_owned(),
                guest.calls.to_string(),
                guest.faults.to_string(),
                guest.module.sha256.chars().take(12).collect(),
                guest.module.path.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    for guest in &report.guests {
        let details = details(guest);
        if !details.is_empty() {
            out.push_str(&format!("\n{}:\n", guest.name));
            for detail in details {
                out.push_str(&format!("  {detail}\n"));
            }
        }
    }
    out
}

fn details(guest: &GuestStatus) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(p) = &guest.probation {
        lines.push(format!(
            "on probation: {} of {} calls, {} faults (rolled back past {})",
            p.calls, p.calls_to_pass, p.faults, p.fault_limit
        ));
    }
    if let Some(until) = &guest.quarantined_until {
        lines.push(format!("quarantined until {until}"));
    }
    if guest.calls_enter == crate::metrics::status::CallEntry::OnFibers {
        lines.push("calls run on fibers (slower; the log says why)".into());
    }
    if let Some(rollback) = &guest.rolled_back {
        lines.push(format!(
            "rolled back at {} from {} ({}) to {} ({})",
            rollback.at,
            rollback.from.path,
            short(&rollback.from.sha256),
            rollback.to.path,
            short(&rollback.to.sha256)
        ));
    }
    if let Some(reload) = &guest.last_reload {
        let mut text = format!("last reload {}: {}", reload.at, reload.result);
        if let Some(cause) = &reload.cause {
            text.push_str(&format!(" ({cause})"));
        }
        if let Some(trigger) = &reload.trigger {
            text.push_str(&format!(", on {trigger}"));
        }
        lines.push(text);
    }
    let failures: Vec<String> = guest
        .failures
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    if !failures.is_empty() {
        lines.push(format!("unanswered: {}", failures.join(", ")));
    }
    lines
}

fn short(sha256: &str) -> String {
    sha256.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metrics::status::{
        AgentStatus, CallEntry, GuestState, ModuleRef, ProbationStatus, ReloadRecord,
    };

    #[test]
    fn the_table_names_each_guest_and_what_is_not_plain_serving() {
        let guest = |name: &str, state| GuestStatus {
            name: name.into(),
            module: ModuleRef {
                path: format!("/srv/{name}.wasm"),
                sha256: "0123456789abcdef".into(),
            },
            state,
            probation: None,
            quarantined_until: None,
            rolled_back: None,
            last_reload: None,
            calls: 42,
            faults: 0,
            failures: BTreeMap::new(),
            calls_enter: CallEntry::Directly,
        };
        let mut probation = guest("uascore", GuestState::Probation);
        probation.probation = Some(ProbationStatus {
            calls: 7,
            faults: 1,
            calls_to_pass: 100,
            fault_limit: 20,
        });
        probation.last_reload = Some(ReloadRecord {
            at: "2026-12-03T08:00:00Z".into(),
            result: "ok".into(),
            cause: None,
            trigger: Some("module changed".into()),
        });
        let report = StatusReport {
            agent: AgentStatus {
                version: "1.2.3".into(),
                started_at: "2026-12-03T07:00:00Z".into(),
                uptime_seconds: 60,
            },
            guests: vec![guest("iprep", GuestState::Serving), probation],
        };
        let text = table(&report);
        assert!(text.contains("spoa-host 1.2.3, up 60 s"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("iprep ")
                && l.contains("serving")
                && l.ends_with("/srv/iprep.wasm")),
            "{text}"
        );
        assert!(text.contains("0123456789ab "), "{text}");
        assert!(
            text.contains("on probation: 7 of 100 calls, 1 faults"),
            "{text}"
        );
        assert!(
            text.contains("last reload 2026-12-03T08:00:00Z: ok, on module changed"),
            "{text}"
        );
        assert!(!text.contains("\niprep:\n"), "{text}");
    }
}
