//! IP reputation with a block list, as a spoa-host guest (see README.md).
use ipnet::IpNet;
use spoa_guest::{Action, Guest, Message, VarScope, config, random};
use std::{net::IpAddr, sync::OnceLock};

/// One CIDR per line (a bare address is a /32 or /128), `#` comments. Read on
/// the first call and kept by this instance; a missing file is an empty list.
fn blocklist() -> &'static [IpNet] {
    static NETS: OnceLock<Vec<IpNet>> = OnceLock::new();
    NETS.get_or_init(|| {
        let path = config::get("blocklist").unwrap_or("/data/blocklist.txt".into());
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let net = |line: &str| {
            let e = line.split('#').next()?.trim();
            e.parse().or(e.parse::<IpAddr>().map(IpNet::from)).ok()
        };
        text.lines().filter_map(net).collect()
    })
}

struct IpReputation;

impl Guest for IpReputation {
    fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
        if msg.name != "check-client-ip" {
            return Ok(vec![]);
        }
        let threshold: i64 = config::get_or("threshold", 20)?;
        let ip = msg.ip("ip").ok_or("ip: not an address")?.to_canonical(); // ::ffff:a.b.c.d is IPv4
        let blocked = blocklist().iter().any(|net| net.contains(&ip));
        let score = if blocked { 0 } else { random::below(101) };
        Ok(vec![
            Action::set(VarScope::Sess, "ip_score", score as i32),
            Action::set(VarScope::Txn, "ip_blocked", (score as i64) < threshold),
        ])
    }
}

spoa_guest::export_handler!(IpReputation);
