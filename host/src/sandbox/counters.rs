//! `spoa:agent/metrics` for guests: counters by the names the operator
//! allowed. Each allowed name is one series of the agent's metrics, so a
//! guest can neither add series nor learn what other guests count; a name
//! not allowed is refused, not created.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::bindings::guest_metrics as wit;
use super::state::GuestState;

/// Most counter names one guest may be allowed: the bound on the series a
/// guest adds to the agent's metrics.
pub const MAX_GUEST_COUNTERS: usize = 32;
/// Longest counter name.
pub const MAX_COUNTER_NAME: usize = 64;

/// The counter names the operator allows one guest, validated and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterGrants(Vec<String>);

impl CounterGrants {
    /// Validates `names`: each a metric label value of `a-z`, `0-9` and `_`
    /// starting with a letter, at most [`MAX_COUNTER_NAME`] long, and at most
    /// [`MAX_GUEST_COUNTERS`] of them. A name given twice counts once.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<CounterGrants, String> {
        let mut grants: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            check_counter_name(name)?;
            if !grants.iter().any(|granted| granted == name) {
                grants.push(name.to_owned());
            }
        }
        if grants.len() > MAX_GUEST_COUNTERS {
            return Err(format!(
                "{} counter names; a guest may have at most {MAX_GUEST_COUNTERS}",
                grants.len()
            ));
        }
        grants.sort();
        Ok(CounterGrants(grants))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable text of the grants, for the reload fingerprint.
    pub fn describe(&self) -> String {
        self.0.join(",")
    }
}

/// Checks one counter name (see [`CounterGrants::from_names`]).
pub fn check_counter_name(name: &str) -> Result<(), String> {
    let plain = name.len() <= MAX_COUNTER_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "counter name `{name}`: use 1 to {MAX_COUNTER_NAME} of a-z, 0-9 and _, starting with a letter"
        ))
    }
}

/// Hands out the agent's counter for one of a guest's names
/// (`spoa_guest_counter_total{guest, name}`); set by the layer that owns the
/// metrics, so the sandbox never names them.
pub type CounterSource = Arc<dyn Fn(&str) -> Counter + Send + Sync>;

/// A guest's counters by name, shared by all its instances.
#[derive(Clone, Default)]
pub struct GuestCounters(Arc<HashMap<String, Counter>>);

impl std::fmt::Debug for GuestCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl GuestCounters {
    /// The counters `grants` allows: the agent's from `source`, or, without
    /// one (a deterministic run, a shadow, `call`), counters of their own
    /// that no scrape reads.
    pub fn resolve(grants: &CounterGrants, source: Option<&CounterSource>) -> GuestCounters {
        let counters = grants
            .names()
            .iter()
            .map(|name| {
                let counter = source.map(|source| source(name)).unwrap_or_default();
                (name.clone(), counter)
            })
            .collect();
        GuestCounters(Arc::new(counters))
    }

    /// The same names, counted where nothing reads them (the smoke call).
    pub fn detached(&self) -> GuestCounters {
        GuestCounters(Arc::new(
            self.0
                .keys()
                .map(|name| (name.clone(), Counter::default()))
                .collect(),
        ))
    }

    /// Each name's count so far.
    pub fn values(&self) -> Vec<(String, u64)> {
        let mut values: Vec<(String, u64)> = self
            .0
            .iter()
            .map(|(name, counter)| (name.clone(), counter.get()))
            .collect();
        values.sort();
        values
    }

    fn increment(&self, name: &str, by: u64) -> Result<(), wit::CounterError> {
        let counter = self.0.get(name).ok_or(wit::CounterError::NotAllowed)?;
        // A counter never goes backwards: an increment past u64::MAX stops
        // there (two racing near the top may still wrap; no guest counts
        // that far honestly).
        counter.inc_by(by.min(u64::MAX - counter.get()));
        Ok(())
    }
}

impl wit::Host for GuestState {
    fn increment(&mut self, name: String, by: u64) -> Result<(), wit::CounterError> {
        self.smoke_counters
            .as_ref()
            .unwrap_or(&self.counters)
            .increment(&name, by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_bounded_and_counted_once() {
        let grants = CounterGrants::from_names(&["rule_hits", "blocked", "rule_hits"]).unwrap();
        assert_eq!(grants.names(), ["blocked", "rule_hits"]);
        for bad in ["", "Rule", "1st", "a-b", "a b", &"x".repeat(65)] {
            assert!(CounterGrants::from_names(&[bad]).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_GUEST_COUNTERS).map(|i| format!("c{i}")).collect();
        assert!(CounterGrants::from_names(&many).is_err());
        assert!(CounterGrants::from_names(&many[..MAX_GUEST_COUNTERS]).is_ok());
    }

    #[test]
    fn only_allowed_names_count_and_they_count_into_the_source() {
        let family: Arc<std::sync::Mutex<HashMap<String, Counter>>> = Default::default();
        let seen = family.clone();
        let source: CounterSource = Arc::new(move |name: &str| {
            let mut seen = seen.lock().unwrap();
            seen.entry(name.to_owned()).or_default().clone()
        });
        let grants = CounterGrants::from_names(&["rule_hits"]).unwrap();
        let counters = GuestCounters::resolve(&grants, Some(&source));
        counters.increment("rule_hits", 2).unwrap();
        counters.increment("rule_hits", 3).unwrap();
        assert_eq!(
            counters.increment("other", 1),
            Err(wit::CounterError::NotAllowed)
        );
        assert_eq!(family.lock().unwrap()["rule_hits"].get(), 5);

        let smoke = counters.detached();
        smoke.increment("rule_hits", 7).unwrap();
        assert_eq!(family.lock().unwrap()["rule_hits"].get(), 5);
        assert_eq!(smoke.values(), [("rule_hits".to_owned(), 7)]);
    }
}
