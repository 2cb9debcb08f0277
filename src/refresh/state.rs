//! Per-client state files: the last token and the grant it was obtained with, so that a restart
//! reuses a still-valid token instead of asking the IdP again. The directory is 0700 and the
//! files 0600: they hold tokens.

use std::borrow::Cow;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::ClientName;
use crate::output::atomic;
use crate::token::{LifetimeSource, MAX_LIFETIME, Origin, Token, unix_millis};

const FORMAT_VERSION: u32 = 1;
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    format: u32,
    #[serde(borrow)]
    fingerprint: Cow<'a, str>,
    // Cow: a token with `"` or `\` is escaped in JSON and cannot be borrowed.
    #[serde(borrow)]
    access_token: Cow<'a, str>,
    #[serde(borrow)]
    token_type: Cow<'a, str>,
    #[serde(borrow)]
    scope: Option<Cow<'a, str>>,
    issued_at_ms: u64,
    expires_at_ms: u64,
    /// The fleet host that asked the IdP, for a token taken from the fleet (absent: this one).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    node: Option<Cow<'a, str>>,
}

pub fn path(dir: &Path, client: &ClientName) -> PathBuf {
    dir.join(format!("{client}.state"))
}

/// Saves `token` as `client`'s last token.
pub fn save(dir: &Path, client: &ClientName, fingerprint: &str, token: &Token) -> io::Result<()> {
    atomic::create_parents(dir, DIR_MODE)?;
    let saved = Stored {
        format: FORMAT_VERSION,
        fingerprint: Cow::Borrowed(fingerprint),
        access_token: Cow::Borrowed(token.access_token.expose_secret()),
        token_type: Cow::Borrowed(&token.token_type),
        scope: token.scope.as_deref().map(Cow::Borrowed),
        issued_at_ms: unix_millis(token.issued_at),
        expires_at_ms: unix_millis(token.expires_at),
        node: token.origin.node().map(Cow::Borrowed),
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(token.access_token.expose_secret().len() + 512));
    serde_json::to_writer(&mut *bytes, &saved).map_err(io::Error::other)?;
    let path = path(dir, client);
    atomic::write(
        &atomic::Target {
            path: &path,
            mode: FILE_MODE,
            owner: None,
            group: None,
        },
        &bytes,
    )
}

/// Why a saved token was not reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    Unreadable(String),
    /// The file or its directory could have been written by someone else than tokend: its
    /// token is never served (it could be anyone's).
    Untrusted(String),
    OtherGrant,
    Expired,
}

/// A state file's contents: a token and the fingerprint of the request it was obtained by.
#[derive(Debug)]
pub struct Saved {
    pub fingerprint: String,
    pub token: Token,
}

/// A state file larger than this is not one.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// Reads `client`'s state file. Whether its token may be reused is the caller's decision
/// (`refresh::seed`). Only what tokend itself wrote is trusted: the directory and the file are
/// opened without following symlinks, and checked on the opened descriptors (`fstat`, not by
/// path) to be owned by tokend's user and writable by no one else (the file readable by no one
/// else either).
pub fn read(dir: &Path, client: &ClientName) -> Result<Saved, Unusable> {
    let bytes = read_trusted(dir, client)?;
    let saved: Stored<'_> =
        serde_json::from_slice(&bytes).map_err(|e| Unusable::Unreadable(format!("not a state file: {e}")))?;
    if saved.format != FORMAT_VERSION {
        return Err(Unusable::Unreadable(format!("unknown state format {}", saved.format)));
    }
    let token = Token {
        access_token: SecretString::from(&*saved.access_token),
        token_type: saved.token_type.into_owned(),
        scope: saved.scope.map(Cow::into_owned),
        issued_at: UNIX_EPOCH + Duration::from_millis(saved.issued_at_ms),
        expires_at: UNIX_EPOCH + Duration::from_millis(saved.expires_at_ms),
        lifetime_source: LifetimeSource::Saved,
        origin: saved.node.map_or(Origin::Here, |n| Origin::Fleet(n.into())),
    };
    if token.lifetime() > MAX_LIFETIME {
        return Err(Unusable::Unreadable("implausible token lifetime".into()));
    }
    Ok(Saved {
        fingerprint: saved.fingerprint.into_owned(),
        token,
    })
}

fn read_trusted(dir: &Path, client: &ClientName) -> Result<Zeroizing<Vec<u8>>, Unusable> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, fstat};
    use std::io::Read;
    let me = nix::unistd::geteuid().as_raw();
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir_fd = match open(dir, flags | OFlag::O_DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Unreadable(format!("cannot open {}: {e}", dir.display()))),
    };
    let meta = fstat(&dir_fd).map_err(|e| Unusable::Unreadable(e.to_string()))?;
    if meta.st_uid != me || meta.st_mode & 0o022 != 0 {
        return Err(Unusable::Untrusted(format!(
            "the state directory {} is owned by uid {} with mode {:04o}; tokend trusts it only if it is its own (uid {me}) and writable by no one else",
            dir.display(),
            meta.st_uid,
            meta.st_mode & 0o7777
        )));
    }
    let name = format!("{client}.state");
    // O_NONBLOCK: a FIFO planted under the name must not hang the read.
    let fd = match openat(&dir_fd, name.as_str(), flags | OFlag::O_NONBLOCK, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Err(Unusable::Missing),
        Err(nix::errno::Errno::ELOOP) => {
            return Err(Unusable::Untrusted(format!(
                "{} is a symlink",
                path(dir, client).display()
            )));
        }
        Err(e) => return Err(Unusable::Unreadable(e.to_string())),
    };
    let meta = fstat(&fd).map_err(|e| Unusable::Unreadable(e.to_string()))?;
    let regular = meta.st_mode & libc::S_IFMT == libc::S_IFREG;
    if !regular || meta.st_uid != me || meta.st_mode & 0o077 != 0 {
        return Err(Unusable::Untrusted(format!(
            "{} is {}owned by uid {} with mode {:04o}; tokend trusts only a regular file of its own (uid {me}) that no one else can read or write",
            path(dir, client).display(),
            if regular { "" } else { "not a regular file, " },
            meta.st_uid,
            meta.st_mode & 0o7777
        )));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
    std::fs::File::from(fd)
        .take(MAX_STATE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| Unusable::Unreadable(e.to_string()))?;
    Ok(bytes)
}

/// Deletes `client`'s state file, if any.
pub fn remove(dir: &Path, client: &ClientName) -> io::Result<()> {
    match std::fs::remove_file(path(dir, client)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn token(expires_in: u64) -> Token {
        let now = std::time::SystemTime::now();
        Token {
            scope: Some("s".into()),
            ..Token::for_test("tok\"en\\", now, Duration::from_secs(expires_in))
        }
    }

    #[test]
    fn a_saved_token_round_trips_with_its_fingerprint_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let name = ClientName::new("billing").unwrap();
        assert_eq!(read(&state, &name).unwrap_err(), Unusable::Missing);

        let saved = token(3600);
        save(&state, &name, "fp", &saved).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(path(&state, &name)).unwrap().mode() & 0o777, 0o600);

        let loaded = read(&state, &name).unwrap();
        assert_eq!(loaded.fingerprint, "fp");
        assert_eq!(loaded.token.access_token.expose_secret(), "tok\"en\\");
        assert_eq!(loaded.token.scope.as_deref(), Some("s"));
        assert_eq!(loaded.token.lifetime_source, LifetimeSource::Saved);
        assert_eq!(unix_millis(loaded.token.expires_at), unix_millis(saved.expires_at));

        std::fs::write(path(&state, &name), b"{garbage").unwrap();
        assert!(matches!(read(&state, &name), Err(Unusable::Unreadable(_))));
        remove(&state, &name).unwrap();
        remove(&state, &name).unwrap();
    }

    /// What someone else could have written is never served: a symlink, a file or directory
    /// others may write, a file others may read, a FIFO.
    #[test]
    fn a_planted_state_file_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let name = ClientName::new("billing").unwrap();
        save(&state, &name, "fp", &token(3600)).unwrap();
        let file = path(&state, &name);
        let untrusted = |what: &str| match read(&state, &name) {
            Err(Unusable::Untrusted(why)) => why,
            other => panic!("{what}: {other:?}"),
        };
        let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();

        set(&file, 0o644);
        assert!(untrusted("a file others may read").contains("mode 0644"));
        set(&file, 0o600);
        set(&state, 0o777);
        assert!(untrusted("a directory others may write").contains("state directory"));
        set(&state, 0o700);
        assert!(read(&state, &name).is_ok());
        if nix::unistd::geteuid().is_root() {
            // Someone else's file, even with a private mode.
            nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            assert!(untrusted("another user's file").contains("owned by uid 65534"));
            nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        }

        // A symlink to a token file an attacker wrote, with the right mode.
        let planted = dir.path().join("planted");
        std::fs::copy(&file, &planted).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&planted, &file).unwrap();
        assert!(untrusted("a symlink").contains("symlink"));
        std::fs::remove_file(&file).unwrap();

        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(untrusted("a FIFO").contains("not a regular file"));
        std::fs::remove_file(&file).unwrap();

        // A state directory that is a symlink is not followed either.
        let real = dir.path().join("real");
        std::fs::rename(&state, &real).unwrap();
        std::os::unix::fs::symlink(&real, &state).unwrap();
        assert!(matches!(read(&state, &name), Err(Unusable::Unreadable(_))));
    }
}
