//! Where client secrets come from, and reading them without ever letting one reach a log line,
//! an error message or `Debug` output.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// The largest secret or key file tokend will read; anything bigger is a misconfiguration.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A configured secret source. Files and credentials are read on every token request, so a
/// rotated secret is picked up without a restart.
#[derive(Clone)]
pub enum SecretSource {
    /// Written inline in the config file.
    Literal(SecretString),
    /// A file holding the secret; one trailing newline is ignored. Refused if its group or
    /// others may read it, as ssh refuses a loose key.
    File(PathBuf),
    /// A file its group may read too (`group_readable: true`): a Kubernetes Secret volume
    /// (`defaultMode: 0440`, group `fsGroup`), a `root:tokend 0640` file. Others never.
    SharedFile(PathBuf),
    /// An environment variable of the tokend process.
    Env(String),
    /// `$CREDENTIALS_DIRECTORY/NAME`, as provided by systemd `LoadCredential=`.
    Credential(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `what` is what was being read: `client secret`, `private key`, `client certificate`.
    #[error("cannot read {what} from {source_desc}: {reason}")]
    Unreadable {
        what: &'static str,
        source_desc: String,
        reason: String,
    },
    #[error("client secret from {0} is empty")]
    Empty(String),
    #[error("client secret from {0} is not valid UTF-8")]
    NotUtf8(String),
    #[error("client secret from {0} contains a line break or control character")]
    ControlCharacter(String),
}

impl SecretSource {
    /// A description that names the source but never its content.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Literal(_) => "the config file (inline)".to_owned(),
            SecretSource::File(p) | SecretSource::SharedFile(p) => format!("file {}", p.display()),
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::Credential(name) => format!("systemd credential {name}"),
        }
    }

    /// The file this source reads, if it reads one: a `file`, or a `credential` once
    /// `$CREDENTIALS_DIRECTORY` is set.
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            SecretSource::File(p) | SecretSource::SharedFile(p) => Some(p.clone()),
            SecretSource::Credential(name) => {
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| Path::new(&dir).join(name))
            }
            SecretSource::Literal(_) | SecretSource::Env(_) => None,
        }
    }

    /// Reads the client secret now: one line of text, one trailing newline ignored.
    pub fn read(&self) -> Result<SecretString, SecretError> {
        let desc = self.describe();
        let mut bytes = self.read_bytes("client secret")?;
        // Editors and `echo` add one trailing newline; it is never part of the secret.
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        let value = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotUtf8(desc.clone()))?;
        if value.is_empty() {
            return Err(SecretError::Empty(desc));
        }
        if value.chars().any(char::is_control) {
            return Err(SecretError::ControlCharacter(desc));
        }
        Ok(SecretString::from(value))
    }

    /// Reads the source's bytes as they are (a PEM key); `what` names them in errors, which
    /// never contain the bytes. A file others (or its group) may read is refused.
    pub fn read_bytes(&self, what: &'static str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        self.read_with(what, false)
    }

    /// Like `read_bytes`, for what is no secret (a client certificate): any mode is fine.
    pub fn read_public_bytes(&self, what: &'static str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        self.read_with(what, true)
    }

    fn read_with(&self, what: &'static str, public: bool) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let (strict, shared) = if public {
            (Loose::Any, Loose::Any)
        } else {
            (Loose::Refused, Loose::GroupAllowed)
        };
        let unreadable = |reason: String| SecretError::Unreadable {
            what,
            source_desc: self.describe(),
            reason,
        };
        // What to do about a file that is not there.
        let create = if public {
            "create it or correct the path"
        } else {
            "create it (mode 0600, owned by tokend's user) or correct the path"
        };
        match self {
            SecretSource::Literal(s) => Ok(Zeroizing::new(s.expose_secret().as_bytes().to_vec())),
            SecretSource::File(path) => read_file(path, strict, create).map_err(unreadable),
            SecretSource::SharedFile(path) => read_file(path, shared, create).map_err(unreadable),
            SecretSource::Env(var) => match std::env::var_os(var) {
                None => Err(unreadable(
                    "the variable is not set; set it in tokend's environment (under systemd, `Environment=` or `EnvironmentFile=` in a drop-in)"
                        .into(),
                )),
                Some(v) => Ok(Zeroizing::new(v.into_encoded_bytes())),
            },
            SecretSource::Credential(name) => match self.file() {
                None => Err(unreadable(format!(
                    "$CREDENTIALS_DIRECTORY is not set; pass the {what} with LoadCredential= in the unit"
                ))),
                Some(path) => {
                    let pass = format!("pass it with `LoadCredential={name}:/path/to/file` in the unit");
                    read_file(&path, strict, &pass).map_err(unreadable)
                }
            },
        }
    }
}

/// Which loose modes a file may have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loose {
    Refused,
    GroupAllowed,
    /// Not a secret: any mode.
    Any,
}

/// Reads a secret file, refusing one others (or, unless allowed, its group) may read; the check
/// is made on the opened file. `missing` says what to do if there is no such file.
fn read_file(path: &Path, loose: Loose, missing: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{e}; {missing}"),
        std::io::ErrorKind::PermissionDenied => {
            format!("{e}; tokend's user must be able to read it: make that user its owner (keep the mode 0600)")
        }
        _ => e.to_string(),
    })?;
    let mode = file.metadata().map_err(|e| e.to_string())?.mode() & 0o7777;
    if mode & 0o004 != 0 && loose != Loose::Any {
        return Err(format!(
            "the file is readable by every user (mode {mode:04o}); `chmod 0600 {}` (or 0640 and `group_readable: true` if its group must read it)",
            path.display()
        ));
    }
    if mode & 0o040 != 0 && loose == Loose::Refused {
        return Err(format!(
            "the file is readable by its group (mode {mode:04o}); `chmod 0600 {}`, or add `group_readable: true` to the source if that group must read it",
            path.display()
        ));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(256));
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!("the file is larger than {MAX_SECRET_BYTES} bytes"));
    }
    Ok(bytes)
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal([REDACTED])"),
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretSource::SharedFile(p) => f.debug_tuple("SharedFile").field(p).finish(),
            SecretSource::Env(v) => f.debug_tuple("Env").field(v).finish(),
            SecretSource::Credential(n) => f.debug_tuple("Credential").field(n).finish(),
        }
    }
}

impl PartialEq for SecretSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SecretSource::Literal(a), SecretSource::Literal(b)) => a.expose_secret() == b.expose_secret(),
            (SecretSource::File(a), SecretSource::File(b)) => a == b,
            (SecretSource::SharedFile(a), SecretSource::SharedFile(b)) => a == b,
            (SecretSource::Env(a), SecretSource::Env(b)) => a == b,
            (SecretSource::Credential(a), SecretSource::Credential(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for SecretSource {}

/// Consistent with `eq`. An inline secret is hashed only in memory, to find clients that share
/// a request; the hash is never shown or stored.
impl std::hash::Hash for SecretSource {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            SecretSource::Literal(s) => s.expose_secret().hash(state),
            SecretSource::File(p) | SecretSource::SharedFile(p) => p.hash(state),
            SecretSource::Env(v) | SecretSource::Credential(v) => v.hash(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn file_secrets_drop_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        private(&path, "p@ss word\r\n");
        let got = SecretSource::File(path.clone()).read().unwrap();
        assert_eq!(got.expose_secret(), "p@ss word");

        private(&path, "two\nlines\n");
        assert!(matches!(
            SecretSource::File(path.clone()).read(),
            Err(SecretError::ControlCharacter(_))
        ));
        private(&path, "\n");
        assert!(matches!(SecretSource::File(path).read(), Err(SecretError::Empty(_))));
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let source = SecretSource::Literal(SecretString::from("hunter2-very-secret"));
        assert!(!format!("{source:?}").contains("hunter2"));
        let missing = SecretSource::File("/nonexistent/tokend-secret".into())
            .read()
            .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/tokend-secret"), "{missing}");
    }

    /// As ssh refuses a loose key: a secret file others may read is refused, and one its group
    /// may read unless the source says `group_readable`; a certificate is no secret.
    #[test]
    fn loose_secret_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        private(&path, "hunter2");
        let chmod = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let file = SecretSource::File(path.clone());
        let shared = SecretSource::SharedFile(path.clone());
        assert!(file.read().is_ok());
        chmod(0o644);
        let err = file.read().unwrap_err().to_string();
        assert!(
            err.contains("readable by every user (mode 0644)") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(shared.read().is_err());
        chmod(0o640);
        let err = file.read().unwrap_err().to_string();
        assert!(
            err.contains("readable by its group (mode 0640)") && err.contains("group_readable: true"),
            "{err}"
        );
        assert_eq!(shared.read().unwrap().expose_secret(), "hunter2");
        assert!(file.read_bytes("private key").is_err());
        chmod(0o644);
        assert!(file.read_public_bytes("client certificate").is_ok());
    }
}
