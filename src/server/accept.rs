//! How every listener of tokend takes and serves its connections: the socket API, the health
//! and metrics port on TCP, and the token proxies.
//!
//! One accept loop (`run`). Accept errors are triaged alike: a caller that went away before it
//! was accepted, or a signal, is passed over; anything else (out of descriptors or memory) pauses
//! accepting, 10 ms doubling to 1 s, so the condition can clear as connections end instead of
//! the loop spinning, with one warning at most every 10 s. What happens at the connection cap is
//! each use's explicit choice (`Overload`).
//!
//! One connection driver (`serve`): every connection has a deadline for its request head (which
//! also closes idle keep-alive connections) and a bound on the head's size; at a stop, the
//! answer in progress finishes within the use's grace, then the connection closes.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The first pause after an accept error that may last (EMFILE, ENOMEM, …).
const PAUSE_FIRST: Duration = Duration::from_millis(10);
/// Pauses double up to this.
const PAUSE_MAX: Duration = Duration::from_secs(1);
/// One warning about accept errors at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a listener does at its connection cap.
pub enum Overload {
    /// Takes no connection until one ends: callers wait in the kernel's listen backlog (the
    /// token proxies: a request waits rather than fails).
    Queue(Arc<Semaphore>),
    /// Closes a new connection at once (the metrics port: scrapers and probes retry).
    Close(Arc<Semaphore>),
    /// Takes every connection: the use admits it once it knows the caller (the socket API
    /// answers 503 over its per-user and overall caps, see `admission`).
    ByCaller,
}

/// A listening socket.
pub trait Accept: Send + 'static {
    type Conn: Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Accept for TcpListener {
    type Conn = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Small answers, sent at once.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Accepts connections on `listener` until `stop`, handing each to `take` with its slot (under
/// `Overload::Queue` or `Close`; the slot is freed when dropped). `what` names the listener in
/// warnings.
pub async fn run<A: Accept>(
    listener: A,
    what: &str,
    overload: Overload,
    stop: CancellationToken,
    mut take: impl FnMut(A::Conn, Option<OwnedSemaphorePermit>),
) {
    let mut pause = PAUSE_FIRST;
    let mut warned: Option<Instant> = None;
    let mut unwarned = 0u64;
    loop {
        let queued = match &overload {
            Overload::Queue(slots) => tokio::select! {
                _ = stop.cancelled() => return,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => Some(slot),
                    Err(_) => return,
                },
            },
            Overload::Close(_) | Overload::ByCaller => None,
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let conn = match accepted {
            Ok(conn) => {
                pause = PAUSE_FIRST;
                conn
            }
            Err(e) if passes(&e) => continue,
            Err(e) => {
                if warned.is_none_or(|t| t.elapsed() > WARN_EVERY) {
                    warn!(listener = what, error = %e, pause = ?pause, suppressed = unwarned, "cannot accept connections; pausing");
                    (warned, unwarned) = (Some(Instant::now()), 0);
                } else {
                    unwarned += 1;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(PAUSE_MAX);
                continue;
            }
        };
        let slot = match &overload {
            Overload::Close(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                // Dropped: closed.
                Err(_) => continue,
            },
            Overload::Queue(_) | Overload::ByCaller => queued,
        };
        take(conn, slot);
    }
}

/// Accept errors that say nothing about the listener: the caller went away before it was
/// accepted, a signal interrupted the call, or (TCP) a network error already pending on the new
/// connection, which accept(2) says to treat like EAGAIN.
fn passes(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EAGAIN
                | libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// A connection's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive within this (also the idle keep-alive limit).
    pub header_timeout: Duration,
    /// A larger request head is refused (431).
    pub max_head_bytes: usize,
    /// At a stop, the answer in progress has this long to finish.
    pub grace: Duration,
}

/// Serves HTTP/1.1 on `io` with `service` until the connection ends, or `drain` is cancelled
/// and the grace is over. `Some` with how it ended on its own; `None` when drained.
pub async fn serve<I, S>(
    io: I,
    service: S,
    limits: Limits,
    drain: &CancellationToken,
) -> Option<Result<(), hyper::Error>>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head_bytes)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = drain.cancelled() => {
            connection.as_mut().graceful_shutdown();
            // Ignored: after the grace the connection is simply dropped.
            let _ = tokio::time::timeout(limits.grace, connection).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A listener that fails `failures` times with `errno`, then yields connections.
    struct Flaky {
        errno: i32,
        failures: AtomicUsize,
        calls: Arc<AtomicUsize>,
    }

    impl Flaky {
        /// A listener that always yields a connection; `calls` counts the accepts.
        fn steady(calls: &Arc<AtomicUsize>) -> Flaky {
            Flaky {
                errno: 0,
                failures: AtomicUsize::new(0),
                calls: calls.clone(),
            }
        }
    }

    impl Accept for Flaky {
        type Conn = usize;
        async fn accept(&self) -> io::Result<usize> {
            tokio::task::yield_now().await;
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            Ok(n)
        }
    }

    /// Runs the loop until it has taken `want` connections; how long that took on the paused
    /// clock, and the connections with whether each came with a slot.
    async fn until_taken(errno: i32, failures: usize, overload: Overload, want: usize) -> (Duration, Vec<bool>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let flaky = Flaky {
            errno,
            failures: AtomicUsize::new(failures),
            calls,
        };
        let stop = CancellationToken::new();
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (t, s) = (taken.clone(), stop.clone());
        let begun = tokio::time::Instant::now();
        let task = tokio::spawn(run(flaky, "test", overload, stop.clone(), move |_conn, slot| {
            let mut taken = t.lock().unwrap();
            taken.push(slot.is_some());
            // Slots are kept: the cap stays reached.
            std::mem::forget(slot);
            if taken.len() == want {
                s.cancel();
            }
        }));
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
        let taken = taken.lock().unwrap().clone();
        (begun.elapsed(), taken)
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_gone_before_accept_is_passed_over_without_a_pause() {
        let (took, taken) = until_taken(libc::ECONNABORTED, 5, Overload::ByCaller, 2).await;
        assert_eq!(took, Duration::ZERO);
        assert_eq!(taken, vec![false, false]);
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_pauses_doubling_to_a_second() {
        // 10 + 20 + 40 + 80 + 160 + 320 + 640 + 1000 + 1000 ms.
        let (took, taken) = until_taken(libc::EMFILE, 9, Overload::ByCaller, 1).await;
        assert_eq!(took, Duration::from_millis(3270));
        assert_eq!(taken, vec![false]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_close_drops_new_connections_and_queue_waits() {
        // Close: two slots; the next connections are accepted and dropped, never taken.
        let slots = Arc::new(Semaphore::new(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let flaky = Flaky::steady(&calls);
        let stop = CancellationToken::new();
        let taken = Arc::new(AtomicUsize::new(0));
        let t = taken.clone();
        let task = tokio::spawn(run(
            flaky,
            "test",
            Overload::Close(slots.clone()),
            stop.clone(),
            move |_, slot| {
                assert!(slot.is_some());
                std::mem::forget(slot);
                t.fetch_add(1, Ordering::SeqCst);
            },
        ));
        while calls.load(Ordering::SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 2);

        // Queue: with both slots held, the listener is not even asked.
        let slots = Arc::new(Semaphore::new(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let flaky = Flaky::steady(&calls);
        let stop = CancellationToken::new();
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = held.clone();
        let task = tokio::spawn(run(
            flaky,
            "test",
            Overload::Queue(slots.clone()),
            stop.clone(),
            move |_, slot| {
                h.lock().unwrap().push(slot.expect("a slot"));
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        held.lock().unwrap().pop();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        stop.cancel();
        task.await.unwrap();
    }
}
