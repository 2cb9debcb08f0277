//! The optional health and metrics listener on TCP (`metrics.listen`), for Prometheus scrapes
//! and Kubernetes probes, which cannot reach a Unix socket. It serves `/healthz`, `/readyz` and
//! `/metrics` and nothing else: TCP carries no caller identity, so no token is ever served here.
//! Bounded like the socket: a connection cap, a deadline for the request head, a head size limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{MAX_HEAD_BYTES, ServerState, routes};

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

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<ServerState>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "cannot accept a TCP connection; pausing");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        // Over the cap the connection is simply closed: scrapers and probes retry.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(routes::handle_public(&req, &state)) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    debug!(error = %e, "TCP connection ended with an error");
                },
                _ = state.shutdown.cancelled() => {}
            }
            drop(slot);
        });
    }
}
