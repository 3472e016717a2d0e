//! What both hand-written SQS transports share: the HTTP client, cached
//! credentials from the AWS chain, and SigV4 signing of a POST to the
//! endpoint's root. The signing is written out here rather than taken from
//! aws-sigv4 because every request pays for it: aws-sigv4's general
//! canonicalisation (URL parsing, header maps, formatting) was a seventh of
//! the CPU of a bare receive+delete loop. Requests here have one shape
//! (POST `/`, no query, a handful of headers), and a unit test checks the
//! result against aws-sigv4 byte for byte.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::SqsError;

/// Refresh temporary credentials this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Sends signed POSTs to one SQS endpoint, for one region, with
/// credentials from the AWS chain.
#[derive(Clone)]
pub(super) struct Signer {
    http: reqwest::Client,
    url: url::Url,
    host: String,
    region: String,
    credentials: Arc<CredentialCache>,
    keys: Arc<KeyCache>,
}

/// The last SigV4 signing key. Deriving it takes four HMACs over the
/// secret, the day and the region (about 1.5% of a drain's CPU when done
/// per request), so it is kept until one of those changes.
#[derive(Default)]
pub(super) struct KeyCache(std::sync::Mutex<Option<SigningKey>>);

struct SigningKey {
    date: String,
    region: String,
    secret: Zeroizing<String>,
    key: Zeroizing<[u8; 32]>,
}

impl KeyCache {
    fn key(&self, secret: &str, date: &str, region: &str) -> Zeroizing<[u8; 32]> {
        let mut cached = self.0.lock().expect("signing key lock");
        if let Some(hit) = cached
            .as_ref()
            .filter(|hit| hit.date == date && hit.region == region && hit.secret.as_str() == secret)
        {
            return hit.key.clone();
        }
        let prefixed = Zeroizing::new(format!("AWS4{secret}"));
        let mut key = hmac_sha256(prefixed.as_bytes(), date.as_bytes());
        for part in [region, "sqs", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let key = Zeroizing::new(key);
        *cached = Some(SigningKey {
            date: date.to_string(),
            region: region.to_string(),
            secret: Zeroizing::new(secret.to_string()),
            key: key.clone(),
        });
        key
    }
}

/// Keeps the last credentials until shortly before they expire, so the chain
/// (which may call instance metadata) is not asked on every request.
struct CredentialCache {
    provider: Option<SharedCredentialsProvider>,
    current: Mutex<Option<Credentials>>,
}

impl CredentialCache {
    async fn get(&self) -> Result<Credentials, SqsError> {
        let mut current = self.current.lock().await;
        let fresh = current.as_ref().is_some_and(|credentials| {
            credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + CREDENTIAL_REFRESH_MARGIN)
        });
        if !fresh {
            let provider = self.provider.as_ref().ok_or_else(|| {
                SqsError::refused("no AWS credentials provider configured".into())
            })?;
            // A failed refresh (instance metadata or STS unreachable for a
            // moment) is worth retrying; a missing provider is not.
            let credentials = provider
                .provide_credentials()
                .await
                .map_err(|e| SqsError::Transient(format!("could not load AWS credentials: {e}")))?;
            *current = Some(credentials);
        }
        // Just filled above when it was empty or stale.
        Ok(current.clone().expect("credentials cached"))
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }
}

impl Signer {
    /// A signer for POSTs to `origin` (scheme, host, port), with the region
    /// and credentials of `aws`.
    pub(super) fn new(aws: &SdkConfig, origin: &str) -> anyhow::Result<Self> {
        let text = format!("{}/", origin.trim_end_matches('/'));
        let url = url::Url::parse(&text).with_context(|| format!("SQS endpoint {text:?}"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => anyhow::bail!("SQS endpoint {text:?} has no host"),
        };
        Ok(Signer {
            http: http_client()?,
            url,
            host,
            region: aws
                .region()
                .map_or_else(|| crate::aws::DEFAULT_REGION.into(), |r| r.to_string()),
            credentials: Arc::new(CredentialCache {
                provider: aws.credentials_provider(),
                current: Mutex::new(None),
            }),
            keys: Arc::default(),
        })
    }

    /// Drops the cached credentials (SQS said they expired), so the next
    /// request signs with fresh ones from the chain.
    pub(super) async fn forget_credentials(&self) {
        tracing::info!("SQS reported expired credentials; loading fresh ones");
        self.credentials.forget().await;
    }

    /// Where the requests go: the endpoint's root.
    pub(super) fn url(&self) -> &str {
        self.url.as_str()
    }

    /// POSTs `body` to the endpoint's root with `headers` (lowercase
    /// names; signed too, as is `host`) and returns the status and reply.
    /// No answer at all is transient.
    pub(super) async fn exchange(
        &self,
        action: &str,
        body: Vec<u8>,
        headers: &[(&'static str, &str)],
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), SqsError> {
        let credentials = self.credentials.get().await?;
        let signature = PostToRoot {
            host: &self.host,
            region: &self.region,
            headers,
            body: &body,
        }
        .sign(&credentials, SystemTime::now(), &self.keys);
        let mut request = self.http.post(self.url.clone()).timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        for (name, value) in signature {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SqsError::Transient(format!("{action}: {}", error_chain(&e))))?;
        let status = response.status();
        let reply = response
            .bytes()
            .await
            .map_err(|e| SqsError::Transient(format!("{action}: reading reply: {e}")))?;
        Ok((status, reply))
    }
}

/// A POST to `/` of one host, the only request shape veil sends to SQS.
struct PostToRoot<'a> {
    host: &'a str,
    region: &'a str,
    /// Headers to sign besides host, date and token: lowercase names.
    headers: &'a [(&'static str, &'a str)],
    body: &'a [u8],
}

impl PostToRoot<'_> {
    /// The SigV4 headers to add: `x-amz-date`, `x-amz-security-token` when
    /// the credentials carry one, and `authorization`.
    fn sign(
        &self,
        credentials: &Credentials,
        now: SystemTime,
        keys: &KeyCache,
    ) -> Vec<(&'static str, String)> {
        let now: DateTime<Utc> = now.into();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let mut added = vec![("x-amz-date", amz_date.clone())];
        if let Some(token) = credentials.session_token() {
            added.push(("x-amz-security-token", token.to_string()));
        }
        let mut headers: Vec<(&str, &str)> = self.headers.to_vec();
        headers.push(("host", self.host));
        headers.extend(added.iter().map(|(name, value)| (*name, value.as_str())));
        headers.sort_unstable_by_key(|(name, _)| *name);
        let signed_names = headers
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(";");
        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n/\n\n");
        for (name, value) in &headers {
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(value.trim());
            canonical.push('\n');
        }
        canonical.push('\n');
        canonical.push_str(&signed_names);
        canonical.push('\n');
        canonical.push_str(&hex::encode(Sha256::digest(self.body)));
        let scope = format!("{date}/{}/sqs/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key = keys.key(credentials.secret_access_key(), date, self.region);
        let signature = hex::encode(hmac_sha256(&*key, string_to_sign.as_bytes()));
        added.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
                credentials.access_key_id()
            ),
        ));
        added
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The HTTP client for our own SQS calls. SQS never redirects, and veil
/// retries failed calls itself (with backoff, counted in its metrics), so
/// reqwest's redirect and retry layers are switched off: each costs CPU on
/// every request.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(50))
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .build()?)
}

/// The error and its sources, one line (reqwest hides the useful part).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    /// aws-sigv4's headers for the same request, as the oracle.
    fn reference(
        credentials: &Credentials,
        request: &PostToRoot<'_>,
        scheme: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let identity: Identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(request.region)
            .name("sqs")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("{scheme}://{}/", request.host);
        let signable = SignableRequest::new(
            "POST",
            &url,
            request.headers.iter().copied(),
            SignableBody::Bytes(request.body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut headers: Vec<(String, String)> = instructions
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        headers.sort();
        headers
    }

    fn ours(
        credentials: &Credentials,
        request: &PostToRoot<'_>,
        now: SystemTime,
        keys: &KeyCache,
    ) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = request
            .sign(credentials, now, keys)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        headers.sort();
        headers
    }

    #[test]
    fn signatures_equal_aws_sigv4_for_json_and_query_requests() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_123);
        let with_token = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG",
            Some("tok/en+=".into()),
            None,
            "t",
        );
        let without_token = Credentials::new("AKIDEXAMPLE", "secret", None, None, "t");
        let json = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "AmazonSQS.ReceiveMessage"),
        ];
        let form = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let cases = [
            (
                "http",
                "localhost:4566",
                "us-east-1",
                &json[..],
                &br#"{"QueueUrl":"http://q"}"#[..],
            ),
            (
                "https",
                "sqs.eu-west-1.amazonaws.com",
                "eu-west-1",
                &json[..],
                &b""[..],
            ),
            (
                "http",
                "127.0.0.1:4510",
                "us-east-1",
                &form[..],
                &b"Action=ReceiveMessage&Version=2012-11-05"[..],
            ),
        ];
        // One key cache for all cases, as a signer keeps it: each change of
        // secret, region or day must derive a new key.
        let keys = KeyCache::default();
        let next_day = now + Duration::from_secs(86_400);
        for credentials in [&with_token, &without_token, &with_token] {
            for (scheme, host, region, headers, body) in cases {
                let request = PostToRoot {
                    host,
                    region,
                    headers,
                    body,
                };
                for when in [now, next_day, now] {
                    assert_eq!(
                        ours(credentials, &request, when, &keys),
                        reference(credentials, &request, scheme, when),
                        "{scheme}://{host} {headers:?}"
                    );
                }
            }
        }
    }

    /// A provider that counts its calls and fails when told to.
    #[derive(Debug, Default, Clone)]
    struct Counting {
        calls: Arc<std::sync::atomic::AtomicUsize>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            let result = if self.failing.load(Ordering::SeqCst) {
                Err(
                    aws_credential_types::provider::error::CredentialsError::not_loaded(
                        "IMDS down",
                    ),
                )
            } else {
                Ok(Credentials::new("AKID", "secret", None, None, "counting"))
            };
            aws_credential_types::provider::future::ProvideCredentials::ready(result)
        }
    }

    #[tokio::test]
    async fn credentials_are_cached_forgotten_on_expiry_and_a_failed_load_is_transient() {
        use std::sync::atomic::Ordering;
        let provider = Counting::default();
        let cache = CredentialCache {
            provider: Some(SharedCredentialsProvider::new(provider.clone())),
            current: Mutex::new(None),
        };

        cache.get().await.unwrap();
        cache.get().await.unwrap();
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1, "cached");
        cache.forget().await;
        provider.failing.store(true, Ordering::SeqCst);
        let failed = cache.get().await.unwrap_err();
        provider.failing.store(false, Ordering::SeqCst);
        cache.get().await.unwrap();

        assert!(failed.is_transient(), "{failed}");
        assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_secret_never_appears_in_the_headers() {
        let credentials = Credentials::new("AKID", "very-secret", Some("token".into()), None, "t");
        let request = PostToRoot {
            host: "localhost:4566",
            region: "us-east-1",
            headers: &[("content-type", "application/x-amz-json-1.0")],
            body: b"{}",
        };
        let headers = request.sign(&credentials, SystemTime::now(), &KeyCache::default());
        assert!(headers
            .iter()
            .all(|(_, value)| !value.contains("very-secret")));
        assert!(headers.iter().any(|(name, _)| *name == "authorization"));
    }

    #[test]
    fn the_signer_posts_to_the_endpoint_root_and_signs_its_host_with_the_port() {
        let aws = SdkConfig::builder().build();
        let signer = Signer::new(&aws, "http://localhost:4566").unwrap();
        assert_eq!(
            (signer.url(), signer.host.as_str()),
            ("http://localhost:4566/", "localhost:4566")
        );
        let signer = Signer::new(&aws, "https://sqs.us-east-1.amazonaws.com").unwrap();
        assert_eq!(signer.host, "sqs.us-east-1.amazonaws.com");
        assert_eq!(signer.region, "us-east-1");
    }
}
