//! What a group remembers about its issuer between requests: the metadata document (discovery)
//! and the keys (JWKS), fetched over HTTP and cached. Parsing and verifying are `discovery`'s and
//! `validate`'s; this module only decides when to fetch.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use tracing::debug;
use url::Url;

use super::client::HttpClient;
use super::discovery::{self, DiscoveryError, Metadata};
use super::error::FetchError;
use super::validate::{self, ValidationError};
use crate::config::Validation;

/// A discovery result is reused this long, and forgotten at once after a failed token request.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(24 * 3600);
/// A JWKS is re-fetched for an unknown `kid` at most this often. Tokens come only from the
/// configured token endpoint and a failed validation backs the client off, so this is a second
/// line of defence against hammering the JWKS, short enough that a key rotation costs seconds.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// A JWKS is reused this long before it is fetched again anyway.
const JWKS_TTL: Duration = Duration::from_secs(3600);

/// One group's cached issuer documents.
#[derive(Default)]
/// Boxed: every group holds one, and most never fill it (no discovery, no validation).
pub struct IssuerCache {
    metadata: Option<Box<(Metadata, Instant)>>,
    keys: Option<Box<(Url, JwkSet, Instant)>>,
}

impl IssuerCache {
    /// The metadata of `issuer`: cached, or fetched from the OIDC location, then RFC 8414's.
    pub async fn metadata(
        &mut self,
        http: &HttpClient,
        issuer: &Url,
        allow_insecure_http: bool,
    ) -> Result<Metadata, FetchError> {
        if let Some((metadata, at)) = self.metadata.as_deref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(metadata.clone());
        }
        let metadata = discover(http, issuer, allow_insecure_http).await?;
        debug!(issuer = %issuer, token_endpoint = %metadata.token_endpoint, "discovered the issuer's metadata");
        self.metadata = Some(Box::new((metadata.clone(), Instant::now())));
        Ok(metadata)
    }

    /// After a failed request: the metadata may be what is wrong (a moved endpoint, rotated
    /// keys), so the next request looks again.
    pub fn forget_metadata(&mut self) {
        self.metadata = None;
    }

    /// Validates `token` against the keys at `jwks_uri`, expecting `iss` = `issuer`. An unknown
    /// `kid` may be a key the issuer just rotated in: the keys are fetched again, once.
    pub async fn validate(
        &mut self,
        http: &HttpClient,
        token: &str,
        rules: &Validation,
        issuer: &str,
        jwks_uri: &Url,
    ) -> Result<(), FetchError> {
        if token.split('.').count() != 3 {
            return Err(ValidationError::Opaque.into());
        }
        match validate::verify(token, rules, issuer, self.keys(http, jwks_uri, false).await?) {
            Err(ValidationError::UnknownKey(_)) => Ok(validate::verify(
                token,
                rules,
                issuer,
                self.keys(http, jwks_uri, true).await?,
            )?),
            other => Ok(other?),
        }
    }

    /// The keys at `url`: cached unless stale, or unless `refetch` asks and the copy is older
    /// than `REFETCH_AT_MOST_EVERY`.
    async fn keys(&mut self, http: &HttpClient, url: &Url, refetch: bool) -> Result<&JwkSet, FetchError> {
        let fresh = |cached: &Url, at: &Instant| {
            cached == url && at.elapsed() <= JWKS_TTL && !(refetch && at.elapsed() > REFETCH_AT_MOST_EVERY)
        };
        let keys = match self.keys.take() {
            Some(cached) if fresh(&cached.0, &cached.2) => cached,
            // A failed fetch keeps the old keys: they still verify the tokens signed with them.
            old => match fetch_keys(http, url).await {
                Ok(set) => Box::new((url.clone(), set, Instant::now())),
                Err(e) => {
                    self.keys = old;
                    return Err(e);
                }
            },
        };
        Ok(&self.keys.insert(keys).1)
    }
}

async fn fetch_keys(http: &HttpClient, url: &Url) -> Result<JwkSet, FetchError> {
    let failed = |reason: String| ValidationError::Jwks {
        url: url.to_string(),
        reason,
    };
    let answer = http.get_json(url).await?;
    if answer.status != 200 {
        return Err(failed(format!("HTTP {}", answer.status)).into());
    }
    Ok(serde_json::from_slice(&answer.body).map_err(|e| failed(format!("not a JWK set: {e}")))?)
}

/// Fetches the metadata of `issuer` from the OIDC location; a 4xx there may just mean "not
/// here", so RFC 8414's location is tried next.
async fn discover(http: &HttpClient, issuer: &Url, allow_insecure_http: bool) -> Result<Metadata, FetchError> {
    let [oidc, rfc8414] = discovery::metadata_urls(issuer);
    let mut url = oidc;
    let mut answer = http.get_json(&url).await?;
    if (400..500).contains(&answer.status) {
        url = rfc8414;
        answer = http.get_json(&url).await?;
    }
    if answer.status != 200 {
        return Err(DiscoveryError::Status {
            issuer: issuer.to_string(),
            url: url.to_string(),
            status: answer.status,
        }
        .into());
    }
    Ok(discovery::parse(issuer, &url, &answer.body, allow_insecure_http)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_TIMEOUTS, Proxy};
    use crate::oauth::client::{ClientSettings, HttpClients};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one JWKS over HTTP, then stops listening.
    async fn serve_keys_once() -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request).await.unwrap();
            let body = r#"{"keys":[]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
        });
        url
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_keys_already_cached() {
        let settings = ClientSettings {
            connect_timeout: Duration::from_secs(5),
            ca_pem: None,
            identity_pem: None,
            proxy: Proxy::Disabled,
        };
        let http = HttpClients::default().get(&settings, DEFAULT_TIMEOUTS).unwrap();
        let mut cache = IssuerCache::default();
        let served = serve_keys_once().await;
        assert!(cache.keys(&http, &served, false).await.is_ok());
        // Another location (after a rediscovery) that cannot be reached …
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unreachable = Url::parse(&format!("http://{}/jwks", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        assert!(cache.keys(&http, &unreachable, false).await.is_err());
        // … leaves the first set cached: asking for it again sends nothing (its server is gone).
        assert!(cache.keys(&http, &served, false).await.is_ok());
    }
}
