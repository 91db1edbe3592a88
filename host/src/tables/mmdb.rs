//! MaxMind DB tables (`.mmdb`: GeoLite2, GeoIP2, DB-IP, IPinfo…), read with
//! the `maxminddb` crate from a copy held in memory. A guest asks for the
//! fields it wants by path (`country.iso_code`, `autonomous_system_number`).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use maxminddb::{PathElement, Reader};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::prefix::unmapped;

/// Most fields one lookup may ask for, and the longest path.
pub const MAX_FIELDS: usize = 16;
const MAX_PATH_BYTES: usize = 256;

pub struct MmdbTable {
    reader: Reader<Vec<u8>>,
    networks: usize,
    ipv6: bool,
}

impl fmt::Debug for MmdbTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmdbTable")
            .field("networks", &self.networks)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

/// One value of a record, as the WIT's `field-value`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Boolean(bool),
}

/// A MaxMind DB value decoded as a [`FieldValue`], or `None` for a map or
/// an array (skipped without allocating).
struct Scalar(Option<FieldValue>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MaxMind DB value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(FieldValue::Boolean(v))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(FieldValue::Unsigned(v))))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
                Ok(Scalar(u64::try_from(v).ok().map(FieldValue::Unsigned)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(match u64::try_from(v) {
                    Ok(unsigned) => FieldValue::Unsigned(unsigned),
                    Err(_) => FieldValue::Signed(v),
                })))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(FieldValue::Float(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(FieldValue::Text(v.to_owned()))))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Scalar, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Scalar, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The most specific network of a lookup, with the fields asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldsHit {
    pub network: IpNet,
    pub values: Vec<Option<FieldValue>>,
}

impl MmdbTable {
    /// Opens a database from its bytes and counts its networks.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<MmdbTable, String> {
        let reader = Reader::from_source(bytes).map_err(|err| err.to_string())?;
        let ipv6 = reader.metadata().ip_version == 6;
        let mut networks = 0usize;
        let all = reader
            .networks(Default::default())
            .map_err(|err| err.to_string())?;
        for item in all {
            let item = item.map_err(|err| format!("walking the search tree: {err}"))?;
            if item.has_data() {
                networks += 1;
            }
        }
        Ok(MmdbTable {
            reader,
            networks,
            ipv6,
        })
    }

    /// Whether `bytes` look like a MaxMind DB file (its metadata marker).
    pub fn sniff(bytes: &[u8]) -> bool {
        const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
        let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
        tail.windows(MARKER.len()).any(|window| window == MARKER)
    }

    pub fn len(&self) -> usize {
        self.networks
    }

    pub fn is_empty(&self) -> bool {
        self.networks == 0
    }

    fn result(&self, address: IpAddr) -> Option<maxminddb::LookupResult<'_, Vec<u8>>> {
        let address = unmapped(address);
        // An IPv4-only database holds no IPv6 network.
        if address.is_ipv6() && !self.ipv6 {
            return None;
        }
        let result = self.reader.lookup(address).ok()?;
        result.has_data().then_some(result)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.result(address).is_some()
    }

    /// The matched network alone.
    pub fn network(&self, address: IpAddr) -> Option<IpNet> {
        network_of(&self.result(address)?)
    }

    pub fn lookup_fields(&self, address: IpAddr, paths: &[String]) -> Option<FieldsHit> {
        let result = self.result(address)?;
        let network = network_of(&result)?;
        // One value per path asked for; past the first MAX_FIELDS, and for a
        // path over MAX_PATH_BYTES, it is none (the WIT says so).
        let values = paths
            .iter()
            .enumerate()
            .map(|(index, path)| {
                if index >= MAX_FIELDS || path.len() > MAX_PATH_BYTES {
                    return None;
                }
                let elements = path_elements(path);
                match result.decode_path::<Scalar>(&elements) {
                    Ok(Some(Scalar(value))) => value,
                    _ => None,
                }
            })
            .collect();
        Some(FieldsHit { network, values })
    }
}

fn network_of(result: &maxminddb::LookupResult<'_, Vec<u8>>) -> Option<IpNet> {
    let network = result.network().ok()?;
    IpNet::new(network.network(), network.prefix()).ok()
}

/// `country.iso_code` → keys; `subdivisions.0.iso_code` → a key, an index,
/// a key.
fn path_elements(path: &str) -> Vec<PathElement<'_>> {
    path.split('.')
        .map(|part| match part.parse::<usize>() {
            Ok(index) => PathElement::Index(index),
            Err(_) => PathElement::Key(part),
        })
        .collect()
}
