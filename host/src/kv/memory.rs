//! The in-process store: bounded, sharded, least-recently-used eviction,
//! per-entry expiry.
//!
//! Eviction rule: the store holds at most its limit in bytes, counting each
//! entry as its key, its bucket name and its value plus [`ENTRY_OVERHEAD`].
//! Entries are spread over [`SHARDS`] shards by a hash of bucket and key,
//! each holding at most an equal share of the limit. When a write would
//! take its shard over that share, the shard's least recently used entries
//! (last read or written longest ago) are removed until the new entry fits.
//! Expired entries are never returned; they are removed when touched and by
//! a sweep every second, which finds them in an expiry index (a heap by
//! expiry time per shard) instead of scanning every entry: it holds a shard
//! lock only for the entries that did expire, a bounded number at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{CounterStep, KeyPage, KvError, KvStats, MAX_BATCH_KEYS, MAX_COUNTER, parse_counter};

/// Shards of the store: writers on different shards never wait for each other.
pub const SHARDS: usize = 16;
/// Bytes counted per entry on top of its key and value: the map slot, the
/// LRU links, the allocations' headers.
pub const ENTRY_OVERHEAD: usize = 96;
/// How often expired entries are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most expired entries one hold of a shard lock removes: a guest call
/// waiting for the lock waits for at most this many removals.
const SWEEP_BATCH: usize = 1024;

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::hash::RandomState,
    limit: usize,
    shard_limit: usize,
    evictions: AtomicU64,
    expired: AtomicU64,
}

struct Shard {
    entries: LruCache<Arc<str>, Entry>,
    bytes: usize,
    /// When entries expire, soonest first. An item whose entry was removed,
    /// or written again with another expiry, is stale: skipped when it comes
    /// up, and dropped when stale items outnumber the entries.
    expiries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

fn entry_size(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// The map key: the bucket, NUL, the key (bucket names hold no NUL).
fn full_key(bucket: &str, key: &str) -> String {
    let mut full = String::with_capacity(bucket.len() + 1 + key.len());
    full.push_str(bucket);
    full.push('\0');
    full.push_str(key);
    full
}

impl MemoryStore {
    /// A store of at most `limit_bytes` (at least one entry's worth per shard).
    pub fn new(limit_bytes: usize) -> MemoryStore {
        let shard_limit = (limit_bytes / SHARDS).max(ENTRY_OVERHEAD * 2);
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: LruCache::unbounded(),
                        bytes: 0,
                        expiries: BinaryHeap::new(),
                    })
                })
                .collect(),
            hasher: std::hash::RandomState::new(),
            limit: shard_limit * SHARDS,
            shard_limit,
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit
    }

    /// A key's place in a `list-keys` listing: 32 bits of its hash that are
    /// independent of the shard (which takes the low bits).
    fn position(&self, full_key: &str) -> u32 {
        (self.hasher.hash_one(full_key) >> 32) as u32
    }

    fn shard(&self, full_key: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(full_key) as usize % SHARDS;
        // A panic while holding a shard cannot leave it inconsistent in a way
        // that matters more than losing the store: keep serving.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let full = full_key(bucket, key);
        let mut shard = self.shard(&full);
        let now = Instant::now();
        let live = shard.entries.peek(full.as_str())?.is_live(now);
        if !live {
            self.remove(&mut shard, &full, true);
            return None;
        }
        shard
            .entries
            .get(full.as_str())
            .map(|entry| entry.value.clone())
    }

    pub fn set(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let full = full_key(bucket, key);
        let expires = ttl.map(|ttl| Instant::now() + ttl);
        let mut shard = self.shard(&full);
        self.insert(&mut shard, full, Entry { value, expires })
    }

    /// Sets every pair, or none when one cannot fit in the store.
    pub fn set_many(&self, bucket: &str, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        for (key, value) in &pairs {
            self.check_fits(entry_size(&full_key(bucket, key), value))?;
        }
        pairs
            .into_iter()
            .try_for_each(|(key, value)| self.set(bucket, &key, value, None))
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        let full = full_key(bucket, key);
        let mut shard = self.shard(&full);
        self.remove(&mut shard, &full, false);
    }

    pub fn increment(&self, bucket: &str, key: &str, step: CounterStep) -> Result<u64, KvError> {
        let CounterStep { delta, window } = step;
        let full = full_key(bucket, key);
        let mut shard = self.shard(&full);
        let now = Instant::now();
        let (current, expires) = match shard.entries.peek(full.as_str()) {
            Some(entry) if entry.is_live(now) => (parse_counter(&entry.value)?, entry.expires),
            _ => (0, None),
        };
        let next = current
            .checked_add(delta)
            .filter(|&n| n <= MAX_COUNTER)
            .ok_or_else(|| KvError::Invalid(format!("the counter would exceed {MAX_COUNTER}")))?;
        let expires = expires.or_else(|| window.map(|window| now + window));
        let entry = Entry {
            value: next.to_string().into_bytes(),
            expires,
        };
        self.insert(&mut shard, full, entry)?;
        Ok(next)
    }

    pub fn expires_in(&self, bucket: &str, key: &str) -> Option<Duration> {
        let full = full_key(bucket, key);
        let shard = self.shard(&full);
        let now = Instant::now();
        let entry = shard
            .entries
            .peek(full.as_str())
            .filter(|e| e.is_live(now))?;
        entry.expires.map(|at| at - now)
    }

    /// A page of the bucket's keys, in a stable order: by shard, then by 32
    /// bits of the key's hash. The cursor is the position to resume at
    /// (shard in the high 32 bits, hash in the low ones), so a key that
    /// exists throughout a listing is listed exactly once, whatever else is
    /// written, read or removed meanwhile. Keys of one shard sharing those
    /// 32 bits go in the same page (a page may pass the limit by them).
    pub fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> KeyPage {
        let start = cursor.unwrap_or(0);
        let mut index = (start >> 32) as usize;
        let mut from = (start & 0xffff_ffff) as u32;
        let prefix = full_key(bucket, "");
        let now = Instant::now();
        let mut keys = Vec::new();
        while index < SHARDS {
            if keys.len() >= MAX_BATCH_KEYS {
                return KeyPage {
                    keys,
                    cursor: Some((index as u64) << 32),
                };
            }
            let room = MAX_BATCH_KEYS - keys.len();
            let (page, cursor) = {
                let shard = self.shards[index]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut found: Vec<(u32, &str)> = shard
                    .entries
                    .iter()
                    .filter(|(_, entry)| entry.is_live(now))
                    .filter_map(|(full, _)| {
                        let key = full.strip_prefix(&prefix)?;
                        let position = self.position(full);
                        (position >= from).then_some((position, key))
                    })
                    .collect();
                // Only a page's worth is sorted and copied under the lock.
                let mut rest = Vec::new();
                if found.len() > room {
                    found.select_nth_unstable(room);
                    rest = found.split_off(room);
                }
                found.sort_unstable();
                let cursor = match found.last() {
                    // Keys sharing the last position go in this page too.
                    Some(&(last, _)) if !rest.is_empty() => {
                        found.extend(rest.iter().filter(|&&(p, _)| p == last));
                        rest.iter().map(|&(p, _)| p).filter(|&p| p > last).min()
                    }
                    None => rest.iter().map(|&(p, _)| p).min(),
                    Some(_) => None,
                };
                let page: Vec<String> = found.iter().map(|&(_, key)| key.to_owned()).collect();
                (page, cursor)
            };
            keys.extend(page);
            if let Some(position) = cursor {
                return KeyPage {
                    keys,
                    cursor: Some(((index as u64) << 32) | u64::from(position)),
                };
            }
            index += 1;
            from = 0;
        }
        KeyPage { keys, cursor: None }
    }

    /// Removes every expired entry, found through the expiry index.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            // A bounded batch per lock hold, then the lock is released.
            while self.sweep_batch(shard, now) {}
        }
    }

    /// Removes up to [`SWEEP_BATCH`] expired entries of one shard; whether
    /// more may be due.
    fn sweep_batch(&self, shard: &Mutex<Shard>, now: Instant) -> bool {
        let mut shard = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..SWEEP_BATCH {
            let due = matches!(shard.expiries.peek(), Some(Reverse((at, _))) if *at <= now);
            if !due {
                return false;
            }
            let Some(Reverse((at, key))) = shard.expiries.pop() else {
                return false;
            };
            // Stale unless the entry is still there with this very expiry.
            if shard
                .entries
                .peek(&*key)
                .is_some_and(|entry| entry.expires == Some(at))
            {
                self.remove(&mut shard, &key, true);
            }
        }
        true
    }

    pub fn stats(&self) -> KvStats {
        let (mut entries, mut bytes) = (0, 0);
        for shard in self.shards.iter() {
            let shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            entries += shard.entries.len() as u64;
            bytes += shard.bytes as u64;
        }
        KvStats {
            entries,
            bytes,
            limit_bytes: self.limit as u64,
            evictions: self.evictions.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            ..KvStats::default()
        }
    }

    fn check_fits(&self, size: usize) -> Result<(), KvError> {
        if size > self.shard_limit {
            return Err(KvError::Invalid(format!(
                "an entry of {size} bytes does not fit in the store (at most {} per entry; raise --kv-memory)",
                self.shard_limit
            )));
        }
        Ok(())
    }

    fn insert(&self, shard: &mut Shard, full: String, entry: Entry) -> Result<(), KvError> {
        let size = entry_size(&full, &entry.value);
        self.check_fits(size)?;
        let full: Arc<str> = full.into();
        let old_expiry = shard.entries.peek(&*full).and_then(|old| old.expires);
        self.remove(shard, &full, false);
        let now = Instant::now();
        while shard.bytes + size > self.shard_limit {
            let Some((key, old)) = shard.entries.pop_lru() else {
                break;
            };
            shard.bytes -= entry_size(&key, &old.value);
            let counter = if old.is_live(now) {
                &self.evictions
            } else {
                &self.expired
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        shard.bytes += size;
        // A counter incremented within its window keeps its expiry: indexed
        // once, not once per increment.
        let index = entry
            .expires
            .filter(|&at| old_expiry != Some(at))
            .map(|at| Reverse((at, full.clone())));
        shard.entries.put(full, entry);
        if let Some(item) = index {
            shard.expiries.push(item);
            compact_expiries(shard);
        }
        Ok(())
    }

    fn remove(&self, shard: &mut Shard, full: &str, expired: bool) {
        if let Some((key, old)) = shard.entries.pop_entry(full) {
            shard.bytes -= entry_size(&key, &old.value);
            if expired {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Drops the stale items of the expiry index once they outnumber the
/// entries (plus a margin): the index stays within twice the entries, and
/// the rebuild, a pass over the shard, comes once per that many writes.
fn compact_expiries(shard: &mut Shard) {
    if shard.expiries.len() <= 2 * shard.entries.len() + 1024 {
        return;
    }
    let live: Vec<Reverse<(Instant, Arc<str>)>> = shard
        .entries
        .iter()
        .filter_map(|(key, entry)| entry.expires.map(|at| Reverse((at, key.clone()))))
        .collect();
    shard.expiries = BinaryHeap::from(live);
}

/// Sweeps `store` every second from a thread of its own, until the store is
/// dropped.
pub fn spawn_sweeper(store: &Arc<MemoryStore>) {
    let weak = Arc::downgrade(store);
    let spawned = std::thread::Builder::new()
        .name("kv-sweeper".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SWEEP_EVERY);
                let Some(store) = weak.upgrade() else { return };
                store.sweep();
            }
        });
    if let Err(err) = spawned {
        // Expired entries are still never returned, and are removed when
        // touched or evicted; only the memory they hold lingers.
        tracing::warn!("could not start the key-value sweeper thread: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_and_buckets_apart() {
        let store = MemoryStore::new(1 << 20);
        store.set("a", "k", b"1".to_vec(), None).unwrap();
        store.set("b", "k", b"2".to_vec(), None).unwrap();
        assert_eq!(store.get("a", "k"), Some(b"1".to_vec()));
        assert_eq!(store.get("b", "k"), Some(b"2".to_vec()));
        store.delete("a", "k");
        assert_eq!(store.get("a", "k"), None);
        assert_eq!(store.stats().entries, 1);
    }

    #[test]
    fn entries_expire() {
        let store = MemoryStore::new(1 << 20);
        store
            .set("b", "short", b"x".to_vec(), Some(Duration::from_millis(20)))
            .unwrap();
        store.set("b", "long", b"y".to_vec(), None).unwrap();
        assert!(store.expires_in("b", "short").unwrap() <= Duration::from_millis(20));
        assert_eq!(store.expires_in("b", "long"), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(store.get("b", "short"), None);
        assert_eq!(store.get("b", "long"), Some(b"y".to_vec()));
        assert_eq!(store.stats().expired, 1);
    }

    #[test]
    fn counters_count_within_a_fixed_window() {
        let store = MemoryStore::new(1 << 20);
        let window = Some(Duration::from_millis(40));
        assert_eq!(
            store
                .increment("b", "n", CounterStep { delta: 1, window })
                .unwrap(),
            1
        );
        std::thread::sleep(Duration::from_millis(25));
        // A later increment does not move the window.
        assert_eq!(
            store
                .increment("b", "n", CounterStep { delta: 2, window })
                .unwrap(),
            3
        );
        assert_eq!(store.get("b", "n"), Some(b"3".to_vec()));
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(
            store
                .increment("b", "n", CounterStep { delta: 1, window })
                .unwrap(),
            1
        );
        store.set("b", "text", b"abc".to_vec(), None).unwrap();
        assert!(matches!(
            store.increment(
                "b",
                "text",
                CounterStep {
                    delta: 1,
                    window: None
                }
            ),
            Err(KvError::Invalid(_))
        ));
        store
            .set("b", "max", MAX_COUNTER.to_string().into_bytes(), None)
            .unwrap();
        assert!(matches!(
            store.increment(
                "b",
                "max",
                CounterStep {
                    delta: 1,
                    window: None
                }
            ),
            Err(KvError::Invalid(_))
        ));
    }

    #[test]
    fn stays_within_its_limit_by_evicting_the_least_recently_used() {
        let limit = 64 * 1024;
        let store = MemoryStore::new(limit);
        let value = vec![7u8; 200];
        for i in 0..5000 {
            store
                .set("b", &format!("key-{i}"), value.clone(), None)
                .unwrap();
            // Key 0 is read after every write: always the most recently used.
            assert!(store.get("b", "key-0").is_some(), "key-0 evicted at {i}");
        }
        let stats = store.stats();
        assert!(stats.bytes <= limit as u64, "{stats:?}");
        assert!(stats.evictions > 4000, "{stats:?}");
        assert_eq!(store.get("b", "key-1"), None);
        assert!(store.get("b", "key-4999").is_some());
        let too_big = vec![0u8; limit];
        assert!(matches!(
            store.set("b", "big", too_big, None),
            Err(KvError::Invalid(_))
        ));
    }

    #[test]
    fn sweep_removes_expired_entries() {
        let store = MemoryStore::new(1 << 20);
        for i in 0..100 {
            store
                .set("b", &i.to_string(), vec![1], Some(Duration::from_millis(5)))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        store.sweep();
        let stats = store.stats();
        assert_eq!((stats.entries, stats.bytes, stats.expired), (0, 0, 100));
    }

    #[test]
    fn the_sweep_finds_expired_entries_through_the_index_only() {
        let store = MemoryStore::new(1 << 24);
        for i in 0..3000 {
            let ttl = if i % 3 == 0 { 5 } else { 60_000 };
            store
                .set(
                    "b",
                    &i.to_string(),
                    vec![1],
                    Some(Duration::from_millis(ttl)),
                )
                .unwrap();
        }
        // Written again with a longer expiry: its first index item is stale.
        store
            .set("b", "0", vec![2], Some(Duration::from_secs(60)))
            .unwrap();
        // A counter incremented within its window is indexed once (a long
        // window: none of these increments may start a new one).
        for _ in 0..5000 {
            store
                .increment(
                    "b",
                    "counter",
                    CounterStep {
                        delta: 1,
                        window: Some(Duration::from_secs(60)),
                    },
                )
                .unwrap();
        }
        let indexed: usize = store
            .shards
            .iter()
            .map(|s| s.lock().unwrap().expiries.len())
            .sum();
        assert!(indexed <= 3002, "{indexed} index items for 3001 entries");
        std::thread::sleep(Duration::from_millis(10));
        store.sweep();
        let stats = store.stats();
        // 999 short-lived entries expired; "0" was rewritten to live longer.
        assert_eq!(stats.expired, 999);
        assert_eq!(stats.entries, 2002);
        assert_eq!(store.get("b", "0"), Some(vec![2]));
        assert_eq!(store.get("b", "3"), None);
        assert_eq!(store.get("b", "1"), Some(vec![1]));
    }

    #[test]
    fn stale_index_items_are_compacted() {
        let store = MemoryStore::new(1 << 26);
        // 200 rounds over 500 keys, each with a new expiry: 100,000 index
        // items without compaction, far over any shard's bound.
        for round in 0..200u64 {
            for i in 0..500 {
                store
                    .set(
                        "b",
                        &i.to_string(),
                        vec![1],
                        Some(Duration::from_secs(60 + round)),
                    )
                    .unwrap();
            }
        }
        for shard in store.shards.iter() {
            let shard = shard.lock().unwrap();
            assert!(
                shard.expiries.len() <= 2 * shard.entries.len() + 1025,
                "{} index items for {} entries",
                shard.expiries.len(),
                shard.entries.len()
            );
        }
    }

    #[test]
    fn lists_every_key_of_a_bucket_in_pages() {
        let store = MemoryStore::new(16 << 20);
        for i in 0..2500 {
            store.set("b", &format!("k{i}"), vec![], None).unwrap();
        }
        store.set("other", "x", vec![], None).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = store.list_keys("b", cursor);
            assert!(page.keys.len() <= MAX_BATCH_KEYS);
            seen.extend(page.keys);
            pages += 1;
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 2500);
        assert!(pages >= 3);
        assert!(!seen.contains("x"));
    }

    #[test]
    fn a_listing_sees_every_unchanged_key_once_while_others_churn() {
        let store = MemoryStore::new(16 << 20);
        for i in 0..3000 {
            store.set("b", &format!("stable{i}"), vec![], None).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut round = 0;
        loop {
            let page = store.list_keys("b", cursor);
            seen.extend(page.keys.into_iter().filter(|k| k.starts_with("stable")));
            // Between pages: reads reorder the LRU lists, writes add keys.
            for i in 0..500 {
                store.get("b", &format!("stable{}", (i * 7 + round) % 3000));
                store
                    .set("b", &format!("churn{round}-{i}"), vec![], None)
                    .unwrap();
            }
            round += 1;
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (3000, 3000));
    }
}
