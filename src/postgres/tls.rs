//! TLS to Postgres with libpq's `sslmode` contract, through rustls
//! (`tokio-postgres-rustls`; tokio-postgres itself knows only disable,
//! prefer and require, and verifies nothing).
//!
//! | sslmode | veil | as libpq? |
//! |---|---|---|
//! | `disable` | plain TCP | yes |
//! | `allow` | plain TCP; if the server refuses it, TLS without verification | yes |
//! | `prefer` (default) | TLS without verification if the server offers it, else plain | yes |
//! | `require` | TLS; no verification, unless a root certificate is given (then as `verify-ca`) | yes, including the root-certificate rule |
//! | `verify-ca` | TLS; the chain must lead to `sslrootcert` | yes |
//! | `verify-full` | as `verify-ca`, and the certificate must name the host | yes |
//!
//! `sslrootcert` is a PEM bundle (such as RDS's global-bundle.pem) or
//! `system` for the operating system's store, which, as in libpq 16, is
//! refused with any mode but `verify-full`. Without `sslrootcert`,
//! `~/.postgresql/root.crt` is used when it exists, as libpq does.
//! Where webpki is stricter than libpq, libpq's rule applies
//! (`tls_names`): a certificate with no `dNSName` is checked against its
//! Common Name, and a server certificate that is itself in `sslrootcert`
//! (a self-signed one, even with `CA:TRUE`) is trusted as it is.
//! Differences: client certificates (`sslcert`, `sslkey`), `sslcrl` and
//! `sslpassword` are not supported and refused by name; rustls speaks TLS
//! 1.2 and 1.3 only.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls_names::CertificateNames;
use crate::error::ConfigError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// Plain TCP; TLS if the server insists.
    Allow,
    /// TLS if the server offers it (not verified), else plain.
    Prefer,
    /// TLS, not verified (unless a root certificate is given).
    Require,
    /// TLS, chain verified.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// Reads a libpq `sslmode` value.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConfigError(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    /// The libpq name.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// A PEM bundle.
    File(PathBuf),
    /// The operating system's store.
    System,
}

/// How veil connects to Postgres over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The sslmode asked for.
    pub mode: SslMode,
    /// Trusted roots, when given (or found at ~/.postgresql/root.crt).
    pub roots: Option<RootCertificates>,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Any certificate is accepted (the connection is encrypted, not
    /// authenticated).
    None,
    /// The chain must lead to a trusted root.
    Chain,
    /// The chain, and the certificate must name the host.
    Full,
}

impl TlsSettings {
    /// Checks `sslmode` and `sslrootcert` (from the URL or the environment).
    pub fn new(mode: Option<&str>, root: Option<&str>) -> Result<Self, ConfigError> {
        let mode = match mode {
            Some(text) => SslMode::parse(text)?,
            None if root == Some("system") => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        let roots = match root {
            Some("system") => Some(RootCertificates::System),
            Some(path) => Some(RootCertificates::File(PathBuf::from(path))),
            None => dirs::home_dir()
                .map(|home| home.join(".postgresql").join("root.crt"))
                .filter(|path| path.exists())
                .map(RootCertificates::File),
        };
        if roots == Some(RootCertificates::System) && mode != SslMode::VerifyFull {
            return Err(ConfigError(format!(
                "sslrootcert=system may only be used with sslmode=verify-full (got {}), as in libpq",
                mode.name()
            )));
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
            return Err(ConfigError(format!(
                "sslmode={} needs the certificate authority: set sslrootcert (in DATABASE_URL, or \
                 PGSSLROOTCERT) to a PEM bundle, e.g. RDS's global-bundle.pem, or to `system`",
                mode.name()
            )));
        }
        Ok(TlsSettings { mode, roots })
    }

    /// How the server's certificate is checked under these settings.
    pub fn verification(&self) -> Verification {
        match self.mode {
            SslMode::VerifyFull => Verification::Full,
            SslMode::VerifyCa => Verification::Chain,
            SslMode::Require if self.roots.is_some() => Verification::Chain,
            _ => Verification::None,
        }
    }

    /// The rustls connector for these settings (roots loaded once).
    pub fn connector(&self) -> Result<MakeRustlsConnect, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("TLS set-up: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.verification() {
            Verification::None => Arc::new(AnyCertificate(provider)),
            check => {
                let (roots, anchors) = self.root_store()?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| ConfigError(format!("TLS set-up: {e}")))?;
                Arc::new(Libpq {
                    webpki,
                    anchors,
                    check_name: check == Verification::Full,
                })
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// The trusted roots, and the certificates of `sslrootcert` as they are
    /// (a server certificate found among them is trusted itself).
    fn root_store(&self) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), ConfigError> {
        let mut store = RootCertStore::empty();
        let mut anchors = Vec::new();
        match &self.roots {
            Some(RootCertificates::File(path)) => {
                let certificates: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(path)
                        .and_then(|certs| certs.collect())
                        .map_err(|e| {
                            ConfigError(format!(
                                "sslrootcert {}: cannot read PEM certificates: {e}",
                                path.display()
                            ))
                        })?;
                anchors.clone_from(&certificates);
                let (added, _) = store.add_parsable_certificates(certificates);
                if added == 0 {
                    return Err(ConfigError(format!(
                        "sslrootcert {} holds no usable certificate",
                        path.display()
                    )));
                }
            }
            Some(RootCertificates::System) => {
                let loaded = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(loaded.certs);
                if store.is_empty() {
                    return Err(ConfigError(
                        "sslrootcert=system: the operating system's certificate store is empty"
                            .into(),
                    ));
                }
            }
            None => {}
        }
        Ok((store, anchors))
    }

    /// One line for logs and `veil doctor`: the mode and the check.
    pub fn describe(&self) -> String {
        let check = match self.verification() {
            Verification::None => "certificate not verified",
            Verification::Chain => "certificate chain verified",
            Verification::Full => "certificate and host name verified",
        };
        format!("sslmode={}, {check}", self.mode.name())
    }
}

/// `verify-ca` and `verify-full` as libpq means them: webpki's chain check,
/// with libpq's rules where webpki is stricter (`tls_names`). `verify-ca`
/// does not compare the certificate's name with the host.
#[derive(Debug)]
struct Libpq {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `sslrootcert`, as DER.
    anchors: Vec<CertificateDer<'static>>,
    /// `verify-full`: the certificate must name the host.
    check_name: bool,
}

impl Libpq {
    fn names_host(end_entity: &CertificateDer<'_>, server_name: &ServerName<'_>) -> bool {
        let host = match server_name {
            ServerName::DnsName(name) => name.as_ref().to_string(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => return false,
        };
        CertificateNames::parse(end_entity).is_some_and(|names| names.names_host(&host))
    }

    /// A server certificate that is itself a trusted one: valid now, and
    /// under `verify-full` naming the host.
    fn trusted_as_it_is(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{BadEncoding, Expired, NotValidForName};
        let names = CertificateNames::parse(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(BadEncoding))?;
        if !names.valid_at(now.as_secs()) {
            return Err(rustls::Error::InvalidCertificate(Expired));
        }
        if self.check_name && !Self::names_host(end_entity, server_name) {
            return Err(rustls::Error::InvalidCertificate(NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for Libpq {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if !self.check_name || Self::names_host(end_entity, server_name) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(_)
                if self
                    .anchors
                    .iter()
                    .any(|anchor| anchor.as_ref() == end_entity.as_ref()) =>
            {
                self.trusted_as_it_is(end_entity, server_name, now)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer`, `allow`, and `require` without a root: encrypted, any
/// certificate accepted (libpq's meaning; nothing authenticates the
/// server). The handshake signatures are still checked, against whatever
/// certificate was presented.
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a failed certificate check means and how to fix it, when
/// `error`'s chain holds one: unknown issuer, name mismatch, expired, ...
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as E;
    let mut source = Some(error);
    while let Some(cause) = source {
        // An io::Error's `source` skips the error it wraps: look inside.
        let inner = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|wrapped| wrapped as &(dyn std::error::Error + 'static));
        let candidate = inner.unwrap_or(cause);
        if let Some(rustls::Error::InvalidCertificate(problem)) = candidate.downcast_ref() {
            let text = match problem {
                E::UnknownIssuer => {
                    "the server's certificate is not signed by a CA in sslrootcert (unknown \
                     issuer): point sslrootcert (or PGSSLROOTCERT) at the bundle that signed it \
                     (RDS: global-bundle.pem from truststore.pki.rds.amazonaws.com)"
                }
                E::NotValidForName | E::NotValidForNameContext { .. } => {
                    "the server's certificate does not name the host veil connected to (name \
                     mismatch): connect by a name the certificate lists (the error says which), \
                     or use sslmode=verify-ca to check the chain only"
                }
                E::Expired | E::ExpiredContext { .. } => {
                    "the server's certificate has expired: renew it (RDS: rotate the instance to \
                     a current CA); veil will not trust it meanwhile"
                }
                E::NotValidYet | E::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet: check the clocks of both machines"
                }
                _ => {
                    "the server's certificate was refused: check it against sslrootcert, or use \
                     the CA bundle your provider publishes"
                }
            };
            return Some(text.to_string());
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_parses_and_others_are_refused() {
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(SslMode::parse(mode).unwrap().name(), mode);
        }
        assert!(SslMode::parse("verify_full").is_err());
    }

    #[test]
    fn verification_follows_libpq() {
        let settings = |mode, root| TlsSettings::new(mode, root).unwrap().verification();
        assert_eq!(settings(Some("require"), None), Verification::None);
        assert_eq!(
            settings(Some("require"), Some("/ca.pem")),
            Verification::Chain
        );
        assert_eq!(
            settings(Some("verify-ca"), Some("/ca.pem")),
            Verification::Chain
        );
        assert_eq!(
            settings(Some("verify-full"), Some("/ca.pem")),
            Verification::Full
        );
        assert_eq!(settings(None, Some("system")), Verification::Full);
        assert!(TlsSettings::new(Some("require"), Some("system")).is_err());
        let missing_roots = TlsSettings::new(Some("verify-full"), None);
        if dirs::home_dir().is_none_or(|home| !home.join(".postgresql/root.crt").exists()) {
            assert!(missing_roots
                .unwrap_err()
                .to_string()
                .contains("sslrootcert"));
        }
    }

    #[test]
    fn the_default_is_prefer() {
        assert_eq!(TlsSettings::new(None, None).unwrap().mode, SslMode::Prefer);
    }
}
