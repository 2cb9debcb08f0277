//! IdP faults switched on and off while tokend runs, one row per fault, each
//! row against the development issuer and against a third-party server (`oauth2-mock-server`,
//! driven through its hooks by tests/interop/mock-idp.mjs; see `mock_server`), each with its
//! own server process and its own tokend. For each fault: tokend keeps running, asks no more
//! often than its backoff policy allows, keeps the last valid token (the file never changes or
//! disappears and the socket serves it), logs a line that says what went wrong, and has a new
//! token within one backoff step once the fault is gone. Run alone with
//! `cargo test --test tests idp_faults -- --nocapture` to see the figures.

mod mock_server;
mod politeness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::SECRET;
use crate::util::*;
use mock_server::MockIdp;

/// The client's retry policy and timeout in every row (short, so that a row takes seconds).
const RETRY_INITIAL: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// No retry comes sooner than this after a failure (`schedule::MIN_RETRY`).
const MIN_RETRY: Duration = Duration::from_millis(100);
/// Tokens live this long and are refreshed at 25% of it, so the first refresh meets the fault
/// about 5 s after the first token (time enough to switch the fault on, even on a machine
/// whose load average is 30), while the current token stays valid for the whole row.
const LIFETIME: &str = "20s";
/// A fault stays on at least this long (and until it has been met twice).
const FAULT_ON: Duration = Duration::from_secs(8);
/// At most this many requests while a `Backoff` fault is on for about `FAULT_ON` (see
/// `ride_out`).
const JITTERED_MAX: usize = 30;
/// Slack for a loaded 2-core machine, on top of what the policy allows.
const MARGIN: Duration = Duration::from_millis(1500);
const T: Duration = Duration::from_secs(20);

/// What the backoff policy allows between two requests while a fault lasts.
#[derive(Clone, Copy, Debug)]
enum Policy {
    /// Exponential backoff with full jitter, from `retry.initial` doubling to `retry.max`.
    Backoff,
    /// As `Backoff`, but never sooner than the server's `Retry-After` (seconds).
    RetryAfter(u64),
    /// Not retryable soon (bad credentials, a redirect, an untrusted certificate): `retry.max`.
    Maximum,
}

impl Policy {
    /// The shortest gap the policy allows between two requests.
    fn min_gap(self) -> Duration {
        match self {
            Policy::Backoff => MIN_RETRY,
            Policy::RetryAfter(s) => Duration::from_secs(s),
            Policy::Maximum => RETRY_MAX,
        }
    }

    /// The longest one backoff step can be once the policy has reached its cap.
    fn step(self) -> Duration {
        match self {
            Policy::RetryAfter(s) => Duration::from_secs(s).max(RETRY_MAX),
            Policy::Backoff | Policy::Maximum => RETRY_MAX,
        }
    }
}

/// How a row switches its fault on.
enum Switch {
    /// Queue this fault (`until_cleared`) at the development issuer.
    Fault(Value),
    /// 429 with `Retry-After` as an HTTP date 8 s ahead.
    RetryAfterDate,
    /// A 302 to a listener of the test's: which must never be connected to.
    Redirect,
    /// Stop listening (connection refused); the dev issuer is stopped and started again on the
    /// same port.
    StopIssuer,
    /// Serve this certificate (the mock server only): `expired`, `untrusted`, `wrong_name`.
    Certificate(&'static str),
    /// The IdP's name stops resolving: tokend runs in a mount namespace of its own (root only)
    /// whose /etc/hosts is a file of the test's, and the name's line is taken out of it.
    Dns,
}

/// The name tokend asks for in the `Dns` row.
const IDP_NAME: &str = "tokend-idp.test";

struct Row {
    name: &'static str,
    switch: Switch,
    /// The log line's `outcome`, and a part of its `error`.
    outcome: &'static str,
    error: &'static str,
    policy: Policy,
}

fn rows() -> Vec<Row> {
    let fault = |v: Value| {
        let mut v = v;
        v["until_cleared"] = json!(true);
        Switch::Fault(v)
    };
    let row = |name, switch, outcome, error, policy| Row {
        name,
        switch,
        outcome,
        error,
        policy,
    };
    use Policy::*;
    vec![
        row(
            "429 Retry-After: 3",
            fault(json!({ "status": 429, "error": "too_many_requests", "retry_after": "3" })),
            "rate_limited",
            "HTTP 429 `too_many_requests`",
            RetryAfter(3),
        ),
        row(
            "429 Retry-After: <HTTP date>",
            Switch::RetryAfterDate,
            "rate_limited",
            "HTTP 429 (0 bytes)",
            Backoff,
        ),
        row(
            "500",
            fault(json!({ "status": 500 })),
            "failed",
            "HTTP 500 (0 bytes)",
            Backoff,
        ),
        row(
            "502 HTML page",
            fault(json!({ "status": 502, "body": "<html>bad gateway</html>", "content_type": "text/html" })),
            "failed",
            "HTTP 502 (text/html, 24 bytes)",
            Backoff,
        ),
        row(
            "503",
            fault(json!({ "status": 503 })),
            "rate_limited",
            "HTTP 503 (0 bytes)",
            Backoff,
        ),
        row(
            "504",
            fault(json!({ "status": 504, "error": "server_error" })),
            "failed",
            "HTTP 504 `server_error`",
            Backoff,
        ),
        row(
            "connection refused",
            Switch::StopIssuer,
            "failed",
            "Connection refused",
            Backoff,
        ),
        row(
            "DNS: the name does not resolve",
            Switch::Dns,
            "failed",
            "failed to lookup address information",
            Backoff,
        ),
        row(
            "connection reset",
            fault(json!({ "abort": "reset" })),
            "failed",
            "reset",
            Backoff,
        ),
        row(
            "closed without an answer",
            fault(json!({ "abort": "close" })),
            "failed",
            "cannot reach",
            Backoff,
        ),
        row(
            "slow headers (5 s, timeout 2 s)",
            fault(json!({ "delay_ms": 5000 })),
            "failed",
            "did not answer within 2s",
            Backoff,
        ),
        row(
            "slow body (5 s, timeout 2 s)",
            fault(json!({ "body_delay_ms": 5000 })),
            "failed",
            "sent only part of its answer within 2s (HTTP 200, ",
            Backoff,
        ),
        row(
            "200 HTML page",
            fault(json!({ "status": 200, "body": "<html>login</html>", "content_type": "text/html" })),
            "failed",
            "the body is not a JSON object (text/html, 18 bytes)",
            Backoff,
        ),
        row(
            "200 garbage",
            fault(json!({ "status": 200, "body": "\u{1}\u{2}garbage{", "content_type": "application/json" })),
            "failed",
            "the body is not a JSON object",
            Backoff,
        ),
        row(
            "JSON without access_token",
            fault(
                json!({ "status": 200, "body": "{\"token_type\":\"Bearer\",\"expires_in\":60}",
                          "content_type": "application/json" }),
            ),
            "failed",
            "`access_token` is missing",
            Backoff,
        ),
        row(
            "expires_in 0",
            fault(json!({ "expires_in": 0 })),
            "failed",
            "`expires_in` is 0: the token is already expired",
            Backoff,
        ),
        row(
            "expires_in -60",
            fault(json!({ "expires_in": -60 })),
            "failed",
            "`expires_in` is -60: the token is already expired",
            Backoff,
        ),
        row(
            "expires_in 1e12 (31,000 years)",
            fault(json!({ "expires_in": 1e12 })),
            "failed",
            "`expires_in` is not a valid number of seconds",
            Backoff,
        ),
        row(
            "expires_in \"soon\"",
            fault(json!({ "expires_in": "soon" })),
            "failed",
            "`expires_in` is not a valid number of seconds",
            Backoff,
        ),
        row(
            "token_type with a header injection",
            fault(json!({ "token_type": "Bearer\r\nX-Evil: 1" })),
            "failed",
            "`token_type` is not a valid token type",
            Backoff,
        ),
        row(
            "401 invalid_client",
            fault(json!({ "status": 401, "error": "invalid_client" })),
            "rejected",
            "HTTP 401 `invalid_client`",
            Maximum,
        ),
        row("302 redirect", Switch::Redirect, "rejected", "HTTP 302", Maximum),
        row(
            "TLS: expired certificate",
            Switch::Certificate("expired"),
            "rejected",
            "the server's TLS certificate is not trusted: it has expired",
            Maximum,
        ),
        row(
            "TLS: certificate from an unknown CA",
            Switch::Certificate("untrusted"),
            "rejected",
            "the server's TLS certificate is not trusted: it is not signed by a CA that tokend trusts",
            Maximum,
        ),
        row(
            "TLS: certificate for another name",
            Switch::Certificate("wrong_name"),
            "rejected",
            "the server's TLS certificate is not trusted: it is not issued for this host name",
            Maximum,
        ),
    ]
}

/// The rows a server can play: only the mock server speaks TLS; the DNS row needs root (for
/// the mount namespace), and is skipped loudly without it.
fn rows_for(kind: Kind) -> Vec<Row> {
    rows()
        .into_iter()
        .filter(|r| match r.switch {
            Switch::Certificate(_) => kind == Kind::Mock,
            Switch::Dns => super::running_as_root(&format!("idp_faults {kind:?} row {:?}", r.name)),
            _ => true,
        })
        .collect()
}

/// What one row measured.
struct Figures {
    name: String,
    window: Duration,
    requests: usize,
    /// Of `requests`, those that timed out instead of meeting the fault (a starved server).
    noise: usize,
    allowed: usize,
    recovery: Duration,
    recovery_bound: Duration,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "| {} | {:.1} s | {}{} | ≤ {} | {:.2} s | ≤ {:.1} s |",
            self.name,
            self.window.as_secs_f64(),
            self.requests,
            match self.noise {
                0 => String::new(),
                n => format!(" ({n} timed out)"),
            },
            self.allowed,
            self.recovery.as_secs_f64(),
            self.recovery_bound.as_secs_f64()
        )
    }
}

/// A tokend with one client `idp` asking `token_url`, with `extra` lines under the client and
/// `outputs` (a YAML flow list; by default the raw token in out/idp.token).
fn client_config(dir: &TestDir, token_url: &str, extra: &str, outputs: Option<&str>) -> PathBuf {
    let raw = format!("[{{ path: {} }}]", dir.join("out/idp.token").display());
    let secret = dir.secret("secret", SECRET);
    let mut yaml = format!(
        "state_dir: {state}\nsocket: {{ path: {socket} }}\nclients:\n  idp:\n    token_url: {token_url}\n    client_id: app\n    client_secret: {{ file: {secret} }}\n    refresh: {{ at: 25%, jitter: 0%, min_remaining: 1s }}\n    retry: {{ initial: {initial}ms, max: {max}s }}\n    timeouts: {{ request: {timeout}s }}\n    outputs: {outputs}\n",
        state = dir.join("state").display(),
        socket = dir.join("tokend.sock").display(),
        secret = secret.display(),
        initial = RETRY_INITIAL.as_millis(),
        max = RETRY_MAX.as_secs(),
        timeout = REQUEST_TIMEOUT.as_secs(),
        outputs = outputs.unwrap_or(&raw),
    );
    for line in extra.lines() {
        yaml.push_str(&format!("    {line}\n"));
    }
    dir.write("config.yaml", &yaml)
}

/// The failed attempts tokend logged since `since`, with their times. (A slow start-up can
/// make the first token's request fail too.)
fn failures(daemon: &Tokend, since: SystemTime) -> Vec<(SystemTime, Value)> {
    daemon
        .events()
        .into_iter()
        .filter(|e| e["attempt"].is_u64())
        .map(|e| {
            let at = humantime::parse_rfc3339(e["timestamp"].as_str().expect("a timestamp")).expect("RFC 3339");
            (at, e)
        })
        .filter(|(at, _)| *at >= since)
        .collect()
}

/// The token the socket serves for `idp`.
fn served(dir: &TestDir) -> String {
    let socket = dir.join("tokend.sock");
    let (status, body) = curl(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://localhost/v1/tokens/idp",
    ]);
    assert_eq!(status, 200, "the socket must still serve the token: {body}");
    body
}

/// The part of a fault row that is the same for every server: given a running daemon whose
/// first token is `first`, with the fault just switched on at `on`, waits for the fault to be met
/// (twice, and at least `FAULT_ON`), checks the file and socket all along, calls `off`, and
/// measures the recovery. `expect` is (outcome, part of the error, policy).
fn ride_out(
    name: &str,
    dir: &TestDir,
    daemon: &mut Tokend,
    first: &str,
    on: Instant,
    expect: (&str, &str, Policy),
    off: impl FnOnce(),
) -> Figures {
    let (outcome, error, policy) = expect;
    let path = dir.join("out/idp.token");
    let on_wall = SystemTime::now() - on.elapsed();
    // The file, read every 10 ms until `done` says so: it never disappears or empties.
    let watch = |done: &dyn Fn(&str) -> bool| loop {
        let now = read(&path).expect("the token file never disappears or empties");
        if done(&now) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The fault's own failures. On a loaded machine a server (node above all) can also be too
    // slow for the request timeout now and then: such a line is told apart, and allowed, as
    // long as the fault itself is met twice.
    let met = |e: &Value| e["outcome"] == outcome && e["error"].as_str().is_some_and(|t| t.contains(error));
    let noise = |e: &Value| !met(e) && e["error"].as_str().is_some_and(|t| t.contains("did not answer within"));
    let deadline = on + T;
    watch(&|now| {
        assert!(
            now == first,
            "{name}: the token file changed while the IdP was failing:\n{}",
            daemon.output()
        );
        assert!(
            Instant::now() < deadline,
            "{name}: the fault was not met twice:\n{}",
            daemon.output()
        );
        on.elapsed() >= FAULT_ON && failures(daemon, on_wall).iter().filter(|(_, e)| met(e)).count() >= 2
    });
    assert!(daemon.is_running(), "{name}: tokend exited:\n{}", daemon.output());
    assert_eq!(
        served(dir).trim(),
        first.trim(),
        "{name}: the socket serves another token"
    );
    let window = on.elapsed();
    // Taken before the fault is cleared: a request that fails while the server comes back (a
    // restarted dev issuer still starting up) is not the fault's.
    let failed = failures(daemon, on_wall);
    off();
    let off_at = Instant::now();
    // Every failure is logged once, clearly.
    for (_, e) in &failed {
        assert!(met(e) || noise(e), "{name}: {outcome} {error:?} not in {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("still serving the current token, valid until") && message.contains("retrying in"),
            "{name}: {e}"
        );
    }
    // No hot loop: as many requests as the policy allows in the window, and no two closer than
    // it allows (minus the log timestamps' jitter).
    let requests = failed.len();
    let allowed = 2 + (window.as_millis() / policy.min_gap().as_millis()) as usize;
    assert!(
        requests <= allowed,
        "{name}: {requests} requests in {window:?}; the policy allows {allowed}"
    );
    // The floor alone would allow 80 in 8 s; the doubling cap makes that absurd. From the
    // 5th attempt on, each delay is uniform in [0, 2 s] (mean 1 s): 25 of them within 8 s has a
    // probability below 1e-15, while a cap stuck at `retry.initial` would make about 40.
    if let Policy::Backoff = policy {
        assert!(
            requests <= JITTERED_MAX,
            "{name}: {requests} requests in {window:?}: the backoff does not grow"
        );
    }
    for pair in failed.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0).unwrap_or_default();
        // After a timeout, the backoff of a transient failure.
        let least = if noise(&pair[0].1) { MIN_RETRY } else { policy.min_gap() };
        assert!(
            gap + Duration::from_millis(50) >= least,
            "{name}: retried after {gap:?}, the policy's least is {least:?}"
        );
    }
    // Recovery within one backoff step: a retry already waiting (at most one step), plus one
    // request that may still be running into its timeout.
    let recovery_bound = policy.step() + REQUEST_TIMEOUT + MARGIN;
    let new = watch(&|now| {
        assert!(
            off_at.elapsed() < recovery_bound + T,
            "{name}: no new token after the fault cleared:\n{}",
            daemon.output()
        );
        now != first
    });
    let recovery = off_at.elapsed();
    let exp = claims(&new)["exp"].as_u64().unwrap();
    assert!(exp * 1000 > now_ms(), "{name}: the new token is not valid");
    assert!(
        recovery <= recovery_bound,
        "{name}: recovered {recovery:?} after the fault cleared; one backoff step is {:?}",
        policy.step()
    );
    // The first token's line, and this one's.
    daemon.wait_events(2, T, "the refresh after the fault", |e| {
        is(e, "outcome", "refreshed") && is(e, "message", "obtained a new token")
    });
    // The socket is updated just after the files.
    wait_for(T, "the socket to serve a new token", || {
        (served(dir) != first).then_some(())
    });
    Figures {
        name: name.to_owned(),
        window,
        requests,
        noise: failed.iter().filter(|(_, e)| noise(e)).count(),
        allowed,
        recovery,
        recovery_bound,
    }
}

/// Which token server a row runs against.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Dev,
    Mock,
}

/// A row's token server, able to switch its fault on and off.
enum Server {
    /// The development issuer; `None` while stopped (connection refused).
    Dev {
        issuer: Option<Issuer>,
        port: u16,
    },
    Mock(MockIdp),
}

impl Server {
    fn start(kind: Kind, dir: &TestDir) -> Server {
        match kind {
            Kind::Dev => {
                let issuer = Issuer::start(dir, &[("app", SECRET)], LIFETIME);
                Server::Dev {
                    port: issuer.port(),
                    issuer: Some(issuer),
                }
            }
            Kind::Mock => Server::Mock(MockIdp::start(dir, 20)),
        }
    }

    fn token_url(&self) -> String {
        match self {
            Server::Dev { issuer, .. } => issuer.as_ref().unwrap().token_url(),
            Server::Mock(m) => m.token_url.clone(),
        }
    }

    /// Config lines the client needs for this server.
    fn extra(&self) -> String {
        match self {
            Server::Dev { .. } => String::new(),
            Server::Mock(m) => format!("ca_file: {}", m.ca_file),
        }
    }

    /// Every token request fails with `fault` until `clear`.
    fn fault(&self, fault: Value) {
        match self {
            Server::Dev { issuer, .. } => {
                let mut fault = fault;
                fault["until_cleared"] = json!(true);
                issuer.as_ref().unwrap().faults(json!([fault]));
            }
            Server::Mock(m) => m.fault(&fault),
        }
    }

    /// Nothing listens on the port until `clear`.
    fn refuse(&mut self) {
        match self {
            Server::Dev { issuer, .. } => drop(issuer.take()),
            Server::Mock(m) => m.fault(&json!({ "refused": true })),
        }
    }

    fn clear(&mut self, dir: &TestDir) {
        match self {
            Server::Dev {
                issuer: Some(issuer), ..
            } => issuer.clear_faults(),
            Server::Dev { issuer, port } => {
                let port = port.to_string();
                *issuer = Some(Issuer::start_with(
                    dir,
                    &[("app", SECRET)],
                    LIFETIME,
                    &["--port", &port],
                ));
            }
            Server::Mock(m) => m.fault(&json!({})),
        }
    }

    /// Closes the connections tokend keeps alive: the dev issuer is restarted on its port, the
    /// mock server closes idle connections whenever its fault is set.
    fn drop_connections(&mut self, dir: &TestDir) {
        match self {
            Server::Dev { .. } => {
                self.refuse();
                self.clear(dir);
            }
            Server::Mock(m) => m.fault(&json!({})),
        }
    }

    fn requests(&self) -> Vec<Value> {
        match self {
            Server::Dev { issuer, .. } => issuer.as_ref().unwrap().requests(),
            Server::Mock(m) => m.requests(),
        }
    }
}

/// The token in out/idp.token once its refresh is at least 3 s away, so that the fault is on
/// before the refresh is asked for. (Writing the files can stall for seconds on a busy disk,
/// and the refresh is planned from when the token was asked for: its refresh may then be due
/// the moment it is published.)
fn token_with_time_to_spare(daemon: &Tokend, dir: &TestDir) -> String {
    for published in 1.. {
        let lines = daemon.wait_events(published, T, "a new token", |e| {
            is(e, "message", "obtained a new token")
        });
        let at = lines[published - 1]["next_refresh"].as_str().expect("next_refresh");
        let planned = humantime::parse_rfc3339(at).expect("RFC 3339");
        if planned > SystemTime::now() + Duration::from_secs(3) {
            // The line is logged once the files hold the token, and the next is not due yet.
            return read(&dir.join("out/idp.token")).expect("the token file");
        }
    }
    unreachable!()
}

fn run_row(kind: Kind, row: &Row) -> Figures {
    let dir = TestDir::new("idp-fault");
    let mut server = Server::start(kind, &dir);
    let hosts = dir.join("hosts");
    let resolving = format!("127.0.0.1 localhost\n127.0.0.1 {IDP_NAME}\n");
    let mut daemon = if let Switch::Dns = row.switch {
        std::fs::write(&hosts, &resolving).unwrap();
        let url = server.token_url().replace("127.0.0.1", IDP_NAME);
        // Plain http is allowed to loopback addresses only, which the name is not.
        let extra = match server {
            Server::Dev { .. } => "allow_insecure_http: true".to_owned(),
            Server::Mock(_) => server.extra(),
        };
        let cfg = client_config(&dir, &url, &extra, None);
        // The bind mount is tokend's alone; rewriting the file in place changes what it sees.
        let bind = r#"mount --bind "$0" /etc/hosts && exec "$@""#;
        let unshare = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", bind];
        let mut wrapper = unshare.to_vec();
        wrapper.push(hosts.to_str().unwrap());
        Tokend::spawn_under(&dir, &wrapper, &["--config", cfg.to_str().unwrap(), "run"], &[])
    } else {
        let cfg = client_config(&dir, &server.token_url(), &server.extra(), None);
        Tokend::run(&dir, &cfg)
    };
    let first = token_with_time_to_spare(&daemon, &dir);
    let on = Instant::now();
    let mut elsewhere = None;
    let mut date = None;
    match &row.switch {
        Switch::Fault(f) => server.fault(f.clone()),
        Switch::RetryAfterDate => {
            // After the first refresh (5 s), before the window ends (8 s).
            let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(8));
            server.fault(json!({ "status": 429, "retry_after": at }));
            date = Some(httpdate::parse_http_date(&at).unwrap());
        }
        Switch::Redirect => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let target = format!("http://{}/steal", listener.local_addr().unwrap());
            server.fault(json!({ "status": 302, "location": target }));
            elsewhere = Some(listener);
        }
        Switch::Certificate(which) => server.fault(json!({ "certificate": which })),
        Switch::StopIssuer => server.refuse(),
        Switch::Dns => {
            std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
            // Connections kept alive would not look the name up again: drop them.
            server.drop_connections(&dir);
        }
    }
    let name = format!("{kind:?}: {}", row.name);
    let figures = ride_out(
        &name,
        &dir,
        &mut daemon,
        &first,
        on,
        (row.outcome, row.error, row.policy),
        || match row.switch {
            Switch::Dns => std::fs::write(&hosts, &resolving).unwrap(),
            _ => server.clear(&dir),
        },
    );
    if let Some(date) = date {
        // No request between the first 429 and the date it named. (Counted by status: a slow
        // start-up can add a request before the first token.)
        let limited: Vec<u64> = server
            .requests()
            .iter()
            .filter(|r| r["status"] == 429)
            .map(|r| r["at_ms"].as_u64().unwrap())
            .collect();
        let date_ms = date.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(limited[0] < date_ms, "{name}: the first 429 came after its date");
        assert!(
            limited[1] + 100 >= date_ms,
            "{name}: retried at {} ms, before the Retry-After date {date_ms}",
            limited[1]
        );
    }
    if let Some(listener) = elsewhere {
        assert!(listener.accept().is_err(), "{name}: tokend followed the redirect");
    }
    assert!(daemon.stop().success(), "{name}: tokend did not stop cleanly");
    figures
}

/// Runs `rows` a few at a time (each row is a few idle processes for about 12 s); fails with
/// every row's failure, after printing the figures of those that passed.
fn run_rows<R: Sync>(what: &str, rows: &[R], name: impl Fn(&R) -> String + Sync, run: impl Fn(&R) -> Figures + Sync) {
    let mut figures = Vec::new();
    let mut failed = Vec::new();
    for batch in rows.chunks(8) {
        let results: Vec<(String, std::thread::Result<Figures>)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch.iter().map(|r| (name(r), s.spawn(|| run(r)))).collect();
            handles.into_iter().map(|(n, h)| (n, h.join())).collect()
        });
        for (n, result) in results {
            match result {
                Ok(f) => figures.push(f),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failed.push(format!("{n}: {why}"));
                }
            }
        }
    }
    eprintln!(
        "{what}\n| fault | on for | requests | allowed | recovery | bound |\n| --- | --- | --- | --- | --- | --- |"
    );
    for f in &figures {
        eprintln!("{f}");
    }
    assert!(
        failed.is_empty(),
        "{} of {} rows failed:\n{}",
        failed.len(),
        rows.len(),
        failed.join("\n\n")
    );
}

#[test]
fn each_idp_fault_is_ridden_out_and_recovered_from() {
    run_rows(
        "IdP faults, development issuer:",
        &rows_for(Kind::Dev),
        |r| r.name.to_owned(),
        |r| run_row(Kind::Dev, r),
    );
}

#[test]
fn each_idp_fault_is_ridden_out_and_recovered_from_with_oauth2_mock_server() {
    let test = "idp_faults::each_idp_fault_is_ridden_out_and_recovered_from_with_oauth2_mock_server";
    if !crate::environments::interop_suite::interop_ready(test, &[]) {
        return;
    }
    run_rows(
        "IdP faults, oauth2-mock-server:",
        &rows_for(Kind::Mock),
        |r| r.name.to_owned(),
        |r| run_row(Kind::Mock, r),
    );
}

/// Odd but usable answers are taken: `expires_in` as a numeric string, and a token type other
/// than Bearer, which is passed on as the IdP named it.
#[test]
fn odd_but_usable_token_answers_are_accepted() {
    let dir = TestDir::new("idp-odd");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    issuer.faults(json!([{ "expires_in": "600" }, { "token_type": "DPoP", "lifetime_s": 600 }]));
    let cfg = client_config(&dir, &issuer.token_url(), "", None);
    let run = |cfg: &Path| tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
    let once = run(&cfg);
    let log = String::from_utf8_lossy(&once.stderr).into_owned();
    assert!(once.status.success(), "{log}");
    let refreshed = events(&log)
        .into_iter()
        .find(|e| is(e, "outcome", "refreshed"))
        .expect(&log);
    // "10m", or "9m 59s" once the request took a moment.
    let lifetime = humantime::parse_duration(refreshed["lifetime"].as_str().unwrap()).unwrap();
    assert!((599..=600).contains(&lifetime.as_secs()), "{refreshed}");
    assert_eq!(refreshed["lifetime_from"], "expires_in");
    let header = dir.join("out/dpop.header");
    let outputs = format!("[{{ path: {}, format: header }}]", header.display());
    let cfg = client_config(&dir, &issuer.token_url(), "", Some(&outputs));
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let once = run(&cfg);
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert!(read(&header).unwrap().starts_with("Authorization: DPoP eyJ"));
}
