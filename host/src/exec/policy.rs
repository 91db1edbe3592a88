//! A guest's failure policy: what a failed message is answered with, when a
//! guest that keeps failing is quarantined, and when a new module version
//! that fails is rolled back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

/// How a guest's failures are handled. Defaults: see [`QuarantinePolicy`]
/// and [`RollbackPolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    /// When set, a failed message gets `set-var txn <name>` = the failure
    /// kind (`timeout`, `trap`, `quarantined`, …) instead of no action.
    pub error_var: Option<Bytes>,
    /// `None`: never quarantined.
    pub quarantine: Option<QuarantinePolicy>,
    /// `None`: new versions are never rolled back.
    pub rollback: Option<RollbackPolicy>,
}

impl Default for FailurePolicy {
    fn default() -> FailurePolicy {
        FailurePolicy {
            error_var: None,
            quarantine: Some(QuarantinePolicy::default()),
            rollback: Some(RollbackPolicy::default()),
        }
    }
}

/// A guest whose faults (timeouts, traps, memory, bad output, failed
/// instantiation — not its own `err` answers) reach `failures` *and* `ratio`
/// of its calls within one `window` is not called for `backoff`; its messages
/// are answered at once by the policy. Then it is tried again. A guest
/// quarantined again within a window of its release waits twice as long, up
/// to `max_backoff`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinePolicy {
    pub failures: u64,
    pub ratio: f64,
    pub window: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> QuarantinePolicy {
        QuarantinePolicy {
            failures: 20,
            ratio: 0.5,
            window: Duration::from_secs(10),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A new module version is on probation for its first `calls` calls. As soon
/// as more than `ratio` of those calls are faults, it is rolled back to the
/// last good version (with the defaults, a version that fails every call goes
/// at its 21st call); once it passes them, it becomes the last good version.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPolicy {
    pub calls: u64,
    pub ratio: f64,
}

impl Default for RollbackPolicy {
    fn default() -> RollbackPolicy {
        RollbackPolicy {
            calls: 100,
            ratio: 0.2,
        }
    }
}

impl RollbackPolicy {
    /// Faults past which a version on probation is rolled back.
    pub fn fault_limit(&self) -> u64 {
        (self.calls as f64 * self.ratio).floor() as u64
    }
}

/// What a batch's faults did to the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineChange {
    /// Quarantined for this long, after these faults in this many calls.
    Started {
        backoff: Duration,
        faults: u64,
        calls: u64,
    },
}

/// A guest's quarantine state. A batch without faults costs one atomic
/// load (the check); the bookkeeping takes a lock only for batches with
/// faults, and counts the window's calls from the guest's call counter.
pub struct Quarantine {
    policy: QuarantinePolicy,
    clock_origin: Instant,
    /// Milliseconds since `clock_origin` until which the guest is
    /// quarantined; 0 when it is not.
    until_ms: AtomicU64,
    /// The same end on the wall clock (milliseconds since the Unix epoch),
    /// fixed when the quarantine starts, for `/status`.
    until_unix_ms: AtomicU64,
    window: Mutex<Window>,
}

struct Window {
    /// When the window began (the first fault after the previous window).
    started: Option<Instant>,
    /// The guest's call counter when the window began.
    calls_at_start: u64,
    faults: u64,
    backoff: Duration,
    released_at: Option<Instant>,
}

impl Quarantine {
    pub fn new(policy: QuarantinePolicy) -> Quarantine {
        Quarantine {
            window: Mutex::new(Window {
                started: None,
                calls_at_start: 0,
                faults: 0,
                backoff: policy.backoff,
                released_at: None,
            }),
            policy,
            clock_origin: Instant::now(),
            until_ms: AtomicU64::new(0),
            until_unix_ms: AtomicU64::new(0),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        // Never 0, which means "not quarantined".
        (at.saturating_duration_since(self.clock_origin).as_millis() as u64).max(1)
    }

    /// When the quarantine under way ends, if one is: the same instant on
    /// every call, whatever the wall clock does meanwhile.
    pub fn until(&self) -> Option<SystemTime> {
        let until = self.until_ms.load(Ordering::Relaxed);
        if until <= self.millis(Instant::now()) {
            return None;
        }
        let unix_ms = self.until_unix_ms.load(Ordering::Relaxed);
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms))
    }

    /// Whether the guest is quarantined now. `Err(())` when the quarantine
    /// just ended (the caller logs it once).
    pub fn check(&self) -> Result<bool, ()> {
        let until = self.until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(false);
        }
        let now = Instant::now();
        if self.millis(now) < until {
            return Ok(true);
        }
        // Exactly one caller ends it.
        if self
            .until_ms
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            window.started = None;
            window.faults = 0;
            window.released_at = Some(now);
            return Err(());
        }
        Ok(false)
    }

    /// Counts a batch of `batch_calls` calls with `faults` faults (at least
    /// one); `calls_total` is the guest's call counter after the batch.
    pub fn record(
        &self,
        batch_calls: u64,
        faults: u64,
        calls_total: u64,
        now: Instant,
    ) -> Option<QuarantineChange> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let expired = window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= self.policy.window);
        if expired {
            window.started = Some(now);
            window.calls_at_start = calls_total.saturating_sub(batch_calls);
            window.faults = 0;
        }
        window.faults += faults;
        let calls = calls_total
            .saturating_sub(window.calls_at_start)
            .max(window.faults);
        let tripped = window.faults >= self.policy.failures
            && window.faults as f64 >= self.policy.ratio * calls as f64;
        if !tripped || self.until_ms.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let relapsed = window
            .released_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.policy.window);
        window.backoff = if relapsed {
            (window.backoff.saturating_mul(2)).min(self.policy.max_backoff)
        } else {
            self.policy.backoff
        };
        let change = QuarantineChange::Started {
            backoff: window.backoff,
            faults: window.faults,
            calls,
        };
        let until = now.checked_add(window.backoff).unwrap_or(now);
        let until_wall = SystemTime::now() + window.backoff;
        let unix_ms = until_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.until_unix_ms.store(unix_ms, Ordering::Relaxed);
        self.until_ms.store(self.millis(until), Ordering::Relaxed);
        Some(change)
    }

    /// Ends a quarantine at once (tests).
    #[cfg(test)]
    fn expire(&self) {
        if self.until_ms.load(Ordering::Relaxed) != 0 {
            self.until_ms.store(1, Ordering::Relaxed);
        }
    }
}

/// The first calls of a new module version, counted against its rollback
/// policy.
pub struct Probation {
    policy: RollbackPolicy,
    state: Mutex<ProbationState>,
}

#[derive(Default)]
struct ProbationState {
    first_call: Option<Instant>,
    calls: u64,
    faults: u64,
    decided: bool,
}

/// What probation decided after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Undecided,
    /// Passed: the version becomes the last good one.
    Passed,
    /// Failed: roll back. `calls` and `faults` since its first call, which
    /// was `since` ago.
    Failed {
        calls: u64,
        faults: u64,
        since: Duration,
    },
}

impl Probation {
    pub fn new(policy: RollbackPolicy) -> Probation {
        Probation {
            policy,
            state: Mutex::new(ProbationState::default()),
        }
    }

    /// Calls and faults counted so far.
    pub fn progress(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.calls, state.faults)
    }

    pub fn policy(&self) -> &RollbackPolicy {
        &self.policy
    }

    /// Counts `calls` calls with `faults` faults (the batch's faults come
    /// first in this accounting, so a version failing every call is judged
    /// at the first batch that crosses the limit). A verdict is given once.
    pub fn record(&self, calls: u64, faults: u64, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.decided || calls == 0 {
            return Verdict::Undecided;
        }
        let first_call = *state.first_call.get_or_insert(now);
        state.calls += calls;
        state.faults += faults;
        if state.faults > self.policy.fault_limit() {
            state.decided = true;
            return Verdict::Failed {
                calls: state.calls,
                faults: state.faults,
                since: now.saturating_duration_since(first_call),
            };
        }
        if state.calls >= self.policy.calls {
            state.decided = true;
            return Verdict::Passed;
        }
        Verdict::Undecided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarantine() -> Quarantine {
        Quarantine::new(QuarantinePolicy {
            failures: 5,
            ratio: 0.5,
            window: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
        })
    }

    #[test]
    fn quarantine_needs_both_the_count_and_the_ratio() {
        let q = quarantine();
        let now = Instant::now();
        // 4 faults in 4 calls: under the count.
        assert_eq!(q.record(4, 4, 4, now), None);
        assert_eq!(q.check(), Ok(false));
        // 5 faults in 100 calls: under the ratio.
        assert_eq!(q.record(96, 1, 100, now), None);
        assert_eq!(q.check(), Ok(false));
        // A new window: 10 faults in 10 calls trip it.
        let later = now + Duration::from_secs(11);
        assert!(matches!(
            q.record(10, 10, 110, later),
            Some(QuarantineChange::Started {
                faults: 10,
                calls: 10,
                ..
            })
        ));
        assert_eq!(q.check(), Ok(true));
    }

    #[test]
    fn quarantine_ends_once_and_relapses_back_off_longer() {
        let q = quarantine();
        let now = Instant::now();
        assert!(q.record(5, 5, 5, now).is_some());
        q.expire();
        assert_eq!(q.check(), Err(()), "ends after the back-off");
        assert_eq!(q.check(), Ok(false), "and is reported once");
        // Fails again right away: twice the back-off.
        assert_eq!(
            q.record(5, 5, 10, Instant::now()),
            Some(QuarantineChange::Started {
                backoff: Duration::from_secs(2),
                faults: 5,
                calls: 5
            })
        );
        assert_eq!(q.check(), Ok(true));
    }

    #[test]
    fn a_version_failing_every_call_fails_probation_within_its_first_calls() {
        let policy = RollbackPolicy::default();
        let probation = Probation::new(policy.clone());
        let now = Instant::now();
        let mut calls = 0;
        let verdict = loop {
            calls += 1;
            match probation.record(1, 1, now) {
                Verdict::Undecided => assert!(calls < policy.calls, "never decided"),
                verdict => break verdict,
            }
        };
        assert!(matches!(
            verdict,
            Verdict::Failed {
                calls: 21,
                faults: 21,
                ..
            }
        ));
        assert_eq!(
            probation.record(1, 1, now),
            Verdict::Undecided,
            "decided once"
        );
    }

    #[test]
    fn a_healthy_version_passes_probation() {
        let probation = Probation::new(RollbackPolicy::default());
        let now = Instant::now();
        // A few faults are tolerated.
        assert_eq!(probation.record(50, 5, now), Verdict::Undecided);
        assert_eq!(probation.record(50, 5, now), Verdict::Passed);
    }
}
