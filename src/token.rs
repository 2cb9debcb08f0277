//! A token tokend holds: the secret value plus when it was obtained and when it expires, in
//! wall-clock time so that a suspended VM or a clock jump is seen for what it is.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};

use crate::oauth::jwt;
use crate::oauth::{IssuedToken, ResponseError};

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
}

impl Token {
    /// Builds a token from a response to a request sent at `sent_at`.
    pub fn from_response(
        issued: IssuedToken,
        sent_at: SystemTime,
        default_lifetime: Duration,
    ) -> Result<Token, ResponseError> {
        let (lifetime, lifetime_source) = lifetime(&issued, sent_at, default_lifetime)?;
        // Servers count whole seconds: a token issued at 12.9 s with a 60 s lifetime carries
        // `exp` 72, not 72.9. Counting from the whole second before the request was sent keeps
        // tokend's expiry at or before the server's, however the fractions fall.
        let whole_second =
            UNIX_EPOCH + Duration::from_secs(sent_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        Ok(Token {
            access_token: issued.access_token,
            token_type: issued.token_type,
            scope: issued.scope,
            issued_at: sent_at,
            expires_at: whole_second + lifetime,
            lifetime_source,
        })
    }

    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }

    pub fn lifetime(&self) -> Duration {
        self.expires_at.duration_since(self.issued_at).unwrap_or(Duration::ZERO)
    }

    /// A value in [-1, 1] derived from the token itself, used to place the refresh inside the
    /// jitter window. It is random across hosts and tokens (each host gets its own token) yet
    /// stable for one token, so a restart or reload that keeps the token keeps its schedule.
    pub fn jitter_sample(&self) -> f64 {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.access_token.expose_secret().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        let unit = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
        unit * 2.0 - 1.0
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

/// RFC 6749 §5.1 says `expires_in` is RECOMMENDED, so some servers leave it out. Then the JWT
/// `exp` is used (as `exp - iat` when `iat` is present, which is immune to clock skew between
/// tokend and the server), and failing that the configured default. Lifetimes are capped at
/// `MAX_LIFETIME`, like `expires_in`, so absurd claims cannot overflow the clock.
fn lifetime(
    issued: &IssuedToken,
    sent_at: SystemTime,
    default: Duration,
) -> Result<(Duration, LifetimeSource), ResponseError> {
    if let Some(expires_in) = issued.expires_in {
        return Ok((expires_in.min(MAX_LIFETIME), LifetimeSource::ExpiresIn));
    }
    let Some(exp) = jwt::time_claims(issued.access_token.expose_secret()).and_then(|c| c.exp.map(|exp| (exp, c.iat)))
    else {
        return Ok((default, LifetimeSource::Default));
    };
    let lifetime = match exp {
        (exp, Some(iat)) => exp.duration_since(iat).ok(),
        (exp, None) => exp.duration_since(sent_at).ok(),
    };
    match lifetime.filter(|d| *d >= Duration::from_secs(1)) {
        Some(lifetime) => Ok((lifetime.min(MAX_LIFETIME), LifetimeSource::JwtExp)),
        None => Err(ResponseError::Invalid(
            "the response has no `expires_in` and the JWT's `exp` is already past".into(),
        )),
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
    use base64::Engine;

    fn issued(token: &str, expires_in: Option<u64>) -> IssuedToken {
        IssuedToken {
            access_token: SecretString::from(token),
            token_type: "Bearer".into(),
            expires_in: expires_in.map(Duration::from_secs),
            scope: None,
        }
    }

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64("{}"), b64(payload))
    }

    #[test]
    fn lifetime_prefers_expires_in_then_jwt_exp_then_the_default() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let default = Duration::from_secs(300);
        let cases = [
            (issued("opaque", Some(60)), 60, LifetimeSource::ExpiresIn),
            (
                issued(&jwt(r#"{"exp":999,"iat":100}"#), Some(60)),
                60,
                LifetimeSource::ExpiresIn,
            ),
            // exp - iat: the server's intended lifetime, whatever our clock says.
            (
                issued(&jwt(r#"{"exp":5000,"iat":1400}"#), None),
                3600,
                LifetimeSource::JwtExp,
            ),
            // exp alone: counted from when the request was sent.
            (issued(&jwt(r#"{"exp":1000900}"#), None), 900, LifetimeSource::JwtExp),
            (issued("opaque", None), 300, LifetimeSource::Default),
            (issued(&jwt(r#"{"sub":"no exp"}"#), None), 300, LifetimeSource::Default),
            // Absurd lifetimes are capped rather than overflowing the clock.
            // Absurd lifetimes are capped rather than overflowing the clock; an `exp` the clock
            // cannot even represent counts as absent.
            (
                issued(&jwt(r#"{"exp":3e11,"iat":0}"#), None),
                MAX_LIFETIME.as_secs(),
                LifetimeSource::JwtExp,
            ),
            (
                issued(&jwt(r#"{"exp":1e19,"iat":0}"#), None),
                300,
                LifetimeSource::Default,
            ),
            (
                issued(&jwt(r#"{"exp":1e300,"iat":0}"#), None),
                300,
                LifetimeSource::Default,
            ),
        ];
        for (i, (issued, secs, source)) in cases.into_iter().enumerate() {
            let t = Token::from_response(issued, sent, default).unwrap();
            assert_eq!(
                (t.lifetime(), t.lifetime_source),
                (Duration::from_secs(secs), source),
                "case {i}"
            );
            assert_eq!(t.expires_at, sent + Duration::from_secs(secs));
        }
    }

    #[test]
    fn expiry_counts_from_the_whole_second_before_the_request() {
        let sent = UNIX_EPOCH + Duration::from_millis(1_000_000_900);
        let t = Token::from_response(issued("opaque", Some(60)), sent, Duration::from_secs(1)).unwrap();
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(1_000_060));
        assert_eq!(t.issued_at, sent);
    }

    #[test]
    fn a_jwt_already_past_its_exp_is_refused() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for payload in [r#"{"exp":10}"#, r#"{"exp":500,"iat":900}"#] {
            let err = Token::from_response(issued(&jwt(payload), None), sent, Duration::from_secs(300)).unwrap_err();
            assert!(err.to_string().contains("already past"), "{err}");
        }
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
        let sent = UNIX_EPOCH;
        let make = |s: &str| Token::from_response(issued(s, Some(60)), sent, Duration::from_secs(1)).unwrap();
        assert_eq!(make("a").jitter_sample(), make("a").jitter_sample());
        let samples: Vec<f64> = (0..2000).map(|i| make(&format!("token-{i}")).jitter_sample()).collect();
        assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        let below = samples.iter().filter(|s| **s < 0.0).count();
        assert!((800..1200).contains(&below), "{below} of 2000 below zero");
    }
}
