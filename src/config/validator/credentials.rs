//! What proves a client's identity: exactly what its `auth` method needs, and nothing another
//! method would use.

use std::path::{Path, PathBuf};

use url::Url;

use super::{ClientCtx, Validator};
use crate::config::model::{AssertionAudience, Credentials, Endpoint, PrivateKey};
use crate::config::raw::{AuthMethod, BasicEncoding, RawAssertionAudience, RawPem, RawSecret};
use crate::config::values::JwsAlg;
use crate::secret::SecretSource;

impl Validator<'_> {
    pub(super) fn credentials(&mut self, cx: &ClientCtx<'_>, endpoint: Option<&Endpoint>) -> Option<Credentials> {
        let (n, c, own) = (cx.n, &cx.merged, cx.own);
        let auth = c.auth.unwrap_or_default();
        let method = auth.as_str();
        let unused = |this: &mut Self, present: bool, key: &'static str, belongs: &str| {
            if present {
                this.problem(
                    &cx.at(key),
                    format!("`{key}` is used only with `auth: {belongs}`, not `{method}`; remove it"),
                );
            }
        };
        if auth != AuthMethod::ClientSecretBasic {
            unused(
                self,
                own.basic_encoding.is_some(),
                "basic_encoding",
                "client_secret_basic",
            );
        }
        let is_assertion = auth == AuthMethod::PrivateKeyJwt;
        let is_mtls = auth == AuthMethod::TlsClientAuth;
        // Only what the client writes itself is questioned: settings inherited from `defaults`
        // for other clients' methods are simply not used by this one.
        if !is_assertion {
            unused(self, own.private_key.is_some(), "private_key", "private_key_jwt");
            unused(self, own.key_id.is_some(), "key_id", "private_key_jwt");
            unused(self, own.signing_alg.is_some(), "signing_alg", "private_key_jwt");
            unused(
                self,
                own.assertion_audience.is_some(),
                "assertion_audience",
                "private_key_jwt",
            );
        }
        if !is_mtls {
            unused(
                self,
                own.client_certificate.is_some(),
                "client_certificate",
                "tls_client_auth",
            );
            unused(self, own.client_key.is_some(), "client_key", "tls_client_auth");
        }
        if is_assertion || is_mtls {
            unused(
                self,
                own.client_secret.is_some(),
                "client_secret",
                "client_secret_post` or `client_secret_basic",
            );
        }
        let pem = |this: &mut Self, value: &Option<RawPem>, key: &'static str| -> Option<SecretSource> {
            match value {
                None => {
                    this.problem(
                        &["clients", n],
                        format!("client `{n}` uses `auth: {method}` but has no `{key}`"),
                    );
                    None
                }
                // Never echoed: it may be the key itself, pasted where its path belongs.
                Some(RawPem::Path(p)) if p.contains("-----BEGIN") || p.contains('\n') => {
                    this.problem(
                        &cx.at(key),
                        format!("`{key}` takes the path of a PEM file, not the PEM itself: put it in a file (mode 0600), or use {{ env: VAR }} or {{ credential: NAME }}"),
                    );
                    None
                }
                Some(RawPem::Path(p)) if !Path::new(p).is_absolute() => {
                    this.problem(&cx.at(key), format!("`{p}` must be an absolute path"));
                    None
                }
                Some(RawPem::Path(p)) => Some(SecretSource::File(PathBuf::from(p))),
                Some(RawPem::Source(raw)) => this.secret(raw.clone(), &cx.at(key)),
            }
        };
        match auth {
            AuthMethod::ClientSecretPost | AuthMethod::ClientSecretBasic => {
                let Some(raw) = &c.client_secret else {
                    self.problem(
                        &["clients", n],
                        format!(
                            "client `{n}` has no `client_secret`; use {{ file: PATH }}, {{ env: VAR }} or {{ credential: NAME }}"
                        ),
                    );
                    return None;
                };
                let encoding = c.basic_encoding.unwrap_or_default();
                if auth == AuthMethod::ClientSecretBasic
                    && encoding == BasicEncoding::Raw
                    && c.client_id.as_deref().is_some_and(|id| id.contains(':'))
                {
                    self.problem(
                        &cx.at("basic_encoding"),
                        "with `basic_encoding: raw` a `client_id` cannot hold `:` (HTTP Basic splits at the first one, RFC 7617); use `form` or `auth: client_secret_post`",
                    );
                }
                let source = self.secret(raw.clone(), &cx.at("client_secret"))?;
                Some(match auth {
                    AuthMethod::ClientSecretBasic => Credentials::SecretBasic {
                        secret: source,
                        encoding,
                    },
                    _ => Credentials::SecretPost(source),
                })
            }
            AuthMethod::PrivateKeyJwt => {
                let key = pem(self, &c.private_key, "private_key");
                if let Some(alg) = c.signing_alg
                    && ![JwsAlg::Rs256, JwsAlg::Ps256, JwsAlg::Es256, JwsAlg::EdDsa].contains(&alg)
                {
                    self.problem(
                        &cx.at("signing_alg"),
                        format!("client assertions are signed with RS256, PS256, ES256 or EdDSA, not {alg}"),
                    );
                }
                let audience = match &c.assertion_audience {
                    None | Some(RawAssertionAudience::TokenEndpoint) => AssertionAudience::TokenEndpoint,
                    Some(RawAssertionAudience::Issuer) => {
                        if matches!(endpoint, Some(Endpoint::TokenUrl(_))) {
                            self.problem(
                                &cx.at("assertion_audience"),
                                "`issuer` needs the client to use `issuer:` (discovery); otherwise write the audience URL itself",
                            );
                        }
                        AssertionAudience::Issuer
                    }
                    Some(RawAssertionAudience::Url(url)) if Url::parse(url).is_ok() => {
                        AssertionAudience::Url(url.clone())
                    }
                    Some(RawAssertionAudience::Url(other)) => {
                        self.problem(
                            &cx.at("assertion_audience"),
                            format!("`{other}` is not `token_endpoint`, `issuer` or a URL"),
                        );
                        AssertionAudience::TokenEndpoint
                    }
                };
                Some(Credentials::PrivateKey(PrivateKey {
                    key: key?,
                    key_id: c.key_id.clone(),
                    alg: c.signing_alg,
                    audience,
                }))
            }
            AuthMethod::TlsClientAuth => {
                let certificate = pem(self, &c.client_certificate, "client_certificate");
                let key = pem(self, &c.client_key, "client_key");
                let plain_http = match endpoint {
                    Some(Endpoint::TokenUrl(u) | Endpoint::Issuer(u)) => u.scheme() == "http",
                    None => false,
                };
                if plain_http {
                    self.problem(
                        &["clients", n],
                        "`auth: tls_client_auth` needs an https token endpoint: the certificate is presented in TLS",
                    );
                    return None;
                }
                Some(Credentials::Certificate {
                    certificate: certificate?,
                    key: key?,
                })
            }
        }
    }

    /// Where a secret (a client secret, a PEM key or certificate) comes from; `key` is where
    /// it is written.
    pub(super) fn secret(&mut self, raw: RawSecret, key: &[&str]) -> Option<SecretSource> {
        Some(match raw {
            RawSecret::Literal(s) => SecretSource::Literal(s),
            RawSecret::Env(var) if var.is_empty() || var.contains('=') => {
                self.problem(key, format!("`{var}` is not an environment variable name"));
                return None;
            }
            RawSecret::Env(var) => SecretSource::Env(var),
            RawSecret::File(p, _) if !Path::new(&p).is_absolute() => {
                self.problem(key, format!("secret file `{p}` must be an absolute path"));
                return None;
            }
            RawSecret::File(p, false) => SecretSource::File(p.into()),
            RawSecret::File(p, true) => SecretSource::SharedFile(p.into()),
            RawSecret::Credential(name) if name.is_empty() || name.contains('/') || name == "." || name == ".." => {
                self.problem(
                    key,
                    format!("`{name}` is not a credential name (a file name in $CREDENTIALS_DIRECTORY)"),
                );
                return None;
            }
            RawSecret::Credential(name) => SecretSource::Credential(name),
        })
    }
}
