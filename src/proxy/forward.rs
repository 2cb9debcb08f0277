//! One proxied request: the caller's request to the upstream, the client's token in place of
//! any `Authorization`, hop-by-hop headers dropped both ways, bodies streamed.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use secrecy::ExposeSecret;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::{ClientName, TokenProxy};
use crate::metrics::Metrics;
use crate::oauth::client::ClientSettings;
use crate::store::Store;
use crate::token::Token;

/// A request body up to this size is kept, so the request can be sent again after a 401 with
/// a new token; a larger one streams and is not sent again.
const REPLAYABLE_BODY: u64 = 64 * 1024;
/// An upstream 401 asks for a new token at most this often per proxy.
const FORCED_REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How long a request waits for the new token after a 401.
const NEW_TOKEN_WAIT: Duration = Duration::from_secs(10);
/// The upstream's answer must start within this; the body then streams for as long as it takes.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and those the
/// proxy replaces.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Upstream {
    client: ClientName,
    base: Url,
    http: reqwest::Client,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    last_forced: Mutex<Option<Instant>>,
}

type Answer = Response<reqwest::Body>;

/// Why the upstream gave no answer.
enum Failure {
    /// None began within `FIRST_BYTE_TIMEOUT`.
    Timeout,
    Http(reqwest::Error),
}

impl Upstream {
    pub fn new(config: &TokenProxy, store: Arc<Store>, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        let ca_pem = match &config.transport.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?)
            }
            None => None,
        };
        let settings = ClientSettings {
            connect_timeout: config.connect_timeout,
            ca_pem,
            identity_pem: None,
            proxy: config.transport.proxy.clone(),
        };
        let http = settings
            .build()
            .map_err(|e| format!("proxy for {}: {e}", config.client))?;
        Ok(Upstream {
            client: config.client.clone(),
            base: config.upstream.clone(),
            http,
            store,
            metrics,
            last_forced: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &ClientName {
        &self.client
    }

    /// Counts a connection hyper ended with an error, and its own answer (400, 431) if it gave
    /// one, as the socket API does.
    pub fn connection_error(&self, cut: crate::server::cutoff::Cutoff) {
        self.metrics.proxy_connection_error(&self.client, cut.reason);
        if let Some(status) = cut.answered {
            self.metrics.proxy_request(&self.client, status);
        }
    }

    /// Answers one request. `allowed`: whether the caller may use this proxy; `who`: its uid and
    /// pid, on a Unix socket.
    pub async fn handle(&self, req: Request<Incoming>, allowed: bool, who: Option<(u32, i32)>) -> Answer {
        let answer = self.answer(req, allowed, who).await;
        self.metrics.proxy_request(&self.client, answer.status().as_u16());
        answer
    }

    async fn answer(&self, req: Request<Incoming>, allowed: bool, who: Option<(u32, i32)>) -> Answer {
        if !allowed {
            let (uid, pid) = who.unwrap_or_default();
            warn!(client = %self.client, uid, pid, "refused a proxy request: the caller may not read this client");
            return text(
                StatusCode::FORBIDDEN,
                format!("uid {uid} may not use the token proxy for client {}\n", self.client),
            );
        }
        let Some(url) = self.target(req.uri()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "the path leaves the upstream's base path\n".into(),
            );
        };
        let Some((token, version)) = self.token() else {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("client {} has no valid token yet\n", self.client),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        };
        let (parts, body) = req.into_parts();
        let headers = forwarded(&parts.headers);
        let length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        // Small or no bodies are kept, so that the request can go again after a 401.
        let (first_body, kept) = match (length, chunked) {
            (Some(n), false) if n <= REPLAYABLE_BODY => match body.collect().await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    (reqwest::Body::from(bytes.clone()), Some(bytes))
                }
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n")),
            },
            (None, false) => (reqwest::Body::from(Bytes::new()), Some(Bytes::new())),
            _ => (reqwest::Body::wrap(body), None),
        };
        let first = self.send(&parts.method, &url, &headers, first_body, &token).await;
        let refused = matches!(&first, Ok(r) if r.status() == StatusCode::UNAUTHORIZED);
        if refused
            && let Some(bytes) = kept
            && self.may_force_refresh()
        {
            info!(client = %self.client, upstream = %self.base, "the upstream refused the token (401); asking for a new one and trying once more");
            if let Some(new) = self.new_token(version).await {
                let again = self
                    .send(&parts.method, &url, &headers, reqwest::Body::from(bytes), &new)
                    .await;
                return self.relay(again);
            }
        }
        self.relay(first)
    }

    /// The upstream URL for the request's path and query, if the path is one that cannot
    /// climb out of the base path (`escapes`) and, joined to it, stays under it.
    fn target(&self, uri: &hyper::Uri) -> Option<Url> {
        if escapes(uri.path()) {
            return None;
        }
        let path = uri.path().trim_start_matches('/');
        let mut url = self.base.join(path).ok()?;
        url.set_query(uri.query());
        (url.origin() == self.base.origin() && url.path().starts_with(self.base.path())).then_some(url)
    }

    /// The client's valid token and its version, without copying the rest of its snapshot.
    fn token(&self) -> Option<(Arc<Token>, u64)> {
        let now = SystemTime::now();
        self.store
            .with(self.client.as_str(), |s| {
                s.valid_token(now).map(|t| (t.clone(), s.version))
            })
            .flatten()
    }

    fn may_force_refresh(&self) -> bool {
        let mut last = self.last_forced.lock().expect("proxy lock poisoned");
        if last.is_some_and(|at| at.elapsed() < FORCED_REFRESH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Asks for a new token and waits for one newer than `version`.
    async fn new_token(&self, version: u64) -> Option<Arc<Token>> {
        let mut changes = self.store.subscribe(self.client.as_str())?;
        if !self.store.request_refresh(&self.client) {
            return None;
        }
        let wait = async {
            loop {
                {
                    let s = changes.borrow_and_update();
                    if s.version > version
                        && let Some(t) = s.valid_token(SystemTime::now())
                    {
                        return Some(t.clone());
                    }
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(NEW_TOKEN_WAIT, wait).await.ok().flatten()
    }

    async fn send(
        &self,
        method: &hyper::Method,
        url: &Url,
        headers: &HeaderMap,
        body: reqwest::Body,
        token: &Token,
    ) -> Result<reqwest::Response, Failure> {
        let mut authorization =
            HeaderValue::from_str(&format!("{} {}", token.token_type, token.access_token.expose_secret()))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        authorization.set_sensitive(true);
        let request = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .header(header::AUTHORIZATION, authorization)
            .body(body);
        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, request.send()).await {
            Ok(result) => result.map_err(Failure::Http),
            Err(_) => Err(Failure::Timeout),
        }
    }

    fn relay(&self, result: Result<reqwest::Response, Failure>) -> Answer {
        match result {
            Ok(response) => {
                debug!(client = %self.client, status = response.status().as_u16(), "proxied");
                let mut answer: Answer = response.into();
                strip_hop_by_hop(answer.headers_mut());
                answer
            }
            Err(Failure::Timeout) => {
                warn!(client = %self.client, upstream = %self.base, "the upstream did not answer in time");
                text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the upstream {} did not answer in time\n", self.base),
                )
            }
            Err(Failure::Http(e)) => {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = s.to_string();
                    source = s.source();
                }
                warn!(client = %self.client, upstream = %self.base, error = %reason, "cannot reach the upstream");
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach the upstream {}: {reason}\n", self.base),
                )
            }
        }
    }
}

/// How many times a segment is percent-decoded in search of a separator or a dot segment; one
/// still encoded after that is refused too.
const DECODE_ROUNDS: usize = 3;

/// Whether a request path could leave the base path at an upstream that decodes it, however
/// often: a segment that, percent-decoded once, twice or three times, holds `/`, `\` or NUL,
/// or is `.` or `..` (also before a `;`, as some servers read `..;`), or that still holds an
/// escape after three decodings. The `url` crate keeps `%2F` encoded and `..%2F` is no dot
/// segment to it, but a server that decodes before it resolves `..` climbs out with it.
fn escapes(path: &str) -> bool {
    path.split('/').any(|segment| {
        let mut text = segment.as_bytes().to_vec();
        for _ in 0..=DECODE_ROUNDS {
            let name = text.split(|b| *b == b';').next().unwrap_or_default();
            if text.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) || name == b"." || name == b".." {
                return true;
            }
            if !text.contains(&b'%') {
                return false;
            }
            let decoded = percent_decoded(&text);
            if decoded == text {
                return false;
            }
            text = decoded;
        }
        true
    })
}

/// `bytes` with each `%XY` (hex digits, either case) replaced by its byte.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high << 4 | low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The caller's headers that go on: not hop-by-hop ones, not those `Connection` names, not
/// `Host` (the upstream's), not `Authorization` (replaced, never forwarded).
fn forwarded(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    headers
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    // Every `Proxy-*` header is about a hop, never for the other end.
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

fn text(status: StatusCode, body: String) -> Answer {
    let mut r = Response::new(reqwest::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_an_upstream_could_decode_into_another_directory_escapes() {
        for path in [
            "/../admin/secret.txt",
            "/./x",
            "/a/../b",
            "/%2e%2e/admin",
            "/%2E%2e/admin",
            "/..%2fadmin/secret.txt",
            "/..%2Fadmin/secret.txt",
            "/%2e%2e%2fadmin%2fsecret.txt",
            "/%2E%2E%2Fadmin%2Fsecret.txt",
            "/..%5cadmin",
            "/..%5Cadmin",
            "/..\\admin",
            "/..%252fadmin",
            "/%252e%252e/admin",
            "/%25252e%25252e/admin",
            "/%2525252e%2525252e/admin",
            "/..;/admin",
            "/%2e%2e;x/admin",
            "/a%00b",
            "/a%2fb",
        ] {
            assert!(escapes(path), "{path} was let through");
        }
    }

    #[test]
    fn ordinary_paths_and_escapes_go_on() {
        for path in [
            "/",
            "/invoices",
            "/invoices/2024/01?x=1",
            "/a%20b.txt",
            "/file.txt",
            "/...",
            "/..a",
            "/.hidden",
            "/a%2541",
            "/100%",
            "/%zz",
            "/a;b/c",
        ] {
            assert!(!escapes(path), "{path} was refused");
        }
    }

    #[test]
    fn every_proxy_header_stays_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("proxy-foo", "pf"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-proxy-note", "kept"),
            ("accept", "*/*"),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let kept = forwarded(&headers);
        let mut names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "x-proxy-note"]);
    }
}
