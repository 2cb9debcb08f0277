//! The scope a token was granted (RFC 6749 §3.3, §5.1): the response's `scope`, else the JWT's
//! `scope` (or `scp`) claim, else what was asked for — §5.1 lets the server leave `scope` out
//! when it granted exactly that. Pure: what was dropped is warned about by the refresh loop;
//! what `require_scope` names must be there, or the token is refused.

use serde_json::Value;

use super::jwt;
use crate::config::is_scope_char;

/// The granted scope, space-separated: `response` (the response's `scope`), else the claim of
/// the JWT `access_token` (unverified: it only informs), else `asked`.
pub fn granted(response: Option<String>, access_token: &str, asked: Option<&str>) -> Option<String> {
    response
        .or_else(|| from_claims(access_token))
        .or_else(|| asked.map(str::to_owned))
}

/// `scope` as a string (RFC 9068 §2.2.3, Auth0, Glewlwyd) or `scp` as a list (Azure AD, Okta).
fn from_claims(access_token: &str) -> Option<String> {
    let claims = jwt::claims(access_token)?;
    let words: Vec<&str> = match claims.get("scope").or_else(|| claims.get("scp"))? {
        Value::String(s) => s.split_whitespace().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    // It reaches logs and status: only scope characters (RFC 6749 §3.3), and not too many.
    let clean: Vec<&str> = words
        .into_iter()
        .filter(|w| w.bytes().all(is_scope_char))
        .take(256)
        .collect();
    Some(clean.join(" "))
}

/// The scopes in `wanted` (space-separated) that `granted` lacks, in `wanted`'s order.
pub fn missing<'a>(wanted: impl IntoIterator<Item = &'a str>, granted: Option<&str>) -> Vec<&'a str> {
    let granted: Vec<&str> = granted.map(|g| g.split_whitespace().collect()).unwrap_or_default();
    wanted.into_iter().filter(|w| !granted.contains(w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jwt::tests::jwt;

    #[test]
    fn the_granted_scope_comes_from_the_response_then_the_token_then_the_request() {
        let narrowed = jwt(r#"{"scope":"api.read"}"#);
        let cases = [
            (Some("a"), narrowed.as_str(), Some("a b"), Some("a")),
            (None, narrowed.as_str(), Some("api.read api.admin"), Some("api.read")),
            (None, &jwt(r#"{"scp":["x","y"]}"#), Some("x y z"), Some("x y")),
            (None, &jwt(r#"{"scope":"ok bad\u0007 also\"quote"}"#), None, Some("ok")),
            (None, "opaque-token", Some("a b"), Some("a b")),
            (None, &jwt(r#"{"sub":"no scope"}"#), Some("a"), Some("a")),
            (None, "opaque-token", None, None),
        ];
        for (response, token, asked, expected) in cases {
            assert_eq!(
                granted(response.map(str::to_owned), token, asked).as_deref(),
                expected,
                "{response:?} {token} {asked:?}"
            );
        }
    }

    #[test]
    fn missing_scopes_keep_the_order_asked_in() {
        assert_eq!(missing("c a b".split(' '), Some("b")), ["c", "a"]);
        assert!(missing("a b".split(' '), Some("b a x")).is_empty());
        assert_eq!(missing(["a"], None), ["a"]);
    }
}
