//! The Unix socket API: where it listens, who may connect, and its limits; and the optional
//! health and metrics listener on TCP.

use std::path::PathBuf;
use std::time::Duration;

use super::{Kind, Validator};
use crate::config::model::{
    Access, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_USER, DEFAULT_SOCKET_MODE,
    DEFAULT_SOCKET_PATH, SocketConfig,
};
use crate::config::raw::{RawMetrics, RawSocket};

/// sun_path holds 108 bytes including the NUL; the socket is first bound in a private directory
/// next to the final one (`.{name}.tokend-XXXXXX/s`, 17 bytes longer), which needs room too.
pub(super) const MAX_SOCKET_PATH: usize = 88;

impl Validator<'_> {
    pub(super) fn socket(&mut self, raw: RawSocket, access: &mut Access) -> Option<SocketConfig> {
        if let Some(readers) = &raw.metrics_readers {
            access.metrics_readers = self.readers(&["socket", "metrics_readers"], readers);
        }
        if raw.enabled == Some(false) {
            return None;
        }
        let path = PathBuf::from(raw.path.as_deref().unwrap_or(DEFAULT_SOCKET_PATH));
        if !path.is_absolute() || path.file_name().is_none() {
            self.problem(
                &["socket", "path"],
                format!("socket path `{}` must be an absolute file path", path.display()),
            );
        } else if path.as_os_str().len() > MAX_SOCKET_PATH {
            self.problem(
                &["socket", "path"],
                format!("a socket path must be at most {MAX_SOCKET_PATH} bytes long"),
            );
        }
        let group = raw
            .group
            .and_then(|spec| self.owner(&["socket", "group"], spec, Kind::Group));
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            self.problem(&["socket", "max_connections"], "`max_connections` must be at least 1");
        }
        let max_connections_per_user = raw.max_connections_per_user.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_USER);
        if max_connections_per_user == 0 {
            self.problem(
                &["socket", "max_connections_per_user"],
                "`max_connections_per_user` must be at least 1",
            );
        }
        let header_timeout = raw.header_timeout.map_or(DEFAULT_HEADER_TIMEOUT, |s| s.0);
        if header_timeout < Duration::from_millis(100) {
            self.problem(&["socket", "header_timeout"], "`header_timeout` must be at least 100ms");
        }
        Some(SocketConfig {
            path,
            mode: raw.mode.unwrap_or(DEFAULT_SOCKET_MODE),
            group,
            max_connections,
            max_connections_per_user,
            header_timeout,
        })
    }

    /// `metrics.listen`: an `IP:PORT` (a name would be resolved once, to who knows what).
    pub(super) fn metrics_listen(&mut self, raw: RawMetrics) -> Option<std::net::SocketAddr> {
        let text = raw.listen?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    &["metrics", "listen"],
                    format!("`{text}` is not an IP address and port, such as 127.0.0.1:9464 or [::1]:9464"),
                );
                None
            }
        }
    }
}
