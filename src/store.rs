//! The current token and health of every client, published through `tokio::sync::watch` so
//! readers (the socket API, `once`, readiness) see each change without polling and never wait on
//! the token endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::{Notify, watch};

use crate::config::ClientName;
use crate::token::{Token, unix_millis};

/// What is known about one client at a moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The newest token, even if it has expired since (check `Token::is_valid_at`).
    pub token: Option<Arc<Token>>,
    /// The `Fingerprint` of the request `token` was obtained by.
    pub fingerprint: String,
    /// When tokend will next ask for a token (a refresh or a retry).
    pub next_attempt: Option<SystemTime>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// Grows with every new token: the token's issue time in milliseconds, or one more than the
    /// previous version if that is not larger (after the clock went back). Long-polls compare it.
    pub version: u64,
}

impl Snapshot {
    /// Makes `token` the current token; a different token gets a higher version.
    pub fn set_token(&mut self, token: Arc<Token>) {
        if self.token.as_ref().is_some_and(|old| Arc::ptr_eq(old, &token)) {
            return;
        }
        self.version = (self.version + 1).max(unix_millis(token.issued_at));
        self.token = Some(token);
    }

    pub fn valid_token(&self, now: SystemTime) -> Option<&Arc<Token>> {
        self.token.as_ref().filter(|t| t.is_valid_at(now))
    }
}

pub struct Store {
    // std RwLock: never held across an await.
    clients: RwLock<BTreeMap<ClientName, watch::Sender<Snapshot>>>,
    /// Per client, how to ask its refresh task for a new token now (the token proxy, after an
    /// upstream refused the current one).
    refresh: RwLock<BTreeMap<ClientName, Arc<Notify>>>,
    /// Bumped by every change to any client, for watchers of the whole (systemd's `STATUS=`).
    changes: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            clients: RwLock::default(),
            refresh: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl Store {
    pub fn new() -> Arc<Self> {
        Arc::new(Store::default())
    }

    /// Makes the set of clients exactly `names`: new ones start empty, missing ones are dropped,
    /// existing ones keep their state.
    pub fn retain_clients<'a>(&self, names: impl IntoIterator<Item = &'a ClientName>) {
        let mut clients = self.clients.write().expect("store lock poisoned");
        let wanted: BTreeSet<&ClientName> = names.into_iter().collect();
        clients.retain(|name, _| wanted.contains(name));
        self.refresh
            .write()
            .expect("store lock poisoned")
            .retain(|name, _| wanted.contains(name));
        for name in wanted {
            clients
                .entry(name.clone())
                .or_insert_with(|| watch::Sender::new(Snapshot::default()));
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Makes `notify` the way to ask for a new token for `names` (a group's refresh task).
    pub fn on_refresh_request<'a>(&self, names: impl IntoIterator<Item = &'a ClientName>, notify: &Arc<Notify>) {
        let mut refresh = self.refresh.write().expect("store lock poisoned");
        for name in names {
            refresh.insert(name.clone(), notify.clone());
        }
    }

    /// Asks the task of client `name` for a new token now; false if no task listens.
    pub fn request_refresh(&self, name: &ClientName) -> bool {
        let refresh = self.refresh.read().expect("store lock poisoned");
        refresh.get(name).map(|n| n.notify_one()).is_some()
    }

    /// Wakes on every change to any client.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Changes a client's snapshot in place and wakes its watchers. Unknown names are ignored
    /// (the client was removed by a reload while its task was finishing).
    pub fn update(&self, name: &ClientName, change: impl FnOnce(&mut Snapshot)) {
        let clients = self.clients.read().expect("store lock poisoned");
        if let Some(sender) = clients.get(name) {
            sender.send_modify(change);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Runs `f` on a client's snapshot without copying it (the socket API's hot path).
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&Snapshot) -> R) -> Option<R> {
        let clients = self.clients.read().expect("store lock poisoned");
        clients.get(name).map(|s| f(&s.borrow()))
    }

    /// How many clients have a valid token at `now`, and how many there are.
    pub fn count_valid(&self, now: SystemTime) -> (usize, usize) {
        let clients = self.clients.read().expect("store lock poisoned");
        let valid = clients
            .values()
            .filter(|s| s.borrow().valid_token(now).is_some())
            .count();
        (valid, clients.len())
    }

    /// The snapshots of the clients `wanted` picks (copies only those).
    pub fn snapshots(&self, wanted: impl Fn(&ClientName) -> bool) -> Vec<(ClientName, Snapshot)> {
        let clients = self.clients.read().expect("store lock poisoned");
        clients
            .iter()
            .filter(|(n, _)| wanted(n))
            .map(|(n, s)| (n.clone(), s.borrow().clone()))
            .collect()
    }

    pub fn get(&self, name: &ClientName) -> Option<Snapshot> {
        let clients = self.clients.read().expect("store lock poisoned");
        clients.get(name).map(|s| s.borrow().clone())
    }

    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<Snapshot>> {
        let clients = self.clients.read().expect("store lock poisoned");
        clients.get(name).map(|s| s.subscribe())
    }

    pub fn all(&self) -> Vec<(ClientName, Snapshot)> {
        self.snapshots(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn token(issued_ms: u64) -> Arc<Token> {
        let issued_at = UNIX_EPOCH + Duration::from_millis(issued_ms);
        Arc::new(Token::for_test("t", issued_at, Duration::from_secs(60)))
    }

    #[test]
    fn versions_only_grow_even_when_the_clock_goes_back() {
        let mut s = Snapshot::default();
        let first = token(5_000);
        s.set_token(first.clone());
        assert_eq!(s.version, 5_000);
        s.set_token(first);
        assert_eq!(s.version, 5_000, "the same token keeps its version");
        s.set_token(token(9_000));
        assert_eq!(s.version, 9_000);
        s.set_token(token(1_000)); // issued after the clock stepped back
        assert_eq!(s.version, 9_001);
    }
}
