//! `tokend get`, `status` and `probe`: a small HTTP/1.1 client for the socket API, for scripts
//! (`TOKEN=$(tokend get billing)`), operators (`tokend status`) and health checks.

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::config::ClientName;
use crate::server::api::{ClientState, TokenFrom, TokenList};
use crate::server::routes::MAX_WAIT;

/// Why a socket command failed; each maps to a sysexits code scripts can test.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to {socket}: {reason} (is tokend running? is this the right socket? see --socket)")]
    Unavailable { socket: String, reason: String },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotYetValid(String),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// sysexits.h: EX_UNAVAILABLE 69, EX_TEMPFAIL 75, EX_NOPERM 77; 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unavailable { .. } => 69,
            CliError::NotYetValid(_) => 75,
            CliError::Denied(_) => 77,
            CliError::Unknown(_) | CliError::Other(_) => 1,
        }
    }
}

/// A response from the socket API.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Sends `GET path_and_query` over the socket.
pub async fn request(socket: &Path, path_and_query: &str, json: bool, timeout: Duration) -> Result<Reply, CliError> {
    let unavailable = |reason: String| CliError::Unavailable {
        socket: socket.display().to_string(),
        reason,
    };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        // The connection task ends with the exchange; its result is reported through it.
        tokio::spawn(connection);
        let request = Request::get(path_and_query)
            .header(HOST, "localhost")
            .header(ACCEPT, if json { "application/json" } else { "text/plain" })
            .body(Empty::<Bytes>::new())
            .map_err(|e| CliError::Other(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .to_bytes();
        Ok(Reply { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unavailable("no answer in time".into()))?
}

/// The token of `name`; with `wait`, blocks until the client has a valid one or `wait` passes.
pub async fn get(socket: &Path, name: &str, wait: Option<Duration>, json: bool) -> Result<Bytes, CliError> {
    let name = ClientName::new(name).map_err(CliError::Unknown)?;
    let deadline = wait.map(|w| Instant::now() + w);
    let mut retry = Duration::from_millis(50);
    let mut said = false;
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()).min(MAX_WAIT));
        let path = match remaining {
            Some(r) if !r.is_zero() => format!("/v1/tokens/{name}?wait={}ms", r.as_millis()),
            _ => format!("/v1/tokens/{name}"),
        };
        let timeout = remaining.unwrap_or_default() + Duration::from_secs(10);
        let reply = match request(socket, &path, json, timeout).await {
            // Waiting covers tokend not running yet (boot) or restarting: keep trying.
            Err(CliError::Unavailable { reason, .. }) if deadline.is_some_and(|d| Instant::now() + retry < d) => {
                if !std::mem::replace(&mut said, true) {
                    tracing::debug!(socket = %socket.display(), reason, wait = "no_daemon", "tokend does not answer on the socket yet; waiting for it");
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(1));
                continue;
            }
            other => other?,
        };
        let message = || String::from_utf8_lossy(&reply.body).trim().to_owned();
        match reply.status {
            StatusCode::OK => return Ok(reply.body),
            StatusCode::FORBIDDEN => return Err(CliError::Denied(message())),
            StatusCode::NOT_FOUND => return Err(CliError::Unknown(format!("no client named {name}"))),
            StatusCode::SERVICE_UNAVAILABLE if deadline.is_some_and(|d| Instant::now() < d) => continue,
            StatusCode::SERVICE_UNAVAILABLE => return Err(CliError::NotYetValid(message())),
            other => return Err(CliError::Other(format!("unexpected answer {other}: {}", message()))),
        }
    }
}

/// `tokend probe`: whether the daemon is alive (`/healthz`) or, with `ready`, ready (`/readyz`).
pub async fn probe(socket: &Path, ready: bool) -> Result<(), CliError> {
    let path = if ready { "/readyz" } else { "/healthz" };
    let reply = request(socket, path, false, Duration::from_secs(5)).await?;
    match reply.status {
        StatusCode::OK => Ok(()),
        _ => Err(CliError::Other(String::from_utf8_lossy(&reply.body).trim().to_owned())),
    }
}

/// Every client the caller may see, as the socket API describes them (`/v1/tokens`).
pub async fn status(socket: &Path) -> Result<TokenList, CliError> {
    let reply = request(socket, "/v1/tokens", true, Duration::from_secs(10)).await?;
    if reply.status != StatusCode::OK {
        return Err(CliError::Other(format!("unexpected answer {}", reply.status)));
    }
    serde_json::from_slice(&reply.body).map_err(|e| CliError::Other(format!("unreadable status: {e}")))
}

/// One line of counts by state, as `systemctl status` opens with one: `3 clients: 2 ok, 1
/// retrying; 1 warning`. States with no client are left out.
pub fn status_summary(status: &TokenList) -> String {
    let clients = &status.clients;
    let states = [
        ClientState::Ok,
        ClientState::Retrying,
        ClientState::Expired,
        ClientState::Failing,
        ClientState::Pending,
        ClientState::Unknown,
    ];
    let counts: Vec<String> = states
        .iter()
        .map(|state| (state, clients.iter().filter(|c| c.state == *state).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{n} {}", state.as_str()))
        .collect();
    let noun = if clients.len() == 1 { "client" } else { "clients" };
    let mut line = format!("{} {noun}", clients.len());
    if !counts.is_empty() {
        line.push_str(&format!(": {}", counts.join(", ")));
    }
    match clients.iter().filter(|c| c.warning.is_some()).count() {
        0 => {}
        1 => line.push_str("; 1 warning"),
        n => line.push_str(&format!("; {n} warnings")),
    }
    line
}

/// `tokend status`: the summary line, a line about the fleet in fleet mode, then a table (with
/// a column saying which host asked the IdP for each token in fleet mode).
pub fn status_table(status: &TokenList) -> String {
    let fleet = status.fleet.as_ref();
    let mut out = format!("{}\n", status_summary(status));
    if let Some(f) = fleet {
        let store = match f.reachable {
            Some(true) => "reachable".to_owned(),
            Some(false) => format!("UNREACHABLE ({})", f.last_error.as_deref().unwrap_or("?")),
            None => "not asked yet".to_owned(),
        };
        let shared = f
            .last_shared
            .as_ref()
            .map_or(String::new(), |t| format!(", last shared a token issued {t}"));
        out.push_str(&format!(
            "fleet: {} {} in namespace {}; store {} {store}{shared}\n",
            f.role, f.node, f.namespace, f.store,
        ));
    }
    out.push('\n');
    let scopes = status.clients.iter().any(|c| c.scope.is_some());
    let mut header = vec!["NAME", "STATE", "EXPIRES IN", "NEXT REFRESH"];
    if scopes {
        header.push("SCOPE");
    }
    if fleet.is_some() {
        header.push("FROM");
    }
    header.push("LAST ERROR");
    let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(str::to_owned).collect()];
    let span = |s: Option<u64>| s.map(|s| humantime::format_duration(Duration::from_secs(s)).to_string());
    for c in &status.clients {
        let mut row = vec![
            c.name.clone(),
            c.state.as_str().to_owned(),
            match (c.state, span(c.expires_in)) {
                (ClientState::Expired, _) => "expired".to_owned(),
                (_, Some(s)) => s,
                (_, None) => "-".to_owned(),
            },
            span(c.next_refresh_in).map_or("-".to_owned(), |s| format!("in {s}")),
        ];
        if scopes {
            row.push(c.scope.clone().unwrap_or_else(|| "-".to_owned()));
        }
        if fleet.is_some() {
            row.push(match (c.from, &c.node) {
                (Some(TokenFrom::Fleet), Some(node)) => node.clone(),
                (Some(_), _) => "this host".to_owned(),
                (None, _) => "-".to_owned(),
            });
        }
        row.push(match (&c.warning, &c.last_error) {
            (Some(warning), Some(error)) => format!("WARNING: {warning}; {error}"),
            (Some(warning), None) => format!("WARNING: {warning}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "-".to_owned(),
        });
        rows.push(row);
    }
    let last = rows[0].len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < last {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::api::{ClientStatus, FleetStatus};

    fn client(name: &str, state: ClientState) -> ClientStatus {
        ClientStatus {
            name: name.to_owned(),
            state,
            expires_at: None,
            expires_in: None,
            next_refresh: None,
            next_refresh_in: None,
            failures: 0,
            last_error: None,
            version: None,
            issued_at_ms: None,
            from: None,
            node: None,
            scope: None,
            warning: None,
        }
    }

    #[test]
    fn the_table_shows_each_client_and_the_fleet_line_only_in_fleet_mode() {
        let mut billing = client("billing", ClientState::Ok);
        billing.expires_in = Some(3600);
        billing.next_refresh_in = Some(2880);
        billing.from = Some(TokenFrom::Fleet);
        billing.node = Some("node-7".into());
        let mut old = client("old", ClientState::Expired);
        old.expires_in = Some(0);
        old.last_error = Some("IdP unreachable".into());
        let mut list = TokenList {
            clients: vec![billing, old],
            fleet: None,
        };
        let alone = status_table(&list);
        assert_eq!(
            alone,
            "2 clients: 1 ok, 1 expired\n\
             \n\
             NAME     STATE    EXPIRES IN  NEXT REFRESH  LAST ERROR\n\
             billing  ok       1h          in 48m        -\n\
             old      expired  expired     -             IdP unreachable\n"
        );
        list.fleet = Some(FleetStatus {
            role: "follower".into(),
            node: "node-1".into(),
            namespace: "prod".into(),
            store: "redis://r:6379/0".into(),
            reachable: Some(false),
            last_error: Some("connection refused".into()),
            last_shared: None,
        });
        let fleet = status_table(&list);
        let mut lines = fleet.lines().skip(1);
        assert_eq!(
            lines.next(),
            Some("fleet: follower node-1 in namespace prod; store redis://r:6379/0 UNREACHABLE (connection refused)")
        );
        assert!(fleet.contains("FROM"), "{fleet}");
        assert!(fleet.contains("node-7"), "{fleet}");
    }

    #[test]
    fn a_granted_scope_gets_a_column_and_a_warning_comes_before_the_error() {
        let mut held = client("held", ClientState::Retrying);
        held.scope = Some("api.read".into());
        held.warning = Some("the token expires first".into());
        held.last_error = Some("HTTP 429".into());
        let list = TokenList {
            clients: vec![held, client("plain", ClientState::Pending)],
            fleet: None,
        };
        assert_eq!(
            status_table(&list),
            "2 clients: 1 retrying, 1 pending; 1 warning\n\
             \n\
             NAME   STATE     EXPIRES IN  NEXT REFRESH  SCOPE     LAST ERROR\n\
             held   retrying  -           -             api.read  WARNING: the token expires first; HTTP 429\n\
             plain  pending   -           -             -         -\n"
        );
    }
}
