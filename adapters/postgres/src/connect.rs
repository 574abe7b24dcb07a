//! Native connections: TCP or Unix socket, TLS as the URL's `sslmode` asks (rustls with
//! the ring provider), the connection driven on tokio; a failed connection is reported by
//! its cause.

use std::error::Error as _;
use std::io;
use std::sync::Arc;

use projector::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::sslmode::{tls_settings, Roots, SslMode, Verification};
use crate::{error, redact, PgStore};

/// A connection as [`open`] returns it: plain or TLS, decided at connect time.
pub(crate) type PgConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Opens a connection; the caller drives it. A malformed URL or unusable TLS setting is
/// `InvalidInput`; a refused or unreachable server `Unavailable`; a server that refuses
/// this client (no such database or role, wrong password, TLS required or unsupported,
/// a certificate that fails verification) `Database`. Each message names the URL with
/// its password masked, and the cause.
pub(crate) async fn open(url: &str) -> Result<(Client, PgConnection), StoreError> {
    let target = redact(url);
    let invalid = |reason: String| StoreError::InvalidInput(format!("database URL {target}: {reason}"));
    let settings = tls_settings(url).map_err(invalid)?;
    let config: tokio_postgres::Config = settings.driver_conninfo.parse().map_err(|e| {
        invalid(format!(
            "{} (expected postgres://user:password@host:port/database?sslmode=… or host=… dbname=… user=…)",
            error::describe(&e)
        ))
    })?;
    let tls = tls_connector(&settings.verification).map_err(invalid)?;
    config.connect(tls).await.map_err(|e| {
        let (transient, cause) = explain(&failure(&e), settings.mode, &settings.verification);
        let message = format!("{target}: {cause}");
        if transient {
            StoreError::Unavailable(message)
        } else {
            StoreError::Database(message)
        }
    })
}

impl PgStore {
    /// Connects natively and drives the connection on a tokio task. `sslmode` in the URL
    /// decides TLS as in libpq: `disable`, `prefer` (the default: TLS when the server
    /// offers it), `require` (TLS, certificate not checked), `verify-ca` (certificate
    /// chain checked against `sslrootcert=/path/ca.pem`, or the built-in Mozilla roots),
    /// `verify-full` (also the host name).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (client, connection) = open(url).await?;
        tokio::spawn(async move {
            // Errors surface to the client as closed-connection errors.
            let _ = connection.await;
        });
        Ok(Self::new(client))
    }
}

/// The rustls client for a verification policy. Even without certificate checks, the
/// handshake's signatures are verified: the session is encrypted end to end with whoever
/// holds the presented certificate's key.
fn tls_connector(verification: &Verification) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match verification {
        Verification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Verification::Chain { roots, host_name } => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(roots)?), provider)
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?;
            if *host_name {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(webpki))).with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    match roots {
        Roots::Public => Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
        Roots::File(path) => {
            let mut store = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                store.add(cert).map_err(|e| format!("sslrootcert {path}: unusable CA certificate: {e}"))?;
            }
            if store.is_empty() {
                return Err(format!("sslrootcert {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
            }
            Ok(store)
        }
    }
}

/// `require`/`prefer`: any certificate (libpq does not check one in these modes).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name may differ. WebPKI checks
/// the chain before the name, so a name mismatch means the chain passed.
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
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why a connection attempt failed, as far as the client can tell.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// The server answered with an error.
    Server { code: String, message: String },
    /// The server's certificate failed verification.
    Certificate(CertificateError),
    /// The TLS handshake failed otherwise.
    Tls(String),
    /// `sslmode` asks for TLS; the server answered that it has none.
    ServerWithoutTls,
    /// The server asks for a password; the URL has none.
    PasswordMissing,
    /// The network: refused, unreachable, timed out, name not resolved.
    Network { kind: io::ErrorKind, text: String },
    /// Anything else, as the driver describes it.
    Other(String),
}

fn failure(e: &tokio_postgres::Error) -> Failure {
    if let Some(db) = e.as_db_error() {
        return Failure::Server { code: db.code().code().to_owned(), message: db.message().to_owned() };
    }
    let mut source = e.source();
    while let Some(cause) = source {
        // `io::Error::source` skips the error it wraps: look inside it explicitly.
        let inner = cause.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
        if let Some(tls) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()).or(cause.downcast_ref()) {
            return match tls {
                rustls::Error::InvalidCertificate(c) => Failure::Certificate(c.clone()),
                other => Failure::Tls(other.to_string()),
            };
        }
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return Failure::Network { kind: io.kind(), text: io.to_string() };
        }
        let text = cause.to_string();
        if text == "server does not support TLS" {
            return Failure::ServerWithoutTls;
        }
        if text == "password missing" {
            return Failure::PasswordMissing;
        }
        source = cause.source();
    }
    Failure::Other(error::describe(e))
}

/// Whether retrying can help, and the cause in words with what to do about it.
fn explain(failure: &Failure, mode: SslMode, verification: &Verification) -> (bool, String) {
    let mode = mode.as_str();
    match failure {
        Failure::Server { code, message } => {
            let said = format!("{message} (SQLSTATE {code})");
            let lower = message.to_lowercase();
            let wants_tls = lower.contains("no encryption")
                || lower.contains("ssl off")
                || lower.contains("insecure")
                || lower.contains("sslmode=require")
                || (lower.contains("ssl") || lower.contains("tls")) && lower.contains("required");
            if wants_tls && mode == "disable" {
                (
                    false,
                    format!(
                        "the server requires TLS but the URL says sslmode=disable: use sslmode=require or \
                         sslmode=verify-full ({said})"
                    ),
                )
            } else if code == "3D000" {
                (false, format!("{said}: create the database, or correct the database name in the URL"))
            } else if code == "28P01" {
                (false, format!("{said}: the password in the URL is not this user's"))
            } else if code == "28000" && lower.starts_with("role ") && lower.contains("does not exist") {
                (false, format!("{said}: correct the user name in the URL, or create the role"))
            } else if code == "28000" && lower.contains("pg_hba.conf") {
                (
                    false,
                    format!("{said}: the server's pg_hba.conf admits no connection from this host as this user to this database with sslmode={mode}"),
                )
            } else {
                let transient = matches!(&code[..code.len().min(2)], "08" | "53" | "57" | "58");
                (transient, said)
            }
        }
        Failure::Certificate(cause) => {
            let roots = match verification {
                Verification::Chain { roots: Roots::File(path), .. } => format!("the CA certificates in {path}"),
                _ => "the Mozilla root CAs built in (give your server's CA with sslrootcert=/path/ca.pem)".into(),
            };
            let why = match cause {
                CertificateError::UnknownIssuer => format!("the server's certificate is not signed by a trusted CA: not by {roots}"),
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate does not name the host connected to ({cause}); connect by a name it lists, \
                     or use sslmode=verify-ca to check the CA only"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("the server's certificate has expired ({cause})")
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!("the server's certificate is not valid yet ({cause})")
                }
                other => format!("{other} (checked against {roots})"),
            };
            (false, format!("certificate verification failed with sslmode={mode}: {why}"))
        }
        Failure::Tls(cause) => (false, format!("the TLS handshake failed with sslmode={mode}: {cause}")),
        Failure::ServerWithoutTls => (
            false,
            format!(
                "the server does not support TLS but the URL says sslmode={mode}: enable ssl on the server, or \
                 (on a trusted network only) use sslmode=prefer or sslmode=disable"
            ),
        ),
        Failure::PasswordMissing => (
            false,
            "the server asks for a password and the URL has none: postgres://user:password@host/database".into(),
        ),
        Failure::Network { kind, text } => {
            let what = match kind {
                io::ErrorKind::ConnectionRefused => {
                    "connection refused: nothing listens at that host and port (check both, and that PostgreSQL runs there)"
                        .to_owned()
                }
                io::ErrorKind::TimedOut => "the connection timed out: the host does not answer".to_owned(),
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    format!("the host is unreachable ({text})")
                }
                _ if text.contains("lookup") || text.contains("resolve") => {
                    format!("the host name does not resolve ({text})")
                }
                _ => format!("connection failed: {text}"),
            };
            (true, what)
        }
        Failure::Other(text) => (false, text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> Failure {
        Failure::Server { code: code.into(), message: message.into() }
    }

    fn said(failure: Failure, mode: SslMode) -> (bool, String) {
        explain(&failure, mode, &Verification::None)
    }

    #[test]
    fn a_missing_database_role_or_wrong_password_is_named_and_permanent() {
        let (transient, m) = said(server("3D000", "database \"nope\" does not exist"), SslMode::Prefer);
        assert!(!transient);
        assert!(
            m.starts_with("database \"nope\" does not exist (SQLSTATE 3D000)") && m.contains("create the database"),
            "{m}"
        );
        let (transient, m) = said(server("28000", "role \"ghost\" does not exist"), SslMode::Prefer);
        assert!(!transient && m.contains("role \"ghost\" does not exist") && m.contains("user name"), "{m}");
        let (transient, m) = said(server("28P01", "password authentication failed for user \"u\""), SslMode::Require);
        assert!(!transient && m.contains("password authentication failed") && m.contains("password in the URL"), "{m}");
    }

    #[test]
    fn a_server_requiring_tls_is_named_when_sslmode_is_disable() {
        for message in [
            "no pg_hba.conf entry for host \"10.0.0.1\", user \"u\", database \"d\", no encryption",
            "connection is insecure (try using `sslmode=require`)",
            "SSL connection is required",
        ] {
            let (transient, m) = said(server("28000", message), SslMode::Disable);
            assert!(!transient, "{message}");
            assert!(
                m.contains("requires TLS") && m.contains("sslmode=disable") && m.contains("sslmode=require"),
                "{m}"
            );
        }
        let (_, m) = said(
            server("28000", "no pg_hba.conf entry for host \"h\", user \"u\", database \"d\", SSL encryption"),
            SslMode::Require,
        );
        assert!(m.contains("pg_hba.conf admits no connection") && !m.contains("requires TLS"), "{m}");
    }

    #[test]
    fn a_server_without_tls_is_named_when_sslmode_requires_it() {
        let (transient, m) = said(Failure::ServerWithoutTls, SslMode::VerifyFull);
        assert!(!transient);
        assert!(m.contains("does not support TLS") && m.contains("sslmode=verify-full"), "{m}");
    }

    #[test]
    fn a_certificate_failure_says_why_and_against_what() {
        let file = Verification::Chain { roots: Roots::File("/etc/ca.pem".into()), host_name: true };
        let (transient, m) =
            explain(&Failure::Certificate(CertificateError::UnknownIssuer), SslMode::VerifyFull, &file);
        assert!(!transient);
        assert!(
            m.contains("certificate verification failed")
                && m.contains("not signed by a trusted CA")
                && m.contains("/etc/ca.pem"),
            "{m}"
        );
        let public = Verification::Chain { roots: Roots::Public, host_name: true };
        let (_, m) = explain(&Failure::Certificate(CertificateError::UnknownIssuer), SslMode::VerifyFull, &public);
        assert!(m.contains("Mozilla") && m.contains("sslrootcert="), "{m}");
        let (_, m) = explain(&Failure::Certificate(CertificateError::NotValidForName), SslMode::VerifyFull, &file);
        assert!(m.contains("does not name the host") && m.contains("verify-ca"), "{m}");
        let (_, m) = explain(&Failure::Certificate(CertificateError::Expired), SslMode::VerifyCa, &file);
        assert!(m.contains("expired"), "{m}");
    }

    #[test]
    fn network_failures_are_transient_and_say_which() {
        let refused = Failure::Network {
            kind: io::ErrorKind::ConnectionRefused,
            text: "Connection refused (os error 111)".into(),
        };
        let (transient, m) = said(refused, SslMode::Prefer);
        assert!(transient && m.contains("connection refused") && m.contains("host and port"), "{m}");
        let dns = Failure::Network {
            kind: io::ErrorKind::Other,
            text: "failed to lookup address information: Name or service not known".into(),
        };
        let (transient, m) = said(dns, SslMode::Prefer);
        assert!(transient && m.contains("does not resolve"), "{m}");
        let (transient, m) = said(server("57P03", "the database system is starting up"), SslMode::Prefer);
        assert!(transient && m.contains("starting up"), "{m}");
    }

    #[test]
    fn a_missing_password_is_named() {
        let (transient, m) = said(Failure::PasswordMissing, SslMode::Prefer);
        assert!(!transient && m.contains("asks for a password"), "{m}");
    }
}
