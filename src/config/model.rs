//! The validated configuration: what the rest of tokend reads. Every value here has passed the
//! checks in `validator`, and `defaults` are already applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::raw::{AuthMethod, BasicEncoding, FleetRole, Format};
use super::values::{ClientName, JwsAlg, Mode, Principal};
use crate::secret::SecretSource;

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
    /// Where to serve `/healthz`, `/readyz` and `/metrics` over TCP (`metrics.listen`), if at
    /// all. Never a token: anyone who can reach the address may read these.
    pub metrics_listen: Option<SocketAddr>,
    /// Who may read what over the socket. Kept apart from `Client`, so that changing readers
    /// never restarts a client's refresh.
    pub access: Access,
    /// Token proxies (`proxies:`).
    pub proxies: Vec<TokenProxy>,
    /// Requests in flight at once to one token server (`idp.max_concurrent_requests`).
    pub max_concurrent_requests: usize,
    /// Fleet mode (`fleet:`): tokens shared with other hosts through Redis.
    pub fleet: Option<Arc<Fleet>>,
}

/// Fleet mode: hosts that share one refresh per client per lifetime through a Redis (or
/// Valkey) they all reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fleet {
    pub redis: RedisConfig,
    /// The fleet's key (32 bytes, base64), sealing every value in the store.
    pub key: SecretSource,
    /// Keeps fleets apart in one Redis: the second part of every key.
    pub namespace: String,
    pub role: FleetRole,
}

/// The namespace when `fleet.namespace` is not set.
pub const DEFAULT_FLEET_NAMESPACE: &str = "default";
/// How long a connection or a command to the store may take, unless `fleet.redis.timeout` says.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the store is and how tokend logs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisConfig {
    pub endpoint: RedisEndpoint,
    /// A Redis 6+ ACL user; the default user when unset.
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// Extra trust roots for TLS (`rediss://`), on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// Bounds connecting and every command: past it, the store counts as unreachable.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisEndpoint {
    /// `redis://`, `rediss://` or `unix://`, without credentials.
    Url(Url),
    /// The current master of a service that Redis Sentinel watches.
    Sentinel {
        master: String,
        /// `redis://` or `rediss://` URLs of the sentinels.
        nodes: Vec<Url>,
        username: Option<String>,
        password: Option<SecretSource>,
    },
}

impl RedisEndpoint {
    pub fn describe(&self) -> String {
        match self {
            RedisEndpoint::Url(url) => url.to_string(),
            RedisEndpoint::Sentinel { master, nodes, .. } => format!(
                "the master of `{master}`, from the sentinels {}",
                nodes.iter().map(Url::as_str).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Whether TLS protects the way to the store.
    pub fn is_tls(&self) -> bool {
        match self {
            RedisEndpoint::Url(url) => url.scheme() == "rediss",
            RedisEndpoint::Sentinel { nodes, .. } => nodes.iter().all(|u| u.scheme() == "rediss"),
        }
    }
}

/// How a client takes part in the fleet (`fleet: true`, the default when `fleet:` is set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetUse {
    /// The client's own key (`fleet_key`), instead of the fleet's.
    pub key: Option<SecretSource>,
    /// The fleet's settings: a reload that changes them restarts every shared group.
    pub fleet: Arc<Fleet>,
}

/// `idp.max_concurrent_requests` when unset: a thousand clients due at once share a few
/// connections instead of opening a thousand (browsers open 6 per host).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8;
/// The most `idp.max_concurrent_requests` may be.
pub const MAX_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// A listener whose requests go to `upstream` with the client's current token added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProxy {
    pub client: ClientName,
    /// The base URL: a request for `/a/b?c` goes to `upstream` + `a/b?c`.
    pub upstream: Url,
    pub bind: ProxyBind,
    /// Who may connect to a Unix socket proxy (root and tokend's own user always may).
    pub readers: Readers,
    pub max_connections: usize,
    /// How the upstream is reached: the client's `ca_file` and `proxy`.
    pub transport: Transport,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyBind {
    Tcp(SocketAddr),
    Unix {
        path: PathBuf,
        mode: Mode,
        group: Option<Owner>,
    },
}

pub const DEFAULT_PROXY_CONNECTIONS: usize = 256;
pub const DEFAULT_PROXY_SOCKET_MODE: Mode = Mode::new(0o660);

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
    /// Run or signalled after each new token is written (`hooks`).
    pub hooks: Vec<Hook>,
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
    /// Scopes the granted token must have (`require_scope`); empty: a narrower grant is only
    /// warned about.
    pub required_scope: Vec<String>,
    /// Shared with the fleet: the token comes from the store when another host got it first.
    /// Not part of the fingerprint: where a token came from does not change what it is.
    pub fleet: Option<FleetUse>,
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
    /// The token endpoint's or the issuer's URL.
    pub fn url(&self) -> &Url {
        match self {
            Endpoint::TokenUrl(url) | Endpoint::Issuer(url) => url,
        }
    }

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
    /// `client_secret_basic`: id and secret form-urlencoded (unless `basic_encoding: raw`),
    /// then HTTP Basic (RFC 6749 §2.3.1).
    SecretBasic {
        secret: SecretSource,
        encoding: BasicEncoding,
    },
    /// `private_key_jwt`: a signed client assertion (RFC 7523 §2.2).
    PrivateKey(PrivateKey),
    /// `tls_client_auth`: a client certificate (chain) and its key, both PEM (RFC 8705), from a
    /// file, the environment or a systemd credential.
    Certificate {
        certificate: SecretSource,
        key: SecretSource,
    },
    /// None: a fleet follower never asks the IdP; its tokens come from the fleet's refreshers.
    Follower,
}

impl Credentials {
    /// The client secret of `client_secret_post` and `client_secret_basic`.
    pub fn secret(&self) -> Option<&SecretSource> {
        match self {
            Credentials::SecretPost(secret) | Credentials::SecretBasic { secret, .. } => Some(secret),
            _ => None,
        }
    }

    /// The `auth` method, or `None` for a follower, which authenticates nowhere.
    pub fn method(&self) -> Option<AuthMethod> {
        match self {
            Credentials::SecretPost(_) => Some(AuthMethod::ClientSecretPost),
            Credentials::SecretBasic { .. } => Some(AuthMethod::ClientSecretBasic),
            Credentials::PrivateKey(_) => Some(AuthMethod::PrivateKeyJwt),
            Credentials::Certificate { .. } => Some(AuthMethod::TlsClientAuth),
            Credentials::Follower => None,
        }
    }
}

/// How `private_key_jwt` assertions are made. The key is read for every assertion, so a
/// rotated key is used from the next request on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrivateKey {
    /// The PEM private key: a file, the environment or a systemd credential.
    pub key: SecretSource,
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

/// What to do once a client's new token is in all its files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hook {
    pub action: HookAction,
    /// `exec`: how long the command may run before its process group is killed.
    pub timeout: Duration,
    /// Further attempts after a failure, with backoff (1 s, doubling).
    pub retries: u32,
    /// Also run for a saved token reused at start-up.
    pub on_reuse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HookAction {
    /// A command, run without a shell in its own process group, with a clean environment.
    Exec {
        argv: Vec<String>,
        working_directory: Option<PathBuf>,
        /// Run as this user (and its primary group): needs tokend to run as root.
        user: Option<Owner>,
        /// The environment variable that carries the token, when asked for.
        token_variable: Option<String>,
        environment: Vec<(String, String)>,
    },
    /// A signal to the process whose pid a pid file holds.
    Signal {
        signal: i32,
        name: String,
        pid_file: PathBuf,
    },
}

pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HOOK_RETRIES: u32 = 3;

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
    /// `template`: the template, compiled and tried when the config was loaded.
    pub template: Option<std::sync::Arc<crate::config::template::OutputTemplate>>,
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
