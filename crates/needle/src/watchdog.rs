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
//! since the render was first seen, or the render has run longer than the time limit (each
//! instruction of the budget may build a string of 100 MB: a loop that builds one of 50 MB
//! 100,000 times takes about 5 minutes, and a scan renders thousands of prompts), the thread ends the process with exit status 2 and says why.
//! A render cannot be stopped from outside its thread, and nothing the command has found so far
//! may stand as a result: exit 2 is "could not finish".

use std::time::Duration;

/// Growth of resident memory a render may cause, by default (`NEEDLE_RENDER_MEMORY_MB` sets it).
const DEFAULT_LIMIT_MB: u64 = 2048;
/// Seconds one render may run, by default (`NEEDLE_RENDER_SECONDS` sets it); real chat templates
/// render in well under a millisecond.
const DEFAULT_LIMIT_SECONDS: u64 = 10;
const POLL: Duration = Duration::from_millis(5);

/// A positive whole number from the environment variable `name`, or `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()).filter(|&v| v > 0).unwrap_or(default)
}

/// Starts the watchdog thread. Where `/proc/self/status` cannot be read it watches time only.
pub fn start() {
    let limits = Limits { memory_mb: setting("NEEDLE_RENDER_MEMORY_MB", DEFAULT_LIMIT_MB), time: Duration::from_secs(setting("NEEDLE_RENDER_SECONDS", DEFAULT_LIMIT_SECONDS)) };
    let _ = std::thread::Builder::new().name("needle-render-watchdog".into()).spawn(move || watch(limits));
}

struct Limits {
    memory_mb: u64,
    time: Duration,
}

/// Renders started and finished, over both libraries.
fn renders() -> (u64, u64) {
    let (a, b) = (needle_engine::chat::renders(), needle_artifact::template::renders());
    (a.0 + b.0, a.1 + b.1)
}

fn watch(limits: Limits) -> ! {
    // The render being watched (the count of renders started when it was first seen running),
    // when it was first seen, and the resident memory then (where it can be read).
    let mut watched: Option<(u64, std::time::Instant, Option<u64>)> = None;
    loop {
        std::thread::sleep(POLL);
        let (started, finished) = renders();
        if started == finished {
            watched = None;
            continue;
        }
        let now_kb = resident_kb();
        match watched {
            Some((id, since, from_kb)) if id == started => {
                let grown = from_kb.zip(now_kb).filter(|&(from, now)| over(from, now, limits.memory_mb));
                if let Some((from, now)) = grown {
                    stop(&format!("took more than {} MiB of memory while rendering ({} MiB since it was seen running)", limits.memory_mb, now.saturating_sub(from) / 1024), "NEEDLE_RENDER_MEMORY_MB");
                }
                if since.elapsed() > limits.time {
                    stop(&format!("ran for more than {} s while rendering", limits.time.as_secs()), "NEEDLE_RENDER_SECONDS");
                }
            }
            _ => watched = Some((started, std::time::Instant::now(), now_kb)),
        }
    }
}

/// Ends the process with exit status 2, saying why.
fn stop(what: &str, setting: &str) -> ! {
    eprintln!("\nneedle: error: a chat template {what}; it is refused and nothing is reported (set {setting} to allow more)");
    std::process::exit(needle_report::ExitStatus::Error.code());
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
