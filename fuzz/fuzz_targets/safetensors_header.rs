//! Any bytes through the safetensors header checks (length, JSON visitors, offsets) and the
//! header JSON parser alone: no panic, no hang, bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle_artifact::inspect::{FileCtx, Sink};

fuzz_target!(|data: &[u8]| {
    let _ = needle_artifact::detect::sniff(data);
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "fuzz.safetensors", data, depth: 0 };
    let _ = needle_artifact::safetensors::inspect(&ctx, &mut sink);
    // The JSON alone, without the 8-byte length in front.
    let _ = needle_artifact::safetensors::parse_header(data);
});
