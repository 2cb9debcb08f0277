//! Creating the socket file safely: a stale socket left by a killed run is replaced only if it
//! really is a socket and nothing answers on it; any other file at the path is an error and is
//! never deleted. The new socket gets its mode and group before it appears at its path (it is
//! bound under a temporary name and renamed into place), and is removed on clean exit only if
//! it is still ours.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::config::SocketConfig;
use crate::output::atomic;

/// Mode of a socket directory tokend creates: readers must be able to reach the socket, which
/// protects itself with its own mode.
const DIR_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path} exists and is not a socket; refusing to replace it (remove it or choose another socket.path)")]
    NotASocket { path: PathBuf },
    #[error("another process is already serving on {path} (is tokend running twice?)")]
    InUse { path: PathBuf },
    #[error("cannot create socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot give socket {path} the group {group}: {source}")]
    Group {
        path: PathBuf,
        group: String,
        source: io::Error,
    },
    #[error("cannot give socket {path} the mode {mode}: {source}")]
    Mode {
        path: PathBuf,
        mode: String,
        source: io::Error,
    },
}

/// A socket file tokend created (the listening socket itself is handed out by `bind`).
pub struct Bound {
    path: PathBuf,
    identity: (u64, u64),
}

impl Bound {
    /// Removes the socket file if it is still the one we created.
    pub fn remove(&self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            // Ignored: nothing useful can be done at exit if the file cannot be removed.
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub fn bind(config: &SocketConfig) -> Result<(UnixListener, Bound), SocketError> {
    let path = &config.path;
    let io_err = |at: &Path, source| SocketError::Io {
        path: at.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| io_err(path, io::Error::other("no parent directory")))?;
    atomic::create_parents(dir, DIR_MODE).map_err(|e| io_err(dir, e))?;
    check_existing(path)?;
    // Bind inside a fresh private (0700) directory next to the socket, set mode and group there,
    // then rename into place: nobody else can reach the socket, or swap in a symlink for the
    // chmod to follow, before it has its final mode.
    let private = tempfile::Builder::new()
        .prefix(".tokend-")
        .rand_bytes(6)
        .tempdir_in(dir)
        .map_err(|e| io_err(dir, e))?;
    let temp = private.path().join("s");
    let listener = UnixListener::bind(&temp).map_err(|e| io_err(&temp, e))?;
    apply_mode(&temp, path, config)?;
    fs::rename(&temp, path).map_err(|e| io_err(path, e))?;
    // Ignored: the directory is empty now; if it cannot be removed it is merely left behind.
    let _ = private.close();
    listener.set_nonblocking(true).map_err(|e| io_err(path, e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| io_err(path, e))?;
    Ok((
        listener,
        Bound {
            path: path.clone(),
            identity: (meta.dev(), meta.ino()),
        },
    ))
}

/// Sets the configured mode and group on the socket file at `path` (at start-up, while it is
/// still under its temporary name, and on reload). Errors name `shown`, its real path.
pub fn apply_mode(path: &Path, shown: &Path, config: &SocketConfig) -> Result<(), SocketError> {
    if let Some(group) = &config.group {
        std::os::unix::fs::lchown(path, None, Some(group.id)).map_err(|source| SocketError::Group {
            path: shown.to_owned(),
            group: group.spec.to_string(),
            source,
        })?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(config.mode.bits())).map_err(|source| SocketError::Mode {
        path: shown.to_owned(),
        mode: config.mode.to_string(),
        source,
    })
}

/// Nothing at `path`, or a stale socket nobody answers on: fine (it will be replaced).
fn check_existing(path: &Path) -> Result<(), SocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket { path: path.to_owned() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(source) => Err(SocketError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use std::time::Duration;

    fn config(path: PathBuf) -> SocketConfig {
        SocketConfig {
            path,
            mode: Mode::new(0o660),
            group: None,
            max_connections: 10,
            max_connections_per_user: 10,
            header_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn binds_with_the_mode_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/tokend.sock");
        let (listener, _bound) = bind(&config(path.clone())).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        assert_eq!(fs::metadata(dir.path().join("run")).unwrap().mode() & 0o777, 0o755);
        // Live: someone answers.
        assert!(matches!(bind(&config(path.clone())), Err(SocketError::InUse { .. })));
        // Stale: the listener is gone but the file remains.
        drop(listener);
        assert!(path.exists());
        let (_listener, again) = bind(&config(path.clone())).unwrap();
        again.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_regular_file_at_the_path_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokend.sock");
        fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            bind(&config(path.clone())),
            Err(SocketError::NotASocket { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn removal_leaves_a_socket_that_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokend.sock");
        let (_listener, bound) = bind(&config(path.clone())).unwrap();
        fs::remove_file(&path).unwrap();
        let other = UnixListener::bind(&path).unwrap();
        bound.remove();
        assert!(path.exists(), "someone else's socket was removed");
        drop(other);
    }
}
