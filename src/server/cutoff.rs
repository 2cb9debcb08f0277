//! What hyper does on a connection by itself, made visible: a request head it cannot parse (it
//! answers 400), one too large (431), one not finished within `header_timeout`, or one cut short
//! by the caller (closed without an answer). `classify` names the reason for
//! `tokend_socket_connection_errors_total`, and the status hyper answered with, for
//! `tokend_socket_requests_total`. The header timeout also closes idle keep-alive connections:
//! housekeeping, not an error, told apart by `Progress` (nothing read since the last request).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why hyper ended a connection with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    /// The `reason` label: `malformed`, `header_too_large`, `header_timeout`, `incomplete`, `other`.
    pub reason: &'static str,
    /// The status hyper answered with before closing, if it answered.
    pub answered: Option<u16>,
}

/// The reason for `error`, or `None` for an idle keep-alive connection closed by the timeout.
pub fn classify(error: &hyper::Error, progress: &Progress) -> Option<Cutoff> {
    let (reason, answered) = if error.is_parse_too_large() {
        // With a head limit far below hyper's URI limit, a long URI is a large head too: 431.
        ("header_too_large", Some(431))
    } else if error.is_parse_version_h2() {
        // An HTTP/2 preface: hyper closes without an answer.
        ("malformed", None)
    } else if error.is_parse() {
        ("malformed", Some(400))
    } else if error.is_timeout() {
        if progress.idle() {
            return None;
        }
        ("header_timeout", None)
    } else if error.is_incomplete_message() {
        ("incomplete", None)
    } else {
        ("other", None)
    };
    Some(Cutoff { reason, answered })
}

/// How far a connection got: bytes read in all, and when its last request began.
#[derive(Debug)]
pub struct Progress {
    read: AtomicU64,
    /// `read` when the last request reached the service; `u64::MAX` before the first.
    at_last_request: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            read: AtomicU64::new(0),
            at_last_request: AtomicU64::new(u64::MAX),
        }
    }
}

impl Progress {
    /// A request head was parsed and is being served.
    pub fn request(&self) {
        self.at_last_request
            .store(self.read.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// A request was served and nothing has arrived since. (Bytes of a next request that came
    /// in the same read as the last one count as nothing: such a caller is not slow but gone.)
    fn idle(&self) -> bool {
        self.read.load(Ordering::Relaxed) == self.at_last_request.load(Ordering::Relaxed)
    }
}

/// A stream that counts the bytes read from it into a `Progress`.
pub struct Counted<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, progress: Arc<Progress>) -> Counted<S> {
        Counted { inner, progress }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.progress.read.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_what_is_read_and_tells_idle_from_slow() {
        let (mut client, server) = tokio::io::duplex(64);
        let progress = Arc::new(Progress::default());
        let mut counted = Counted::new(server, progress.clone());
        // Nothing yet, and no request: not idle (a caller that never sends is cut off).
        assert!(!progress.idle());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = counted.read(&mut buf).await.unwrap();
        assert_eq!(progress.read.load(Ordering::Relaxed), n as u64);
        progress.request();
        assert!(progress.idle());
        client.write_all(b"GE").await.unwrap();
        assert_eq!(counted.read(&mut buf).await.unwrap(), 2);
        assert!(!progress.idle(), "a next head has begun");
    }
}
