//! Fleet mode: many tokend hosts share one refresh per client per token lifetime through a
//! Redis (or Valkey) they all reach. It is a `TokenSource` around the IdP's (`FleetSource`):
//! read the store, else take a per-client lock, ask the IdP, store the token and announce it.
//! Tokens are idempotent, so a lost lock or announcement costs one extra request, never a
//! wrong token; a store that is down means "ask the IdP as before" (a refresher) or "keep
//! serving what is held" (a follower), never "serve nothing". Values are sealed (`seal`).
//!
//! `Fleet` is what the groups share: the store, with every command's result reported once per
//! change of health; the announcements; this host's name and role.

pub(crate) mod announce;
pub(crate) mod probe;
pub(crate) mod redis;
pub(crate) mod seal;
pub(crate) mod source;
pub(crate) mod store;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use crate::config::{self, FleetRole};
use crate::metrics::Metrics;
use crate::oauth::FetchError;
use crate::refresh::clock::Clock;
use crate::refresh::{Group, IdpSource, TokenSource};
use crate::store::FleetReport;
use crate::token::{Token, unix_millis};
use announce::Announcements;
use seal::FleetKey;
use store::{Store, StoreError};

pub use source::{FleetSource, Keys};

/// What every fleet group of a process shares.
pub struct Fleet<St> {
    store: St,
    pub announcements: Announcements,
    /// This host's name, in every value it shares (`tokend status` shows where a token came from).
    pub node: Arc<str>,
    pub role: FleetRole,
    pub namespace: String,
    /// The fleet's key (a client may have its own).
    pub key: Arc<FleetKey>,
    pub metrics: Arc<Metrics>,
    health: Health,
}

/// The store's health as the last command found it.
#[derive(Default)]
struct Health {
    /// `UNKNOWN`, `UP` or `DOWN`.
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// Commands the store refused, each reported once.
    refused: Mutex<Vec<&'static str>>,
    /// When this host last shared a token it got from the IdP (Unix ms; 0: never).
    last_shared_ms: AtomicU64,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl<St: Store> Fleet<St> {
    pub fn new(
        store: St,
        announcements: Announcements,
        node: Arc<str>,
        role: FleetRole,
        namespace: String,
        key: Arc<FleetKey>,
        metrics: Arc<Metrics>,
    ) -> Fleet<St> {
        Fleet {
            store,
            announcements,
            node,
            role,
            namespace,
            key,
            metrics,
            health: Health::default(),
        }
    }

    /// The fleet's health for `tokend status`; `store` says where the store is.
    pub fn report(&self, store: String) -> FleetReport {
        let shared = self.health.last_shared_ms.load(Ordering::Relaxed);
        FleetReport {
            role: self.role.as_str(),
            store,
            node: self.node.to_string(),
            namespace: self.namespace.clone(),
            reachable: match self.health.state.load(Ordering::Relaxed) {
                UP => Some(true),
                DOWN => Some(false),
                _ => None,
            },
            last_error: self
                .health
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            last_shared: (shared > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(shared)),
        }
    }

    /// Records that this host shared a token issued at `issued_at`.
    fn shared(&self, issued_at: SystemTime) {
        self.health
            .last_shared_ms
            .store(unix_millis(issued_at), Ordering::Relaxed);
    }

    /// Counts a command and its result, and says so once when the store goes down or comes back.
    /// A command the store refuses (an ACL without it, a full store) leaves the health as it is
    /// (the store answers) and is reported once per command, with the store's reason.
    fn record<T>(&self, command: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.metrics.fleet.command(command, result.is_ok());
        if let Err(StoreError::Refused(why)) = &result {
            let mut refused = self.health.refused.lock().unwrap_or_else(PoisonError::into_inner);
            if !refused.contains(&command) {
                refused.push(command);
                warn!(fleet = "refused", command, error = %why, "the fleet store refuses a command tokend needs (check the Redis user's ACL: `tokend check --connect`)");
            }
            return result;
        }
        let now = if result.is_ok() { UP } else { DOWN };
        let before = self.health.state.swap(now, Ordering::Relaxed);
        self.metrics.fleet.store_up(now == UP);
        match &result {
            Ok(_) if before == DOWN => {
                info!(
                    fleet = "store_up",
                    "the fleet store answers again; tokens are shared again from each client's next refresh"
                )
            }
            Ok(_) if before == UNKNOWN => {
                info!(fleet = "store_up", node = %self.node, role = self.role.as_str(), namespace = %self.namespace, "the fleet store answers")
            }
            Err(e) => {
                *self.health.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                if before != DOWN {
                    let then = match self.role {
                        FleetRole::Refresher => {
                            "until it answers, each client's token comes from the IdP directly, as without a fleet"
                        }
                        FleetRole::Follower => {
                            "until it answers, each client's current token is served until it expires"
                        }
                    };
                    warn!(fleet = "store_down", error = %e, "the fleet store cannot be used; {then}");
                }
            }
            Ok(_) => {}
        }
        result
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let result = self.store.get(key).await;
        self.record("get", result)
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let result = self.store.put(key, value, ttl).await;
        self.record("set", result)
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let result = self.store.lock(key, owner, ttl).await;
        self.record("lock", result)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let result = self.store.unlock(key, owner).await;
        self.record("unlock", result)
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<(), StoreError> {
        let result = self.store.renew(key, owner, ttl).await;
        self.record("renew", result)
    }

    async fn publish(&self, channel: &str, value: &str) -> Result<(), StoreError> {
        let result = self.store.publish(channel, value).await;
        self.record("publish", result)
    }
}

/// This process's part in a fleet: the store, its key and name, and the subscriber task
/// (stopped when this is dropped).
pub struct Member {
    /// The settings it was made from: a reload that changes them makes a new member.
    pub config: Arc<config::Fleet>,
    pub shared: Arc<Fleet<Arc<redis::Redis>>>,
    _subscriber: DropGuard,
}

impl Member {
    /// Reads the fleet's key and starts the subscriber (on the current runtime). The store is
    /// not reached yet: a store that is down must not keep tokend from starting.
    pub fn join(config: &Arc<config::Fleet>, metrics: &Arc<Metrics>) -> Result<Member, String> {
        let key = read_key(&config.key).map_err(|e| format!("fleet.key: {e}"))?;
        // AWS-LC seeds its random generator on first use, from CPU jitter: about 100 ms of one
        // core, once per process. A fleet needs randomness (lock owners, nonces) where a plain
        // tokend may need none (a restart that reuses its tokens); done on a blocking thread
        // now, it does not stall a runtime worker, and the subscriber with it, at the first lock.
        tokio::task::spawn_blocking(|| {
            let mut warm = [0u8; 1];
            // Ignored: a failure shows again, and is reported, where randomness is needed.
            let _ = aws_lc_rs::rand::fill(&mut warm);
        });
        let store = Arc::new(redis::Redis::new(&config.redis)?);
        let announcements = Announcements::default();
        let stop = CancellationToken::new();
        tokio::spawn(redis::subscribe(store.clone(), announcements.clone(), stop.clone()));
        Ok(Member {
            config: config.clone(),
            shared: Arc::new(Fleet::new(
                store,
                announcements,
                node_name().into(),
                config.role,
                config.namespace.clone(),
                Arc::new(key),
                metrics.clone(),
            )),
            _subscriber: stop.drop_guard(),
        })
    }

    /// The source of a group that shares through the fleet, with its own key if it has one.
    pub fn source(&self, group: &Arc<Group>, inner: IdpSource, clock: Clock) -> Result<Source, String> {
        let (key, source) = match group.spec.fleet.as_ref().and_then(|f| f.key.as_ref()) {
            Some(own) => (
                Arc::new(read_key(own).map_err(|e| format!("fleet_key: {e}"))?),
                own.clone(),
            ),
            None => (self.shared.key.clone(), self.config.key.clone()),
        };
        Ok(Source::Shared(Box::new(
            FleetSource::new(inner, self.shared.clone(), group.clone(), key, clock).reading_key_from(source),
        )))
    }
}

/// The Redis keys of each shared client of `clients`: its group's, named for the group's first
/// member (clients with identical requests share one token, and one key).
pub fn keys_by_client(fleet: &config::Fleet, clients: &[Arc<config::Client>]) -> Vec<(config::ClientName, Keys)> {
    Group::from_clients(clients)
        .iter()
        .filter(|g| g.spec.fleet.is_some())
        .flat_map(|g| {
            let lead = &g.members().next().expect("a group has a member").name;
            let source = g.spec.fleet.as_ref().and_then(|f| f.key.as_ref()).unwrap_or(&fleet.key);
            // A key that cannot be read is reported where keys are checked; its slot is unknown.
            let id = read_key(source).map_or_else(|_| "UNREADABLE-KEY".to_owned(), |k| k.id().to_owned());
            let fingerprint = crate::refresh::fingerprint::Fingerprint::of(&g.spec);
            let keys = Keys::new(&fleet.namespace, lead, fingerprint.as_str(), &id);
            g.members().map(move |m| (m.name.clone(), keys.clone()))
        })
        .collect()
}

/// Reads a fleet key from its source (a secret: refused if others may read it).
pub fn read_key(source: &crate::secret::SecretSource) -> Result<FleetKey, String> {
    let text = source.read_bytes("fleet key").map_err(|e| e.to_string())?;
    FleetKey::from_text(&text).map_err(|e| format!("{} ({})", e, source.describe()))
}

/// This host's name in the fleet: its hostname (in Kubernetes, the pod's name).
pub fn node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A group's source: the IdP alone, or the fleet around it.
pub enum Source {
    Idp(IdpSource),
    /// Boxed: most groups of a large configuration are one or the other, and a task holds its
    /// source for its whole life.
    Shared(Box<FleetSource<IdpSource, Arc<redis::Redis>>>),
}

impl TokenSource for Source {
    async fn obtain(&mut self, sent_at: SystemTime, current: Option<Arc<Token>>) -> Result<Token, FetchError> {
        match self {
            Source::Idp(s) => s.obtain(sent_at, current).await,
            Source::Shared(s) => s.obtain(sent_at, current).await,
        }
    }

    async fn check_saved(&mut self, token: &Token) -> Result<(), FetchError> {
        match self {
            Source::Idp(s) => s.check_saved(token).await,
            Source::Shared(s) => s.check_saved(token).await,
        }
    }

    async fn offered(&mut self, current: Option<Arc<Token>>) {
        match self {
            Source::Idp(_) => std::future::pending().await,
            Source::Shared(s) => s.offered(current).await,
        }
    }
}
