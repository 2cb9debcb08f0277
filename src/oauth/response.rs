//! Reading the token endpoint's answer: a §5.1 success, a §5.2 error, or something else, and how
//! each failure should be retried. Messages never contain the response body, which could hold a
//! token; only the §5.2 `error` code and a sanitized `error_description` are reported.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde_json::Value;

/// A successful response (RFC 6749 §5.1).
pub struct IssuedToken {
    pub access_token: SecretString,
    /// As sent, except that `bearer` in any case is normalized to `Bearer` (the type is
    /// case-insensitive, RFC 6749 §5.1, and `Authorization` headers are written with it).
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why a response could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResponseError {
    /// A §5.2 error response.
    #[error("the token endpoint answered HTTP {status} `{error}`{}", describe(description))]
    OAuth {
        status: u16,
        error: String,
        description: Option<String>,
        retry_after: Option<Duration>,
    },
    /// A non-2xx response without a §5.2 body.
    #[error("the token endpoint answered HTTP {status} ({detail})")]
    Status {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx response that is not a usable §5.1 token response.
    #[error("the token endpoint sent an invalid token response: {0}")]
    Invalid(String),
}

fn describe(description: &Option<String>) -> String {
    description.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

impl ResponseError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ResponseError::OAuth { retry_after, .. } | ResponseError::Status { retry_after, .. } => *retry_after,
            ResponseError::Invalid(_) => None,
        }
    }
}

/// Interprets a complete response.
pub fn parse(
    status: u16,
    content_type: Option<&str>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<IssuedToken, ResponseError> {
    let json: Option<serde_json::Map<String, Value>> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    if !(200..300).contains(&status) {
        return Err(error_response(status, content_type, retry_after, body.len(), json));
    }
    let Some(json) = json else {
        return Err(ResponseError::Invalid(format!(
            "the body is not a JSON object ({})",
            body_summary(content_type, body.len())
        )));
    };
    if json.get("access_token").is_none() && json.get("error").is_some_and(Value::is_string) {
        // Some servers answer 200 with a §5.2 error body.
        return Err(error_response(400, content_type, retry_after, body.len(), Some(json)));
    }
    success(&json)
}

fn success(json: &serde_json::Map<String, Value>) -> Result<IssuedToken, ResponseError> {
    let access_token = match json.get("access_token") {
        Some(Value::String(t)) if t.is_empty() => {
            return Err(ResponseError::Invalid("`access_token` is empty".into()));
        }
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(ResponseError::Invalid("`access_token` is not a string".into()));
        }
        None => return Err(ResponseError::Invalid("`access_token` is missing".into())),
    };
    // RFC 6749 A.12 allows printable ASCII; a space, control character or non-ASCII byte would
    // corrupt the header, env and raw formats, so such a token is refused (RFC 6750 b64token
    // never contains one).
    if !access_token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ResponseError::Invalid(
            "`access_token` contains whitespace, control or non-ASCII characters".into(),
        ));
    }
    let token_type = match json.get("token_type") {
        None => "Bearer".to_owned(),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_owned(),
        Some(Value::String(t))
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            t.clone()
        }
        Some(_) => {
            return Err(ResponseError::Invalid("`token_type` is not a valid token type".into()));
        }
    };
    let expires_in = match json.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_expires_in(v)?),
    };
    let scope = match json.get("scope") {
        Some(Value::String(s)) => Some(sanitize(s, 1024)),
        _ => None,
    };
    Ok(IssuedToken {
        access_token: SecretString::from(access_token.as_str()),
        token_type,
        expires_in,
        scope,
    })
}

/// `expires_in` is a number of seconds; a few servers send it as a string or with a fraction.
fn parse_expires_in(v: &Value) -> Result<Duration, ResponseError> {
    let seconds = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(s) if (1.0..10.0 * 365.0 * 86400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) if s.is_finite() && s < 1.0 => Err(ResponseError::Invalid(format!(
            "`expires_in` is {s}: the token is already expired"
        ))),
        _ => Err(ResponseError::Invalid(
            "`expires_in` is not a valid number of seconds".into(),
        )),
    }
}

fn error_response(
    status: u16,
    content_type: Option<&str>,
    retry_after: Option<Duration>,
    body_len: usize,
    json: Option<serde_json::Map<String, Value>>,
) -> ResponseError {
    if let Some(Value::String(code)) = json.as_ref().and_then(|j| j.get("error")) {
        let description = match json.as_ref().and_then(|j| j.get("error_description")) {
            Some(Value::String(d)) if !d.is_empty() => Some(sanitize(d, 300)),
            _ => None,
        };
        return ResponseError::OAuth {
            status,
            error: sanitize(code, 64),
            description,
            retry_after,
        };
    }
    ResponseError::Status {
        status,
        detail: body_summary(content_type, body_len),
        retry_after,
    }
}

/// Describes a body without showing it.
fn body_summary(content_type: Option<&str>, len: usize) -> String {
    let ct = content_type.map(|c| sanitize(c.split(';').next().unwrap_or(c).trim(), 64));
    match ct {
        Some(ct) if !ct.is_empty() => format!("{ct}, {len} bytes"),
        _ => format!("{len} bytes"),
    }
}

/// RFC 6749 §5.2 restricts `error` and `error_description` to printable ASCII; anything else is
/// dropped so a hostile server cannot inject lines or escape sequences into our logs.
fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| (' '..='~').contains(c)).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Reads `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn ok(body: &str) -> IssuedToken {
        parse(200, Some("application/json"), None, body.as_bytes()).unwrap()
    }

    fn err(status: u16, body: &str) -> ResponseError {
        parse(status, Some("application/json"), None, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn success_responses_are_read_per_section_5_1() {
        let t = ok(r#"{"access_token":"abc.def","token_type":"bearer","expires_in":3600,"scope":"a b"}"#);
        assert_eq!(t.access_token.expose_secret(), "abc.def");
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(t.scope.as_deref(), Some("a b"));

        let t = ok(r#"{"access_token":"x","token_type":"DPoP","expires_in":"86400"}"#);
        assert_eq!(t.token_type, "DPoP");
        assert_eq!(t.expires_in, Some(Duration::from_secs(86400)));

        let t = ok(r#"{"access_token":"x"}"#);
        assert_eq!((t.token_type.as_str(), t.expires_in), ("Bearer", None));
    }

    #[test]
    fn unusable_success_responses_are_invalid() {
        for body in [
            "not json",
            "[1,2]",
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":42}"#,
            r#"{"access_token":"a b"}"#,
            "{\"access_token\":\"a\\nb\"}",
            r#"{"access_token":"x","expires_in":0}"#,
            r#"{"access_token":"x","expires_in":-5}"#,
            r#"{"access_token":"x","expires_in":"soon"}"#,
            r#"{"access_token":"x","token_type":"Bearer\r\nX-Evil: 1"}"#,
        ] {
            let e = err(200, body);
            assert!(matches!(e, ResponseError::Invalid(_)), "{body}: {e:?}");
        }
    }

    #[test]
    fn error_responses_are_read_per_section_5_2() {
        let e = err(401, r#"{"error":"invalid_client","error_description":"Unauthorized"}"#);
        assert_eq!(
            e.to_string(),
            "the token endpoint answered HTTP 401 `invalid_client`: Unauthorized"
        );
        assert!(matches!(
            err(200, r#"{"error":"invalid_client"}"#),
            ResponseError::OAuth { status: 400, .. }
        ));
        assert!(matches!(
            err(502, "<html>bad gateway</html>"),
            ResponseError::Status { status: 502, .. }
        ));
    }

    #[test]
    fn error_messages_never_contain_the_body() {
        let e = parse(
            502,
            Some("text/html; charset=utf-8"),
            None,
            b"<html>eyJsecret-token</html>",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the token endpoint answered HTTP 502 (text/html, 28 bytes)"
        );
        let e = err(200, r#"{"access_token":"eyJhbGciOi.secret","expires_in":"later"}"#);
        assert!(!e.to_string().contains("eyJ"), "{e}");
    }

    #[test]
    fn descriptions_are_sanitized() {
        let e = err(
            400,
            "{\"error\":\"invalid_request\",\"error_description\":\"bad\\nline\\u001b[31m\"}",
        );
        assert_eq!(
            e.to_string(),
            "the token endpoint answered HTTP 400 `invalid_request`: badline[31m"
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
