//! The fleet's logic against an in-memory store shared by several "hosts", under tokio's
//! paused time: who asks the IdP, who takes the token, and what happens when the store fails.

use std::path::Path;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use secrecy::ExposeSecret;

use super::*;
use crate::config::parse_str;
use crate::fleet::announce::Announcements;
use crate::fleet::store::memory::Memory;
use crate::metrics::Metrics;
use crate::refresh::clock::manual;

const S: fn(u64) -> Duration = Duration::from_secs;

fn t0() -> SystemTime {
    UNIX_EPOCH + S(1_800_000_000)
}

/// An IdP that counts its requests and issues `lifetime` tokens named after the host.
struct Idp {
    host: &'static str,
    requests: Arc<Mutex<Vec<&'static str>>>,
    lifetime: Duration,
    /// How long a request takes.
    latency: Duration,
}

impl TokenSource for Idp {
    async fn obtain(&mut self, sent_at: SystemTime, _current: Option<Arc<Token>>) -> Result<Token, FetchError> {
        tokio::time::sleep(self.latency).await;
        let n = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(self.host);
            requests.len()
        };
        Ok(Token::for_test(&format!("{}-{n}", self.host), sent_at, self.lifetime))
    }
}

fn group(role: &str) -> Arc<Group> {
    group_with(role, "")
}

/// The group of client `billing`, with `extra` settings (`timeouts: …, `) in its mapping.
fn group_with(role: &str, extra: &str) -> Arc<Group> {
    let yaml = format!(
        "fleet: {{ redis: {{ url: \"redis://127.0.0.1:6379\" }}, key: {{ file: /k }}, namespace: test, role: {role} }}\n\
         defaults: {{ token_url: https://idp.example/t, client_id: a, client_secret: {{ file: /s }} }}\n\
         clients:\n  billing: {{ {extra}audience: https://billing/, refresh: {{ at: 80%, jitter: 10%, min_remaining: 1s }} }}\n"
    );
    let config = parse_str(&yaml, Path::new("/etc/tokend/config.yaml")).unwrap();
    Arc::new(Group::from_clients(&config.clients).remove(0))
}

fn key(byte: u8) -> Arc<FleetKey> {
    Arc::new(
        FleetKey::from_text(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [byte; 32]).as_bytes())
            .unwrap(),
    )
}

/// One host of the fleet: its source, over the shared store.
struct Host {
    source: FleetSource<Idp, Memory>,
}

struct Fleetwide {
    store: Memory,
    requests: Arc<Mutex<Vec<&'static str>>>,
    clock: Clock,
}

impl Fleetwide {
    fn new() -> Fleetwide {
        let (clock, _) = manual::clock(t0());
        Fleetwide {
            store: Memory::default(),
            requests: Arc::default(),
            clock,
        }
    }

    fn host(&self, name: &'static str, role: &str, fleet_key: Arc<FleetKey>) -> Host {
        self.host_with(name, role, fleet_key, "", Duration::from_millis(50))
    }

    /// A host whose client has `extra` settings, at an IdP answering after `latency`.
    fn host_with(
        &self,
        name: &'static str,
        role: &str,
        fleet_key: Arc<FleetKey>,
        extra: &str,
        latency: Duration,
    ) -> Host {
        let announcements = Announcements::default();
        self.store.subscribers.lock().unwrap().push(announcements.clone());
        let role = if role == "follower" {
            FleetRole::Follower
        } else {
            FleetRole::Refresher
        };
        let fleet = Arc::new(Fleet::new(
            self.store.clone(),
            announcements,
            name.into(),
            role,
            "test".into(),
            fleet_key.clone(),
            Arc::new(Metrics::new()),
        ));
        let idp = Idp {
            host: name,
            requests: self.requests.clone(),
            lifetime: S(100),
            latency,
        };
        let group = group_with(role.as_str(), extra);
        Host {
            source: FleetSource::new(idp, fleet, group, fleet_key, self.clock.clone()),
        }
    }

    fn requests(&self) -> Vec<&'static str> {
        self.requests.lock().unwrap().clone()
    }
}

fn value(t: &Token) -> String {
    t.access_token.expose_secret().to_owned()
}

#[tokio::test(start_paused = true)]
async fn hosts_due_together_ask_the_idp_once_and_share_the_token() {
    let fw = Fleetwide::new();
    let mut hosts: Vec<Host> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|h| fw.host(h, "refresher", key(1)))
        .collect();
    // No spread: all try the lock in the same instant, and only the lock keeps them apart.
    for h in &mut hosts {
        h.source.jitter = || 0.0;
    }
    let now = fw.clock.now();
    let results = futures_util::future::join_all(hosts.iter_mut().map(|h| h.source.obtain(now, None))).await;
    let tokens: Vec<Token> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(fw.requests().len(), 1, "{:?}", fw.requests());
    let winner = fw.requests()[0];
    for t in &tokens {
        assert_eq!(value(t), format!("{winner}-1"));
    }
    // The winner's own copy says it came from here; the others name the winner.
    let from_fleet: Vec<_> = tokens
        .iter()
        .filter_map(|t| t.origin.node().map(str::to_owned))
        .collect();
    assert_eq!(from_fleet, vec![winner.to_owned(); 4]);
    // The store holds it sealed, under the group's key, with no byte of the token in clear.
    let keys = hosts[0].source.keys().clone();
    assert!(keys.token.starts_with("tokend:test:billing:") && keys.lock == format!("{}:lock", keys.token));
    let stored = fw.store.raw(&keys.token).unwrap();
    assert!(!stored.contains(&value(&tokens[0])));
    assert_eq!(fw.store.raw(&keys.lock), None, "the lock was released");
}

#[tokio::test(start_paused = true)]
async fn a_host_due_later_takes_the_stored_token_without_asking() {
    let fw = Fleetwide::new();
    let mut a = fw.host("a", "refresher", key(1));
    let mut b = fw.host("b", "refresher", key(1));
    let first = a.source.obtain(fw.clock.now(), None).await.unwrap();
    tokio::time::sleep(S(10)).await;
    let taken = b.source.obtain(fw.clock.now(), None).await.unwrap();
    assert_eq!(value(&taken), value(&first));
    assert_eq!(taken.origin.node(), Some("a"));
    assert_eq!(fw.requests(), ["a"]);
    // At the shared token's refresh point, one of them asks, once.
    let current = Arc::new(taken);
    let due = b.source.group.plan(&current).at;
    tokio::time::sleep(due.duration_since(fw.clock.now()).unwrap()).await;
    let now = fw.clock.now();
    let (x, y) = tokio::join!(
        a.source.obtain(now, Some(Arc::new(first))),
        b.source.obtain(now, Some(current.clone()))
    );
    assert_eq!(value(&x.unwrap()), value(&y.unwrap()));
    assert_eq!(fw.requests().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_host_plans_the_same_refresh_for_the_same_token() {
    let g = group("refresher");
    let t = Token::for_test("shared", t0(), S(1000));
    let at = g.plan(&t).at;
    assert_eq!(at, group("follower").plan(&t).at);
    // Within the jitter window, but the same on every host (the process salt plays no part).
    let offset = at.duration_since(t0()).unwrap().as_secs();
    assert!((700..=900).contains(&offset), "{offset}");
}

#[tokio::test(start_paused = true)]
async fn a_follower_never_asks_and_takes_what_a_refresher_shares() {
    let fw = Fleetwide::new();
    let mut follower = fw.host("f", "follower", key(1));
    let mut refresher = fw.host("r", "refresher", key(1));
    let now = fw.clock.now();
    let (f, r) = tokio::join!(follower.source.obtain(now, None), async {
        tokio::time::sleep(S(1)).await;
        refresher.source.obtain(fw.clock.now(), None).await
    });
    assert_eq!(value(&f.unwrap()), value(&r.unwrap()));
    assert_eq!(fw.requests(), ["r"]);
    // With no refresher at all, it says so and asks no one.
    let fw = Fleetwide::new();
    let mut lonely = fw.host("f", "follower", key(1));
    let e = lonely.source.obtain(fw.clock.now(), None).await.unwrap_err();
    assert!(e.to_string().contains("is a refresher running?"), "{e}");
    assert!(fw.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_store_that_is_down_sends_refreshers_to_the_idp_and_leaves_followers_their_token() {
    let fw = Fleetwide::new();
    fw.store.set_down(true);
    let mut a = fw.host("a", "refresher", key(1));
    let mut b = fw.host("b", "refresher", key(1));
    let mut f = fw.host("f", "follower", key(1));
    let now = fw.clock.now();
    assert_eq!(value(&a.source.obtain(now, None).await.unwrap()), "a-1");
    assert_eq!(value(&b.source.obtain(now, None).await.unwrap()), "b-2");
    let e = f.source.obtain(now, None).await.unwrap_err();
    assert!(e.to_string().contains("cannot reach the fleet store"), "{e}");
    assert!(e.to_string().contains("keeps serving its current token"), "{e}");
    // Back: sharing resumes with the next refresh.
    fw.store.set_down(false);
    let (x, y) = tokio::join!(
        a.source.obtain(fw.clock.now(), None),
        b.source.obtain(fw.clock.now(), None)
    );
    assert_eq!(value(&x.unwrap()), value(&y.unwrap()));
    assert_eq!(fw.requests().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_value_sealed_under_another_key_moved_or_changed_is_never_published() {
    let fw = Fleetwide::new();
    let mut a = fw.host("a", "refresher", key(1));
    let shared = a.source.obtain(fw.clock.now(), None).await.unwrap();
    let keys = a.source.keys().clone();
    let sealed = fw.store.raw(&keys.token).unwrap();
    // Hosts with another key share among themselves, in a slot of their own: they never see
    // the fleet's token, nor write over it.
    let mut stranger = fw.host("s", "refresher", key(2));
    let own = stranger.source.obtain(fw.clock.now(), None).await.unwrap();
    assert_eq!(value(&own), "s-2");
    assert_ne!(stranger.source.keys().token, keys.token);
    assert_eq!(fw.store.raw(&keys.token).unwrap(), sealed);
    let mut stray_follower = fw.host("g", "follower", key(2));
    let theirs = stray_follower.source.obtain(fw.clock.now(), None).await.unwrap();
    assert_eq!(value(&theirs), "s-2");
    // A value sealed under another key planted in the fleet's slot: not published; a
    // refresher asks the IdP for itself and leaves it there; a follower takes nothing.
    let planted = key(2).seal(&keys.token, &own, "s").unwrap();
    fw.store.set_raw(&keys.token, &planted);
    let mut c = fw.host("c", "refresher", key(1));
    assert_eq!(value(&c.source.obtain(fw.clock.now(), None).await.unwrap()), "c-3");
    assert_eq!(fw.store.raw(&keys.token).unwrap(), planted);
    let mut f = fw.host("f", "follower", key(1));
    let e = f.source.obtain(fw.clock.now(), None).await.unwrap_err();
    assert!(e.to_string().contains("another fleet key"), "{e}");
    fw.store.set_raw(&keys.token, &sealed);
    // Changed: a flipped character is not published; a refresher replaces it.
    let mut flipped = sealed.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    fw.store.set_raw(&keys.token, std::str::from_utf8(&flipped).unwrap());
    let mut b = fw.host("b", "refresher", key(1));
    let fresh = b.source.obtain(fw.clock.now(), None).await.unwrap();
    assert_ne!(value(&fresh), value(&shared));
    assert_eq!(fresh.origin, crate::token::Origin::Here);
    // Moved from another client's key: it does not open here.
    let other = Keys::new("test", &ClientName::new("reports").unwrap(), "x", key(1).id());
    fw.store.set_raw(&other.token, &fw.store.raw(&keys.token).unwrap());
    assert!(
        key(1)
            .open(&other.token, fw.store.raw(&other.token).unwrap().as_bytes())
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_whose_holder_vanished_is_taken_over_once_it_expires() {
    let fw = Fleetwide::new();
    let mut b = fw.host("b", "refresher", key(1));
    let keys = b.source.keys().clone();
    // A host took the lock and died before it shared anything.
    assert!(fw.store.lock(&keys.lock, "dead/0", S(2)).await.unwrap());
    let started = tokio::time::Instant::now();
    let t = b.source.obtain(fw.clock.now(), None).await.unwrap();
    assert_eq!(value(&t), "b-1");
    assert!(started.elapsed() >= S(2), "took over after {:?}", started.elapsed());
    assert_eq!(fw.requests(), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn an_announcement_is_offered_at_once_and_a_stale_one_is_not() {
    let fw = Fleetwide::new();
    let mut a = fw.host("a", "refresher", key(1));
    let mut f = fw.host("f", "follower", key(1));
    let first = Arc::new(a.source.obtain(fw.clock.now(), None).await.unwrap());
    let mine = Arc::new(f.source.obtain(fw.clock.now(), None).await.unwrap());
    assert_eq!(value(&mine), value(&first));
    // Waiting with the current token: nothing newer is offered.
    let quiet = tokio::time::timeout(S(30), f.source.offered(Some(mine.clone()))).await;
    assert!(quiet.is_err());
    // Later, a refresher gets a new one (early, say, for a proxy's 401): offered at once.
    tokio::time::sleep(S(30)).await;
    let newer = a.source.obtain(fw.clock.now(), Some(first)).await;
    let _ = newer;
    tokio::time::timeout(S(1), f.source.offered(Some(mine.clone())))
        .await
        .unwrap();
    let taken = f.source.obtain(fw.clock.now(), Some(mine)).await.unwrap();
    assert_eq!(taken.origin.node(), Some("a"));
}

/// The lock lasts a token request's timeouts; a request that waits longer (its turn at a busy
/// token server) keeps it renewed, so that no other host asks meanwhile.
#[tokio::test(start_paused = true)]
async fn a_lock_is_kept_while_its_request_waits_longer_than_the_lock_lasts() {
    let fw = Fleetwide::new();
    let slow = "timeouts: { connect: 1s, request: 1s }, ";
    let mut a = fw.host_with("a", "refresher", key(1), slow, S(5));
    let mut b = fw.host_with("b", "refresher", key(1), slow, S(5));
    a.source.jitter = || 0.0;
    b.source.jitter = || 0.99;
    let now = fw.clock.now();
    let (x, y) = tokio::join!(a.source.obtain(now, None), b.source.obtain(now, None));
    assert_eq!(value(&x.unwrap()), value(&y.unwrap()));
    assert_eq!(
        fw.requests(),
        ["a"],
        "the lock (2 s) ran out while a's request (5 s) waited"
    );
}
