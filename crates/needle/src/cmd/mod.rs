//! One module per subcommand; each turns its arguments into library calls.

pub mod bom;
pub mod generate;
pub mod inspect;
pub mod manifest;
pub mod rules;
pub mod scan;
pub mod sign;
pub mod verify;
pub mod zoo;

use crate::cli::{Cli, Command};
use needle_report::ExitStatus;

pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    tune_allocator();
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Manifest(args) => manifest::run(args),
        Command::Bom(args) => bom::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Zoo(args) => zoo::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Rules(args) => rules::run(args),
    }
}

/// Keeps the model's freed activation buffers in the heap for the next batch to reuse.
/// By default glibc's malloc maps a block over its (adaptive) mmap threshold on its own and
/// unmaps it on free, and trims the heap's free top, so every forward pass of a scan faulted
/// its tensors' pages in anew:
/// `gpt2-clean`'s scan took 3.57M minor page faults and 49.8 s, and 42k and 38.9 s with the
/// threshold at glibc's 32 MB maximum and no trimming of the heap's top (the same report; a
/// block over 32 MB, such as a weight tensor, is still mapped on its own). Other platforms'
/// allocators are left as they are.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets malloc's parameters; it is called once, before any thread of
    // ours starts, and glibc takes its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
