//! One client: its token endpoint, id and request parameters (together the `Grant`), and its
//! timeouts, refresh and retry policies. Credentials, transport, validation and outputs have
//! files of their own; this one puts the client together.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{ClientCtx, Validator};
use crate::config::model::{
    Client, Credentials, DEFAULT_REFRESH, DEFAULT_RETRY, DEFAULT_TIMEOUTS, Endpoint, Grant, RefreshPolicy, RequestSpec,
    RetryPolicy, Timeouts,
};
use crate::config::raw::{FleetRole, RawRequireScope};
use crate::config::url_policy::check_idp_url;
use crate::config::values::{ClientName, is_scope_char};

/// Form parameters tokend sets itself; `params` may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "audience",
    "scope",
    "resource",
    "organization",
];

/// The request parameters beside the client id (RFC 6749 §4.4.2, RFC 8707, Auth0's).
struct Parameters {
    scope: Option<String>,
    resources: Vec<String>,
    params: Vec<(String, String)>,
    audience: Option<String>,
    organization: Option<String>,
}

impl Validator<'_> {
    /// The whole client, or `None` after recording every problem it has. The order of the checks
    /// is the order problems are listed in.
    pub(super) fn client(&mut self, name: &ClientName, cx: &ClientCtx<'_>) -> Option<Client> {
        let endpoint = self.endpoint(cx);
        let client_id = self.client_id(cx);
        let fleet = self.fleet_use(cx, self.fleet_role);
        // A follower's shared clients never ask the IdP: whatever credentials the file names
        // are not read (`check` says so).
        let credentials = match (&fleet, self.fleet_role) {
            (Ok(Some(_)), Some(FleetRole::Follower)) => Some(Credentials::Follower),
            _ => self.credentials(cx, endpoint.as_ref()),
        };
        let (p, parameters_ok) = self.parameters(cx);
        let required_scope = self.required_scope(cx, p.scope.as_deref());
        let transport = self.transport(cx);
        let asked_for = p.audience.iter().chain(&p.resources).cloned().collect();
        let validation = self.validation(cx, endpoint.as_ref(), asked_for);
        let timeouts = self.timeouts(cx);
        let refresh = self.refresh(cx);
        let retry = self.retry(cx);
        let outputs = self.outputs(cx.n, cx.merged.outputs.clone().unwrap_or_default());
        let hooks = self.hooks(cx);

        if !parameters_ok {
            return None;
        }
        let spec = RequestSpec {
            grant: Grant {
                endpoint: endpoint?,
                client_id: client_id?,
                audience: p.audience,
                scope: p.scope,
                resources: p.resources,
                organization: p.organization,
                params: p.params,
            },
            credentials: credentials?,
            transport: transport?,
            validation: validation?,
            required_scope: required_scope?,
            fleet: fleet.ok()?,
        };
        Some(Client {
            name: name.clone(),
            spec: Arc::new(spec),
            timeouts: timeouts?,
            refresh: refresh?,
            retry: retry?,
            outputs: outputs?,
            hooks: hooks?,
        })
    }

    /// `token_url`, or `issuer` for discovery: exactly one of them.
    fn endpoint(&mut self, cx: &ClientCtx<'_>) -> Option<Endpoint> {
        let n = cx.n;
        match (&cx.merged.token_url, &cx.merged.issuer) {
            (Some(_), Some(_)) => {
                self.problem(
                    &cx.at("issuer"),
                    "set either `token_url` or `issuer` (for discovery), not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    &["clients", n],
                    format!("client `{n}` has no `token_url` or `issuer`; set one here or under `defaults`"),
                );
                None
            }
            (Some(url), None) => match check_idp_url(url, cx.allow_http, "token URL") {
                Ok(url) => Some(Endpoint::TokenUrl(url)),
                Err(msg) => {
                    self.problem(&cx.at("token_url"), msg);
                    None
                }
            },
            (None, Some(url)) => match check_idp_url(url, cx.allow_http, "issuer") {
                Ok(url) => Some(Endpoint::Issuer(url)),
                Err(msg) => {
                    self.problem(&cx.at("issuer"), msg);
                    None
                }
            },
        }
    }

    fn client_id(&mut self, cx: &ClientCtx<'_>) -> Option<String> {
        match &cx.merged.client_id {
            Some(id) if !id.is_empty() => Some(id.clone()),
            Some(_) => {
                self.problem(&cx.at("client_id"), "`client_id` is empty");
                None
            }
            None => {
                self.problem(&["clients", cx.n], format!("client `{}` has no `client_id`", cx.n));
                None
            }
        }
    }

    /// `require_scope`: scopes among those asked for that a granted token must hold.
    fn required_scope(&mut self, cx: &ClientCtx<'_>, asked: Option<&str>) -> Option<Vec<String>> {
        let asked: Vec<&str> = asked.map(|s| s.split(' ').collect()).unwrap_or_default();
        let wanted: Vec<String> = match &cx.merged.require_scope {
            None | Some(RawRequireScope::All(false)) => return Some(Vec::new()),
            Some(RawRequireScope::All(true)) => asked.iter().map(|s| s.to_string()).collect(),
            Some(RawRequireScope::These(list)) => list
                .0
                .iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_owned)
                .collect(),
        };
        if wanted.is_empty() {
            self.problem(
                &cx.at("require_scope"),
                "`require_scope` needs scopes to require: set `scope`, or list them here",
            );
            return None;
        }
        if let Some(missing) = wanted.iter().find(|w| !asked.contains(&w.as_str())) {
            self.problem(
                &cx.at("require_scope"),
                format!("`require_scope` names `{missing}`, which `scope` does not ask for; add it to `scope`"),
            );
            return None;
        }
        Some(wanted)
    }

    /// The parameters, and whether all of them are valid (the valid ones are kept either way,
    /// so that the checks after this one see what the client asks for).
    fn parameters(&mut self, cx: &ClientCtx<'_>) -> (Parameters, bool) {
        let c = &cx.merged;
        let mut ok = true;
        let scope = match &c.scope {
            None => None,
            Some(list) => {
                let words: Vec<&str> = list.0.iter().flat_map(|s| s.split_whitespace()).collect();
                if let Some(bad) = words.iter().find(|w| !w.bytes().all(is_scope_char)) {
                    self.problem(
                        &cx.at("scope"),
                        format!("scope `{bad}` contains a character RFC 6749 §3.3 does not allow"),
                    );
                    ok = false;
                }
                (!words.is_empty()).then(|| words.join(" "))
            }
        };
        let mut resources = Vec::new();
        for r in c.resource.iter().flat_map(|list| &list.0) {
            match Url::parse(r) {
                Ok(u) if u.fragment().is_none() => resources.push(r.clone()),
                _ => {
                    self.problem(
                        &cx.at("resource"),
                        format!("resource `{r}` must be an absolute URI without a fragment (RFC 8707 §2)"),
                    );
                    ok = false;
                }
            }
        }
        let params = c.params.clone().unwrap_or_default();
        for key in params.keys() {
            if RESERVED_PARAMS.contains(&key.as_str()) {
                let hint = if ["audience", "scope", "resource", "organization"].contains(&key.as_str()) {
                    format!("set it with the `{key}` key instead")
                } else {
                    "tokend sets it itself".to_owned()
                };
                self.problem(
                    &cx.at("params"),
                    format!("parameter `{key}` cannot be set in `params`; {hint}"),
                );
                ok = false;
            }
        }
        let parameters = Parameters {
            scope,
            resources,
            // Sorted by name (a BTreeMap), so the request and its fingerprint do not depend on
            // how the YAML orders them.
            params: params.into_iter().collect(),
            audience: c.audience.clone().filter(|a| !a.is_empty()),
            organization: c.organization.clone().filter(|o| !o.is_empty()),
        };
        (parameters, ok)
    }

    fn timeouts(&mut self, cx: &ClientCtx<'_>) -> Option<Timeouts> {
        let raw = cx.merged.timeouts.unwrap_or_default();
        let t = Timeouts {
            connect: raw.connect.map_or(DEFAULT_TIMEOUTS.connect, |s| s.0),
            request: raw.request.map_or(DEFAULT_TIMEOUTS.request, |s| s.0),
        };
        let mut ok = true;
        for (key, value) in [("connect", t.connect), ("request", t.request)] {
            if value.is_zero() {
                self.problem(
                    &["clients", cx.n, "timeouts", key],
                    "a timeout must be longer than zero",
                );
                ok = false;
            }
        }
        ok.then_some(t)
    }

    fn refresh(&mut self, cx: &ClientCtx<'_>) -> Option<RefreshPolicy> {
        let raw = cx.merged.refresh.unwrap_or_default();
        let p = RefreshPolicy {
            at: raw.at.map_or(DEFAULT_REFRESH.at, |p| p.0),
            jitter: raw.jitter.map_or(DEFAULT_REFRESH.jitter, |p| p.0),
            min_remaining: raw.min_remaining.map_or(DEFAULT_REFRESH.min_remaining, |s| s.0),
            default_lifetime: raw.default_lifetime.map_or(DEFAULT_REFRESH.default_lifetime, |s| s.0),
        };
        let key = |k| ["clients", cx.n, "refresh", k];
        let mut ok = true;
        if !(0.05..=0.95).contains(&p.at) {
            self.problem(
                &key("at"),
                "refresh `at` must be between 5% and 95% of the token lifetime",
            );
            ok = false;
        } else if p.jitter > 0.5 || p.at - p.jitter < 0.01 || p.at + p.jitter > 0.99 {
            self.problem(
                &key("jitter"),
                format!(
                    "jitter ±{:.0}% around {:.0}% would refresh before the token is issued or after it expires; keep `at` ± `jitter` between 1% and 99%",
                    p.jitter * 100.0,
                    p.at * 100.0
                ),
            );
            ok = false;
        }
        if p.default_lifetime < Duration::from_secs(1) {
            self.problem(&key("default_lifetime"), "`default_lifetime` must be at least 1s");
            ok = false;
        }
        ok.then_some(p)
    }

    fn retry(&mut self, cx: &ClientCtx<'_>) -> Option<RetryPolicy> {
        let raw = cx.merged.retry.unwrap_or_default();
        let p = RetryPolicy {
            initial: raw.initial.map_or(DEFAULT_RETRY.initial, |s| s.0),
            max: raw.max.map_or(DEFAULT_RETRY.max, |s| s.0),
        };
        if p.initial < Duration::from_millis(100) {
            self.problem(
                &["clients", cx.n, "retry", "initial"],
                "`retry.initial` must be at least 100ms",
            );
            return None;
        }
        if p.max < p.initial {
            self.problem(
                &["clients", cx.n, "retry", "max"],
                format!(
                    "`retry.max` ({}) is shorter than `retry.initial` ({})",
                    humantime::format_duration(p.max),
                    humantime::format_duration(p.initial)
                ),
            );
            return None;
        }
        Some(p)
    }
}
