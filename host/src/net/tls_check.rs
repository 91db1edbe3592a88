//! `spoa-host check --tls-cert … --tls-key … [--tls-client-ca …]`: the
//! mistakes that make HAProxy mark the agent DOWN, found before a deploy: a
//! certificate that is X.509 v1, expired or not yet valid, a key that is not
//! the certificate's, a client CA file holding a certificate that is not a CA.

use std::path::Path;

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

/// What the check found, one line each; the run fails if any is an error.
#[derive(Debug, Default)]
pub struct TlsReport {
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

/// The DER certificates of a PEM file.
fn certificates(path: &Path, what: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("{what} {}: {err}", path.display()))?
        .map(|cert| cert.map(|der| der.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|err| format!("{what} {}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// Version and validity of one certificate.
fn check_certificate(cert: &X509Certificate<'_>, what: &str, report: &mut TlsReport) {
    let subject = cert.subject().to_string();
    if cert.version() != X509Version::V3 {
        report.errors.push(format!(
            "{what} `{subject}` is X.509 v{}: rustls accepts only v3. Issue it with extensions \
             (`openssl x509 -req … -extfile ext.cnf`, ext.cnf holding at least \
             `basicConstraints = CA:FALSE`)",
            cert.version().0.saturating_add(1)
        ));
    }
    let validity = cert.validity();
    match validity.time_to_expiration() {
        None if validity.not_before.timestamp() > now() => report.errors.push(format!(
            "{what} `{subject}` is not valid before {}",
            validity.not_before
        )),
        None => report.errors.push(format!(
            "{what} `{subject}` expired on {}",
            validity.not_after
        )),
        Some(left) if left.whole_days() < 14 => report.notes.push(format!(
            "{what} `{subject}` expires in {} days ({})",
            left.whole_days(),
            validity.not_after
        )),
        Some(_) => report.notes.push(format!(
            "{what} `{subject}` valid until {}",
            validity.not_after
        )),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// Checks the agent's certificate and key, and the client CA file.
pub fn check_tls_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsReport {
    let mut report = TlsReport::default();
    match certificates(cert, "--tls-cert") {
        Err(err) => report.errors.push(err),
        Ok(chain) => match X509Certificate::from_der(&chain[0]) {
            Err(err) => report.errors.push(format!(
                "--tls-cert {}: not a certificate: {err}",
                cert.display()
            )),
            Ok((_, leaf)) => {
                check_certificate(&leaf, "--tls-cert", &mut report);
                check_key(&leaf, key, &mut report);
            }
        },
    }
    if let Some(ca) = client_ca {
        match certificates(ca, "--tls-client-ca") {
            Err(err) => report.errors.push(err),
            Ok(certs) => {
                for der in &certs {
                    match X509Certificate::from_der(der) {
                        Err(err) => report.errors.push(format!(
                            "--tls-client-ca {}: not a certificate: {err}",
                            ca.display()
                        )),
                        Ok((_, cert)) => {
                            check_certificate(&cert, "--tls-client-ca", &mut report);
                            let is_ca =
                                matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
                            if !is_ca {
                                report.errors.push(format!(
                                    "--tls-client-ca `{}` is not a CA (no basicConstraints CA:TRUE): \
                                     give the CA that signed HAProxy's client certificate, not the \
                                     certificate itself",
                                    cert.subject()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    report
}

/// Whether `key` is the private key of `leaf`.
fn check_key(leaf: &X509Certificate<'_>, key: &Path, report: &mut TlsReport) {
    let der = match PrivateKeyDer::from_pem_file(key) {
        Ok(der) => der,
        Err(err) => {
            report
                .errors
                .push(format!("--tls-key {}: {err}", key.display()));
            return;
        }
    };
    let signing = match rustls::crypto::ring::sign::any_supported_type(&der) {
        Ok(signing) => signing,
        Err(err) => {
            report.errors.push(format!(
                "--tls-key {}: not a usable key: {err}",
                key.display()
            ));
            return;
        }
    };
    match signing.public_key() {
        Some(public) if public.as_ref() == leaf.public_key().raw => {
            report.notes.push("--tls-key matches --tls-cert".into())
        }
        Some(_) => report.errors.push(format!(
            "--tls-key {} is not the key of --tls-cert `{}`",
            key.display(),
            leaf.subject()
        )),
        None => report
            .notes
            .push("--tls-key: could not compare it with the certificate".into()),
    }
}
