//! The integration suite's token server: the development issuer of `tokend dev --issuer-only`
//! (`tokend::cli::dev::issuer`), with a token endpoint that can be told to misbehave.
//! `POST /_dev/faults` queues answers for the next token requests (errors, `Retry-After`,
//! delays, garbage, odd token fields, a reset or closed connection, a body that stalls), one that
//! stays until `DELETE /_dev/faults` switches it off; `GET /_dev/requests` lists the requests
//! it has received. It is built with the tests and is not part of `tokend`: fault injection does
//! not ship.
//!
//! Usage: tokend-test-issuer [--lifetime 60s] [--clients-file FILE] [--port 0] [--rfc8414-only]
//! [--bare-refusals] [--raw-basic] [--granted-scopes 'a b'] [--omit-scope];
//! the first line on stdout ends with the issuer's URL.

mod connection_faults;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tokend::cli::dev::issuer::{Issuer, IssuerSettings, Quirks, oauth_error, parse_form};

use connection_faults::{Abort, Control, FaultyListener};

#[derive(Parser)]
struct Args {
    /// Lifetime of the tokens it issues.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    lifetime: Duration,
    /// A JSON object of the client ids it accepts and their secrets.
    #[arg(long)]
    clients_file: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve metadata only at RFC 8414's location.
    #[arg(long)]
    rfc8414_only: bool,
    /// Refuse bad client credentials with a bare 403, no body (as Glewlwyd does).
    #[arg(long)]
    bare_refusals: bool,
    /// Take HTTP Basic's id and secret as sent, without form-urldecoding them.
    #[arg(long)]
    raw_basic: bool,
    /// Grant only these scopes (space-separated), dropping the rest in silence.
    #[arg(long)]
    granted_scopes: Option<String>,
    /// Leave `scope` out of token responses (the token's claim still names it).
    #[arg(long)]
    omit_scope: bool,
}

/// A queued misbehaviour for the next token request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    /// Wait this long before answering (to provoke client timeouts).
    #[serde(default)]
    delay_ms: u64,
    /// Answer with this status instead of issuing a token.
    status: Option<u16>,
    /// With `status`: an OAuth error code, sent as a §5.2 JSON body.
    error: Option<String>,
    /// With `status`: a raw body instead of the JSON error.
    body: Option<String>,
    content_type: Option<String>,
    /// A `Retry-After` header value.
    retry_after: Option<String>,
    /// A `Location` header value (with a 3xx `status`: a redirect).
    location: Option<String>,
    /// Without `status`: issue a token with this lifetime instead.
    lifetime_s: Option<u64>,
    /// Without `status`: leave `expires_in` out of the response.
    #[serde(default)]
    omit_expires_in: bool,
    /// Without `status`: send this as `expires_in` instead (any JSON: `0`, `-5`, `"3600"`).
    expires_in: Option<Value>,
    /// Without `status`: send this `token_type` instead of `Bearer`.
    token_type: Option<String>,
    /// Send the status line and headers at once, the body only after this long.
    #[serde(default)]
    body_delay_ms: u64,
    /// Answer nothing: reset or close the connection (after `delay_ms`).
    abort: Option<Abort>,
    /// Answer every token request this way until `DELETE /_dev/faults`, instead of once.
    #[serde(default)]
    until_cleared: bool,
}

struct Faulty {
    issuer: Arc<Issuer>,
    faults: Mutex<VecDeque<Fault>>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let clients: HashMap<String, String> = match &args.clients_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).expect("the clients file");
            serde_json::from_str(&text).expect("a JSON object of id → secret")
        }
        None => HashMap::from([("tokend-dev".to_owned(), "tokend-dev-secret".to_owned())]),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))
            .await
            .expect("a port on 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let settings = IssuerSettings {
            lifetime: args.lifetime,
            clients,
            rfc8414_only: args.rfc8414_only,
            quirks: Quirks {
                bare_refusals: args.bare_refusals,
                raw_basic: args.raw_basic,
                granted_scopes: args
                    .granted_scopes
                    .map(|s| s.split_whitespace().map(str::to_owned).collect()),
                omit_scope: args.omit_scope,
            },
        };
        let issuer = Issuer::new(base.clone(), settings).expect("an issuer");
        let faulty = Arc::new(Faulty {
            issuer: issuer.clone(),
            faults: Mutex::new(VecDeque::new()),
        });
        let app = issuer.routes().with_state(issuer).merge(
            Router::new()
                .route("/oauth/token", post(token))
                .route("/_dev/faults", post(push_faults).delete(clear_faults))
                .with_state(faulty),
        );
        println!("tokend test issuer listening on {base}");
        let _ = std::io::stdout().flush();
        let app = app.into_make_service_with_connect_info::<Control>();
        if let Err(e) = axum::serve(FaultyListener(listener), app).await {
            eprintln!("tokend-test-issuer: {e}");
        }
    });
    std::process::ExitCode::FAILURE
}

async fn token(
    State(faulty): State<Arc<Faulty>>,
    ConnectInfo(connection): ConnectInfo<Control>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let fault = {
        let mut faults = faulty.faults.lock().expect("faults lock");
        match faults.front() {
            Some(f) if f.until_cleared => f.clone(),
            _ => faults.pop_front().unwrap_or_default(),
        }
    };
    let issuer = &faulty.issuer;
    let index = issuer.record(&headers, &form);
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    if let Some(how) = fault.abort {
        // The status stays 0: nothing was answered.
        connection.abort(how);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let response = match fault.status {
        Some(status) => fault_response(&fault, status),
        None => {
            let lifetime = fault.lifetime_s.map_or(issuer.lifetime(), Duration::from_secs);
            with_token_fields(issuer.answer(&headers, &form, lifetime), &fault).await
        }
    };
    issuer.answered(index, response.status());
    if fault.body_delay_ms > 0 {
        return stall_body(response, Duration::from_millis(fault.body_delay_ms)).await;
    }
    response
}

/// A token answer with the fault's `token_type` and `expires_in` (or none) in place of the
/// issuer's.
async fn with_token_fields(response: Response, fault: &Fault) -> Response {
    if response.status() != StatusCode::OK
        || (fault.token_type.is_none() && fault.expires_in.is_none() && !fault.omit_expires_in)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(token_type) = &fault.token_type {
        answer["token_type"] = json!(token_type);
    }
    match (&fault.expires_in, answer.as_object_mut()) {
        (Some(v), _) => answer["expires_in"] = v.clone(),
        (None, Some(fields)) if fault.omit_expires_in => {
            fields.remove("expires_in");
        }
        _ => {}
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(answer.to_string()))
}

/// The same response, with the headers and half the body sent at once, the rest after `delay`.
async fn stall_body(response: Response, delay: Duration) -> Response {
    use futures_util::StreamExt;
    let (mut parts, body) = response.into_parts();
    let mut first = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let rest = first.split_off(first.len() / 2);
    // Chunked: the length would not change when the bytes come, but a client may count on it.
    parts.headers.remove(header::CONTENT_LENGTH);
    let now = futures_util::stream::once(std::future::ready(first));
    let later = futures_util::stream::once(async move {
        tokio::time::sleep(delay).await;
        rest
    });
    let stream = now.chain(later).map(Ok::<_, std::convert::Infallible>);
    Response::from_parts(parts, Body::from_stream(stream))
}

fn fault_response(fault: &Fault, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match (&fault.body, &fault.error) {
        (Some(body), _) => (status, body.clone()).into_response(),
        (None, Some(code)) => oauth_error(status, code, "injected by the test issuer"),
        (None, None) => status.into_response(),
    };
    for (name, value) in [
        (header::CONTENT_TYPE, &fault.content_type),
        (header::RETRY_AFTER, &fault.retry_after),
        (header::LOCATION, &fault.location),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

async fn push_faults(State(faulty): State<Arc<Faulty>>, Json(faults): Json<Vec<Fault>>) -> StatusCode {
    faulty.faults.lock().expect("faults lock").extend(faults);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(faulty): State<Arc<Faulty>>) -> StatusCode {
    faulty.faults.lock().expect("faults lock").clear();
    StatusCode::NO_CONTENT
}
