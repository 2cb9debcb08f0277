//! How long an issued token lives: `expires_in`, else the JWT's `exp`, else the configured
//! default, counted so that tokend's expiry is never later than the server's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;

use super::jwt;
use super::response::{IssuedToken, ResponseError};
use crate::token::{LifetimeSource, MAX_LIFETIME, Token};

/// Builds the token of a response to a request sent at `sent_at`.
pub fn token_from(
    issued: IssuedToken,
    sent_at: SystemTime,
    default_lifetime: Duration,
) -> Result<Token, ResponseError> {
    let (lifetime, lifetime_source) = lifetime(&issued, sent_at, default_lifetime)?;
    // Servers count whole seconds: a token issued at 12.9 s with a 60 s lifetime carries
    // `exp` 72, not 72.9. Counting from the whole second before the request was sent keeps
    // tokend's expiry at or before the server's, however the fractions fall.
    let whole_second = UNIX_EPOCH + Duration::from_secs(sent_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    Ok(Token {
        access_token: issued.access_token,
        token_type: issued.token_type,
        scope: issued.scope,
        issued_at: sent_at,
        expires_at: whole_second + lifetime,
        lifetime_source,
        origin: crate::token::Origin::Here,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use secrecy::SecretString;

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
            let t = token_from(issued, sent, default).unwrap();
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
        let t = token_from(issued("opaque", Some(60)), sent, Duration::from_secs(1)).unwrap();
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(1_000_060));
        assert_eq!(t.issued_at, sent);
    }

    #[test]
    fn a_jwt_already_past_its_exp_is_refused() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for payload in [r#"{"exp":10}"#, r#"{"exp":500,"iat":900}"#] {
            let err = token_from(issued(&jwt(payload), None), sent, Duration::from_secs(300)).unwrap_err();
            assert!(err.to_string().contains("already past"), "{err}");
        }
    }
}
