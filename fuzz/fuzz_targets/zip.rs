//! Any bytes through the archive layer as a zip (and, through member recursion, tar, gzip,
//! npy and pickle), plus the end-record search used by format detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle_artifact::detect::Format;
use needle_artifact::inspect::{FileCtx, Sink};

fuzz_target!(|data: &[u8]| {
    let _ = needle_artifact::archive::find_zip_end(data);
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "fuzz.zip", data, depth: 0 };
    let _ = needle_artifact::archive::inspect(&ctx, Format::Zip, &mut sink);
    let fmt = needle_artifact::detect::sniff(data);
    if matches!(fmt, Format::Tar | Format::Gzip) {
        let _ = needle_artifact::archive::inspect(&ctx, fmt, &mut sink);
    }
});
