//! A guest's canary (`[guest.canary]`): a new version that serves a share
//! of the guest's batches (a read burst's messages go together) beside the
//! stable one. After `promote-after` messages it is promoted if its fault
//! rate is no worse than the stable version's over the same time, and
//! dropped otherwise, as a probation that fails rolls back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Serving;

/// A canary: its version, and where it stands.
pub(super) struct Canary {
    pub(super) serving: Arc<Serving>,
    pub(super) tally: CanaryTally,
}

impl Canary {
    pub(super) fn new(serving: Serving, share: f64, promote_after: u64) -> Canary {
        Canary {
            serving: Arc::new(serving),
            tally: CanaryTally::new(share, promote_after),
        }
    }
}

/// Where a canary stands, counted by the batches it and the stable version
/// answer while it runs.
pub(super) struct CanaryTally {
    share: f64,
    promote_after: u64,
    calls: AtomicU64,
    faults: AtomicU64,
    stable_calls: AtomicU64,
    stable_faults: AtomicU64,
    decided: AtomicBool,
}

/// What the canary's record says once it has served its messages.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CanaryVerdict {
    Undecided,
    Promote(CanaryRecord),
    RollBack(CanaryRecord),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct CanaryRecord {
    pub calls: u64,
    pub faults: u64,
    pub stable_calls: u64,
    pub stable_faults: u64,
}

impl CanaryTally {
    fn new(share: f64, promote_after: u64) -> CanaryTally {
        CanaryTally {
            share,
            promote_after: promote_after.max(1),
            calls: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            stable_calls: AtomicU64::new(0),
            stable_faults: AtomicU64::new(0),
            decided: AtomicBool::new(false),
        }
    }

    /// Whether the next batch goes to the canary.
    pub(super) fn takes_a_batch(&self) -> bool {
        !self.decided.load(Ordering::Relaxed) && crate::record::sampled(self.share)
    }

    /// Counts a batch the stable version answered while the canary runs.
    pub(super) fn stable_answered(&self, calls: u64, faults: u64) {
        self.stable_calls.fetch_add(calls, Ordering::Relaxed);
        self.stable_faults.fetch_add(faults, Ordering::Relaxed);
    }

    /// Counts a batch the canary answered; once it has served
    /// `promote_after` messages, the verdict (given once).
    pub(super) fn answered(&self, calls: u64, faults: u64) -> CanaryVerdict {
        let total = self.calls.fetch_add(calls, Ordering::Relaxed) + calls;
        let faulted = self.faults.fetch_add(faults, Ordering::Relaxed) + faults;
        if total < self.promote_after || self.decided.swap(true, Ordering::Relaxed) {
            return CanaryVerdict::Undecided;
        }
        let record = CanaryRecord {
            calls: total,
            faults: faulted,
            stable_calls: self.stable_calls.load(Ordering::Relaxed),
            stable_faults: self.stable_faults.load(Ordering::Relaxed),
        };
        // faults / calls <= stable_faults / stable_calls, without division;
        // a stable version that answered nothing meanwhile counts as faultless.
        let no_worse = u128::from(record.faults) * u128::from(record.stable_calls.max(1))
            <= u128::from(record.stable_faults) * u128::from(record.calls);
        if no_worse {
            CanaryVerdict::Promote(record)
        } else {
            CanaryVerdict::RollBack(record)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(calls: u64, faults: u64, stable_calls: u64, stable_faults: u64) -> CanaryRecord {
        CanaryRecord {
            calls,
            faults,
            stable_calls,
            stable_faults,
        }
    }

    #[test]
    fn the_verdict_compares_fault_rates_once_promote_after_messages_are_served() {
        let verdict = |stable: (u64, u64), canary: &[(u64, u64)]| {
            let mut last = CanaryVerdict::Undecided;
            let c = CanaryTally::new(0.5, 10);
            c.stable_answered(stable.0, stable.1);
            for &(calls, faults) in canary {
                last = c.answered(calls, faults);
            }
            last
        };
        assert_eq!(verdict((100, 0), &[(5, 0)]), CanaryVerdict::Undecided);
        assert_eq!(
            verdict((100, 0), &[(5, 0), (5, 0)]),
            CanaryVerdict::Promote(record(10, 0, 100, 0))
        );
        assert_eq!(
            verdict((100, 0), &[(10, 1)]),
            CanaryVerdict::RollBack(record(10, 1, 100, 0))
        );
        // As faulty as the stable version: promoted.
        assert_eq!(
            verdict((100, 10), &[(10, 1)]),
            CanaryVerdict::Promote(record(10, 1, 100, 10))
        );
        // Given once.
        let c = CanaryTally::new(0.5, 1);
        assert!(matches!(c.answered(1, 0), CanaryVerdict::Promote(_)));
        assert_eq!(c.answered(1, 0), CanaryVerdict::Undecided);
        assert!(!c.takes_a_batch(), "decided: no more batches");
    }
}
