//! The epoch ticker: the clock that bounds guest calls, and its pace.
//!
//! Every tick bumps the engine's epoch; a call that sees it yields its
//! thread (on a fiber), has a tick charged to its deadline, and once it has
//! run a whole tick needs a long-call slot. Ticks are only useful while a
//! call runs long, yet each one wakes a thread that, at real-time priority,
//! preempts whatever runs on its core: at 2,000 ticks a second that cost the
//! data plane about a tenth of its throughput with short guest calls. So the
//! ticker keeps two paces: **fast** (the tick) while some call has run a
//! whole tick lately (or a fiber call saw a tick), and **slow**
//! ([`SLOW_TICKS`] ticks) otherwise. A call that runs long is seen at its
//! second tick, at the slow pace, and from then on ticks come at the fast
//! pace. Each tick charges a call the ticks it lasted (never more than the
//! ticker meant to sleep), so the budget holds at either pace; what the slow
//! pace costs is precision: a call that starts while no call runs long may
//! run up to `SLOW_TICKS - 1` ticks past its deadline (1.5 ms with the
//! defaults), and a direct call that loops holds its thread for up to two
//! slow ticks before it is cut and moved to a fiber.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasmtime::Engine;

/// The slow pace, in ticks.
pub(crate) const SLOW_TICKS: u32 = 4;

/// The epoch tick is also the time slice of a long call: at every tick a
/// running call yields its thread to the other calls waiting for it, and a
/// call that ran a whole tick needs a long-call slot to go on. 500 µs (a
/// fifth of the deadline when that is shorter, but at least 100 µs): at the
/// fast pace a runaway call is cut within a tick of its deadline, and a new
/// looping call takes at most two ticks before it waits for its guest's
/// slot (see the module's notes for the slow pace).
pub(crate) fn epoch_tick(call_timeout: Duration) -> Duration {
    (call_timeout / 5).clamp(Duration::from_micros(100), Duration::from_micros(500))
}

/// What the ticker and the calls it bounds share.
pub(crate) struct TickPace {
    tick: Duration,
    started: Instant,
    /// When a call last ran a whole tick (nanoseconds since `started`).
    last_long_call: AtomicU64,
    /// Ticks the last tick lasted (1 at the fast pace).
    last_tick_ticks: AtomicU64,
    /// Whether the ticker sleeps at the slow pace now.
    slow: AtomicBool,
    ticker: OnceLock<Thread>,
}

impl TickPace {
    fn new(tick: Duration) -> TickPace {
        TickPace {
            tick,
            started: Instant::now(),
            last_long_call: AtomicU64::new(0),
            last_tick_ticks: AtomicU64::new(1),
            slow: AtomicBool::new(true),
            ticker: OnceLock::new(),
        }
    }

    /// The fast pace's tick: the time slice of guest code on a thread.
    pub(crate) fn tick(&self) -> Duration {
        self.tick
    }

    /// How many ticks the tick a call just saw stands for.
    pub(crate) fn ticks_of_last_tick(&self) -> u64 {
        self.last_tick_ticks.load(Ordering::Relaxed)
    }

    /// Called when a call runs long: ticks come at the fast pace for as long
    /// as calls keep running long.
    pub(crate) fn long_call_running(&self) {
        // SeqCst pairs with the ticker's store of `slow` and its second look
        // at `last_long_call`: either it sees this call, or this call sees
        // it asleep and wakes it.
        self.last_long_call
            .store(self.nanos_since_start().max(1), Ordering::SeqCst);
        if self.slow.swap(false, Ordering::SeqCst)
            && let Some(ticker) = self.ticker.get()
        {
            ticker.unpark();
        }
    }

    fn nanos_since_start(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Whether a call ran long within the last slow period.
    fn long_calls_lately(&self) -> bool {
        let last = self.last_long_call.load(Ordering::SeqCst);
        last != 0
            && self.nanos_since_start().saturating_sub(last)
                < (self.tick * SLOW_TICKS).as_nanos() as u64
    }

    /// Whether the ticker sleeps one tick next; otherwise it is marked slow
    /// (about to sleep a slow period), so a call that runs long wakes it.
    fn next_tick_is_fast(&self) -> bool {
        if self.long_calls_lately() {
            return true;
        }
        self.slow.store(true, Ordering::SeqCst);
        if self.long_calls_lately() {
            // A call ran long between the first look and `slow`: it may
            // have seen the ticker awake and not woken it.
            self.slow.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// The ticks a tick that came `lasted` after the previous one stands for,
/// when the ticker meant to sleep `intended` ticks: never more than it
/// meant (a late ticker must not charge calls for its own lateness), never
/// less than one.
fn ticks_lasted(lasted: Duration, tick: Duration, intended: u32) -> u64 {
    let whole = lasted.as_nanos() / tick.as_nanos().max(1);
    whole.clamp(1, intended.max(1) as u128) as u64
}

/// Starts the ticker for `engine`; it ends once the engine is dropped.
pub(crate) fn spawn(engine: &Engine, tick: Duration, realtime: bool) -> Result<Arc<TickPace>> {
    let pace = Arc::new(TickPace::new(tick));
    // A weak handle lets the thread end once the engine is dropped (tests
    // create many sandboxes in one process).
    let weak = engine.weak();
    let shared = pace.clone();
    let handle = std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            if realtime && let Err(err) = crate::realtime::request_for_this_thread() {
                // The control plane has said so already, once.
                tracing::debug!("epoch ticker at normal priority: {err}");
            }
            run(&weak, &shared);
        })
        .context("starting the epoch ticker thread")?;
    let _ = pace.ticker.set(handle.thread().clone());
    Ok(pace)
}

fn run(weak: &wasmtime::EngineWeak, pace: &TickPace) {
    let mut last_tick = Instant::now();
    let mut intended = 1;
    while let Some(engine) = weak.upgrade() {
        let ticks = ticks_lasted(last_tick.elapsed(), pace.tick, intended);
        last_tick = Instant::now();
        pace.last_tick_ticks.store(ticks, Ordering::Relaxed);
        engine.increment_epoch();
        drop(engine);
        if pace.next_tick_is_fast() {
            intended = 1;
            std::thread::sleep(pace.tick);
            continue;
        }
        intended = SLOW_TICKS;
        std::thread::park_timeout(pace.tick * SLOW_TICKS);
        // Woken early by a long call: ticks stay at least a tick apart, so
        // two ticks seen by one call always mean it ran a whole tick.
        let since = last_tick.elapsed();
        if since < pace.tick {
            std::thread::sleep(pace.tick - since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loaded machine may delay the ticker, never forever.
    fn eventually(condition: impl FnMut() -> bool) -> bool {
        crate::test_support::eventually(Duration::from_secs(2), condition)
    }

    #[test]
    fn ticks_come_slowly_until_a_call_runs_long_then_quickly() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("engine");
        let tick = Duration::from_millis(2);
        let pace = spawn(&engine, tick, false).expect("ticker");
        assert!(
            eventually(|| pace.ticks_of_last_tick() == SLOW_TICKS as u64),
            "no call runs long: slow pace"
        );
        assert!(
            eventually(|| {
                pace.long_call_running();
                pace.ticks_of_last_tick() == 1
            }),
            "calls running long: fast pace"
        );
        assert!(
            eventually(|| pace.ticks_of_last_tick() == SLOW_TICKS as u64),
            "back to the slow pace once no call runs long"
        );
    }

    #[test]
    fn a_late_tick_charges_only_what_the_ticker_meant_to_sleep() {
        let tick = Duration::from_micros(500);
        assert_eq!(ticks_lasted(Duration::from_micros(520), tick, 1), 1);
        assert_eq!(
            ticks_lasted(Duration::from_millis(3), tick, 1),
            1,
            "late at the fast pace"
        );
        assert_eq!(
            ticks_lasted(Duration::from_micros(2100), tick, SLOW_TICKS),
            4
        );
        assert_eq!(
            ticks_lasted(Duration::from_millis(9), tick, SLOW_TICKS),
            SLOW_TICKS as u64,
            "late at the slow pace"
        );
        assert_eq!(
            ticks_lasted(Duration::from_micros(1100), tick, SLOW_TICKS),
            2,
            "woken early by a long call"
        );
        assert_eq!(ticks_lasted(Duration::ZERO, tick, 1), 1);
    }

    #[test]
    fn the_pace_is_fast_only_after_a_long_call() {
        let pace = TickPace::new(Duration::from_millis(5));
        assert!(!pace.long_calls_lately(), "no call ran long yet");
        pace.long_call_running();
        assert!(pace.long_calls_lately());
        std::thread::sleep(Duration::from_millis(5) * SLOW_TICKS + Duration::from_millis(5));
        assert!(
            !pace.long_calls_lately(),
            "back to the slow pace once no call ran long for a slow period"
        );
    }
}
