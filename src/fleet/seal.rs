//! Tokens as the fleet store holds them: sealed with AES-256-GCM under the fleet key, the Redis
//! key they are stored at as associated data. A value moved to another key, a flipped byte, or a
//! value sealed under another fleet key opens to nothing (and says which of these it is, without
//! a byte of the token); the store never holds a token in clear.
//!
//! A value is text: `tokend1.KEYID.NONCE_AND_CIPHERTEXT`, where KEYID is the first 8 hex digits
//! of SHA-256 over a label and the key (it tells "another key" from "tampered", and names no
//! secret), and the rest is base64url of a random 96-bit nonce followed by the sealed JSON
//! document (`Sealed`) and its tag.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::token::{LifetimeSource, Origin, Token, unix_millis};

/// The fleet key's length: AES-256.
pub const KEY_BYTES: usize = 32;
/// What every sealed value starts with; a later format gets another.
const FORMAT: &str = "tokend1";
/// A sealed value larger than this is not one of tokend's (a token is a few KiB).
pub const MAX_SEALED_BYTES: usize = 64 * 1024;

/// The fleet's key: every node that shares tokens holds the same one. Its bytes live in
/// AWS-LC's key object (cleared when freed) and nowhere else; `Debug` shows only its id.
pub struct FleetKey {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetKey(id {})", self.id)
    }
}

/// Why a key's text is not a fleet key. Never holds the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the fleet key must be {KEY_BYTES} random bytes written in base64 (make one with `tokend fleet keygen` or `openssl rand -base64 32`); this is not base64"
    )]
    NotBase64,
    #[error(
        "the fleet key must be {KEY_BYTES} random bytes written in base64 (make one with `tokend fleet keygen` or `openssl rand -base64 32`); this one holds {0} bytes"
    )]
    Length(usize),
}

impl FleetKey {
    /// Reads a key from its text: base64 (standard or URL-safe, padded or not) of 32 bytes,
    /// surrounding whitespace ignored.
    pub fn from_text(text: &[u8]) -> Result<FleetKey, KeyError> {
        let text = text.trim_ascii();
        let bytes = Zeroizing::new(
            [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .or_else(|| base64::engine::general_purpose::URL_SAFE.decode(text).ok())
                .ok_or(KeyError::NotBase64)?,
        );
        if bytes.len() != KEY_BYTES {
            return Err(KeyError::Length(bytes.len()));
        }
        Ok(FleetKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> FleetKey {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is an AES-256 key");
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(b"tokend fleet key id\n");
        context.update(bytes);
        let digest = context.finish();
        let id = digest.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
        FleetKey {
            key: LessSafeKey::new(unbound),
            id,
        }
    }

    /// A new random key, as `tokend fleet keygen` prints it (base64, padded).
    pub fn generate() -> SecretString {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        aws_lc_rs::rand::fill(bytes.as_mut()).expect("system randomness");
        SecretString::from(STANDARD.encode(bytes.as_ref()))
    }

    /// The key's id: names it in logs and values, and gives nothing of it away.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `token` for the Redis key `at`, as obtained by `node`.
    pub fn seal(&self, at: &str, token: &Token, node: &str) -> Result<String, SealError> {
        let document = Sealed {
            access_token: Cow::Borrowed(token.access_token.expose_secret()),
            token_type: Cow::Borrowed(&token.token_type),
            scope: token.scope.as_deref().map(Cow::Borrowed),
            issued_at_ms: unix_millis(token.issued_at),
            expires_at_ms: unix_millis(token.expires_at),
            lifetime_from: Cow::Borrowed(token.lifetime_source.as_str()),
            node: Cow::Borrowed(node),
        };
        // Room for the whole document at once: a buffer that grows leaves its old copy, with
        // the token in it, behind unwiped.
        let room = NONCE_LEN + 2 * token.access_token.expose_secret().len() + 512 + AES_256_GCM.tag_len();
        let mut sealed = Zeroizing::new(Vec::with_capacity(room));
        sealed.resize(NONCE_LEN, 0);
        aws_lc_rs::rand::fill(&mut sealed[..NONCE_LEN]).map_err(|_| SealError::Randomness)?;
        serde_json::to_writer(&mut *sealed, &document).expect("a token document serializes");
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).expect("NONCE_LEN bytes");
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(at.as_bytes()), &mut sealed[NONCE_LEN..])
            .expect("a token is far below AES-GCM's length limit");
        sealed.extend_from_slice(tag.as_ref());
        Ok(format!("{FORMAT}.{}.{}", self.id, URL_SAFE_NO_PAD.encode(&*sealed)))
    }

    /// Opens a value read from the Redis key `at`: the token and the node that obtained it.
    pub fn open(&self, at: &str, value: &[u8]) -> Result<Opened, SealError> {
        if value.len() > MAX_SEALED_BYTES {
            return Err(SealError::Garbled);
        }
        let text = std::str::from_utf8(value).map_err(|_| SealError::Garbled)?;
        let mut parts = text.splitn(3, '.');
        let (Some(FORMAT), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Garbled);
        };
        if id != self.id {
            return Err(SealError::OtherKey(id.chars().take(8).collect()));
        }
        let mut sealed = Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Garbled)?);
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Garbled);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| SealError::Garbled)?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(at.as_bytes()), &mut sealed[NONCE_LEN..])
            .map_err(|_| SealError::Tampered)?;
        let document: Sealed<'_> = serde_json::from_slice(plaintext).map_err(|_| SealError::Garbled)?;
        let at_ms = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let token = Token {
            access_token: SecretString::from(document.access_token.into_owned()),
            token_type: document.token_type.into_owned(),
            scope: document.scope.map(Cow::into_owned),
            issued_at: at_ms(document.issued_at_ms),
            expires_at: at_ms(document.expires_at_ms),
            lifetime_source: LifetimeSource::parse(&document.lifetime_from).ok_or(SealError::Garbled)?,
            origin: Origin::Fleet(document.node.as_ref().into()),
        };
        if token.expires_at < token.issued_at || token.lifetime() > crate::token::MAX_LIFETIME {
            return Err(SealError::Garbled);
        }
        Ok(Opened {
            token,
            node: document.node.into_owned(),
        })
    }
}

/// What a sealed value holds. `Cow`: a string with `"` or `\` is escaped in JSON and cannot be
/// borrowed (RFC 6749 allows both in a token).
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    #[serde(borrow)]
    access_token: Cow<'a, str>,
    #[serde(borrow)]
    token_type: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    scope: Option<Cow<'a, str>>,
    issued_at_ms: u64,
    expires_at_ms: u64,
    #[serde(borrow)]
    lifetime_from: Cow<'a, str>,
    /// The node that asked the IdP for it.
    #[serde(borrow)]
    node: Cow<'a, str>,
}

/// A token taken from the store.
#[derive(Debug)]
pub struct Opened {
    pub token: Token,
    /// The node that obtained it from the IdP.
    pub node: String,
}

/// Why a value does not open. Never holds a byte of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("it was sealed under another fleet key (id {0}); every node of a fleet needs the same `fleet.key`")]
    OtherKey(String),
    #[error("it does not open under the fleet key: it was changed, or moved from another client's key")]
    Tampered,
    #[error("it is not a value tokend wrote")]
    Garbled,
    #[error("the system's random number generator failed")]
    Randomness,
}

impl SealError {
    /// The label of `tokend_fleet_seal_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            SealError::OtherKey(_) => "other_key",
            SealError::Tampered => "tampered",
            SealError::Garbled => "garbled",
            SealError::Randomness => "randomness",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> FleetKey {
        FleetKey::from_bytes(&[byte; KEY_BYTES])
    }

    fn token() -> Token {
        Token::for_test(
            "eyJ.secret-token.sig",
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn a_sealed_token_opens_at_its_key_with_every_field() {
        let k = key(1);
        let at = "tokend:prod:billing:abc";
        let value = k.seal(at, &token(), "node-a").unwrap();
        assert!(value.starts_with(&format!("tokend1.{}.", k.id())), "{value}");
        assert!(!value.contains("secret-token"));
        let opened = k.open(at, value.as_bytes()).unwrap();
        assert_eq!(opened.node, "node-a");
        let t = token();
        assert_eq!(
            opened.token.access_token.expose_secret(),
            t.access_token.expose_secret()
        );
        assert_eq!(
            (
                opened.token.issued_at,
                opened.token.expires_at,
                opened.token.token_type.as_str()
            ),
            (t.issued_at, t.expires_at, "Bearer")
        );
        // A fresh nonce each time: the same token never seals to the same value.
        assert_ne!(value, k.seal(at, &token(), "node-a").unwrap());
    }

    #[test]
    fn a_token_with_characters_json_escapes_opens_whole() {
        let k = key(1);
        let t = Token::for_test(
            "tok\"en\\with~quotes",
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Duration::from_secs(60),
        );
        let value = k.seal("at", &t, "node \"a\"").unwrap();
        let opened = k.open("at", value.as_bytes()).unwrap();
        assert_eq!(opened.token.access_token.expose_secret(), "tok\"en\\with~quotes");
        assert_eq!(opened.node, "node \"a\"");
    }

    #[test]
    fn a_moved_changed_or_foreign_value_opens_to_nothing() {
        let k = key(1);
        let at = "tokend:prod:billing:abc";
        let value = k.seal(at, &token(), "node-a").unwrap();
        assert_eq!(
            k.open("tokend:prod:reports:abc", value.as_bytes()).unwrap_err(),
            SealError::Tampered
        );
        // Every byte of the sealed part, flipped, is noticed.
        let prefix = format!("tokend1.{}.", k.id()).len();
        let body = URL_SAFE_NO_PAD.decode(&value[prefix..]).unwrap();
        for i in 0..body.len() {
            let mut changed = body.clone();
            changed[i] ^= 0x01;
            let forged = format!("{}{}", &value[..prefix], URL_SAFE_NO_PAD.encode(&changed));
            assert!(k.open(at, forged.as_bytes()).is_err(), "byte {i}");
        }
        let other = key(2);
        assert_eq!(
            other.open(at, value.as_bytes()).unwrap_err(),
            SealError::OtherKey(k.id().to_owned())
        );
        for garbage in [&b""[..], b"hello", b"tokend1.", b"tokend1.x.y", &[0xff; 10]] {
            assert!(k.open(at, garbage).is_err());
        }
    }

    #[test]
    fn keys_are_read_from_base64_and_nothing_else() {
        let generated = FleetKey::generate();
        let a = FleetKey::from_text(generated.expose_secret().as_bytes()).unwrap();
        let b = FleetKey::from_text(format!("  {}\n", generated.expose_secret()).as_bytes()).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(
            a.id(),
            FleetKey::from_text(FleetKey::generate().expose_secret().as_bytes())
                .unwrap()
                .id()
        );
        assert_eq!(FleetKey::from_text(b"c2hvcnQ=").unwrap_err(), KeyError::Length(5));
        assert_eq!(FleetKey::from_text(b"not base64!").unwrap_err(), KeyError::NotBase64);
        let shown = format!("{a:?}");
        assert!(!shown.contains(generated.expose_secret()) && shown.contains(a.id()));
    }
}
