//! The HTTP side of a token request: one `reqwest` client per grant, rustls only, no redirects
//! (a redirected token request could hand the secret to another host), bounded response size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use secrecy::ExposeSecret;
use url::Url;

use super::request::TokenRequest;
use super::response::{self, ErrorClass, IssuedToken, ResponseError};
use crate::config::Timeouts;
use crate::secret::SecretError;

/// A token response larger than this is refused; real ones are a few KiB.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

pub const USER_AGENT: &str = concat!("tokend/", env!("CARGO_PKG_VERSION"));

/// Why a token could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Response(#[from] ResponseError),
    #[error("cannot reach the token endpoint {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("the token endpoint {url} did not answer within {timeout}")]
    Timeout { url: String, timeout: String },
    #[error("the token endpoint's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

impl FetchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Response(e) => e.class(),
            FetchError::Secret(_)
            | FetchError::Transport { .. }
            | FetchError::Timeout { .. }
            | FetchError::TooLarge => ErrorClass::Transient,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Response(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Shared HTTP clients, one per distinct connection setting. A `reqwest::Client` carries its
/// own TLS configuration and root store (over 100 KiB each), so groups share them instead of
/// building one each; the request timeout is set per request.
#[derive(Clone, Default)]
pub struct HttpClients {
    by_connect_timeout: Arc<Mutex<HashMap<Duration, reqwest::Client>>>,
}

impl HttpClients {
    /// A client for a grant with these timeouts.
    pub fn get(&self, timeouts: Timeouts) -> Result<HttpClient, FetchError> {
        let mut cache = self.by_connect_timeout.lock().expect("http client cache poisoned");
        let inner = match cache.get(&timeouts.connect) {
            Some(client) => client.clone(),
            None => {
                let client = reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(timeouts.connect)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build()
                    .map_err(|e| FetchError::Transport {
                        url: String::new(),
                        reason: chain(&e),
                    })?;
                cache.insert(timeouts.connect, client.clone());
                client
            }
        };
        Ok(HttpClient { inner, timeouts })
    }
}

/// An HTTP client for one grant's token endpoint.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    timeouts: Timeouts,
}

impl HttpClient {
    /// Sends the request and reads the answer.
    pub async fn fetch(&self, url: &Url, request: &TokenRequest) -> Result<IssuedToken, FetchError> {
        let mut builder = self
            .inner
            .post(url.clone())
            .timeout(self.timeouts.request)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(request.body.expose_secret().to_owned());
        if let Some(auth) = &request.authorization {
            let mut value =
                reqwest::header::HeaderValue::from_str(auth.expose_secret()).map_err(|_| FetchError::Transport {
                    url: url.to_string(),
                    reason: "invalid credentials header".into(),
                })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let mut response = builder.send().await.map_err(|e| self.transport_error(url, &e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
        let mut body = zeroize::Zeroizing::new(Vec::with_capacity(4096));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(url, &e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(response::parse(status, content_type.as_deref(), retry_after, &body)?)
    }

    fn transport_error(&self, url: &Url, e: &reqwest::Error) -> FetchError {
        let url = url.to_string();
        if e.is_timeout() {
            let budget = if e.is_connect() {
                self.timeouts.connect
            } else {
                self.timeouts.request
            };
            FetchError::Timeout {
                url,
                timeout: humantime::format_duration(budget).to_string(),
            }
        } else {
            FetchError::Transport { url, reason: chain(e) }
        }
    }
}

/// The innermost cause of an error, which is the useful part of reqwest's error chain
/// ("Connection refused (os error 111)"). reqwest errors carry no request body or headers.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
