//! The rate-limit guest: reputation by request rate, kept in the agent's
//! shared key-value store (`wasi:keyvalue` + `spoa:agent/expiry`), so every
//! worker, every instance and — with `--kv redis://…` — every agent behind
//! the same HAProxy agrees on an address.
//!
//! For each `check-client-ip` message (argument `ip`):
//!
//! 1. an address remembered as bad (`ban:<ip>`, kept for `ban`) gets
//!    `ip_score` 0 and `blocked` = true;
//! 2. otherwise its request counter (`rate:<ip>`, a fixed window of
//!    `window` from its first request) is incremented; past `limit` requests
//!    the address is remembered as bad for `ban` and blocked;
//! 3. under the limit, `ip_score` falls linearly from 100 (first request)
//!    to 0 (at the limit), and `rate_count` is the count so far.
//!
//! When the store fails (Redis down, the deadline passed), the message is
//! answered with `ip_score` = `fallback-score` and not blocked: the agent
//! keeps serving and HAProxy decides with a neutral score.
//!
//! Settings (`wasi:config/store`): `limit` (requests per window, default
//! 100), `window` (default 60s), `ban` (default 5m), `fallback-score`
//! (default 50), `bucket` (default `default`). Durations take `ms`, `s`, `m`
//! or `h`.

use spoa_guest::store::{HostStore, Store};
use spoa_guest::{Action, Guest, Message, VarScope};

pub const CHECK_CLIENT_IP: &str = "check-client-ip";
pub const IP_SCORE: &str = "ip_score";
pub const RATE_COUNT: &str = "rate_count";
pub const BLOCKED: &str = "blocked";

/// The guest's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub limit: u64,
    pub window_ms: u64,
    pub ban_ms: u64,
    pub fallback_score: i32,
    pub bucket: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            limit: 100,
            window_ms: 60_000,
            ban_ms: 300_000,
            fallback_score: 50,
            bucket: spoa_guest::kv::DEFAULT_BUCKET.to_owned(),
        }
    }
}

impl Settings {
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let defaults = Settings::default();
        let duration = |key: &str, default: u64| match get(key) {
            Some(text) => {
                parse_millis(&text).ok_or_else(|| format!("config `{key}`: not a duration: {text}"))
            }
            None => Ok(default),
        };
        let number = |key: &str| get(key).map(|text| (text.trim().parse::<i64>(), text));
        let limit = match number("limit") {
            Some((Ok(n), _)) if n > 0 => n as u64,
            Some((_, text)) => {
                return Err(format!("config `limit`: not a positive number: {text}"));
            }
            None => defaults.limit,
        };
        let fallback_score = match number("fallback-score") {
            Some((Ok(n), _)) if (0..=100).contains(&n) => n as i32,
            Some((_, text)) => {
                return Err(format!("config `fallback-score`: not in 0..=100: {text}"));
            }
            None => defaults.fallback_score,
        };
        Ok(Settings {
            limit,
            window_ms: duration("window", defaults.window_ms)?,
            ban_ms: duration("ban", defaults.ban_ms)?,
            fallback_score,
            bucket: get("bucket").unwrap_or(defaults.bucket),
        })
    }
}

/// `250ms`, `10s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(scale).filter(|&ms| ms > 0)
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Banned,
    Counted {
        count: u64,
        score: i32,
        blocked: bool,
    },
    StoreFailed(String),
}

/// Judges `ip` against the store: the agent's in the guest, the SDK's
/// `MemoryStore` in the unit tests below.
pub fn judge(store: &mut impl Store, ip: &str, settings: &Settings) -> Verdict {
    let outcome = (|| -> Result<Verdict, String> {
        if store.exists(&format!("ban:{ip}"))? {
            return Ok(Verdict::Banned);
        }
        let count = store.increment_within(&format!("rate:{ip}"), 1, settings.window_ms)?;
        let blocked = count > settings.limit;
        if blocked {
            store.set_with_ttl(&format!("ban:{ip}"), b"1", settings.ban_ms)?;
        }
        let left = settings.limit.saturating_sub(count);
        let score = (u128::from(left) * 100 / u128::from(settings.limit)) as i32;
        Ok(Verdict::Counted {
            count,
            score,
            blocked,
        })
    })();
    outcome.unwrap_or_else(|err| Verdict::StoreFailed(err.to_string()))
}

pub fn actions(verdict: &Verdict, settings: &Settings) -> Vec<Action> {
    match verdict {
        Verdict::Banned => vec![
            Action::set(VarScope::Txn, IP_SCORE, 0),
            Action::set(VarScope::Txn, BLOCKED, true),
        ],
        Verdict::Counted {
            count,
            score,
            blocked,
        } => {
            let mut actions = vec![
                Action::set(VarScope::Txn, IP_SCORE, *score),
                Action::set(VarScope::Txn, RATE_COUNT, *count as i64),
            ];
            if *blocked {
                actions.push(Action::set(VarScope::Txn, BLOCKED, true));
            }
            actions
        }
        Verdict::StoreFailed(_) => vec![Action::set(
            VarScope::Txn,
            IP_SCORE,
            settings.fallback_score,
        )],
    }
}

struct RateLimit;

thread_local! {
    // Per instance (a wasm instance is one thread): the settings cannot
    // change under it (a configuration change loads a new version), and a
    // bucket handle stays valid for the instance's life. Both are read once.
    static SETTINGS: std::cell::OnceCell<Result<Settings, String>> = const { std::cell::OnceCell::new() };
    static BUCKET: std::cell::RefCell<Option<HostStore>> = const { std::cell::RefCell::new(None) };
}

fn judge_shared(ip: &str, settings: &Settings) -> Verdict {
    BUCKET.with_borrow_mut(|bucket| {
        if bucket.is_none() {
            match HostStore::open(&settings.bucket) {
                Ok(opened) => *bucket = Some(opened),
                Err(error) => return Verdict::StoreFailed(error),
            }
        }
        match bucket {
            Some(store) => judge(store, ip, settings),
            None => Verdict::StoreFailed("no bucket".into()),
        }
    })
}

impl Guest for RateLimit {
    fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
        if msg.name != CHECK_CLIENT_IP {
            return Ok(Vec::new());
        }
        let Some(ip) = msg.ip("ip") else {
            return Err("check-client-ip without an `ip` address argument".into());
        };
        SETTINGS.with(|cell| {
            let settings = cell
                .get_or_init(|| Settings::from_config(spoa_guest::config::get))
                .as_ref()
                .map_err(Clone::clone)?;
            let verdict = judge_shared(&ip.to_string(), settings);
            if let Verdict::StoreFailed(reason) = &verdict {
                spoa_guest::log::warn(&format!("store failed, fallback score for {ip}: {reason}"));
            }
            Ok(actions(&verdict, settings))
        })
    }
}

spoa_guest::export_handler!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use spoa_guest::store::MemoryStore;

    fn settings() -> Settings {
        Settings {
            limit: 3,
            window_ms: 1000,
            ban_ms: 5000,
            ..Settings::default()
        }
    }

    #[test]
    fn scores_fall_with_rate_then_the_address_is_banned_until_expiry() {
        let (mut store, settings) = (MemoryStore::new(), settings());
        let scores: Vec<Verdict> = (0..4)
            .map(|_| judge(&mut store, "192.0.2.1", &settings))
            .collect();
        assert_eq!(
            scores[0],
            Verdict::Counted {
                count: 1,
                score: 66,
                blocked: false
            }
        );
        assert_eq!(
            scores[2],
            Verdict::Counted {
                count: 3,
                score: 0,
                blocked: false
            }
        );
        assert_eq!(
            scores[3],
            Verdict::Counted {
                count: 4,
                score: 0,
                blocked: true
            }
        );
        store.advance(2000);
        assert_eq!(judge(&mut store, "192.0.2.1", &settings), Verdict::Banned);
        // Another address is unaffected.
        assert!(matches!(
            judge(&mut store, "192.0.2.2", &settings),
            Verdict::Counted { count: 1, .. }
        ));
        store.advance(4000);
        assert!(matches!(
            judge(&mut store, "192.0.2.1", &settings),
            Verdict::Counted {
                count: 1,
                blocked: false,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_store_gives_the_fallback_score_and_never_blocks() {
        let mut store = MemoryStore::new();
        store.set_down(true);
        let settings = settings();
        let verdict = judge(&mut store, "192.0.2.1", &settings);
        assert_eq!(verdict, Verdict::StoreFailed("store unavailable".into()));
        assert_eq!(
            actions(&verdict, &settings),
            vec![Action::set(VarScope::Txn, IP_SCORE, 50)]
        );
    }

    #[test]
    fn settings_parse_and_refuse_nonsense() {
        let config = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        let parsed = Settings::from_config(config(&[
            ("limit", "10"),
            ("window", "2s"),
            ("ban", "500ms"),
        ]))
        .unwrap();
        assert_eq!(
            (parsed.limit, parsed.window_ms, parsed.ban_ms),
            (10, 2000, 500)
        );
        assert!(Settings::from_config(config(&[("limit", "0")])).is_err());
        assert!(Settings::from_config(config(&[("window", "soon")])).is_err());
        assert!(Settings::from_config(config(&[("fallback-score", "101")])).is_err());
        assert_eq!(parse_millis("5m"), Some(300_000));
    }
}
