//! `spoa-host check`: a module validated as a load or reload would, and the
//! TLS files checked before a deploy.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::guests::module_reload::load;
use crate::kv::KvStore;
use crate::sandbox::Sandbox;
use crate::settings::cli::SandboxArgs;

pub fn check(path: &std::path::Path, sandbox_args: &SandboxArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let sandbox = Sandbox::new(sandbox_args.to_config(), KvStore::scratch())?
            .with_ip_tables(crate::tables::IpTables::new(None));
        let started = Instant::now();
        let module = load(&sandbox, None, path, &sandbox_args.grants())
            .await
            .map_err(|err| rejected(path, err))?
            .module;
        let id = &module.identity;
        println!(
            "ok: {} implements spoa:agent/handler ({} bytes, sha256 {}, validated in {:.1} ms{})",
            id.path.display(),
            id.size,
            id.sha256,
            started.elapsed().as_secs_f64() * 1e3,
            if id.from_cache {
                ", compiled code from the cache"
            } else {
                ""
            }
        );
        Ok(())
    })
}

/// `check --tls-cert`: prints what it found; false when anything would be
/// refused.
pub fn check_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> bool {
    let report = crate::net::check_tls_files(cert, key, client_ca);
    for note in &report.notes {
        println!("ok: {note}");
    }
    for error in &report.errors {
        println!("error: {error}");
    }
    report.errors.is_empty()
}

/// A refused module, with the step that refused it.
pub fn rejected(path: &std::path::Path, err: crate::sandbox::LoadError) -> anyhow::Error {
    anyhow::anyhow!(
        "module {} rejected (cause: {}): {err}",
        path.display(),
        err.cause().name()
    )
}
