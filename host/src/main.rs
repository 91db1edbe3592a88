use std::process::ExitCode;

use clap::Parser;
use spoa_host::settings::cli::Cli;

/// mimalloc: a batch allocates every message's answer before freeing any,
/// which overflows glibc's small per-thread caches (seven blocks a size);
/// mimalloc's per-thread free lists have no such limit.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    spoa_host::cmd::main_with(Cli::parse())
}
