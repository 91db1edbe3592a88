//! Arbitrary bytes as an SPOP byte stream: the codec and every frame decoder
//! must never panic, never loop, and never buffer past the frame size; every
//! frame that decodes must re-encode to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use spoa_host::spop::codec::encode_frame;
use spoa_host::spop::{Frame, SpopCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = SpopCodec::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let mut out = BytesMut::new();
        encode_frame(&frame, &mut out);
        let again = SpopCodec::new(u32::MAX)
            .decode(&mut out)
            .expect("re-encoded frame decodes")
            .expect("re-encoded frame is whole");
        assert_eq!(again, frame);
        assert!(out.is_empty());
    }
    // Whatever is left is a partial frame: never more than prefix + max size.
    assert!(buf.len() <= data.len());
    let _ = Frame::decode(bytes::Bytes::copy_from_slice(data));
});
