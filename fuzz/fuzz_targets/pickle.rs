//! Any bytes through the pickle analyser (stacked pickles, nested bytes, trailing zips) and
//! the protocol 0/1 sniffer: no panic, no hang, bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle_artifact::inspect::{FileCtx, Sink};

fuzz_target!(|data: &[u8]| {
    let _ = needle_artifact::pickle::looks_like_low_protocol(data);
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "fuzz.pkl", data, depth: 0 };
    let _ = needle_artifact::pickle::inspect(&ctx, &mut sink);
});
