//! Connection-level misbehaviour for the test issuer: a token request can be answered by
//! resetting the TCP connection (RST) or closing it (FIN) without a byte of an answer, as a
//! crashing IdP or a load balancer that drops a backend does. A handler cannot reach its socket
//! through axum, so every accepted connection is wrapped in a `FaultyIo` that the handler can
//! tell, through `ConnectInfo<Control>`, to fail its next write; hyper then drops the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How to end a connection instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Abort {
    /// RST: `SO_LINGER` 0, then close. The client sees "connection reset by peer".
    Reset,
    /// FIN: an orderly close with nothing sent. The client sees an incomplete message.
    Close,
}

const ANSWER: u8 = 0;
const RESET: u8 = 1;
const CLOSE: u8 = 2;

/// The handler's side of one connection.
#[derive(Clone)]
pub struct Control(Arc<AtomicU8>);

impl Control {
    /// The next write fails, so that nothing of the answer is sent and hyper drops the
    /// connection.
    pub fn abort(&self, how: Abort) {
        let state = match how {
            Abort::Reset => RESET,
            Abort::Close => CLOSE,
        };
        self.0.store(state, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, FaultyListener>> for Control {
    fn connect_info(stream: IncomingStream<'_, FaultyListener>) -> Self {
        Control(stream.io().state.clone())
    }
}

/// A TCP listener whose connections can be told to fail.
pub struct FaultyListener(pub TcpListener);

impl Listener for FaultyListener {
    type Io = FaultyIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        let io = FaultyIo {
            tcp,
            state: Arc::new(AtomicU8::new(ANSWER)),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

pub struct FaultyIo {
    tcp: TcpStream,
    state: Arc<AtomicU8>,
}

impl FaultyIo {
    /// Fails the write if the handler said so; for a reset, arms `SO_LINGER` 0 first, so that
    /// closing the socket (when hyper drops it) sends RST instead of FIN.
    fn refuse_write(&self) -> Option<io::Error> {
        match self.state.load(Ordering::SeqCst) {
            ANSWER => None,
            how => {
                if how == RESET {
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // Best effort: without it the client sees a close instead of a reset.
                    let _ = nix::sys::socket::setsockopt(&self.tcp, nix::sys::socket::sockopt::Linger, &linger);
                }
                Some(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "dropped by an injected fault",
                ))
            }
        }
    }
}

impl AsyncRead for FaultyIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refuse_write() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refuse_write() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.load(Ordering::SeqCst) != ANSWER {
            // No FIN before the close: a reset must stay a reset.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
