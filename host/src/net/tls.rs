//! TLS for SPOP (rustls): a certificate and key, and with a client CA,
//! mutual TLS. The files are reloaded when they change; connections in
//! progress keep their session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::planes::ControlPlane;
use crate::watch::Triggers;
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The acceptor serving new handshakes, swapped when the files change.
pub struct TlsServer {
    files: TlsFiles,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl TlsServer {
    pub fn new(files: TlsFiles) -> Result<TlsServer> {
        let acceptor = acceptor(&files)?;
        Ok(TlsServer {
            files,
            acceptor: ArcSwap::from_pointee(acceptor),
        })
    }

    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }

    pub fn requires_client_certificate(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files; on failure the current ones keep serving.
    pub fn reload(&self) {
        match acceptor(&self.files) {
            Ok(acceptor) => {
                self.acceptor.store(Arc::new(acceptor));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(err) => tracing::error!(
                "TLS files rejected, the current certificate keeps serving: {err:#}"
            ),
        }
    }

    /// Reloads on `triggers` and when one of the files changes, on the
    /// control plane.
    pub fn spawn_reloads(
        self: Arc<Self>,
        control: &ControlPlane,
        mut triggers: Triggers,
    ) -> Result<()> {
        let files = [
            Some(&self.files.cert),
            Some(&self.files.key),
            self.files.client_ca.as_ref(),
        ];
        for file in files.into_iter().flatten() {
            triggers.watch_file(file, "TLS file changed")?;
        }
        control.spawn(async move {
            while triggers.next().await.is_some() {
                self.reload();
            }
        });
        Ok(())
    }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key {}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("adding a CA certificate of {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}
