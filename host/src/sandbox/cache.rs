//! The compiled-module cache: a Python or JavaScript guest is 12–40 MB of
//! wasm and takes seconds to compile, so its machine code is kept on disk,
//! keyed by the module's SHA-256 and the engine's compatibility hash.
//!
//! Loading compiled code is `unsafe` in wasmtime (it is trusted machine
//! code), so the cache only ever loads files it wrote itself: each file ends
//! with an HMAC-SHA256 of its contents under a secret key kept in the cache
//! directory (mode 0600). The directory must belong to the user running the
//! host and be writable by nobody else; otherwise the cache is not used.
//! Files are written to a temporary name and renamed into place, so a reader
//! never sees half a file.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;
const MAC_LEN: usize = 32;

pub struct CompileCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl CompileCache {
    /// Opens (creating if needed) the cache at `dir`. `None`, with a warning,
    /// when the directory is unsafe or unusable: the host then compiles.
    pub fn open(dir: &Path) -> Option<CompileCache> {
        match Self::try_open(dir) {
            Ok(cache) => Some(cache),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), "compiled-module cache not used: {reason}");
                None
            }
        }
    }

    fn try_open(dir: &Path) -> Result<CompileCache, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| format!("creating it: {err}"))?;
        check_private(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = match fs::read(&key_path) {
            Ok(bytes) => {
                check_private(&key_path)?;
                <[u8; KEY_LEN]>::try_from(bytes.as_slice())
                    .map_err(|_| format!("{} is not a {KEY_LEN}-byte key", key_path.display()))?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => new_key(&key_path)?,
            Err(err) => return Err(format!("reading {}: {err}", key_path.display())),
        };
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The entry's file name: the module's hash and the engine's.
    fn entry_name(engine: &Engine, sha256: &str) -> String {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{sha256}-{:016x}.cwasm", hasher.finish())
    }

    fn entry_path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        self.dir.join(Self::entry_name(engine, sha256))
    }

    /// The MAC of an entry covers its name too, so a valid entry renamed to
    /// another module's name is refused.
    fn mac(&self, engine: &Engine, sha256: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(Self::entry_name(engine, sha256).as_bytes());
        mac
    }

    /// The cached compilation of the module with this hash, if the cache
    /// holds one that this host wrote.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.entry_path(engine, sha256);
        let bytes = fs::read(&path).ok()?;
        let Some(split) = bytes.len().checked_sub(MAC_LEN) else {
            tracing::warn!(path = %path.display(), "cache entry too short; ignored");
            return None;
        };
        let (code, tag) = bytes.split_at(split);
        let mut mac = self.mac(engine, sha256);
        mac.update(code);
        if mac.verify_slice(tag).is_err() {
            tracing::warn!(path = %path.display(), "cache entry not written by this host (bad MAC); ignored");
            return None;
        }
        // SAFETY: the bytes carry a valid MAC under this cache's secret key,
        // so they are exactly what `put` wrote from `Component::serialize`
        // of an engine with the same compatibility hash.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => {
                tracing::debug!(path = %path.display(), "compiled module taken from the cache");
                Some(component)
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), "cache entry unusable: {err:#}");
                None
            }
        }
    }

    /// Stores a compilation. Failures are logged, never fatal.
    pub fn put(&self, engine: &Engine, sha256: &str, component: &Component) {
        let path = self.entry_path(engine, sha256);
        if let Err(err) = self.write_entry(engine, sha256, &path, component) {
            tracing::warn!(path = %path.display(), "could not write the compiled-module cache: {err:#}");
        }
    }

    fn write_entry(
        &self,
        engine: &Engine,
        sha256: &str,
        path: &Path,
        component: &Component,
    ) -> anyhow::Result<()> {
        let code = component.serialize()?;
        let mut mac = self.mac(engine, sha256);
        mac.update(&code);
        let tag = mac.finalize().into_bytes();
        let temp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&code)?;
        file.write_all(&tag)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        Ok(())
    }
}

/// Refuses a path another user owns or can write.
fn check_private(path: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|err| format!("{}: {err}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to this user ({me})",
            path.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (chmod go-w)",
            path.display()
        ));
    }
    Ok(())
}

fn new_key(path: &Path) -> Result<[u8; KEY_LEN], String> {
    let mut key = [0u8; KEY_LEN];
    rand::fill(&mut key[..]);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| format!("creating {}: {err}", path.display()))?;
    file.write_all(&key)
        .map_err(|err| format!("writing {}: {err}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("engine")
    }

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let dir = std::env::temp_dir().join(format!("spoa-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let engine = engine();
        let component = Component::new(&engine, "(component)").expect("compiles");
        let cache = CompileCache::open(&dir).expect("cache opens");
        assert!(cache.get(&engine, "abc").is_none());
        cache.put(&engine, "abc", &component);
        assert!(cache.get(&engine, "abc").is_some());

        // A file someone else put there (or changed) is never deserialized.
        let path = cache.entry_path(&engine, "abc");
        let mut bytes = fs::read(&path).expect("entry");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).expect("tamper");
        assert!(cache.get(&engine, "abc").is_none());
        fs::write(&path, component.serialize().expect("serialize")).expect("plant");
        assert!(cache.get(&engine, "abc").is_none());

        // A valid entry under another module's name is refused.
        cache.put(&engine, "abc", &component);
        fs::rename(&path, cache.entry_path(&engine, "def")).expect("rename");
        assert!(cache.get(&engine, "def").is_none());

        // A group-writable directory disables the cache.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(CompileCache::open(&dir).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
