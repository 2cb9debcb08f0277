//! The HTTP side: shared `reqwest` clients (rustls only, no redirects — a redirected token
//! request could hand the credentials to another host), token requests, and the JSON documents
//! of discovery and JWKS, all with bounded response sizes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use secrecy::ExposeSecret;
use url::Url;
use zeroize::Zeroizing;

use super::error::FetchError;
use super::request::TokenRequest;
use super::response::{self, IssuedToken};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{DEFAULT_MAX_CONCURRENT_REQUESTS, Proxy, Timeouts};

/// A response larger than this is refused; real token responses, discovery documents and JWKS
/// are a few KiB.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Distinct client settings kept at most (rotated certificates add new ones).
const MAX_CACHED_CLIENTS: usize = 64;

pub const USER_AGENT: &str = concat!("tokend/", env!("CARGO_PKG_VERSION"));

/// Everything that shapes a connection, with file contents already read, so a rotated CA file
/// or client certificate yields a different client.
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain followed by its key (PEM), for `tls_client_auth`.
    pub identity_pem: Option<Zeroizing<Vec<u8>>>,
    pub proxy: Proxy,
}

impl ClientSettings {
    fn key(&self) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&self.connect_timeout.as_nanos().to_le_bytes());
        for part in [
            self.ca_pem.as_deref(),
            self.identity_pem.as_deref().map(|v| v.as_slice()),
        ] {
            match part {
                Some(bytes) => {
                    ctx.update(&(bytes.len() as u64).to_le_bytes());
                    ctx.update(bytes);
                }
                None => ctx.update(b"-"),
            }
        }
        // The full proxy URL, password included (its Debug form masks the password).
        let proxy = match &self.proxy {
            Proxy::Environment => "env".to_owned(),
            Proxy::Disabled => "none".to_owned(),
            Proxy::Url { url, no_proxy } => format!("{url} {}", no_proxy.join(",")),
        };
        ctx.update(proxy.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    pub fn build(&self) -> Result<reqwest::Client, FetchError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(pem) = &self.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| FetchError::Tls(format!("ca_file: {}", chain(&e))))?;
            if roots.is_empty() {
                return Err(FetchError::Tls(
                    "ca_file holds no PEM certificate; name a file of `-----BEGIN CERTIFICATE-----` blocks (the CA that signed the IdP's certificate)".into(),
                ));
            }
            builder = builder.tls_certs_merge(roots);
        }
        if let Some(pem) = &self.identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| FetchError::Tls(format!("client certificate or key: {}", chain(&e))))?;
            builder = builder.identity(identity);
        }
        builder = match &self.proxy {
            Proxy::Environment => builder,
            Proxy::Disabled => builder.no_proxy(),
            Proxy::Url { url, no_proxy } => {
                let proxy = reqwest::Proxy::all(url.clone())
                    .map_err(|e| FetchError::Tls(format!("proxy: {}", chain(&e))))?
                    .no_proxy(reqwest::NoProxy::from_string(&no_proxy.join(",")));
                builder.proxy(proxy)
            }
        };
        builder.build().map_err(|e| FetchError::Tls(chain(&e)))
    }
}

/// Shared HTTP clients, one per distinct setting. A `reqwest::Client` carries its own TLS
/// configuration and root store (over 100 KiB each), so groups share them instead of building
/// one each; the request timeout is set per request. Every client's requests pass the same
/// `Gates`.
#[derive(Clone)]
pub struct HttpClients {
    cache: Arc<Mutex<HashMap<[u8; 32], reqwest::Client>>>,
    gates: Gates,
}

impl Default for HttpClients {
    fn default() -> HttpClients {
        HttpClients::new(DEFAULT_MAX_CONCURRENT_REQUESTS)
    }
}

/// At most `limit` exchanges with one server (scheme, host and port) at once, whichever clients
/// run them: when a thousand tokens are due together, a few connections are opened and reused,
/// instead of a thousand at once (with a thousand TLS handshakes, and the memory of each
/// connection kept by the allocator). An exchange takes its turn before it reads its credential
/// or builds its request, so that waiting ones hold no secret, request or assertion (which
/// would age in the queue), and before its timeouts start; its requests run one after another.
#[derive(Clone)]
struct Gates {
    inner: Arc<Mutex<GateMap>>,
}

struct GateMap {
    limit: usize,
    by_server: HashMap<String, Arc<Semaphore>>,
}

impl Gates {
    fn new(limit: usize) -> Gates {
        Gates {
            inner: Arc::new(Mutex::new(GateMap {
                limit,
                by_server: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateMap> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, url: &Url) -> Turn {
        let gate = {
            let mut map = self.lock();
            let limit = map.limit;
            map.by_server
                .entry(url.origin().ascii_serialization())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        };
        Turn {
            _permit: gate.acquire_owned().await.expect("a gate is never closed"),
        }
    }

    /// A new limit applies to exchanges from now on (those under way finish under the old one).
    fn set_limit(&self, limit: usize) {
        let mut map = self.lock();
        if map.limit != limit {
            map.limit = limit;
            map.by_server.clear();
        }
    }
}

/// One exchange's turn with a server, held until it is dropped.
#[must_use = "the turn ends when it is dropped"]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl HttpClients {
    /// Clients whose exchanges with any one server are at most `max_concurrent_requests` at once.
    pub fn new(max_concurrent_requests: usize) -> HttpClients {
        HttpClients {
            cache: Arc::default(),
            gates: Gates::new(max_concurrent_requests),
        }
    }

    /// Changes the limit (a reload), for every client sharing these.
    pub fn set_max_concurrent_requests(&self, n: usize) {
        self.gates.set_limit(n);
    }

    /// Waits for a turn with the server of `url` (see `Gates`). Every request of the exchange is
    /// sent under it: it must be dropped before the same task asks for another.
    pub async fn turn(&self, url: &Url) -> Turn {
        self.gates.enter(url).await
    }

    pub fn get(&self, settings: &ClientSettings, timeouts: Timeouts) -> Result<HttpClient, FetchError> {
        let key = settings.key();
        if let Some(inner) = self
            .cache
            .lock()
            .expect("http client cache poisoned")
            .get(&key)
            .cloned()
        {
            return Ok(HttpClient { inner, timeouts });
        }
        // Built without the lock held: loading the system's roots takes a while.
        let inner = settings.build()?;
        let mut cache = self.cache.lock().expect("http client cache poisoned");
        if cache.len() >= MAX_CACHED_CLIENTS
            && let Some(evict) = cache.keys().next().copied()
        {
            cache.remove(&evict);
        }
        cache.insert(key, inner.clone());
        Ok(HttpClient { inner, timeouts })
    }
}

/// An HTTP client for one grant's IdP. Its requests are not gated: the exchange that sends them
/// holds a `Turn`.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    timeouts: Timeouts,
}

/// A response, read completely.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<Duration>,
    pub body: Zeroizing<Vec<u8>>,
}

impl HttpClient {
    /// Sends the token request and reads the answer.
    pub async fn fetch(&self, url: &Url, request: &TokenRequest) -> Result<IssuedToken, FetchError> {
        let mut builder = self
            .inner
            .post(url.clone())
            .timeout(self.timeouts.request)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(request.body.expose_secret().to_owned());
        if let Some(auth) = &request.authorization {
            let mut value =
                reqwest::header::HeaderValue::from_str(auth.expose_secret()).map_err(|_| FetchError::Transport {
                    url: url.to_string(),
                    reason: "invalid credentials header".into(),
                })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let answer = self.send(url, builder).await?;
        Ok(response::parse(
            answer.status,
            answer.content_type.as_deref(),
            answer.retry_after,
            &answer.body,
        )?)
    }

    /// GETs a JSON document (discovery, JWKS).
    pub async fn get_json(&self, url: &Url) -> Result<Answer, FetchError> {
        let builder = self
            .inner
            .get(url.clone())
            .timeout(self.timeouts.request)
            .header(ACCEPT, "application/json");
        self.send(url, builder).await
    }

    /// Sends, and reads the whole body (the connection is then free for the next request).
    async fn send(&self, url: &Url, builder: reqwest::RequestBuilder) -> Result<Answer, FetchError> {
        let mut response = builder.send().await.map_err(|e| self.transport_error(url, &e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
        let mut body = Zeroizing::new(Vec::with_capacity(4096));
        let body_error = |e: &reqwest::Error, received: usize| match self.transport_error(url, e) {
            FetchError::Timeout { url, timeout } => FetchError::SlowBody {
                url,
                timeout,
                status,
                received,
            },
            other => other,
        };
        while let Some(chunk) = response.chunk().await.map_err(|e| body_error(&e, body.len()))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                    limit: MAX_RESPONSE_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        // The connection goes back to the pool from a task of hyper's once the body is read:
        // let it run before the next exchange takes the turn, or that request finds no idle
        // connection and opens another.
        drop(response);
        tokio::task::yield_now().await;
        Ok(Answer {
            status,
            content_type,
            retry_after,
            body,
        })
    }

    fn transport_error(&self, url: &Url, e: &reqwest::Error) -> FetchError {
        let url = url.to_string();
        if e.is_timeout() {
            let budget = if e.is_connect() {
                self.timeouts.connect
            } else {
                self.timeouts.request
            };
            FetchError::Timeout {
                url,
                timeout: humantime::format_duration(budget).to_string(),
            }
        } else if let Some(reason) = untrusted_certificate(e) {
            FetchError::Certificate { url, reason }
        } else {
            FetchError::Transport { url, reason: chain(e) }
        }
    }
}

/// Why the server's certificate was refused, if that is why the request failed.
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        // rustls's error travels inside io::Errors (nested, in hyper's chain), whose `source`
        // skips the error they wrap: unwrap them by hand.
        let mut candidate = err;
        loop {
            if let Some(rustls::Error::InvalidCertificate(why)) = candidate.downcast_ref::<rustls::Error>() {
                return Some(describe_certificate_error(why));
            }
            match candidate.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(inner) => candidate = inner,
                None => break,
            }
        }
        current = err.source();
    }
    None
}

fn describe_certificate_error(why: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match why {
        C::UnknownIssuer | C::BadSignature => format!("it is not signed by a CA that tokend trusts ({why:?})"),
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet (is the clock right?)".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "it is not issued for this host name".into(),
        C::Revoked => "it has been revoked".into(),
        // webpki's name for a server certificate marked as a CA (`CA:TRUE`), as a self-signed
        // certificate made with `openssl req -x509` is: refused even where the CA is trusted.
        C::Other(o) if o.to_string().contains("CaUsedAsEndEntity") => {
            "it is a CA certificate (CA:TRUE) used as the server's own, which is refused even when trusted; give the server a certificate issued by that CA".into()
        }
        other => format!("{other:?}"),
    }
}

/// The innermost cause of an error, which is the useful part of reqwest's error chain
/// ("Connection refused (os error 111)"). reqwest errors carry no request body or headers.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Webpki(&'static str);
    impl std::fmt::Display for Webpki {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Webpki {}

    /// Each refusal says why in words, never as rustls's Debug form.
    #[test]
    fn certificate_refusals_are_explained() {
        use rustls::CertificateError as C;
        let other = |name| C::Other(rustls::OtherError(std::sync::Arc::new(Webpki(name))));
        for (why, says) in [
            (C::UnknownIssuer, "not signed by a CA that tokend trusts"),
            (C::Expired, "it has expired"),
            (C::NotValidForName, "not issued for this host name"),
            (
                other("CaUsedAsEndEntity"),
                "a CA certificate (CA:TRUE) used as the server's own",
            ),
        ] {
            let text = describe_certificate_error(&why);
            assert!(text.contains(says) && !text.contains("OtherError"), "{why:?}: {text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_gets_at_most_the_limit_at_once_and_other_servers_are_not_held_up() {
        let gates = Gates::new(2);
        let a = Url::parse("https://idp.example/oauth/token").unwrap();
        let a_too = Url::parse("https://idp.example:443/other").unwrap();
        let b = Url::parse("https://other.example/token").unwrap();
        let wait = Duration::from_secs(1);
        let first = gates.enter(&a).await;
        let _second = gates.enter(&a_too).await;
        assert!(
            tokio::time::timeout(wait, gates.enter(&a)).await.is_err(),
            "a third request to the same server went in"
        );
        // Another server has its own gate.
        assert!(tokio::time::timeout(wait, gates.enter(&b)).await.is_ok());
        drop(first);
        let _third = tokio::time::timeout(wait, gates.enter(&a)).await.unwrap();
        // A new limit applies to new requests.
        gates.set_limit(3);
        for _ in 0..3 {
            std::mem::forget(tokio::time::timeout(wait, gates.enter(&a)).await.unwrap());
        }
        assert!(tokio::time::timeout(wait, gates.enter(&a)).await.is_err());
    }
}
