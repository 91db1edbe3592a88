//! A guest's line of `/status`: its live state (the version serving, its
//! probation, the quarantine) read from the executor, with the history and
//! the counts its series keep.

use std::collections::BTreeMap;

use crate::agent::FailureKind;
use crate::metrics::status::{
    CallEntry, GuestState, GuestStatus, ModuleRef, ProbationStatus, StatusSource, rfc3339,
};

use super::GuestExecutor;

impl GuestExecutor {
    pub fn status(&self) -> GuestStatus {
        let serving = self.serving.load_full();
        let probation = serving.probation.as_ref().map(|probation| {
            let (calls, faults) = probation.progress();
            ProbationStatus {
                calls,
                faults,
                calls_to_pass: probation.policy().calls,
                fault_limit: probation.policy().fault_limit(),
            }
        });
        let quarantined_until = self.quarantine.as_ref().and_then(|q| q.until());
        let history = self.metrics.history();
        let state = if quarantined_until.is_some() {
            GuestState::Quarantined
        } else if probation.is_some() {
            GuestState::Probation
        } else if history.rolled_back.is_some() {
            GuestState::RolledBack
        } else {
            GuestState::Serving
        };
        let failures: BTreeMap<String, u64> = self
            .metrics
            .failure_counts()
            .map(|(kind, count)| (kind.to_owned(), count))
            .collect();
        let faults = FailureKind::ALL
            .iter()
            .filter(|kind| kind.is_fault())
            .filter_map(|kind| failures.get(kind.name()))
            .sum();
        GuestStatus {
            name: self.name.to_string(),
            module: ModuleRef::of(&serving.module.identity),
            state,
            probation,
            quarantined_until: quarantined_until.map(rfc3339),
            rolled_back: history.rolled_back,
            last_reload: history.last_reload,
            calls: self.metrics.calls_total(),
            faults,
            failures,
            calls_enter: if serving.module.enters_directly() {
                CallEntry::Directly
            } else {
                CallEntry::OnFibers
            },
        }
    }
}

/// The `--module` form: one guest, served without a router.
impl StatusSource for GuestExecutor {
    fn guest_statuses(&self) -> Vec<GuestStatus> {
        vec![self.status()]
    }
}
