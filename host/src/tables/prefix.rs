//! Longest-prefix match over a fixed set of networks, as a sorted array of
//! boundaries: the networks are flattened once, at load, into the ranges
//! where one network is the most specific, so a lookup is one binary search
//! (IPv4 first narrows it by the top 16 bits). Chosen over a trie by
//! measurement (BENCHMARKS.md, "IP tables"): at a million networks it is
//! smaller (≈30 bytes per network) and as fast or faster, and it is built
//! from a sort, with no allocation per network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// No network covers this range.
const NONE: u32 = u32::MAX;

/// An address family's integer form.
pub trait Bits: Copy + Ord + std::fmt::Debug {
    const MAX: Self;
    /// The last address of the network starting at `self` with `prefix` bits.
    fn last(self, prefix: u8) -> Self;
    fn next(self) -> Self;
}

impl Bits for u32 {
    const MAX: u32 = u32::MAX;
    fn last(self, prefix: u8) -> u32 {
        self | u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)
    }
    fn next(self) -> u32 {
        self.wrapping_add(1)
    }
}

impl Bits for u128 {
    const MAX: u128 = u128::MAX;
    fn last(self, prefix: u8) -> u128 {
        self | u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)
    }
    fn next(self) -> u128 {
        self.wrapping_add(1)
    }
}

/// One listed network, with the index of its label (`NONE`: no label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<A> {
    pub start: A,
    pub prefix: u8,
    pub label: u32,
}

/// From `start` up to the next boundary's start, the most specific network
/// is `networks[network]` (`NONE`: a gap). Start and network side by side:
/// the search's last step reads the answer from the cache line it is on.
#[derive(Debug, Clone, Copy)]
struct Bound<A> {
    start: A,
    network: u32,
}

/// The networks of one family, flattened.
#[derive(Debug)]
pub struct Family<A> {
    bounds: Vec<Bound<A>>,
    networks: Vec<Entry<A>>,
}

impl<A: Bits> Family<A> {
    /// Flattens `networks` (host bits already cleared). A network listed
    /// twice keeps its first label; returns the family and how many
    /// duplicates were dropped.
    pub fn build(mut networks: Vec<Entry<A>>) -> (Family<A>, usize) {
        // Stable: among equal networks the first listed comes first.
        networks.sort_by_key(|entry| (entry.start, entry.prefix));
        let before = networks.len();
        networks
            .dedup_by(|later, first| later.start == first.start && later.prefix == first.prefix);
        let duplicates = before - networks.len();
        networks.shrink_to_fit();

        let mut family = Family {
            bounds: Vec::with_capacity(networks.len() * 2 + 1),
            networks: Vec::new(),
        };
        // The networks holding the current position, innermost last, with
        // their last address. Networks nest or are disjoint, and a
        // containing network sorts before those it contains.
        let mut open: Vec<(u32, A)> = Vec::new();
        for (index, entry) in networks.iter().enumerate() {
            while let Some(&(_, last)) = open.last() {
                if last >= entry.start {
                    break;
                }
                open.pop();
                family.close(last, &open);
            }
            family.mark(entry.start, index as u32);
            open.push((index as u32, entry.start.last(entry.prefix)));
        }
        while let Some((_, last)) = open.pop() {
            family.close(last, &open);
        }
        family.bounds.shrink_to_fit();
        family.networks = networks;
        (family, duplicates)
    }

    /// After `last`, the enclosing network (if any) covers again.
    fn close(&mut self, last: A, open: &[(u32, A)]) {
        if last != A::MAX {
            self.mark(last.next(), open.last().map_or(NONE, |&(index, _)| index));
        }
    }

    fn mark(&mut self, start: A, network: u32) {
        match self.bounds.last_mut() {
            // A network ends right where the next begins: the later wins.
            Some(last) if last.start == start => last.network = network,
            Some(last) if last.network == network => {}
            _ => self.bounds.push(Bound { start, network }),
        }
    }

    /// The index of the most specific network holding `address`, searching
    /// the bounds within `lo..hi`.
    fn index_in(&self, address: A, lo: usize, hi: usize) -> Option<u32> {
        let bounds = self.bounds.get(lo..hi)?;
        let offset = bounds.partition_point(|bound| bound.start <= address);
        let network = self.bounds.get((lo + offset).checked_sub(1)?)?.network;
        (network != NONE).then_some(network)
    }

    fn find_in(&self, address: A, lo: usize, hi: usize) -> Option<&Entry<A>> {
        self.networks.get(self.index_in(address, lo, hi)? as usize)
    }

    pub fn find(&self, address: A) -> Option<&Entry<A>> {
        self.find_in(address, 0, self.bounds.len())
    }

    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// Bytes held by the arrays.
    pub fn heap_bytes(&self) -> usize {
        self.bounds.capacity() * size_of::<Bound<A>>()
            + self.networks.capacity() * size_of::<Entry<A>>()
    }
}

/// IPv4 and IPv6 networks with labels: a block list, an allow list.
#[derive(Debug)]
pub struct PrefixTable {
    v4: Family<u32>,
    /// For each top-16-bit block of IPv4, the first boundary at or after its
    /// start: a lookup searches only the boundaries of its own block (plus
    /// the one before, which may cover its start).
    v4_blocks: Vec<u32>,
    v6: Family<u128>,
    labels: Vec<Box<str>>,
}

/// The most specific network holding an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixHit<'t> {
    pub network: IpNet,
    pub label: Option<&'t str>,
}

impl PrefixTable {
    /// `labels` are indexed by the entries' `label`.
    pub fn new(
        v4: Vec<Entry<u32>>,
        v6: Vec<Entry<u128>>,
        labels: Vec<Box<str>>,
    ) -> (PrefixTable, usize) {
        let (v4, v4_duplicates) = Family::build(v4);
        let (v6, v6_duplicates) = Family::build(v6);
        let bounds = &v4.bounds;
        let mut v4_blocks = Vec::with_capacity((1 << 16) + 1);
        let mut cursor = 0usize;
        for block in 0..=(1u32 << 16) {
            let block_start = u64::from(block) << 16;
            while cursor < bounds.len() && u64::from(bounds[cursor].start) < block_start {
                cursor += 1;
            }
            v4_blocks.push(cursor as u32);
        }
        let table = PrefixTable {
            v4,
            v4_blocks,
            v6,
            labels,
        };
        (table, v4_duplicates + v6_duplicates)
    }

    /// The search range of an IPv4 address: its top-16-bit block's bounds,
    /// and the one before, which may cover the block's first address.
    fn v4_range(&self, bits: u32) -> (usize, usize) {
        let block = (bits >> 16) as usize;
        let lo = self.v4_blocks.get(block).map_or(0, |&lo| lo as usize);
        let hi = self.v4_blocks.get(block + 1).map_or(lo, |&hi| hi as usize);
        (lo.saturating_sub(1), hi)
    }

    /// Whether a network holds `address`: the search alone, no network read.
    pub fn contains(&self, address: IpAddr) -> bool {
        match unmapped(address) {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let (lo, hi) = self.v4_range(bits);
                self.v4.index_in(bits, lo, hi).is_some()
            }
            IpAddr::V6(v6) => self
                .v6
                .index_in(u128::from(v6), 0, self.v6.bounds.len())
                .is_some(),
        }
    }

    pub fn lookup(&self, address: IpAddr) -> Option<PrefixHit<'_>> {
        match unmapped(address) {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let (lo, hi) = self.v4_range(bits);
                let entry = self.v4.find_in(bits, lo, hi)?;
                let network = Ipv4Net::new(Ipv4Addr::from(entry.start), entry.prefix).ok()?;
                Some(self.hit(IpNet::V4(network), entry.label))
            }
            IpAddr::V6(v6) => {
                let entry = self.v6.find(u128::from(v6))?;
                let network = Ipv6Net::new(Ipv6Addr::from(entry.start), entry.prefix).ok()?;
                Some(self.hit(IpNet::V6(network), entry.label))
            }
        }
    }

    fn hit(&self, network: IpNet, label: u32) -> PrefixHit<'_> {
        PrefixHit {
            network,
            label: self.labels.get(label as usize).map(|label| &**label),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the table.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.v4_blocks.capacity() * size_of::<u32>()
            + self.v6.heap_bytes()
            + self
                .labels
                .iter()
                .map(|label| label.len() + 16)
                .sum::<usize>()
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(start: u32, prefix: u8, label: u32) -> Entry<u32> {
        Entry {
            start: start & !u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0),
            prefix,
            label,
        }
    }

    fn table(entries: Vec<Entry<u32>>) -> PrefixTable {
        let labels = (0..entries.len()).map(|i| i.to_string().into()).collect();
        PrefixTable::new(entries, Vec::new(), labels).0
    }

    fn find(table: &PrefixTable, address: u32) -> Option<(u32, u8)> {
        table
            .lookup(IpAddr::V4(Ipv4Addr::from(address)))
            .map(|hit| match hit.network {
                IpNet::V4(net) => (u32::from(net.network()), net.prefix_len()),
                IpNet::V6(_) => unreachable!("an IPv4 lookup matched an IPv6 network"),
            })
    }

    /// The most specific network by scanning every one.
    fn brute_force(entries: &[Entry<u32>], address: u32) -> Option<(u32, u8)> {
        entries
            .iter()
            .filter(|e| e.start <= address && address <= e.start.last(e.prefix))
            .max_by_key(|e| e.prefix)
            .map(|e| (e.start, e.prefix))
    }

    #[test]
    fn the_most_specific_network_wins_and_gaps_match_nothing() {
        let t = table(vec![
            v4(0x0a00_0000, 8, 0),
            v4(0x0a01_0000, 16, 1),
            v4(0x0a01_0100, 24, 2),
        ]);
        assert_eq!(find(&t, 0x0a01_0105), Some((0x0a01_0100, 24)));
        assert_eq!(find(&t, 0x0a01_0205), Some((0x0a01_0000, 16)));
        assert_eq!(find(&t, 0x0a02_0000), Some((0x0a00_0000, 8)));
        assert_eq!(find(&t, 0x0b00_0000), None);
        assert_eq!(find(&t, 0x09ff_ffff), None);
    }

    #[test]
    fn the_whole_space_and_its_last_address() {
        let t = table(vec![v4(0, 0, 0), v4(u32::MAX, 32, 1)]);
        assert_eq!(find(&t, 0), Some((0, 0)));
        assert_eq!(find(&t, u32::MAX), Some((u32::MAX, 32)));
        assert_eq!(find(&t, u32::MAX - 1), Some((0, 0)));
    }

    #[test]
    fn mapped_addresses_match_ipv4_networks() {
        let t = table(vec![v4(0xc000_0200, 24, 0)]);
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert!(t.lookup(mapped).is_some());
        let other: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(t.lookup(other).is_none());
    }

    #[test]
    fn a_duplicate_keeps_its_first_label() {
        let (t, duplicates) = PrefixTable::new(
            vec![v4(0x0a00_0000, 8, 0), v4(0x0a00_0000, 8, 1)],
            Vec::new(),
            vec!["first".into(), "second".into()],
        );
        assert_eq!(duplicates, 1);
        let hit = t.lookup("10.1.1.1".parse().unwrap()).unwrap();
        assert_eq!(hit.label, Some("first"));
    }

    proptest! {
        /// Any set of networks, any address: the same answer as a scan.
        #[test]
        fn agrees_with_a_linear_scan(
            raw in prop::collection::vec((any::<u32>(), 0u8..=32), 0..60),
            probes in prop::collection::vec(any::<u32>(), 1..60),
        ) {
            // Cluster the networks so that they nest and touch often.
            let entries: Vec<_> = raw
                .iter()
                .enumerate()
                .map(|(i, &(start, prefix))| v4(start & 0xff0f_f0ff, prefix, i as u32))
                .collect();
            let t = table(entries.clone());
            let mut probes = probes;
            for e in &entries {
                probes.push(e.start);
                probes.push(e.start.last(e.prefix));
                probes.push(e.start.last(e.prefix).wrapping_add(1));
                probes.push(e.start.wrapping_sub(1));
            }
            for address in probes {
                prop_assert_eq!(find(&t, address), brute_force(&entries, address), "address {:#x}", address);
            }
        }
    }
}
