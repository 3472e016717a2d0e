//! libpq's rules for the server certificate where webpki (rustls) is
//! stricter, read from the certificate itself (`x509-cert`):
//!
//! - **Names** (libpq's `pq_verify_peer_name_matches_certificate`): a host
//!   that is an IP address matches an `iPAddress` subjectAltName; a host
//!   name matches a `dNSName` one, `*.` standing for exactly one label;
//!   and only when the certificate has no `dNSName` at all is its Common
//!   Name compared instead. webpki never reads the CN.
//! - **Anchors**: a server certificate that is itself in `sslrootcert`
//!   (the PostgreSQL documentation's self-signed recipe, which OpenSSL
//!   makes with `CA:TRUE`) is trusted as it is, as OpenSSL does; webpki
//!   refuses a CA certificate as an end entity. Its validity period is
//!   still checked here, and its name under `verify-full`; the handshake's
//!   signature proves the server holds its key.

use std::net::IpAddr;

use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// What libpq's checks read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateNames {
    /// The `dNSName` subjectAltNames.
    pub dns_names: Vec<String>,
    /// The `iPAddress` subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    /// The subject's Common Name, if it has one.
    pub common_name: Option<String>,
    /// Valid from, in seconds since the Unix epoch.
    pub not_before_secs: u64,
    /// Valid until, in seconds since the Unix epoch.
    pub not_after_secs: u64,
}

impl CertificateNames {
    /// Reads a DER certificate; None when it does not parse.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let certificate = Certificate::from_der(der).ok()?;
        let tbs = &certificate.tbs_certificate;
        let mut names = CertificateNames {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            common_name: None,
            not_before_secs: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after_secs: tbs.validity.not_after.to_unix_duration().as_secs(),
        };
        for extension in tbs.extensions.iter().flatten() {
            if extension.extn_id != SUBJECT_ALT_NAME {
                continue;
            }
            let alt_names = SubjectAltName::from_der(extension.extn_value.as_bytes()).ok()?;
            for name in alt_names.0 {
                match name {
                    GeneralName::DnsName(dns) => names.dns_names.push(dns.to_string()),
                    GeneralName::IpAddress(octets) => {
                        if let Some(ip) = ip_of(octets.as_bytes()) {
                            names.ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        names.common_name = tbs
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|attribute| attribute.oid == COMMON_NAME)
            .and_then(|attribute| {
                let value = &attribute.value;
                value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.to_string())
                    .or_else(|_| {
                        value
                            .decode_as::<PrintableStringRef<'_>>()
                            .map(|s| s.to_string())
                    })
                    .or_else(|_| value.decode_as::<Ia5StringRef<'_>>().map(|s| s.to_string()))
                    .ok()
            });
        Some(names)
    }

    /// Whether the certificate names `host` as libpq decides it.
    pub fn names_host(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            if self.ip_addresses.contains(&ip) {
                return true;
            }
        } else if self.dns_names.iter().any(|name| name_matches(name, host)) {
            return true;
        }
        self.dns_names.is_empty()
            && self
                .common_name
                .as_deref()
                .is_some_and(|name| name_matches(name, host))
    }

    /// Whether `now_secs` lies within the validity period.
    pub fn valid_at(&self, now_secs: u64) -> bool {
        self.not_before_secs <= now_secs && now_secs <= self.not_after_secs
    }
}

fn ip_of(octets: &[u8]) -> Option<IpAddr> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(octets).ok().map(IpAddr::from),
        _ => None,
    }
}

/// libpq's name match: case-insensitive, and a leading `*.` matches
/// exactly one label (not zero, not two).
fn name_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dns: &[&str], ips: &[&str], cn: Option<&str>) -> CertificateNames {
        CertificateNames {
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            common_name: cn.map(str::to_string),
            not_before_secs: 100,
            not_after_secs: 200,
        }
    }

    #[test]
    fn the_common_name_counts_only_without_dns_names() {
        assert!(names(&[], &[], Some("db.example")).names_host("DB.example"));
        assert!(!names(&["other.example"], &[], Some("db.example")).names_host("db.example"));
        assert!(names(&[], &["127.0.0.1"], Some("localhost")).names_host("localhost"));
        assert!(names(&[], &["127.0.0.1"], None).names_host("127.0.0.1"));
        assert!(!names(&[], &[], None).names_host("db.example"));
    }

    #[test]
    fn a_wildcard_stands_for_exactly_one_label() {
        let wild = names(&["*.rds.example"], &[], None);
        assert!(wild.names_host("db1.rds.example"));
        assert!(!wild.names_host("rds.example"));
        assert!(!wild.names_host("a.db1.rds.example"));
    }

    #[test]
    fn validity_is_inclusive() {
        let window = names(&[], &[], None);
        assert!(window.valid_at(100) && window.valid_at(200));
        assert!(!window.valid_at(99) && !window.valid_at(201));
    }
}
