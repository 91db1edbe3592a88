//! IP tables the host owns and guests query (`spoa:agent/ip-table`): block
//! lists and MaxMind DB files loaded once per agent, shared by every worker,
//! instance and guest granted them, and swapped whole when their source
//! changes. Knows nothing of wasm or of SPOP: the sandbox exposes tables to
//! guests, the serving command decides where their reloads run.

mod list;
mod mmdb;
mod prefix;
mod redis_feed;
mod registry;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

pub use list::{ListBuilder, ParsedList, parse as parse_list, parse_network};
pub use mmdb::{FieldValue, FieldsHit, MAX_FIELDS, MmdbTable};
pub use prefix::{PrefixHit, PrefixTable, unmapped};
pub use registry::{GrantedTables, IpTables, LiveTable, TableFailure, TableStats};

/// Where a table's networks come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableSource {
    /// A file: a MaxMind DB (recognised by its content) or a text list.
    File(PathBuf),
    /// The members of a Redis set (`redis-set:KEY`), on the agent's
    /// `--kv redis://…` server, each a network with an optional label.
    RedisSet(String),
}

impl TableSource {
    /// `redis-set:KEY`, else a path.
    pub fn parse(text: &str) -> Result<TableSource, String> {
        if let Some(key) = text.strip_prefix("redis-set:") {
            if key.is_empty() {
                return Err("`redis-set:` needs a key".into());
            }
            return Ok(TableSource::RedisSet(key.to_owned()));
        }
        if text.is_empty() {
            return Err("an IP table needs a path".into());
        }
        Ok(TableSource::File(PathBuf::from(text)))
    }
}

impl fmt::Display for TableSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableSource::File(path) => write!(f, "{}", path.display()),
            TableSource::RedisSet(key) => write!(f, "redis-set:{key}"),
        }
    }
}

/// The tables an operator granted one guest: the name it opens each by,
/// and its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableGrants(BTreeMap<String, TableSource>);

impl TableGrants {
    pub fn new() -> TableGrants {
        TableGrants::default()
    }

    /// Grants `name` (validated as a table name); granting a name again
    /// replaces its source, as a later flag overrides an earlier one.
    pub fn grant(&mut self, name: &str, source: TableSource) -> Result<(), String> {
        check_table_name(name)?;
        self.0.insert(name.to_owned(), source);
        Ok(())
    }

    /// From `--ip-table NAME=PATH` pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TableGrants, String> {
        let mut grants = TableGrants::new();
        for (name, source) in pairs {
            grants.grant(name, TableSource::parse(source)?)?;
        }
        Ok(grants)
    }

    /// Relative file paths resolved against `base` (a configuration file's
    /// directory).
    pub fn relative_to(self, base: &std::path::Path) -> TableGrants {
        TableGrants(
            self.0
                .into_iter()
                .map(|(name, source)| match source {
                    TableSource::File(path) => (name, TableSource::File(base.join(path))),
                    other => (name, other),
                })
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &TableSource)> {
        self.0.iter().map(|(name, source)| (name.as_str(), source))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable text of the grants, for the reload fingerprint.
    pub fn describe(&self) -> String {
        self.iter()
            .map(|(name, source)| format!("{name}={source}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `NAME=PATH` for `--ip-table`.
pub fn parse_grant(text: &str) -> Result<(String, String), String> {
    let (name, source) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=PATH"))?;
    check_table_name(name)?;
    TableSource::parse(source)?;
    Ok((name.to_owned(), source.to_owned()))
}

/// 1 to 64 of `A-Z a-z 0-9 _ - .`, as bucket names.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a table name (1 to 64 of A-Z a-z 0-9 _ - .)"
        ))
    }
}

/// One loaded version of a table.
#[derive(Debug)]
pub enum Table {
    List(PrefixTable),
    Mmdb(MmdbTable),
}

/// The most specific network holding an address, and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'t> {
    pub network: IpNet,
    pub label: Option<&'t str>,
}

impl Table {
    pub fn empty() -> Table {
        Table::List(list::parse("").table)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        match self {
            Table::List(list) => list.contains(address),
            Table::Mmdb(db) => db.contains(address),
        }
    }

    pub fn lookup(&self, address: IpAddr) -> Option<Hit<'_>> {
        match self {
            Table::List(list) => list.lookup(address).map(|hit| Hit {
                network: hit.network,
                label: hit.label,
            }),
            Table::Mmdb(db) => db.network(address).map(|network| Hit {
                network,
                label: None,
            }),
        }
    }

    /// For a list, the one field is `label`.
    pub fn lookup_fields(&self, address: IpAddr, paths: &[String]) -> Option<FieldsHit> {
        match self {
            Table::List(list) => {
                let hit = list.lookup(address)?;
                let values = paths
                    .iter()
                    .enumerate()
                    .map(|(index, path)| match (path.as_str(), hit.label) {
                        ("label", Some(label)) if index < MAX_FIELDS => {
                            Some(FieldValue::Text(label.to_owned()))
                        }
                        _ => None,
                    })
                    .collect();
                Some(FieldsHit {
                    network: hit.network,
                    values,
                })
            }
            Table::Mmdb(db) => db.lookup_fields(address, paths),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Table::List(list) => list.len(),
            Table::Mmdb(db) => db.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
