//! What the operator grants guests — configuration values and a read-only
//! data directory — read from the command line and files, and fingerprinted
//! so a reload can tell whether anything changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::module::GuestSettings;
use super::state::GuestConfig;
use crate::kv::BucketGrants;
use crate::spop;
use crate::tables::TableGrants;

/// Most files of the data directory looked at for its fingerprint.
const MAX_FINGERPRINT_ENTRIES: usize = 10_000;

/// Where a guest's grants come from.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantSources {
    /// `--guest-config KEY=VALUE`, in order; they override the file.
    pub config_pairs: Vec<(String, String)>,
    /// `--guest-config-file`: `KEY=VALUE` lines, `#` comments.
    pub config_file: Option<PathBuf>,
    /// `--guest-data`.
    pub data_dir: Option<PathBuf>,
    /// `--smoke-message` (and its arguments).
    pub smoke_message: spop::Message,
    /// `--kv-bucket`: the buckets the guest may open.
    pub kv_buckets: BucketGrants,
    /// `--ip-table`: the IP tables the guest may open.
    pub ip_tables: TableGrants,
    /// `--guest-metric`: the counter names the guest may increment.
    pub counters: Vec<String>,
}

impl GrantSources {
    /// Reads the configuration file (if any) and builds the settings a load
    /// gets.
    pub fn read(&self) -> Result<GuestSettings, String> {
        let mut config = GuestConfig::new();
        if let Some(path) = &self.config_file {
            let text = std::fs::read_to_string(path).map_err(|err| {
                format!("reading the guest configuration {}: {err}", path.display())
            })?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = parse_pair(line)
                    .map_err(|err| format!("{}:{}: {err}", path.display(), number + 1))?;
                config.insert(key, value);
            }
        }
        for (key, value) in &self.config_pairs {
            config.insert(key.clone(), value.clone());
        }
        if let Some(dir) = &self.data_dir
            && !dir.is_dir()
        {
            return Err(format!("--guest-data {} is not a directory", dir.display()));
        }
        Ok(GuestSettings {
            config: Arc::new(config),
            data_dir: self.data_dir.clone(),
            smoke_message: self.smoke_message.clone(),
            kv_grants: Arc::new(self.kv_buckets.clone()),
            ip_table_grants: self.ip_tables.clone(),
            ip_tables: Default::default(),
            counter_grants: super::counters::CounterGrants::from_names(&self.counters)
                .map_err(|err| format!("guest metrics: {err}"))?,
            counters: Default::default(),
        })
    }
}

/// Parses `KEY=VALUE` (whitespace around both trimmed; the key non-empty).
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("`{text}` has an empty key"));
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

impl GuestSettings {
    /// A hash of everything granted: the configuration, and the names, sizes
    /// and modification times of the files under the data directory.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for (key, value) in self.config.iter() {
            hasher.update(key.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        hasher.update(self.kv_grants.describe().as_bytes());
        hasher.update([0]);
        hasher.update(self.ip_table_grants.describe().as_bytes());
        hasher.update([0]);
        hasher.update(self.counter_grants.describe().as_bytes());
        hasher.update([0]);
        if let Some(dir) = &self.data_dir {
            let mut seen = 0;
            hash_tree(dir, &mut hasher, &mut seen);
        }
        hex::encode(hasher.finalize())
    }
}

fn hash_tree(dir: &Path, hasher: &mut Sha256, seen: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        *seen += 1;
        if *seen > MAX_FINGERPRINT_ENTRIES {
            return;
        }
        let Ok(meta) = entry.metadata() else { continue };
        hasher.update(entry.path().as_os_str().as_encoded_bytes());
        hasher.update(meta.len().to_le_bytes());
        if let Ok(modified) = meta.modified()
            && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
        {
            hasher.update(since.as_nanos().to_le_bytes());
        }
        if meta.is_dir() {
            hash_tree(&entry.path(), hasher, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_pair(" threshold = 30 "),
            Ok(("threshold".into(), "30".into()))
        );
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_pair("novalue").is_err());
        assert!(parse_pair("=x").is_err());
    }
}
