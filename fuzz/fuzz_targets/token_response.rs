//! The token endpoint's answer, as tokend reads it after `HttpClient::fetch` has the complete
//! response: status, `Content-Type`, `Retry-After` and body through `response::parse`
//! (§5.1 success or §5.2 error), then what the refresh loop does with the result (the token's
//! lifetime and refresh time, or the error's class and retry delay).
//!
//! The input is an HTTP response as sent on the wire (`HTTP/1.1 200 OK`, headers, a blank line,
//! the body), so the seeds are real answers; a status line that does not parse counts as 200.
//!
//! Beyond "no panic": a token is nonempty printable ASCII, its type `Bearer` or a bare token
//! type, its expiry never later than the server's; an error keeps the status, has no line break
//! or control character in its message, never contains the access token, and is retried no
//! later than the `Retry-After` cap allows.

#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokend::config::{DEFAULT_REFRESH, DEFAULT_RETRY};
use tokend::oauth::lifetime::token_from;
use tokend::oauth::response::{self, IssuedToken, ResponseError};
use tokend::oauth::{ErrorClass, FetchError};
use tokend::refresh::schedule::{self, RETRY_AFTER_CAP};
use tokend::token::MAX_LIFETIME;

struct Answer<'a> {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: &'a [u8],
}

/// Reads `data` as an HTTP/1.1 response head and body, leniently.
fn answer(data: &[u8]) -> Answer<'_> {
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (&b""[..], data),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let (mut content_type, mut retry_after) = (None, None);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = Some(value.trim().to_owned());
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = value,
                "retry-after" => retry_after = value,
                _ => {}
            }
        }
    }
    Answer {
        status,
        content_type,
        retry_after,
        body,
    }
}

fn find(data: &[u8], needle: &[u8]) -> Option<usize> {
    data.windows(needle.len()).position(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let answer = answer(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let retry_after = answer
        .retry_after
        .as_deref()
        .and_then(|v| response::parse_retry_after(v, now));
    let parsed = response::parse(answer.status, answer.content_type.as_deref(), retry_after, answer.body);
    match &parsed {
        Ok(issued) => success(&answer, issued, now),
        Err(e) => failure(&answer, e, retry_after),
    }
    // Whatever the outcome, nothing shown names the access token the body carries.
    if let Some(token) = access_token(answer.body) {
        never_shown(&answer, &parsed, &token);
    }
});

fn success(answer: &Answer<'_>, issued: &IssuedToken, now: SystemTime) {
    assert!(
        (200..300).contains(&answer.status),
        "a token from HTTP {}",
        answer.status
    );
    let token = issued.access_token.expose_secret();
    assert!(
        !token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "a token that would corrupt a header or an env file"
    );
    let t = &issued.token_type;
    assert!(
        t == "Bearer"
            || (!t.eq_ignore_ascii_case("bearer")
                && !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))),
        "token type {t:?}"
    );
    if let Some(e) = issued.expires_in {
        assert!(e >= Duration::from_secs(1) && e < MAX_LIFETIME, "expires_in {e:?}");
    }
    let expires_in = issued.expires_in;
    let copy = IssuedToken {
        access_token: issued.access_token.clone(),
        token_type: issued.token_type.clone(),
        expires_in: issued.expires_in,
        scope: issued.scope.clone(),
    };
    let sent_at = now + Duration::from_millis(731);
    match token_from(copy, sent_at, DEFAULT_REFRESH.default_lifetime) {
        Ok(token) => {
            assert!(token.expires_at > sent_at - Duration::from_secs(1), "expired at once");
            if let Some(e) = expires_in {
                assert!(token.expires_at <= sent_at + e, "later than the server's expiry");
            }
            assert!(token.lifetime() <= MAX_LIFETIME + Duration::from_secs(1));
            for sample in [-1.0, 0.0, 1.0] {
                let plan = schedule::refresh_at(token.issued_at, token.expires_at, &DEFAULT_REFRESH, sample);
                assert!(
                    plan.at >= token.issued_at && plan.at <= token.expires_at,
                    "refresh outside the lifetime"
                );
            }
            // Ignored: only that building the document does not panic.
            let _ = token.document(now);
        }
        Err(ResponseError::Invalid(_)) => assert!(expires_in.is_none(), "expires_in given, yet no lifetime"),
        Err(e) => panic!("token_from failed with a non-Invalid error: {e}"),
    }
}

fn failure(answer: &Answer<'_>, e: &ResponseError, retry_after: Option<Duration>) {
    match e {
        ResponseError::OAuth { status, .. } | ResponseError::Status { status, .. } => {
            let expected = if (200..300).contains(&answer.status) {
                400
            } else {
                answer.status
            };
            assert_eq!(*status, expected, "the status changed");
            assert_eq!(e.retry_after(), retry_after, "Retry-After changed");
        }
        ResponseError::Invalid(_) => {
            assert!(
                (200..300).contains(&answer.status),
                "Invalid for HTTP {}",
                answer.status
            )
        }
    }
    let message = e.to_string();
    assert!(
        !message.chars().any(char::is_control),
        "a line break or control character in {message:?}"
    );
    let fetch = FetchError::from(e.clone());
    let class = fetch.class();
    // Ignored: only that they do not panic.
    let _ = (fetch.summary(), fetch.advice());
    for attempt in [1, 2, 31, u32::MAX] {
        let delay = schedule::retry_delay(
            &DEFAULT_RETRY,
            tokend::refresh::backoff(class),
            attempt,
            fetch.retry_after(),
            0.999,
        );
        assert!(delay <= RETRY_AFTER_CAP.max(DEFAULT_RETRY.max), "retry in {delay:?}");
        if class == ErrorClass::Permanent {
            assert_eq!(
                delay,
                DEFAULT_RETRY
                    .max
                    .max(fetch.retry_after().unwrap_or_default().min(RETRY_AFTER_CAP))
            );
        }
    }
}

/// The `access_token` string of a JSON object body, if long enough to be told from the words of
/// a message.
fn access_token(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(map) => match map.get("access_token")? {
            Value::String(t) if t.len() >= 6 => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Nothing shown (the error's message, or the token's `Debug`) contains `token`; if it seems to,
/// the body is rewritten with a different token of the same shape, and what is shown must not
/// follow it (the text may also be the `error` code, the scope or the content type, unless the
/// content type holds the rewritten token too).
fn never_shown(answer: &Answer<'_>, parsed: &Result<IssuedToken, ResponseError>, token: &str) {
    let shown = |p: &Result<IssuedToken, ResponseError>| match p {
        Ok(issued) => format!("{issued:?}"),
        Err(e) => format!("{e} {e:?}"),
    };
    if !shown(parsed).contains(token) {
        return;
    }
    // `token` respelled: letters and digits rotated by `by`, the rest kept.
    let respelled = |by: u8| -> String {
        token
            .chars()
            .map(|c| match c {
                'a'..='z' => (b'a' + (c as u8 - b'a' + by) % 26) as char,
                'A'..='Z' => (b'A' + (c as u8 - b'A' + by) % 26) as char,
                '0'..='9' => (b'0' + (c as u8 - b'0' + by) % 10) as char,
                c => c,
            })
            .collect()
    };
    let (other, third) = (respelled(13), respelled(7));
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(answer.body) else {
        return;
    };
    let with = |t: &str| {
        let mut map = map.clone();
        map.insert("access_token".into(), Value::String(t.to_owned()));
        serde_json::to_vec(&map).expect("a JSON object serializes")
    };
    let (body, baseline) = (with(&other), with(&third));
    if other == token || other == third || find(&body, token.as_bytes()).is_some() {
        return;
    }
    let retry_after = parsed.as_ref().err().and_then(ResponseError::retry_after);
    let again = response::parse(answer.status, answer.content_type.as_deref(), retry_after, &body);
    // If the respelling is shown even when the body holds another one, it comes from elsewhere
    // (the content type, as the message quotes it): that tells nothing about the body.
    let elsewhere = response::parse(answer.status, answer.content_type.as_deref(), retry_after, &baseline);
    if shown(&elsewhere).contains(other.as_str()) {
        return;
    }
    assert!(
        !shown(&again).contains(other.as_str()),
        "the access token is shown: {}",
        shown(parsed)
    );
}
