//! The User-Agent guest: for every `check-user-agent` message it sets
//! `txn.<prefix>.ua_score` (0..100) from the `ua` argument:
//!
//! - no `ua`, or an empty one: 0;
//! - one containing a word of the `suspicious` list (configuration, comma
//!   separated; default: tools and scanners): `suspicious-score` (10);
//! - any other: `score` (90).
//!
//! A message a `suspicious` word matched adds one to the counter `rule_hits`
//! (`spoa_guest_counter_total{guest,name="rule_hits"}` when the operator
//! allows it). Deterministic, so an end-to-end test can tell exactly which guest
//! answered what.

use spoa_guest::{Action, Guest, Message, VarScope};

pub const CHECK_USER_AGENT: &str = "check-user-agent";
pub const UA_SCORE: &str = "ua_score";
pub const DEFAULT_SUSPICIOUS: &str = "curl,wget,python-requests,sqlmap,nikto,scanner,bot";

/// The scoring rules, from the guest's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub score: i32,
    pub suspicious_score: i32,
    pub suspicious: Vec<String>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            score: 90,
            suspicious_score: 10,
            suspicious: DEFAULT_SUSPICIOUS.split(',').map(str::to_owned).collect(),
        }
    }
}

impl Rules {
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> Result<Rules, String> {
        let defaults = Rules::default();
        let number = |key: &str, default: i32| match get(key) {
            Some(text) => text
                .trim()
                .parse::<i32>()
                .map_err(|_| format!("config `{key}` is not a number: {text}")),
            None => Ok(default),
        };
        Ok(Rules {
            score: number("score", defaults.score)?,
            suspicious_score: number("suspicious-score", defaults.suspicious_score)?,
            suspicious: match get("suspicious") {
                Some(list) => list
                    .split(',')
                    .map(|word| word.trim().to_ascii_lowercase())
                    .filter(|word| !word.is_empty())
                    .collect(),
                None => defaults.suspicious,
            },
        })
    }

    pub fn score(&self, user_agent: Option<&str>) -> i32 {
        match user_agent.filter(|ua| !ua.trim().is_empty()) {
            None => 0,
            Some(_) if self.matched(user_agent) => self.suspicious_score,
            Some(_) => self.score,
        }
    }

    /// Whether a `suspicious` word is in `user_agent` (a rule hit).
    pub fn matched(&self, user_agent: Option<&str>) -> bool {
        let Some(user_agent) = user_agent else {
            return false;
        };
        let lower = user_agent.to_ascii_lowercase();
        self.suspicious
            .iter()
            .any(|word| lower.contains(word.as_str()))
    }
}

pub fn actions_for(message: &Message, rules: &Rules) -> Vec<Action> {
    if message.name != CHECK_USER_AGENT {
        return Vec::new();
    }
    let user_agent = message.str_lossy("ua");
    vec![Action::set(
        VarScope::Txn,
        UA_SCORE,
        rules.score(user_agent.as_deref()),
    )]
}

/// The counter of messages a `suspicious` rule matched, in the agent's
/// metrics when the operator allows it (`metrics = ["rule_hits"]`).
pub const RULE_HITS: &str = "rule_hits";

struct UserAgentScore;

thread_local! {
    // Per instance, the SDK's one idiom: prepared in `init`, kept for the
    // instance's life (a configuration change loads a new version).
    static RULES: std::cell::OnceCell<Rules> = const { std::cell::OnceCell::new() };
}

impl Guest for UserAgentScore {
    fn init() -> Result<(), String> {
        let rules = Rules::from_config(spoa_guest::config::get)?;
        RULES.with(|cell| cell.set(rules).map_err(|_| "init ran twice".to_owned()))
    }

    fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
        RULES.with(|cell| {
            let rules = cell.get().ok_or("no rules: init did not run")?;
            let actions = actions_for(&msg, rules);
            if rules.matched(msg.str_lossy("ua").as_deref()) {
                spoa_guest::metrics::count(RULE_HITS);
            }
            Ok(actions)
        })
    }
}

spoa_guest::export_handler!(UserAgentScore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_tools_low_browsers_high_and_nothing_zero() {
        let rules = Rules::default();
        assert_eq!(rules.score(Some("curl/8.5.0")), 10);
        assert_eq!(rules.score(Some("Googlebot/2.1")), 10);
        assert_eq!(
            rules.score(Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")),
            90
        );
        assert_eq!(rules.score(Some("  ")), 0);
        assert_eq!(rules.score(None), 0);
    }

    #[test]
    fn configuration_changes_the_rules() {
        let rules = Rules::from_config(|key| match key {
            "score" => Some("75".into()),
            "suspicious" => Some("Firefox, wget".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(rules.score(Some("Mozilla/5.0 Firefox/128.0")), 10);
        assert_eq!(rules.score(Some("curl/8")), 75);
        assert!(Rules::from_config(|_| Some("x".into())).is_err());
    }
}
