//! `FleetSource`: a group's tokens through the fleet. When the group is due, it takes a newer
//! token from the store if one is there; else, spread over a short window, it tries the
//! group's lock; the host that wins asks the IdP (the inner source), stores the token sealed
//! under the fleet key with a TTL at its expiry, and announces it; the others take it from the
//! announcement (or, if that is lost, from the store, polled with jitter) and, if none comes
//! while the lock lasts, try the lock again. A follower never asks the IdP. A store that cannot
//! be used sends a refresher to the IdP as if there were no fleet, and leaves a follower with
//! the token it holds.
//!
//! Every host holding the same token plans its refresh at the same moment (the jitter comes
//! from the token, not from the host: `Group::plan`), so the fleet's refresh point does not
//! drift earlier as it grows; only the lock attempts are spread.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::Fleet;
use super::announce::Subscription;
use super::seal::{FleetKey, SealError};
use super::store::{Store, StoreError};
use crate::config::{ClientName, FleetRole};
use crate::oauth::{ErrorClass, FetchError};
use crate::refresh::clock::Clock;
use crate::refresh::{Group, TokenSource};
use crate::token::Token;

/// Lock attempts are spread over this share of the current token's lifetime …
const SPREAD_SHARE: u32 = 50;
/// … but never more than this …
const MAX_SPREAD: Duration = Duration::from_secs(5);
/// … and over this when there is no token yet (a fleet starting together).
const FIRST_SPREAD: Duration = Duration::from_secs(1);
/// A lock lasts at most this long (longer than a token request may take)…
const MIN_LOCK: Duration = Duration::from_secs(2);
/// A key file is read again at most this often (each refresh reads it, as secrets are read).
const KEY_REREAD: Duration = Duration::from_secs(10);
/// A follower waits at most this long past the spread for the refreshers' token before the
/// loop is told there is none yet.
const FOLLOWER_WAIT: Duration = Duration::from_secs(10);
/// How many times a lost lock is tried again before the loop is told there is no token yet.
const LOCK_ROUNDS: u32 = 3;

/// The Redis keys of one group: the token, its lock and its announcement channel, all under
/// `tokend:{namespace}:{client}:{fingerprint}:{key id}`, so that an ACL pattern on a client name
/// covers all three. The key id keeps hosts with different fleet keys apart (a rotation under
/// way, a host given a key of its own by mistake): each key has its own token and lock, and no
/// host stops another from sharing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub token: String,
    pub lock: String,
    pub channel: String,
}

impl Keys {
    pub fn new(namespace: &str, client: &ClientName, fingerprint: &str, key_id: &str) -> Keys {
        let token = format!("tokend:{namespace}:{client}:{fingerprint}:{key_id}");
        Keys {
            lock: format!("{token}:lock"),
            channel: format!("{token}:new"),
            token,
        }
    }
}

pub struct FleetSource<S, St: Store> {
    inner: S,
    fleet: Arc<Fleet<St>>,
    group: Arc<Group>,
    /// The lead member: its name is in the keys and the metrics.
    client: ClientName,
    label: String,
    keys: Keys,
    key: Arc<FleetKey>,
    /// Where `key` comes from: read again at every refresh, as secrets are, so that a new key
    /// is used without a restart (`None` in tests).
    key_source: Option<crate::secret::SecretSource>,
    /// When `key` was last read from its source.
    key_read_at: Option<Instant>,
    announced: Subscription,
    /// An announced token, opened and validated, that the loop has not taken yet.
    offer: Option<Token>,
    clock: Clock,
    /// The last reason a value in the store would not open, reported once until it changes.
    reported: Option<&'static str>,
    /// A uniform sample in [0, 1), for the spread of lock attempts and polls.
    jitter: fn() -> f64,
}

/// Where an adopted token came from, for the metric.
#[derive(Clone, Copy)]
enum Via {
    Store,
    Announcement,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Store => "store",
            Via::Announcement => "announcement",
        }
    }
}

impl<S: TokenSource, St: Store> FleetSource<S, St> {
    /// `key`: the client's own fleet key, or the fleet's.
    pub fn new(inner: S, fleet: Arc<Fleet<St>>, group: Arc<Group>, key: Arc<FleetKey>, clock: Clock) -> Self {
        let client = group.members().next().expect("a group has a member").name.clone();
        let fingerprint = crate::refresh::fingerprint::Fingerprint::of(&group.spec)
            .as_str()
            .to_owned();
        let keys = Keys::new(&fleet.namespace, &client, &fingerprint, key.id());
        let announced = fleet.announcements.subscribe(&keys.channel);
        FleetSource {
            inner,
            label: group.label(),
            group,
            client,
            keys,
            key,
            key_source: None,
            key_read_at: None,
            announced,
            offer: None,
            clock,
            reported: None,
            jitter: rand::random::<f64>,
            fleet,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Reads the key from `source` again at refreshes (see the field); it was just read.
    pub fn reading_key_from(mut self, source: crate::secret::SecretSource) -> Self {
        self.key_source = Some(source);
        self.key_read_at = Some(Instant::now());
        self
    }

    /// The key as its file holds it now (read on a blocking thread: a hung file system must
    /// not stall the runtime); one that cannot be read now leaves the last one in use, and says
    /// so once.
    async fn reread_key(&mut self) {
        let Some(source) = self.key_source.clone() else {
            return;
        };
        if self.key_read_at.is_some_and(|at| at.elapsed() < KEY_REREAD) {
            return;
        }
        self.key_read_at = Some(Instant::now());
        let read = tokio::task::spawn_blocking(move || super::read_key(&source))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match read {
            Ok(key) if key.id() == self.key.id() => {}
            Ok(key) => {
                tracing::info!(client = %self.label, key = key.id(), previous = self.key.id(), "the fleet key changed; using the new one");
                let fingerprint = crate::refresh::fingerprint::Fingerprint::of(&self.group.spec)
                    .as_str()
                    .to_owned();
                self.keys = Keys::new(&self.fleet.namespace, &self.client, &fingerprint, key.id());
                self.announced = self.fleet.announcements.subscribe(&self.keys.channel);
                self.offer = None;
                self.key = Arc::new(key);
            }
            Err(e) => {
                if self.reported != Some("key") {
                    self.reported = Some("key");
                    error!(client = %self.label, error = %e, "cannot read the fleet key again; still using the one read before");
                }
            }
        }
    }

    fn follower(&self) -> bool {
        self.fleet.role == FleetRole::Follower
    }

    /// Whether `candidate` may replace `current`: newer and still valid; for a refresher that
    /// holds a valid token, also not already due (taking it would only send it to the IdP at
    /// once). Without a valid token, any valid one is better than none: it is served while the
    /// refresh it is due for goes on.
    fn usable(&self, candidate: &Token, current: Option<&Token>, now: SystemTime) -> bool {
        let newer = current.is_none_or(|c| candidate.issued_at > c.issued_at);
        let holding = current.is_some_and(|c| c.is_valid_at(now));
        let due = !self.follower() && holding && self.group.plan(candidate).at <= now;
        newer && candidate.is_valid_at(now) && !due
    }

    /// Opens a value from the store or an announcement; a value that does not open is reported
    /// (once per reason) and counted, never published.
    fn open(&mut self, value: &[u8]) -> Result<Token, SealError> {
        match self.key.open(&self.keys.token, value) {
            Ok(opened) => {
                self.reported = None;
                Ok(opened.token)
            }
            Err(e) => {
                self.fleet.metrics.fleet.seal_failure(&self.client, e.reason());
                if self.reported != Some(e.reason()) {
                    self.reported = Some(e.reason());
                    error!(client = %self.label, key = %self.keys.token, error = %e, "a token in the fleet store cannot be used; not published");
                }
                Err(e)
            }
        }
    }

    /// A token from the store or an announcement, if it is usable and passes `validate:`.
    async fn accept(&mut self, value: &[u8], current: Option<&Token>, via: Via) -> Result<Option<Token>, FetchError> {
        let Ok(token) = self.open(value) else {
            return Ok(None);
        };
        let now = self.clock.now();
        if !self.usable(&token, current, now) {
            return Ok(None);
        }
        if let Err(e) = self.inner.check_saved(&token).await {
            if e.class() == ErrorClass::Permanent {
                warn!(client = %self.label, error = %e, "a token in the fleet store fails validation here; not published");
                return Ok(None);
            }
            return Err(e);
        }
        let delay = now.duration_since(token.issued_at).unwrap_or_default();
        self.fleet.metrics.fleet.adoption(&self.client, via.as_str(), delay);
        // Its times are on the clock of the host that asked. One ahead of this host's would
        // make the token look issued in the future here ("the clock went back"), and be
        // replaced at once: it was issued no later than now.
        let mut token = token;
        token.issued_at = token.issued_at.min(now);
        Ok(Some(token))
    }

    /// Reads the store: a newer usable token, or none.
    async fn read(&mut self, current: Option<&Token>) -> Result<Option<Token>, ReadError> {
        let value = self.fleet.get(&self.keys.token).await.map_err(ReadError::Store)?;
        let found = match value {
            None => None,
            Some(value) => match self.key.open(&self.keys.token, &value) {
                // Sealed under another key: this host's key is not the fleet's. It must not
                // write over the fleet's tokens, so it acts as if there were no store.
                Err(SealError::OtherKey(id)) => {
                    let _ = self.open(&value);
                    return Err(ReadError::OtherKey(id));
                }
                _ => self
                    .accept(&value, current, Via::Store)
                    .await
                    .map_err(ReadError::Fetch)?,
            },
        };
        self.fleet.metrics.fleet.read(&self.client, found.is_some());
        Ok(found)
    }

    /// Waits until `until` for a newer token: announced (taken at once), or in the store
    /// (polled with jitter, as an announcement is lost while the subscriber reconnects).
    async fn wait_for_newer(
        &mut self,
        current: Option<&Token>,
        until: Instant,
        poll: Duration,
    ) -> Result<Option<Token>, ReadError> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            let next_poll = now + poll.mul_f64(0.5 + (self.jitter)());
            tokio::select! {
                value = self.announced.next() => {
                    tracing::trace!(client = %self.label, "an announcement came");
                    if let Some(token) = self.accept(&value, current, Via::Announcement).await.map_err(ReadError::Fetch)? {
                        return Ok(Some(token));
                    }
                }
                _ = tokio::time::sleep_until(next_poll.min(until)) => {
                    if let Some(token) = self.read(current).await? {
                        return Ok(Some(token));
                    }
                }
            }
        }
    }

    /// How long a lock lasts: as long as a token request may take, but within half of what is
    /// left of the current token (a host that dies holding the lock must not outlast it).
    fn lock_ttl(&self, current: Option<&Token>, now: SystemTime) -> Duration {
        let timeouts = self.group.timeouts();
        let request = timeouts.connect + timeouts.request;
        let left = current
            .and_then(|t| t.expires_at.duration_since(now).ok())
            .map_or(request, |d| d / 2);
        request.min(left).max(MIN_LOCK)
    }

    /// Asks the IdP while holding the lock `owner` (for `ttl`, renewed while the request waits:
    /// for its turn at a busy token server, say); shares what it gets. `sent`: when the loop
    /// asked, on the wall clock and on the monotonic one.
    async fn refresh_holding(
        &mut self,
        (owner, ttl): (&str, Duration),
        current: Option<Arc<Token>>,
        (sent_at, begun): (SystemTime, Instant),
    ) -> Result<Token, FetchError> {
        // The lock may be free because another host just finished (and its announcement was
        // lost): look once more before asking.
        if let Ok(Some(token)) = self.read(current.as_deref()).await {
            debug!(client = %self.label, "another host had just shared a token; releasing the lock unused");
            self.release(owner).await;
            return Ok(token);
        }
        let (fleet, lock) = (self.fleet.clone(), self.keys.lock.clone());
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                // Ignored: a lock not renewed expires, and another host may ask too: one
                // request more, never a wrong token.
                let _ = fleet.renew(&lock, owner, ttl).await;
            }
        };
        let result = tokio::select! {
            result = self.inner.obtain(sent_at + begun.elapsed(), current) => result,
            never = renew => never,
        };
        if let Ok(token) = &result {
            self.share(token).await;
        }
        self.release(owner).await;
        result
    }

    async fn release(&mut self, owner: &str) {
        // Ignored: a lock not released expires by itself; the failure is logged with the store's health.
        let _ = self.fleet.unlock(&self.keys.lock, owner).await;
    }

    /// Stores `token` (sealed, until it expires) and announces it. A failure costs the other
    /// hosts one request each, never this host its token.
    async fn share(&mut self, token: &Token) {
        let Ok(ttl) = token.expires_at.duration_since(self.clock.now()) else {
            return;
        };
        let value = match self.key.seal(&self.keys.token, token, &self.fleet.node) {
            Ok(v) => v,
            Err(e) => {
                error!(client = %self.label, error = %e, "cannot seal the token for the fleet; not shared");
                return;
            }
        };
        if self.fleet.put(&self.keys.token, &value, ttl).await.is_ok() {
            self.fleet.shared(token.issued_at);
            let _ = self.fleet.publish(&self.keys.channel, &value).await;
            debug!(client = %self.label, key = %self.keys.token, "shared the new token with the fleet");
        }
    }

    /// The store cannot be used: a refresher asks the IdP itself (and does not share), a
    /// follower keeps what it has.
    async fn without_store(
        &mut self,
        why: String,
        (sent_at, begun): (SystemTime, Instant),
        current: Option<Arc<Token>>,
    ) -> Result<Token, FetchError> {
        if self.follower() {
            return Err(FetchError::Fleet(format!(
                "{why}; a follower keeps serving its current token and takes the next one from the store once it can"
            )));
        }
        self.fleet.metrics.fleet.fallback(&self.client);
        debug!(client = %self.label, reason = %why, "asking the IdP directly");
        self.inner.obtain(sent_at + begun.elapsed(), current).await
    }
}

/// Why the store gave no token.
enum ReadError {
    Store(StoreError),
    OtherKey(String),
    Fetch(FetchError),
}

impl<S: TokenSource, St: Store> TokenSource for FleetSource<S, St> {
    async fn obtain(&mut self, sent_at: SystemTime, current: Option<Arc<Token>>) -> Result<Token, FetchError> {
        // A request sent after waits here counts its token's life from when it is sent.
        let sent = (sent_at, Instant::now());
        self.reread_key().await;
        let current_ref = current.as_deref();
        if let Some(token) = self
            .offer
            .take()
            .filter(|t| self.usable(t, current_ref, self.clock.now()))
        {
            return Ok(token);
        }
        let unusable = |e: ReadError| -> Result<String, FetchError> {
            match e {
                ReadError::Store(e) => Ok(e.to_string()),
                ReadError::OtherKey(id) => Ok(format!(
                    "the fleet store holds tokens sealed under another fleet key (id {id}) than this host's"
                )),
                ReadError::Fetch(e) => Err(e),
            }
        };
        let now = self.clock.now();
        // Without a valid token (a start, a token that expired), the store is read at once.
        // With one, every host holding it is due at this same moment: the one that asks first
        // announces the new token, which the others take without a command.
        if current_ref.is_none_or(|t| !t.is_valid_at(now)) {
            match self.read(current_ref).await {
                Ok(Some(token)) => return Ok(token),
                Ok(None) => {}
                Err(e) => {
                    let why = unusable(e)?;
                    return self.without_store(why, sent, current).await;
                }
            }
        }
        let lock_ttl = self.lock_ttl(current_ref, now);
        let poll = lock_ttl / 4;
        let spread = current_ref.map_or(FIRST_SPREAD, |t| (t.lifetime() / SPREAD_SHARE).min(MAX_SPREAD));
        if self.follower() {
            // The refreshers' token comes within the spread and a request; the store is read
            // once after that (an announcement lost). Past that, the loop is told (and retries
            // with backoff, and takes an announcement whenever it comes).
            let wait = (2 * lock_ttl).min(FOLLOWER_WAIT);
            let until = Instant::now() + spread + wait;
            return match self.wait_for_newer(current_ref, until, spread + wait / 2).await {
                Ok(Some(token)) => Ok(token),
                Ok(None) => Err(FetchError::Fleet(
                    "no newer token in the fleet store yet (is a refresher running?)".into(),
                )),
                Err(e) => {
                    let why = unusable(e)?;
                    self.without_store(why, sent, current).await
                }
            };
        }
        // Spread the lock attempts: the first host to try usually wins, and the others take its
        // announcement while they wait their turn; at its turn, a host reads the store (an
        // announcement may be lost) and tries the lock.
        let turn = Instant::now() + spread.mul_f64((self.jitter)());
        tracing::trace!(client = %self.label, spread = ?spread, "waiting a random part of the spread before trying the lock");
        let found = match self.wait_for_newer(current_ref, turn, 2 * spread).await {
            Ok(None) => self.read(current_ref).await,
            other => other,
        };
        match found {
            Ok(Some(token)) => return Ok(token),
            Ok(None) => {}
            Err(e) => {
                let why = unusable(e)?;
                return self.without_store(why, sent, current).await;
            }
        }
        for _ in 0..LOCK_ROUNDS {
            let owner = owner_id(&self.fleet.node);
            match self.fleet.lock(&self.keys.lock, &owner, lock_ttl).await {
                Err(e) => return self.without_store(e.to_string(), sent, current).await,
                Ok(true) => {
                    debug!(client = %self.label, lock = %self.keys.lock, "took the refresh lock");
                    self.fleet.metrics.fleet.lock(&self.client, true);
                    return self.refresh_holding((&owner, lock_ttl), current, sent).await;
                }
                Ok(false) => {
                    debug!(client = %self.label, lock = %self.keys.lock, "another host holds the refresh lock; waiting for its token");
                    self.fleet.metrics.fleet.lock(&self.client, false);
                    let until = Instant::now() + lock_ttl;
                    match self.wait_for_newer(current_ref, until, poll).await {
                        Ok(Some(token)) => return Ok(token),
                        Ok(None) => {}
                        Err(e) => {
                            let why = unusable(e)?;
                            return self.without_store(why, sent, current).await;
                        }
                    }
                }
            }
        }
        Err(FetchError::Fleet(format!(
            "another host has held the refresh of this client for {} and shared no token",
            humantime::format_duration(lock_ttl * LOCK_ROUNDS)
        )))
    }

    async fn check_saved(&mut self, token: &Token) -> Result<(), FetchError> {
        self.inner.check_saved(token).await
    }

    async fn offered(&mut self, current: Option<Arc<Token>>) {
        self.reread_key().await;
        loop {
            let now = self.clock.now();
            if self
                .offer
                .as_ref()
                .is_some_and(|t| self.usable(t, current.as_deref(), now))
            {
                return;
            }
            let value = self.announced.next().await;
            match self.accept(&value, current.as_deref(), Via::Announcement).await {
                Ok(Some(token)) => self.offer = Some(token),
                Ok(None) => {}
                Err(e) => {
                    warn!(client = %self.label, error = %e, "cannot validate a token the fleet announced; waiting for the next")
                }
            }
        }
    }
}

/// A lock owner: the host's name and random bytes, so that only the taker releases it.
fn owner_id(node: &str) -> String {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{node}/{hex}")
}

#[cfg(test)]
mod tests;
