//! OIDC discovery (OpenID Connect Discovery 1.0 §4) and RFC 8414 authorization server metadata:
//! where an issuer publishes its metadata, and what tokend takes from the document. The document
//! must name exactly the configured issuer (§4.3), or an attacker who can serve one document
//! could redirect the client. Free of I/O: `issuer` fetches and caches the documents.

use serde_json::Value;
use url::Url;

use crate::config::url_policy::check_idp_url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery for issuer {issuer} failed: {url} answered HTTP {status}")]
    Status { issuer: String, url: String, status: u16 },
    #[error("discovery for issuer {issuer}: {url} is not a valid metadata document: {reason}")]
    Invalid {
        issuer: String,
        url: String,
        reason: String,
    },
    #[error("discovery for issuer {issuer}: {url} did not answer with a JSON document")]
    Unreadable { issuer: String, url: String },
    #[error("discovery for issuer {issuer}: the document at {url} names issuer `{found}`; refusing to use it")]
    IssuerMismatch { issuer: String, url: String, found: String },
}

/// What tokend takes from the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The issuer exactly as the document writes it: what tokens carry in `iss`, and what
    /// `assertion_audience: issuer` sends.
    pub issuer: String,
    pub token_endpoint: Url,
    pub jwks_uri: Option<Url>,
}

/// The two well-known locations for `issuer`: OIDC's (appended to the issuer's path) and RFC
/// 8414's (inserted before it). They are the same for an issuer without a path.
pub fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    for url in [&mut oidc, &mut rfc8414] {
        url.set_query(None);
    }
    [oidc, rfc8414]
}

/// Checks and reads a metadata document fetched from `url` for `issuer`.
pub fn parse(issuer: &Url, url: &Url, body: &[u8], allow_insecure_http: bool) -> Result<Metadata, DiscoveryError> {
    let invalid = |reason: &str| DiscoveryError::Invalid {
        issuer: issuer.to_string(),
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        // A maintenance page or a proxy's error: likely to pass.
        return Err(DiscoveryError::Unreadable {
            issuer: issuer.to_string(),
            url: url.to_string(),
        });
    };
    let found = doc
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("`issuer` is missing"))?;
    // Compared as URLs, so `https://idp` and `https://idp/` are the same issuer, but a different
    // host, port or path is not.
    if Url::parse(found).ok().as_ref() != Some(issuer) {
        return Err(DiscoveryError::IssuerMismatch {
            issuer: issuer.to_string(),
            url: url.to_string(),
            found: found.chars().take(200).collect(),
        });
    }
    // Discovered endpoints obey the rules a configured `token_url` does: https (plain http only
    // to loopback, or with `allow_insecure_http`), no credentials, no fragment; and an https
    // issuer never sends the client to plain http.
    let endpoint = |name: &str| -> Result<Option<Url>, DiscoveryError> {
        let Some(value) = doc.get(name) else { return Ok(None) };
        let text = value
            .as_str()
            .ok_or_else(|| invalid(&format!("`{name}` is not a string")))?;
        let parsed = check_idp_url(text, allow_insecure_http, name).map_err(|reason| invalid(&reason))?;
        if issuer.scheme() == "https" && parsed.scheme() != "https" {
            return Err(invalid(&format!("`{name}` is not https")));
        }
        Ok(Some(parsed))
    };
    let token_endpoint = endpoint("token_endpoint")?.ok_or_else(|| invalid("`token_endpoint` is missing"))?;
    let jwks_uri = endpoint("jwks_uri")?;
    Ok(Metadata {
        issuer: found.to_owned(),
        token_endpoint,
        jwks_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn well_known_locations_follow_both_specs() {
        let urls = metadata_urls(&url("https://idp.example"));
        assert_eq!(urls[0].as_str(), "https://idp.example/.well-known/openid-configuration");
        assert_eq!(
            urls[1].as_str(),
            "https://idp.example/.well-known/oauth-authorization-server"
        );
        let urls = metadata_urls(&url("https://idp.example/tenant/"));
        assert_eq!(
            urls[0].as_str(),
            "https://idp.example/tenant/.well-known/openid-configuration"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://idp.example/.well-known/oauth-authorization-server/tenant"
        );
    }

    #[test]
    fn documents_must_name_the_configured_issuer_and_https_endpoints() {
        let issuer = url("https://idp.example");
        let at = url("https://idp.example/.well-known/openid-configuration");
        let good = br#"{"issuer":"https://idp.example/","token_endpoint":"https://idp.example/token","jwks_uri":"https://idp.example/jwks"}"#;
        let m = parse(&issuer, &at, good, false).unwrap();
        assert_eq!(m.token_endpoint.as_str(), "https://idp.example/token");
        assert_eq!(m.jwks_uri.unwrap().as_str(), "https://idp.example/jwks");

        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"issuer":"https://evil.example","token_endpoint":"https://evil.example/t"}"#,
                "names issuer `https://evil.example`",
            ),
            (
                br#"{"issuer":"https://idp.example/other","token_endpoint":"https://idp.example/t"}"#,
                "names issuer",
            ),
            (br#"{"token_endpoint":"https://idp.example/t"}"#, "`issuer` is missing"),
            (br#"{"issuer":"https://idp.example"}"#, "`token_endpoint` is missing"),
            (
                br#"{"issuer":"https://idp.example","token_endpoint":"http://idp.example/t"}"#,
                "uses plain http",
            ),
            (
                br#"{"issuer":"https://idp.example","token_endpoint":7}"#,
                "`token_endpoint` is not a string",
            ),
            (
                br#"{"issuer":"https://idp.example","token_endpoint":"https://u:p@idp.example/t"}"#,
                "must not contain credentials",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(&issuer, &at, body, false).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(!matches!(err, DiscoveryError::Unreadable { .. }), "{err}");
        }
        let page = parse(&issuer, &at, b"<html>down for maintenance</html>", false).unwrap_err();
        assert!(matches!(page, DiscoveryError::Unreadable { .. }));
        // A loopback http issuer may not send the secret to a remote plain-http endpoint…
        let local = url("http://127.0.0.1:8080");
        let remote = br#"{"issuer":"http://127.0.0.1:8080","token_endpoint":"http://10.0.0.5/token"}"#;
        assert!(
            parse(&local, &at, remote, false)
                .unwrap_err()
                .to_string()
                .contains("plain http")
        );
        // …unless the client explicitly allows insecure http; an https issuer never downgrades.
        assert!(parse(&local, &at, remote, true).is_ok());
        let downgrade = br#"{"issuer":"https://idp.example","token_endpoint":"http://idp.example/t"}"#;
        assert!(
            parse(&issuer, &at, downgrade, true)
                .unwrap_err()
                .to_string()
                .contains("`token_endpoint` is not https")
        );
    }
}
