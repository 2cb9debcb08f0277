//! Fleet mode with real parts: Debian's `redis-server` (and `redis-sentinel`) started here on
//! loopback, always with a password or ACL users, the development issuer as its own process,
//! and several `tokend` hosts, each its own process with its own state directory and socket.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const SECRET: &str = "fleet-s3cret/with+odd=chars";
const REDIS_PASSWORD: &str = "redis-pw-for-the-fleet";
const T: Duration = Duration::from_secs(20);

/// Whether Debian's Redis is here (`.ci/run` installs it and sets TOKEND_REQUIRE_REDIS).
fn redis_available(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    unless_skipped(
        test,
        "TOKEND_REQUIRE_REDIS",
        if found {
            Ok(())
        } else {
            Err("redis-server is not installed".to_owned())
        },
    )
    .is_some()
}

/// A redis-server on loopback with `requirepass`, no persistence (a restart empties it).
pub struct Redis {
    child: Option<Reaped>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    pub fn start(dir: &TestDir, extra: &[&str]) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: dir.join(&format!("redis-{}", std::process::id())),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        fs::create_dir_all(&r.dir).unwrap();
        r.up();
        r
    }

    /// Starts (again, empty) on the same port.
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(Reaped(child));
        wait_for(T, "redis-server to answer", || {
            (self.cli(&["PING"]).trim() == "PONG").then_some(())
        });
    }

    /// Stops it (SIGKILL: nothing is saved).
    pub fn down(&mut self) {
        self.child = None;
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().0.id() as i32
    }

    /// `redis-cli` as the default user; its output (errors included).
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_as(None, REDIS_PASSWORD, args)
    }

    pub fn cli_as(&self, user: Option<&str>, password: &str, args: &[&str]) -> String {
        let mut c = Command::new("redis-cli");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--no-auth-warning"]);
        if let Some(user) = user {
            c.args(["--user", user]);
        }
        let out = c.args(["--pass", password]).args(args).output().expect("redis-cli");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every key and its value.
    pub fn dump(&self) -> Vec<(String, String)> {
        self.cli(&["--scan"])
            .lines()
            .filter(|k| !k.is_empty())
            .map(|k| (k.to_owned(), self.cli(&["GET", k])))
            .collect()
    }
}

/// One host of the fleet: a directory with its config, state, socket and token file.
struct Host {
    dir: PathBuf,
    config: PathBuf,
}

impl Host {
    fn socket(&self) -> PathBuf {
        self.dir.join("tokend.sock")
    }

    fn token(&self) -> Option<String> {
        read(&self.dir.join("billing.token"))
    }

    fn status(&self) -> Value {
        socket_json(&self.socket(), "/v1/tokens")
    }
}

struct Fleet<'a> {
    dir: &'a TestDir,
    issuer: Issuer,
    redis_url: String,
    key: PathBuf,
    redis_password: PathBuf,
    extra: String,
}

impl<'a> Fleet<'a> {
    /// The issuer (tokens live `lifetime`) and the fleet's shared files.
    fn new(dir: &'a TestDir, redis: &Redis, lifetime: &str) -> Fleet<'a> {
        Fleet {
            issuer: Issuer::start(dir, &[("app", SECRET)], lifetime),
            redis_url: redis.url(),
            key: dir.secret("fleet.key", &fleet_key()),
            redis_password: dir.secret("redis.password", REDIS_PASSWORD),
            extra: String::new(),
            dir,
        }
    }

    /// A host named `name` (its hostname is the test machine's; the name is its directory).
    fn host(&self, name: &str, role: &str, key: &Path) -> Host {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        let secret = self.dir.secret("client.secret", SECRET);
        let credentials = if role == "follower" {
            String::new()
        } else {
            format!("    client_secret: {{ file: {} }}\n", secret.display())
        };
        let yaml = format!(
            "state_dir: {dir}/state\nsocket: {{ path: {dir}/tokend.sock }}\n\
             fleet:\n  redis: {{ url: \"{url}\", password: {{ file: {pw} }}, timeout: 1s }}\n  key: {{ file: {key} }}\n  namespace: test\n  role: {role}\n{extra}\
             clients:\n  billing:\n    token_url: {token_url}\n    client_id: app\n{credentials}\
             \x20   audience: https://billing/\n    refresh: {{ at: 70%, jitter: 0%, min_remaining: 1s }}\n    retry: {{ initial: 200ms, max: 2s }}\n\
             \x20   outputs: [{{ path: {dir}/billing.token }}]\n",
            dir = dir.display(),
            url = self.redis_url,
            pw = self.redis_password.display(),
            key = key.display(),
            extra = self.extra,
            token_url = self.issuer.token_url(),
        );
        let config = dir.join("config.yaml");
        fs::write(&config, yaml).unwrap();
        Host { dir, config }
    }
}

/// A fleet key: 32 random bytes in base64, as `tokend fleet keygen` prints them.
fn fleet_key() -> String {
    let out = Command::new(BIN).args(["fleet", "keygen"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Values in the store never hold a token or a secret in clear.
fn assert_store_holds_nothing_in_clear(redis: &Redis) {
    for (key, value) in redis.dump() {
        assert_no_leak(&format!("the value of {key} in Redis"), &value);
        if !key.ends_with(":lock") {
            assert!(value.starts_with("tokend1."), "{key} = {value:.60}");
        }
    }
}

fn requests(issuer: &Issuer) -> usize {
    issuer.request_count()
}

#[test]
fn hosts_of_a_fleet_share_one_token_request_per_lifetime() {
    if !redis_available("hosts_of_a_fleet_share_one_token_request_per_lifetime") {
        return;
    }
    let dir = TestDir::new("fleet-share");
    let redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "4s");
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|n| fleet.host(n, "refresher", &fleet.key))
        .collect();
    let daemons: Vec<Tokend> = hosts.iter().map(|h| Tokend::run(&dir, &h.config)).collect();
    for h in &hosts {
        wait_ready(&h.socket());
    }
    // About four lifetimes.
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(13));
    let seconds = began.elapsed().as_secs_f64();
    let asked = requests(&fleet.issuer);
    // One request at start and one per lifetime after (a lifetime is refreshed at ~70%: 2.8 s).
    let lifetimes = seconds / 2.8;
    assert!(
        (asked as f64) <= lifetimes + 2.0,
        "{asked} requests in {seconds:.1}s for 3 hosts ({lifetimes:.1} lifetimes)"
    );
    // Every host serves the same token, and says where it came from.
    let tokens: Vec<String> = wait_for(T, "the hosts to agree", || {
        let t: Vec<String> = hosts.iter().filter_map(Host::token).collect();
        (t.len() == 3 && t.iter().all(|x| *x == t[0])).then_some(t)
    });
    assert_eq!(claims(&tokens[0])["aud"], "https://billing/");
    let statuses: Vec<Value> = hosts.iter().map(Host::status).collect();
    let from: Vec<&str> = statuses
        .iter()
        .map(|s| s["clients"][0]["from"].as_str().unwrap())
        .collect();
    assert!(from.contains(&"fleet"), "{from:?}");
    for s in &statuses {
        assert_eq!(s["fleet"]["role"], "refresher", "{s}");
        assert_eq!(s["fleet"]["reachable"], true, "{s}");
    }
    let metrics = socket_text(&hosts[0].socket(), "/metrics");
    assert!(metrics.contains("tokend_fleet_store_up 1"), "{metrics}");
    assert_store_holds_nothing_in_clear(&redis);
    let keys = redis.cli(&["--scan"]);
    assert!(keys.lines().any(|k| k.starts_with("tokend:test:billing:")), "{keys}");
    for d in daemons {
        assert!(d.stop().success());
    }
}

#[test]
fn a_follower_without_credentials_serves_what_the_refreshers_share() {
    if !redis_available("a_follower_without_credentials_serves_what_the_refreshers_share") {
        return;
    }
    let dir = TestDir::new("fleet-follower");
    let redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "4s");
    let follower = fleet.host("f", "follower", &fleet.key);
    assert!(!fs::read_to_string(&follower.config).unwrap().contains("client_secret"));
    let check = tokend(&["--config", follower.config.to_str().unwrap(), "check"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("none: a fleet follower"));
    let f = Tokend::run(&dir, &follower.config);
    // No refresher yet: nothing to serve, and it says so.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(socket_status(&follower.socket(), "/readyz"), Some(503));
    assert_eq!(requests(&fleet.issuer), 0);
    let refresher = fleet.host("r", "refresher", &fleet.key);
    let r = Tokend::run(&dir, &refresher.config);
    wait_ready(&follower.socket());
    // It follows the refresher's tokens across refreshes, at once.
    let began = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while began.elapsed() < Duration::from_secs(10) {
        if let (Some(a), Some(b)) = (follower.token(), refresher.token())
            && a == b
        {
            seen.insert(a);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.len() >= 3, "the follower took {} tokens", seen.len());
    let status = follower.status();
    assert_eq!(status["fleet"]["role"], "follower");
    assert_eq!(status["clients"][0]["from"], "fleet", "{status}");
    let asked = requests(&fleet.issuer);
    assert!(asked <= 6, "{asked} requests in 10 s of 4 s tokens");
    drop(r);
    drop(f);
}

#[test]
fn a_store_that_is_down_leaves_refreshers_asking_the_idp_and_followers_serving_their_token() {
    if !redis_available("a_store_that_is_down_leaves_refreshers_asking_the_idp_and_followers_serving_their_token") {
        return;
    }
    let dir = TestDir::new("fleet-down");
    let mut redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "6s");
    let hosts: Vec<Host> = ["a", "b"]
        .iter()
        .map(|n| fleet.host(n, "refresher", &fleet.key))
        .collect();
    let follower = fleet.host("f", "follower", &fleet.key);
    let daemons: Vec<Tokend> = hosts
        .iter()
        .chain([&follower])
        .map(|h| Tokend::run(&dir, &h.config))
        .collect();
    for h in hosts.iter().chain([&follower]) {
        wait_ready(&h.socket());
    }
    redis.down();
    // The store is gone for two lifetimes: the refreshers keep valid tokens from the IdP...
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(12) {
        for h in &hosts {
            assert_eq!(
                socket_status(&h.socket(), "/readyz"),
                Some(200),
                "{} lost its token",
                h.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... and the follower served its token until it expired, then says it has none.
    assert_eq!(socket_status(&follower.socket(), "/readyz"), Some(503));
    let status = follower.status();
    assert_eq!(status["fleet"]["reachable"], false, "{status}");
    daemons[0].wait_event(T, "the store said to be down", |e| is(e, "fleet", "store_down"));
    // Back (empty, as after a restart without persistence): sharing resumes within a lifetime.
    redis.up();
    wait_for(Duration::from_secs(20), "the follower to be served again", || {
        (socket_status(&follower.socket(), "/readyz") == Some(200)).then_some(())
    });
    wait_for(Duration::from_secs(20), "the hosts to share one token again", || {
        let t: Vec<String> = hosts.iter().chain([&follower]).filter_map(Host::token).collect();
        (t.len() == 3 && t.iter().all(|x| *x == t[0])).then_some(())
    });
    // Up at start, down, up again.
    daemons[0].wait_events(2, T, "the store said to answer again", |e| is(e, "fleet", "store_up"));
    assert_store_holds_nothing_in_clear(&redis);
    for d in daemons {
        assert!(d.stop().success());
    }
}

#[test]
fn a_stopped_store_holds_up_neither_the_socket_nor_a_stop() {
    if !redis_available("a_stopped_store_holds_up_neither_the_socket_nor_a_stop") {
        return;
    }
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = TestDir::new("fleet-stopped");
    let redis = Redis::start(&dir, &[]);
    // A refresh waits up to the store's timeout (1 s here) before it goes to the IdP: the
    // tokens leave it 1.8 s.
    let fleet = Fleet::new(&dir, &redis, "6s");
    let host = fleet.host("a", "refresher", &fleet.key);
    let daemon = Tokend::run(&dir, &host.config);
    wait_ready(&host.socket());
    kill(Pid::from_raw(redis.pid()), Signal::SIGSTOP).unwrap();
    // Past two refreshes with the store answering nothing: still served, from the IdP.
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        assert_eq!(socket_status(&host.socket(), "/healthz"), Some(200));
        assert_eq!(socket_status(&host.socket(), "/readyz"), Some(200));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "the socket waited {:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopping = Instant::now();
    assert!(daemon.stop().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "the stop took {:?}",
        stopping.elapsed()
    );
    kill(Pid::from_raw(redis.pid()), Signal::SIGCONT).unwrap();
}

#[test]
fn a_host_with_another_fleet_key_publishes_nothing_from_the_store() {
    if !redis_available("a_host_with_another_fleet_key_publishes_nothing_from_the_store") {
        return;
    }
    let dir = TestDir::new("fleet-key");
    let redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "1h");
    let refresher = fleet.host("r", "refresher", &fleet.key);
    let r = Tokend::run(&dir, &refresher.config);
    wait_ready(&refresher.socket());
    let stored = redis.dump();
    let theirs = |k: &str| k.starts_with("tokend:test:billing:") && !k.ends_with(":lock");
    // A follower with another key (a rotation under way, a host given a key of its own): the
    // fleet's token is not its to open; it serves nothing, and says why.
    let other = dir.secret("other.key", &fleet_key());
    let stranger = fleet.host("s", "follower", &other);
    let s = Tokend::run(&dir, &stranger.config);
    s.wait_event(T, "the failure", |e| {
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("no newer token in the fleet store yet"))
    });
    assert_eq!(socket_status(&stranger.socket(), "/readyz"), Some(503));
    assert_eq!(stranger.token(), None);
    // A refresher with that key asks the IdP for itself and shares in a slot of that key's:
    // the fleet's token stays as it was, and the stranger follows this one.
    let lone = fleet.host("l", "refresher", &other);
    let l = Tokend::run(&dir, &lone.config);
    wait_ready(&lone.socket());
    assert_ne!(lone.token(), refresher.token());
    let now: Vec<(String, String)> = redis.dump().into_iter().filter(|(k, _)| theirs(k)).collect();
    let before: Vec<(String, String)> = stored.into_iter().filter(|(k, _)| theirs(k)).collect();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(before.iter().all(|b| now.contains(b)), "the fleet's token was changed");
    wait_ready(&stranger.socket());
    assert_eq!(stranger.token(), lone.token());
    // A value moved to another client's key, or changed, is never published.
    let (key, value) = before[0].clone();
    let mut flipped = value.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    redis.cli(&["SET", &key, std::str::from_utf8(&flipped).unwrap()]);
    let follower = fleet.host("f", "follower", &fleet.key);
    let f = Tokend::run(&dir, &follower.config);
    f.wait_event(T, "the refusal", |e| {
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("does not open under the fleet key"))
    });
    assert_eq!(follower.token(), None);
    drop((r, s, l, f));
}

#[test]
fn a_redis_acl_limits_a_reader_to_its_own_clients() {
    if !redis_available("a_redis_acl_limits_a_reader_to_its_own_clients") {
        return;
    }
    let dir = TestDir::new("fleet-acl");
    let redis = Redis::start(&dir, &[]);
    // The lines docs/fleet.md gives, as written there.
    for line in [
        "ACL SETUSER tokend-refresher on >refresher-pw ~tokend:test:* &tokend:test:* -@all +get +set +del +pexpire +publish +subscribe +ping +eval",
        "ACL SETUSER tokend-billing on >billing-pw ~tokend:test:billing:* &tokend:test:billing:* -@all +get +subscribe +ping",
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        assert_eq!(redis.cli(&args).trim(), "OK", "{line}");
    }
    let fleet = {
        let mut f = Fleet::new(&dir, &redis, "1h");
        f.redis_password = dir.secret("refresher.pw", "refresher-pw");
        f
    };
    // The refresher logs in as its ACL user.
    let refresher = fleet.host("r", "refresher", &fleet.key);
    let yaml = fs::read_to_string(&refresher.config)
        .unwrap()
        .replace("timeout: 1s", "timeout: 1s, username: tokend-refresher");
    fs::write(&refresher.config, yaml).unwrap();
    let check = tokend(&["--config", refresher.config.to_str().unwrap(), "check", "--connect"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        said.contains("GET, SET, SET NX, EVAL, PUBLISH, SUBSCRIBE allowed on tokend:test:billing:"),
        "{said}"
    );
    let r = Tokend::run(&dir, &refresher.config);
    wait_ready(&refresher.socket());
    // The billing reader reads billing's keys and nothing else.
    let (key, _) = redis
        .dump()
        .into_iter()
        .find(|(k, _)| k.starts_with("tokend:test:billing:"))
        .unwrap();
    assert!(
        redis
            .cli_as(Some("tokend-billing"), "billing-pw", &["GET", &key])
            .starts_with("tokend1.")
    );
    redis.cli(&["SET", "tokend:test:reports:x", "secret-of-reports"]);
    let refused = redis.cli_as(Some("tokend-billing"), "billing-pw", &["GET", "tokend:test:reports:x"]);
    assert!(refused.contains("NOPERM"), "{refused}");
    let refused = redis.cli_as(Some("tokend-billing"), "billing-pw", &["SET", &key, "x"]);
    assert!(refused.contains("NOPERM"), "{refused}");

    // A refresher that may only read is told so by `check --connect`, naming the command.
    let reader = fleet.host("b", "refresher", &fleet.key);
    let yaml = fs::read_to_string(&reader.config)
        .unwrap()
        .replace("timeout: 1s", "timeout: 1s, username: tokend-billing")
        .replace(
            fleet.redis_password.to_str().unwrap(),
            dir.secret("billing.pw", "billing-pw").to_str().unwrap(),
        );
    fs::write(&reader.config, yaml).unwrap();
    let check = tokend(&["--config", reader.config.to_str().unwrap(), "check", "--connect"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("billing: fleet store: writing") && said.to_uppercase().contains("NOPERM"),
        "{said}"
    );
    assert!(!said.contains("without TLS"), "no TLS is needed on loopback: {said}");
    drop(r);
}

/// Sentinel: one master, one replica, three sentinels. The hosts find the master through the
/// sentinels, and after a failover find the new one; the fleet sends at most one extra request.
#[test]
fn a_sentinel_failover_costs_at_most_one_extra_request() {
    if !redis_available("a_sentinel_failover_costs_at_most_one_extra_request") {
        return;
    }
    let dir = TestDir::new("fleet-sentinel");
    let master = Redis::start(&dir, &["--masterauth", REDIS_PASSWORD]);
    let replica_of = [
        "--replicaof".to_owned(),
        "127.0.0.1".to_owned(),
        master.port.to_string(),
        "--masterauth".to_owned(),
        REDIS_PASSWORD.to_owned(),
    ];
    let replica = Redis::start(&dir, &replica_of.iter().map(String::as_str).collect::<Vec<_>>());
    let sentinels: Vec<(Reaped, u16)> = (0..3)
        .map(|i| {
            let port = free_port();
            let conf = dir.write(
                &format!("sentinel-{i}.conf"),
                &format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 2\nsentinel auth-pass mymaster {REDIS_PASSWORD}\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 4000\n",
                    dir.path().display(),
                    master.port
                ),
            );
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-sentinel");
            (Reaped(child), port)
        })
        .collect();
    let sentinel = |port: u16, args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (_, port) in &sentinels {
        wait_for(T, "the sentinels to know the replica", || {
            sentinel(*port, &["SENTINEL", "REPLICAS", "mymaster"])
                .contains(&replica.port.to_string())
                .then_some(())
        });
    }
    let mut fleet = Fleet::new(&dir, &master, "4s");
    fleet.redis_url = "unused".into();
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|(_, p)| format!("\"redis://127.0.0.1:{p}\""))
        .collect();
    let hosts: Vec<Host> = ["a", "b"]
        .iter()
        .map(|n| {
            let h = fleet.host(n, "refresher", &fleet.key);
            let yaml = fs::read_to_string(&h.config).unwrap().replace(
                "url: \"unused\"",
                &format!("sentinel: {{ master: mymaster, nodes: [{}] }}", nodes.join(", ")),
            );
            fs::write(&h.config, yaml).unwrap();
            h
        })
        .collect();
    let daemons: Vec<Tokend> = hosts.iter().map(|h| Tokend::run(&dir, &h.config)).collect();
    for h in &hosts {
        wait_ready(&h.socket());
    }
    std::thread::sleep(Duration::from_secs(4));
    let before = requests(&fleet.issuer);
    let failover = sentinel(sentinels[0].1, &["SENTINEL", "FAILOVER", "mymaster"]);
    assert!(failover.contains("OK"), "{failover}");
    wait_for(T, "the replica to become the master", || {
        sentinel(sentinels[0].1, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
            .contains(&replica.port.to_string())
            .then_some(())
    });
    // Four lifetimes on the new master (refreshed at ~70%: 2.8 s each).
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(16) {
        for h in &hosts {
            assert_eq!(socket_status(&h.socket(), "/readyz"), Some(200));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = requests(&fleet.issuer) - before;
    let lifetimes = began.elapsed().as_secs_f64() / 2.8;
    eprintln!("failover: {during} requests in {lifetimes:.1} lifetimes");
    assert!(
        (during as f64) <= lifetimes + 2.0,
        "{during} requests in {lifetimes:.1} lifetimes across the failover"
    );
    wait_for(T, "the hosts to share one token again", || {
        let t: Vec<String> = hosts.iter().filter_map(Host::token).collect();
        (t.len() == 2 && t[0] == t[1]).then_some(())
    });
    // The new master holds the fleet's token.
    let keys = replica.cli(&["--scan", "--pattern", "tokend:test:billing:*"]);
    assert!(!keys.trim().is_empty(), "the new master holds no token");
    for d in daemons {
        assert!(d.stop().success());
    }
}

/// `rediss://` with the fleet's own CA: trusted with `ca_file`, refused (and said so) without.
#[test]
fn a_store_behind_tls_is_trusted_through_ca_file() {
    if !redis_available("a_store_behind_tls_is_trusted_through_ca_file") {
        return;
    }
    let dir = TestDir::new("fleet-tls");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=fleet test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "redis.key",
        "-out",
        "redis.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "redis.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let tls_port = free_port();
    let (cert, key, ca) = (dir.join("redis.pem"), dir.join("redis.key"), dir.join("ca.pem"));
    let port = tls_port.to_string();
    let redis = Redis::start(
        &dir,
        &[
            "--tls-port",
            &port,
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    let mut fleet = Fleet::new(&dir, &redis, "1h");
    fleet.redis_url = format!("rediss://127.0.0.1:{tls_port}/0");
    let host = fleet.host("a", "refresher", &fleet.key);
    // Without the CA: the certificate is not trusted, and check says so.
    let check = tokend(&["--config", host.config.to_str().unwrap(), "check", "--connect"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fleet store") && said.to_lowercase().contains("certificate"),
        "{said}"
    );
    // With it: reached over TLS.
    let yaml = fs::read_to_string(&host.config)
        .unwrap()
        .replace("timeout: 1s", &format!("timeout: 1s, ca_file: {}", ca.display()));
    fs::write(&host.config, yaml).unwrap();
    let check = tokend(&["--config", host.config.to_str().unwrap(), "check", "--connect"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let daemon = Tokend::run(&dir, &host.config);
    wait_ready(&host.socket());
    wait_for(T, "the token in the store", || {
        redis
            .dump()
            .iter()
            .any(|(k, _)| k.starts_with("tokend:test:billing:"))
            .then_some(())
    });
    assert_store_holds_nothing_in_clear(&redis);
    assert!(daemon.stop().success());
}

/// A restarting host seeds from its state file, else from the store: no request to the IdP
/// while either holds a valid token.
#[test]
fn a_restarted_host_takes_its_saved_token_or_the_stores_without_asking() {
    if !redis_available("a_restarted_host_takes_its_saved_token_or_the_stores_without_asking") {
        return;
    }
    let dir = TestDir::new("fleet-restart");
    let redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "1h");
    let a = fleet.host("a", "refresher", &fleet.key);
    let b = fleet.host("b", "refresher", &fleet.key);
    let (da, db) = (Tokend::run(&dir, &a.config), Tokend::run(&dir, &b.config));
    wait_ready(&a.socket());
    wait_ready(&b.socket());
    assert_eq!(requests(&fleet.issuer), 1);
    assert!(da.stop().success() && db.stop().success());
    // a restarts with its state file; b's state directory is gone (a new node, a wiped disk).
    fs::remove_dir_all(b.dir.join("state")).unwrap();
    let (da, db) = (Tokend::run(&dir, &a.config), Tokend::run(&dir, &b.config));
    wait_ready(&a.socket());
    wait_ready(&b.socket());
    assert_eq!(requests(&fleet.issuer), 1, "a restart asked the IdP");
    da.wait_event(T, "the saved token reused", |e| is(e, "outcome", "reused"));
    db.wait_event(T, "the fleet's token adopted", |e| {
        is(e, "outcome", "adopted") && e["node"].is_string()
    });
    assert_eq!(a.token(), b.token());
    assert!(da.stop().success() && db.stop().success());
}

/// A "store" that answers something else (here, an HTTP server) holds nothing up: the
/// refresher gets its token from the IdP, says why, and the socket answers throughout.
#[test]
fn a_store_that_answers_garbage_is_not_waited_for() {
    if !redis_available("a_store_that_answers_garbage_is_not_waited_for") {
        return;
    }
    let dir = TestDir::new("fleet-garbage");
    let redis = Redis::start(&dir, &[]);
    let mut fleet = Fleet::new(&dir, &redis, "1h");
    // The issuer speaks HTTP, not RESP.
    fleet.redis_url = format!("redis://127.0.0.1:{}/0", fleet.issuer.port());
    let host = fleet.host("a", "refresher", &fleet.key);
    let started = Instant::now();
    let daemon = Tokend::run(&dir, &host.config);
    wait_ready(&host.socket());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ready after {:?}",
        started.elapsed()
    );
    assert_eq!(requests(&fleet.issuer), 1);
    daemon.wait_event(T, "the store's failure", |e| {
        e["fleet"] == "store_down" && e["error"].as_str().is_some_and(|m| m.contains("fleet store"))
    });
    let status = host.status();
    assert_eq!(status["fleet"]["reachable"], false, "{status}");
    assert!(daemon.stop().success());
}

/// A reload that changes `fleet:` (the namespace), or takes a client out of the fleet, keeps
/// the client's token and asks nothing; the host works under the new settings at once.
#[test]
fn a_reload_that_changes_the_fleet_keeps_the_token() {
    if !redis_available("a_reload_that_changes_the_fleet_keeps_the_token") {
        return;
    }
    let dir = TestDir::new("fleet-reload");
    let redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "1h");
    let host = fleet.host("a", "refresher", &fleet.key);
    let daemon = Tokend::run(&dir, &host.config);
    wait_ready(&host.socket());
    let token = host.token().unwrap();
    let reload = |n: usize, edit: &dyn Fn(String) -> String| {
        let yaml = edit(fs::read_to_string(&host.config).unwrap());
        fs::write(&host.config, yaml).unwrap();
        daemon.signal(nix::sys::signal::Signal::SIGHUP);
        daemon.wait_events(n, T, "the reload", |e| is(e, "reload", "applied"));
    };
    reload(1, &|y| y.replace("namespace: test", "namespace: other"));
    assert_eq!(host.status()["fleet"]["namespace"], "other");
    assert_eq!(host.token().unwrap(), token);
    reload(2, &|y| {
        y.replace("    client_id: app\n", "    client_id: app\n    fleet: false\n")
    });
    assert_eq!(host.token().unwrap(), token);
    assert_eq!(requests(&fleet.issuer), 1, "a reload asked the IdP");
    assert_eq!(socket_status(&host.socket(), "/readyz"), Some(200));
    assert!(daemon.stop().success());
}

/// `tokend once` (cron, an init container) takes the fleet's token from the store and asks
/// nothing; with nothing in the store, it asks (a refresher) and shares what it got.
#[test]
fn once_takes_the_fleets_token_and_shares_its_own() {
    if !redis_available("once_takes_the_fleets_token_and_shares_its_own") {
        return;
    }
    let dir = TestDir::new("fleet-once");
    let redis = Redis::start(&dir, &[]);
    let fleet = Fleet::new(&dir, &redis, "1h");
    let first = fleet.host("a", "refresher", &fleet.key);
    let out = tokend(&["--config", first.config.to_str().unwrap(), "once"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(requests(&fleet.issuer), 1);
    let second = fleet.host("b", "follower", &fleet.key);
    let out = tokend(&["--config", second.config.to_str().unwrap(), "once"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(requests(&fleet.issuer), 1);
    assert_eq!(first.token(), second.token());
}
