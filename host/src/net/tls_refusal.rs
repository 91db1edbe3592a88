//! Why a TLS peer was refused, in words an operator can act on. rustls says
//! `UnsupportedCertVersion`; the operator needs to hear that `openssl x509
//! -req` without an extensions file made an X.509 v1 certificate, and how to
//! make a v3 one.

use rustls::{CertificateError, Error};

/// The refusal explained, when it is about the peer's certificate (what an
/// operator must fix); `None` for other handshake failures (a port scanner,
/// plain SPOP on the TLS port), which stay at debug level.
pub fn explain(err: &std::io::Error) -> Option<String> {
    let tls = err.get_ref()?.downcast_ref::<Error>()?;
    Some(match tls {
        Error::NoCertificatesPresented => {
            "the peer sent no client certificate: give HAProxy's `server` line `crt <its certificate and key>` \
             (the agent was started with --tls-client-ca, so one is required)"
                .into()
        }
        Error::InvalidCertificate(cert) => explain_certificate(cert),
        _ => return None,
    })
}

fn explain_certificate(cert: &CertificateError) -> String {
    match cert {
        CertificateError::UnknownIssuer => {
            "the client certificate is not signed by a CA in --tls-client-ca: sign it with that CA, \
             or add its CA to the file"
                .into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the client certificate has expired ({cert}): issue a new one")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the client certificate is not valid yet ({cert}): check the clocks, or its start date")
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the client certificate is not for client authentication: issue it with \
             `extendedKeyUsage = clientAuth` (or without an extendedKeyUsage)"
                .into()
        }
        CertificateError::BadEncoding => {
            "the client certificate is not valid DER: re-issue it".into()
        }
        CertificateError::Other(other) if format!("{other:?}").contains("UnsupportedCertVersion") => {
            "X.509 v1 certificate: issue a v3 certificate (`openssl x509 -req … -extfile ext.cnf` \
             with `basicConstraints = CA:FALSE`; `openssl x509 -req` without -extfile makes a v1 one)"
                .into()
        }
        other => format!("the client certificate was refused ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn io(error: Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn certificate_refusals_say_what_to_do() {
        let v1 = io(Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(webpki_like::UnsupportedCertVersion)),
        )));
        let said = explain(&v1).expect("explained");
        assert!(
            said.contains("X.509 v1") && said.contains("-extfile"),
            "{said}"
        );
        let unknown = io(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(
            explain(&unknown)
                .expect("explained")
                .contains("--tls-client-ca")
        );
        let none = io(Error::NoCertificatesPresented);
        assert!(explain(&none).expect("explained").contains("crt"));
        let expired = io(Error::InvalidCertificate(CertificateError::Expired));
        assert!(explain(&expired).expect("explained").contains("expired"));
    }

    #[test]
    fn other_handshake_failures_are_not_certificate_mistakes() {
        assert_eq!(explain(&io(Error::DecryptError)), None);
        let plain = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(explain(&plain), None);
    }

    /// What rustls wraps webpki's error in, by the same name.
    mod webpki_like {
        #[derive(Debug)]
        pub struct UnsupportedCertVersion;
        impl std::fmt::Display for UnsupportedCertVersion {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("UnsupportedCertVersion")
            }
        }
        impl std::error::Error for UnsupportedCertVersion {}
    }
}
