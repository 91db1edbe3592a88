//! Loading a handler component: compile, check it against the world,
//! pre-link its imports, and prove it with a smoke call before it serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::HandlerPre;
use super::engine::Sandbox;
use super::instance::{GuestFailure, GuestInstance};
use super::state::GuestState;
use crate::spop;

/// What identifies the module currently serving: logged on each load and
/// exported as metric labels.
#[derive(Debug, Clone)]
pub struct ModuleIdentity {
    pub path: PathBuf,
    pub size: usize,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    pub loaded_at: SystemTime,
}

impl ModuleIdentity {
    /// A short name for logs: the file name and the hash prefix.
    pub fn label(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        format!("{name}@{}", &self.sha256[..12])
    }
}

/// A validated, pre-linked handler, ready to instantiate.
pub struct LoadedModule {
    pub(crate) sandbox: Sandbox,
    pub(crate) pre: HandlerPre<GuestState>,
    pub identity: ModuleIdentity,
    /// Unique per load, so cached instances of a replaced module are noticed.
    pub(crate) generation: u64,
    pub(crate) label: Arc<str>,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Core modules start `\0asm` + version 1; components use a different layer.
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

impl Sandbox {
    /// Reads, compiles and validates the component at `path`.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedModule>> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?;
        self.load_bytes(path, &bytes)
            .with_context(|| format!("module {} rejected", path.display()))
    }

    /// Compiles and validates `bytes` (binary component, or component text).
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Arc<LoadedModule>> {
        if bytes.starts_with(&CORE_MODULE_HEADER) {
            bail!(
                "this is a core WebAssembly module, not a component: build the guest with \
                 wit-bindgen and wrap it (see README, \"Writing a guest\")"
            );
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|err| {
            anyhow!(
                "{err:#}; the host provides only spoa:agent/random and spoa:agent/log \
                 (no WASI, filesystem, network or environment)"
            )
        })?;
        let pre = HandlerPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not implement the spoa:agent/handler world")?;

        let identity = ModuleIdentity {
            path: path.to_path_buf(),
            size: bytes.len(),
            sha256: hex(&Sha256::digest(bytes)),
            loaded_at: SystemTime::now(),
        };
        let label: Arc<str> = identity.label().into();
        let module = Arc::new(LoadedModule {
            sandbox: self.clone(),
            pre,
            identity,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            label,
        });
        module.smoke_test()?;
        Ok(module)
    }
}

impl LoadedModule {
    /// Instantiates the module and calls it once with a sample message. A trap,
    /// timeout or memory blow-up rejects the module; an `err` answer does not
    /// (a guest may legitimately refuse a message it does not know).
    fn smoke_test(&self) -> Result<()> {
        let sample = spop::Message {
            name: Bytes::from_static(b"check-client-ip"),
            args: vec![spop::Arg {
                name: Bytes::from_static(b"ip"),
                value: spop::TypedData::Ipv4(std::net::Ipv4Addr::LOCALHOST),
            }],
        };
        let mut instance = GuestInstance::new(self).context("instantiating the component")?;
        match instance.call(self, &sample) {
            Ok(_) | Err(GuestFailure::Returned(_)) | Err(GuestFailure::InvalidOutput(_)) => Ok(()),
            Err(failure) => Err(anyhow!(
                "smoke call with a sample message failed: {failure}"
            )),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
