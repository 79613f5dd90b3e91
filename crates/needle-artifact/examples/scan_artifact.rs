//! Runs the artifact checks `needle inspect` runs on one file (content sniffing, then the
//! pickle/archive/numpy analysers) and prints the findings: a light harness for benchmarks
//! (`bench/pickle/run.sh`) that does not need the whole `needle` binary.
//!
//! usage: scan_artifact FILE

use needle_artifact::inspect::{Mapped, Sink};

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: scan_artifact FILE");
        std::process::exit(2);
    };
    let mapped = match Mapped::open(std::path::Path::new(&path)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", path.to_string_lossy());
            std::process::exit(2);
        }
    };
    let rel = std::path::Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut sink = Sink::default();
    let r = needle_artifact::archive::inspect_member(&rel, mapped.bytes(), 0, &mut sink);
    println!("{rel}: {} ({} pickles)", r.format.map_or("?", |f| f.name()), r.pickles);
    for f in &sink.findings {
        println!("{} {} {}", f.severity, f.code, f.message);
    }
    for f in &sink.failures {
        println!("failure: {f:?}");
    }
    let worst = sink.findings.iter().map(|f| f.severity).max();
    std::process::exit(if !sink.failures.is_empty() {
        2
    } else if worst >= Some(needle_report::Severity::High) {
        1
    } else {
        0
    });
}
