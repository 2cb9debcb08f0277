//! The configuration file exactly as written: serde types that mirror the YAML. Shape errors
//! (unknown keys, wrong types, bad scalar values) are caught here, with serde_yaml's line and
//! column; everything that needs more than one value to judge is checked by `Validator` in the
//! parent module.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::values::{ClientName, JwsAlg, Mode, OneOrMany, Percent, Principal, Span};

#[derive(Deserialize, JsonSchema, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with a `clients:` key (and optionally `defaults:`, `socket:`, `metrics:`, `idp:`, `proxies:`, `fleet:`, `state_dir:`)"
)]
pub struct RawConfig {
    pub state_dir: Option<String>,
    /// Fleet mode: one refresh per client per lifetime for many hosts, through Redis/Valkey.
    pub fleet: Option<RawFleet>,
    pub socket: Option<RawSocket>,
    pub metrics: Option<RawMetrics>,
    /// How tokend treats the token servers it asks.
    pub idp: Option<RawIdp>,
    /// Local listeners that forward requests to an upstream with a client's token added.
    pub proxies: Option<Vec<RawTokenProxy>>,
    pub defaults: Option<RawClient>,
    #[serde(default)]
    pub clients: ClientMap,
}

/// `fleet:`: the shared store, the fleet's key, and this node's part.
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ redis: { url: rediss://redis.internal:6380/0 }, key: { file: /etc/tokend/secrets/fleet.key } }`"
)]
pub struct RawFleet {
    pub redis: Option<RawRedis>,
    /// The fleet's encryption key: a secret source holding 32 bytes in base64.
    pub key: Option<RawSecret>,
    /// Keeps fleets apart in one Redis.
    pub namespace: Option<String>,
    pub role: Option<FleetRole>,
}

/// `fleet.redis:` where the store is and how to log in.
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ url: rediss://redis.internal:6380/0, password: { file: /etc/tokend/secrets/redis } }`"
)]
pub struct RawRedis {
    /// `redis://`, `rediss://` (TLS) or `unix:///path.sock`.
    pub url: Option<String>,
    /// Or the master of a Sentinel-managed service.
    pub sentinel: Option<RawSentinel>,
    /// A Redis 6+ ACL user.
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    /// Extra trust roots (PEM) for `rediss://`.
    pub ca_file: Option<String>,
    /// How long a connection or one command may take before the store counts as unreachable.
    pub timeout: Option<Span>,
}

/// `fleet.redis.sentinel:` the service's name and the sentinels that know its master.
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ master: mymaster, nodes: [\"redis://s1:26379\", \"redis://s2:26379\"] }`"
)]
pub struct RawSentinel {
    pub master: Option<String>,
    pub nodes: Option<Vec<String>>,
    /// Credentials of the sentinels themselves, when they ask for them.
    pub username: Option<String>,
    pub password: Option<RawSecret>,
}

/// What this node does in the fleet.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum FleetRole {
    /// Shares the tokens it gets from the IdP and takes those another refresher got.
    #[default]
    Refresher,
    /// Never asks the IdP: serves what the refreshers put in the store; needs no credentials.
    Follower,
}

impl FleetRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetRole::Refresher => "refresher",
            FleetRole::Follower => "follower",
        }
    }
}

/// A token proxy: a listener bound to one client and one upstream base URL.
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a proxy: a mapping such as `{ client: billing, upstream: https://api.example.com/, listen: 127.0.0.1:8081 }`"
)]
pub struct RawTokenProxy {
    pub client: Option<String>,
    pub upstream: Option<String>,
    /// A loopback TCP address (`127.0.0.1:8081`), or
    pub listen: Option<String>,
    /// a Unix socket path.
    pub socket: Option<String>,
    pub mode: Option<Mode>,
    pub group: Option<Principal>,
    /// Who may use a socket proxy (default: the client's readers).
    pub readers: Option<RawReaders>,
    /// Listen on an address other hosts can reach (off: loopback only).
    pub allow_remote: Option<bool>,
    /// Plain http to an upstream that is not on loopback.
    pub allow_insecure_http: Option<bool>,
    pub max_connections: Option<usize>,
}

/// Health and metrics over TCP.
#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ listen: \"127.0.0.1:9464\" }`"
)]
pub struct RawMetrics {
    /// `IP:PORT` to serve `/healthz`, `/readyz` and `/metrics` on; off when absent.
    pub listen: Option<String>,
}

/// Limits towards the token servers.
#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ max_concurrent_requests: 8 }`"
)]
pub struct RawIdp {
    /// Requests in flight at once to one token server (scheme, host and port), all clients
    /// together.
    pub max_concurrent_requests: Option<usize>,
}

/// The Unix socket API.
#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ path: /run/tokend/tokend.sock, mode: \"0660\" }`"
)]
pub struct RawSocket {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub mode: Option<Mode>,
    pub group: Option<Principal>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    /// A connection that sends no complete request head within this time is closed (slow
    /// clients, idle keep-alive connections).
    pub header_timeout: Option<Span>,
    /// Who may read `/metrics` (besides root and tokend's own user).
    pub metrics_readers: Option<RawReaders>,
}

/// Users and groups allowed to read something over the socket.
#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ users: [billing], groups: [tokend-readers] }`"
)]
pub struct RawReaders {
    pub users: Option<Vec<Principal>>,
    pub groups: Option<Vec<Principal>>,
}

/// One client, or the `defaults` every client inherits. `outputs` is only valid on a client.
#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a client: a mapping such as `{ token_url: …, client_id: …, client_secret: { file: … } }`"
)]
pub struct RawClient {
    pub token_url: Option<String>,
    /// OIDC discovery instead of `token_url`.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<RawSecret>,
    pub auth: Option<AuthMethod>,
    /// `client_secret_basic`: how id and secret are encoded before Base64 (default `form`).
    pub basic_encoding: Option<BasicEncoding>,
    /// `private_key_jwt`: the PEM private key that signs client assertions.
    pub private_key: Option<RawPem>,
    /// `private_key_jwt`: the `kid` header of client assertions.
    pub key_id: Option<String>,
    /// `private_key_jwt`: the signing algorithm (default: from the key type).
    pub signing_alg: Option<JwsAlg>,
    /// `private_key_jwt`: the assertion's `aud`: `token_endpoint` (default), `issuer`, or a URL.
    pub assertion_audience: Option<RawAssertionAudience>,
    /// `tls_client_auth`: the PEM client certificate (chain) and its key.
    pub client_certificate: Option<RawPem>,
    pub client_key: Option<RawPem>,
    /// Extra trust roots (PEM) for the IdP, on top of the system's.
    pub ca_file: Option<String>,
    /// `none`, or a proxy URL; default: the HTTPS_PROXY/NO_PROXY environment.
    pub proxy: Option<RawProxy>,
    /// Hosts (suffixes) that bypass `proxy`.
    pub no_proxy: Option<OneOrMany>,
    /// Verify tokens before publishing them.
    pub validate: Option<RawValidate>,
    pub audience: Option<String>,
    pub scope: Option<OneOrMany>,
    /// Refuse a token granted without these scopes (`true`: every scope in `scope`).
    pub require_scope: Option<RawRequireScope>,
    pub resource: Option<OneOrMany>,
    pub organization: Option<String>,
    pub params: Option<BTreeMap<String, String>>,
    pub allow_insecure_http: Option<bool>,
    pub timeouts: Option<RawTimeouts>,
    pub refresh: Option<RawRefresh>,
    pub retry: Option<RawRetry>,
    pub outputs: Option<Vec<RawOutput>>,
    /// Who may read this client's token over the socket (besides root and tokend's own user).
    pub readers: Option<RawReaders>,
    /// What to run or signal once a new token's files are written.
    pub hooks: Option<Vec<RawHook>>,
    /// Share this client's tokens with the fleet (default: yes, when `fleet:` is set).
    pub fleet: Option<bool>,
    /// This client's own fleet key, instead of `fleet.key`.
    pub fleet_key: Option<RawSecret>,
}

/// One hook: `exec` (a command, no shell) or `signal` (to the pid in a pid file).
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a hook: a mapping such as `{ exec: [/usr/bin/systemctl, reload, app.service] }` or `{ signal: SIGHUP, pid_file: /run/app.pid }`"
)]
pub struct RawHook {
    pub exec: Option<Vec<String>>,
    pub signal: Option<String>,
    pub pid_file: Option<String>,
    pub timeout: Option<Span>,
    pub retries: Option<u32>,
    /// Also run for a saved token reused at start-up (default: only for new tokens).
    pub on_reuse: Option<bool>,
    pub working_directory: Option<String>,
    pub user: Option<Principal>,
    /// Pass the token in this environment variable (by default it is not passed at all).
    pub token_variable: Option<String>,
    pub environment: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ connect: 10s, request: 30s }`"
)]
pub struct RawTimeouts {
    pub connect: Option<Span>,
    pub request: Option<Span>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ at: 80%, jitter: 10%, min_remaining: 2m }`"
)]
pub struct RawRefresh {
    pub at: Option<Percent>,
    pub jitter: Option<Percent>,
    pub min_remaining: Option<Span>,
    pub default_lifetime: Option<Span>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy)]
#[serde(deny_unknown_fields, expecting = "a mapping such as `{ initial: 1s, max: 5m }`")]
pub struct RawRetry {
    pub initial: Option<Span>,
    pub max: Option<Span>,
}

#[derive(Deserialize, JsonSchema, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "an output: a mapping such as `{ path: /run/tokend/billing.token }`"
)]
pub struct RawOutput {
    /// The file to write: an absolute path.
    // Required; optional here so that the validator, not serde, says it is missing (and a list
    // element taken out by `shape::repair` still reads). The schema says it is required.
    #[schemars(required)]
    pub path: Option<String>,
    pub format: Option<Format>,
    pub mode: Option<Mode>,
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
    /// `raw` only: end the file with a newline (default: no newline, so `$(cat file)` and
    /// `-H "Authorization: Bearer $(cat file)"` get exactly the token).
    pub newline: Option<bool>,
    /// `env` only: the variable name (default `ACCESS_TOKEN`).
    pub variable: Option<String>,
    /// `template` only: the template itself, or the absolute path of a file holding it.
    pub template: Option<String>,
    pub template_file: Option<String>,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3).
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// id and secret in the form body (Auth0's documented default).
    #[default]
    ClientSecretPost,
    /// id and secret form-urlencoded, then HTTP Basic (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// A client assertion signed with the client's private key (RFC 7523 §2.2, OIDC Core §9).
    PrivateKeyJwt,
    /// A client certificate on the TLS connection (RFC 8705 §2.1).
    TlsClientAuth,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
        }
    }
}

/// How `client_secret_basic` encodes the id and secret before joining them with `:` and
/// Base64-encoding them.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum BasicEncoding {
    /// `application/x-www-form-urlencoded` first, as RFC 6749 §2.3.1 says.
    #[default]
    Form,
    /// As they are (RFC 7617), for IdPs that do not decode them.
    Raw,
}

impl BasicEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            BasicEncoding::Form => "form",
            BasicEncoding::Raw => "raw",
        }
    }
}

/// `require_scope`: `true` (every scope asked for) or the scopes themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawRequireScope {
    All(bool),
    These(OneOrMany),
}

impl<'de> Deserialize<'de> for RawRequireScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRequireScope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`true`, `false`, or the scopes a token must have (`a b` or `[a, b]`)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawRequireScope, E> {
                Ok(RawRequireScope::All(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRequireScope, E> {
                Ok(RawRequireScope::These(OneOrMany(vec![v.to_owned()])))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawRequireScope, A::Error> {
                OneOrMany::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(RawRequireScope::These)
            }
        }
        d.deserialize_any(V)
    }
}

/// What a token file contains.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The token alone.
    #[default]
    Raw,
    /// The token's JSON document (access_token, token_type, expires_in, scope, expires_at, …).
    Json,
    /// `ACCESS_TOKEN=…`, for systemd `EnvironmentFile=` and shell `. file`.
    Env,
    /// `Authorization: Bearer …`, for `curl -H @file`.
    Header,
    /// Rendered from `template` or `template_file`.
    Template,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
            Format::Env => "env",
            Format::Header => "header",
            Format::Template => "template",
        }
    }
}

/// `assertion_audience`: one of two keywords, or an audience written out (checked to be a URL
/// by the validator, which reports it at the key with every other problem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawAssertionAudience {
    TokenEndpoint,
    Issuer,
    Url(String),
}

impl<'de> Deserialize<'de> for RawAssertionAudience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "token_endpoint" => RawAssertionAudience::TokenEndpoint,
            "issuer" => RawAssertionAudience::Issuer,
            other => RawAssertionAudience::Url(other.to_owned()),
        })
    }
}

/// `proxy`: `none`, or a proxy URL (checked by the validator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawProxy {
    None,
    Url(String),
}

impl<'de> Deserialize<'de> for RawProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)? {
            keyword if keyword == "none" => RawProxy::None,
            url => RawProxy::Url(url),
        })
    }
}

/// Where a client secret comes from: inline, or `{file: …}`, `{env: …}`, `{credential: …}`.
#[derive(Clone)]
pub enum RawSecret {
    Literal(SecretString),
    /// A path, and whether its group may read it too (`group_readable: true`).
    File(String, bool),
    Env(String),
    Credential(String),
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const UNQUOTED: &str = "a secret written inline must be a quoted string (YAML read this one as a number or boolean); better, move it to { file: PATH }";
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret string, or one of { file: PATH }, { env: VAR }, { credential: NAME }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSecret, E> {
                Ok(RawSecret::Literal(SecretString::from(v)))
            }
            // The default messages would quote the value, which is the secret itself.
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
                Err(E::custom(UNQUOTED))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
                Err(E::custom(UNQUOTED))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
                Err(E::custom(UNQUOTED))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
                Err(E::custom(UNQUOTED))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSecret, A::Error> {
                source_map(map)
            }
        }
        d.deserialize_any(V)
    }
}

/// `{ file: PATH }`, `{ env: VAR }` or `{ credential: NAME }`: exactly one of them; with
/// `file`, optionally `group_readable: true`.
fn source_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<RawSecret, A::Error> {
    const KEYS: &[&str] = &["file", "env", "credential", "group_readable"];
    let mut found: Option<RawSecret> = None;
    let mut group_readable = None;
    while let Some(key) = map.next_key::<String>()? {
        if key == "group_readable" {
            group_readable = Some(map.next_value::<bool>()?);
            continue;
        }
        let value: String = map.next_value()?;
        let source = match key.as_str() {
            "file" => RawSecret::File(value, false),
            "env" => RawSecret::Env(value),
            "credential" => RawSecret::Credential(value),
            other => return Err(de::Error::unknown_field(other, KEYS)),
        };
        if found.is_some() {
            return Err(de::Error::custom(
                "a secret takes exactly one source: `file`, `env` or `credential`",
            ));
        }
        found = Some(source);
    }
    match (found, group_readable) {
        (None, _) => Err(de::Error::custom(
            "a secret needs one source: `file`, `env` or `credential`",
        )),
        (Some(RawSecret::File(path, _)), Some(shared)) => Ok(RawSecret::File(path, shared)),
        (Some(_), Some(_)) => Err(de::Error::custom("`group_readable` goes with `file`")),
        (Some(source), None) => Ok(source),
    }
}

/// `private_key`, `client_certificate`, `client_key`: a PEM file's path, or the same sources as
/// `client_secret` (`{ file }`, `{ env }`, `{ credential }` for systemd `LoadCredential=`).
/// A bare string is a path, never the PEM itself (which does not belong in the config file).
#[derive(Clone)]
pub enum RawPem {
    Path(String),
    /// Never `RawSecret::Literal`.
    Source(RawSecret),
}

impl<'de> Deserialize<'de> for RawPem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "the absolute path of a PEM file, or one of { file: PATH }, { env: VAR }, { credential: NAME }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPem, E> {
                Ok(RawPem::Path(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPem, A::Error> {
                source_map(map).map(RawPem::Source)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `clients` mapping in document order. A name that appears again is kept aside in
/// `duplicates` (YAML would silently keep the last one) so validation can point at it.
#[derive(Default)]
pub struct ClientMap {
    pub clients: Vec<(ClientName, RawClient)>,
    pub duplicates: Vec<ClientName>,
}

impl<'de> Deserialize<'de> for ClientMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClientMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from client names to client settings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<ClientMap, E> {
                Ok(ClientMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientMap, A::Error> {
                let mut result = ClientMap::default();
                while let Some(name) = map.next_key::<ClientName>()? {
                    let client = map.next_value::<RawClient>()?;
                    if result.clients.iter().any(|(n, _)| *n == name) {
                        result.duplicates.push(name);
                    } else {
                        result.clients.push((name, client));
                    }
                }
                Ok(result)
            }
        }
        d.deserialize_any(V)
    }
}

/// `validate: true`, or `validate: { issuer, jwks_uri, audience, algorithms, leeway }`.
#[derive(Clone, Default)]
pub struct RawValidate {
    pub enabled: bool,
    pub settings: RawValidateSettings,
}

#[derive(Deserialize, JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields, expecting = "a mapping such as `{ issuer: …, audience: … }`")]
pub struct RawValidateSettings {
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub audience: Option<OneOrMany>,
    pub algorithms: Option<Vec<JwsAlg>>,
    pub leeway: Option<Span>,
}

impl<'de> Deserialize<'de> for RawValidate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValidate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false`, or { issuer, jwks_uri, audience, algorithms, leeway }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValidate, E> {
                Ok(RawValidate {
                    enabled: v,
                    settings: RawValidateSettings::default(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawValidate, A::Error> {
                let settings = RawValidateSettings::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawValidate {
                    enabled: true,
                    settings,
                })
            }
        }
        d.deserialize_any(V)
    }
}
