//! The IP-reputation logic compiled natively, for measuring what the sandbox
//! costs (`--native-iprep`). Built only with the `native-iprep` feature,
//! which the benchmark enables; never part of the product binary.

use std::sync::Arc;

use crate::agent::{AnswerSink, Batch, BatchFuture, Handler};
use crate::spop;

pub struct NativeIprep {
    label: Arc<str>,
}

impl Default for NativeIprep {
    fn default() -> NativeIprep {
        NativeIprep {
            label: Arc::from("native-iprep"),
        }
    }
}

/// The guest's algorithm (see `guest-iprep`): `check-client-ip` gets
/// `sess.ip_score` in 0..=100 by multiply-shift of a random u64.
pub fn iprep_actions(message: &spop::Message) -> Vec<spop::Action> {
    if &message.name[..] != b"check-client-ip" {
        return Vec::new();
    }
    let random: u64 = rand::random();
    let score = ((u128::from(random) * 101) >> 64) as i32;
    vec![spop::Action::SetVar {
        scope: spop::VarScope::Sess,
        name: bytes::Bytes::from_static(b"ip_score"),
        value: spop::TypedData::Int32(score),
    }]
}

impl Handler for NativeIprep {
    fn handle_batch<'a>(&'a self, messages: Batch<'a>, answers: AnswerSink<'a>) -> BatchFuture<'a> {
        for message in messages {
            answers.answered(&self.label, Ok(iprep_actions(message)));
        }
        Box::pin(std::future::ready(()))
    }
}
