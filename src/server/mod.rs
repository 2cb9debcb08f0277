//! The HTTP API on a Unix socket. Callers are identified by the kernel (`peer`), checked against
//! the access rules (`access`) on every request, and served from the store (`routes`); the
//! socket file itself is created and cleaned up by `socket`.
//!
//! Robustness: caps on concurrent connections, overall and per user (`admission`), a bound on
//! request head size, and a deadline for each request head, which also closes idle keep-alive
//! connections, so a slow, idle or greedy client cannot hold the daemon. Accept errors such as
//! EMFILE pause accepting briefly instead of stopping the server. What hyper answers or cuts off
//! by itself (a malformed or oversized head, the header timeout) is counted too (`cutoff`).

pub(crate) mod accept;
pub mod access;
pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod cutoff;
pub mod peer;
pub(crate) mod routes;
pub(crate) mod socket;
pub(crate) mod tcp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::SocketConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use accept::Overload;
use access::Authority;
use admission::{Admission, Limits, Refusal, RefusalLog};
use peer::Peer;
use socket::{Bound, SocketError};

/// The largest request head accepted (hyper's minimum buffer size); larger heads get 431.
pub(crate) const MAX_HEAD_BYTES: usize = 8192;
/// How long open connections get to finish when tokend stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `/healthz` fails once the daemon's main loop (signals, reloads, the watchdog) has not run for
/// this long: it beats every `HEARTBEAT_EVERY`, and nothing it does waits on a file or the
/// network (a reload waits for stopped tasks beside it), so this means it is stuck.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(60);
/// How often the main loop beats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What every connection shares.
pub struct ServerState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    authority: RwLock<Arc<Authority>>,
    /// Fired when tokend stops: long-polls return and connections close.
    pub shutdown: CancellationToken,
    /// Rate limit for refusal log lines.
    pub refusals: RefusalLog,
    /// When the main loop last ran (`beat`), for `/healthz`.
    pub(crate) heartbeat: Mutex<Instant>,
}

impl ServerState {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, authority: Authority) -> Arc<ServerState> {
        Arc::new(ServerState {
            store,
            metrics,
            authority: RwLock::new(Arc::new(authority)),
            shutdown: CancellationToken::new(),
            refusals: RefusalLog::default(),
            heartbeat: Mutex::new(Instant::now()),
        })
    }

    /// The main loop is alive.
    pub fn beat(&self) {
        *self.heartbeat.lock().expect("heartbeat lock poisoned") = Instant::now();
    }

    /// How long ago the main loop last beat.
    pub fn heartbeat_age(&self) -> Duration {
        self.heartbeat.lock().expect("heartbeat lock poisoned").elapsed()
    }

    pub fn authority(&self) -> Arc<Authority> {
        self.authority.read().expect("authority lock poisoned").clone()
    }

    /// New access rules (a reload); they apply to the next request on every connection.
    pub fn set_authority(&self, authority: Authority) {
        *self.authority.write().expect("authority lock poisoned") = Arc::new(authority);
    }
}

/// One socket and its accept loop.
pub struct Listener {
    config: SocketConfig,
    bound: Bound,
    admission: Arc<Admission>,
    stop_accepting: CancellationToken,
    accept_loop: JoinHandle<()>,
}

fn limits(config: &SocketConfig) -> Limits {
    Limits {
        max_connections: config.max_connections,
        max_per_user: config.max_connections_per_user,
        header_timeout: config.header_timeout,
    }
}

impl Listener {
    /// Creates the socket and starts accepting. Connections are tracked by `connections`, so that
    /// they outlive this listener (a reload that moves the socket does not cut them off).
    fn start(config: SocketConfig, state: Arc<ServerState>, connections: TaskTracker) -> Result<Listener, SocketError> {
        let (listener, bound) = socket::bind(&config)?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|source| SocketError::Io {
            path: config.path.clone(),
            source,
        })?;
        let admission = Admission::new(limits(&config));
        let stop_accepting = CancellationToken::new();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            state,
            admission.clone(),
            stop_accepting.clone(),
            connections,
        ));
        info!(socket = %config.path.display(), mode = %config.mode, "serving the socket API");
        Ok(Listener {
            config,
            bound,
            admission,
            stop_accepting,
            accept_loop,
        })
    }

    /// Applies new settings for the same path: mode and group on the file, limits to the next
    /// connection (open ones are not cut off).
    fn update(&mut self, config: &SocketConfig) -> Result<(), SocketError> {
        // The mode first: if it cannot be applied, the reload is rejected with nothing changed.
        socket::apply_mode(&self.config.path, &self.config.path, config)?;
        self.admission.set_limits(limits(config));
        self.config = config.clone();
        Ok(())
    }

    /// Stops accepting and removes the socket file. Open connections are not touched.
    async fn stop(self) {
        self.stop_accepting.cancel();
        // Ignored: the loop only ends by cancellation.
        let _ = self.accept_loop.await;
        self.bound.remove();
        info!(socket = %self.config.path.display(), "socket closed");
    }
}

/// The socket API's accept loop: each connection is admitted once the kernel has said who the
/// caller is (`admission`); over a cap it gets a 503.
async fn accept_loop(
    listener: tokio::net::UnixListener,
    state: Arc<ServerState>,
    admission: Arc<Admission>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    accept::run(listener, "socket API", Overload::ByCaller, stop, |stream, _| {
        let peer = match Peer::of(&stream) {
            Ok(peer) => Arc::new(peer),
            Err(e) => {
                debug!(error = %e, "cannot read the peer's credentials; closing the connection");
                return;
            }
        };
        let class = state.authority().class(&peer);
        let guard = match admission.admit(peer.uid, class) {
            Ok(guard) => guard,
            Err(refusal) => {
                refuse(&stream, &peer, refusal, &state);
                return;
            }
        };
        let header_timeout = admission.limits().header_timeout;
        connections.spawn(serve_connection(stream, peer, state.clone(), header_timeout, guard));
    })
    .await;
}

/// Answers a connection over its limit with a 503 and closes it. One non-blocking write: a
/// fresh socket's buffer takes the short answer, and a refused caller never holds the loop.
fn refuse(stream: &tokio::net::UnixStream, peer: &Peer, refusal: Refusal, state: &ServerState) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n\
        connection: close\r\ncontent-length: 21\r\n\r\ntoo many connections\n";
    // Ignored: if the caller cannot take even this, it is gone anyway.
    let _ = stream.try_write(ANSWER);
    state.metrics.request(503);
    state.metrics.socket_refusal(matches!(refusal, Refusal::AtCapacity));
    let what = match refusal {
        Refusal::AtCapacity => "connection cap".to_owned(),
        Refusal::TooManyForUser(n) => format!("{n} connections per user"),
    };
    if let Some(suppressed) = state.refusals.should_log(peer.uid, &what) {
        warn!(uid = peer.uid, pid = peer.pid, limit = %what, suppressed, "refused a socket connection: over the limit");
    }
}

pub(crate) async fn serve_connection(
    stream: tokio::net::UnixStream,
    peer: Arc<Peer>,
    state: Arc<ServerState>,
    header_timeout: Duration,
    _admitted: admission::Guard,
) {
    let progress = Arc::new(cutoff::Progress::default());
    let service = {
        let (state, progress) = (state.clone(), progress.clone());
        service_fn(move |req| {
            progress.request();
            let (state, peer) = (state.clone(), peer.clone());
            async move { Ok::<_, Infallible>(routes::handle(req, &peer, &state).await) }
        })
    };
    let limits = accept::Limits {
        header_timeout,
        max_head_bytes: MAX_HEAD_BYTES,
        grace: SHUTDOWN_GRACE,
    };
    let stream = cutoff::Counted::new(stream, progress.clone());
    if let Some(Err(e)) = accept::serve(stream, service, limits, &state.shutdown).await {
        count_cutoff(&e, &progress, &state);
    }
}

/// Counts a connection hyper ended with an error: by reason, and its answer (if it gave one) by
/// status like every other answer.
fn count_cutoff(error: &hyper::Error, progress: &cutoff::Progress, state: &ServerState) {
    let Some(cut) = cutoff::classify(error, progress) else {
        debug!("closed an idle socket connection");
        return;
    };
    state.metrics.connection_error(cut.reason);
    if let Some(status) = cut.answered {
        state.metrics.request(status);
    }
    debug!(error = %error, reason = cut.reason, answered = ?cut.answered, "socket connection ended with an error");
}

/// The socket API as the daemon sees it: the shared state, the current listener (if the socket
/// is enabled), every open connection, and the health and metrics listener on TCP (if any).
pub struct Server {
    state: Arc<ServerState>,
    listener: Option<Listener>,
    connections: TaskTracker,
    tcp: Option<tcp::TcpEndpoint>,
}

impl Server {
    pub fn start(
        socket: Option<&SocketConfig>,
        authority: Authority,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Server, SocketError> {
        let state = ServerState::new(store, metrics, authority);
        let connections = TaskTracker::new();
        let listener = match socket {
            Some(config) => Some(Listener::start(config.clone(), state.clone(), connections.clone())?),
            None => None,
        };
        Ok(Server {
            state,
            listener,
            connections,
            tcp: None,
        })
    }

    /// Serves health and metrics on `wanted` over TCP, or stops doing so (`None`). A listener
    /// for the same configured address is left alone; one that cannot be bound is an error, and
    /// the previous address keeps being served if it can be (`tcp_addr` says).
    pub async fn listen_tcp(&mut self, wanted: Option<SocketAddr>) -> std::io::Result<()> {
        if self.tcp.as_ref().map(|t| t.configured) == wanted {
            return Ok(());
        }
        let Some(wanted) = wanted else {
            if let Some(old) = self.tcp.take() {
                old.stop().await;
            }
            return Ok(());
        };
        let new = match tcp::TcpEndpoint::start(wanted, self.state.clone()).await {
            Ok(new) => new,
            // The old listener may hold the port (0.0.0.0:9464 → 127.0.0.1:9464): free it first.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && self.tcp.is_some() => {
                let Some(old) = self.tcp.take() else { return Err(e) };
                let previous = old.configured;
                old.stop().await;
                match tcp::TcpEndpoint::start(wanted, self.state.clone()).await {
                    Ok(new) => new,
                    Err(e) => {
                        // Someone else holds it: serve where we did, so probes and scrapes go on.
                        self.tcp = tcp::TcpEndpoint::start(previous, self.state.clone()).await.ok();
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(old) = self.tcp.replace(new) {
            old.stop().await;
        }
        Ok(())
    }

    /// Where health and metrics are served over TCP, if anywhere (with the port the kernel
    /// chose for port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| t.addr)
    }

    /// The main loop is alive (see `HEARTBEAT_STALE`).
    pub fn beat(&self) {
        self.state.beat();
    }

    fn listen(&self, config: &SocketConfig) -> Result<Listener, SocketError> {
        Listener::start(config.clone(), self.state.clone(), self.connections.clone())
    }

    /// Applies a reloaded configuration: new access rules at once; socket changes without
    /// dropping open connections (a moved socket keeps serving them until they end). A socket
    /// that cannot be created is logged and the previous one kept.
    pub async fn reconfigure(&mut self, socket: Option<&SocketConfig>, authority: Authority) {
        self.state.set_authority(authority);
        match (self.listener.take(), socket) {
            (None, None) => {}
            (Some(old), None) => old.stop().await,
            (None, Some(config)) => match Listener::start(config.clone(), self.state.clone(), self.connections.clone())
            {
                Ok(new) => self.listener = Some(new),
                Err(e) => warn!(error = %e, "the socket API stays off"),
            },
            (Some(mut current), Some(config)) if current.config.path == config.path => {
                if current.config != *config
                    && let Err(e) = current.update(config)
                {
                    error!(socket = %config.path.display(), error = %e, "cannot apply the new socket settings; the socket keeps its previous mode and group");
                }
                self.listener = Some(current);
            }
            (Some(old), Some(config)) => match self.listen(config) {
                Ok(new) => {
                    old.stop().await;
                    self.listener = Some(new);
                }
                Err(e) => {
                    warn!(error = %e, socket = %old.config.path.display(), "keeping the previous socket");
                    self.listener = Some(old);
                }
            },
        }
    }

    /// Stops accepting, ends long-polls, gives open connections `SHUTDOWN_GRACE` to finish, and
    /// removes the socket file.
    pub async fn shutdown(self) {
        if let Some(listener) = self.listener {
            listener.stop().await;
        }
        if let Some(tcp) = self.tcp {
            tcp.stop().await;
        }
        self.state.shutdown.cancel();
        self.connections.close();
        // Ignored: connections still open after the grace period are dropped with the runtime.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), self.connections.wait()).await;
    }
}
