//! Recording live traffic (`--record DIR`): a sampled share of the messages
//! guests answer, with the answer, the guest, its module's SHA-256 and the
//! time, to rotating JSON-lines files that `spoa-host replay` runs against a
//! new version.
//!
//! The data plane only samples and hands a record to a bounded queue (a
//! full queue drops the record and counts it); one thread of its own
//! redacts, formats and writes, so neither the JSON nor a slow disk delays
//! an answer.
//!
//! Must not know guests' modules, executors or sockets: it takes a message,
//! its answer and who gave it.

pub mod files;
pub mod format;
pub mod redact;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::agent::{Answers, MessageOutcome};
use crate::metrics::RecordCounters;
use crate::spop;
use files::RecordFiles;
use format::Record;
use redact::RedactRules;

/// Records waiting for the writer; past this, records are dropped.
const QUEUE: usize = 8192;

/// One draw: true for that `share` (0 to 1) of the draws. Recording,
/// shadows and canaries sample with it; 1 and 0 need no random number.
pub fn sampled(share: f64) -> bool {
    share >= 1.0 || (share > 0.0 && rand::random::<f64>() < share)
}

/// What to record, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSpec {
    pub dir: PathBuf,
    /// The share of messages recorded, 0 to 1.
    pub share: f64,
    /// Most bytes all the recording files hold together.
    pub max_bytes: u64,
    pub redact: RedactRules,
}

/// A sampled message and its answer, as the data plane hands it over:
/// redaction and formatting are the writer thread's work.
struct Sampled {
    at: SystemTime,
    guest: String,
    module_sha256: String,
    message: spop::Message,
    outcome: MessageOutcome,
}

/// The data plane's end: samples, and queues what it samples.
pub struct Recorder {
    share: f64,
    queue: SyncSender<Sampled>,
    counters: RecordCounters,
}

impl Recorder {
    /// Opens `spec.dir` and starts the writer thread.
    pub fn start(spec: &RecordSpec, counters: RecordCounters) -> Result<Arc<Recorder>> {
        let files = RecordFiles::new(&spec.dir, spec.max_bytes)
            .with_context(|| format!("--record: opening {}", spec.dir.display()))?;
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE);
        let (writer_counters, redact) = (counters.clone(), spec.redact.clone());
        std::thread::Builder::new()
            .name("spoa-record".into())
            .spawn(move || write_records(records, files, &redact, writer_counters))
            .context("starting the recording thread")?;
        tracing::info!(
            dir = %spec.dir.display(),
            share = spec.share,
            max_bytes = spec.max_bytes,
            "recording a share of the messages answered"
        );
        Ok(Arc::new(Recorder {
            share: spec.share,
            queue,
            counters,
        }))
    }

    fn sampled(&self) -> bool {
        sampled(self.share)
    }

    /// Records `message` and its answer, if it is sampled and the queue has
    /// room.
    pub fn offer(
        &self,
        guest: &str,
        module_sha256: &str,
        message: &spop::Message,
        outcome: &MessageOutcome,
    ) {
        if !self.sampled() {
            return;
        }
        let sampled = Sampled {
            at: SystemTime::now(),
            guest: guest.to_owned(),
            module_sha256: module_sha256.to_owned(),
            message: message.clone(),
            outcome: outcome.clone(),
        };
        match self.queue.try_send(sampled) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.inc();
            }
        }
    }

    /// An answer sink that offers each answer to `messages` before passing
    /// it on to `inner`.
    pub fn answers<'a>(
        &'a self,
        inner: &'a mut dyn Answers,
        messages: &'a [spop::Message],
        guest: &'a str,
        module_sha256: &'a str,
    ) -> RecordingAnswers<'a> {
        RecordingAnswers {
            recorder: self,
            inner,
            messages,
            next: 0,
            guest,
            module_sha256,
        }
    }
}

/// See [`Recorder::answers`].
pub struct RecordingAnswers<'a> {
    recorder: &'a Recorder,
    inner: &'a mut dyn Answers,
    messages: &'a [spop::Message],
    next: usize,
    guest: &'a str,
    module_sha256: &'a str,
}

impl Answers for RecordingAnswers<'_> {
    fn answered(&mut self, handler: &str, outcome: MessageOutcome) {
        if let Some(message) = self.messages.get(self.next) {
            self.recorder
                .offer(self.guest, self.module_sha256, message, &outcome);
        }
        self.next += 1;
        self.inner.answered(handler, outcome);
    }
}

/// The writer thread: redacts, formats and writes until every sender is
/// gone, flushing whenever the queue runs dry so the files are readable at
/// once.
fn write_records(
    records: Receiver<Sampled>,
    mut files: RecordFiles,
    redact: &RedactRules,
    counters: RecordCounters,
) {
    let mut warned = false;
    let mut line = Vec::with_capacity(512);
    while let Ok(first) = records.recv() {
        let mut next = Some(first);
        while let Some(sampled) = next {
            let redacted = redact.apply(&sampled.message.args);
            let record = Record::new(
                sampled.at,
                &sampled.guest,
                &sampled.module_sha256,
                &sampled.message,
                redacted.args,
                redacted.redacted,
                &sampled.outcome,
            );
            line.clear();
            let written = serde_json::to_writer(&mut line, &record)
                .map_err(std::io::Error::other)
                .and_then(|()| files.write_line(&line));
            match written {
                Ok(()) => {
                    counters.written.inc();
                }
                Err(err) => {
                    counters.dropped.inc();
                    if !warned {
                        tracing::warn!(
                            "recording: a record was not written (counted in spoa_records_dropped_total; this is said once): {err}"
                        );
                        warned = true;
                    }
                }
            }
            next = records.try_recv().ok();
        }
        if let Err(err) = files.flush() {
            tracing::warn!("recording: flushing the file failed: {err}");
        }
    }
}
