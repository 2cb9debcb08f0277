//! The configuration: YAML read into raw serde types (`raw`), then validated into the types the
//! rest of tokend uses (`Config`, `Client`). Validation collects every problem it finds and points
//! each one at its file, line, column and key.

mod error;
mod raw;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use error::{ConfigError, Problem};
pub use raw::{AuthMethod, Format};
pub use values::{ClientName, Mode, Principal};

use crate::secret::SecretSource;
use raw::{RawClient, RawConfig, RawOutput, RawReaders, RawSecret, RawSocket};

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
    pub grant: Grant,
    pub auth: AuthMethod,
    pub secret: SecretSource,
    pub timeouts: Timeouts,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub outputs: Vec<Output>,
}

/// What identifies a token: two clients with equal grants would receive interchangeable tokens,
/// so they share one request, and a saved token is reused only for an equal grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub token_url: Url,
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

impl Grant {
    /// A stable digest of the grant, stored with saved tokens to decide whether they may be reused.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "token_url": self.token_url.as_str(),
            "client_id": self.client_id,
            "audience": self.audience,
            "scope": self.scope,
            "resources": self.resources,
            "organization": self.organization,
            "params": self.params,
        });
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.to_string().as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

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
                clients.push(Arc::new(client));
            }
        }
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
        let group = raw.group.and_then(|spec| match resolve_group(&spec) {
            Ok(id) => Some(Owner { spec, id }),
            Err(msg) => {
                self.problem(&["socket", "group"], msg);
                None
            }
        });
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
            match resolve_user(spec) {
                Ok(id) => readers.users.push(Owner { spec: spec.clone(), id }),
                Err(msg) => self.problem(&[at, &["users", index.as_str()]].concat(), msg),
            }
        }
        for (i, spec) in raw.groups.iter().flatten().enumerate() {
            let index = i.to_string();
            match resolve_group(spec) {
                Ok(id) => readers.groups.push(Owner { spec: spec.clone(), id }),
                Err(msg) => self.problem(&[at, &["groups", index.as_str()]].concat(), msg),
            }
        }
        readers
    }

    fn client(&mut self, name: ClientName, d: &RawClient, c: RawClient) -> Option<Client> {
        let n = name.as_str();
        let at = |key: &'static str| ["clients", n, key];
        let mut ok = true;

        let allow_http = c.allow_insecure_http.or(d.allow_insecure_http).unwrap_or(false);
        let token_url = match c.token_url.as_ref().or(d.token_url.as_ref()) {
            None => {
                self.problem(
                    &["clients", n],
                    format!("client `{n}` has no `token_url`; set it here or under `defaults`"),
                );
                None
            }
            Some(url) => {
                let key: &[&str] = if c.token_url.is_some() {
                    &at("token_url")
                } else {
                    &["defaults", "token_url"]
                };
                match check_token_url(url, allow_http) {
                    Ok(url) => Some(url),
                    Err(msg) => {
                        self.problem(key, msg);
                        None
                    }
                }
            }
        };
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
        let secret = match c.client_secret.clone().or_else(|| d.client_secret.clone()) {
            Some(raw) => self.secret(
                raw,
                if c.client_secret.is_some() {
                    at("client_secret").to_vec()
                } else {
                    vec!["defaults", "client_secret"]
                },
            ),
            None => {
                self.problem(
                    &["clients", n],
                    format!("client `{n}` has no `client_secret`; use {{ file: PATH }}, {{ env: VAR }} or {{ credential: NAME }}"),
                );
                None
            }
        };

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

        let timeouts = self.timeouts(n, d, &c);
        let refresh = self.refresh(n, d, &c);
        let retry = self.retry(n, d, &c);
        let outputs = self.outputs(n, c.outputs.clone().unwrap_or_default());

        let client = Client {
            name: name.clone(),
            grant: Grant {
                token_url: token_url?,
                client_id: client_id?,
                audience: c
                    .audience
                    .clone()
                    .or_else(|| d.audience.clone())
                    .filter(|a| !a.is_empty()),
                scope,
                resources,
                organization: c
                    .organization
                    .clone()
                    .or_else(|| d.organization.clone())
                    .filter(|o| !o.is_empty()),
                params: params.into_iter().collect(),
            },
            auth: c.auth.or(d.auth).unwrap_or_default(),
            secret: secret?,
            timeouts: timeouts?,
            refresh: refresh?,
            retry: retry?,
            outputs: outputs?,
        };
        ok.then_some(client)
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
            let owner = o.owner.and_then(|spec| match resolve_user(&spec) {
                Ok(id) => Some(Owner { spec, id }),
                Err(msg) => {
                    self.problem(&key("owner"), msg);
                    ok = false;
                    None
                }
            });
            let group = o.group.and_then(|spec| match resolve_group(&spec) {
                Ok(id) => Some(Owner { spec, id }),
                Err(msg) => {
                    self.problem(&key("group"), msg);
                    ok = false;
                    None
                }
            });
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

/// `https://` always; `http://` only to a loopback host or with `allow_insecure_http: true`,
/// because the client secret travels in the request.
fn check_token_url(text: &str, allow_http: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the token URL must not contain credentials; use `client_id` and `client_secret`".into());
    }
    if url.fragment().is_some() {
        return Err("the token URL must not have a #fragment (RFC 6749 §3.2)".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_http || is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "`{text}` uses plain http, which would send the client secret unencrypted; use https, or set `allow_insecure_http: true` on the client if you really mean it"
        )),
        other => Err(format!("unsupported URL scheme `{other}`; the token URL must be https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
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
