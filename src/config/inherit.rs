//! `defaults`, merged into each client once, by one rule per key: a client's own value wins;
//! `timeouts`, `refresh`, `retry`, `validate` and `params` merge key by key; `token_url` and
//! `issuer` are one choice (a client that writes either drops both inherited ones); `outputs` are
//! never inherited (`defaults.outputs` is refused). Problems with an inherited value are reported
//! at `defaults`, where it is written (`Validator::problem`).

use super::raw::{RawClient, RawRefresh, RawRetry, RawTimeouts, RawValidate, RawValidateSettings};

impl RawClient {
    /// This client's settings with `defaults` filled in wherever the client wrote nothing.
    pub fn inherit(&self, d: &RawClient) -> RawClient {
        let c = self;
        let (token_url, issuer) = if c.token_url.is_some() || c.issuer.is_some() {
            (c.token_url.clone(), c.issuer.clone())
        } else {
            (d.token_url.clone(), d.issuer.clone())
        };
        let params = match (&d.params, &c.params) {
            (None, None) => None,
            (inherited, own) => {
                let mut params = inherited.clone().unwrap_or_default();
                params.extend(own.clone().unwrap_or_default());
                Some(params)
            }
        };
        RawClient {
            token_url,
            issuer,
            client_id: c.client_id.clone().or_else(|| d.client_id.clone()),
            client_secret: c.client_secret.clone().or_else(|| d.client_secret.clone()),
            auth: c.auth.or(d.auth),
            basic_encoding: c.basic_encoding.or(d.basic_encoding),
            private_key: c.private_key.clone().or_else(|| d.private_key.clone()),
            key_id: c.key_id.clone().or_else(|| d.key_id.clone()),
            signing_alg: c.signing_alg.or(d.signing_alg),
            assertion_audience: c.assertion_audience.clone().or_else(|| d.assertion_audience.clone()),
            client_certificate: c.client_certificate.clone().or_else(|| d.client_certificate.clone()),
            client_key: c.client_key.clone().or_else(|| d.client_key.clone()),
            ca_file: c.ca_file.clone().or_else(|| d.ca_file.clone()),
            proxy: c.proxy.clone().or_else(|| d.proxy.clone()),
            no_proxy: c.no_proxy.clone().or_else(|| d.no_proxy.clone()),
            validate: validate(c.validate.as_ref(), d.validate.as_ref()),
            audience: c.audience.clone().or_else(|| d.audience.clone()),
            scope: c.scope.clone().or_else(|| d.scope.clone()),
            require_scope: c.require_scope.clone().or_else(|| d.require_scope.clone()),
            resource: c.resource.clone().or_else(|| d.resource.clone()),
            organization: c.organization.clone().or_else(|| d.organization.clone()),
            params,
            allow_insecure_http: c.allow_insecure_http.or(d.allow_insecure_http),
            timeouts: merge(c.timeouts, d.timeouts, |c, d| RawTimeouts {
                connect: c.connect.or(d.connect),
                request: c.request.or(d.request),
            }),
            refresh: merge(c.refresh, d.refresh, |c, d| RawRefresh {
                at: c.at.or(d.at),
                jitter: c.jitter.or(d.jitter),
                min_remaining: c.min_remaining.or(d.min_remaining),
                default_lifetime: c.default_lifetime.or(d.default_lifetime),
            }),
            retry: merge(c.retry, d.retry, |c, d| RawRetry {
                initial: c.initial.or(d.initial),
                max: c.max.or(d.max),
            }),
            outputs: c.outputs.clone(),
            readers: c.readers.clone().or_else(|| d.readers.clone()),
            hooks: c.hooks.clone().or_else(|| d.hooks.clone()),
            fleet: c.fleet.or(d.fleet),
            fleet_key: c.fleet_key.clone().or_else(|| d.fleet_key.clone()),
        }
    }
}

/// Key by key, when either side has the section.
fn merge<T: Copy + Default>(own: Option<T>, inherited: Option<T>, by_key: impl Fn(T, T) -> T) -> Option<T> {
    match (own, inherited) {
        (None, None) => None,
        (own, inherited) => Some(by_key(own.unwrap_or_default(), inherited.unwrap_or_default())),
    }
}

/// `validate: false` on the client turns inherited validation off, `true` or a mapping turns it
/// on; the settings merge key by key with those under `defaults`.
fn validate(own: Option<&RawValidate>, inherited: Option<&RawValidate>) -> Option<RawValidate> {
    let enabled = own.or(inherited)?.enabled;
    let (c, d) = (
        own.map(|v| v.settings.clone()).unwrap_or_default(),
        inherited.map(|v| v.settings.clone()).unwrap_or_default(),
    );
    Some(RawValidate {
        enabled,
        settings: RawValidateSettings {
            issuer: c.issuer.or(d.issuer),
            jwks_uri: c.jwks_uri.or(d.jwks_uri),
            audience: c.audience.or(d.audience),
            algorithms: c.algorithms.or(d.algorithms),
            leeway: c.leeway.or(d.leeway),
        },
    })
}
