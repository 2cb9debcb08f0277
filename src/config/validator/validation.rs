//! `validate:`: the checks a token must pass before it is published, and where the issuer and
//! its keys come from (configured, or discovered with `issuer:`).

use std::time::Duration;

use super::{ClientCtx, Validator};
use crate::config::model::{DEFAULT_LEEWAY, Endpoint, Validation};
use crate::config::url_policy::check_idp_url;
use crate::config::values::JwsAlg;

/// A longer leeway would accept tokens long expired.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl Validator<'_> {
    /// `Some(None)`: no validation; `None`: invalid settings (the problems are recorded).
    /// `asked_for` is the audiences and resources the request names, the default `aud`.
    pub(super) fn validation(
        &mut self,
        cx: &ClientCtx<'_>,
        endpoint: Option<&Endpoint>,
        asked_for: Vec<String>,
    ) -> Option<Option<Validation>> {
        let Some(raw) = cx.merged.validate.as_ref().filter(|v| v.enabled) else {
            return Some(None);
        };
        let n = cx.n;
        let at = |key: &'static str| ["clients", n, "validate", key];
        let s = raw.settings.clone();
        let discovered = matches!(endpoint, Some(Endpoint::Issuer(_)));
        let issuer = match (s.issuer, discovered) {
            (Some(i), _) => Some(Some(i)),
            (None, true) => Some(None),
            (None, false) => {
                self.problem(
                    &cx.at("validate"),
                    "validation needs the issuer: use `issuer:` (discovery) instead of `token_url`, or set `validate: { issuer: ..., jwks_uri: ... }`",
                );
                None
            }
        };
        let jwks_uri = match s.jwks_uri {
            Some(u) => match check_idp_url(&u, cx.allow_http, "JWKS URL") {
                Ok(url) => Some(url),
                Err(msg) => {
                    self.problem(&at("jwks_uri"), msg);
                    return None;
                }
            },
            None if matches!(endpoint, Some(Endpoint::TokenUrl(_))) => {
                self.problem(
                    &cx.at("validate"),
                    "validation needs the issuer's keys: set `validate.jwks_uri`, or use `issuer:` so it is discovered",
                );
                None
            }
            None => None,
        };
        let audiences: Vec<String> = match s.audience {
            Some(list) => list.0,
            None => asked_for,
        };
        if audiences.is_empty() {
            self.problem(
                &cx.at("validate"),
                "validation checks the token's `aud`, but the client asks for no `audience` or `resource`; set one (Auth0 returns an opaque, unusable token without `audience`), or `validate.audience`",
            );
        }
        let algorithms = s.algorithms.unwrap_or_else(|| JwsAlg::ALL.to_vec());
        let leeway = s.leeway.map_or(DEFAULT_LEEWAY, |l| l.0);
        if leeway > MAX_LEEWAY {
            self.problem(
                &at("leeway"),
                "a leeway over 5m would accept tokens long expired; use at most 5m",
            );
        }
        if audiences.is_empty() || algorithms.is_empty() || leeway > MAX_LEEWAY {
            return None;
        }
        Some(Some(Validation {
            issuer: issuer?,
            jwks_uri,
            audiences,
            algorithms,
            leeway,
        }))
    }
}
