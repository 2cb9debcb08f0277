//! The configuration: YAML read into raw serde types (`raw`), then validated into the types the
//! rest of tokend uses (`Config`, `Client`). Validation collects every problem it finds and points
//! each one at its file, line, column and key.

mod error;
mod raw;
mod values;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use error::{ConfigError, Problem};
pub use raw::{AuthMethod, Format};
pub use values::{ClientName, JwsAlg, Mode, Principal};

use crate::secret::SecretSource;
use crate::url_policy::check_idp_url;
use raw::{RawClient, RawConfig, RawOutput, RawReaders, RawSecret, RawSocket, RawValidateSettings};

/// Where tokend looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tokend/config.yaml";
/// Where per-client state lives unless `state_dir` or `$STATE_DIRECTORY` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tokend";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from.
    pub source: PathBuf,
    /// Directory for per-client state files (the last token, so a restart needs no new one).
    pub state_dir: PathBuf,
    /// Clients in document order.
    pub clients: Vec<Arc<Client>>,
    /// The Unix socket API, unless disabled.
    pub socket: Option<SocketConfig>,
    /// Who may read what over the socket. Kept apart from `Client`, so that changing readers
    /// never restarts a client's refresh.
    pub access: Access,
}

/// Where and how the socket API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub mode: Mode,
    /// Group of the socket file; tokend's own group when unset.
    pub group: Option<Owner>,
    pub max_connections: usize,
    /// Connections one (non-root, non-tokend) user may hold.
    pub max_connections_per_user: usize,
    pub header_timeout: Duration,
}

/// Access rules for the socket API. Root and tokend's own user may read everything; everyone
/// else only what a rule names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Per client: who may read its token. A client without an entry is readable by root and
    /// tokend's own user only.
    pub readers: BTreeMap<ClientName, Readers>,
    /// Who may read `/metrics`.
    pub metrics_readers: Readers,
}

/// Users and groups, resolved to ids when the config was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readers {
    pub users: Vec<Owner>,
    pub groups: Vec<Owner>,
}

impl Readers {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

pub const DEFAULT_SOCKET_PATH: &str = "/run/tokend/tokend.sock";
pub const DEFAULT_SOCKET_MODE: Mode = Mode::new(0o660);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 256;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_SOCKET_PATH: usize = 88;

/// One OAuth client, with `defaults` already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub name: ClientName,
    /// The token request. Clients whose requests are equal hold the same `Arc`: they share one
    /// request and receive the same token.
    pub spec: Arc<RequestSpec>,
    pub timeouts: Timeouts,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub outputs: Vec<Output>,
}

/// Everything that decides which token request is sent and which answers are accepted: two
/// clients with equal specs would receive interchangeable tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestSpec {
    pub grant: Grant,
    /// What proves the client's identity, and how (`auth`).
    pub credentials: Credentials,
    /// How to reach the IdP: extra trust roots, proxy.
    pub transport: Transport,
    /// Checks a token must pass before it is published.
    pub validation: Option<Validation>,
}

/// What is asked for: the token endpoint, the client, and the parameters of the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub endpoint: Endpoint,
    pub client_id: String,
    /// Auth0's `audience` (the API the token is for).
    pub audience: Option<String>,
    /// Space-separated scopes (RFC 6749 §3.3).
    pub scope: Option<String>,
    /// RFC 8707 resource indicators, sent as repeated `resource` parameters.
    pub resources: Vec<String>,
    /// Auth0's `organization`.
    pub organization: Option<String>,
    /// Extra form parameters, sorted by name.
    pub params: Vec<(String, String)>,
}

/// Where the token endpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    TokenUrl(Url),
    /// OIDC discovery (or RFC 8414) from this issuer: the token endpoint and JWKS are looked up.
    Issuer(Url),
}

impl Endpoint {
    pub fn describe(&self) -> String {
        match self {
            Endpoint::TokenUrl(url) => url.to_string(),
            Endpoint::Issuer(url) => format!("discovered from issuer {url}"),
        }
    }
}

/// What proves the client's identity: one variant per `auth` method (RFC 6749 §2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    /// `client_secret_post`: id and secret in the form body (Auth0's documented default).
    SecretPost(SecretSource),
    /// `client_secret_basic`: id and secret form-urlencoded, then HTTP Basic (RFC 6749 §2.3.1).
    SecretBasic(SecretSource),
    /// `private_key_jwt`: a signed client assertion (RFC 7523 §2.2).
    PrivateKey(PrivateKey),
    /// `tls_client_auth`: a client certificate (chain) and its key, both PEM files (RFC 8705).
    Certificate { certificate: PathBuf, key: PathBuf },
}

impl Credentials {
    pub fn method(&self) -> AuthMethod {
        match self {
            Credentials::SecretPost(_) => AuthMethod::ClientSecretPost,
            Credentials::SecretBasic(_) => AuthMethod::ClientSecretBasic,
            Credentials::PrivateKey(_) => AuthMethod::PrivateKeyJwt,
            Credentials::Certificate { .. } => AuthMethod::TlsClientAuth,
        }
    }
}

/// How `private_key_jwt` assertions are made. The key file is read for every assertion, so a
/// rotated key is used from the next request on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrivateKey {
    pub path: PathBuf,
    pub key_id: Option<String>,
    /// None: chosen from the key (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA).
    pub alg: Option<JwsAlg>,
    pub audience: AssertionAudience,
}

/// The `aud` of a client assertion (RFC 7523 §3 wants the token endpoint; some IdPs the issuer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssertionAudience {
    TokenEndpoint,
    Issuer,
    Url(String),
}

/// How the IdP is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    /// Extra trust roots, on top of the system's.
    pub ca_file: Option<PathBuf>,
    pub proxy: Proxy,
    /// `allow_insecure_http`: plain http to a non-loopback host (also for discovered endpoints).
    pub allow_insecure_http: bool,
}

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Proxy {
    /// HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY from the environment.
    #[default]
    Environment,
    /// Never a proxy.
    Disabled,
    Url {
        url: Url,
        no_proxy: Vec<String>,
    },
}

impl Proxy {
    /// For display: a proxy URL with its password masked.
    pub fn describe(&self) -> String {
        match self {
            Proxy::Environment => "from the environment (HTTPS_PROXY, NO_PROXY)".into(),
            Proxy::Disabled => "none".into(),
            Proxy::Url { url, no_proxy } => {
                let mut shown = url.clone();
                if shown.password().is_some() {
                    // Ignored: only fails for URLs that cannot have a password, and this one has one.
                    let _ = shown.set_password(Some("****"));
                }
                if no_proxy.is_empty() {
                    shown.to_string()
                } else {
                    format!("{shown} (not for {})", no_proxy.join(", "))
                }
            }
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({})", self.describe())
    }
}

/// Checks a token must pass before it is published (`validate:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Validation {
    /// The expected `iss`; `None`: the issuer as the discovery document writes it.
    pub issuer: Option<String>,
    pub jwks_uri: Option<Url>,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<JwsAlg>,
    /// Allowed clock difference for `exp` and `nbf`.
    pub leeway: Duration,
}

pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP and TLS connection establishment.
    pub connect: Duration,
    /// The whole request, from connecting to reading the last byte of the response.
    pub request: Duration,
}

/// When to refresh a token (see `schedule::refresh_at`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Fraction of the lifetime after which to refresh.
    pub at: f64,
    /// Random spread, as a fraction of the lifetime, applied on both sides of `at`.
    pub jitter: f64,
    /// Refresh no later than this long before expiry.
    pub min_remaining: Duration,
    /// Lifetime assumed when the response has no `expires_in` and the token is not a JWT with `exp`.
    pub default_lifetime: Duration,
}

/// How to retry failed token requests (see `schedule::retry_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

/// A file the token is published to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Output {
    pub path: PathBuf,
    pub format: Format,
    pub mode: Mode,
    pub owner: Option<Owner>,
    pub group: Option<Owner>,
    /// `raw`: end with a newline.
    pub newline: bool,
    /// `env`: the variable name.
    pub variable: String,
}

/// A user or group as configured, with its numeric id resolved when the config was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub spec: Principal,
    pub id: u32,
}

pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    request: Duration::from_secs(30),
};
pub const DEFAULT_REFRESH: RefreshPolicy = RefreshPolicy {
    at: 0.8,
    jitter: 0.1,
    min_remaining: Duration::from_secs(120),
    default_lifetime: Duration::from_secs(300),
};
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
};
pub const DEFAULT_MODE: Mode = Mode::new(0o600);
pub const DEFAULT_ENV_VARIABLE: &str = "ACCESS_TOKEN";

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

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single(path, "", format!("cannot read the configuration file: {e}")))?;
    parse_str(&source, path)
}

/// Parses and validates configuration text; `path` is used in messages and as `Config::source`.
pub fn parse_str(source: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = if source.trim().is_empty() {
        RawConfig::default()
    } else {
        serde_yaml::from_str(source).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![error::from_serde(&e)],
        })?
    };
    let mut v = Validator {
        source,
        problems: Vec::new(),
    };
    let config = v.config(raw, path);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            file: path.to_owned(),
            problems: v.problems,
        })
    }
}

struct Validator<'a> {
    source: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    /// Records a problem at `path`. A client setting the client did not write itself came from
    /// `defaults`, so the problem is reported there (once, however many clients inherit it).
    fn problem(&mut self, path: &[&str], message: impl Into<String>) {
        let mut path = path.to_vec();
        let mut position = error::locate(self.source, &path);
        if position.is_none() && path.len() >= 3 && path[0] == "clients" {
            let inherited: Vec<&str> = std::iter::once("defaults").chain(path[2..].iter().copied()).collect();
            if let Some(found) = error::locate(self.source, &inherited) {
                (path, position) = (inherited, Some(found));
            }
        }
        let problem = Problem {
            position,
            key: path_string(&path),
            message: message.into(),
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let state_dir = match raw.state_dir {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    self.problem(&["state_dir"], format!("`{}` must be an absolute path", dir.display()));
                }
                dir
            }
            None => default_state_dir(),
        };
        let defaults = raw.defaults.unwrap_or_default();
        if defaults.outputs.is_some() {
            self.problem(
                &["defaults", "outputs"],
                "outputs belong to a client, not to `defaults`",
            );
        }
        if raw.clients.clients.is_empty() {
            self.problem(
                &["clients"],
                "no clients are defined; add at least one under `clients:`",
            );
        }
        for name in &raw.clients.duplicates {
            let position = error::locate_nth(self.source, &["clients", name.as_str()], 1);
            self.problems.push(Problem {
                position,
                key: format!("clients.{name}"),
                message: format!("client `{name}` is defined twice; rename or remove one of them"),
            });
        }
        let mut clients = Vec::new();
        let mut access = Access::default();
        for (name, client) in raw.clients.clients {
            let readers = match (&client.readers, &defaults.readers) {
                (Some(own), _) => self.readers(&["clients", name.as_str(), "readers"], own),
                (None, Some(inherited)) => self.readers(&["defaults", "readers"], inherited),
                (None, None) => Readers::default(),
            };
            if !readers.is_empty() {
                access.readers.insert(name.clone(), readers);
            }
            if let Some(client) = self.client(name, &defaults, client) {
                clients.push(client);
            }
        }
        let clients = share_requests(clients);
        let socket = self.socket(raw.socket.unwrap_or_default(), &mut access);
        if let Some(socket) = &socket {
            for client in &clients {
                if let Some(i) = client.outputs.iter().position(|o| o.path == socket.path) {
                    let index = i.to_string();
                    self.problem(
                        &["clients", client.name.as_str(), "outputs", index.as_str(), "path"],
                        "this is the socket's path; choose another file",
                    );
                }
            }
        }
        self.cross_checks(&clients, path, &state_dir);
        Config {
            source: path.to_owned(),
            state_dir,
            clients,
            socket,
            access,
        }
    }

    fn socket(&mut self, raw: RawSocket, access: &mut Access) -> Option<SocketConfig> {
        if let Some(readers) = &raw.metrics_readers {
            access.metrics_readers = self.readers(&["socket", "metrics_readers"], readers);
        }
        if raw.enabled == Some(false) {
            return None;
        }
        let path = PathBuf::from(raw.path.as_deref().unwrap_or(DEFAULT_SOCKET_PATH));
        if !path.is_absolute() || path.file_name().is_none() {
            self.problem(
                &["socket", "path"],
                format!("socket path `{}` must be an absolute file path", path.display()),
            );
        } else if path.as_os_str().len() > MAX_SOCKET_PATH {
            // sun_path holds 108 bytes including the NUL; the socket is first bound under a
            // temporary name next to the final one (`.tokend-XXXXXX/s`), which needs room too.
            self.problem(
                &["socket", "path"],
                format!("a socket path must be at most {MAX_SOCKET_PATH} bytes long"),
            );
        }
        let group = raw
            .group
            .and_then(|spec| self.owner(&["socket", "group"], spec, resolve_group));
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            self.problem(&["socket", "max_connections"], "`max_connections` must be at least 1");
        }
        let max_connections_per_user = raw.max_connections_per_user.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_USER);
        if max_connections_per_user == 0 {
            self.problem(
                &["socket", "max_connections_per_user"],
                "`max_connections_per_user` must be at least 1",
            );
        }
        let header_timeout = raw.header_timeout.map_or(DEFAULT_HEADER_TIMEOUT, |s| s.0);
        if header_timeout < Duration::from_millis(100) {
            self.problem(&["socket", "header_timeout"], "`header_timeout` must be at least 100ms");
        }
        Some(SocketConfig {
            path,
            mode: raw.mode.unwrap_or(DEFAULT_SOCKET_MODE),
            group,
            max_connections,
            max_connections_per_user,
            header_timeout,
        })
    }

    fn readers(&mut self, at: &[&str], raw: &RawReaders) -> Readers {
        let mut readers = Readers::default();
        for (i, spec) in raw.users.iter().flatten().enumerate() {
            let index = i.to_string();
            readers
                .users
                .extend(self.owner(&[at, &["users", index.as_str()]].concat(), spec.clone(), resolve_user));
        }
        for (i, spec) in raw.groups.iter().flatten().enumerate() {
            let index = i.to_string();
            readers
                .groups
                .extend(self.owner(&[at, &["groups", index.as_str()]].concat(), spec.clone(), resolve_group));
        }
        readers
    }

    /// A user or group resolved to its id, or a problem at `at`.
    fn owner(&mut self, at: &[&str], spec: Principal, resolve: fn(&Principal) -> Result<u32, String>) -> Option<Owner> {
        match resolve(&spec) {
            Ok(id) => Some(Owner { spec, id }),
            Err(msg) => {
                self.problem(at, msg);
                None
            }
        }
    }

    fn client(&mut self, name: ClientName, d: &RawClient, c: RawClient) -> Option<Client> {
        let n = name.as_str();
        let at = |key: &'static str| ["clients", n, key];
        let mut ok = true;

        let allow_http = c.allow_insecure_http.or(d.allow_insecure_http).unwrap_or(false);
        let endpoint = self.endpoint(n, d, &c, allow_http);
        let client_id = match c.client_id.clone().or_else(|| d.client_id.clone()) {
            Some(id) if !id.is_empty() => Some(id),
            Some(_) => {
                self.problem(&at("client_id"), "`client_id` is empty");
                None
            }
            None => {
                self.problem(&["clients", n], format!("client `{n}` has no `client_id`"));
                None
            }
        };
        let auth = c.auth.or(d.auth).unwrap_or_default();
        let credentials = self.credentials(n, auth, d, &c, endpoint.as_ref());

        let scope = match c.scope.as_ref().or(d.scope.as_ref()) {
            None => None,
            Some(list) => {
                let words: Vec<&str> = list.0.iter().flat_map(|s| s.split_whitespace()).collect();
                if let Some(bad) = words.iter().find(|w| !w.bytes().all(is_scope_char)) {
                    self.problem(
                        &at("scope"),
                        format!("scope `{bad}` contains a character RFC 6749 §3.3 does not allow"),
                    );
                    ok = false;
                }
                (!words.is_empty()).then(|| words.join(" "))
            }
        };
        let mut resources = Vec::new();
        if let Some(list) = c.resource.as_ref().or(d.resource.as_ref()) {
            for r in &list.0 {
                match Url::parse(r) {
                    Ok(u) if u.fragment().is_none() => resources.push(r.clone()),
                    _ => {
                        self.problem(
                            &at("resource"),
                            format!("resource `{r}` must be an absolute URI without a fragment (RFC 8707 §2)"),
                        );
                        ok = false;
                    }
                }
            }
        }
        let mut params: BTreeMap<String, String> = d.params.clone().unwrap_or_default();
        params.extend(c.params.clone().unwrap_or_default());
        for key in params.keys() {
            if RESERVED_PARAMS.contains(&key.as_str()) {
                let hint = if ["audience", "scope", "resource", "organization"].contains(&key.as_str()) {
                    format!("set it with the `{key}` key instead")
                } else {
                    "tokend sets it itself".to_owned()
                };
                self.problem(
                    &at("params"),
                    format!("parameter `{key}` cannot be set in `params`; {hint}"),
                );
                ok = false;
            }
        }
        let audience = c
            .audience
            .clone()
            .or_else(|| d.audience.clone())
            .filter(|a| !a.is_empty());
        let transport = self.transport(n, d, &c, allow_http);
        let validation = self.validation(n, d, &c, endpoint.as_ref(), audience.as_ref(), &resources, allow_http);

        let timeouts = self.timeouts(n, d, &c);
        let refresh = self.refresh(n, d, &c);
        let retry = self.retry(n, d, &c);
        let outputs = self.outputs(n, c.outputs.clone().unwrap_or_default());

        let spec = RequestSpec {
            grant: Grant {
                endpoint: endpoint?,
                client_id: client_id?,
                audience,
                scope,
                resources,
                organization: c
                    .organization
                    .clone()
                    .or_else(|| d.organization.clone())
                    .filter(|o| !o.is_empty()),
                params: params.into_iter().collect(),
            },
            credentials: credentials?,
            transport: transport?,
            validation: validation?,
        };
        let client = Client {
            name: name.clone(),
            spec: Arc::new(spec),
            timeouts: timeouts?,
            refresh: refresh?,
            retry: retry?,
            outputs: outputs?,
        };
        ok.then_some(client)
    }

    /// `token_url`, or `issuer` for discovery: exactly one of them.
    fn endpoint(&mut self, n: &str, d: &RawClient, c: &RawClient, allow_http: bool) -> Option<Endpoint> {
        // A client's own setting replaces an inherited one of either kind.
        let (token_url, issuer) = if c.token_url.is_some() || c.issuer.is_some() {
            (c.token_url.as_ref(), c.issuer.as_ref())
        } else {
            (d.token_url.as_ref(), d.issuer.as_ref())
        };
        match (token_url, issuer) {
            (Some(_), Some(_)) => {
                self.problem(
                    &["clients", n, "issuer"],
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
            (Some(url), None) => match check_idp_url(url, allow_http, "token URL") {
                Ok(url) => Some(Endpoint::TokenUrl(url)),
                Err(msg) => {
                    self.problem(&["clients", n, "token_url"], msg);
                    None
                }
            },
            (None, Some(url)) => match check_idp_url(url, allow_http, "issuer") {
                Ok(url) => Some(Endpoint::Issuer(url)),
                Err(msg) => {
                    self.problem(&["clients", n, "issuer"], msg);
                    None
                }
            },
        }
    }

    /// The credentials `auth` needs, and nothing another method would use.
    fn credentials(
        &mut self,
        n: &str,
        auth: AuthMethod,
        d: &RawClient,
        c: &RawClient,
        endpoint: Option<&Endpoint>,
    ) -> Option<Credentials> {
        let at = |key: &'static str| ["clients", n, key];
        let pick = |f: fn(&RawClient) -> Option<String>| f(c).or_else(|| f(d));
        let secret = c.client_secret.clone().or_else(|| d.client_secret.clone());
        let private_key = pick(|r| r.private_key.clone());
        let certificate = pick(|r| r.client_certificate.clone());
        let cert_key = pick(|r| r.client_key.clone());
        let key_id = pick(|r| r.key_id.clone());
        let assertion_audience = pick(|r| r.assertion_audience.clone());
        let signing_alg = c.signing_alg.or(d.signing_alg);
        let method = auth.as_str();
        let unused = |this: &mut Self, present: bool, key: &'static str, belongs: &str| {
            if present {
                this.problem(
                    &at(key),
                    format!("`{key}` is used only with `auth: {belongs}`, not `{method}`; remove it"),
                );
            }
        };
        let is_assertion = auth == AuthMethod::PrivateKeyJwt;
        let is_mtls = auth == AuthMethod::TlsClientAuth;
        // Only what the client writes itself is questioned: settings inherited from `defaults`
        // for other clients' methods are simply not used by this one.
        if !is_assertion {
            unused(self, c.private_key.is_some(), "private_key", "private_key_jwt");
            unused(self, c.key_id.is_some(), "key_id", "private_key_jwt");
            unused(self, c.signing_alg.is_some(), "signing_alg", "private_key_jwt");
            unused(
                self,
                c.assertion_audience.is_some(),
                "assertion_audience",
                "private_key_jwt",
            );
        }
        if !is_mtls {
            unused(
                self,
                c.client_certificate.is_some(),
                "client_certificate",
                "tls_client_auth",
            );
            unused(self, c.client_key.is_some(), "client_key", "tls_client_auth");
        }
        if is_assertion || is_mtls {
            unused(
                self,
                c.client_secret.is_some(),
                "client_secret",
                "client_secret_post` or `client_secret_basic",
            );
        }
        let file = |this: &mut Self, value: Option<String>, key: &'static str| -> Option<PathBuf> {
            match value {
                None => {
                    this.problem(
                        &["clients", n],
                        format!("client `{n}` uses `auth: {method}` but has no `{key}`"),
                    );
                    None
                }
                Some(p) if !Path::new(&p).is_absolute() => {
                    this.problem(&at(key), format!("`{p}` must be an absolute path"));
                    None
                }
                Some(p) => Some(PathBuf::from(p)),
            }
        };
        match auth {
            AuthMethod::ClientSecretPost | AuthMethod::ClientSecretBasic => match secret {
                Some(raw) => self.secret(raw, at("client_secret").to_vec()).map(|source| {
                    if auth == AuthMethod::ClientSecretBasic {
                        Credentials::SecretBasic(source)
                    } else {
                        Credentials::SecretPost(source)
                    }
                }),
                None => {
                    self.problem(
                        &["clients", n],
                        format!(
                            "client `{n}` has no `client_secret`; use {{ file: PATH }}, {{ env: VAR }} or {{ credential: NAME }}"
                        ),
                    );
                    None
                }
            },
            AuthMethod::PrivateKeyJwt => {
                let path = file(self, private_key, "private_key");
                if let Some(alg) = signing_alg
                    && ![JwsAlg::Rs256, JwsAlg::Ps256, JwsAlg::Es256, JwsAlg::EdDsa].contains(&alg)
                {
                    self.problem(
                        &at("signing_alg"),
                        format!("client assertions are signed with RS256, PS256, ES256 or EdDSA, not {alg}"),
                    );
                }
                let audience = match assertion_audience.as_deref() {
                    None | Some("token_endpoint") => AssertionAudience::TokenEndpoint,
                    Some("issuer") if matches!(endpoint, Some(Endpoint::Issuer(_)) | None) => AssertionAudience::Issuer,
                    Some("issuer") => {
                        self.problem(
                            &at("assertion_audience"),
                            "`issuer` needs the client to use `issuer:` (discovery); otherwise write the audience URL itself",
                        );
                        AssertionAudience::Issuer
                    }
                    Some(other) if Url::parse(other).is_ok() => AssertionAudience::Url(other.to_owned()),
                    Some(other) => {
                        self.problem(
                            &at("assertion_audience"),
                            format!("`{other}` is not `token_endpoint`, `issuer` or a URL"),
                        );
                        AssertionAudience::TokenEndpoint
                    }
                };
                Some(Credentials::PrivateKey(PrivateKey {
                    path: path?,
                    key_id,
                    alg: signing_alg,
                    audience,
                }))
            }
            AuthMethod::TlsClientAuth => {
                let certificate = file(self, certificate, "client_certificate");
                let key = file(self, cert_key, "client_key");
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

    fn transport(&mut self, n: &str, d: &RawClient, c: &RawClient, allow_insecure_http: bool) -> Option<Transport> {
        let at = |key: &'static str| ["clients", n, key];
        let mut ok = true;
        let ca_file = match c.ca_file.clone().or_else(|| d.ca_file.clone()) {
            Some(p) if !Path::new(&p).is_absolute() => {
                self.problem(&at("ca_file"), format!("`{p}` must be an absolute path"));
                ok = false;
                None
            }
            other => other.map(PathBuf::from),
        };
        let no_proxy: Vec<String> = c
            .no_proxy
            .clone()
            .or_else(|| d.no_proxy.clone())
            .map(|l| l.0)
            .unwrap_or_default();
        let proxy = match c.proxy.clone().or_else(|| d.proxy.clone()) {
            None => Proxy::Environment,
            Some(p) if p == "none" => Proxy::Disabled,
            Some(p) => match Url::parse(&p) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Proxy::Url {
                    url,
                    no_proxy: no_proxy.clone(),
                },
                _ => {
                    self.problem(&at("proxy"), format!("`{p}` is not `none` or an http(s):// proxy URL"));
                    ok = false;
                    Proxy::Environment
                }
            },
        };
        // Beside no proxy URL it would do nothing: say so where it is written. A client that
        // turns an inherited proxy off simply drops the inherited list.
        let defaults_have_url = d.proxy.as_deref().is_some_and(|p| p != "none");
        for (written, key) in [
            (
                c.no_proxy.is_some() && !matches!(proxy, Proxy::Url { .. }),
                ["clients", n, "no_proxy"],
            ),
            (d.no_proxy.is_some() && !defaults_have_url, ["defaults", "no_proxy", ""]),
        ] {
            if written {
                let key: Vec<&str> = key.into_iter().filter(|k| !k.is_empty()).collect();
                self.problem(
                    &key,
                    "`no_proxy` applies only with a `proxy` URL (the environment has NO_PROXY)",
                );
                ok = false;
            }
        }
        ok.then_some(Transport {
            ca_file,
            proxy,
            allow_insecure_http,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn validation(
        &mut self,
        n: &str,
        d: &RawClient,
        c: &RawClient,
        endpoint: Option<&Endpoint>,
        audience: Option<&String>,
        resources: &[String],
        allow_http: bool,
    ) -> Option<Option<Validation>> {
        // `validate: false` on the client turns inherited validation off; otherwise settings are
        // merged key by key with those under `defaults`.
        let enabled = c.validate.as_ref().or(d.validate.as_ref()).is_some_and(|v| v.enabled);
        if !enabled {
            return Some(None);
        }
        let at = |key: &'static str| ["clients", n, "validate", key];
        let (dv, cv) = (
            d.validate.clone().unwrap_or_default().settings,
            c.validate.clone().unwrap_or_default().settings,
        );
        let s = RawValidateSettings {
            issuer: cv.issuer.or(dv.issuer),
            jwks_uri: cv.jwks_uri.or(dv.jwks_uri),
            audience: cv.audience.or(dv.audience),
            algorithms: cv.algorithms.or(dv.algorithms),
            leeway: cv.leeway.or(dv.leeway),
        };
        let discovered = match endpoint {
            Some(Endpoint::Issuer(url)) => Some(url.as_str().to_owned()),
            _ => None,
        };
        let issuer = match (s.issuer, discovered) {
            (Some(i), _) => Some(Some(i)),
            (None, Some(_)) => Some(None),
            (None, None) => {
                self.problem(
                    &["clients", n, "validate"],
                    "validation needs the issuer: use `issuer:` (discovery) instead of `token_url`, or set `validate: { issuer: ..., jwks_uri: ... }`",
                );
                None
            }
        };
        let jwks_uri = match s.jwks_uri {
            Some(u) => match check_idp_url(&u, allow_http, "JWKS URL") {
                Ok(url) => Some(url),
                Err(msg) => {
                    self.problem(&at("jwks_uri"), msg);
                    return None;
                }
            },
            None if matches!(endpoint, Some(Endpoint::TokenUrl(_))) => {
                self.problem(
                    &["clients", n, "validate"],
                    "validation needs the issuer's keys: set `validate.jwks_uri`, or use `issuer:` so it is discovered",
                );
                None
            }
            None => None,
        };
        let audiences: Vec<String> = match s.audience {
            Some(list) => list.0,
            None => audience.cloned().into_iter().chain(resources.iter().cloned()).collect(),
        };
        if audiences.is_empty() {
            self.problem(
                &["clients", n, "validate"],
                "validation checks the token's `aud`, but the client asks for no `audience` or `resource`; set one (Auth0 returns an opaque, unusable token without `audience`), or `validate.audience`",
            );
        }
        let algorithms = s.algorithms.unwrap_or_else(|| JwsAlg::ALL.to_vec());
        let leeway = s.leeway.map_or(DEFAULT_LEEWAY, |l| l.0);
        if leeway > Duration::from_secs(300) {
            self.problem(
                &at("leeway"),
                "a leeway over 5m would accept tokens long expired; use at most 5m",
            );
        }
        if audiences.is_empty() || algorithms.is_empty() || leeway > Duration::from_secs(300) {
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

    fn secret(&mut self, raw: RawSecret, key: Vec<&str>) -> Option<SecretSource> {
        Some(match raw {
            RawSecret::Literal(s) => SecretSource::Literal(s),
            RawSecret::Env(var) if var.is_empty() || var.contains('=') => {
                self.problem(&key, format!("`{var}` is not an environment variable name"));
                return None;
            }
            RawSecret::Env(var) => SecretSource::Env(var),
            RawSecret::File(p) if !Path::new(&p).is_absolute() => {
                self.problem(&key, format!("secret file `{p}` must be an absolute path"));
                return None;
            }
            RawSecret::File(p) => SecretSource::File(p.into()),
            RawSecret::Credential(name) if name.is_empty() || name.contains('/') || name == "." || name == ".." => {
                self.problem(
                    &key,
                    format!("`{name}` is not a credential name (a file name in $CREDENTIALS_DIRECTORY)"),
                );
                return None;
            }
            RawSecret::Credential(name) => SecretSource::Credential(name),
        })
    }

    fn timeouts(&mut self, n: &str, d: &RawClient, c: &RawClient) -> Option<Timeouts> {
        let (dt, ct) = (d.timeouts.unwrap_or_default(), c.timeouts.unwrap_or_default());
        let t = Timeouts {
            connect: ct.connect.or(dt.connect).map_or(DEFAULT_TIMEOUTS.connect, |s| s.0),
            request: ct.request.or(dt.request).map_or(DEFAULT_TIMEOUTS.request, |s| s.0),
        };
        let mut ok = true;
        for (key, value) in [("connect", t.connect), ("request", t.request)] {
            if value.is_zero() {
                self.problem(&["clients", n, "timeouts", key], "a timeout must be longer than zero");
                ok = false;
            }
        }
        ok.then_some(t)
    }

    fn refresh(&mut self, n: &str, d: &RawClient, c: &RawClient) -> Option<RefreshPolicy> {
        let (dr, cr) = (d.refresh.unwrap_or_default(), c.refresh.unwrap_or_default());
        let p = RefreshPolicy {
            at: cr.at.or(dr.at).map_or(DEFAULT_REFRESH.at, |p| p.0),
            jitter: cr.jitter.or(dr.jitter).map_or(DEFAULT_REFRESH.jitter, |p| p.0),
            min_remaining: cr
                .min_remaining
                .or(dr.min_remaining)
                .map_or(DEFAULT_REFRESH.min_remaining, |s| s.0),
            default_lifetime: cr
                .default_lifetime
                .or(dr.default_lifetime)
                .map_or(DEFAULT_REFRESH.default_lifetime, |s| s.0),
        };
        let key = |k| ["clients", n, "refresh", k];
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

    fn retry(&mut self, n: &str, d: &RawClient, c: &RawClient) -> Option<RetryPolicy> {
        let (dr, cr) = (d.retry.unwrap_or_default(), c.retry.unwrap_or_default());
        let p = RetryPolicy {
            initial: cr.initial.or(dr.initial).map_or(DEFAULT_RETRY.initial, |s| s.0),
            max: cr.max.or(dr.max).map_or(DEFAULT_RETRY.max, |s| s.0),
        };
        if p.initial < Duration::from_millis(100) {
            self.problem(
                &["clients", n, "retry", "initial"],
                "`retry.initial` must be at least 100ms",
            );
            return None;
        }
        if p.max < p.initial {
            self.problem(
                &["clients", n, "retry", "max"],
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

    fn outputs(&mut self, n: &str, raw: Vec<RawOutput>) -> Option<Vec<Output>> {
        let mut outputs = Vec::new();
        let mut ok = true;
        for (i, o) in raw.into_iter().enumerate() {
            let index = i.to_string();
            let key = |k: &'static str| -> Vec<&str> {
                let mut v = vec!["clients", n, "outputs", index.as_str()];
                if !k.is_empty() {
                    v.push(k);
                }
                v
            };
            let path = PathBuf::from(&o.path);
            if !path.is_absolute() {
                self.problem(&key("path"), format!("output path `{}` must be absolute", o.path));
                ok = false;
            } else if path.file_name().is_none()
                || o.path.ends_with('/')
                || path.components().any(|c| c == Component::ParentDir)
            {
                self.problem(
                    &key("path"),
                    format!("output path `{}` must name a file, without `..`", o.path),
                );
                ok = false;
            }
            let format = o.format.unwrap_or_default();
            if o.newline.is_some() && format != Format::Raw {
                self.problem(&key("newline"), "`newline` applies only to `format: raw`");
                ok = false;
            }
            let variable = match o.variable {
                Some(_) if format != Format::Env => {
                    self.problem(&key("variable"), "`variable` applies only to `format: env`");
                    ok = false;
                    String::new()
                }
                Some(v) if !is_env_name(&v) => {
                    self.problem(
                        &key("variable"),
                        format!("`{v}` is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
                    );
                    ok = false;
                    String::new()
                }
                Some(v) => v,
                None => DEFAULT_ENV_VARIABLE.to_owned(),
            };
            let owner = o.owner.map(|spec| self.owner(&key("owner"), spec, resolve_user));
            let group = o.group.map(|spec| self.owner(&key("group"), spec, resolve_group));
            if owner.as_ref().is_some_and(Option::is_none) || group.as_ref().is_some_and(Option::is_none) {
                ok = false;
            }
            let (owner, group) = (owner.flatten(), group.flatten());
            outputs.push(Output {
                path,
                format,
                mode: o.mode.unwrap_or(DEFAULT_MODE),
                owner,
                group,
                newline: o.newline.unwrap_or(false),
                variable,
            });
        }
        ok.then_some(outputs)
    }

    /// Checks that need every client: two writers must never race on one file.
    fn cross_checks(&mut self, clients: &[Arc<Client>], source: &Path, state_dir: &Path) {
        let mut seen: HashMap<&Path, (&str, usize)> = HashMap::new();
        for client in clients {
            for (i, output) in client.outputs.iter().enumerate() {
                let index = i.to_string();
                let key = ["clients", client.name.as_str(), "outputs", index.as_str(), "path"];
                if output.path == source {
                    self.problem(&key, "an output must not overwrite the configuration file");
                } else if output.path.starts_with(state_dir) && output.path.extension().is_some_and(|e| e == "state") {
                    self.problem(&key, "this path is reserved for tokend's own state files");
                }
                if let Some((other, j)) = seen.insert(&output.path, (client.name.as_str(), i)) {
                    self.problem(
                        &key,
                        format!(
                            "`{}` is already written by clients.{other}.outputs[{j}]; each file needs exactly one writer",
                            output.path.display()
                        ),
                    );
                }
            }
        }
    }
}

/// Makes clients with equal requests hold the same `Arc<RequestSpec>`, so that grouping them
/// (one request, one token) is a pointer comparison and the spec is stored once.
fn share_requests(clients: Vec<Client>) -> Vec<Arc<Client>> {
    let mut specs: HashSet<Arc<RequestSpec>> = HashSet::new();
    clients
        .into_iter()
        .map(|mut client| {
            match specs.get(&*client.spec) {
                Some(shared) => client.spec = shared.clone(),
                None => {
                    specs.insert(client.spec.clone());
                }
            }
            Arc::new(client)
        })
        .collect()
}

fn path_string(path: &[&str]) -> String {
    let mut out = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
fn is_scope_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn resolve_user(spec: &Principal) -> Result<u32, String> {
    match spec {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(user.uid.as_raw()),
            Ok(None) => Err(format!("there is no user `{name}` on this system")),
            Err(e) => Err(format!("cannot look up user `{name}`: {e}")),
        },
    }
}

fn resolve_group(spec: &Principal) -> Result<u32, String> {
    match spec {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(group.gid.as_raw()),
            Ok(None) => Err(format!("there is no group `{name}` on this system")),
            Err(e) => Err(format!("cannot look up group `{name}`: {e}")),
        },
    }
}

/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) if present, else `/var/lib/tokend`.
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

#[cfg(test)]
mod tests;
