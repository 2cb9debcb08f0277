//! Creating the socket file safely: a stale socket left by a killed run is replaced only if it
//! really is a socket and nothing answers on it; any other file at the path is an error and is
//! never deleted. The new socket gets its mode and group before it appears at its path (it is
//! bound in a private directory next to it and renamed into place), and is removed on clean
//! exit only if it is still ours. A run killed while binding leaves that private directory
//! behind (`.{name}.tokend-XXXXXX`, holding at most the socket `s`): the next start removes it.

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
/// The private directory a socket is bound in is `.{name}{PRIVATE_INFIX}XXXXXX`.
const PRIVATE_INFIX: &str = ".tokend-";
const PRIVATE_RANDOM_LEN: usize = 6;
/// The socket's name inside it.
const PRIVATE_SOCKET: &str = "s";

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
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io_err(path, io::Error::other("the socket path has no file name")))?;
    atomic::create_parents(dir, DIR_MODE).map_err(|e| io_err(dir, e))?;
    check_existing(path)?;
    // Nothing serves at `path`: what a killed start of this socket left is nobody's now.
    for removed in remove_leftovers(dir, name).map_err(|e| io_err(dir, e))? {
        tracing::info!(path = %removed.display(), "removed a directory left by a start that was killed while creating the socket");
    }
    // Bind inside a fresh private (0700, whatever the umask) directory next to the socket, set
    // mode and group there, then rename into place: nobody else can reach the socket, or swap
    // in a symlink for the chmod to follow, before it has its final mode.
    let private = tempfile::Builder::new()
        .prefix(&format!(".{name}{PRIVATE_INFIX}"))
        .rand_bytes(PRIVATE_RANDOM_LEN)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .map_err(|e| io_err(dir, e))?;
    let temp = private.path().join(PRIVATE_SOCKET);
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

/// Removes the private directories of socket `name` in `dir` (`.{name}.tokend-XXXXXX`) that a
/// killed start left: tokend's own, holding nothing or a socket `s` nobody answers on. Anything
/// else is left alone. Returns what was removed.
fn remove_leftovers(dir: &Path, name: &str) -> io::Result<Vec<PathBuf>> {
    let prefix = format!(".{name}{PRIVATE_INFIX}");
    let own_uid = nix::unistd::geteuid().as_raw();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(random) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if random.len() != PRIVATE_RANDOM_LEN || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let private = entry.path();
        let meta = fs::symlink_metadata(&private)?;
        if !meta.is_dir() || meta.uid() != own_uid {
            continue;
        }
        let mut sockets = Vec::new();
        let mut only_ours = true;
        for inner in fs::read_dir(&private)? {
            let inner = inner?;
            let stale_socket = inner.file_name() == PRIVATE_SOCKET
                && fs::symlink_metadata(inner.path()).is_ok_and(|m| m.file_type().is_socket())
                && UnixStream::connect(inner.path()).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
            if !stale_socket {
                only_ours = false;
                break;
            }
            sockets.push(inner.path());
        }
        if !only_ours {
            continue;
        }
        for socket in sockets {
            fs::remove_file(socket)?;
        }
        fs::remove_dir(&private)?;
        removed.push(private);
    }
    Ok(removed)
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
    fn leftovers_of_a_killed_start_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let make = |name: &str| {
            let p = dir.path().join(name);
            fs::create_dir(&p).unwrap();
            p
        };
        // Killed before bind (empty), and after bind (a stale socket inside).
        let empty = make(".api.sock.tokend-aB3dE9");
        let stale = make(".api.sock.tokend-Zz0011");
        drop(UnixListener::bind(stale.join("s")).unwrap());
        // Not leftovers of this socket, or not only ours: kept.
        let live = make(".api.sock.tokend-live01");
        let _listening = UnixListener::bind(live.join("s")).unwrap();
        let other_socket = make(".other.sock.tokend-aB3dE9");
        let odd_name = make(".api.sock.tokend-toolong1");
        let with_a_file = make(".api.sock.tokend-file01");
        fs::write(with_a_file.join("s"), b"not a socket").unwrap();
        fs::write(dir.path().join(".api.sock.tokend-plain1"), b"a file").unwrap();

        let (_listener, bound) = bind(&config(path.clone())).unwrap();
        assert!(!empty.exists() && !stale.exists());
        for kept in [&live, &other_socket, &odd_name, &with_a_file] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        assert!(dir.path().join(".api.sock.tokend-plain1").exists());
        // And the new socket's own private directory is gone once it is in place.
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".api.sock.tokend-"))
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
        bound.remove();
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
