//! A guest's shadow (`[guest.shadow]`): a candidate version that gets a
//! copy of a share of the guest's messages once they are answered, answers
//! them on a task of its own, and is compared with what was served. It is
//! never on the answer path: the copy goes to a bounded queue, and a full
//! queue drops it (counted). Its answers are thrown away; it runs with a
//! store of its own, so it never writes to the shared state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::agent::{Answers, MessageOutcome};
use crate::metrics::ShadowCounters;
use crate::planes::DataPlane;
use crate::sandbox::LoadedModule;
use crate::spop;

/// Copies waiting for the shadow; past this, copies are dropped.
const QUEUE: usize = 1024;

/// At most one difference a second goes to the log.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A served message and what it was answered.
struct Served {
    message: spop::Message,
    served: MessageOutcome,
}

/// The data plane's end of a shadow: samples and queues.
pub struct Shadow {
    share: f64,
    queue: mpsc::Sender<Served>,
    counters: ShadowCounters,
}

impl Shadow {
    /// Starts `module` as `guest`'s shadow on the data plane; it stops when
    /// the returned `Shadow` is dropped.
    pub fn start(
        guest: &str,
        module: Arc<LoadedModule>,
        share: f64,
        counters: ShadowCounters,
        data: &DataPlane,
    ) -> Arc<Shadow> {
        let (queue, copies) = mpsc::channel(QUEUE);
        data.spawn(compare(guest.to_owned(), module, copies, counters.clone()));
        Arc::new(Shadow {
            share,
            queue,
            counters,
        })
    }

    fn sampled(&self) -> bool {
        crate::record::sampled(self.share)
    }

    fn offer(&self, message: &spop::Message, served: &MessageOutcome) {
        let copy = Served {
            message: message.clone(),
            served: served.clone(),
        };
        if self.queue.try_send(copy).is_err() {
            self.counters.dropped.inc();
        }
    }

    /// An answer sink that copies a share of the answers to `messages` to
    /// the shadow as they go on to `inner`.
    pub fn answers<'a>(
        &'a self,
        inner: &'a mut dyn Answers,
        messages: &'a [spop::Message],
    ) -> ShadowAnswers<'a> {
        ShadowAnswers {
            shadow: self,
            inner,
            messages,
            next: 0,
        }
    }
}

/// See [`Shadow::answers`].
pub struct ShadowAnswers<'a> {
    shadow: &'a Shadow,
    inner: &'a mut dyn Answers,
    messages: &'a [spop::Message],
    next: usize,
}

impl Answers for ShadowAnswers<'_> {
    fn answered(&mut self, handler: &str, outcome: MessageOutcome) {
        // Copied only when sampled: the served answer is not cloned
        // otherwise.
        if let Some(message) = self.messages.get(self.next)
            && self.shadow.sampled()
        {
            self.shadow.offer(message, &outcome);
        }
        self.next += 1;
        self.inner.answered(handler, outcome);
    }
}

/// Whether the shadow's answer is the one served: the same actions, or the
/// same kind of failure.
fn same(
    served: &MessageOutcome,
    shadow: &Result<Vec<spop::Action>, crate::sandbox::GuestFailure>,
) -> bool {
    match (served, shadow) {
        (Ok(served), Ok(shadow)) => served == shadow,
        (Err(served), Err(failure)) => served.kind == super::failure_kind(failure),
        _ => false,
    }
}

async fn compare(
    guest: String,
    module: Arc<LoadedModule>,
    mut copies: mpsc::Receiver<Served>,
    counters: ShadowCounters,
) {
    let last_logged = AtomicU64::new(0);
    let started = Instant::now();
    while let Some(Served { message, served }) = copies.recv().await {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let answer = module.call_at(&message, Some(now.as_millis() as u64)).await;
        if same(&served, &answer) {
            counters.same.inc();
            continue;
        }
        match &answer {
            Err(_) => counters.failed.inc(),
            Ok(_) => counters.differ.inc(),
        };
        let now = started.elapsed().as_millis() as u64;
        let last = last_logged.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64 {
            last_logged.store(now.max(1), Ordering::Relaxed);
            tracing::info!(
                guest,
                shadow = %module.label,
                message = %String::from_utf8_lossy(&message.name),
                args = ?message.args.iter().map(spop::notation::arg_text).collect::<Vec<_>>(),
                served = ?served.as_ref().map_err(|failure| failure.kind.name()),
                shadow_answer = ?answer.as_ref().map_err(|failure| failure.to_string()),
                "shadow answered differently (at most one such line a second)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_copy_and_counts_it() {
        let (queue, _copies) = mpsc::channel(QUEUE);
        let counters = ShadowCounters::default();
        let shadow = Shadow {
            share: 1.0,
            queue,
            counters: counters.clone(),
        };
        let message = spop::Message {
            name: bytes::Bytes::from_static(b"check-client-ip"),
            args: vec![],
        };
        let mut served = Vec::new();
        let messages = vec![message; QUEUE + 10];
        let mut answers = shadow.answers(&mut served, &messages);
        for _ in 0..messages.len() {
            answers.answered("guest", Ok(vec![]));
        }
        assert_eq!(served.len(), QUEUE + 10, "every answer is served");
        assert_eq!(counters.dropped.get(), 10);
    }
}
