//! Reading the time claims of a JWT access token *without* verifying it. tokend only uses them to
//! learn a lifetime the server did not state in `expires_in`; it never trusts them for access.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Map, Value};

/// Time claims (RFC 7519 §4.1.4–4.1.6) of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeClaims {
    pub exp: Option<SystemTime>,
    pub iat: Option<SystemTime>,
}

/// The claims of `token` if it looks like a compact JWS with a JSON object payload, else `None`
/// (opaque tokens and encrypted JWEs are not readable). Nothing is verified.
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// A NumericDate claim (RFC 7519 §2) as a time; out-of-range values (negative, beyond what the
/// clock can hold) count as absent.
pub fn time_claim(claims: &Map<String, Value>, name: &str) -> Option<SystemTime> {
    let seconds = claims.get(name)?.as_f64()?;
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?)
}

/// Returns the time claims of a JWT (see `claims`).
pub fn time_claims(token: &str) -> Option<TimeClaims> {
    let claims = claims(token)?;
    Some(TimeClaims {
        exp: time_claim(&claims, "exp"),
        iat: time_claim(&claims, "iat"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A compact JWS with `payload` and a dummy signature.
    pub(crate) fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", b64(r#"{"alg":"EdDSA"}"#), b64(payload), "c2ln")
    }

    #[test]
    fn reads_numeric_time_claims() {
        let c = time_claims(&jwt(r#"{"exp":1700003600,"iat":1700000000.5,"sub":"x"}"#)).unwrap();
        assert_eq!(c.exp, Some(UNIX_EPOCH + Duration::from_secs(1_700_003_600)));
        assert_eq!(c.iat, Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)));
    }

    #[test]
    fn opaque_and_malformed_tokens_have_no_claims() {
        for t in [
            "opaque-token",
            "a.b",
            "a.b.c.d.e",
            "x.!!!.y",
            &jwt("[1]"),
            &jwt("not json"),
        ] {
            assert_eq!(time_claims(t), None, "{t}");
        }
        assert_eq!(time_claims(&jwt(r#"{"exp":"tomorrow"}"#)).unwrap().exp, None);
        for absurd in [r#"{"exp":-5}"#, r#"{"exp":1e300}"#, r#"{"exp":1.8e19}"#] {
            assert_eq!(time_claims(&jwt(absurd)).unwrap().exp, None, "{absurd}");
        }
    }
}
