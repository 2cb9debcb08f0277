//! The socket API's endpoints. Every answer comes from the store: serving a read never waits on
//! the token endpoint.
//!
//! ```text
//! GET /v1/tokens/{name}   the token (text/plain), or JSON with `Accept: application/json` or
//!                         `?format=json`; `?wait=30s[&after=VERSION]` long-polls for a token
//!                         newer than VERSION (or any valid one)
//! GET /v1/tokens          the clients this caller may read: state, expiry, next refresh, error
//! GET /healthz  /readyz   liveness; readiness (every client has a valid token)
//! GET /metrics            Prometheus text format
//! ```

use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::ExposeSecret;
use tracing::{debug, warn};

use super::ServerState;
use super::api::{ClientStatus, FleetStatus, TokenList};
use super::peer::Peer;
use crate::config::ClientName;
use crate::store::Snapshot;
use crate::token::Token;

pub type Body = Full<Bytes>;

/// The longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Header carrying a token's version, for `?after=`.
pub const VERSION_HEADER: &str = "token-version";

pub async fn handle<B>(req: Request<B>, peer: &Peer, state: &ServerState) -> Response<Body> {
    let response = route(&req, peer, state).await;
    state.metrics.request(response.status().as_u16());
    response
}

/// The health and metrics listener on TCP: `/healthz`, `/readyz` and `/metrics`, to anyone who
/// can reach it, and never a token (there is no caller to check on TCP).
pub fn handle_public<B>(req: &Request<B>, state: &ServerState) -> Response<Body> {
    let response = match (req.method(), req.uri().path()) {
        (m, _) if m != Method::GET && m != Method::HEAD => not_get(),
        (_, _) if req.uri().query().is_some() => {
            plain(StatusCode::BAD_REQUEST, "this endpoint takes no query parameters\n")
        }
        (_, "/healthz") => liveness(state),
        (_, "/readyz") => readiness(state),
        (_, "/metrics") => metrics_text(state),
        _ => plain(
            StatusCode::NOT_FOUND,
            "only /healthz, /readyz and /metrics are served here; tokens are on the Unix socket\n",
        ),
    };
    state.metrics.tcp_request(response.status().as_u16());
    response
}

fn not_get() -> Response<Body> {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are supported\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

async fn route<B>(req: &Request<B>, peer: &Peer, state: &ServerState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return not_get();
    }
    let query = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(msg) => return plain(StatusCode::BAD_REQUEST, format!("{msg}\n")),
    };
    let path = req.uri().path();
    if let Some(name) = path.strip_prefix("/v1/tokens/").filter(|n| !n.is_empty()) {
        return token(req, name, &query, peer, state).await;
    }
    if query != Query::default() {
        return plain(StatusCode::BAD_REQUEST, "this endpoint takes no query parameters\n");
    }
    match path {
        "/v1/tokens" | "/v1/tokens/" => list(peer, state),
        "/healthz" => liveness(state),
        "/readyz" => readiness(state),
        "/metrics" => metrics(peer, state),
        _ => plain(StatusCode::NOT_FOUND, "no such endpoint; see /v1/tokens/{name}\n"),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    json: Option<bool>,
    wait: Option<Duration>,
    after: Option<u64>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, String> {
        let mut q = Query::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "format" => match value.as_ref() {
                    "json" => q.json = Some(true),
                    "text" => q.json = Some(false),
                    _ => return Err("`format` must be `json` or `text`".into()),
                },
                "wait" => {
                    let wait = humantime::parse_duration(&value)
                        .or_else(|_| value.parse::<u64>().map(Duration::from_secs))
                        .map_err(|_| "`wait` must be a duration such as `30s`".to_owned())?;
                    q.wait = Some(wait.min(MAX_WAIT));
                }
                "after" => {
                    q.after = Some(
                        value
                            .parse()
                            .map_err(|_| "`after` must be a token version (a number)".to_owned())?,
                    )
                }
                other => return Err(format!("unknown query parameter `{}`", other.escape_debug())),
            }
        }
        if q.after.is_some() && q.wait.is_none() {
            return Err("`after` needs `wait`".into());
        }
        Ok(q)
    }
}

async fn token<B>(req: &Request<B>, name: &str, query: &Query, peer: &Peer, state: &ServerState) -> Response<Body> {
    // Authorization comes first, so that a caller who may not read a client cannot tell an
    // existing name from an unknown one.
    let authority = state.authority();
    if !authority.may_read(peer, name) {
        return denied(peer, name, state);
    }
    let json = query.json.unwrap_or_else(|| accepts_json(req));
    let Some(wait) = query.wait else {
        let now = SystemTime::now();
        return state
            .store
            .with(name, |s| match s.valid_token(now) {
                Some(t) => token_response(t, s.version, json),
                None => unavailable(name, s, now),
            })
            .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "no such client\n"));
    };
    let Some(mut changes) = state.store.subscribe(name) else {
        return plain(StatusCode::NOT_FOUND, "no such client\n");
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting = false;
    let ready = loop {
        let now = SystemTime::now();
        let ready = {
            let s = changes.borrow_and_update();
            s.valid_token(now)
                .filter(|_| query.after.is_none_or(|v| s.version > v))
                .map(|t| (t.clone(), s.version))
        };
        if ready.is_some() {
            break ready;
        }
        if !std::mem::replace(&mut waiting, true) {
            debug!(
                client = name,
                uid = peer.uid,
                pid = peer.pid,
                long_poll = "waiting",
                "a reader waits for a new token"
            );
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return plain(StatusCode::NOT_FOUND, "the client was removed\n");
            },
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = state.shutdown.cancelled() => {
                let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "tokend is shutting down\n");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
        }
    };
    // A reload may have removed this reader while the request waited.
    if !state.authority().may_read(peer, name) {
        return denied(peer, name, state);
    }
    if let Some((token, version)) = ready {
        return token_response(&token, version, json);
    }
    let now = SystemTime::now();
    let snapshot = changes.borrow().clone();
    match (snapshot.valid_token(now), query.after) {
        // The caller's version is still current.
        (Some(_), Some(_)) => {
            let mut r = empty(StatusCode::NOT_MODIFIED);
            r.headers_mut().insert(VERSION_HEADER, snapshot.version.into());
            r
        }
        (Some(t), None) => token_response(t, snapshot.version, json),
        (None, _) => unavailable(name, &snapshot, now),
    }
}

/// Whether the caller's `Accept` prefers JSON to text (RFC 9110 §12.5.1): `application/json`
/// with a weight above 0 and above that of `text/plain` (or `text/*`, `*/*`). Without an
/// `Accept`, or on a tie, text: the token alone is what `curl` and scripts want.
fn accepts_json<B>(req: &Request<B>) -> bool {
    let (mut json, mut text) = (0.0_f32, 0.0_f32);
    let ranges = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let weight = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| {
                v.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q))
            })
            .unwrap_or(0.0);
        match media.as_str() {
            "application/json" => json = json.max(weight),
            "text/plain" | "text/*" | "*/*" => text = text.max(weight),
            _ => {}
        }
    }
    json > 0.0 && json > text
}

fn token_response(token: &Token, version: u64, json: bool) -> Response<Body> {
    let secret = token.access_token.expose_secret();
    let mut response = if json {
        let body = token.document(SystemTime::now());
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::copy_from_slice(secret.as_bytes())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VERSION_HEADER, version.into());
    response
}

/// 503 while a client has no valid token, with `Retry-After` pointing at the next attempt.
fn unavailable(name: &str, snapshot: &Snapshot, now: SystemTime) -> Response<Body> {
    let wait = snapshot
        .next_attempt
        .and_then(|t| t.duration_since(now).ok())
        .unwrap_or(Duration::ZERO);
    let what = if snapshot.token.is_some() {
        "its token has expired"
    } else {
        "no token has been obtained yet"
    };
    let mut message = format!("client {name}: {what}");
    if let Some(error) = &snapshot.last_error {
        message.push_str(&format!("; last error: {error}"));
    }
    message.push_str(&format!("; next attempt in {}s\n", wait.as_secs()));
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, wait.as_secs().clamp(1, 60).into());
    r
}

fn denied(peer: &Peer, name: &str, state: &ServerState) -> Response<Body> {
    // Names come from the request: only well-formed ones are repeated in logs and answers.
    let known = state.store.with(name, |_| ()).is_some();
    let name = ClientName::new(name)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "(malformed name)".into());
    // Refusals of names that are no client share one log line a minute per caller: a caller
    // asking for a new name each time cannot flood the journal (and so drown tokend's errors).
    let key = if known { name.as_str() } else { "(no such client)" };
    if let Some(suppressed) = state.refusals.should_log(peer.uid, key) {
        warn!(
            uid = peer.uid,
            pid = peer.pid,
            client = %name,
            suppressed,
            "refused a socket request: caller is not a reader of this client"
        );
    }
    plain(
        StatusCode::FORBIDDEN,
        format!("uid {} may not read client {name}\n", peer.uid),
    )
}

fn list(peer: &Peer, state: &ServerState) -> Response<Body> {
    let authority = state.authority();
    let now = SystemTime::now();
    let answer = TokenList {
        clients: state
            .store
            .snapshots(|name| authority.may_read(peer, name.as_str()))
            .into_iter()
            .map(|(name, s)| ClientStatus::new(name.as_str(), &s, now))
            .collect(),
        fleet: state.store.fleet().map(FleetStatus::from),
    };
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Alive while the daemon's main loop runs: a loop stuck (in a reload waiting on a hung write,
/// say) answers 503, so a liveness probe restarts it, as the systemd watchdog would.
fn liveness(state: &ServerState) -> Response<Body> {
    let age = state.heartbeat_age();
    if age < super::HEARTBEAT_STALE {
        plain(StatusCode::OK, "ok\n")
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: the main loop has not run for {}s\n", age.as_secs()),
        )
    }
}

/// `/readyz`: ready while every client has a valid token. The body says why not, client by
/// client (the first `READINESS_NOTES`), and warns of a token that will expire before the IdP
/// allows the next request.
fn readiness(state: &ServerState) -> Response<Body> {
    let (valid, total, notes) = state.store.readiness(SystemTime::now());
    let (status, mut body) = if valid == total {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {valid} of {total} clients have a valid token\n"),
        )
    };
    for (name, note) in notes.iter().take(READINESS_NOTES) {
        body.push_str(&format!("{name}: {note}\n"));
    }
    if notes.len() > READINESS_NOTES {
        body.push_str(&format!("and {} more\n", notes.len() - READINESS_NOTES));
    }
    plain(status, body)
}

/// How many clients `/readyz` names: enough to act on, not a page for 10,000 failing clients.
const READINESS_NOTES: usize = 10;

fn metrics(peer: &Peer, state: &ServerState) -> Response<Body> {
    if !state.authority().may_read_metrics(peer) {
        if let Some(suppressed) = state.refusals.should_log(peer.uid, "/metrics") {
            warn!(
                uid = peer.uid,
                pid = peer.pid,
                suppressed,
                "refused /metrics: caller is not a metrics reader"
            );
        }
        return plain(
            StatusCode::FORBIDDEN,
            format!("uid {} may not read /metrics\n", peer.uid),
        );
    }
    metrics_text(state)
}

fn metrics_text(state: &ServerState) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::HEARTBEAT_STALE;
    use crate::server::access::Authority;
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn query_parsing() {
        assert_eq!(Query::parse(None), Ok(Query::default()));
        assert_eq!(Query::parse(Some("format=json")).unwrap().json, Some(true));
        let q = Query::parse(Some("wait=30s&after=17")).unwrap();
        assert_eq!((q.wait, q.after), (Some(Duration::from_secs(30)), Some(17)));
        assert_eq!(
            Query::parse(Some("wait=45")).unwrap().wait,
            Some(Duration::from_secs(45))
        );
        assert_eq!(Query::parse(Some("wait=1h")).unwrap().wait, Some(MAX_WAIT));
        for bad in ["format=xml", "wait=soon", "after=x&wait=1s", "after=5", "token=abc"] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_only_when_accept_prefers_it() {
        let wants_json = |accept: &[&str]| {
            let mut req = Request::new(());
            for a in accept {
                req.headers_mut()
                    .append(header::ACCEPT, HeaderValue::from_str(a).unwrap());
            }
            accepts_json(&req)
        };
        for yes in [
            &["application/json"][..],
            &["Application/JSON; charset=utf-8"],
            &["text/plain;q=0.5, application/json"],
            &["*/*;q=0.1", "application/json;q=0.2"],
        ] {
            assert!(wants_json(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &["*/*"],
            &["application/json;q=0"],
            &["application/json; q=0.0, text/plain"],
            &["application/json;q=0.5, text/plain"],
            &["application/json, text/plain"],
            &["application/json;q=bogus"],
            &["application/jsonl"],
        ] {
            assert!(!wants_json(no), "{no:?}");
        }
    }

    #[test]
    fn healthz_fails_once_the_main_loop_stops_beating() {
        let state = ServerState::new(
            Store::new(),
            Arc::new(crate::metrics::Metrics::new()),
            Authority::new(Default::default()),
        );
        let healthz = || {
            let req = Request::get("/healthz").body(()).unwrap();
            handle_public(&req, &state).status()
        };
        assert_eq!(healthz(), StatusCode::OK);
        *state.heartbeat.lock().unwrap() = Instant::now() - HEARTBEAT_STALE;
        assert_eq!(healthz(), StatusCode::SERVICE_UNAVAILABLE);
        state.beat();
        assert_eq!(healthz(), StatusCode::OK);
    }
}
