//! Several guests in one agent: each message goes to the guest that declares
//! its name. The guests' batches run concurrently, each under its own
//! permits and policy, so one guest's slowness or failures never reach
//! another's messages.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::join_all;

use crate::agent::{AnswerSink, Answers, Batch, BatchFuture, Handler, MessageOutcome};
use crate::exec::GuestExecutor;
use crate::metrics::Metrics;
use crate::metrics::status::{GuestStatus, StatusSource};
use crate::spop;

/// Unrouted message names logged once each, up to this many (a peer could
/// send endless new names).
const MAX_LOGGED_UNROUTED: usize = 1024;

/// The guests serving now and which messages each answers.
pub struct GuestSet {
    guests: Vec<Arc<GuestExecutor>>,
    routes: HashMap<Bytes, usize>,
}

impl GuestSet {
    /// `guests[i]` answers `messages[i]` (the `--module` form, which answers
    /// every message, is served without a router).
    pub fn new(guests: Vec<(Arc<GuestExecutor>, Vec<String>)>) -> GuestSet {
        let mut routes = HashMap::new();
        let executors = guests
            .into_iter()
            .enumerate()
            .map(|(index, (executor, messages))| {
                for message in messages {
                    routes.insert(Bytes::from(message), index);
                }
                executor
            })
            .collect();
        GuestSet {
            guests: executors,
            routes,
        }
    }

    /// The index of the guest answering `name`.
    fn route(&self, name: &[u8]) -> Option<usize> {
        self.routes.get(name).copied()
    }
}

/// Routes messages to guests; implements the agent's [`Handler`].
pub struct Router {
    set: ArcSwap<GuestSet>,
    metrics: Arc<Metrics>,
    logged_unrouted: Mutex<HashSet<Bytes>>,
}

impl Router {
    pub fn new(set: GuestSet, metrics: Arc<Metrics>) -> Router {
        Router {
            set: ArcSwap::from_pointee(set),
            metrics,
            logged_unrouted: Mutex::new(HashSet::new()),
        }
    }

    /// Makes `set` answer the next batches.
    pub fn replace(&self, set: GuestSet) {
        self.set.store(Arc::new(set));
    }

    fn unrouted(&self, name: &Bytes) {
        self.metrics.unrouted_messages.inc();
        let mut logged = self
            .logged_unrouted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if logged.len() < MAX_LOGGED_UNROUTED && logged.insert(name.clone()) {
            tracing::debug!(
                spoe_message = %String::from_utf8_lossy(name),
                "no guest declares this message; answered without actions"
            );
        }
    }
}

impl StatusSource for Router {
    fn guest_statuses(&self) -> Vec<GuestStatus> {
        self.set
            .load()
            .guests
            .iter()
            .map(|guest| guest.status())
            .collect()
    }
}

impl Handler for Router {
    fn handle_batch<'a>(&'a self, messages: Batch<'a>, answers: AnswerSink<'a>) -> BatchFuture<'a> {
        let set = self.set.load_full();
        let routes: Vec<Option<usize>> = messages.iter().map(|m| set.route(&m.name)).collect();
        // The common case: the whole batch goes to one guest.
        if let Some(&Some(first)) = routes.first()
            && routes.iter().all(|route| *route == Some(first))
        {
            let guest = set.guests[first].clone();
            return Box::pin(async move { guest.handle_batch(messages, answers).await });
        }
        Box::pin(async move {
            let mut per_guest: Vec<Vec<spop::Message>> = vec![Vec::new(); set.guests.len()];
            for (message, route) in messages.iter().zip(&routes) {
                match route {
                    Some(index) => per_guest[*index].push(message.clone()),
                    None => self.unrouted(&message.name),
                }
            }
            let merge = Mutex::new(InOrder {
                routes: &routes,
                next: 0,
                waiting: (0..set.guests.len()).map(|_| VecDeque::new()).collect(),
                answers,
            });
            merge
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forward_ready();
            join_all(
                set.guests
                    .iter()
                    .zip(&per_guest)
                    .enumerate()
                    .filter(|(_, (_, batch))| !batch.is_empty())
                    .map(|(index, (guest, batch))| {
                        let merge = &merge;
                        async move {
                            let mut sink = GuestAnswers {
                                guest: index,
                                merge,
                            };
                            guest.handle_batch(batch, &mut sink).await
                        }
                    }),
            )
            .await;
            merge
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .finish();
        })
    }

    fn partition(&self, message: &spop::Message) -> usize {
        let set = self.set.load();
        set.route(&message.name).unwrap_or(set.guests.len())
    }
}

/// The answers of several guests to one batch, put back in message order:
/// each goes on as soon as every message before it is answered.
struct InOrder<'r, 'a> {
    routes: &'r [Option<usize>],
    /// The first message not forwarded yet.
    next: usize,
    /// Each guest's answers that wait for an earlier message's.
    waiting: Vec<VecDeque<(Arc<str>, MessageOutcome)>>,
    answers: &'a mut dyn Answers,
}

impl InOrder<'_, '_> {
    /// Once every guest is done: a guest that gave too few answers must not
    /// hold back the other guests' answers after its own.
    fn finish(mut self) {
        self.forward_ready();
        while let Some(route) = self.routes.get(self.next) {
            match route.and_then(|guest| self.waiting[guest].pop_front()) {
                Some((handler, outcome)) => self.answers.answered(&handler, outcome),
                None if route.is_none() => self.answers.answered("", Ok(Vec::new())),
                None => self.answers.answered(
                    "",
                    Err(crate::agent::HandlerFailure {
                        kind: crate::agent::FailureKind::InvalidOutput,
                        reason: "no answer from the guest".into(),
                        fallback: Vec::new(),
                    }),
                ),
            }
            self.next += 1;
        }
    }

    fn forward_ready(&mut self) {
        while let Some(route) = self.routes.get(self.next) {
            match route {
                // No guest declares it: answered without actions.
                None => self.answers.answered("", Ok(Vec::new())),
                Some(guest) => match self.waiting[*guest].pop_front() {
                    Some((handler, outcome)) => self.answers.answered(&handler, outcome),
                    None => return,
                },
            }
            self.next += 1;
        }
    }
}

/// One guest's share of a mixed batch.
struct GuestAnswers<'m, 'r, 'a> {
    guest: usize,
    merge: &'m Mutex<InOrder<'r, 'a>>,
}

impl Answers for GuestAnswers<'_, '_, '_> {
    fn answered(&mut self, handler: &str, outcome: MessageOutcome) {
        let mut merge = self.merge.lock().unwrap_or_else(|p| p.into_inner());
        merge.waiting[self.guest].push_back((handler.into(), outcome));
        merge.forward_ready();
    }
}
