//! One token request from start to finish (RFC 6749 §4.4): read the credential material the
//! spec names, find the token endpoint (configured, or discovered from the issuer), authenticate
//! as the spec's `auth` method says, send the request, validate the answer if asked, and turn it
//! into a `Token`. Nothing here is kept between requests except the issuer's documents.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::assertion::{self, SigningKey};
use super::client::{ClientSettings, HttpClient, HttpClients};
use super::discovery::Metadata;
use super::error::{AuthUsed, FetchError};
use super::issuer::IssuerCache;
use super::lifetime;
use super::request::{self, Credential};
use super::response::ResponseError;
use super::scope;
use super::validate::ValidationError;
use crate::config::{
    AssertionAudience, BasicEncoding, Credentials, Endpoint, PrivateKey, RequestSpec, Timeouts, Validation,
};
use crate::token::Token;

/// What a group adds to its request spec: how long to wait, and the lifetime to assume for a
/// token whose response states none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    pub timeouts: Timeouts,
    pub default_lifetime: Duration,
}

/// Requests a token for `spec` now. `sent_at` is the wall-clock time the lifetime counts from.
/// Secrets, keys, certificates and CA files are read for every request, so rotated ones are
/// used without a restart; that, and everything after, waits for a turn with the IdP.
/// Cancel-safe: dropping the future changes nothing but `cache`.
pub async fn obtain(
    spec: &Arc<RequestSpec>,
    http: &HttpClients,
    cache: &mut IssuerCache,
    terms: Terms,
    sent_at: SystemTime,
) -> Result<Token, FetchError> {
    let _turn = http.turn(spec.grant.endpoint.url()).await;
    let (material, settings) = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || Material::load(&spec, terms.timeouts.connect))
            .await
            .map_err(|e| FetchError::Tls(format!("reading credentials failed: {e}")))??
    };
    let http = http.get(&settings, terms.timeouts)?;
    let result = exchange(spec, &http, &material, cache, sent_at, terms.default_lifetime).await;
    if result.is_err() {
        cache.forget_metadata();
    }
    result
}

async fn exchange(
    spec: &RequestSpec,
    http: &HttpClient,
    material: &Material,
    cache: &mut IssuerCache,
    sent_at: SystemTime,
    default_lifetime: Duration,
) -> Result<Token, FetchError> {
    let (token_endpoint, metadata) = match &spec.grant.endpoint {
        Endpoint::TokenUrl(url) => (url.clone(), None),
        Endpoint::Issuer(issuer) => {
            let metadata = cache.metadata(http, issuer, spec.transport.allow_insecure_http).await?;
            (metadata.token_endpoint.clone(), Some(metadata))
        }
    };
    let assertion;
    let credential = match material {
        Material::SecretPost(secret) => Credential::Post(secret),
        Material::SecretBasic(secret, encoding) => Credential::Basic(secret, *encoding),
        Material::PrivateKey { key, config } => {
            let audience = match &config.audience {
                AssertionAudience::TokenEndpoint => token_endpoint.as_str().to_owned(),
                AssertionAudience::Issuer => metadata
                    .as_ref()
                    .map_or_else(|| token_endpoint.as_str().to_owned(), |m| m.issuer.clone()),
                AssertionAudience::Url(url) => url.clone(),
            };
            assertion = sign(key, config, &spec.grant.client_id, &audience)?;
            Credential::Assertion(&assertion)
        }
        Material::Certificate => Credential::Certificate,
        Material::None => {
            return Err(FetchError::Fleet(
                "a fleet follower has no credentials and never asks the IdP".into(),
            ));
        }
    };
    let request = request::build(&spec.grant, credential);
    let issued = http
        .fetch(&token_endpoint, &request)
        .await
        .map_err(|e| refused(e, spec, material))?;
    if let Some(rules) = &spec.validation {
        let (issuer, jwks_uri) = trust(rules, metadata.as_ref())?;
        cache
            .validate(http, issued.access_token.expose_secret(), rules, &issuer, &jwks_uri)
            .await?;
    }
    let mut token = lifetime::token_from(issued, sent_at, default_lifetime)?;
    token.scope = scope::granted(
        token.scope.take(),
        token.access_token.expose_secret(),
        spec.grant.scope.as_deref(),
    );
    require_scope(spec, &token)?;
    Ok(token)
}

/// `require_scope`: the token's granted scope (for a token saved before tokend kept it, the
/// scope asked for) holds every scope it names.
fn require_scope(spec: &RequestSpec, token: &Token) -> Result<(), FetchError> {
    let granted = token.scope.as_deref().or(spec.grant.scope.as_deref());
    let missing = scope::missing(spec.required_scope.iter().map(String::as_str), granted);
    if missing.is_empty() {
        return Ok(());
    }
    Err(FetchError::ScopeMissing {
        granted: granted.unwrap_or_default().to_owned(),
        missing: missing.join(" "),
    })
}

/// A refusal from the token endpoint, with how the client authenticated (which the advice
/// names); any other failure as it is.
fn refused(e: FetchError, spec: &RequestSpec, material: &Material) -> FetchError {
    match (e, spec.credentials.method()) {
        (FetchError::Response(answer @ (ResponseError::OAuth { .. } | ResponseError::Status { .. })), Some(method)) => {
            let basic = match material {
                Material::SecretBasic(secret, encoding) => Some((
                    *encoding,
                    request::form_encoding_changes(&spec.grant.client_id)
                        || request::form_encoding_changes(secret.expose_secret()),
                )),
                _ => None,
            };
            FetchError::Refused {
                answer,
                auth: AuthUsed { method, basic },
            }
        }
        (e, _) => e,
    }
}

/// Validates a saved token by the spec's `validate:` rules (nothing to do without them), as a
/// new token is validated before it is published.
pub async fn validate_saved(
    spec: &RequestSpec,
    http: &HttpClients,
    cache: &mut IssuerCache,
    terms: Terms,
    token: &Token,
) -> Result<(), FetchError> {
    require_scope(spec, token)?;
    let Some(rules) = &spec.validation else {
        return Ok(());
    };
    let _turn = http.turn(spec.grant.endpoint.url()).await;
    let (_, settings) = Material::load(spec, terms.timeouts.connect)?;
    let http = http.get(&settings, terms.timeouts)?;
    let metadata = match &spec.grant.endpoint {
        Endpoint::TokenUrl(_) => None,
        Endpoint::Issuer(issuer) => Some(
            cache
                .metadata(&http, issuer, spec.transport.allow_insecure_http)
                .await?,
        ),
    };
    let (issuer, jwks_uri) = trust(rules, metadata.as_ref())?;
    cache
        .validate(&http, token.access_token.expose_secret(), rules, &issuer, &jwks_uri)
        .await
}

fn sign(key: &SigningKey, config: &PrivateKey, client_id: &str, audience: &str) -> Result<SecretString, FetchError> {
    let claims = assertion::Claims {
        client_id,
        audience,
        key_id: config.key_id.as_deref(),
        now: SystemTime::now(),
    };
    Ok(assertion::sign(key, config.alg, &claims, &config.key.describe())?)
}

/// The issuer a validated token must name, and where its keys are: as configured, else as the
/// issuer's metadata says.
fn trust(rules: &Validation, metadata: Option<&Metadata>) -> Result<(String, Url), ValidationError> {
    let issuer = rules.issuer.clone().or_else(|| metadata.map(|m| m.issuer.clone()));
    let jwks_uri = rules
        .jwks_uri
        .clone()
        .or_else(|| metadata.and_then(|m| m.jwks_uri.clone()));
    match (issuer, jwks_uri) {
        (Some(issuer), Some(jwks_uri)) => Ok((issuer, jwks_uri)),
        (_, None) => Err(ValidationError::Jwks {
            url: "(none)".into(),
            reason: "the issuer's metadata has no `jwks_uri`; set `validate.jwks_uri`".into(),
        }),
        (None, Some(_)) => Err(ValidationError::NoIssuer),
    }
}

/// What one request needs from files, read just before it: one variant per `Credentials`
/// variant, so every method is handled and none can meet another's material.
enum Material {
    SecretPost(SecretString),
    SecretBasic(SecretString, BasicEncoding),
    PrivateKey {
        key: SigningKey,
        config: PrivateKey,
    },
    /// The certificate and key travel in the TLS settings.
    Certificate,
    /// A fleet follower: no request is ever sent (its TLS settings still reach the JWKS).
    None,
}

impl Material {
    fn load(spec: &RequestSpec, connect_timeout: Duration) -> Result<(Material, ClientSettings), FetchError> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => "; correct the path",
                    std::io::ErrorKind::PermissionDenied => "; tokend's user must be able to read it (`chmod 0644`)",
                    _ => "",
                };
                FetchError::Tls(format!("cannot read {what} {}: {e}{hint}", path.display()))
            })
        };
        let ca_pem = spec
            .transport
            .ca_file
            .as_deref()
            .map(|p| read(p, "ca_file"))
            .transpose()?;
        let mut identity_pem = None;
        let material = match &spec.credentials {
            Credentials::SecretPost(source) => Material::SecretPost(source.read()?),
            Credentials::SecretBasic { secret, encoding } => Material::SecretBasic(secret.read()?, *encoding),
            Credentials::PrivateKey(config) => Material::PrivateKey {
                key: SigningKey::load(&config.key)?,
                config: config.clone(),
            },
            Credentials::Certificate { certificate, key } => {
                let mut pem = certificate.read_public_bytes("client certificate")?;
                pem.push(b'\n');
                pem.extend_from_slice(&key.read_bytes("client key")?);
                identity_pem = Some(pem);
                Material::Certificate
            }
            Credentials::Follower => Material::None,
        };
        let settings = ClientSettings {
            connect_timeout,
            ca_pem,
            identity_pem,
            proxy: spec.transport.proxy.clone(),
        };
        Ok((material, settings))
    }
}

/// Connects to a spec's endpoints as a token request would (DNS, proxy, TLS with `ca_file`, a
/// client certificate), and sends no credentials: the issuer's metadata is fetched, and the
/// token endpoint is sent a bare GET, whose HTTP status (any) shows it answers. For `tokend
/// check --connect`; returns what was reached.
pub async fn probe(spec: &RequestSpec, timeouts: Timeouts) -> Result<String, FetchError> {
    let (_, settings) = Material::load(spec, timeouts.connect)?;
    let http = HttpClients::default().get(&settings, timeouts)?;
    let (endpoint, discovered) = match &spec.grant.endpoint {
        Endpoint::TokenUrl(url) => (url.clone(), String::new()),
        Endpoint::Issuer(issuer) => {
            let metadata = IssuerCache::default()
                .metadata(&http, issuer, spec.transport.allow_insecure_http)
                .await?;
            (metadata.token_endpoint.clone(), format!("metadata of {issuer} read; "))
        }
    };
    let answer = http.get_json(&endpoint).await?;
    let tls = if endpoint.scheme() == "https" {
        ", TLS certificate verified"
    } else {
        ""
    };
    Ok(format!("{discovered}{endpoint} answered HTTP {}{tls}", answer.status))
}

/// Reads a spec's credential and TLS files and builds its HTTP client (in `http`, which keeps
/// it), as a request would, and signs a throwaway assertion with a private key: for `preflight`.
pub fn check_credentials(spec: &RequestSpec, timeouts: Timeouts, http: &HttpClients) -> Result<(), FetchError> {
    let (material, settings) = Material::load(spec, timeouts.connect)?;
    if let Material::PrivateKey { key, config } = &material {
        sign(key, config, "check", "check")?;
    }
    // Only a CA file or a client certificate can keep the HTTP client from being built for a
    // reason the configuration gives (a proxy URL is checked when it is parsed); without them it
    // is left to the first request, rather than built twice by every `once`.
    if settings.ca_pem.is_some() || settings.identity_pem.is_some() {
        http.get(&settings, timeouts)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_TIMEOUTS, parse_str};

    /// A thousand exchanges queued for their turn hold no credential, request or assertion:
    /// the secret is read only when the turn comes (here, a missing one is reported only then).
    #[tokio::test]
    async fn an_exchange_reads_its_credential_only_when_its_turn_comes() {
        let yaml = "state_dir: /nonexistent/state\nsocket: { enabled: false }\nclients:\n  c:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: { file: /nonexistent/secret }\n    outputs: [{ path: /run/tokend-test/out }]\n";
        let config = parse_str(yaml, Path::new("/etc/tokend/config.yaml")).unwrap();
        let spec = config.clients[0].spec.clone();
        let http = HttpClients::new(1);
        let terms = Terms {
            timeouts: DEFAULT_TIMEOUTS,
            default_lifetime: Duration::from_secs(3600),
        };
        let turn = http.turn(spec.grant.endpoint.url()).await;
        let mut cache = IssuerCache::default();
        let mut obtain = Box::pin(obtain(&spec, &http, &mut cache, terms, SystemTime::now()));
        let waiting = tokio::time::timeout(Duration::from_millis(300), &mut obtain).await;
        assert!(waiting.is_err(), "the exchange went ahead while another held the turn");
        drop(turn);
        let err = obtain.await.expect_err("the secret file does not exist");
        assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
    }
}
