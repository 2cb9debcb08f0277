//! A development OAuth 2.0 authorization server: the client-credentials token endpoint issuing
//! EdDSA-signed JWTs, JWKS, OIDC/RFC 8414 discovery, and a tiny protected API (`/api/whoami`) that
//! validates tokens the way a resource server would. Loopback only, with a key that lives as long
//! as the process.
//!
//! `GET /_dev/requests` lists the token requests it has received. The test suite's issuer that
//! can be told to misbehave (`tests/support/test_issuer`) is built from the same parts
//! (`Issuer::record`, `Issuer::answer`, `Issuer::routes`), and is not part of `tokend`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use url::form_urlencoded;

/// What the issuer accepts and issues.
pub struct IssuerSettings {
    /// Lifetime of issued tokens (`expires_in`).
    pub lifetime: Duration,
    /// Registered clients: id → secret.
    pub clients: HashMap<String, String>,
    /// Serve metadata only at RFC 8414's location, not OIDC's (to exercise the fallback).
    pub rfc8414_only: bool,
    /// Where a real IdP departs from the RFCs (the test issuer sets these; `tokend dev` keeps
    /// to the RFCs).
    pub quirks: Quirks,
}

/// Behaviours seen in real IdPs, which the test suite's issuer can imitate.
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// Refuse bad client credentials with a bare `403` and no body, instead of RFC 6749 §5.2's
    /// `401 invalid_client` (as Glewlwyd does).
    pub bare_refusals: bool,
    /// Take the id and secret of HTTP Basic as sent, without form-urldecoding them (RFC 7617
    /// rather than RFC 6749 §2.3.1).
    pub raw_basic: bool,
    /// Grant only these scopes, dropping the others asked for in silence (the response and the
    /// token's `scope` claim name what was granted).
    pub granted_scopes: Option<Vec<String>>,
    /// Leave `scope` out of the response (the token's claim still names it).
    pub omit_scope: bool,
}

/// One token request as the issuer saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub at_ms: u64,
    pub client_id: Option<String>,
    pub auth: &'static str,
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub resource: Vec<String>,
    pub organization: Option<String>,
    pub user_agent: Option<String>,
    /// The status answered; 0 while the request is still being answered or was abandoned.
    pub status: u16,
}

/// The issuer's key, clients and records.
pub struct Issuer {
    key: Ed25519KeyPair,
    kid: String,
    base: String,
    settings: IssuerSettings,
    seen: Mutex<Vec<Seen>>,
    /// The `jti` of every token issued, and those `POST /_dev/revoke` revoked (which
    /// `/api/whoami` refuses, as a resource server refuses a revoked token).
    issued: Mutex<Vec<String>>,
    revoked: Mutex<std::collections::HashSet<String>>,
}

/// A running issuer.
pub struct Started {
    pub base_url: String,
}

/// Binds 127.0.0.1:`port` (0 for any free port) and serves until `shutdown` completes.
pub async fn start(
    port: u16,
    settings: IssuerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(Started, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let issuer = Issuer::new(base.clone(), settings)?;
    let app = issuer.routes().route("/oauth/token", post(token)).with_state(issuer);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "development issuer stopped");
        }
    });
    Ok((Started { base_url: base }, handle))
}

impl Issuer {
    /// An issuer at `base` (its URL, which goes into tokens and metadata), with a new key.
    pub fn new(base: String, settings: IssuerSettings) -> std::io::Result<Arc<Issuer>> {
        let key = Ed25519KeyPair::generate().map_err(|_| std::io::Error::other("cannot generate a signing key"))?;
        let kid = URL_SAFE_NO_PAD
            .encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref()).as_ref()[..8]);
        Ok(Arc::new(Issuer {
            key,
            kid,
            base,
            settings,
            seen: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            revoked: Mutex::new(Default::default()),
        }))
    }

    /// Every route but the token endpoint: discovery, JWKS, `/api/whoami`, `/_dev/revoke`,
    /// `/_dev/requests`.
    pub fn routes(&self) -> Router<Arc<Issuer>> {
        let mut app = Router::new().route("/.well-known/oauth-authorization-server", get(discovery));
        if !self.settings.rfc8414_only {
            app = app.route("/.well-known/openid-configuration", get(discovery));
        }
        app.route("/jwks.json", get(jwks))
            .route("/api/whoami", get(whoami))
            .route("/_dev/revoke", post(revoke))
            .route("/_dev/requests", get(requests))
    }

    /// The lifetime of the tokens it issues.
    pub fn lifetime(&self) -> Duration {
        self.settings.lifetime
    }

    /// Records a token request on arrival (status 0 until `answered`, so that requests a
    /// client gave up on still show); its index.
    pub fn record(&self, headers: &HeaderMap, form: &[(String, String)]) -> usize {
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let authenticated = authenticate(headers, form, self.settings.quirks.raw_basic);
        let mut seen = self.seen.lock().expect("seen lock");
        seen.push(Seen {
            at_ms: now_ms(),
            client_id: authenticated.as_ref().ok().map(|(id, _, _)| id.clone()),
            auth: authenticated.as_ref().map_or("none", |(_, _, method)| *method),
            audience: field("audience"),
            scope: field("scope"),
            resource: form
                .iter()
                .filter(|(k, _)| k == "resource")
                .map(|(_, v)| v.clone())
                .collect(),
            organization: field("organization"),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            status: 0,
        });
        seen.len() - 1
    }

    /// The status the request recorded at `index` was answered with.
    pub fn answered(&self, index: usize, status: StatusCode) {
        self.seen.lock().expect("seen lock")[index].status = status.as_u16();
    }

    /// The answer to a token request: a token living `lifetime`, or the OAuth error that
    /// refuses it.
    pub fn answer(&self, headers: &HeaderMap, form: &[(String, String)], lifetime: Duration) -> Response {
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let quirks = &self.settings.quirks;
        match authenticate(headers, form, quirks.raw_basic) {
            Err(_) if quirks.bare_refusals => StatusCode::FORBIDDEN.into_response(),
            Err((status, code, description)) => oauth_error(status, code, description),
            Ok((id, secret, _)) => {
                let registered = self.settings.clients.get(&id);
                if registered.is_none_or(|s| !constant_time_eq(s.as_bytes(), secret.as_bytes())) {
                    if quirks.bare_refusals {
                        return StatusCode::FORBIDDEN.into_response();
                    }
                    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized")
                } else if field("grant_type").as_deref() != Some("client_credentials") {
                    oauth_error(
                        StatusCode::BAD_REQUEST,
                        "unsupported_grant_type",
                        "only client_credentials is supported",
                    )
                } else {
                    issue(self, &id, form, lifetime)
                }
            }
        }
    }
}

/// The token endpoint.
async fn token(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let index = issuer.record(&headers, &form);
    let response = issuer.answer(&headers, &form, issuer.lifetime());
    issuer.answered(index, response.status());
    response
}

/// A form body's fields, in order.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// An OAuth error answer (RFC 6749 §5.2).
pub fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({ "error": code, "error_description": description }))).into_response()
}

/// A refusal: status, OAuth error code and description.
type Refusal = (StatusCode, &'static str, &'static str);

/// Client authentication per RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret
/// (taken as sent with `raw_basic`), or both in the body — never both at once.
fn authenticate(
    headers: &HeaderMap,
    form: &[(String, String)],
    raw_basic: bool,
) -> Result<(String, String, &'static str), Refusal> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    match (basic, field("client_secret")) {
        (Some(_), Some(_)) => Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "use only one client authentication method",
        )),
        (Some(b64), None) => {
            let bad = || {
                (
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "malformed Basic credentials",
                )
            };
            let decoded = STANDARD.decode(b64.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (id, secret) = text.split_once(':').ok_or_else(bad)?;
            if raw_basic {
                return Ok((id.to_owned(), secret.to_owned(), "client_secret_basic"));
            }
            let decode = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Ok((
                decode(id).ok_or_else(bad)?,
                decode(secret).ok_or_else(bad)?,
                "client_secret_basic",
            ))
        }
        (None, Some(secret)) => match field("client_id") {
            Some(id) => Ok((id, secret, "client_secret_post")),
            None => Err((StatusCode::UNAUTHORIZED, "invalid_client", "client_id is missing")),
        },
        (None, None) => Err((StatusCode::UNAUTHORIZED, "invalid_client", "no client authentication")),
    }
}

fn issue(issuer: &Issuer, client_id: &str, form: &[(String, String)], lifetime: Duration) -> Response {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let now = now_ms() / 1000;
    let resources: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.clone())
        .collect();
    let audience: Value = match (field("audience"), resources.len()) {
        (Some(a), _) => json!(a),
        (None, 0) => json!(format!("{}/api", issuer.base)),
        (None, 1) => json!(resources[0]),
        (None, _) => json!(resources),
    };
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).expect("system randomness");
    let mut claims = json!({
        "iss": issuer.base,
        "sub": format!("{client_id}@clients"),
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "client_id": client_id,
        "gty": "client-credentials",
    });
    issuer
        .issued
        .lock()
        .expect("issued lock")
        .push(URL_SAFE_NO_PAD.encode(jti));
    let scope = field("scope").map(|asked| match &issuer.settings.quirks.granted_scopes {
        Some(granted) => asked
            .split(' ')
            .filter(|s| granted.iter().any(|g| g == s))
            .collect::<Vec<_>>()
            .join(" "),
        None => asked,
    });
    if let Some(scope) = &scope {
        claims["scope"] = json!(scope);
    }
    if let Some(org) = field("organization") {
        claims["org_id"] = json!(org);
    }
    let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": issuer.kid });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    let mut body = json!({ "access_token": token, "token_type": "Bearer", "expires_in": lifetime.as_secs() });
    if let Some(scope) = scope.filter(|_| !issuer.settings.quirks.omit_scope) {
        body["scope"] = json!(scope);
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({
        "issuer": issuer.base,
        "token_endpoint": format!("{}/oauth/token", issuer.base),
        "jwks_uri": format!("{}/jwks.json", issuer.base),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({ "keys": [{
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(issuer.key.public_key().as_ref()),
        "kid": issuer.kid,
        "use": "sig",
        "alg": "EdDSA",
    }]}))
}

/// A protected resource: validates the bearer token (signature, issuer, expiry) and echoes its
/// claims, as an API behind the IdP would.
async fn whoami(State(issuer): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    let deny = |why: &str| {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_token", "error_description": why })),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        r
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return deny("no bearer token");
    };
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [h, c, s] = parts[..] else {
        return deny("not a JWT");
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(s) else {
        return deny("bad signature encoding");
    };
    let public = UnparsedPublicKey::new(&ED25519, issuer.key.public_key().as_ref());
    if public.verify(format!("{h}.{c}").as_bytes(), &signature).is_err() {
        return deny("signature does not verify");
    }
    let Some(claims) = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return deny("unreadable claims");
    };
    if claims["iss"] != json!(issuer.base) {
        return deny("wrong issuer");
    }
    let now = now_ms() / 1000;
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if exp <= now {
        return deny("token expired");
    }
    if claims["jti"]
        .as_str()
        .is_some_and(|jti| issuer.revoked.lock().expect("revoked lock").contains(jti))
    {
        return deny("token revoked");
    }
    Json(json!({
        "ok": true,
        "sub": claims["sub"],
        "aud": claims["aud"],
        "scope": claims["scope"],
        "expires_in": exp - now,
    }))
    .into_response()
}

/// Revokes every token issued so far.
async fn revoke(State(issuer): State<Arc<Issuer>>) -> StatusCode {
    let issued = std::mem::take(&mut *issuer.issued.lock().expect("issued lock"));
    issuer.revoked.lock().expect("revoked lock").extend(issued);
    StatusCode::NO_CONTENT
}

async fn requests(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    let seen = issuer.seen.lock().expect("seen lock").clone();
    Json(json!({ "count": seen.len(), "requests": seen }))
}

fn now_ms() -> u64 {
    crate::token::unix_millis(SystemTime::now())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
