//! Checking a token before it is published (`validate:`): the JWT's signature against the
//! issuer's JWKS, its `iss`, its `aud` (the audience asked for), `exp` and `nbf` with a small
//! leeway, and its algorithm against an allow-list that never contains `none` or HMAC. The
//! verification itself is jsonwebtoken's (on aws-lc-rs); this module picks the key and turns
//! failures into messages that name the claim.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation as JwtValidation, errors::ErrorKind};
use serde_json::Value;
use url::Url;

use super::ErrorClass;
use super::client::{FetchError, HttpClient};
use crate::config::{JwsAlg, Validation};

/// A JWKS is re-fetched for an unknown `kid` at most this often (an attacker sending tokens with
/// random kids must not turn tokend into a JWKS hammer).
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(30);
/// A JWKS is reused this long before it is fetched again anyway.
const JWKS_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "the token is not a JWT, so it cannot be validated (an IdP such as Auth0 returns an opaque token when no `audience` is asked for; check the client's `audience`)"
    )]
    Opaque,
    #[error("token validation failed: {0}")]
    Rejected(String),
    #[error("cannot get the issuer's keys from {url}: {reason}")]
    Jwks { url: String, reason: String },
}

impl ValidationError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ValidationError::Jwks { .. } => ErrorClass::Transient,
            // A token that fails validation comes from a misconfiguration (or an attack); asking
            // again at once would not help.
            ValidationError::Opaque | ValidationError::Rejected(_) => ErrorClass::Permanent,
        }
    }
}

fn algorithm(alg: JwsAlg) -> Algorithm {
    match alg {
        JwsAlg::Rs256 => Algorithm::RS256,
        JwsAlg::Rs384 => Algorithm::RS384,
        JwsAlg::Rs512 => Algorithm::RS512,
        JwsAlg::Ps256 => Algorithm::PS256,
        JwsAlg::Ps384 => Algorithm::PS384,
        JwsAlg::Ps512 => Algorithm::PS512,
        JwsAlg::Es256 => Algorithm::ES256,
        JwsAlg::Es384 => Algorithm::ES384,
        JwsAlg::EdDsa => Algorithm::EdDSA,
    }
}

/// The issuer's keys, cached.
#[derive(Default)]
pub struct KeyCache {
    keys: Option<(Url, JwkSet, Instant)>,
}

impl KeyCache {
    async fn keys(&mut self, http: &HttpClient, url: &Url, refetch: bool) -> Result<&JwkSet, FetchError> {
        let stale = match &self.keys {
            Some((cached_url, _, at)) => {
                cached_url != url || at.elapsed() > JWKS_TTL || (refetch && at.elapsed() > REFETCH_AT_MOST_EVERY)
            }
            None => true,
        };
        if stale {
            let failed = |reason: String| ValidationError::Jwks {
                url: url.to_string(),
                reason,
            };
            let answer = http.get_json(url).await?;
            if answer.status != 200 {
                return Err(failed(format!("HTTP {}", answer.status)).into());
            }
            let set: JwkSet =
                serde_json::from_slice(&answer.body).map_err(|e| failed(format!("not a JWK set: {e}")))?;
            self.keys = Some((url.clone(), set, Instant::now()));
        }
        Ok(&self.keys.as_ref().expect("just filled").1)
    }
}

/// Validates `token` per `rules`, expecting `iss` = `issuer`, against the JWKS at `jwks_uri`.
pub async fn validate(
    token: &str,
    rules: &Validation,
    issuer: &str,
    jwks_uri: &Url,
    http: &HttpClient,
    cache: &mut KeyCache,
) -> Result<(), FetchError> {
    if token.split('.').count() != 3 {
        return Err(ValidationError::Opaque.into());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| rejected(&format!("unreadable JWT header ({e})")))?;
    let alg = JwsAlg::ALL
        .into_iter()
        .find(|a| algorithm(*a) == header.alg && rules.algorithms.contains(a))
        .ok_or_else(|| {
            rejected(&format!(
                "the token is signed with {:?}, which is not an allowed algorithm",
                header.alg
            ))
        })?;
    // An unknown kid may be a key the issuer just rotated in: look again, once.
    let mut candidates = matching_keys(cache.keys(http, jwks_uri, false).await?, header.kid.as_deref(), alg);
    if candidates.is_empty() {
        candidates = matching_keys(cache.keys(http, jwks_uri, true).await?, header.kid.as_deref(), alg);
    }
    if candidates.is_empty() {
        let kid = header
            .kid
            .as_deref()
            .map_or("none".to_owned(), |k| format!("`{}`", k.escape_debug()));
        return Err(rejected(&format!(
            "no key in the issuer's JWKS matches the token (kid {kid}, {alg})"
        )));
    }
    let mut checks = JwtValidation::new(algorithm(alg));
    checks.algorithms = vec![algorithm(alg)];
    checks.set_issuer(&[issuer]);
    checks.set_audience(&rules.audiences);
    checks.set_required_spec_claims(&["exp", "iss", "aud"]);
    checks.validate_nbf = true;
    checks.leeway = rules.leeway.as_secs();
    let mut last = None;
    for key in candidates {
        match jsonwebtoken::decode::<Value>(token, &key, &checks) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("at least one candidate");
    Err(rejected(&explain(e.kind(), token, rules, issuer)))
}

fn rejected(reason: &str) -> FetchError {
    ValidationError::Rejected(reason.to_owned()).into()
}

/// The JWKS keys that could have signed a token with this `kid` and algorithm.
fn matching_keys(set: &JwkSet, kid: Option<&str>, alg: JwsAlg) -> Vec<DecodingKey> {
    set.keys
        .iter()
        .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|ka| format!("{ka:?}") == format!("{:?}", algorithm(alg)))
        })
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .filter(|k| k.family() == algorithm(alg).family())
        .collect()
}

/// Says which claim failed, with the values involved (claims are not secret; the token is).
fn explain(kind: &ErrorKind, token: &str, rules: &Validation, issuer: &str) -> String {
    let claims = unverified_claims(token);
    let claim = |name: &str| {
        claims
            .get(name)
            .map_or("absent".to_owned(), |v| v.to_string().chars().take(200).collect())
    };
    let time = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_f64)
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(s).ok()?))
            .map_or_else(|| claim(name), crate::token::rfc3339)
    };
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify with the issuer's key".into(),
        ErrorKind::ExpiredSignature => format!(
            "`exp` is {}: the token is expired (now {}, leeway {}s)",
            time("exp"),
            crate::token::rfc3339(SystemTime::now()),
            rules.leeway.as_secs()
        ),
        ErrorKind::ImmatureSignature => format!("`nbf` is {}: the token is not valid yet", time("nbf")),
        ErrorKind::InvalidIssuer => format!("`iss` is {}, expected \"{issuer}\"", claim("iss")),
        ErrorKind::InvalidAudience => {
            format!("`aud` is {}, expected one of {:?}", claim("aud"), rules.audiences)
        }
        ErrorKind::MissingRequiredClaim(c) => format!("the `{c}` claim is missing"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not allowed".into(),
        other => format!("{other:?}"),
    }
}

fn unverified_claims(token: &str) -> serde_json::Map<String, Value> {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}
