//! Any bytes through the GGUF reader (header, metadata values, nested arrays, tensor infos,
//! data ranges): no panic, no hang, no allocation driven by declared counts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle_artifact::inspect::{FileCtx, Sink};

fuzz_target!(|data: &[u8]| {
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "fuzz.gguf", data, depth: 0 };
    let _ = needle_artifact::gguf::inspect(&ctx, &mut sink);
});
