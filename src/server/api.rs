//! The socket API's answers as types, one definition for the server that writes them and for
//! `tokend status`, which reads them: `GET /v1/tokens` is a [`TokenList`]. Times are RFC 3339
//! strings and whole seconds, as documented in the README ("The socket API").

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::store::{FleetReport, Snapshot};
use crate::token::{rfc3339, unix_millis};

/// `GET /v1/tokens`: every client the caller may read, never a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenList {
    pub clients: Vec<ClientStatus>,
    /// Present in fleet mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// A valid token, and the last attempt succeeded.
    Ok,
    /// A valid token, and attempts for the next one are failing.
    Retrying,
    /// The last token has expired.
    Expired,
    /// No token yet, and attempts are failing.
    Failing,
    /// No token yet; the first attempt has not ended.
    Pending,
    /// A state this build does not know (a newer daemon answering an older `tokend status`).
    #[serde(other)]
    Unknown,
}

/// Which host asked the IdP for the current token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFrom {
    /// This host.
    Idp,
    /// Another host of the fleet (named in `node`).
    Fleet,
}

/// One client's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    pub name: String,
    pub state: ClientState,
    pub expires_at: Option<String>,
    /// Seconds; 0 once expired.
    pub expires_in: Option<u64>,
    pub next_refresh: Option<String>,
    pub next_refresh_in: Option<u64>,
    /// Consecutive failed attempts.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Grows with every new token (what `?wait=…&after=` compares).
    pub version: Option<u64>,
    pub issued_at_ms: Option<u64>,
    pub from: Option<TokenFrom>,
    /// The host that asked the IdP, when another host of the fleet did.
    pub node: Option<String>,
    /// The scope the current token was granted (what was asked for, unless the IdP said or
    /// the token shows otherwise).
    #[serde(default)]
    pub scope: Option<String>,
    /// What will go wrong unless something changes: the token expires before the IdP allows the
    /// next request (`Retry-After`).
    #[serde(default)]
    pub warning: Option<String>,
}

/// Fleet mode: what this host is, and whether the store answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub role: String,
    pub node: String,
    pub namespace: String,
    pub store: String,
    /// `None` until the first command.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    /// When this host last shared a token it got from the IdP.
    pub last_shared: Option<String>,
}

impl ClientState {
    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Ok => "ok",
            ClientState::Retrying => "retrying",
            ClientState::Expired => "expired",
            ClientState::Failing => "failing",
            ClientState::Pending => "pending",
            ClientState::Unknown => "unknown",
        }
    }
}

impl ClientStatus {
    /// A client's snapshot at `now`.
    pub fn new(name: &str, s: &Snapshot, now: SystemTime) -> ClientStatus {
        let valid = s.valid_token(now).is_some();
        let state = match (valid, s.failures > 0, s.token.is_some()) {
            (true, false, _) => ClientState::Ok,
            (true, true, _) => ClientState::Retrying,
            (false, _, true) => ClientState::Expired,
            (false, true, false) => ClientState::Failing,
            (false, false, false) => ClientState::Pending,
        };
        let secs_until = |t: SystemTime| t.duration_since(now).map_or(0, |d| d.as_secs());
        let token = s.token.as_deref();
        ClientStatus {
            name: name.to_owned(),
            state,
            expires_at: token.map(|t| rfc3339(t.expires_at)),
            expires_in: token.map(|t| secs_until(t.expires_at)),
            next_refresh: s.next_attempt.map(rfc3339),
            next_refresh_in: s.next_attempt.map(secs_until),
            failures: s.failures,
            last_error: s.last_error.clone(),
            version: token.map(|_| s.version),
            issued_at_ms: token.map(|t| unix_millis(t.issued_at)),
            from: token.map(|t| {
                if t.origin.node().is_some() {
                    TokenFrom::Fleet
                } else {
                    TokenFrom::Idp
                }
            }),
            node: token.and_then(|t| t.origin.node()).map(str::to_owned),
            scope: token.and_then(|t| t.scope.clone()),
            warning: s.expires_while_held().map(|(expires, until)| {
                format!(
                    "the token expires at {}, before the IdP allows the next request at {} (Retry-After)",
                    rfc3339(expires),
                    rfc3339(until)
                )
            }),
        }
    }
}

impl From<FleetReport> for FleetStatus {
    fn from(f: FleetReport) -> FleetStatus {
        FleetStatus {
            role: f.role.to_owned(),
            node: f.node,
            namespace: f.namespace,
            store: f.store,
            reachable: f.reachable,
            last_error: f.last_error,
            last_shared: f.last_shared.map(rfc3339),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::token::{LifetimeSource, Origin, Token};

    fn token(now: SystemTime, life: i64, origin: Origin) -> Arc<Token> {
        let expires_at = if life >= 0 {
            now + Duration::from_secs(life as u64)
        } else {
            now - Duration::from_secs(life.unsigned_abs())
        };
        Arc::new(Token {
            access_token: SecretString::from("t"),
            token_type: "Bearer".into(),
            issued_at: now - Duration::from_secs(10),
            expires_at,
            lifetime_source: LifetimeSource::ExpiresIn,
            scope: None,
            origin,
        })
    }

    #[test]
    fn each_state_from_its_snapshot() {
        let now = SystemTime::now();
        let snapshot = |token: Option<Arc<Token>>, failures| Snapshot {
            token,
            failures,
            ..Snapshot::default()
        };
        let cases = [
            (snapshot(Some(token(now, 60, Origin::Here)), 0), ClientState::Ok),
            (snapshot(Some(token(now, 60, Origin::Here)), 2), ClientState::Retrying),
            (snapshot(Some(token(now, -5, Origin::Here)), 0), ClientState::Expired),
            (snapshot(Some(token(now, -5, Origin::Here)), 3), ClientState::Expired),
            (snapshot(None, 1), ClientState::Failing),
            (snapshot(None, 0), ClientState::Pending),
        ];
        for (i, (s, state)) in cases.iter().enumerate() {
            assert_eq!(ClientStatus::new("c", s, now).state, *state, "case {i}");
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn the_list_reads_back_as_it_was_written_and_names_its_fields_as_documented() {
        let now = SystemTime::now();
        let mut s = Snapshot::default();
        s.set_token(token(now, 3600, Origin::Fleet("node-7".into())));
        s.next_attempt = Some(now + Duration::from_secs(2880));
        let list = TokenList {
            clients: vec![
                ClientStatus::new("billing", &s, now),
                ClientStatus::new("new", &Snapshot::default(), now),
            ],
            fleet: None,
        };
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<TokenList>(&text).unwrap(), list);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(value.get("fleet").is_none(), "{text}");
        let newer = text.replacen("\"ok\"", "\"sleeping\"", 1);
        let read: TokenList = serde_json::from_str(&newer).unwrap();
        assert_eq!(read.clients[0].state, ClientState::Unknown);
        let billing = &value["clients"][0];
        assert_eq!(billing["state"], "ok");
        assert_eq!(billing["from"], "fleet");
        assert_eq!(billing["node"], "node-7");
        assert_eq!(billing["expires_in"], 3600);
        assert_eq!(billing["next_refresh_in"], 2880);
        let fresh = &value["clients"][1];
        assert_eq!(fresh["state"], "pending");
        for key in ["expires_at", "expires_in", "version", "from", "node", "last_error"] {
            assert!(fresh[key].is_null(), "{key} in {fresh}");
        }
    }
}
