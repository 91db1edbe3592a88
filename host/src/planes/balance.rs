//! Which shard serves which connection, as the load changes: the data
//! plane moves a live connection onto a busier shard while both of them
//! spend more time waking up than working, and apart again when one is
//! saturated.
//!
//! Why: a shard that runs out of work sleeps in the kernel and is woken by
//! the next read. At 4 connections × 16 NOTIFYs in flight on two shards,
//! each shard slept and woke about 15,000 times a second while busy half
//! the time, and one shard serving all four did 1.3× the messages per
//! CPU-second with a lower p99 (BENCHMARKS.md). Connections are placed when
//! they open, before their load is known, so the placement is revisited
//! from what the shards measure: how much of each window a shard was busy
//! and how often it went to sleep (tokio's runtime metrics).

use std::time::Duration;

/// How often the shards are sampled.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// What one shard did during the last window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShardSample {
    /// Fraction of the window it was not asleep waiting for work.
    pub busy: f64,
    /// Times it went to sleep, per second.
    pub sleeps_per_s: f64,
    /// Connections it serves now.
    pub connections: usize,
}

/// One connection to take from shard `from` to shard `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Move {
    pub from: usize,
    pub to: usize,
    pub kind: MoveKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MoveKind {
    /// Onto a busier shard: both wait for work more than they do it.
    Merge,
    /// Off a saturated shard.
    Spread,
}

/// Two shards whose busy fractions add up to at most this are merged
/// whatever their sleeps: the pair's work fits one thread with room.
const LIGHT_PAIR: f64 = 0.3;
/// Two shards that both sleep at least [`FRAGMENTED_SLEEPS`] times a second
/// are merged while their busy fractions add up to at most this. A shard
/// that sleeps that often finds no work waiting after nearly every burst,
/// and part of what it counts as busy is the waking itself, which the
/// merge saves: at 4 × 16, two shards at 0.5 each became one at 0.95 that
/// still slept 19,000 times a second.
const FRAGMENTED_PAIR: f64 = 1.2;
const FRAGMENTED_SLEEPS: f64 = 2000.0;
/// A merge never leaves the receiving shard busier than this, counting
/// the donor's busy time shared evenly among its connections: more would
/// leave it no room for a burst.
const RECEIVER_BUSY: f64 = 0.85;
/// A shard busy at least this fraction that sleeps fewer than
/// [`SATURATED_SLEEPS`] times a second always has work waiting: it is
/// saturated, and one of its connections goes to a shard with room.
const SATURATED_BUSY: f64 = 0.9;
const SATURATED_SLEEPS: f64 = 500.0;
/// A shard with room takes a connection from a saturated one.
const ROOM_BUSY: f64 = 0.5;
/// A proposal is carried out once it held for this many windows in a row:
/// one noisy window moves nothing.
const CONFIRM_WINDOWS: u32 = 2;
/// Windows without any proposal after a move, so the next decision sees
/// the load the move made.
const SETTLE_WINDOWS: u32 = 2;
/// Windows without a merge after a spread, so a load at the edge does not
/// make connections go back and forth: doubled at each spread up to
/// [`MAX_NO_MERGE`], back to this after [`MAX_NO_MERGE`] windows without one.
const NO_MERGE_AFTER_SPREAD: u32 = 50;
const MAX_NO_MERGE: u32 = 600;

/// Turns samples into moves, one at a time.
#[derive(Debug)]
pub(crate) struct Balancer {
    proposal: Option<(Move, u32)>,
    settling: u32,
    merges_held: u32,
    /// How long the next spread holds merges back.
    merge_hold: u32,
    windows_since_spread: u32,
    /// What the last move changed, restored if no connection took it.
    before_last_move: Option<Held>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    merges_held: u32,
    merge_hold: u32,
    windows_since_spread: u32,
}

impl Default for Balancer {
    fn default() -> Balancer {
        Balancer {
            proposal: None,
            settling: 0,
            merges_held: 0,
            merge_hold: NO_MERGE_AFTER_SPREAD,
            windows_since_spread: 0,
            before_last_move: None,
        }
    }
}

impl Balancer {
    /// The move to make after this window's `samples`, if any.
    pub(crate) fn next(&mut self, samples: &[ShardSample]) -> Option<Move> {
        self.merges_held = self.merges_held.saturating_sub(1);
        self.windows_since_spread = self.windows_since_spread.saturating_add(1);
        if self.windows_since_spread >= MAX_NO_MERGE {
            self.merge_hold = NO_MERGE_AFTER_SPREAD;
        }
        if self.settling > 0 {
            self.settling -= 1;
            self.proposal = None;
            return None;
        }
        let proposed =
            propose(samples).filter(|m| m.kind == MoveKind::Spread || self.merges_held == 0);
        // The same kind of move off the same shard: with several shards of
        // about the same load, the one it goes to may change with noise.
        let held = match (proposed, self.proposal) {
            (Some(now), Some((before, windows)))
                if (now.kind, now.from) == (before.kind, before.from) =>
            {
                windows + 1
            }
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        self.proposal = proposed.map(|m| (m, held));
        let chosen = proposed.filter(|_| held >= CONFIRM_WINDOWS)?;
        self.proposal = None;
        self.settling = SETTLE_WINDOWS;
        self.before_last_move = Some(Held {
            merges_held: self.merges_held,
            merge_hold: self.merge_hold,
            windows_since_spread: self.windows_since_spread,
        });
        if chosen.kind == MoveKind::Spread {
            self.merges_held = self.merge_hold;
            self.merge_hold = (self.merge_hold * 2).min(MAX_NO_MERGE);
            self.windows_since_spread = 0;
        }
        Some(chosen)
    }

    /// No connection took the last move in its window (none of the shard's
    /// connections was between two bursts): it did not happen, so neither
    /// its settling nor the merges a spread holds back apply.
    pub(crate) fn not_taken(&mut self) {
        if let Some(held) = self.before_last_move.take() {
            self.settling = 0;
            self.merges_held = held.merges_held;
            self.merge_hold = held.merge_hold;
            self.windows_since_spread = held.windows_since_spread;
        }
    }
}

fn saturated(shard: &ShardSample) -> bool {
    shard.busy >= SATURATED_BUSY && shard.sleeps_per_s < SATURATED_SLEEPS
}

/// The move these samples call for: a spread before a merge.
fn propose(samples: &[ShardSample]) -> Option<Move> {
    spread(samples).or_else(|| merge(samples))
}

/// A connection off the busiest saturated shard serving several, to the
/// least busy shard if it has room, or, when every shard is saturated, to
/// one serving at least two fewer connections (so a saturated plane keeps
/// its connections dealt out evenly).
fn spread(samples: &[ShardSample]) -> Option<Move> {
    let (from, source) = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.connections >= 2 && saturated(s))
        .max_by(|a, b| {
            a.1.connections
                .cmp(&b.1.connections)
                .then(a.1.busy.total_cmp(&b.1.busy))
        })?;
    let (to, target) = samples
        .iter()
        .enumerate()
        .filter(|&(index, _)| index != from)
        .min_by(|a, b| {
            a.1.busy
                .total_cmp(&b.1.busy)
                .then(a.1.connections.cmp(&b.1.connections))
        })?;
    let has_room = target.busy <= ROOM_BUSY;
    let fewer = saturated(target) && target.connections + 2 <= source.connections;
    (has_room || fewer).then_some(Move {
        from,
        to,
        kind: MoveKind::Spread,
    })
}

/// A connection from the least busy shard serving any to the busiest
/// other one, when the pair's work fits one thread.
fn merge(samples: &[ShardSample]) -> Option<Move> {
    let serving = || {
        samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.connections > 0)
    };
    let (from, donor) = serving().min_by(|a, b| a.1.busy.total_cmp(&b.1.busy))?;
    let moved_share = donor.busy / donor.connections as f64;
    let (to, receiver) = serving()
        .filter(|&(index, s)| index != from && s.busy + moved_share <= RECEIVER_BUSY)
        .max_by(|a, b| a.1.busy.total_cmp(&b.1.busy))?;
    let pair = donor.busy + receiver.busy;
    let light = pair <= LIGHT_PAIR;
    let fragmented = pair <= FRAGMENTED_PAIR
        && donor.sleeps_per_s >= FRAGMENTED_SLEEPS
        && receiver.sleeps_per_s >= FRAGMENTED_SLEEPS;
    (light || fragmented).then_some(Move {
        from,
        to,
        kind: MoveKind::Merge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(busy: f64, sleeps_per_s: f64, connections: usize) -> ShardSample {
        ShardSample {
            busy,
            sleeps_per_s,
            connections,
        }
    }

    /// The moves a steady load makes over `windows` windows.
    fn moves(samples: &[ShardSample], windows: usize) -> Vec<Move> {
        let mut balancer = Balancer::default();
        (0..windows)
            .filter_map(|_| balancer.next(samples))
            .collect()
    }

    #[test]
    fn shards_that_mostly_wake_up_are_merged() {
        // 4 x 16 with a fast guest on two shards, as measured.
        let samples = [shard(0.52, 15_000.0, 2), shard(0.47, 15_500.0, 2)];
        let made = moves(&samples, 10);
        assert_eq!(
            made.first(),
            Some(&Move {
                from: 1,
                to: 0,
                kind: MoveKind::Merge
            })
        );
    }

    #[test]
    fn a_light_load_is_merged_whatever_its_sleeps() {
        let samples = [
            shard(0.05, 40.0, 3),
            shard(0.1, 60.0, 1),
            shard(0.0, 0.0, 0),
        ];
        assert_eq!(
            moves(&samples, 3),
            [Move {
                from: 0,
                to: 1,
                kind: MoveKind::Merge
            }]
        );
    }

    #[test]
    fn busy_shards_are_not_merged() {
        // A slow guest keeps both shards busy: merging would halve it.
        assert_eq!(moves(&[shard(1.0, 10.0, 2), shard(0.99, 20.0, 2)], 20), []);
        // A fast guest at a load one thread could not carry.
        assert_eq!(
            moves(&[shard(0.7, 9_000.0, 8), shard(0.65, 9_000.0, 8)], 20),
            []
        );
        // Nor onto a shard with no room for a burst.
        assert_eq!(
            moves(&[shard(0.9, 7_000.0, 15), shard(0.2, 2_600.0, 1)], 20),
            []
        );
        // A slow guest at a moderate rate sleeps often too, but its work
        // would not fit one thread.
        assert_eq!(
            moves(&[shard(0.55, 3_000.0, 1), shard(0.55, 3_000.0, 1)], 20),
            []
        );
    }

    #[test]
    fn a_saturated_shard_gives_a_connection_to_one_with_room() {
        let samples = [shard(0.0, 0.0, 0), shard(1.0, 12.0, 4)];
        assert_eq!(
            moves(&samples, 3),
            [Move {
                from: 1,
                to: 0,
                kind: MoveKind::Spread
            }]
        );
        // One connection cannot be split.
        assert_eq!(moves(&[shard(0.0, 0.0, 0), shard(1.0, 12.0, 1)], 10), []);
    }

    #[test]
    fn saturated_shards_keep_their_connections_dealt_out_evenly() {
        assert_eq!(
            moves(&[shard(1.0, 10.0, 1), shard(1.0, 10.0, 3)], 3),
            [Move {
                from: 1,
                to: 0,
                kind: MoveKind::Spread
            }]
        );
        assert_eq!(moves(&[shard(1.0, 10.0, 2), shard(1.0, 10.0, 3)], 20), []);
    }

    #[test]
    fn one_noisy_window_moves_nothing() {
        let mut balancer = Balancer::default();
        let fragmented = [shard(0.5, 15_000.0, 2), shard(0.5, 15_000.0, 2)];
        let busy = [shard(1.0, 10.0, 2), shard(1.0, 10.0, 2)];
        for _ in 0..10 {
            assert_eq!(balancer.next(&fragmented), None);
            assert_eq!(balancer.next(&busy), None);
        }
    }

    #[test]
    fn a_move_no_connection_took_holds_nothing_back() {
        let mut balancer = Balancer::default();
        let saturated = [shard(0.0, 0.0, 0), shard(1.0, 12.0, 4)];
        assert!((0..3).find_map(|_| balancer.next(&saturated)).is_some());
        balancer.not_taken();
        // Asked again without settling first.
        assert_eq!(
            balancer.next(&saturated),
            None,
            "a new proposal holds one window"
        );
        let again = balancer.next(&saturated).map(|m| m.kind);
        assert_eq!(again, Some(MoveKind::Spread));
        // And a merge is not held back by a spread that did not happen.
        balancer.not_taken();
        let light = [shard(0.05, 40.0, 3), shard(0.1, 60.0, 1)];
        let merged = (0..3).find_map(|_| balancer.next(&light)).map(|m| m.kind);
        assert_eq!(merged, Some(MoveKind::Merge));
    }

    #[test]
    fn spreads_in_a_row_hold_merges_back_longer() {
        let mut balancer = Balancer::default();
        let saturated = [shard(0.0, 0.0, 0), shard(1.0, 12.0, 4)];
        let edge = [shard(0.3, 3_000.0, 1), shard(0.4, 3_000.0, 3)];
        let windows_to_merge =
            |balancer: &mut Balancer| (1..=2000).find(|_| balancer.next(&edge).is_some());
        assert!((0..3).find_map(|_| balancer.next(&saturated)).is_some());
        let first = windows_to_merge(&mut balancer).expect("merged at last");
        assert!((0..6).find_map(|_| balancer.next(&saturated)).is_some());
        let second = windows_to_merge(&mut balancer).expect("merged at last");
        assert!(second > first + 40, "{first} then {second} windows");
    }

    #[test]
    fn after_a_spread_the_load_is_not_merged_back_at_once() {
        let mut balancer = Balancer::default();
        let saturated = [shard(0.0, 0.0, 0), shard(1.0, 12.0, 4)];
        let spread = (0..3).find_map(|_| balancer.next(&saturated));
        assert_eq!(spread.map(|m| m.kind), Some(MoveKind::Spread));
        // At the edge the spread load may look fragmented: it stays apart.
        let edge = [shard(0.3, 3_000.0, 1), shard(0.4, 3_000.0, 3)];
        let made: Vec<_> = (0..NO_MERGE_AFTER_SPREAD - 3)
            .filter_map(|_| balancer.next(&edge))
            .collect();
        assert_eq!(made, []);
        let later = (0..5).find_map(|_| balancer.next(&edge));
        assert_eq!(later.map(|m| m.kind), Some(MoveKind::Merge));
    }
}
