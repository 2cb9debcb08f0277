//! The fleet store on Redis or Valkey (`redis://`, `rediss://`, `unix://`, or the master of a
//! Sentinel service): one multiplexed connection for commands, and one subscriber connection
//! for announcements. Every connect and every command is bounded by `fleet.redis.timeout`; a
//! connection that breaks, times out, or meets a read-only replica (a failover) is dropped and
//! made again (the master looked up again through the sentinels) by the next command, at most
//! once per backoff step, so a store that is down costs a refresh one fast error, not a hang.
//! The password is read from its source at every connect, so a rotated one is picked up.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, TlsCertificates, TlsMode};
use secrecy::ExposeSecret;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::announce::Announcements;
use super::store::{Store, StoreError};
use crate::config::{RedisConfig, RedisEndpoint};

/// Reconnects back off from this …
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
/// … to this: a store that is back is used again within seconds (tokens may live a minute).
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The subscriber checks its connection this often (a stopped server never closes it).
const PING_EVERY: Duration = Duration::from_secs(15);

/// Releases a lock only if it still holds the releaser's owner id.
const UNLOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extends a lock only if it still holds the owner id.
const RENEW: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

pub struct Redis {
    config: RedisConfig,
    /// Extra trust roots with the system's, for `rediss://` with a `ca_file`.
    roots: Option<Vec<u8>>,
    conn: tokio::sync::Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    /// The connection, and its number: a command that failed drops it only if it is still the
    /// one the command was sent on (another task may have made a new one meanwhile).
    current: Option<(u64, MultiplexedConnection)>,
    made: u64,
    /// No new connection is tried before this after one failed.
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: String,
}

impl Redis {
    /// Checks what can be checked before connecting (the CA file).
    pub fn new(config: &RedisConfig) -> Result<Redis, String> {
        let roots = match &config.ca_file {
            None => None,
            Some(path) => {
                let extra = std::fs::read(path)
                    .map_err(|e| format!("cannot read fleet.redis.ca_file {}: {e}", path.display()))?;
                if pem::parse_many(&extra).map_or(true, |p| p.is_empty()) {
                    return Err(format!(
                        "fleet.redis.ca_file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                Some(with_system_roots(extra))
            }
        };
        Ok(Redis {
            config: config.clone(),
            roots,
            conn: tokio::sync::Mutex::new(Conn {
                backoff: RECONNECT_INITIAL,
                ..Conn::default()
            }),
        })
    }

    pub fn describe(&self) -> String {
        self.config.endpoint.describe()
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        self.roots.as_ref().map(|roots| TlsCertificates {
            client_tls: None,
            root_cert: Some(roots.clone()),
        })
    }

    /// Reads a password from its source, on a blocking thread (a file on a hung file system
    /// must not stall the runtime).
    async fn password(
        &self,
        source: Option<&crate::secret::SecretSource>,
    ) -> Result<Option<secrecy::SecretString>, StoreError> {
        let Some(source) = source.cloned() else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || source.read().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        read.map(Some)
            .map_err(|e| StoreError::Refused(format!("fleet.redis.password: {e}")))
    }

    /// A client for the store: the URL's, or the master the sentinels name now.
    pub async fn client(&self) -> Result<Client, StoreError> {
        let password = self.password(self.config.password.as_ref()).await?;
        let login = |mut redis: redis::RedisConnectionInfo| {
            if let Some(user) = &self.config.username {
                redis = redis.set_username(user);
            }
            if let Some(p) = &password {
                redis = redis.set_password(p.expose_secret());
            }
            redis
        };
        match &self.config.endpoint {
            RedisEndpoint::Url(url) => {
                let info = url.as_str().into_connection_info().map_err(refused)?;
                let redis = login(info.redis_settings().clone());
                let info = info.set_redis_settings(redis);
                match self.certificates() {
                    Some(certs) => Client::build_with_tls(info, certs).map_err(refused),
                    None => Client::open(info).map_err(refused),
                }
            }
            RedisEndpoint::Sentinel {
                master,
                nodes,
                username,
                password: sentinel_password,
            } => {
                let mut addrs = Vec::new();
                for node in nodes {
                    addrs.push(node.as_str().into_connection_info().map_err(refused)?.addr().clone());
                }
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master).map_err(refused)?;
                if let Some(user) = &self.config.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(p) = &password {
                    builder = builder.set_client_to_redis_password(p.expose_secret());
                }
                if let Some(user) = username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(p) = self.password(sentinel_password.as_ref()).await? {
                    builder = builder.set_client_to_sentinel_password(p.expose_secret());
                }
                if self.config.endpoint.is_tls() {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(certs) = self.certificates() {
                        builder = builder
                            .set_client_to_redis_certificates(certs.clone())
                            .set_client_to_sentinel_certificates(certs);
                    }
                }
                let mut sentinel = builder.build().map_err(refused)?;
                match timeout(self.config.timeout, sentinel.async_get_client()).await {
                    Ok(result) => result.map_err(|e| classify(e, "asking the sentinels for the master")),
                    Err(_) => Err(StoreError::Unreachable(format!(
                        "no sentinel named the master of `{master}` within {}",
                        humantime::format_duration(self.config.timeout)
                    ))),
                }
            }
        }
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            .set_response_timeout(Some(self.config.timeout))
    }

    /// The command connection, made if there is none (unless the last attempt failed within
    /// the backoff: then its error at once).
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = &conn.current {
            return Ok(c.clone());
        }
        if let Some(at) = conn.retry_at
            && Instant::now() < at
        {
            return Err(StoreError::Unreachable(conn.last_error.clone()));
        }
        let made = async {
            let client = self.client().await?;
            match timeout(
                self.config.timeout,
                client.get_multiplexed_async_connection_with_config(&self.connection_config()),
            )
            .await
            {
                Ok(result) => result.map_err(|e| classify(e, "connecting")),
                Err(_) => Err(StoreError::Unreachable(format!(
                    "no connection within {}",
                    humantime::format_duration(self.config.timeout)
                ))),
            }
        };
        match made.await {
            Ok(c) => {
                conn.made += 1;
                conn.current = Some((conn.made, c.clone()));
                conn.retry_at = None;
                conn.backoff = RECONNECT_INITIAL;
                Ok((conn.made, c))
            }
            Err(e) => {
                conn.retry_at = Some(Instant::now() + conn.backoff);
                conn.backoff = (conn.backoff * 2).min(RECONNECT_MAX);
                conn.last_error = match &e {
                    StoreError::Unreachable(why) | StoreError::Refused(why) => why.clone(),
                };
                Err(e)
            }
        }
    }

    /// Runs one command; a connection that failed it is dropped. A connection that broke, or
    /// that reached a replica (a failover), is made again at once (through the sentinels: to the
    /// new master) and the command sent once more; one that timed out is not (the store is slow
    /// or stopped: a second wait would only double it). Connecting and the command together take
    /// at most twice the timeout, whatever else waits for the connection.
    async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Result<T, StoreError> {
        let limit = 2 * self.config.timeout;
        match timeout(limit, self.run_unbounded(what, &cmd)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unreachable(format!(
                "no answer to {what} within {}",
                humantime::format_duration(limit)
            ))),
        }
    }

    async fn run_unbounded<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let (made, mut c) = self.connection().await?;
            let (error, again) = match timeout(self.config.timeout, cmd.query_async::<T>(&mut c)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    let again = !e.is_timeout();
                    (classify(e, what), again)
                }
                Err(_) => (
                    StoreError::Unreachable(format!(
                        "no answer to {what} within {}",
                        humantime::format_duration(self.config.timeout)
                    )),
                    false,
                ),
            };
            if matches!(error, StoreError::Unreachable(_)) {
                let mut conn = self.conn.lock().await;
                if conn.current.as_ref().is_some_and(|(n, _)| *n == made) {
                    conn.current = None;
                }
                drop(conn);
                if again && !retried {
                    retried = true;
                    continue;
                }
            }
            return Err(error);
        }
    }
}

impl Store for Redis {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("GET", redis::cmd("GET").arg(key).clone()).await
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.run::<()>("SET", redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ms).clone())
            .await
    }

    async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = self
            .run(
                "SET NX",
                redis::cmd("SET")
                    .arg(key)
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .clone(),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.run::<i64>(
            "EVAL",
            redis::cmd("EVAL").arg(UNLOCK).arg(1).arg(key).arg(owner).clone(),
        )
        .await
        .map(|_| ())
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.run::<i64>(
            "EVAL",
            redis::cmd("EVAL").arg(RENEW).arg(1).arg(key).arg(owner).arg(ms).clone(),
        )
        .await
        .map(|_| ())
    }

    async fn publish(&self, channel: &str, value: &str) -> Result<(), StoreError> {
        self.run::<i64>("PUBLISH", redis::cmd("PUBLISH").arg(channel).arg(value).clone())
            .await
            .map(|_| ())
    }
}

/// Keeps one subscriber connection listening on every channel of `announcements` and hands
/// each message over, until `stop`. A connection that ends, or that does not answer a ping
/// within the timeout (a stopped server), is made again with backoff; announcements made in
/// between are lost (the groups waiting for one also poll the store).
pub async fn subscribe(redis: std::sync::Arc<Redis>, announcements: Announcements, stop: CancellationToken) {
    let mut backoff = RECONNECT_INITIAL;
    let mut reported = false;
    loop {
        let session = listen(&redis, &announcements, &mut backoff, &mut reported);
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = session => ended,
        };
        if !reported {
            reported = true;
            warn!(fleet = "subscriber_down", error = %ended, "the fleet's announcements cannot be received; tokens are taken from the store at each refresh until they can");
        } else {
            debug!(error = %ended, "the fleet subscriber is still down");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// One subscriber connection, until it fails: why it did.
async fn listen(redis: &Redis, announcements: &Announcements, backoff: &mut Duration, reported: &mut bool) -> String {
    let limit = redis.config.timeout;
    let within =
        |what: &'static str| move |_| format!("no answer to {what} within {}", humantime::format_duration(limit));
    let client = match redis.client().await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let pubsub = match timeout(limit, client.get_async_pubsub())
        .await
        .map_err(within("connecting"))
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return classify(e, "connecting the subscriber").to_string(),
        Err(e) => return e,
    };
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<String> = HashSet::new();
    loop {
        // Subscribe to what is new, drop what is gone.
        let wanted: HashSet<String> = announcements.channels().into_iter().collect();
        let new: Vec<&String> = wanted.difference(&subscribed).collect();
        if !new.is_empty() {
            match timeout(limit, sink.subscribe(&new)).await.map_err(within("SUBSCRIBE")) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return classify(e, "SUBSCRIBE").to_string(),
                Err(e) => return e,
            }
        }
        let gone: Vec<&String> = subscribed.difference(&wanted).collect();
        if !gone.is_empty() {
            match timeout(limit, sink.unsubscribe(&gone))
                .await
                .map_err(within("UNSUBSCRIBE"))
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return classify(e, "UNSUBSCRIBE").to_string(),
                Err(e) => return e,
            }
        }
        subscribed = wanted;
        if *reported {
            *reported = false;
            info!(
                fleet = "subscriber_up",
                channels = subscribed.len(),
                "the fleet's announcements are received again"
            );
        }
        *backoff = RECONNECT_INITIAL;
        let ping = tokio::time::sleep(PING_EVERY);
        tokio::pin!(ping);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(m) => {
                        tracing::trace!(channel = m.get_channel_name(), "announcement received");
                        announcements.deliver(m.get_channel_name(), m.get_payload_bytes());
                    }
                    None => return "the subscriber connection closed".into(),
                },
                _ = announcements.changed() => break,
                _ = &mut ping => {
                    match timeout(limit, sink.ping::<redis::Value>()).await.map_err(within("PING")) {
                        Ok(Ok(_)) => ping.as_mut().reset(Instant::now() + PING_EVERY),
                        Ok(Err(e)) => return classify(e, "PING").to_string(),
                        Err(e) => return e,
                    }
                }
            }
        }
    }
}

/// A command's error, sorted: the store answered and refused (a Redis error reply: an ACL
/// without the command or the key, a full store, a wrong type), or it cannot be used (a broken
/// or refused connection, a timeout, an answer that is not Redis's, a failed login, a replica
/// or a loading server after a failover or a restart: what a new connection may cure). Anything
/// that goes wrong while connecting counts as unreachable.
fn classify(e: RedisError, what: &str) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let text = e.to_string();
    let refused = !what.starts_with("connecting")
        && !e.is_io_error()
        && !e.is_timeout()
        && match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown,
            ) => false,
            ErrorKind::Server(_) | ErrorKind::Extension => true,
            _ => false,
        };
    if refused {
        StoreError::Refused(format!("{what}: {text}"))
    } else {
        StoreError::Unreachable(format!("{what}: {text}"))
    }
}

fn refused(e: RedisError) -> StoreError {
    StoreError::Refused(e.to_string())
}

/// The system's trust roots as PEM, then `extra`: redis-rs replaces the roots with what it is
/// given, and a `ca_file` adds to them.
fn with_system_roots(extra: Vec<u8>) -> Vec<u8> {
    let mut bundle = Vec::new();
    for der in rustls_native_certs::load_native_certs().certs {
        bundle.extend_from_slice(pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec())).as_bytes());
    }
    bundle.extend_from_slice(&extra);
    bundle
}
