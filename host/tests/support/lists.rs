//! Block lists at real sizes, generated (none is committed).

use std::net::Ipv4Addr;
use std::path::Path;

/// A deterministic list of `count` IPv4 networks, /16 to /32, with first
/// octets 1 to 126 (so 192.0.2.0/24 and 198.51.100.0/24 are never listed),
/// plus `extra` lines. Returns how many distinct networks it wrote.
pub fn write_big_list(path: &Path, count: usize, extra: &str) -> usize {
    use std::io::Write;
    let mut distinct = std::collections::HashSet::with_capacity(count);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("creating"));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let prefix = 16 + (state % 17) as u32;
        let first = 1 + ((state >> 8) % 126) as u32;
        let address = (first << 24) | ((state >> 20) as u32 & 0x00ff_ffff);
        let address = address & !(u32::MAX.checked_shr(prefix).unwrap_or(0));
        distinct.insert((address, prefix));
        writeln!(out, "{}/{prefix}", Ipv4Addr::from(address)).expect("writing");
    }
    out.write_all(extra.as_bytes()).expect("writing");
    out.flush().expect("flushing");
    distinct.len()
}
