use std::process::ExitCode;

use clap::Parser;
use spoa_host::cli::Cli;

fn main() -> ExitCode {
    spoa_host::run::main_with(Cli::parse())
}
