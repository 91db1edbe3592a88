//! The shared store's settings, as the flags and the `--config` file give
//! them, and the one place where a flag wins over the file and the file
//! over the default.

/// The in-process store's default size.
pub const DEFAULT_KV_MEMORY: usize = 64 << 20;
/// The default prefix of Redis keys.
pub const DEFAULT_KV_PREFIX: &str = "spoa:";

/// `kv`, `kv-memory` and `kv-prefix`: what one source (the flags, the file)
/// sets; `None` is left to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvSettings {
    pub kv: Option<String>,
    pub kv_memory: Option<usize>,
    pub kv_prefix: Option<String>,
}

impl KvSettings {
    /// The backend these settings name, `file`'s filling what they leave
    /// out, then the defaults.
    pub fn spec(&self, file: &KvSettings) -> Result<crate::kv::KvBackendSpec, String> {
        use crate::kv::KvBackendSpec;
        let kv = self
            .kv
            .as_deref()
            .or(file.kv.as_deref())
            .unwrap_or("memory");
        let limit_bytes = self
            .kv_memory
            .or(file.kv_memory)
            .unwrap_or(DEFAULT_KV_MEMORY);
        let prefix = self
            .kv_prefix
            .as_deref()
            .or(file.kv_prefix.as_deref())
            .unwrap_or(DEFAULT_KV_PREFIX);
        if kv == "memory" {
            return Ok(KvBackendSpec::Memory { limit_bytes });
        }
        if kv.starts_with("redis://")
            || kv.starts_with("rediss://")
            || kv.starts_with("redis+unix://")
        {
            crate::kv::redis::validate_prefix(prefix)?;
            return Ok(KvBackendSpec::Redis {
                url: kv.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Err(format!(
            "--kv `{kv}`: expected `memory` or a redis://HOST:PORT address"
        ))
    }
}
