//! IP reputation: `check-client-ip` (argument `ip`) sets `sess.ip_score`
//! (0 for an address in the IP table `blocklist`, else random 0..=100 from
//! the host) and `txn.ip_blocked` (the score below `threshold`, default 20).
use spoa_guest::tables::IpTable;
use spoa_guest::{Action, Guest, Message, VarScope, config, random};
use std::sync::OnceLock;

/// Prepared once per instance, in `init`.
struct Settings {
    threshold: i64,
    blocklist: Option<IpTable>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

struct IpReputation;

impl Guest for IpReputation {
    fn init() -> Result<(), String> {
        let settings = Settings {
            threshold: config::get_or("threshold", 20)?,
            blocklist: IpTable::open("blocklist").ok(),
        };
        let _ = SETTINGS.set(settings);
        Ok(())
    }

    fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
        if msg.name != "check-client-ip" {
            return Ok(vec![]);
        }
        let settings = SETTINGS.get().ok_or("init did not run")?;
        let ip = msg.ip("ip").ok_or("check-client-ip: argument ip is missing or not an address")?;
        let listed = settings.blocklist.as_ref().is_some_and(|list| list.contains(ip));
        let score = if listed { 0 } else { random::below(101) as i32 };
        Ok(vec![
            Action::set(VarScope::Sess, "ip_score", score),
            Action::set(VarScope::Txn, "ip_blocked", i64::from(score) < settings.threshold),
        ])
    }
}

spoa_guest::export_handler!(IpReputation);
