//! `GET /status`: what each guest runs right now, as JSON. The same report
//! is what `spoa-host status` fetches and prints as a table, so both sides
//! share these types.
//!
//! The metrics layer owns the report's shape and the guests' history (the
//! last reload, the last rollback), recorded where the series are counted.
//! The guests' live state (which version serves, probation, quarantine)
//! belongs to the executors: they fill it in through [`StatusSource`], so
//! nothing here imports them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent: AgentStatus,
    pub guests: Vec<GuestStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub uptime_seconds: u64,
}

/// A module file, as the status names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    pub path: String,
    pub sha256: String,
}

impl ModuleRef {
    pub fn of(identity: &crate::sandbox::ModuleIdentity) -> ModuleRef {
        ModuleRef {
            path: identity.path.display().to_string(),
            sha256: identity.sha256.clone(),
        }
    }
}

/// What a guest is doing. One word, the most pressing one: a quarantined
/// guest's version may also be on probation, and a rolled-back guest may be
/// quarantined later; the details below carry the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestState {
    /// Calls are answered by the guest's current version.
    Serving,
    /// A new version serves and is judged by its first calls.
    Probation,
    /// Too many faults: messages are answered by the failure policy until
    /// `quarantined_until`.
    Quarantined,
    /// The last new version failed its probation; the one before serves.
    RolledBack,
    /// A state this `spoa-host status` does not know (a newer agent's).
    #[serde(other)]
    Unknown,
}

impl GuestState {
    pub const fn name(self) -> &'static str {
        match self {
            GuestState::Serving => "serving",
            GuestState::Probation => "probation",
            GuestState::Quarantined => "quarantined",
            GuestState::RolledBack => "rolled_back",
            GuestState::Unknown => "unknown",
        }
    }
}

/// A version's probation so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbationStatus {
    pub calls: u64,
    pub faults: u64,
    /// Calls after which the version passes.
    pub calls_to_pass: u64,
    /// Faults past which it is rolled back.
    pub fault_limit: u64,
}

/// The last rollback of a guest, until a new version replaces the one it
/// restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// The version that failed its probation.
    pub from: ModuleRef,
    /// The version restored.
    pub to: ModuleRef,
    pub at: String,
}

/// The last reload attempt of a guest's module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRecord {
    pub at: String,
    /// `ok`, `unchanged`, `failed` or `rejected_before` (the files of a
    /// version rolled back, not loaded again), as `spoa_module_reloads_total`.
    pub result: String,
    /// For `failed`: the step that refused the module, as
    /// `spoa_module_reload_failures_total`'s `cause`.
    pub cause: Option<String>,
    /// What started it: `module changed`, `SIGHUP`, ...
    pub trigger: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    pub name: String,
    pub module: ModuleRef,
    pub state: GuestState,
    pub probation: Option<ProbationStatus>,
    /// RFC 3339, UTC.
    pub quarantined_until: Option<String>,
    pub rolled_back: Option<RollbackRecord>,
    pub last_reload: Option<ReloadRecord>,
    /// Guest calls since the agent started.
    pub calls: u64,
    /// Failures that count against the guest (timeouts, memory, traps,
    /// invalid output, instantiation), since the agent started.
    pub faults: u64,
    /// Every unanswered message by kind, `spoa_guest_failures_total`'s
    /// `kind` (including `error`, `quarantined`, `overloaded`).
    pub failures: BTreeMap<String, u64>,
    /// How the serving version's calls enter the guest.
    #[serde(default)]
    pub calls_enter: CallEntry,
}

/// How calls enter a guest: directly (the fast way), or on fibers, which
/// can yield and wait in the host. A module moves to fibers for good once
/// a direct call runs a whole tick or reaches an import that can wait (the
/// log says which).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEntry {
    Directly,
    OnFibers,
    /// An older agent's status, which does not say.
    #[default]
    #[serde(other)]
    Unknown,
}

/// Where the report finds the guests serving now.
pub trait StatusSource: Send + Sync {
    fn guest_statuses(&self) -> Vec<GuestStatus>;
}

/// What a guest's series remember for the status: kept per guest name, so a
/// guest restarted by a configuration reload keeps its history.
#[derive(Debug, Default, Clone)]
pub struct GuestHistory {
    pub last_reload: Option<ReloadRecord>,
    pub rolled_back: Option<RollbackRecord>,
    /// The trigger of the reload under way, for its record.
    pub(super) reload_trigger: Option<&'static str>,
}

/// `at` as RFC 3339 in UTC, to the second (`1970-01-01T00:00:00Z`).
pub fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Year, month and day of `days` since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_285_045), "2026-12-03T08:04:05Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn the_report_reads_back_what_it_wrote() {
        let report = StatusReport {
            agent: AgentStatus {
                version: "1.0.0".into(),
                started_at: rfc3339(UNIX_EPOCH),
                uptime_seconds: 3,
            },
            guests: vec![GuestStatus {
                name: "iprep".into(),
                module: ModuleRef {
                    path: "/a.wasm".into(),
                    sha256: "00".into(),
                },
                state: GuestState::RolledBack,
                probation: None,
                quarantined_until: None,
                rolled_back: None,
                last_reload: None,
                calls: 1,
                faults: 0,
                failures: BTreeMap::new(),
                calls_enter: CallEntry::OnFibers,
            }],
        };
        let json = serde_json::to_string(&report).expect("serializes");
        assert!(json.contains("\"state\":\"rolled_back\""), "{json}");
        assert!(json.contains("\"calls_enter\":\"on_fibers\""), "{json}");
        let back: StatusReport = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, report);
        // An older agent's status, without the field.
        let older = json.replace(",\"calls_enter\":\"on_fibers\"", "");
        let back: StatusReport = serde_json::from_str(&older).expect("parses");
        assert_eq!(back.guests[0].calls_enter, CallEntry::Unknown);
    }
}
