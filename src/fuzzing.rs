//! Entry points for the fuzz targets in `fuzz/` that the public API does not already offer. Not
//! part of tokend's API: hidden from the documentation, and free to change with the targets.

use std::sync::Arc;

use tokio::net::UnixStream;

use crate::config::{DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_USER};
use crate::server::admission::{Admission, Limits};
use crate::server::peer::Peer;
use crate::server::{ServerState, serve_connection};

/// Serves one socket connection as the daemon does once it has accepted it and the kernel has
/// named the caller `peer` (the fuzz target names the caller itself, since both ends of a
/// socketpair are its own process).
pub async fn serve_socket_connection(stream: UnixStream, peer: Peer, state: Arc<ServerState>) {
    let admission = Admission::new(Limits {
        max_connections: DEFAULT_MAX_CONNECTIONS,
        max_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
        header_timeout: DEFAULT_HEADER_TIMEOUT,
    });
    let Ok(guard) = admission.admit(peer.uid, state.authority().class(&peer)) else {
        // A fresh admission has room for every class of caller.
        unreachable!("a first connection is always admitted");
    };
    serve_connection(stream, Arc::new(peer), state, DEFAULT_HEADER_TIMEOUT, guard).await;
}
