//! `--deterministic SEED` (`call`, `replay`): the same module, message and
//! seed give the same answer, byte for byte. `spoa:agent/random` and
//! `wasi:random` draw from a generator seeded from the seed and the
//! message's content (its name and arguments, not its place in a run), and
//! the WASI clocks stand still at the message's time: the recorded one in a
//! replay, [`FIXED_TIME_MS`] otherwise. Each message gets a fresh instance,
//! so nothing a guest kept from an earlier message changes its answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::spop::{self, notation};

/// The time of a deterministic call that has none recorded:
/// 2026-01-01T00:00:00Z.
pub const FIXED_TIME_MS: u64 = 1_767_225_600_000;

/// The seeded generator and the frozen time of the message being run.
pub struct Determinism {
    seed: u64,
    now: Mutex<Now>,
}

struct Now {
    rng: rand::rngs::StdRng,
    unix_ms: u64,
}

impl Determinism {
    pub fn new(seed: u64) -> Arc<Determinism> {
        Arc::new(Determinism {
            seed,
            now: Mutex::new(Now {
                rng: rand::rngs::StdRng::from_seed(message_seed(seed, None)),
                unix_ms: FIXED_TIME_MS,
            }),
        })
    }

    /// Seeds the generator from `message` and stops the clocks at
    /// `unix_ms` (or [`FIXED_TIME_MS`]), for the call that runs it next.
    pub fn begin_message(&self, message: &spop::Message, unix_ms: Option<u64>) {
        let mut now = self.lock();
        now.rng = rand::rngs::StdRng::from_seed(message_seed(self.seed, Some(message)));
        now.unix_ms = unix_ms.unwrap_or(FIXED_TIME_MS);
    }

    pub fn next_u64(&self) -> u64 {
        self.lock().rng.next_u64()
    }

    pub fn fill(&self, bytes: &mut [u8]) {
        self.lock().rng.fill_bytes(bytes);
    }

    fn since_epoch(&self) -> Duration {
        Duration::from_millis(self.lock().unix_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Now> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// SHA-256 of the seed and the message's text (its name and each argument
/// in `call`'s notation).
fn message_seed(seed: u64, message: Option<&spop::Message>) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(seed.to_le_bytes());
    if let Some(message) = message {
        hash.update(&message.name);
        for arg in &message.args {
            hash.update([0]);
            hash.update(notation::arg_text(arg));
        }
    }
    hash.finalize().into()
}

/// `wasi:random`'s generators (secure and insecure) over [`Determinism`].
pub struct SeededRandom(pub Arc<Determinism>);

impl rand_core_wasi::TryRng for SeededRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u64() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst);
        Ok(())
    }
}

/// Both WASI clocks, standing at the message's time.
pub struct FrozenClock(pub Arc<Determinism>);

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        self.0.since_epoch()
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.since_epoch().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(ip: [u8; 4]) -> spop::Message {
        spop::Message {
            name: Bytes::from_static(b"check-client-ip"),
            args: vec![spop::Arg {
                name: Bytes::from_static(b"ip"),
                value: spop::TypedData::Ipv4(ip.into()),
            }],
        }
    }

    #[test]
    fn draws_depend_on_the_seed_and_the_message_not_on_what_ran_before() {
        let (a, b) = (Determinism::new(7), Determinism::new(7));
        a.begin_message(&message([192, 0, 2, 1]), None);
        let first = a.next_u64();
        a.begin_message(&message([192, 0, 2, 2]), None);
        let other = a.next_u64();
        b.begin_message(&message([192, 0, 2, 2]), None);
        assert_eq!(b.next_u64(), other, "same message, same draw");
        assert_ne!(first, other, "another message, another draw");
        let c = Determinism::new(8);
        c.begin_message(&message([192, 0, 2, 2]), None);
        assert_ne!(c.next_u64(), other, "another seed, another draw");
    }

    #[test]
    fn the_clocks_stand_at_the_messages_time() {
        let clock = FrozenClock(Determinism::new(1));
        assert_eq!(
            HostWallClock::now(&clock),
            Duration::from_millis(FIXED_TIME_MS)
        );
        clock
            .0
            .begin_message(&message([192, 0, 2, 1]), Some(1_796_294_489_123));
        assert_eq!(
            HostWallClock::now(&clock),
            Duration::from_millis(1_796_294_489_123)
        );
        assert_eq!(
            HostMonotonicClock::now(&clock),
            HostMonotonicClock::now(&clock)
        );
    }
}
