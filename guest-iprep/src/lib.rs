//! The IP-reputation guest: the WebAssembly counterpart of HAProxy's example
//! agent. For every `check-client-ip` message it sets `sess.<prefix>.ip_score`
//! to a random integer in `0..=100`, drawn from the host's randomness import,
//! or to 0 when the address is in the IP table named `blocklist` (when the
//! operator grants one: `--ip-table blocklist=PATH`).

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::OnceLock;

use spoa_guest::tables::IpTable;
use spoa_guest::{Action, Guest, Message, VarScope};

// A per-call arena as the global allocator (wasm32 only; see spoa-guest).
spoa_guest::arena_allocator!();

/// The message this guest answers; every other message gets no action.
pub const CHECK_CLIENT_IP: &str = "check-client-ip";
/// The variable set on the session.
pub const IP_SCORE: &str = "ip_score";
/// Highest score (inclusive).
pub const MAX_SCORE: u64 = 100;

/// Maps a uniform 64-bit random value onto `0..=MAX_SCORE`.
///
/// Multiply-shift instead of `%`: the bias is below 2^-57, and it needs no
/// rejection loop (so no second call into the host).
pub fn score_from_random(random: u64) -> i32 {
    ((u128::from(random) * u128::from(MAX_SCORE + 1)) >> 64) as i32
}

/// The IP table holding the block list.
pub const BLOCKLIST: &str = "blocklist";

/// The guest's whole policy, independent of the host so it can be unit-tested
/// natively: `blocked` says whether an address is on the block list.
pub fn actions_for(
    message: &Message,
    blocked: impl FnOnce(IpAddr) -> bool,
    random: impl FnOnce() -> u64,
) -> Vec<Action> {
    if message.name != CHECK_CLIENT_IP {
        return Vec::new();
    }
    let score = match message.ip("ip") {
        Some(ip) if blocked(ip) => 0,
        _ => score_from_random(random()),
    };
    vec![Action::set(VarScope::Sess, IP_SCORE, score)]
}

/// Host randomness, drawn [`DRAWN_AT_ONCE`] values per host call: one call
/// into the host per message was a tenth of what a message cost in a batch.
/// Still the host's randomness, and still one value per score.
struct DrawnRandomness {
    values: [u64; DRAWN_AT_ONCE],
    next: usize,
}

const DRAWN_AT_ONCE: usize = 32;

impl DrawnRandomness {
    fn next(&mut self, draw: impl FnOnce(u32) -> Vec<u8>) -> u64 {
        if self.next == DRAWN_AT_ONCE {
            let bytes = draw((DRAWN_AT_ONCE * 8) as u32);
            for (value, chunk) in self.values.iter_mut().zip(bytes.chunks_exact(8)) {
                *value = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            }
            self.next = 0;
        }
        let value = self.values[self.next];
        self.next += 1;
        value
    }
}

thread_local! {
    static DRAWN: RefCell<DrawnRandomness> = const {
        RefCell::new(DrawnRandomness { values: [0; DRAWN_AT_ONCE], next: DRAWN_AT_ONCE })
    };
}

/// The next random value from the host.
fn host_random() -> u64 {
    DRAWN.with_borrow_mut(|drawn| drawn.next(spoa_guest::random::get_random_bytes))
}

/// The block list, opened once per instance; `None` when none is granted.
static BLOCK_LIST: OnceLock<Option<IpTable>> = OnceLock::new();

struct IpReputation;

impl Guest for IpReputation {
    fn init() -> Result<(), String> {
        BLOCK_LIST.get_or_init(|| IpTable::open(BLOCKLIST).ok());
        Ok(())
    }

    fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
        let table = BLOCK_LIST.get_or_init(|| IpTable::open(BLOCKLIST).ok());
        let blocked = |ip| table.as_ref().is_some_and(|table| table.contains(ip));
        Ok(actions_for(&msg, blocked, host_random))
    }
}

spoa_guest::export_handler!(IpReputation);

#[cfg(test)]
mod tests {
    use super::*;
    use spoa_guest::{Arg, TypedData};

    fn check_client_ip() -> Message {
        Message {
            name: CHECK_CLIENT_IP.to_string(),
            args: vec![Arg {
                name: "ip".to_string(),
                value: TypedData::Ipv4((127, 0, 0, 1)),
            }],
        }
    }

    #[test]
    fn randomness_is_drawn_once_per_32_scores_and_each_value_used_once() {
        let mut drawn = DrawnRandomness {
            values: [0; DRAWN_AT_ONCE],
            next: DRAWN_AT_ONCE,
        };
        let mut draws = 0u64;
        let mut draw = |len: u32| {
            assert_eq!(len as usize, DRAWN_AT_ONCE * 8);
            draws += 1;
            // Value i of draw d is d * 1000 + i, so repeats would show.
            (0..DRAWN_AT_ONCE as u64)
                .flat_map(|i| (draws * 1000 + i).to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let values: Vec<u64> = (0..70).map(|_| drawn.next(&mut draw)).collect();
        let expected: Vec<u64> = (0..70u64).map(|n| (n / 32 + 1) * 1000 + n % 32).collect();
        assert_eq!(values, expected);
        assert_eq!(draws, 3);
    }

    #[test]
    fn score_covers_the_whole_range_and_nothing_more() {
        assert_eq!(score_from_random(0), 0);
        assert_eq!(score_from_random(u64::MAX), 100);
        assert_eq!(score_from_random(u64::MAX / 2), 50);
        let step = u64::MAX / 1000;
        for i in 0..=1000u64 {
            let score = score_from_random(i.saturating_mul(step));
            assert!((0..=100).contains(&score), "score {score}");
        }
    }

    #[test]
    fn check_client_ip_sets_session_score_from_host_randomness() {
        let actions = actions_for(&check_client_ip(), |_| false, || u64::MAX);
        match actions.as_slice() {
            [Action::SetVar(set)] => {
                assert_eq!(set.name, IP_SCORE);
                assert!(matches!(set.scope, VarScope::Sess));
                assert!(matches!(set.value, TypedData::Int32(100)));
            }
            other => panic!("unexpected actions: {other:?}"),
        }
    }

    #[test]
    fn other_messages_get_no_action_and_draw_no_randomness() {
        let other = Message {
            name: "log-request".to_string(),
            args: Vec::new(),
        };
        let actions = actions_for(
            &other,
            |_| panic!("block list read for another message"),
            || panic!("randomness drawn for another message"),
        );
        assert!(actions.is_empty());
    }

    #[test]
    fn a_blocked_address_scores_zero_without_drawing() {
        let actions = actions_for(
            &check_client_ip(),
            |ip| ip == IpAddr::from([127, 0, 0, 1]),
            || panic!("randomness drawn for a blocked address"),
        );
        assert!(matches!(
            actions.as_slice(),
            [Action::SetVar(set)] if matches!(set.value, TypedData::Int32(0))
        ));
    }
}
