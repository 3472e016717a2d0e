//! The canonical forms of the values a contract type reads: an IP address
//! (so equal addresses mask equally), a version's major number, a UUID.
//! Pure functions; `parse` applies them, and `privacy` puts a looked-up
//! value in the same form.

use std::net::IpAddr;

/// Canonical text of an IP address, so equal addresses mask equally:
/// IPv6 in RFC 5952 form (lower case, longest zero run compressed) and
/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as the IPv4 address it carries.
/// Returns `None` for anything that is not an IP address (including zone ids
/// and IPv4 with leading zeros, which some parsers read as octal).
pub fn canonical_ip(text: &str) -> Option<String> {
    let address: IpAddr = text.parse().ok()?;
    Some(address.to_canonical().to_string())
}

/// The first number of a dotted version of one to four numeric parts:
/// "2.3.0" -> 2, "0.96" -> 0, "2.3" -> 2. Anything else (letters,
/// suffixes, empty parts, a first number beyond i32) is `None`.
pub fn major_version(text: &str) -> Option<i32> {
    let mut parts = 0;
    for part in text.split('.') {
        parts += 1;
        if parts > 4 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    text.split('.').next()?.parse().ok()
}

/// A UUID in the 8-4-4-4-12 hex form, lower-cased.
pub fn canonical_uuid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let hex = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    (shape && hex).then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_forms_give_their_first_number() {
        assert_eq!(major_version("2.3.0"), Some(2));
        assert_eq!(major_version("0.96"), Some(0));
        assert_eq!(major_version("2.3"), Some(2));
        assert_eq!(major_version("10"), Some(10));
        assert_eq!(major_version("007.1"), Some(7));
        for bad in [
            "",
            "2.",
            ".2",
            "2..3",
            "v2.3",
            "2.3.0-beta",
            "1.2.3.4.5",
            "99999999999.1",
            "-1.2",
            "+1.2",
        ] {
            assert_eq!(major_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn equal_ip_addresses_canonicalize_equally() {
        assert_eq!(
            canonical_ip("2001:DB8:0:0:0:0:0:1"),
            canonical_ip("2001:db8::1")
        );
        assert_eq!(canonical_ip("2001:db8::1").unwrap(), "2001:db8::1");
        assert_eq!(canonical_ip("::ffff:10.1.2.3").unwrap(), "10.1.2.3");
        assert_eq!(canonical_ip("199.172.111.135").unwrap(), "199.172.111.135");
    }

    #[test]
    fn non_addresses_are_not_canonicalized() {
        for text in [
            "",
            "1.2.3",
            "256.1.1.1",
            "01.2.3.4",
            "fe80::1%eth0",
            " 1.2.3.4",
            "abc",
        ] {
            assert_eq!(canonical_ip(text), None, "{text:?}");
        }
    }

    mod ip_properties {
        use super::*;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        proptest! {
            #[test]
            fn ipv6_spellings_canonicalize_to_one_text(segments in any::<[u16; 8]>()) {
                let address = Ipv6Addr::from(segments);
                let expanded = segments.iter().map(|s| format!("{s:04X}")).collect::<Vec<_>>().join(":");
                let short = segments.iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":");
                let canonical = canonical_ip(&address.to_string());
                prop_assert!(canonical.is_some());
                prop_assert_eq!(canonical_ip(&expanded), canonical.clone());
                prop_assert_eq!(canonical_ip(&short), canonical);
            }

            #[test]
            fn ipv4_mapped_ipv6_equals_the_ipv4_address(octets in any::<[u8; 4]>()) {
                let v4 = Ipv4Addr::from(octets);
                let mapped = format!("::ffff:{v4}");
                prop_assert_eq!(canonical_ip(&mapped), Some(v4.to_string()));
            }
        }
    }
}
