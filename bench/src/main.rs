//! `spoa-bench`: plays HAProxy's part against an SPOA and measures it.
//!
//! Each connection keeps `--pipeline` NOTIFY frames in flight (each carrying
//! `--messages` `check-client-ip` messages) for `--duration` after a warm-up.
//! Reported: messages per second, ACK latency percentiles, errors (an ACK
//! without the expected `ip_score`), lost ACKs (NOTIFYs unanswered when the
//! run ends), and — with `--agent-pid` — the agent's CPU seconds from
//! `/proc/PID/stat`, so throughput can be given per agent CPU-second: a fair
//! figure when generator and agent share the machine's cores.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use spoa_host::settings::cli::parse_duration;
use spoa_host::spop::codec::encode_frame;
use spoa_host::spop::{Action, Arg, Frame, KvList, Message, Notify, SpopCodec, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

#[derive(Debug, Parser)]
#[command(
    name = "spoa-bench",
    about = "SPOP load generator for spoa-host and other SPOAs"
)]
struct Args {
    /// The agent to load.
    #[arg(long, default_value = "127.0.0.1:12345")]
    addr: SocketAddr,
    /// Load the agent over this Unix socket (its `--unix PATH`) instead of
    /// `--addr`. Only the measured connections: idle connections, spinners
    /// and health checks keep to `--addr` (and `--burst` is TCP only).
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "burst"])]
    unix: Option<std::path::PathBuf>,
    /// Concurrent SPOP connections.
    #[arg(short = 'c', long, default_value_t = 4)]
    connections: usize,
    /// NOTIFY frames in flight per connection.
    #[arg(short = 'p', long, default_value_t = 16)]
    pipeline: usize,
    /// Messages per NOTIFY frame.
    #[arg(short = 'm', long, default_value_t = 1)]
    messages: usize,
    /// Measured duration.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before the measured window.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// PID of the agent, to report its CPU time and resident memory.
    #[arg(long)]
    agent_pid: Option<u32>,
    /// Generator threads (keep it low: the agent needs the cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Idle connections (HELLO done, then silent) held open during the run,
    /// to measure what an idle connection costs the agent.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Extra connections that keep sending the message `--spin-message`
    /// (one NOTIFY in flight each), unmeasured: a guest that loops to its
    /// deadline on them shows what slow guests cost everyone else.
    #[arg(long, default_value_t = 0)]
    spin: usize,
    /// The message the `--spin` connections send.
    #[arg(long, default_value = "loop")]
    spin_message: String,
    /// Health-check HELLOs per second during the measured window; their
    /// latency (connect to AGENT-HELLO) is reported.
    #[arg(long, default_value_t = 0)]
    healthchecks_per_sec: u32,
    /// Speak TLS on the measured connections, trusting this CA (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Instead of a load: send this many NOTIFYs of `--burst-message` in
    /// one write, five times, and report when the first, the median and
    /// the last ACK of each burst arrived.
    #[arg(long)]
    burst: Option<usize>,
    /// The message of a burst; it gets an int64 argument `us` =
    /// `--burst-us` (the `spin` message of the batch fixture spins that
    /// long).
    #[arg(long, default_value = "spin")]
    burst_message: String,
    #[arg(long, default_value_t = 2000)]
    burst_us: i64,
}

/// A byte stream to the agent: TCP, TLS over TCP, or a Unix socket.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn tls_connector(args: &Args) -> Result<Option<tokio_rustls::TlsConnector>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &args.tls_ca else {
        return Ok(None);
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(key)?,
        )?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    ))))
}

/// What one connection measured.
struct ConnectionStats {
    acked_messages: u64,
    errors: u64,
    lost: u64,
    latency: Histogram<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    if let Some(count) = args.burst {
        return time_bursts(&args, count).await;
    }
    let mut idle = Vec::with_capacity(args.idle);
    if args.idle > 0 {
        let rss_before = args.agent_pid.map(agent_rss_kib).transpose()?;
        for _ in 0..args.idle {
            idle.push(open_idle(args.addr).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let (Some(before), Some(after)) =
            (rss_before, args.agent_pid.map(agent_rss_kib).transpose()?)
        {
            println!(
                "spoa-bench: {} idle connections: agent RSS {:.1} MiB -> {:.1} MiB ({:.1} KiB per connection)",
                args.idle,
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                after.saturating_sub(before) as f64 / args.idle as f64
            );
        }
    }
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let measure_until = measure_from + args.duration;
    let spinners: Vec<_> = (0..args.spin)
        .map(|id| {
            tokio::spawn(spin_connection(
                args.addr,
                args.spin_message.clone(),
                1000 + id as u64,
                measure_until,
            ))
        })
        .collect();
    let prober = (args.healthchecks_per_sec > 0).then(|| {
        tokio::spawn(probe_healthchecks(
            args.addr,
            args.healthchecks_per_sec,
            measure_from,
            measure_until,
        ))
    });
    let tls = tls_connector(&args)?;
    let mut tasks = Vec::new();
    let (pipeline, messages) = (args.pipeline, args.messages);
    for id in 0..args.connections {
        let target = match &args.unix {
            Some(path) => Target::Unix(path.clone()),
            None => Target::Tcp(args.addr),
        };
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let stream = open(target, tls).await?;
            drive_connection(
                stream,
                id as u64,
                pipeline,
                messages,
                measure_from,
                measure_until,
            )
            .await
        }));
    }
    // CPU and memory are sampled at the edges of the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = args.agent_pid.map(agent_cpu_seconds).transpose()?;
    tokio::time::sleep_until(measure_until.into()).await;
    let cpu_after = args.agent_pid.map(agent_cpu_seconds).transpose()?;
    let rss_under_load = args.agent_pid.map(agent_rss_kib).transpose()?;

    let mut total = ConnectionStats {
        acked_messages: 0,
        errors: 0,
        lost: 0,
        latency: Histogram::new(3)?,
    };
    for task in tasks {
        let stats = task.await.context("connection task")??;
        total.acked_messages += stats.acked_messages;
        total.errors += stats.errors;
        total.lost += stats.lost;
        total.latency.add(&stats.latency)?;
    }
    report(&args, &total, cpu_before.zip(cpu_after), rss_under_load);
    for spinner in spinners {
        let spun = spinner.await.context("spinner task")??;
        if args.spin > 0 && spun == 0 {
            bail!("a --spin connection got no ACK");
        }
    }
    if let Some(prober) = prober {
        let (latency, failed) = prober.await.context("health-check task")??;
        let q = |p: f64| latency.value_at_quantile(p);
        println!(
            "  health checks: {}  failed {}  latency us: p50 {}  p99 {}  max {}",
            latency.len(),
            failed,
            q(0.50),
            q(0.99),
            latency.max()
        );
    }
    drop(idle);
    if total.lost > 0 || total.errors > 0 {
        bail!("{} lost ACKs, {} errors", total.lost, total.errors);
    }
    Ok(())
}

fn report(args: &Args, total: &ConnectionStats, cpu: Option<(f64, f64)>, rss_kib: Option<u64>) {
    let seconds = args.duration.as_secs_f64();
    let rate = total.acked_messages as f64 / seconds;
    let q = |p: f64| total.latency.value_at_quantile(p);
    println!(
        "spoa-bench {}: {} connections x {} pipelined x {} msg/NOTIFY, {:.0} s measured",
        args.label, args.connections, args.pipeline, args.messages, seconds
    );
    println!(
        "  messages {}  ({:.0}/s)  errors {}  lost ACKs {}",
        total.acked_messages, rate, total.errors, total.lost
    );
    println!(
        "  ACK latency us: p50 {}  p99 {}  p999 {}  max {}",
        q(0.50),
        q(0.99),
        q(0.999),
        total.latency.max()
    );
    if let Some((before, after)) = cpu {
        let used = after - before;
        println!(
            "  agent CPU {:.2} s ({:.0}% of one core)  ->  {:.0} messages per agent CPU-second",
            used,
            100.0 * used / seconds,
            total.acked_messages as f64 / used.max(1e-9)
        );
    }
    if let Some(rss) = rss_kib {
        println!("  agent RSS under load: {:.1} MiB", rss as f64 / 1024.0);
    }
}

fn hello() -> Frame {
    Frame::HaproxyHello(KvList::haproxy_hello(16380, "pipelining"))
}

/// `count` NOTIFYs in one write, five times: when the first, median and
/// last ACK of each burst came (HAProxy's `timeout processing` counts per
/// NOTIFY, so an ACK that waits for the rest of its burst is late).
async fn time_bursts(args: &Args, count: usize) -> Result<()> {
    let mut stream = open_idle(args.addr).await?;
    stream.set_nodelay(true)?;
    let mut codec = SpopCodec::new(16 * 1024 * 1024);
    let mut read_buf = BytesMut::new();
    let message = Message {
        name: Bytes::from(args.burst_message.clone()),
        args: vec![Arg {
            name: Bytes::from_static(b"us"),
            value: TypedData::Int64(args.burst_us),
        }],
    };
    println!(
        "spoa-bench: bursts of {count} NOTIFYs of `{}` (us={}) {}",
        args.burst_message, args.burst_us, args.label
    );
    let mut next_frame_id = 1u64;
    for round in 1..=5 {
        let mut out = BytesMut::new();
        for _ in 0..count {
            let notify = Frame::Notify(Notify {
                stream_id: 1,
                frame_id: next_frame_id,
                messages: vec![message.clone()],
            });
            encode_frame(&notify, &mut out)?;
            next_frame_id += 1;
        }
        let sent = Instant::now();
        stream.write_all(&out).await?;
        let mut arrivals = Vec::with_capacity(count);
        while arrivals.len() < count {
            let frames = read_frames(&mut stream, &mut codec, &mut read_buf).await?;
            let now = sent.elapsed();
            for frame in frames {
                let Frame::Ack(_) = frame else {
                    bail!("unexpected frame from the agent: {frame:?}");
                };
                arrivals.push(now);
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  burst {round}: first ACK {:.1} ms  median {:.1} ms  last {:.1} ms",
            ms(arrivals[0]),
            ms(arrivals[count / 2]),
            ms(arrivals[count - 1])
        );
    }
    Ok(())
}

/// A connection that completed HELLO and then says nothing.
async fn open_idle(addr: SocketAddr) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.context("connecting")?;
    let mut out = BytesMut::new();
    encode_frame(&hello(), &mut out)?;
    stream.write_all(&out).await?;
    let mut codec = SpopCodec::new(16 * 1024 * 1024);
    let mut buf = BytesMut::new();
    match next_frame(&mut stream, &mut codec, &mut buf).await? {
        Frame::AgentHello(_) => Ok(stream),
        other => bail!("expected AGENT-HELLO, got {other:?}"),
    }
}

fn check_client_ip(i: u64) -> Message {
    Message {
        name: Bytes::from_static(b"check-client-ip"),
        args: vec![Arg {
            name: Bytes::from_static(b"ip"),
            value: TypedData::Ipv4(Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0xffff))),
        }],
    }
}

/// Where a measured connection goes.
enum Target {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

/// A connection to the agent: a Unix socket, or TCP (with TLS when given).
async fn open(target: Target, tls: Option<tokio_rustls::TlsConnector>) -> Result<Box<dyn Io>> {
    let addr = match target {
        Target::Tcp(addr) => addr,
        Target::Unix(path) => {
            let unix = tokio::net::UnixStream::connect(&path)
                .await
                .with_context(|| format!("connecting to {}", path.display()))?;
            return Ok(Box::new(unix));
        }
    };
    let tcp = TcpStream::connect(addr).await.context("connecting")?;
    tcp.set_nodelay(true)?;
    Ok(match tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake")?,
            )
        }
        None => Box::new(tcp),
    })
}

async fn drive_connection(
    mut stream: Box<dyn Io>,
    stream_id: u64,
    pipeline: usize,
    messages: usize,
    measure_from: Instant,
    measure_until: Instant,
) -> Result<ConnectionStats> {
    let mut codec = SpopCodec::new(16 * 1024 * 1024);
    let mut read_buf = BytesMut::with_capacity(64 * 1024);
    let mut write_buf = BytesMut::with_capacity(64 * 1024);

    encode_frame(&hello(), &mut write_buf)?;
    stream.write_all(&write_buf).await?;
    write_buf.clear();
    match next_frame(&mut stream, &mut codec, &mut read_buf).await? {
        Frame::AgentHello(_) => {}
        other => bail!("expected AGENT-HELLO, got {other:?}"),
    }

    let mut stats = ConnectionStats {
        acked_messages: 0,
        errors: 0,
        lost: 0,
        latency: Histogram::new(3)?,
    };
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(pipeline * 2);
    let mut next_frame_id = 1u64;
    let drain_until = measure_until + Duration::from_secs(3);
    loop {
        let now = Instant::now();
        let sending = now < measure_until;
        if sending {
            while in_flight.len() < pipeline {
                let notify = Frame::Notify(Notify {
                    stream_id,
                    frame_id: next_frame_id,
                    messages: (0..messages)
                        .map(|i| check_client_ip(next_frame_id + i as u64))
                        .collect(),
                });
                encode_frame(&notify, &mut write_buf)?;
                in_flight.insert(next_frame_id, now);
                next_frame_id += 1;
            }
            stream.write_all(&write_buf).await?;
            write_buf.clear();
        } else if in_flight.is_empty() || now >= drain_until {
            break;
        }
        let read = tokio::time::timeout(
            Duration::from_millis(500),
            read_frames(&mut stream, &mut codec, &mut read_buf),
        )
        .await;
        let frames = match read {
            Ok(frames) => frames?,
            Err(_) => continue,
        };
        let now = Instant::now();
        for frame in frames {
            let Frame::Ack(ack) = frame else {
                bail!("unexpected frame from the agent: {frame:?}");
            };
            let Some(sent_at) = in_flight.remove(&ack.frame_id) else {
                if stats.errors < 3 {
                    eprintln!("spoa-bench: ACK for unknown frame {}", ack.frame_id);
                }
                stats.errors += 1;
                continue;
            };
            let scored = ack
                .actions
                .iter()
                .filter(|a| matches!(a, Action::SetVar { name, .. } if &name[..] == b"ip_score"))
                .count();
            if scored != messages {
                if stats.errors < 3 {
                    eprintln!(
                        "spoa-bench: ACK {} without a score: {:?}",
                        ack.frame_id, ack.actions
                    );
                }
                stats.errors += 1;
            }
            if sent_at >= measure_from && sent_at < measure_until {
                stats.acked_messages += messages as u64;
                let micros = (now - sent_at).as_micros() as u64;
                stats.latency.record(micros.max(1))?;
            }
        }
    }
    stats.lost = in_flight.len() as u64;
    Ok(stats)
}

/// Keeps one NOTIFY of `message` in flight until `until`; returns the ACKs.
async fn spin_connection(
    addr: SocketAddr,
    message: String,
    stream_id: u64,
    until: Instant,
) -> Result<u64> {
    let mut stream = TcpStream::connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let mut codec = SpopCodec::new(16 * 1024 * 1024);
    let mut read_buf = BytesMut::new();
    let mut write_buf = BytesMut::new();
    encode_frame(&hello(), &mut write_buf)?;
    stream.write_all(&write_buf).await?;
    next_frame(&mut stream, &mut codec, &mut read_buf).await?;
    let mut acks = 0u64;
    let mut frame_id = 1u64;
    while Instant::now() < until {
        write_buf.clear();
        let notify = Frame::Notify(Notify {
            stream_id,
            frame_id,
            messages: vec![Message {
                name: Bytes::copy_from_slice(message.as_bytes()),
                args: Vec::new(),
            }],
        });
        encode_frame(&notify, &mut write_buf)?;
        stream.write_all(&write_buf).await?;
        match next_frame(&mut stream, &mut codec, &mut read_buf).await? {
            Frame::Ack(_) => acks += 1,
            other => bail!("spinner: expected ACK, got {other:?}"),
        }
        frame_id += 1;
    }
    Ok(acks)
}

/// Health-check HELLOs at `per_sec`, each on a new connection, timed from
/// connect to AGENT-HELLO.
async fn probe_healthchecks(
    addr: SocketAddr,
    per_sec: u32,
    from: Instant,
    until: Instant,
) -> Result<(Histogram<u64>, u64)> {
    let mut latency = Histogram::<u64>::new(3)?;
    let mut failed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec.max(1));
    tokio::time::sleep_until(from.into()).await;
    while Instant::now() < until {
        tick.tick().await;
        let started = Instant::now();
        let probe = async {
            let mut stream = TcpStream::connect(addr).await?;
            let mut out = BytesMut::new();
            let hello = match hello() {
                Frame::HaproxyHello(kv) => {
                    Frame::HaproxyHello(kv.with("healthcheck", TypedData::Bool(true)))
                }
                other => other,
            };
            encode_frame(&hello, &mut out)?;
            stream.write_all(&out).await?;
            let mut codec = SpopCodec::new(16 * 1024 * 1024);
            let mut buf = BytesMut::new();
            match next_frame(&mut stream, &mut codec, &mut buf).await? {
                Frame::AgentHello(_) => Ok(()),
                other => bail!("health check: expected AGENT-HELLO, got {other:?}"),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(())) => latency.record((started.elapsed().as_micros() as u64).max(1))?,
            _ => failed += 1,
        }
    }
    Ok((latency, failed))
}

async fn read_frames(
    stream: &mut (impl tokio::io::AsyncRead + Unpin + ?Sized),
    codec: &mut SpopCodec,
    buf: &mut BytesMut,
) -> Result<Vec<Frame>> {
    if stream.read_buf(buf).await? == 0 {
        bail!("the agent closed the connection");
    }
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

async fn next_frame(
    stream: &mut (impl tokio::io::AsyncRead + Unpin + ?Sized),
    codec: &mut SpopCodec,
    buf: &mut BytesMut,
) -> Result<Frame> {
    loop {
        if let Some(frame) = codec.decode(buf)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the agent closed the connection");
        }
    }
}

/// utime + stime of a process, in seconds.
fn agent_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces: fields count from after ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set size of a process, in KiB.
pub fn agent_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS not found")
}
