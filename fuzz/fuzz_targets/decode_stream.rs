//! Arbitrary bytes as an SPOP byte stream: the codec and every frame decoder
//! must never panic, never loop, and never buffer past the frame size; every
//! frame that decodes must re-encode to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use spoa_host::spop::codec::encode_frame;
use spoa_host::spop::{Frame, SpopCodec};
use tokio_util::codec::Decoder;

/// The codec's frame-size limit here.
const MAX_FRAME: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut codec = SpopCodec::new(MAX_FRAME as u32);
    let mut buf = BytesMut::from(data);
    let stopped = loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let mut out = BytesMut::new();
                encode_frame(&frame, &mut out);
                let again = SpopCodec::new(u32::MAX)
                    .decode(&mut out)
                    .expect("re-encoded frame decodes")
                    .expect("re-encoded frame is whole");
                assert_eq!(again, frame);
                assert!(out.is_empty());
            }
            other => break other,
        }
    };
    // Waiting for more bytes: what is held is one partial frame, less than
    // its 4-byte length prefix plus the largest frame allowed.
    if let Ok(None) = stopped {
        assert!(
            buf.len() < 4 + MAX_FRAME,
            "{} bytes buffered for a frame",
            buf.len()
        );
    }
    let _ = Frame::decode(bytes::Bytes::copy_from_slice(data));
});
