//! Why a token could not be obtained (`FetchError`), and how each failure is retried
//! (`ErrorClass`). The whole retry classification lives here, in one table per error kind, so
//! the rule "a bad credential is never retried at full speed" is read and tested in one place.

use std::time::Duration;

use super::assertion::AssertionError;
use super::discovery::DiscoveryError;
use super::response::ResponseError;
use super::validate::ValidationError;
use crate::config::{AuthMethod, BasicEncoding};
use crate::secret::SecretError;

/// Why a token could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Assertion(#[from] AssertionError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// The token endpoint refused the request: its answer, and how the client authenticated
    /// (for the advice).
    #[error("{answer}")]
    Refused { answer: ResponseError, auth: AuthUsed },
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("cannot use the TLS settings: {0}")]
    Tls(String),
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    /// The server's certificate failed verification: a private CA not named in `ca_file`, a
    /// name the certificate does not cover, an expired certificate.
    #[error("{url}: the server's TLS certificate is not trusted: {reason}")]
    Certificate { url: String, reason: String },
    #[error("{url} did not answer within {timeout}")]
    Timeout { url: String, timeout: String },
    /// The status line and headers came in time, the whole body did not: a stalled upstream or
    /// a proxy buffering it, rather than a server that does not answer at all.
    #[error("{url} sent only part of its answer within {timeout} (HTTP {status}, {received} bytes of the body)")]
    SlowBody {
        url: String,
        timeout: String,
        status: u16,
        received: usize,
    },
    #[error("the response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// The IdP granted less than `require_scope` names.
    #[error("the IdP granted the scope `{granted}`, without `{missing}` that `require_scope` requires")]
    ScopeMissing { granted: String, missing: String },
    /// Fleet mode: no token to be had from the fleet (a follower that finds nothing newer in
    /// the store, or cannot reach it).
    #[error("{0}")]
    Fleet(String),
}

/// How a refused request authenticated: what the advice on a refusal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUsed {
    pub method: AuthMethod,
    /// `client_secret_basic` only: the encoding, and whether form-encoding changes the id or
    /// the secret (then an IdP that does not decode them sees other ones).
    pub basic: Option<(BasicEncoding, bool)>,
}

/// How a failure should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// May go away by itself (network, 5xx, garbage): exponential backoff.
    Transient,
    /// The server asked us to slow down (429, 503): backoff, and never sooner than `Retry-After`.
    RateLimited,
    /// Bad credentials or request (`invalid_client`, `unauthorized_client`, `invalid_grant`, other
    /// 4xx), or a token that fails validation: retrying soon cannot help and burns IdP quota, so
    /// back off straight to the maximum.
    Permanent,
}

impl FetchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Response(e) | FetchError::Refused { answer: e, .. } => response_class(e),
            FetchError::Validation(e) => match e {
                ValidationError::Jwks { .. } => ErrorClass::Transient,
                // A token that fails validation comes from a misconfiguration (or an attack);
                // asking again at once would not help.
                ValidationError::Opaque
                | ValidationError::Rejected(_)
                | ValidationError::UnknownKey(_)
                | ValidationError::NoIssuer => ErrorClass::Permanent,
            },
            FetchError::Discovery(e) => match e {
                DiscoveryError::Status { status, .. } if *status >= 500 || *status == 429 => ErrorClass::Transient,
                // A maintenance page or a proxy's error page: likely to pass.
                DiscoveryError::Unreadable { .. } => ErrorClass::Transient,
                // A wrong or hostile document will not fix itself in a second.
                DiscoveryError::Status { .. }
                | DiscoveryError::Invalid { .. }
                | DiscoveryError::IssuerMismatch { .. } => ErrorClass::Permanent,
            },
            // A key that cannot be parsed or cannot make the configured signature stays that way
            // until someone changes the file or the config; an unreadable file may be a moment
            // away from being written.
            FetchError::Assertion(AssertionError::Unreadable { .. }) => ErrorClass::Transient,
            FetchError::Assertion(AssertionError::Unusable { .. } | AssertionError::WrongAlgorithm { .. }) => {
                ErrorClass::Permanent
            }
            // Retrying does not make a certificate trusted, nor widen a grant: someone must
            // change a setting.
            FetchError::Certificate { .. } | FetchError::ScopeMissing { .. } => ErrorClass::Permanent,
            FetchError::Secret(_)
            | FetchError::Tls(_)
            | FetchError::Transport { .. }
            | FetchError::Timeout { .. }
            | FetchError::SlowBody { .. }
            | FetchError::TooLarge { .. }
            | FetchError::Fleet(_) => ErrorClass::Transient,
        }
    }

    /// What went wrong, in a few words, for the start of a log line.
    pub fn summary(&self) -> &'static str {
        match self {
            FetchError::Validation(ValidationError::Jwks { .. }) => "cannot get the keys to validate the token",
            FetchError::Validation(_) => "the token failed validation",
            FetchError::Discovery(_) => "issuer discovery failed",
            FetchError::Certificate { .. } => "the IdP's TLS certificate is not trusted",
            FetchError::Assertion(_) => "cannot sign the client assertion",
            FetchError::Secret(_) => "cannot read the client's credentials",
            FetchError::Fleet(_) => "no token from the fleet",
            FetchError::ScopeMissing { .. } => "the token lacks a required scope",
            _ => match self.class() {
                ErrorClass::Permanent => "token request rejected",
                ErrorClass::RateLimited => "token endpoint asked to slow down",
                ErrorClass::Transient => "token request failed",
            },
        }
    }

    /// What to check for a failure that retrying will not fix, naming the settings involved.
    pub fn advice(&self) -> Option<String> {
        if self.class() != ErrorClass::Permanent {
            return None;
        }
        Some(match self {
            FetchError::Response(answer) => refusal_advice(answer, None),
            FetchError::Refused { answer, auth } => refusal_advice(answer, Some(auth)),
            other => other.setting_advice().to_owned(),
        })
    }

    fn setting_advice(&self) -> &'static str {
        match self {
            FetchError::Validation(ValidationError::Opaque) => "check the client's `audience`",
            FetchError::Validation(_) => "check `validate` and the client's `issuer` and `audience`",
            FetchError::Discovery(_) => "check the client's `issuer`",
            FetchError::Certificate { .. } => {
                "if the IdP's certificate comes from a private CA, name that CA in `ca_file`"
            }
            FetchError::Assertion(_) => "check `private_key` and `signing_alg`",
            FetchError::ScopeMissing { .. } => {
                "have the IdP grant the client those scopes, or take them out of `require_scope`"
            }
            _ => "check the client's settings",
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Response(e) | FetchError::Refused { answer: e, .. } => e.retry_after(),
            _ => None,
        }
    }
}

/// What to check when the token endpoint refuses: the credentials and the `auth` method for a
/// 401 or 403 (an IdP such as Glewlwyd answers every refusal with a bare 403), the URL for a
/// 404 or 405, the setting an RFC 6749 §5.2 error code names otherwise.
fn refusal_advice(answer: &ResponseError, auth: Option<&AuthUsed>) -> String {
    let url = "check `token_url` (or `issuer`): nothing there takes token requests";
    match answer {
        ResponseError::OAuth { status, error, .. } => match error.as_str() {
            "invalid_client" | "unauthorized_client" => credentials_advice(auth),
            // Glewlwyd says `scope_invalid`.
            "invalid_scope" | "scope_invalid" => "check the client's `scope` and what the IdP lets it have".to_owned(),
            "invalid_target" => "check the client's `audience` and `resource`".to_owned(),
            "access_denied" => "check that the IdP grants this client the `audience` and `scope` asked for".to_owned(),
            "unsupported_grant_type" => "enable the client-credentials grant for this client at the IdP".to_owned(),
            "invalid_grant" => "check the client's credentials and grant settings at the IdP".to_owned(),
            _ if matches!(status, 401 | 403) => credentials_advice(auth),
            _ if matches!(status, 404 | 405) => url.to_owned(),
            _ => "check the client's settings".to_owned(),
        },
        ResponseError::Status { status: 401 | 403, .. } => format!(
            "{}; then that the IdP grants it the `scope` and `audience` asked for",
            credentials_advice(auth)
        ),
        ResponseError::Status { status: 404 | 405, .. } => url.to_owned(),
        ResponseError::Status { .. } => "check `token_url` (or `issuer`) and the client's settings".to_owned(),
        ResponseError::Invalid(_) => "check `token_url` (or `issuer`)".to_owned(),
    }
}

/// The client's id, what proves it, and the method it was sent by.
fn credentials_advice(auth: Option<&AuthUsed>) -> String {
    let Some(auth) = auth else {
        return "check the client's `client_id` and its credentials".to_owned();
    };
    let proof = match auth.method {
        AuthMethod::ClientSecretPost | AuthMethod::ClientSecretBasic => "its `client_secret`",
        AuthMethod::PrivateKeyJwt => "its `private_key` and `key_id` (is the public key registered at the IdP?)",
        AuthMethod::TlsClientAuth => "its `client_certificate` (is it registered at the IdP?)",
    };
    let mut advice = format!(
        "check the client's `client_id`, {proof}, and that the IdP lets it authenticate with `{}` (`auth`)",
        auth.method.as_str()
    );
    match auth.basic {
        Some((BasicEncoding::Form, true)) => advice.push_str(
            "; its id or secret has characters that `client_secret_basic` form-encodes before Base64 \
             (RFC 6749 §2.3.1), which some IdPs do not decode: try `basic_encoding: raw` (or \
             `auth: client_secret_post`)",
        ),
        Some((BasicEncoding::Raw, true)) => advice.push_str(
            "; `basic_encoding: raw` sends its id and secret unencoded: if the IdP decodes them as \
             RFC 6749 §2.3.1 says, remove it",
        ),
        _ => {}
    }
    advice
}

/// RFC 6749 §5.2 error codes and HTTP statuses, by what retrying can achieve.
fn response_class(e: &ResponseError) -> ErrorClass {
    match e {
        ResponseError::OAuth { status, error, .. } => match (*status, error.as_str()) {
            (429 | 503, _) | (_, "slow_down" | "temporarily_unavailable") => ErrorClass::RateLimited,
            (_, "server_error") => ErrorClass::Transient,
            (s, _) if s >= 500 || s == 408 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
        ResponseError::Status { status, .. } => match *status {
            429 | 503 => ErrorClass::RateLimited,
            s if s >= 500 || s == 408 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
        ResponseError::Invalid(_) => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::{discovery, response};

    fn class(e: impl Into<FetchError>) -> ErrorClass {
        e.into().class()
    }

    #[test]
    fn token_endpoint_answers_are_classified_by_status_and_error_code() {
        let cases = [
            (
                401,
                r#"{"error":"invalid_client","error_description":"Unauthorized"}"#,
                ErrorClass::Permanent,
            ),
            (400, r#"{"error":"unauthorized_client"}"#, ErrorClass::Permanent),
            (400, r#"{"error":"invalid_grant"}"#, ErrorClass::Permanent),
            (403, r#"{"error":"access_denied"}"#, ErrorClass::Permanent),
            (429, r#"{"error":"too_many_requests"}"#, ErrorClass::RateLimited),
            (400, r#"{"error":"slow_down"}"#, ErrorClass::RateLimited),
            (500, r#"{"error":"server_error"}"#, ErrorClass::Transient),
            (502, "<html>bad gateway</html>", ErrorClass::Transient),
            (503, "", ErrorClass::RateLimited),
            (408, "", ErrorClass::Transient),
            (404, "not found", ErrorClass::Permanent),
            (200, r#"{"error":"invalid_client"}"#, ErrorClass::Permanent),
            // A 2xx that is not a usable token response: garbage that may pass.
            (200, "not json", ErrorClass::Transient),
            (200, r#"{"access_token":"x","expires_in":0}"#, ErrorClass::Transient),
        ];
        for (status, body, expected) in cases {
            let e = response::parse(status, Some("application/json"), None, body.as_bytes()).unwrap_err();
            assert_eq!(class(e), expected, "{status} {body}");
        }
    }

    #[test]
    fn discovery_documents_that_are_wrong_are_not_retried_at_full_speed() {
        let issuer = url::Url::parse("https://idp.example").unwrap();
        let at = url::Url::parse("https://idp.example/.well-known/openid-configuration").unwrap();
        let wrong = discovery::parse(
            &issuer,
            &at,
            br#"{"issuer":"https://evil.example","token_endpoint":"https://e/t"}"#,
            false,
        );
        assert_eq!(class(wrong.unwrap_err()), ErrorClass::Permanent);
        let page = discovery::parse(&issuer, &at, b"<html>down for maintenance</html>", false);
        assert_eq!(class(page.unwrap_err()), ErrorClass::Transient);
        let status = |status| DiscoveryError::Status {
            issuer: issuer.to_string(),
            url: at.to_string(),
            status,
        };
        assert_eq!(class(status(503)), ErrorClass::Transient);
        assert_eq!(class(status(429)), ErrorClass::Transient);
        assert_eq!(class(status(404)), ErrorClass::Permanent);
    }

    #[test]
    fn each_permanent_failure_names_what_to_check() {
        let oauth = |status, error: &str| {
            FetchError::Response(ResponseError::OAuth {
                status,
                error: error.into(),
                description: None,
                retry_after: None,
            })
        };
        let certificate = FetchError::Certificate {
            url: "https://idp".into(),
            reason: "UnknownIssuer".into(),
        };
        assert_eq!(
            certificate.class(),
            ErrorClass::Permanent,
            "retrying cannot make it trusted"
        );
        for (e, summary, advice) in [
            (
                oauth(401, "invalid_client"),
                "token request rejected",
                "`client_id` and its credentials",
            ),
            (oauth(400, "invalid_scope"), "token request rejected", "`scope`"),
            (
                oauth(403, "access_denied"),
                "token request rejected",
                "grants this client the `audience`",
            ),
            (
                ValidationError::Rejected("aud".into()).into(),
                "the token failed validation",
                "check `validate` and the client's `issuer` and `audience`",
            ),
            (certificate, "the IdP's TLS certificate is not trusted", "`ca_file`"),
        ] {
            assert_eq!(e.summary(), summary);
            let a = e.advice().unwrap();
            assert!(a.contains(advice), "{a}");
            assert!(summary != "the token failed validation" || !a.contains("credentials"));
        }
        let transient = FetchError::Transport {
            url: "https://idp".into(),
            reason: "refused".into(),
        };
        assert_eq!(
            (transient.summary(), transient.advice()),
            ("token request failed", None)
        );
        let stalled = FetchError::SlowBody {
            url: "https://idp/token".into(),
            timeout: "1s".into(),
            status: 200,
            received: 300,
        };
        assert_eq!(stalled.class(), ErrorClass::Transient);
        assert_eq!(
            stalled.to_string(),
            "https://idp/token sent only part of its answer within 1s (HTTP 200, 300 bytes of the body)"
        );
    }

    #[test]
    fn keys_and_validation() {
        let jwks = ValidationError::Jwks {
            url: "https://idp/jwks".into(),
            reason: "HTTP 500".into(),
        };
        assert_eq!(class(jwks), ErrorClass::Transient);
        assert_eq!(class(ValidationError::Opaque), ErrorClass::Permanent);
        assert_eq!(class(ValidationError::Rejected("aud".into())), ErrorClass::Permanent);
        let unreadable = AssertionError::Unreadable(SecretError::Unreadable {
            what: "private key",
            source_desc: "file /k".into(),
            reason: "gone".into(),
        });
        assert_eq!(class(unreadable), ErrorClass::Transient);
        let unusable = AssertionError::Unusable {
            from: "file /k".into(),
            reason: "not PEM".into(),
        };
        assert_eq!(class(unusable), ErrorClass::Permanent);
    }
}
