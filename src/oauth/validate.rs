//! Checking a token before it is published (`validate:`): the JWT's signature against the
//! issuer's JWKS, its `iss`, its `aud` (the audience asked for), `exp` and `nbf` with a small
//! leeway, and its algorithm against an allow-list that never contains `none` or HMAC. The
//! verification itself is jsonwebtoken's (on aws-lc-rs); this module picks the key and turns
//! failures into messages that name the claim. Free of I/O: `issuer` fetches the keys.

use std::time::SystemTime;

use jsonwebtoken::jwk::{JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation as JwtValidation, errors::ErrorKind};
use serde_json::Value;

use crate::config::{JwsAlg, Validation};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "the token is not a JWT, so it cannot be validated (an IdP such as Auth0 returns an opaque token when no `audience` is asked for; check the client's `audience`)"
    )]
    Opaque,
    #[error("token validation failed: {0}")]
    Rejected(String),
    #[error("token validation failed: {0}")]
    UnknownKey(String),
    #[error("cannot get the issuer's keys from {url}: {reason}")]
    Jwks { url: String, reason: String },
    #[error("token validation failed: the issuer that tokens must name is unknown; set `validate.issuer`")]
    NoIssuer,
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

/// Checks `token` against the keys in `keys`: no I/O.
pub fn verify(token: &str, rules: &Validation, issuer: &str, keys: &JwkSet) -> Result<(), ValidationError> {
    let reject = |reason: String| ValidationError::Rejected(reason);
    if token.split('.').count() != 3 {
        return Err(ValidationError::Opaque);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| reject(format!("unreadable JWT header ({e})")))?;
    let alg = JwsAlg::ALL
        .into_iter()
        .find(|a| algorithm(*a) == header.alg && rules.algorithms.contains(a))
        .ok_or_else(|| {
            reject(format!(
                "the token is signed with {:?}, which is not an allowed algorithm",
                header.alg
            ))
        })?;
    // jsonwebtoken also accepts an `iss` array that contains the issuer; RFC 7519 §4.1.1 makes it
    // one string, and so does tokend.
    if let Some(iss) = unverified_claims(token).get("iss")
        && iss.as_str() != Some(issuer)
    {
        return Err(reject(format!(
            "`iss` is {}, expected \"{issuer}\"",
            iss.to_string().chars().take(200).collect::<String>()
        )));
    }
    let mut checks = JwtValidation::new(algorithm(alg));
    checks.algorithms = vec![algorithm(alg)];
    checks.set_issuer(&[issuer]);
    checks.set_audience(&rules.audiences);
    checks.set_required_spec_claims(&["exp", "iss", "aud"]);
    checks.validate_nbf = true;
    checks.leeway = rules.leeway.as_secs();
    // The first key that verifies wins; otherwise the last one's reason is reported.
    let mut last = None;
    for key in matching_keys(keys, header.kid.as_deref(), alg) {
        match jsonwebtoken::decode::<Value>(token, &key, &checks) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(reject(explain(e.kind(), token, rules, issuer))),
        None => {
            let kid = header
                .kid
                .as_deref()
                .map_or("none".to_owned(), |k| format!("`{}`", k.escape_debug()));
            Err(ValidationError::UnknownKey(format!(
                "no key in the issuer's JWKS matches the token (kid {kid}, {alg})"
            )))
        }
    }
}

/// The JWKS keys that could have signed a token with this `kid` and algorithm.
fn matching_keys(set: &JwkSet, kid: Option<&str>, alg: JwsAlg) -> Vec<DecodingKey> {
    set.keys
        .iter()
        .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        // A key published for encryption (`use: enc`, or `key_ops` without `verify`) never
        // verifies a signature (RFC 7517 §4.2, §4.3).
        .filter(|k| {
            k.common
                .public_key_use
                .as_ref()
                .is_none_or(|u| matches!(u, PublicKeyUse::Signature))
        })
        .filter(|k| {
            k.common
                .key_operations
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| matches!(o, KeyOperations::Verify)))
        })
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
    let time = |name: &str| super::jwt::time_claim(&claims, name).map_or_else(|| claim(name), crate::token::rfc3339);
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify with the issuer's key".into(),
        ErrorKind::ExpiredSignature => format!(
            "`exp` is {}: the token is expired (now {}, leeway {}s)",
            time("exp"),
            crate::token::rfc3339(SystemTime::now()),
            rules.leeway.as_secs()
        ),
        ErrorKind::ImmatureSignature => format!(
            "`nbf` is {}: the token is not valid yet (now {}, leeway {}s; is the IdP's clock ahead of this host's?)",
            time("nbf"),
            crate::token::rfc3339(SystemTime::now()),
            rules.leeway.as_secs()
        ),
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
    super::jwt::claims(token).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;
    use std::time::Duration;

    const ISS: &str = "https://idp.example";
    const AUD: &str = "https://api.example/";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn rules() -> Validation {
        Validation {
            issuer: None,
            jwks_uri: None,
            audiences: vec![AUD.into()],
            algorithms: JwsAlg::ALL.to_vec(),
            leeway: Duration::from_secs(60),
        }
    }

    fn jwk_set(key: &Ed25519KeyPair, kid: &str) -> JwkSet {
        serde_json::from_value(json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
        }]}))
        .unwrap()
    }

    fn jwt(key: &Ed25519KeyPair, header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).as_ref())
        )
    }

    fn good_claims() -> serde_json::Value {
        json!({ "iss": ISS, "aud": AUD, "exp": now() + 600, "iat": now(), "nbf": now() - 5, "sub": "c" })
    }

    fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value;
        }
        claims
    }

    #[test]
    fn a_good_token_passes_and_every_bad_one_names_its_fault() {
        let key = Ed25519KeyPair::generate().unwrap();
        let other = Ed25519KeyPair::generate().unwrap();
        let keys = jwk_set(&key, "k1");
        let header = json!({ "alg": "EdDSA", "kid": "k1", "typ": "at+jwt" });
        let good = jwt(&key, header.clone(), good_claims());
        assert_eq!(verify(&good, &rules(), ISS, &keys), Ok(()));
        // An audience list that contains the expected one is fine.
        let listed = jwt(&key, header.clone(), with(good_claims(), "aud", json!(["x", AUD])));
        assert_eq!(verify(&listed, &rules(), ISS, &keys), Ok(()));

        let hmac_with_public_key = {
            use aws_lc_rs::hmac;
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(json!({ "alg": "HS256", "kid": "k1" }).to_string()),
                URL_SAFE_NO_PAD.encode(good_claims().to_string())
            );
            let secret = hmac::Key::new(hmac::HMAC_SHA256, key.public_key().as_ref());
            format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(hmac::sign(&secret, input.as_bytes()).as_ref())
            )
        };
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({ "alg": "none" }).to_string()),
            URL_SAFE_NO_PAD.encode(good_claims().to_string())
        );
        let cases: Vec<(String, &str)> = vec![
            (
                jwt(&key, header.clone(), with(good_claims(), "exp", json!(now() - 120))),
                "the token is expired",
            ),
            (
                jwt(&key, header.clone(), with(good_claims(), "nbf", json!(now() + 600))),
                "not valid yet",
            ),
            (
                jwt(
                    &key,
                    header.clone(),
                    with(good_claims(), "iss", json!("https://evil.example")),
                ),
                "`iss` is \"https://evil.example\", expected",
            ),
            (
                jwt(
                    &key,
                    header.clone(),
                    with(good_claims(), "aud", json!("https://other.example/")),
                ),
                "`aud` is \"https://other.example/\", expected one of",
            ),
            (
                jwt(&key, header.clone(), with(good_claims(), "exp", json!(null))),
                "the `exp` claim is missing",
            ),
            (
                jwt(&other, header.clone(), good_claims()),
                "the signature does not verify",
            ),
            (
                jwt(&other, json!({ "alg": "EdDSA", "kid": "k2" }), good_claims()),
                "no key in the issuer's JWKS matches the token (kid `k2`",
            ),
            (hmac_with_public_key, "HS256, which is not an allowed algorithm"),
            (unsigned, "unreadable JWT header"),
        ];
        for (token, expected) in cases {
            let err = verify(&token, &rules(), ISS, &keys).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(
                !err.contains(&token[token.len() - 20..]),
                "the message quotes the token: {err}"
            );
        }
        // A key the JWKS marks for encryption never verifies a signature.
        for marking in [json!({ "use": "enc" }), json!({ "key_ops": ["encrypt"] })] {
            let mut set = serde_json::to_value(jwk_set(&key, "k1")).unwrap();
            for (k, v) in marking.as_object().unwrap() {
                set["keys"][0][k] = v.clone();
            }
            let set: JwkSet = serde_json::from_value(set).unwrap();
            let err = verify(&good, &rules(), ISS, &set).unwrap_err().to_string();
            assert!(err.contains("no key in the issuer's JWKS matches"), "{marking}: {err}");
        }
        // `iss` is one string; an array that contains the issuer is not accepted.
        let listed_iss = jwt(
            &key,
            header.clone(),
            with(good_claims(), "iss", json!([ISS, "https://evil.example"])),
        );
        assert!(
            verify(&listed_iss, &rules(), ISS, &keys)
                .unwrap_err()
                .to_string()
                .contains("`iss` is [")
        );
        // Within the leeway, a just-expired token still passes; an allow-list without EdDSA does not.
        let just_expired = jwt(&key, header.clone(), with(good_claims(), "exp", json!(now() - 30)));
        assert_eq!(verify(&just_expired, &rules(), ISS, &keys), Ok(()));
        let rs_only = Validation {
            algorithms: vec![JwsAlg::Rs256],
            ..rules()
        };
        assert!(
            verify(&good, &rs_only, ISS, &keys)
                .unwrap_err()
                .to_string()
                .contains("not an allowed algorithm")
        );
        assert_eq!(
            verify("opaque-token-value", &rules(), ISS, &keys),
            Err(ValidationError::Opaque)
        );
    }
}
