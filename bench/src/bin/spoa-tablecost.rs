//! `spoa-tablecost`: what an IP table costs the agent, without the network:
//! load time, resident bytes per network, and the native cost of a lookup,
//! for lists of several sizes; beside the same list in a `prefix-trie`
//! `PrefixMap`, the trie we measured the sorted-boundary table against.
//! `--write-list PATH -n N` writes the list the benchmarks use instead.

use std::hint::black_box;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ipnet::{IpNet, Ipv4Net};

#[derive(Debug, Parser)]
#[command(
    name = "spoa-tablecost",
    about = "Load time, memory and lookup cost of IP tables"
)]
struct Args {
    /// List sizes to measure.
    #[arg(
        short = 'n',
        long = "networks",
        value_delimiter = ',',
        default_value = "2,10000,100000,1000000"
    )]
    networks: Vec<usize>,
    /// Write a list of the first size to this file and exit.
    #[arg(long)]
    write_list: Option<PathBuf>,
    /// Also measure prefix-trie's PrefixMap on the same networks.
    #[arg(long)]
    compare_trie: bool,
}

/// Random IPv4 networks, /16 to /32, first octet 1 to 126 (192.0.2.0/24 and
/// 198.51.100.0/24 are never listed), from a fixed seed.
fn networks(count: usize) -> Vec<Ipv4Net> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let prefix = 16 + (state % 17) as u8;
            let first = 1 + ((state >> 8) % 126) as u32;
            let address = (first << 24) | ((state >> 20) as u32 & 0x00ff_ffff);
            Ipv4Net::new(Ipv4Addr::from(address), prefix)
                .map(|net| net.trunc())
                .unwrap_or_default()
        })
        .collect()
}

fn list_text(nets: &[Ipv4Net]) -> String {
    let mut text = String::with_capacity(nets.len() * 18 + 32);
    for net in nets {
        text.push_str(&net.to_string());
        text.push('\n');
    }
    text.push_str("192.0.2.0/24 test-net\n");
    text
}

/// Resident bytes of this process (/proc/self/statm).
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Addresses to look up: a quarter listed (network starts), the rest random.
fn probes(nets: &[Ipv4Net]) -> Vec<IpAddr> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..1 << 16)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 4 == 0 && !nets.is_empty() {
                IpAddr::V4(nets[state as usize % nets.len()].network())
            } else {
                IpAddr::V4(Ipv4Addr::from((state >> 16) as u32))
            }
        })
        .collect()
}

fn ns_per(started: Instant, count: usize) -> f64 {
    started.elapsed().as_nanos() as f64 / count as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.write_list {
        let count = args.networks.first().copied().unwrap_or(1_000_000);
        let mut file =
            std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
        file.write_all(list_text(&networks(count)).as_bytes())?;
        return Ok(());
    }
    println!("spoa-tablecost: random IPv4 networks /16-/32 (first octet 1-126), one thread");
    for &count in &args.networks {
        let nets = networks(count);
        let text = list_text(&nets);
        let probes = probes(&nets);
        let before = resident();
        let started = Instant::now();
        let table = spoa_host::tables::parse_list(&text).table;
        let load = started.elapsed();
        let grown = resident().saturating_sub(before);
        let entries = table.len().max(1);
        let trie = args.compare_trie.then(|| {
            let before = resident();
            let started = Instant::now();
            let mut trie = prefix_trie::PrefixMap::<Ipv4Net, u32>::new();
            for (line, raw) in text.lines().enumerate() {
                let network = raw.split_whitespace().next().unwrap_or_default();
                if let Some(IpNet::V4(net)) = spoa_host::tables::parse_network(network) {
                    trie.insert(net, line as u32);
                }
            }
            (trie, started.elapsed(), resident().saturating_sub(before))
        });
        // Alternating rounds, medians: this VM's neighbours move single runs
        // by 2x.
        let (mut contains, mut lookup, mut trie_lookup) = (Vec::new(), Vec::new(), Vec::new());
        let mut found = 0usize;
        for _ in 0..15 {
            let started = Instant::now();
            for &ip in &probes {
                found += usize::from(black_box(table.contains(black_box(ip))));
            }
            contains.push(ns_per(started, probes.len()));
            let started = Instant::now();
            for &ip in &probes {
                black_box(table.lookup(black_box(ip)));
            }
            lookup.push(ns_per(started, probes.len()));
            if let Some((trie, _, _)) = &trie {
                let started = Instant::now();
                for ip in &probes {
                    let IpAddr::V4(v4) = ip else { continue };
                    let host = Ipv4Net::new(*v4, 32).unwrap_or_default();
                    black_box(trie.get_lpm(black_box(&host)));
                }
                trie_lookup.push(ns_per(started, probes.len()));
            }
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or_default()
        };
        println!(
            "  sorted boundaries, {count:>8} lines, {entries:>7} networks: load {:>6.1} ms, {:>5.1} bytes/network held ({:.1} MiB; RSS +{:.1} MiB), contains {:>5.1} ns, lookup {:>5.1} ns ({:.0}% found)",
            load.as_secs_f64() * 1e3,
            table.heap_bytes() as f64 / entries as f64,
            table.heap_bytes() as f64 / 1048576.0,
            grown as f64 / 1048576.0,
            median(&mut contains),
            median(&mut lookup),
            found as f64 * 100.0 / (probes.len() * 15) as f64,
        );
        if let Some((_, load, grown)) = trie {
            println!(
                "  prefix-trie,       {count:>8} lines, {entries:>7} networks: load {:>6.1} ms, RSS +{:.1} MiB ({:.1} bytes/network), get_lpm {:>5.1} ns",
                load.as_secs_f64() * 1e3,
                grown as f64 / 1048576.0,
                grown as f64 / entries as f64,
                median(&mut trie_lookup),
            );
        }
    }
    Ok(())
}
