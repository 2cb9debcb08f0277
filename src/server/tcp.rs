//! The optional health and metrics listener on TCP (`metrics.listen`), for Prometheus scrapes
//! and Kubernetes probes, which cannot reach a Unix socket. It serves `/healthz`, `/readyz` and
//! `/metrics` and nothing else: TCP carries no caller identity, so no token is ever served here.
//! Bounded like the socket (`accept`): a connection cap, a deadline for the request head, a head
//! size limit, a graceful drain at a stop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::accept::{self, Limits, Overload};
use super::{MAX_HEAD_BYTES, SHUTDOWN_GRACE, ServerState, routes};

/// Open connections at most; a scraper and two probes need three.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TcpEndpoint {
    /// The address as configured (port 0: any).
    pub configured: SocketAddr,
    /// The address bound.
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TcpEndpoint {
    pub async fn start(configured: SocketAddr, state: Arc<ServerState>) -> std::io::Result<TcpEndpoint> {
        let listener = tokio::net::TcpListener::bind(configured).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, state, stop.clone()));
        info!(listen = %addr, "serving /healthz, /readyz and /metrics over TCP");
        Ok(TcpEndpoint {
            configured,
            addr,
            stop,
            task,
        })
    }

    /// Stops accepting; connections in flight finish on their own.
    pub async fn stop(self) {
        self.stop.cancel();
        // Ignored: the loop only ends by cancellation.
        let _ = self.task.await;
    }
}

/// Over the cap a new connection is closed at once: scrapers and probes retry.
async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<ServerState>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let limits = Limits {
        header_timeout: HEADER_TIMEOUT,
        max_head_bytes: MAX_HEAD_BYTES,
        grace: SHUTDOWN_GRACE,
    };
    accept::run(listener, "metrics", Overload::Close(slots), stop, |stream, slot| {
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(routes::handle_public(&req, &state)) }
            });
            if let Some(Err(e)) = accept::serve(stream, service, limits, &state.shutdown).await {
                debug!(error = %e, "TCP connection ended with an error");
            }
            drop(slot);
        });
    })
    .await;
}
