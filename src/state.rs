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
use crate::token::{LifetimeSource, MAX_LIFETIME, Token, unix_millis};

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
    OtherGrant,
    Expired,
}

/// A state file's contents: a token and the fingerprint of the request it was obtained by.
#[derive(Debug)]
pub struct Saved {
    pub fingerprint: String,
    pub token: Token,
}

/// Reads `client`'s state file. Whether its token may be reused is the caller's decision
/// (`refresh::seed`).
pub fn read(dir: &Path, client: &ClientName) -> Result<Saved, Unusable> {
    let bytes = match std::fs::read(path(dir, client)) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Unreadable(e.to_string())),
    };
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
    };
    if token.lifetime() > MAX_LIFETIME {
        return Err(Unusable::Unreadable("implausible token lifetime".into()));
    }
    Ok(Saved {
        fingerprint: saved.fingerprint.into_owned(),
        token,
    })
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
}
