//! A token tokend holds: the secret value plus when it was obtained and when it expires, in
//! wall-clock time so that a suspended VM or a clock jump is seen for what it is.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};

/// Where a token's lifetime came from, for the refresh log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    /// The response's `expires_in`.
    ExpiresIn,
    /// The JWT's `exp` (minus `iat` when present) because `expires_in` was missing.
    JwtExp,
    /// Neither was available: the configured `refresh.default_lifetime`.
    Default,
    /// Saved by an earlier run.
    Saved,
}

impl LifetimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LifetimeSource::ExpiresIn => "expires_in",
            LifetimeSource::JwtExp => "jwt exp",
            LifetimeSource::Default => "default_lifetime",
            LifetimeSource::Saved => "saved state",
        }
    }

    /// The source `as_str` names.
    pub fn parse(text: &str) -> Option<LifetimeSource> {
        [
            LifetimeSource::ExpiresIn,
            LifetimeSource::JwtExp,
            LifetimeSource::Default,
            LifetimeSource::Saved,
        ]
        .into_iter()
        .find(|l| l.as_str() == text)
    }
}

/// Which host asked the IdP for a token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// This one (now, or in an earlier run for a saved token).
    #[default]
    Here,
    /// Another host of the fleet, by name: this one took the token from the store.
    Fleet(std::sync::Arc<str>),
}

impl Origin {
    /// The host that asked the IdP, for status: `None` for this one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Origin::Here => None,
            Origin::Fleet(node) => Some(node),
        }
    }
}

pub struct Token {
    pub access_token: SecretString,
    pub token_type: String,
    pub scope: Option<String>,
    /// Local wall-clock time at which the request that produced the token was sent. Lifetimes are
    /// counted from here, so network latency never makes tokend think a token lives longer.
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub lifetime_source: LifetimeSource,
    /// Who asked the IdP for it.
    pub origin: Origin,
}

impl Token {
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }

    pub fn lifetime(&self) -> Duration {
        self.expires_at.duration_since(self.issued_at).unwrap_or(Duration::ZERO)
    }

    /// The same token with its times read on a clock that was stepped back by `by`: it was
    /// issued, and expires, that much earlier than the old clock said.
    pub fn stepped_back(&self, by: Duration) -> Token {
        let earlier = |t: SystemTime| t.checked_sub(by).unwrap_or(UNIX_EPOCH);
        Token {
            access_token: self.access_token.clone(),
            token_type: self.token_type.clone(),
            scope: self.scope.clone(),
            issued_at: earlier(self.issued_at),
            expires_at: earlier(self.expires_at),
            lifetime_source: self.lifetime_source,
            origin: self.origin.clone(),
        }
    }

    /// A value in [-1, 1] derived from the token and this process's salt, used to place the
    /// refresh inside the jitter window. It is stable for one token within a run, so a reload
    /// that keeps the token keeps its schedule; a restart draws a new place in the window.
    ///
    /// The token alone is not enough: the hosts of a fleet sharing one client can receive the
    /// very same token (an IdP that signs the same claims in the same second, with no `jti`,
    /// returns identical bytes: oauth2-mock-server does), would all pick the same refresh time,
    /// and, asking together, get one token again — a herd that never breaks up.
    pub fn jitter_sample(&self) -> f64 {
        self.jitter_sample_salted(process_salt())
    }

    /// The jitter sample every host of a fleet computes alike for this token (see
    /// `Group::plan`): fleets share one refresh, under a lock, so the herd the per-process
    /// salt breaks up cannot form.
    pub fn fleet_jitter_sample(&self) -> f64 {
        self.jitter_sample_salted(b"tokend fleet")
    }

    fn jitter_sample_salted(&self, salt: &[u8]) -> f64 {
        use aws_lc_rs::digest;
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(salt);
        context.update(self.access_token.expose_secret().as_bytes());
        let digest = context.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        let unit = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
        unit * 2.0 - 1.0
    }
}

/// Random bytes drawn once per process, for `Token::jitter_sample`.
fn process_salt() -> &'static [u8; 16] {
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    SALT.get_or_init(|| {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).expect("system randomness");
        salt
    })
}

impl Token {
    /// The token as one JSON document, the same from the socket (`?format=json`) and in a
    /// `format: json` file: RFC 6749 §5.1's `access_token`, `token_type`, `expires_in` (seconds
    /// left at `now`, when the document is served or written) and `scope`, plus `expires_at`
    /// (RFC 3339, UTC), `expires_at_unix` (seconds) and `issued_at`. `scope` is `null` when the
    /// IdP did not say. The document holds the token: whoever gets it must be allowed to.
    pub fn document(&self, now: SystemTime) -> serde_json::Value {
        serde_json::json!({
            "access_token": self.access_token.expose_secret(),
            "token_type": self.token_type,
            "expires_in": self.expires_at.duration_since(now).map_or(0, |d| d.as_secs()),
            "expires_at": rfc3339(self.expires_at),
            "expires_at_unix": unix_millis(self.expires_at) / 1000,
            "issued_at": rfc3339(self.issued_at),
            "scope": self.scope,
        })
    }
}

/// Tokens for unit tests.
#[cfg(test)]
impl Token {
    /// A bearer token `value`, issued at `issued_at` and living `lifetime`.
    pub fn for_test(value: &str, issued_at: SystemTime, lifetime: Duration) -> Token {
        Token {
            access_token: SecretString::from(value),
            token_type: "Bearer".into(),
            scope: None,
            issued_at,
            expires_at: issued_at + lifetime,
            lifetime_source: LifetimeSource::ExpiresIn,
            origin: Origin::Here,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("issued_at", &humantime::format_rfc3339_seconds(self.issued_at))
            .field("expires_at", &humantime::format_rfc3339_seconds(self.expires_at))
            .finish()
    }
}

/// No token lifetime is believed beyond this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86400);

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Formats a wall-clock time for logs and status output. Times humantime cannot format (after
/// the year 9999) are shown as Unix seconds rather than panicking.
pub fn rfc3339(t: SystemTime) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match write!(out, "{}", humantime::format_rfc3339_seconds(t)) {
        Ok(()) => out,
        Err(_) => format!("@{}", unix_millis(t) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str) -> Token {
        Token::for_test(value, UNIX_EPOCH, Duration::from_secs(60))
    }

    #[test]
    fn times_beyond_year_9999_format_without_panicking() {
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(far), "@300000000000");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn jitter_sample_is_stable_per_token_and_spread_across_tokens() {
        assert_eq!(token("a").jitter_sample(), token("a").jitter_sample());
        let samples: Vec<f64> = (0..2000)
            .map(|i| token(&format!("token-{i}")).jitter_sample())
            .collect();
        assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        let below = samples.iter().filter(|s| **s < 0.0).count();
        assert!((800..1200).contains(&below), "{below} of 2000 below zero");
    }

    #[test]
    fn one_token_held_by_many_processes_gets_a_sample_per_process() {
        // The fleet case: every host received the same bytes; each has its own salt.
        let same = token("identical-jwt");
        assert_eq!(
            same.jitter_sample_salted(b"salt-1"),
            same.jitter_sample_salted(b"salt-1")
        );
        let samples: Vec<f64> = (0..2000u32)
            .map(|i| same.jitter_sample_salted(&i.to_be_bytes()))
            .collect();
        assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        let below = samples.iter().filter(|s| **s < 0.0).count();
        assert!((800..1200).contains(&below), "{below} of 2000 below zero");
        // Spread over the whole window, not a few values: every tenth of it is hit.
        let mut tenths = [0usize; 10];
        for s in &samples {
            tenths[(((s + 1.0) / 2.0 * 10.0) as usize).min(9)] += 1;
        }
        assert!(tenths.iter().all(|&n| n >= 100), "{tenths:?}");
    }
}
