//! AWS Signature Version 4, for everything veil signs itself: the SQS
//! requests of its own clients (`sqs::signer`) and RDS IAM authentication
//! tokens (presigned `connect` URLs). Both go through `aws-sigv4`, the
//! implementation the AWS SDKs use; docs/performance.md has the
//! measurement that decided against a hand-written signer.

use std::borrow::Cow;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use zeroize::Zeroizing;

/// How long an RDS IAM authentication token is valid.
pub const IAM_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(900);

/// Where a signature is valid: one service in one region.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The signing name (`sqs`, `rds-db`).
    pub service: &'a str,
    /// The region.
    pub region: &'a str,
}

/// A request to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `POST`, `GET`.
    pub method: &'a str,
    /// The full URL.
    pub url: &'a str,
    /// The request's own headers (lower-case names); all are signed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// The SigV4 headers to add to a request: `x-amz-date`,
/// `x-amz-security-token` when the credentials carry one, and
/// `authorization`.
pub fn sign_headers(
    credentials: &Credentials,
    scope: &Scope<'_>,
    request: &Request<'_>,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        // Every field is set above.
        .expect("complete SigV4 signing parameters")
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .expect("a request with valid headers");
    let (instructions, _) = sign(signable, &params)
        .expect("SigV4 signing of a well-formed request")
        .into_parts();
    instructions
        .headers()
        .filter_map(|(name, value)| {
            let name = match name {
                "x-amz-date" => "x-amz-date",
                "x-amz-security-token" => "x-amz-security-token",
                "authorization" => "authorization",
                _ => return None,
            };
            Some((name, value.to_string()))
        })
        .collect()
}

/// An RDS IAM authentication token: a presigned `connect` URL for `user`
/// at `host:port`, valid for 15 minutes, without its scheme (as botocore's
/// `generate_db_auth_token` makes it). Used as the connection's password;
/// it is a bearer credential.
pub fn rds_auth_token(
    credentials: &Credentials,
    region: &str,
    host: &str,
    port: u16,
    user: &str,
    now: SystemTime,
) -> Zeroizing<String> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(IAM_TOKEN_LIFETIME);
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(now)
        .settings(settings)
        .build()
        .expect("complete SigV4 signing parameters")
        .into();
    let base = format!(
        "{host}:{port}/?Action=connect&DBUser={}",
        query_encode(user)
    );
    let url = format!("https://{base}");
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .expect("a request without headers");
    let (instructions, _) = sign(signable, &params)
        .expect("SigV4 presigning of a well-formed request")
        .into_parts();
    // The parameters in the order botocore writes them (any order signs
    // the same; one order lets tokens be compared with botocore's).
    let mut params: Vec<&(&str, Cow<'static, str>)> = instructions.params().iter().collect();
    params.sort_by_key(|(name, _)| PARAMETER_ORDER.iter().position(|known| known == name));
    let mut token = Zeroizing::new(base);
    for (name, value) in params {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&query_encode(value));
    }
    token
}

/// The order of a presigned URL's SigV4 parameters in botocore's tokens.
const PARAMETER_ORDER: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
];

/// Percent-encodes a query value the way SigV4 canonicalises it: every
/// byte but the RFC 3986 unreserved ones.
fn query_encode(value: &str) -> Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
    if value.bytes().all(unreserved) {
        return Cow::Borrowed(value);
    }
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if unreserved(byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Cow::Owned(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_headers_carry_the_date_the_token_and_the_signature_never_the_secret() {
        let credentials = Credentials::new("AKID", "very-secret", Some("tok".into()), None, "t");
        let headers = sign_headers(
            &credentials,
            &Scope {
                service: "sqs",
                region: "eu-west-1",
            },
            &Request {
                method: "POST",
                url: "http://localhost:4566/",
                headers: &[("content-type", "application/x-amz-json-1.0")],
                body: b"{}",
            },
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_072_000),
        );
        let mut names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["authorization", "x-amz-date", "x-amz-security-token"]
        );
        let authorization = &headers
            .iter()
            .find(|(n, _)| *n == "authorization")
            .unwrap()
            .1;
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKID/20251125/eu-west-1/sqs/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{authorization}"
        );
        assert!(headers
            .iter()
            .all(|(_, value)| !value.contains("very-secret")));
    }

    #[test]
    fn a_token_is_a_presigned_connect_url_without_its_scheme() {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "t");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_072_000);

        let token = rds_auth_token(
            &credentials,
            "eu-west-1",
            "db.example",
            5432,
            "veil pipeline",
            now,
        );

        assert!(
            token.starts_with("db.example:5432/?Action=connect&DBUser=veil%20pipeline&"),
            "{}",
            *token
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20251125%2Feu-west-1%2Frds-db%2Faws4_request",
            "X-Amz-Expires=900",
            "X-Amz-Signature=",
        ] {
            assert!(token.contains(part), "{part}: {}", *token);
        }
        assert!(!token.contains("secret"));
    }
}
