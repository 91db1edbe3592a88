//! `spoa-kvcost [--kv memory|redis://…]`: what one key-value call of a guest
//! costs the host, per operation, through the same `KvStore` guests use:
//! one call at a time (latency), and 16 at once (throughput, which is what a
//! pipelined Redis connection is for). A guest adds ≈0.1 µs per call for
//! crossing the component boundary (see `spoa-callcost` on
//! guest_ratelimit.wasm for the whole call).

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use hdrhistogram::Histogram;
use spoa_host::kv::KvStore;

#[derive(Debug, Parser)]
#[command(
    name = "spoa-kvcost",
    about = "Per-operation cost of the guests' key-value store"
)]
struct Args {
    #[arg(short = 'd', long, default_value = "2s", value_parser = spoa_host::settings::cli::parse_duration)]
    duration: Duration,
    /// Calls in flight at once for the throughput figure.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[command(flatten)]
    kv: spoa_host::settings::cli::KvArgs,
}

/// A generous deadline: the figures are what the store costs, not what a
/// deadline cuts.
const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
enum Op {
    Get,
    Set,
    Increment,
    IncrementWithin,
}

impl Op {
    const ALL: [(Op, &'static str); 4] = [
        (Op::Get, "get"),
        (Op::Set, "set"),
        (Op::Increment, "atomics.increment"),
        (Op::IncrementWithin, "expiry.increment-within"),
    ];

    async fn run(self, store: &KvStore, i: u64) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        let key = format!("bench:{}", i % 1024);
        match self {
            Op::Get => store.get(deadline, "default", &key).await.map(drop),
            Op::Set => {
                store
                    .set(deadline, "default", &key, b"1".to_vec(), None)
                    .await
            }
            Op::Increment => store
                .increment(deadline, "default", &format!("n:{key}"), 1, None)
                .await
                .map(drop),
            Op::IncrementWithin => store
                .increment(deadline, "default", &format!("w:{key}"), 1, Some(60_000))
                .await
                .map(drop),
        }
        .map_err(|err| anyhow::anyhow!("{err}"))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let spec = args.kv.settings().spec(&Default::default()).map_err(anyhow::Error::msg)?;
        let store = KvStore::open(&spec).map_err(anyhow::Error::msg)?;
        println!(
            "spoa-kvcost: {}, {:?} per operation, one tokio thread",
            store.describe(),
            args.duration
        );
        // Warm up (and connect).
        for i in 0..2048 {
            Op::Set.run(&store, i).await?;
            Op::Increment.run(&store, i).await?;
            Op::IncrementWithin.run(&store, i).await?;
        }
        for (op, name) in Op::ALL {
            let mut latency = Histogram::<u64>::new(3)?;
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < args.duration {
                let call = Instant::now();
                op.run(&store, i).await?;
                latency.record(call.elapsed().as_nanos() as u64)?;
                i += 1;
            }
            let one_at_a_time = i as f64 / started.elapsed().as_secs_f64();

            let started = Instant::now();
            let mut done = 0u64;
            while started.elapsed() < args.duration {
                let batch = (0..args.concurrency as u64).map(|j| op.run(&store, done + j));
                for result in futures_util::future::join_all(batch).await {
                    result?;
                }
                done += args.concurrency as u64;
            }
            let concurrent = done as f64 / started.elapsed().as_secs_f64();
            println!(
                "  {name:<24} p50 {:>8.2} µs  p99 {:>8.2} µs  mean {:>8.2} µs  | {:>9.0} ops/s one at a time, {:>9.0} ops/s {} at once",
                latency.value_at_quantile(0.5) as f64 / 1e3,
                latency.value_at_quantile(0.99) as f64 / 1e3,
                latency.mean() / 1e3,
                one_at_a_time,
                concurrent,
                args.concurrency
            );
        }
        Ok(())
    })
}
