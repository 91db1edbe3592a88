//! `spoa-kvsweep [-n ENTRIES]`: what the in-process store's expiry sweep
//! costs the guest calls that meet it. Fills the store with entries that
//! expire in an hour (none expires during the run; the sweep still runs
//! every second), then times single `get`s for a few seconds: their p99 and
//! maximum show how long the sweep holds the shard locks guest calls need.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use hdrhistogram::Histogram;
use spoa_host::kv::memory::{MemoryStore, spawn_sweeper};

#[derive(Debug, Parser)]
#[command(
    name = "spoa-kvsweep",
    about = "Store-call latency while the expiry sweep runs"
)]
struct Args {
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    entries: u64,
    #[arg(short = 'd', long, default_value = "5s", value_parser = spoa_host::settings::cli::parse_duration)]
    duration: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let store = Arc::new(MemoryStore::new(4 << 30));
    let hour = Some(Duration::from_secs(3600));
    let started = Instant::now();
    for i in 0..args.entries {
        store.set("default", &format!("rate:{i}"), b"17".to_vec(), hour)?;
    }
    println!(
        "spoa-kvsweep: {} entries with a TTL written in {:.1} s",
        args.entries,
        started.elapsed().as_secs_f64()
    );
    let sweep_started = Instant::now();
    store.sweep();
    println!(
        "  one sweep with nothing expired: {:.1} ms",
        sweep_started.elapsed().as_secs_f64() * 1e3
    );
    spawn_sweeper(&store);
    let mut latencies = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < args.duration {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("rate:{}", i % args.entries.max(1));
        let call = Instant::now();
        std::hint::black_box(store.get("default", &key));
        latencies.record(call.elapsed().as_nanos() as u64)?;
    }
    println!(
        "  get during {:?} of sweeps every second: p50 {} ns  p99 {} ns  p999 {} ns  max {:.2} ms  ({} calls)",
        args.duration,
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.value_at_quantile(0.999),
        latencies.max() as f64 / 1e6,
        latencies.len()
    );
    Ok(())
}
