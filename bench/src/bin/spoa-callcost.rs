//! `spoa-callcost`: the cost of one `handle-message` call, without the network.
//!
//! Loads a guest the way `spoa-host` does and calls it with a
//! `check-client-ip` message in a loop on one thread, once per instance mode
//! (reused instance, fresh instance per message) and once for the native build
//! of the same logic. Reports nanoseconds per call: the figure to compare with
//! the per-message cost over SPOP, which adds decoding, encoding and the
//! kernel's share.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::Parser;
use spoa_host::agent::Handler;
use spoa_host::sandbox::{InstanceMode, Sandbox, SandboxConfig};
use spoa_host::spop::{Arg, Message, TypedData};

#[derive(Debug, Parser)]
#[command(
    name = "spoa-callcost",
    about = "Per-call cost of a guest, per instance mode"
)]
struct Args {
    /// The guest component.
    #[arg(default_value = "target/guest_iprep.wasm")]
    module: PathBuf,
    /// How long to call each variant.
    #[arg(short = 'd', long, default_value = "2s", value_parser = spoa_host::cli::parse_duration)]
    duration: Duration,
    /// Only this variant (`reuse`, `fresh` or `native`), e.g. under a profiler.
    #[arg(long)]
    only: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let message = Message {
        name: Bytes::from_static(b"check-client-ip"),
        args: vec![Arg {
            name: Bytes::from_static(b"ip"),
            value: TypedData::Ipv4(Ipv4Addr::new(192, 0, 2, 7)),
        }],
    };
    println!(
        "spoa-callcost: {}, {:?} per variant, one thread",
        args.module.display(),
        args.duration
    );
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    for (name, label, mode) in [
        (
            "reuse",
            "wasm, reused instance (default)",
            InstanceMode::Reuse,
        ),
        ("fresh", "wasm, --fresh-instance", InstanceMode::Fresh),
    ] {
        if !wanted(name) {
            continue;
        }
        let sandbox = Sandbox::new(SandboxConfig {
            instance_mode: mode,
            ..SandboxConfig::default()
        })?;
        let handler = Handler::Wasm(sandbox.load_file(&args.module)?);
        report(label, &handler, &message, args.duration)?;
    }
    if wanted("native") {
        report(
            "native build of the same logic",
            &Handler::NativeIprep,
            &message,
            args.duration,
        )?;
    }
    Ok(())
}

fn report(label: &str, handler: &Handler, message: &Message, duration: Duration) -> Result<()> {
    // Warm up: first instantiation, caches.
    for _ in 0..1000 {
        handler.handle(message)?;
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < duration {
        for _ in 0..256 {
            let actions = handler.handle(message)?;
            if actions.len() != 1 {
                bail!("{label}: expected one action, got {actions:?}");
            }
        }
        calls += 256;
    }
    let per_call = started.elapsed().as_nanos() as f64 / calls as f64;
    println!("  {label:<34} {per_call:>9.0} ns/call  ({calls} calls)");
    Ok(())
}
