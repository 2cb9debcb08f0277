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
    /// A file holding the secret; one trailing newline is ignored.
    File(PathBuf),
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
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::Credential(name) => format!("systemd credential {name}"),
        }
    }

    /// The file this source reads, if it reads one: a `file`, or a `credential` once
    /// `$CREDENTIALS_DIRECTORY` is set.
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            SecretSource::File(p) => Some(p.clone()),
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

    /// Reads the source's bytes as they are (a PEM key or certificate); `what` names them in
    /// errors, which never contain the bytes.
    pub fn read_bytes(&self, what: &'static str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let unreadable = |reason: String| SecretError::Unreadable {
            what,
            source_desc: self.describe(),
            reason,
        };
        match self {
            SecretSource::Literal(s) => Ok(Zeroizing::new(s.expose_secret().as_bytes().to_vec())),
            SecretSource::File(path) => read_file(path).map_err(unreadable),
            SecretSource::Env(var) => match std::env::var_os(var) {
                None => Err(unreadable("the variable is not set".into())),
                Some(v) => Ok(Zeroizing::new(v.into_encoded_bytes())),
            },
            SecretSource::Credential(_) => match self.file() {
                None => Err(unreadable(format!(
                    "$CREDENTIALS_DIRECTORY is not set; pass the {what} with LoadCredential= in the unit"
                ))),
                Some(path) => read_file(&path).map_err(unreadable),
            },
        }
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
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
            SecretSource::File(p) => p.hash(state),
            SecretSource::Env(v) | SecretSource::Credential(v) => v.hash(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secrets_drop_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "p@ss word\r\n").unwrap();
        let got = SecretSource::File(path.clone()).read().unwrap();
        assert_eq!(got.expose_secret(), "p@ss word");

        std::fs::write(&path, "two\nlines\n").unwrap();
        assert!(matches!(
            SecretSource::File(path.clone()).read(),
            Err(SecretError::ControlCharacter(_))
        ));
        std::fs::write(&path, "\n").unwrap();
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
}
