//! Why a token could not be obtained (`FetchError`), and how each failure is retried
//! (`ErrorClass`). The whole retry classification lives here, in one table per error kind, so
//! the rule "a bad credential is never retried at full speed" is read and tested in one place.

use std::time::Duration;

use super::assertion::AssertionError;
use super::discovery::DiscoveryError;
use super::response::ResponseError;
use super::validate::ValidationError;
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
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("cannot use the TLS settings: {0}")]
    Tls(String),
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} did not answer within {timeout}")]
    Timeout { url: String, timeout: String },
    #[error("the response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
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
            FetchError::Response(e) => response_class(e),
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
            FetchError::Secret(_)
            | FetchError::Tls(_)
            | FetchError::Transport { .. }
            | FetchError::Timeout { .. }
            | FetchError::TooLarge { .. } => ErrorClass::Transient,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Response(e) => e.retry_after(),
            _ => None,
        }
    }
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
    fn keys_and_validation() {
        let jwks = ValidationError::Jwks {
            url: "https://idp/jwks".into(),
            reason: "HTTP 500".into(),
        };
        assert_eq!(class(jwks), ErrorClass::Transient);
        assert_eq!(class(ValidationError::Opaque), ErrorClass::Permanent);
        assert_eq!(class(ValidationError::Rejected("aud".into())), ErrorClass::Permanent);
        let unreadable = AssertionError::Unreadable {
            path: "/k".into(),
            reason: "gone".into(),
        };
        assert_eq!(class(unreadable), ErrorClass::Transient);
        let unusable = AssertionError::Unusable {
            path: "/k".into(),
            reason: "not PEM".into(),
        };
        assert_eq!(class(unusable), ErrorClass::Permanent);
    }
}
