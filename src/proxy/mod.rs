//! Token proxies (`proxies:`): a listener on a Unix socket or a loopback TCP port, bound to one
//! client and one upstream base URL. A request to it goes to the upstream with
//! `Authorization: <type> <current token>` in place of whatever the caller sent, and the answer
//! streams back; bodies stream both ways. For programs that cannot add a header themselves.
//!
//! A Unix socket proxy serves only callers the kernel says may read the client (root, tokend's
//! user, the proxy's `readers`); others get 403. A TCP proxy cannot tell its callers apart, so it
//! listens on loopback unless `allow_remote` says otherwise. Redirects are not followed: a 3xx
//! goes back to the caller, who would follow it without the token. An upstream 401 asks the
//! client's task for a new token once (at most every `FORCED_REFRESH_EVERY`), and a request
//! whose body was small enough to keep is sent again with it.

mod forward;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::{Access, ProxyBind, SocketConfig, TokenProxy};
use crate::metrics::Metrics;
use crate::server::accept::{self, Accept, Limits, Overload};
use crate::server::access::Authority;
use crate::server::cutoff;
use crate::server::peer::Peer;
use crate::server::socket::{self, Bound};
use crate::store::Store;

/// A caller has this long to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// A request head larger than 16 KiB is refused (431); at a stop, a request in progress has 5 s
/// to finish.
const LIMITS: Limits = Limits {
    header_timeout: HEADER_TIMEOUT,
    max_head_bytes: 16 * 1024,
    grace: Duration::from_secs(5),
};

/// The running proxies.
#[derive(Default)]
pub struct Proxies {
    running: Vec<Listening>,
}

struct Listening {
    config: TokenProxy,
    stop: CancellationToken,
    task: JoinHandle<()>,
    bound: Option<Bound>,
}

impl Proxies {
    /// Starts every proxy in `configs`; the first that cannot listen stops them all.
    pub async fn start(configs: &[TokenProxy], store: &Arc<Store>, metrics: &Arc<Metrics>) -> Result<Proxies, String> {
        let mut proxies = Proxies::default();
        if let Err(e) = proxies.reconfigure(configs, store, metrics).await {
            proxies.shutdown().await;
            return Err(e);
        }
        Ok(proxies)
    }

    /// Makes the running proxies exactly `configs`: unchanged ones keep running (and their
    /// connections), changed and removed ones stop, new ones start.
    pub async fn reconfigure(
        &mut self,
        configs: &[TokenProxy],
        store: &Arc<Store>,
        metrics: &Arc<Metrics>,
    ) -> Result<(), String> {
        let (keep, stop): (Vec<Listening>, Vec<Listening>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| configs.contains(&r.config));
        for r in stop {
            r.stop_and_wait().await;
        }
        self.running = keep;
        for config in configs {
            if self.running.iter().any(|r| r.config == *config) {
                continue;
            }
            self.running.push(start(config, store.clone(), metrics.clone()).await?);
        }
        Ok(())
    }

    pub async fn shutdown(self) {
        for r in self.running {
            r.stop_and_wait().await;
        }
    }
}

impl Listening {
    async fn stop_and_wait(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Some(bound) = self.bound {
            bound.remove();
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn start(config: &TokenProxy, store: Arc<Store>, metrics: Arc<Metrics>) -> Result<Listening, String> {
    let upstream = forward::Upstream::new(config, store, metrics)?;
    let (listener, bound, shown) = match &config.bind {
        ProxyBind::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("proxy for {}: cannot listen on {addr}: {e}", config.client))?;
            (Listener::Tcp(l), None, addr.to_string())
        }
        ProxyBind::Unix { path, mode, group } => {
            let as_socket = SocketConfig {
                path: path.clone(),
                mode: *mode,
                group: group.clone(),
                max_connections: config.max_connections,
                max_connections_per_user: config.max_connections,
                header_timeout: HEADER_TIMEOUT,
            };
            let (l, bound) = socket::bind(&as_socket).map_err(|e| format!("proxy for {}: {e}", config.client))?;
            let l = UnixListener::from_std(l).map_err(|e| format!("proxy for {}: {e}", config.client))?;
            (Listener::Unix(l), Some(bound), path.display().to_string())
        }
    };
    info!(client = %config.client, listen = %shown, upstream = %config.upstream, "token proxy listening");
    let mut access = Access::default();
    access.readers.insert(config.client.clone(), config.readers.clone());
    let authority = Arc::new(Authority::new(access));
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(
        listener,
        Arc::new(upstream),
        authority,
        Arc::new(Semaphore::new(config.max_connections)),
        stop.clone(),
        shown,
    ));
    Ok(Listening {
        config: config.clone(),
        stop,
        task,
        bound,
    })
}

/// At the connection cap, callers wait in the listen backlog (`Overload::Queue`): a request
/// waits rather than fails.
async fn accept_loop(
    listener: Listener,
    upstream: Arc<forward::Upstream>,
    authority: Arc<Authority>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    shown: String,
) {
    let connections = tokio_util::task::TaskTracker::new();
    let what = format!("token proxy {shown}");
    accept::run(listener, &what, Overload::Queue(slots), stop.clone(), |conn, slot| {
        let (stream, peer): (Io, Option<Peer>) = match conn {
            Conn::Tcp(s) => (Box::new(s), None),
            Conn::Unix(s) => match Peer::of(&s) {
                Ok(peer) => (Box::new(s), Some(peer)),
                Err(e) => {
                    debug!(error = %e, "cannot read the peer's credentials; closing the connection");
                    return;
                }
            },
        };
        let allowed = peer
            .as_ref()
            .is_none_or(|p| authority.may_read(p, upstream.client().as_str()));
        let upstream = upstream.clone();
        let stop = stop.clone();
        let who = peer.as_ref().map(|p| (p.uid, p.pid));
        connections.spawn(async move {
            let _slot = slot;
            let progress = Arc::new(cutoff::Progress::default());
            let service = {
                let (upstream, progress) = (upstream.clone(), progress.clone());
                hyper::service::service_fn(move |req| {
                    progress.request();
                    let upstream = upstream.clone();
                    async move { Ok::<_, std::convert::Infallible>(upstream.handle(req, allowed, who).await) }
                })
            };
            let io = cutoff::Counted::new(stream, progress.clone());
            if let Some(Err(e)) = accept::serve(io, service, LIMITS, &stop).await
                && let Some(cut) = cutoff::classify(&e, &progress)
            {
                upstream.connection_error(cut);
                debug!(client = %upstream.client(), error = %e, reason = cut.reason, "proxy connection ended with an error");
            }
        });
    })
    .await;
    connections.close();
    let _ = tokio::time::timeout(LIMITS.grace + Duration::from_secs(1), connections.wait()).await;
}

type Io = Box<dyn Stream>;

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// A connection to a proxy, by the kind of its listener.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accept for Listener {
    type Conn = Conn;
    async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Listener::Tcp(l) => Accept::accept(l).await.map(Conn::Tcp),
            Listener::Unix(l) => Accept::accept(l).await.map(Conn::Unix),
        }
    }
}
