//! Connecting to PostgreSQL, over TLS as libpq's `sslmode` defines it.
//!
//! Every connection the process makes (the pools, migrations, `admin` verbs) comes from a
//! [`PgConnector`]: the URL's `sslmode` and `sslrootcert` are read here (tokio-postgres knows
//! neither `verify-ca` nor `verify-full`, and no root certificates), the rest of the URL goes
//! to tokio-postgres, and TLS is rustls with the process's `ring` provider.
//!
//! | `sslmode`     | encrypted                     | server certificate checked            |
//! |---------------|-------------------------------|---------------------------------------|
//! | `disable`     | never                         | -                                     |
//! | `prefer`      | if the server offers it       | no                                    |
//! | `require`     | always                        | no (against the CA, when one is given) |
//! | `verify-ca`   | always                        | chain to a trusted CA                 |
//! | `verify-full` | always                        | chain, and the host name              |
//!
//! Trusted CAs: `database.ca_file` (or the URL's `sslrootcert`), else Mozilla's public roots
//! (compiled in, as for webhooks; `sslrootcert=system` means those too).
//! `prefer` is libpq's (and so our) default; production refuses anything weaker than
//! `require` unless `database.allow_plaintext` says otherwise (see the settings).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling; `allow` (plaintext first) is taken as `prefer`, which is stricter.
    pub fn parse(value: &str) -> Option<SslMode> {
        match value {
            "disable" => Some(SslMode::Disable),
            "allow" | "prefer" => Some(SslMode::Prefer),
            "require" => Some(SslMode::Require),
            "verify-ca" => Some(SslMode::VerifyCa),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether no byte of a connection in this mode can travel in plaintext.
    pub fn always_encrypts(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// A database URL that cannot be used, said without repeating the URL (it holds a password).
#[derive(Debug, thiserror::Error)]
pub enum ConnectConfigError {
    #[error("sslmode={0} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("the URL's {0} is not supported (client certificates are not); remove it from the URL")]
    Unsupported(&'static str),
    #[error("the database URL is malformed: {0}")]
    Url(String),
    #[error("reading the CA certificates in {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The TLS part of a database URL, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    /// The URL's `sslrootcert` (a file, or `system` for the system's roots).
    pub root_cert: Option<String>,
}

/// Splits the TLS parameters libpq defines (and tokio-postgres does not know) off `url`:
/// what is left for tokio-postgres, and the parameters.
pub fn split_tls_params(url: &str) -> Result<(String, TlsParams), ConnectConfigError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut params = TlsParams {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| ConnectConfigError::Url(format!("{key} is not UTF-8")))?;
        match key {
            "sslmode" => {
                params.mode = SslMode::parse(&value)
                    .ok_or_else(|| ConnectConfigError::SslMode(value.clone().into_owned()))?;
            }
            "sslrootcert" => params.root_cert = Some(value.into_owned()),
            "sslcert" => return Err(ConnectConfigError::Unsupported("sslcert")),
            "sslkey" => return Err(ConnectConfigError::Unsupported("sslkey")),
            "sslcrl" => return Err(ConnectConfigError::Unsupported("sslcrl")),
            _ => kept.push(pair),
        }
    }
    // tokio-postgres only knows disable/prefer/require; verification is ours (the connector).
    kept.push(match params.mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    Ok((format!("{base}?{}", kept.join("&")), params))
}

/// Opens connections to one database, with the TLS its URL asks for. Cheap to clone.
#[derive(Clone)]
pub struct PgConnector {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the config: it holds the password.
        f.debug_struct("PgConnector")
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgConnector {
    /// Reads `url` (a `postgres://` URL with libpq's TLS parameters) and, for TLS, the trusted
    /// CAs: `ca_file` when given, else the URL's `sslrootcert`, else the public roots.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<PgConnector, ConnectConfigError> {
        let (theirs, params) = split_tls_params(url)?;
        let config: tokio_postgres::Config = theirs
            .parse()
            .map_err(|e: tokio_postgres::Error| ConnectConfigError::Url(e.to_string()))?;
        let tls = match params.mode {
            SslMode::Disable => None,
            mode => {
                let ca = ca_file.map(Path::to_path_buf).or_else(|| {
                    params
                        .root_cert
                        .as_deref()
                        .filter(|r| *r != "system")
                        .map(PathBuf::from)
                });
                Some(MakeRustlsConnect::new(client_config(mode, ca.as_deref())?))
            }
        };
        Ok(PgConnector {
            config,
            mode: params.mode,
            tls,
        })
    }

    /// The connections' `sslmode`.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// A new connection (its driver task runs on the current runtime).
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        // tokio-postgres says "error performing TLS handshake"; the why (an unknown issuer, a
        // name mismatch) is in its sources, which an operator needs to see.
        let failed = |e: tokio_postgres::Error| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            ConnectionError::BadConnection(text)
        };
        match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `mode`, trusting `ca_file` or the public roots.
fn client_config(
    mode: SslMode,
    ca_file: Option<&Path>,
) -> Result<ClientConfig, ConnectConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectConfigError::Tls(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        // libpq: without a CA, `prefer` and `require` encrypt but check nothing.
        SslMode::Disable | SslMode::Prefer | SslMode::Require if ca_file.is_none() => {
            Arc::new(Unverified(provider))
        }
        // libpq: `require` with a root certificate behaves like `verify-ca`.
        SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa => {
            Arc::new(ChainOnly(webpki_verifier(roots(ca_file)?, provider)?))
        }
        SslMode::VerifyFull => webpki_verifier(roots(ca_file)?, provider)?,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, ConnectConfigError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| ConnectConfigError::Tls(e.to_string()))
}

/// The trusted CAs: every certificate in `ca_file`, or the public roots.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, ConnectConfigError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let unreadable = |reason: String| ConnectConfigError::CaFile {
                path: path.to_path_buf(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| unreadable(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable(e.to_string()))?;
            if certs.is_empty() {
                return Err(unreadable("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| unreadable(format!("a certificate rustls rejects: {e}")))?;
            }
        }
        None => {
            // Mozilla's public roots, compiled in (as for webhooks): an image without a CA
            // bundle still verifies a managed database whose CA is public.
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in the certificate is not
/// checked (libpq's meaning; `verify-full` checks it).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without a CA: encrypted, the server unauthenticated (libpq's meaning).
/// The handshake's signatures are still checked, so the session key is the server's.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_read_and_the_rest_is_left_for_tokio_postgres() {
        let (rest, params) = split_tls_params(
            "postgres://u:p%40ss@db.example:5432/flowlet?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%40ss@db.example:5432/flowlet?application_name=x&sslmode=require"
        );
        assert_eq!(params.mode, SslMode::VerifyFull);
        assert_eq!(params.root_cert.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn without_sslmode_the_default_is_libpqs_prefer() {
        let (rest, params) = split_tls_params("postgres://u@localhost/db").unwrap();
        assert_eq!(rest, "postgres://u@localhost/db?sslmode=prefer");
        assert_eq!(params.mode, SslMode::Prefer);
        assert!(!params.mode.always_encrypts());
    }

    #[test]
    fn every_libpq_mode_is_understood_and_nothing_else() {
        for (word, mode, encrypts) in [
            ("disable", SslMode::Disable, false),
            ("allow", SslMode::Prefer, false),
            ("prefer", SslMode::Prefer, false),
            ("require", SslMode::Require, true),
            ("verify-ca", SslMode::VerifyCa, true),
            ("verify-full", SslMode::VerifyFull, true),
        ] {
            let (_, params) = split_tls_params(&format!("postgres://h/d?sslmode={word}")).unwrap();
            assert_eq!(params.mode, mode, "{word}");
            assert_eq!(mode.always_encrypts(), encrypts, "{word}");
        }
        for bad in ["REQUIRE", "verify_full", "", "on"] {
            let err = split_tls_params(&format!("postgres://h/d?sslmode={bad}")).unwrap_err();
            assert!(
                matches!(err, ConnectConfigError::SslMode(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn client_certificates_are_refused_plainly_rather_than_ignored() {
        for key in ["sslcert", "sslkey", "sslcrl"] {
            let err = split_tls_params(&format!("postgres://h/d?{key}=/x")).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("flowlet-ca-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [dir.join("absent.pem"), empty] {
            let err =
                PgConnector::new("postgres://h/d?sslmode=verify-full", Some(&path)).unwrap_err();
            assert!(
                matches!(err, ConnectConfigError::CaFile { .. }),
                "{}: {err}",
                path.display()
            );
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_connector_never_prints_the_password() {
        let c = PgConnector::new("postgres://u:hunter2@h/d?sslmode=disable", None).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.mode(), SslMode::Disable);
    }
}
