//! IP reputation with a block list and an optional country table, as a
//! spoa-host guest (see README.md).
use spoa_guest::tables::IpTable;
use spoa_guest::{Action, Guest, Message, VarScope, config, random};
use std::sync::OnceLock;

/// What each instance prepares once, in `init`: its settings and tables.
struct Settings {
    threshold: i64,
    /// The IP table `blocklist` (any list, e.g. FireHOL level1), if granted.
    blocklist: Option<IpTable>,
    /// The IP table `country` (a MaxMind DB: GeoLite2-Country), if granted.
    country: Option<IpTable>,
    /// ISO codes whose addresses are blocked (`blocked-countries=CN,RU`).
    blocked_countries: Vec<String>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> Result<Settings, String> {
    let countries = config::get("blocked-countries").unwrap_or_default();
    Ok(Settings {
        threshold: config::get_or("threshold", 20)?,
        blocklist: IpTable::open("blocklist").ok(),
        country: IpTable::open("country").ok(),
        blocked_countries: countries
            .split(',')
            .map(|code| code.trim().to_ascii_uppercase())
            .filter(|code| !code.is_empty())
            .collect(),
    })
}

struct IpReputation;

impl Guest for IpReputation {
    fn init() -> Result<(), String> {
        let settings = settings()?; // a bad threshold refuses this version
        let _ = SETTINGS.set(settings);
        Ok(())
    }

    fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
        if msg.name != "check-client-ip" {
            return Ok(vec![]);
        }
        let s = SETTINGS.get().ok_or("init did not run")?;
        let ip = msg.ip("ip").ok_or("ip: not an address")?; // ::ffff:a.b.c.d matches IPv4
        let country = s
            .country
            .as_ref()
            .and_then(|db| db.text_field(ip, "country.iso_code"));
        let listed = s.blocklist.as_ref().is_some_and(|list| list.contains(ip))
            || country
                .as_ref()
                .is_some_and(|c| s.blocked_countries.contains(c));
        let score = if listed { 0 } else { random::below(101) };
        let mut actions = vec![
            Action::set(VarScope::Sess, "ip_score", score as i32),
            Action::set(VarScope::Txn, "ip_blocked", (score as i64) < s.threshold),
        ];
        if let Some(country) = country {
            actions.push(Action::set(VarScope::Txn, "ip_country", country));
        }
        Ok(actions)
    }
}

spoa_guest::export_handler!(IpReputation);
