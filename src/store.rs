//! The current token and health of every client, with a way to wait for each client's next
//! change, so readers (the socket API, `once`, readiness) see each change without polling and
//! never wait on the token endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use tokio::sync::{Notify, watch};

use crate::config::ClientName;
use crate::token::{Token, rfc3339, unix_millis};

/// What is known about one client at a moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The newest token, even if it has expired since (check `Token::is_valid_at`).
    pub token: Option<Arc<Token>>,
    /// The `Fingerprint` of the request `token` was obtained by.
    pub fingerprint: Arc<str>,
    /// When tokend will next ask for a token (a refresh or a retry).
    pub next_attempt: Option<SystemTime>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// The IdP's `Retry-After`: it asked for no request before this time. Cleared by the next
    /// token.
    pub held_until: Option<SystemTime>,
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

    /// When the token expires before the IdP allows the next request (`Retry-After`): the expiry
    /// and the end of the wait. Readers will have no valid token in between.
    pub fn expires_while_held(&self) -> Option<(SystemTime, SystemTime)> {
        let expires = self.token.as_ref()?.expires_at;
        self.held_until
            .filter(|until| *until > expires)
            .map(|until| (expires, until))
    }

    /// What readiness says of this client at `now`: why it is not ready, or what will soon
    /// stop it being ready; `None` when all is well.
    pub fn readiness_note(&self, now: SystemTime) -> Option<String> {
        let held = self.expires_while_held().map(|(expires, until)| {
            format!(
                "the IdP asked tokend to wait until {} (Retry-After), after the token expires at {}",
                rfc3339(until),
                rfc3339(expires)
            )
        });
        if self.valid_token(now).is_some() {
            return held;
        }
        let why = match (&self.token, &self.last_error) {
            (Some(t), _) => format!("the token expired at {}", rfc3339(t.expires_at)),
            (None, Some(_)) => "no token yet, and the requests are failing".to_owned(),
            (None, None) => "no token yet".to_owned(),
        };
        Some(match held {
            Some(held) => format!("{why}; {held}"),
            None => why,
        })
    }
}

/// One client's snapshot and the way to wait for its changes. A `watch` channel did this at
/// over 400 bytes a client (its receivers wait on eight notifiers); this is under half that,
/// and every client has one.
#[derive(Default)]
struct Slot {
    // std RwLock: never held across an await.
    snapshot: RwLock<Snapshot>,
    /// Bumped, under the write lock, by every change.
    changes: AtomicU64,
    /// Set when a reload removed the client; its subscribers are told.
    removed: AtomicBool,
    changed: Notify,
}

impl Slot {
    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn modify(&self, change: impl FnOnce(&mut Snapshot)) {
        {
            let mut snapshot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
            change(&mut snapshot);
            self.changes.fetch_add(1, Ordering::Release);
        }
        self.changed.notify_waiters();
    }

    fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// A reader's view of one client that can wait for the next change (a long-poll).
pub struct Subscription {
    slot: Arc<Slot>,
    /// The change count last seen.
    seen: u64,
}

/// The client was removed by a reload.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed;

impl Subscription {
    /// The current snapshot, marked as seen: `changed` waits for a later one.
    pub fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, Snapshot> {
        let snapshot = self.slot.read();
        // Read under the lock, which every change holds while it bumps the count.
        self.seen = self.slot.changes.load(Ordering::Acquire);
        snapshot
    }

    /// The current snapshot, leaving what was seen as it is.
    pub fn borrow(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.slot.read()
    }

    /// Returns once there is a change not yet seen (at once if there is one already); `Err`
    /// once the client has been removed and every change was seen.
    pub async fn changed(&mut self) -> Result<(), Removed> {
        loop {
            let notified = self.slot.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a change after it wakes this wait.
            notified.as_mut().enable();
            let changes = self.slot.changes.load(Ordering::Acquire);
            if changes != self.seen {
                self.seen = changes;
                return Ok(());
            }
            if self.slot.removed.load(Ordering::Acquire) {
                return Err(Removed);
            }
            notified.await;
        }
    }
}

/// Fleet mode's health, for `tokend status`: what this host is and whether the store answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetReport {
    pub role: &'static str,
    pub node: String,
    pub namespace: String,
    /// Where the store is.
    pub store: String,
    /// `None` until the first command.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    /// When this host last shared a token it got from the IdP.
    pub last_shared: Option<SystemTime>,
}

/// Reports the fleet's health when asked.
pub type FleetReporter = Box<dyn Fn() -> FleetReport + Send + Sync>;

pub struct Store {
    // std RwLock: never held across an await.
    clients: RwLock<BTreeMap<ClientName, Arc<Slot>>>,
    /// Fleet mode's health, when this host is in a fleet.
    fleet: RwLock<Option<FleetReporter>>,
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
            fleet: RwLock::default(),
            refresh: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl Store {
    pub fn new() -> Arc<Self> {
        Arc::new(Store::default())
    }

    fn clients(&self) -> RwLockReadGuard<'_, BTreeMap<ClientName, Arc<Slot>>> {
        self.clients.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the set of clients exactly `names`: new ones start empty, missing ones are dropped
    /// (their subscribers learn it), existing ones keep their state.
    pub fn retain_clients<'a>(&self, names: impl IntoIterator<Item = &'a ClientName>) {
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        let wanted: BTreeSet<&ClientName> = names.into_iter().collect();
        clients.retain(|name, slot| {
            let keep = wanted.contains(name);
            if !keep {
                slot.remove();
            }
            keep
        });
        self.refresh
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| wanted.contains(name));
        for name in wanted {
            clients.entry(name.clone()).or_default();
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Makes `notify` the way to ask for a new token for `names` (a group's refresh task).
    pub fn on_refresh_request<'a>(&self, names: impl IntoIterator<Item = &'a ClientName>, notify: &Arc<Notify>) {
        let mut refresh = self.refresh.write().unwrap_or_else(PoisonError::into_inner);
        for name in names {
            refresh.insert(name.clone(), notify.clone());
        }
    }

    /// Asks the task of client `name` for a new token now; false if no task listens.
    pub fn request_refresh(&self, name: &ClientName) -> bool {
        let refresh = self.refresh.read().unwrap_or_else(PoisonError::into_inner);
        refresh.get(name).map(|n| n.notify_one()).is_some()
    }

    /// How to learn the fleet's health (`None`: not in a fleet).
    pub fn set_fleet(&self, reporter: Option<FleetReporter>) {
        *self.fleet.write().unwrap_or_else(PoisonError::into_inner) = reporter;
    }

    /// The fleet's health now, when this host is in a fleet.
    pub fn fleet(&self) -> Option<FleetReport> {
        self.fleet
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|f| f())
    }

    /// Wakes on every change to any client.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Changes a client's snapshot in place and wakes its subscribers. Unknown names are
    /// ignored (the client was removed by a reload while its task was finishing).
    pub fn update(&self, name: &ClientName, change: impl FnOnce(&mut Snapshot)) {
        let clients = self.clients();
        if let Some(slot) = clients.get(name) {
            slot.modify(change);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Runs `f` on a client's snapshot without copying it (the socket API's hot path).
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&Snapshot) -> R) -> Option<R> {
        let clients = self.clients();
        clients.get(name).map(|slot| f(&slot.read()))
    }

    /// How many clients have a valid token at `now`, and how many there are.
    /// Readiness at `now`: how many clients have a valid token, of how many, and a note for
    /// each client that is not ready or soon will not be (see `Snapshot::readiness_note`).
    pub fn readiness(&self, now: SystemTime) -> (usize, usize, Vec<(ClientName, String)>) {
        let clients = self.clients();
        let mut valid = 0;
        let mut notes = Vec::new();
        for (name, slot) in clients.iter() {
            let snapshot = slot.read();
            valid += usize::from(snapshot.valid_token(now).is_some());
            if let Some(note) = snapshot.readiness_note(now) {
                notes.push((name.clone(), note));
            }
        }
        (valid, clients.len(), notes)
    }

    pub fn count_valid(&self, now: SystemTime) -> (usize, usize) {
        let clients = self.clients();
        let valid = clients
            .values()
            .filter(|slot| slot.read().valid_token(now).is_some())
            .count();
        (valid, clients.len())
    }

    /// The snapshots of the clients `wanted` picks (copies only those).
    pub fn snapshots(&self, wanted: impl Fn(&ClientName) -> bool) -> Vec<(ClientName, Snapshot)> {
        let clients = self.clients();
        clients
            .iter()
            .filter(|(n, _)| wanted(n))
            .map(|(n, slot)| (n.clone(), slot.read().clone()))
            .collect()
    }

    pub fn get(&self, name: &ClientName) -> Option<Snapshot> {
        self.with(name.as_str(), Snapshot::clone)
    }

    /// A view of client `name` that can wait for its changes; the current state counts as seen.
    pub fn subscribe(&self, name: &str) -> Option<Subscription> {
        let clients = self.clients();
        clients.get(name).map(|slot| Subscription {
            seen: slot.changes.load(Ordering::Acquire),
            slot: slot.clone(),
        })
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

    fn name(n: &str) -> ClientName {
        ClientName::new(n).unwrap()
    }

    #[tokio::test]
    async fn a_subscriber_sees_every_change_once_and_learns_of_a_removal() {
        let store = Store::new();
        let (a, b) = (name("a"), name("b"));
        store.retain_clients([&a, &b]);
        let mut sub = store.subscribe("a").unwrap();
        let waiting = tokio::spawn(async move {
            sub.changed().await.unwrap();
            let failures = sub.borrow_and_update().failures;
            (sub, failures)
        });
        tokio::task::yield_now().await;
        store.update(&b, |s| s.failures = 7); // another client's change is not this one's
        store.update(&a, |s| s.failures = 1);
        let (mut sub, failures) = waiting.await.unwrap();
        assert_eq!(failures, 1);

        // A change made before the wait begins is not lost; one seen already is not repeated.
        store.update(&a, |s| s.failures = 2);
        sub.changed().await.unwrap();
        assert_eq!(sub.borrow_and_update().failures, 2);
        let pending = tokio::time::timeout(Duration::from_millis(20), sub.changed()).await;
        assert!(pending.is_err(), "no change since the last one seen");

        store.retain_clients([&b]);
        assert_eq!(sub.changed().await, Err(Removed));
        assert!(store.subscribe("a").is_none());
    }
}
