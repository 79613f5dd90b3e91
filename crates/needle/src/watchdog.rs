//! The memory watchdog of chat-template renders.
//!
//! Rendering an untrusted chat template runs in minijinja's sandbox: no loader, a budget of
//! instructions, a recursion limit, a cap on the output. Nothing there bounds the memory of the
//! values a template builds on the way: `{% set ns.s = ns.s ~ ns.s %}` in a loop of 40 doubles a
//! string 40 times in as many instructions, past any machine's memory, and the kernel then kills
//! the process (or another one). The libraries count the renders they start and finish
//! (`needle_engine::chat::renders`, `needle_artifact::template::renders`); this thread looks every
//! few milliseconds. A render still running at its next look (ordinary ones take well under a
//! millisecond) is watched: when the process's resident memory has grown by more than the limit
//! since the render was first seen, the thread ends the process with exit status 2 and says why.
//! A render cannot be stopped from outside its thread, and nothing the command has found so far
//! may stand as a result: exit 2 is "could not finish".

use std::time::Duration;

/// Growth of resident memory a render may cause, by default (`NEEDLE_RENDER_MEMORY_MB` sets it).
const DEFAULT_LIMIT_MB: u64 = 2048;
const POLL: Duration = Duration::from_millis(5);

/// Starts the watchdog thread (where `/proc/self/status` can be read; elsewhere nothing).
pub fn start() {
    let limit_mb = std::env::var("NEEDLE_RENDER_MEMORY_MB").ok().and_then(|v| v.parse::<u64>().ok()).filter(|&v| v > 0).unwrap_or(DEFAULT_LIMIT_MB);
    if resident_kb().is_none() {
        return;
    }
    let _ = std::thread::Builder::new().name("needle-render-watchdog".into()).spawn(move || watch(limit_mb));
}

/// Renders started and finished, over both libraries.
fn renders() -> (u64, u64) {
    let (a, b) = (needle_engine::chat::renders(), needle_artifact::template::renders());
    (a.0 + b.0, a.1 + b.1)
}

fn watch(limit_mb: u64) -> ! {
    // The render being watched (the count of renders started when it was first seen running)
    // and the resident memory then.
    let mut watched: Option<(u64, u64)> = None;
    loop {
        std::thread::sleep(POLL);
        let (started, finished) = renders();
        if started == finished {
            watched = None;
            continue;
        }
        let Some(now_kb) = resident_kb() else { continue };
        match watched {
            Some((id, from_kb)) if id == started => {
                if over(from_kb, now_kb, limit_mb) {
                    eprintln!(
                        "\nneedle: error: a chat template took more than {limit_mb} MiB of memory while rendering ({} MiB since it was seen running); it is refused and nothing is reported (set NEEDLE_RENDER_MEMORY_MB to allow more)",
                        now_kb.saturating_sub(from_kb) / 1024
                    );
                    std::process::exit(needle_report::ExitStatus::Error.code());
                }
            }
            _ => watched = Some((started, now_kb)),
        }
    }
}

/// Whether resident memory grew by more than `limit_mb` from `from_kb` to `now_kb`.
fn over(from_kb: u64, now_kb: u64, limit_mb: u64) -> bool {
    now_kb.saturating_sub(from_kb) > limit_mb.saturating_mul(1024)
}

/// `VmRSS` of `/proc/self/status`, in KiB.
fn resident_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_proc_status() {
        assert_eq!(parse_vm_rss("Name:\tneedle\nVmRSS:\t  123456 kB\nThreads:\t4\n"), Some(123_456));
        assert_eq!(parse_vm_rss("Name:\tneedle\n"), None);
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(resident_kb().is_some_and(|kb| kb > 0));
        }
    }

    #[test]
    fn only_growth_past_the_limit_counts() {
        assert!(!over(1_000_000, 1_000_000 + 2048 * 1024, 2048));
        assert!(over(1_000_000, 1_000_001 + 2048 * 1024, 2048));
        // Memory given back since the baseline is no growth.
        assert!(!over(5_000_000, 1_000_000, 1));
    }
}
