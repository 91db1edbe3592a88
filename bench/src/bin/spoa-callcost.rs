//! `spoa-callcost [MODULE]`: the cost of one `handle-message` call, per
//! instance mode (and natively, with the `native` feature), with no network:
//! what the sandbox itself costs. Calls run as the agent runs them (async,
//! on a guest runtime), one at a time. `--batch N` times batches of N
//! messages through `handle-messages` instead, per message.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::Parser;
use spoa_host::settings::cli::SandboxArgs;
use spoa_host::spop::{Action, Arg, Message, TypedData};

#[derive(Debug, Parser)]
#[command(
    name = "spoa-callcost",
    about = "Per-call cost of a guest, per instance mode"
)]
struct Args {
    #[arg(default_value = "target/guest_iprep.wasm")]
    module: PathBuf,
    #[arg(short = 'd', long, default_value = "2s", value_parser = spoa_host::settings::cli::parse_duration)]
    duration: Duration,
    /// Only this variant: reuse, fresh or native.
    #[arg(long)]
    only: Option<String>,
    /// The number of actions each call must return.
    #[arg(long, default_value_t = 1)]
    expect_actions: usize,
    /// The message each call gets (default: check-client-ip, with
    /// ip=ipv4:198.51.100.7 unless --arg is given).
    #[arg(long, default_value = "check-client-ip")]
    message: String,
    /// An argument of the message, repeatable (NAME=TYPE:VALUE).
    #[arg(long = "arg", value_parser = spoa_host::settings::cli::parse_typed_arg)]
    args: Vec<Arg>,
    /// Also time this message (same arguments) on the same instance, in
    /// alternating rounds, and print what `--message` costs on top of it:
    /// the difference of the two, with the machine's noise in both.
    #[arg(long, value_name = "MESSAGE")]
    baseline: Option<String>,
    /// Also time batches of this many messages through `handle-messages`
    /// (a guest with the batch export), per message.
    #[arg(long, value_name = "MESSAGES")]
    batch: Option<usize>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// The guests' key-value store (`--kv redis://…` to measure Redis).
    #[command(flatten)]
    kv: spoa_host::settings::cli::KvArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let message = Message {
        name: Bytes::copy_from_slice(args.message.as_bytes()),
        args: if args.args.is_empty() {
            vec![Arg {
                name: Bytes::from_static(b"ip"),
                value: TypedData::Ipv4(Ipv4Addr::new(198, 51, 100, 7)),
            }]
        } else {
            args.args.clone()
        },
    };
    println!(
        "spoa-callcost: {}, {:?} per variant, one thread",
        args.module.display(),
        args.duration
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    for (name, label, fresh) in [
        ("reuse", "wasm, reused instance (default)", false),
        ("fresh", "wasm, --fresh-instance", true),
    ] {
        if !wanted(name) {
            continue;
        }
        let mut sandbox_args = args.sandbox.clone();
        sandbox_args.fresh_instance = fresh;
        runtime.block_on(async {
            let sandbox = spoa_host::cmd::call::standalone_sandbox(&args.kv, &sandbox_args, None)?;
            let load_started = Instant::now();
            let module = spoa_host::guests::module_reload::load(
                &sandbox,
                None,
                &args.module,
                &sandbox_args.grants(),
            )
            .await?
            .module;
            println!(
                "  load: {:.1} ms ({})",
                load_started.elapsed().as_secs_f64() * 1e3,
                if module.identity.from_cache {
                    "compiled code from the cache"
                } else {
                    "compiled"
                }
            );
            if let Some(baseline) = &args.baseline {
                let base = Message {
                    name: Bytes::copy_from_slice(baseline.as_bytes()),
                    args: message.args.clone(),
                };
                return compare(&module, &message, &base, args.duration).await;
            }
            if let Some(size) = args.batch {
                return measure_batches(
                    &module,
                    &message,
                    size,
                    args.expect_actions,
                    args.duration,
                )
                .await;
            }
            measure(label, args.duration, args.expect_actions, async || {
                module.call(&message).await.map_err(anyhow::Error::from)
            })
            .await
        })?;
    }
    #[cfg(feature = "native")]
    if wanted("native") {
        runtime.block_on(measure(
            "native build of the same logic",
            args.duration,
            args.expect_actions,
            async || Ok(spoa_host::native::iprep_actions(&message)),
        ))?;
    }
    Ok(())
}

/// Rounds of `message` and `base` in turn; the medians and their difference.
async fn compare(
    module: &spoa_host::sandbox::LoadedModule,
    message: &Message,
    base: &Message,
    duration: Duration,
) -> Result<()> {
    const ROUNDS: usize = 40;
    const CALLS: u32 = 20_000;
    let round = async |msg: &Message| -> Result<f64> {
        let started = Instant::now();
        for _ in 0..CALLS {
            module.call(msg).await?;
        }
        Ok(started.elapsed().as_nanos() as f64 / f64::from(CALLS))
    };
    round(message).await?;
    round(base).await?;
    let (mut with, mut without, mut differences) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    while with.len() < ROUNDS || started.elapsed() < duration {
        let a = round(message).await?;
        let b = round(base).await?;
        with.push(a);
        without.push(b);
        differences.push(a - b);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let name = |msg: &Message| String::from_utf8_lossy(&msg.name).into_owned();
    println!(
        "  {} {:.0} ns/call, {} {:.0} ns/call (medians of {} alternating rounds): {} costs {:.0} ns on top (median of the differences)",
        name(message),
        median(&mut with),
        name(base),
        median(&mut without),
        with.len(),
        name(message),
        median(&mut differences),
    );
    Ok(())
}

/// Batches of `size` copies of `message`, each answered by one
/// `handle-messages` call on a leased instance, timed per message.
async fn measure_batches(
    module: &spoa_host::sandbox::LoadedModule,
    message: &Message,
    size: usize,
    expect_actions: usize,
    duration: Duration,
) -> Result<()> {
    let messages = vec![message.clone(); size.max(1)];
    // A batch call that used its share of the tick returns early: the rest
    // go to the next call, as in the agent.
    let batch = async || -> Result<()> {
        let mut lease = module.lease();
        let mut rest = &messages[..];
        while !rest.is_empty() {
            let answered = lease.call_batch(rest).await;
            if answered.then_one_by_one != 0 || answered.outcomes.is_empty() {
                bail!(
                    "a batch of {} left {} messages to run one by one",
                    rest.len(),
                    answered.then_one_by_one
                );
            }
            rest = &rest[answered.outcomes.len()..];
            for outcome in answered.outcomes {
                let actions = outcome?;
                if actions.len() != expect_actions {
                    bail!("expected {expect_actions} actions, got {actions:?}");
                }
            }
        }
        Ok(())
    };
    for _ in 0..100 {
        batch().await?;
    }
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < duration {
        batch().await?;
        batches += 1;
    }
    let per_message =
        started.elapsed().as_nanos() as f64 / (batches * messages.len() as u64) as f64;
    println!(
        "  batches of {:<3} (batch export)         {per_message:>9.0} ns/message  ({batches} batches)",
        messages.len()
    );
    Ok(())
}

async fn measure(
    label: &str,
    duration: Duration,
    expect_actions: usize,
    mut call: impl AsyncFnMut() -> Result<Vec<Action>>,
) -> Result<()> {
    for _ in 0..1000 {
        call().await?;
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < duration {
        for _ in 0..256 {
            let actions = call().await?;
            if actions.len() != expect_actions {
                bail!("{label}: expected {expect_actions} actions, got {actions:?}");
            }
        }
        calls += 256;
    }
    let per_call = started.elapsed().as_nanos() as f64 / calls as f64;
    println!("  {label:<34} {per_call:>9.0} ns/call  ({calls} calls)");
    Ok(())
}
