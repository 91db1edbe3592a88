//! Throw-away certificates made with the `openssl` command: a CA, a server
//! certificate for 127.0.0.1 signed by it, client certificates signed by it,
//! one from another CA, and an X.509 v1 one.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::spop_client::SpopClient;

/// A CA, a server certificate for 127.0.0.1 signed by it, a client
/// certificate signed by it, and a client certificate from another CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (apt-get install -y openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `openssl req` with a new P-256 key NAME.key, subject `/CN=NAME`: a
/// self-signed certificate NAME.pem with `-x509` in `extra`, else a request
/// NAME.csr.
fn new_key(dir: &Path, name: &str, extra: &[&str]) {
    let self_signed = extra.contains(&"-x509");
    let (key, out, subject) = (
        format!("{name}.key"),
        format!("{name}.{}", if self_signed { "pem" } else { "csr" }),
        format!("/CN={name}"),
    );
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &out,
        "-subj",
        &subject,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            new_key(
                d,
                ca,
                &[
                    "-x509",
                    "-days",
                    "2",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing");
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .expect("writing");
        for (name, ca, ext) in [
            ("server", "ca", "server.ext"),
            ("renewed", "ca", "server.ext"),
            ("client", "ca", "client.ext"),
            ("stranger", "other-ca", "client.ext"),
            // `openssl x509 -req` without -extfile: an X.509 v1 certificate.
            ("v1", "ca", ""),
        ] {
            new_key(d, name, &[]);
            let (csr, ca_pem, ca_key, out) = (
                format!("{name}.csr"),
                format!("{ca}.pem"),
                format!("{ca}.key"),
                format!("{name}.pem"),
            );
            let mut args = vec![
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &out,
                "-days",
                "2",
            ];
            if !ext.is_empty() {
                args.extend(["-extfile", ext]);
            }
            openssl(d, &args);
            // HAProxy's `crt` takes the certificate and its key in one file.
            let bundle = [
                std::fs::read(d.join(format!("{name}.pem"))).expect("cert"),
                std::fs::read(d.join(format!("{name}.key"))).expect("key"),
            ]
            .concat();
            std::fs::write(d.join(format!("{name}-bundle.pem")), bundle).expect("writing");
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The agent's flags for mutual TLS: `server.pem` and its key, client
    /// certificates signed by `ca.pem`.
    pub fn server_args(&self) -> Vec<String> {
        [
            ("--tls-cert", "server.pem"),
            ("--tls-key", "server.key"),
            ("--tls-client-ca", "ca.pem"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_string(), self.path(file)])
        .collect()
    }
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A client configuration trusting the test CA, presenting `client.pem`.
pub fn tls_client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca.pem") {
        roots
            .add(ca.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("client.pem"))
        .expect("client.pem")
        .map(|cert| cert.expect("a certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("client.key")).expect("client.key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("the client certificate");
    Arc::new(config)
}

pub fn tls_connect(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> SpopClient<TlsStream> {
    let socket = TcpStream::connect(addr).expect("connecting to the agent");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let _ = socket.set_nodelay(true);
    let server = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let session = rustls::ClientConnection::new(config.clone(), server).expect("a session");
    SpopClient::over(rustls::StreamOwned::new(session, socket))
}
