//! Several guests in one agent: each message goes to the guest that declares
//! its name. The guests' batches run concurrently, each under its own
//! permits and policy, so one guest's slowness or failures never reach
//! another's messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::join_all;

use crate::agent::{BatchFuture, BatchOutcome, Handler, MessageOutcome};
use crate::exec::GuestExecutor;
use crate::metrics::Metrics;
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

impl Handler for Router {
    fn handle_batch<'a>(&'a self, messages: &'a [spop::Message]) -> BatchFuture<'a> {
        let set = self.set.load_full();
        let routes: Vec<Option<usize>> = messages.iter().map(|m| set.route(&m.name)).collect();
        // The common case: the whole batch goes to one guest.
        if let Some(&Some(first)) = routes.first()
            && routes.iter().all(|route| *route == Some(first))
        {
            let guest = set.guests[first].clone();
            return Box::pin(async move { guest.handle_batch(messages).await });
        }
        Box::pin(async move {
            let mut per_guest: Vec<Vec<spop::Message>> = vec![Vec::new(); set.guests.len()];
            for (message, route) in messages.iter().zip(&routes) {
                match route {
                    Some(index) => per_guest[*index].push(message.clone()),
                    None => self.unrouted(&message.name),
                }
            }
            let answers = join_all(
                set.guests
                    .iter()
                    .zip(&per_guest)
                    .enumerate()
                    .filter(|(_, (_, batch))| !batch.is_empty())
                    .map(|(index, (guest, batch))| async move {
                        (index, guest.handle_batch(batch).await)
                    }),
            )
            .await;
            let mut label = String::new();
            let mut answers_by_guest: Vec<Option<std::vec::IntoIter<MessageOutcome>>> =
                (0..set.guests.len()).map(|_| None).collect();
            for (index, BatchOutcome { handler, outcomes }) in answers {
                if !label.is_empty() {
                    label.push('+');
                }
                label.push_str(&handler);
                answers_by_guest[index] = Some(outcomes.into_iter());
            }
            let outcomes = routes
                .iter()
                .map(|route| match route {
                    None => Ok(Vec::new()),
                    Some(index) => answers_by_guest[*index]
                        .as_mut()
                        .and_then(Iterator::next)
                        .unwrap_or_else(|| Ok(Vec::new())),
                })
                .collect();
            BatchOutcome {
                handler: label.into(),
                outcomes,
            }
        })
    }

    fn partition(&self, message: &spop::Message) -> usize {
        let set = self.set.load();
        set.route(&message.name).unwrap_or(set.guests.len())
    }
}
