//! `cargo run --release -p needle-artifact --example inspect -- PATH`: the inspection pipeline
//! alone (no CLI, no engine), printing the inventory and the finding codes. Used by
//! bench/inspect/run.sh when `BENCH_PIPELINE=1`.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: inspect PATH");
        std::process::exit(2);
    };
    let set = match needle_artifact::Target::open(std::path::Path::new(&path)).and_then(|t| t.walk()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let ins = needle_artifact::inspect(&set);
    print!("{}", needle_artifact::inventory::render_text(&ins.inventory));
    for f in &ins.findings {
        println!("{} {}: {}", f.severity, f.code, f.message);
    }
    for f in &ins.failures {
        println!("failure: {:?}: {}", f.file, f.message);
    }
    std::process::exit(if !ins.failures.is_empty() { 2 } else if ins.findings.iter().any(|f| f.severity >= needle_report::Severity::High) { 1 } else { 0 });
}
