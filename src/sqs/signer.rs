//! What both hand-written SQS transports share: the HTTP client, cached
//! credentials from the AWS chain, and SigV4 signing (`crate::sigv4`, the
//! one signer veil has) of a POST to the endpoint's root.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::Credentials;
use crate::aws::SdkConfig;
use crate::aws::{ProvideCredentials, SharedCredentialsProvider};
use anyhow::Context as _;
use tokio::sync::Mutex;

use super::SqsError;

/// Refresh temporary credentials this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Sends signed POSTs to one SQS endpoint, for one region, with
/// credentials from the AWS chain.
#[derive(Clone)]
pub(super) struct Signer {
    http: reqwest::Client,
    url: url::Url,
    region: String,
    credentials: Arc<CredentialCache>,
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
        if url.host_str().is_none() {
            anyhow::bail!("SQS endpoint {text:?} has no host");
        }
        Ok(Signer {
            http: http_client()?,
            url,
            region: aws
                .region()
                .map_or_else(|| crate::aws::DEFAULT_REGION.into(), |r| r.to_string()),
            credentials: Arc::new(CredentialCache {
                provider: aws.credentials_provider(),
                current: Mutex::new(None),
            }),
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
        self.exchange_within(action, body, headers, timeout, None)
            .await
    }

    /// `exchange`, asking `room` for the bytes the reply takes before they
    /// are read.
    pub(super) async fn exchange_within(
        &self,
        action: &str,
        body: Vec<u8>,
        headers: &[(&'static str, &str)],
        timeout: Duration,
        room: Option<&dyn super::ReplyRoom>,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), SqsError> {
        let credentials = self.credentials.get().await?;
        let signature = crate::aws::sigv4::sign_headers(
            &credentials,
            &crate::aws::sigv4::Scope {
                service: "sqs",
                region: &self.region,
            },
            &crate::aws::sigv4::Request {
                method: "POST",
                url: self.url.as_str(),
                headers,
                body: &body,
            },
            SystemTime::now(),
        );
        let mut request = self.http.post(self.url.clone()).timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        for (name, value) in signature {
            request = request.header(name, value);
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SqsError::Transient(format!("{action}: {}", error_chain(&e))))?;
        let status = response.status();
        let reply = read_reply_within(&mut response, room)
            .await
            .map_err(|e| SqsError::Transient(format!("{action}: reading reply: {e}")))?;
        Ok((status, bytes::Bytes::from(reply)))
    }
}

/// The whole reply, read chunk by chunk into one buffer sized from its
/// Content-Length. Collecting the chunks first and then copying them (what
/// `Response::bytes` does) holds two copies at once: for a receive of ten
/// 1 MiB bodies, 20 MiB that the in-flight bound does not see.
pub async fn read_reply(response: &mut reqwest::Response) -> reqwest::Result<Vec<u8>> {
    read_reply_within(response, None).await
}

/// `read_reply`, asking `room` for the buffer's bytes before it holds them:
/// the announced length first, then (a reply without one, or longer than
/// it said) twice as much each time it would grow.
async fn read_reply_within(
    response: &mut reqwest::Response,
    room: Option<&dyn super::ReplyRoom>,
) -> reqwest::Result<Vec<u8>> {
    // A length above SQS's largest reply (ten 1 MiB messages, escaped) is
    // not believed for the allocation; the buffer grows if it must.
    const LARGEST_PLAUSIBLE_REPLY: u64 = 64 << 20;
    let expected = response
        .content_length()
        .unwrap_or(0)
        .min(LARGEST_PLAUSIBLE_REPLY) as usize;
    if let Some(room) = room {
        room.make_room(expected).await;
    }
    let mut reply = Vec::with_capacity(expected);
    while let Some(chunk) = response.chunk().await? {
        let needed = reply.len() + chunk.len();
        if needed > reply.capacity() {
            let grown = needed.max(reply.capacity() * 2);
            if let Some(room) = room {
                room.make_room(grown).await;
            }
            reply.reserve_exact(grown - reply.len());
        }
        reply.extend_from_slice(&chunk);
    }
    Ok(reply)
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
    fn the_signer_posts_to_the_endpoint_root_in_the_configured_region() {
        let aws = SdkConfig::builder().build();
        let signer = Signer::new(&aws, "http://localhost:4566").unwrap();
        assert_eq!(signer.url(), "http://localhost:4566/");
        let signer = Signer::new(&aws, "https://sqs.us-east-1.amazonaws.com").unwrap();
        assert_eq!(signer.url(), "https://sqs.us-east-1.amazonaws.com/");
        assert_eq!(signer.region, "us-east-1");
    }
}
