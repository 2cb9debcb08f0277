//! `fleet:` — the shared store (one Redis URL, or a Sentinel-managed master), the fleet's key,
//! the namespace and this node's role — and how each client takes part (`fleet`, `fleet_key`).

use std::path::{Path, PathBuf};

use url::Url;

use super::{ClientCtx, Validator};
use crate::config::model::{
    DEFAULT_FLEET_NAMESPACE, DEFAULT_STORE_TIMEOUT, Fleet, FleetUse, RedisConfig, RedisEndpoint,
};
use crate::config::raw::{FleetRole, RawFleet, RawRedis, RawSecret, RawSentinel};
use crate::secret::SecretSource;

/// No store command may be allowed longer than this: a refresh waits on them.
const MAX_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Validator<'_> {
    pub(super) fn fleet(&mut self, raw: RawFleet) -> Option<Fleet> {
        let redis = match raw.redis {
            Some(redis) => self.redis(redis),
            None => {
                self.problem(
                    &["fleet"],
                    "`fleet` needs `redis:`, the store the fleet shares, such as `{ url: rediss://redis.internal:6380/0 }`",
                );
                None
            }
        };
        let key = match raw.key {
            Some(key) => self.secret(key, &["fleet", "key"]),
            None => {
                self.problem(
                    &["fleet"],
                    "`fleet` needs `key:`, the fleet's encryption key: `{ file: /etc/tokend/secrets/fleet.key }` (make one with `tokend fleet keygen`)",
                );
                None
            }
        };
        let namespace = raw.namespace.unwrap_or_else(|| DEFAULT_FLEET_NAMESPACE.to_owned());
        let namespace_ok = is_name(&namespace);
        if !namespace_ok {
            self.problem(
                &["fleet", "namespace"],
                format!(
                    "`{namespace}` is not a namespace: use 1 to 64 of A-Z a-z 0-9 . _ - (it is part of every Redis key)"
                ),
            );
        }
        let (redis, key) = (redis?, key?);
        namespace_ok.then_some(Fleet {
            redis,
            key,
            namespace,
            role: raw.role.unwrap_or_default(),
        })
    }

    fn redis(&mut self, raw: RawRedis) -> Option<RedisConfig> {
        let at = |k: &'static str| ["fleet", "redis", k];
        let mut ok = true;
        let endpoint = match (raw.url, raw.sentinel) {
            (Some(_), Some(_)) => {
                self.problem(
                    &at("sentinel"),
                    "give `url` (one Redis) or `sentinel` (the master of a Sentinel service), not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    &["fleet", "redis"],
                    "`redis` needs `url:` (such as `rediss://redis.internal:6380/0`) or `sentinel: { master: NAME, nodes: [...] }`",
                );
                None
            }
            (Some(url), None) => self
                .redis_url(&url, &at("url"), &["redis", "rediss", "unix", "redis+unix"])
                .map(RedisEndpoint::Url),
            (None, Some(sentinel)) => self.sentinel(sentinel),
        };
        let password = self.optional_secret(raw.password, &at("password"), &mut ok);
        let ca_file = match raw.ca_file {
            Some(p) if !Path::new(&p).is_absolute() => {
                self.problem(&at("ca_file"), format!("`{p}` must be an absolute path"));
                ok = false;
                None
            }
            other => other.map(PathBuf::from),
        };
        if ca_file.is_some() && endpoint.as_ref().is_some_and(|e| !e.is_tls()) {
            self.problem(&at("ca_file"), "`ca_file` is for TLS: use a `rediss://` URL");
            ok = false;
        }
        let timeout = raw.timeout.map_or(DEFAULT_STORE_TIMEOUT, |s| s.0);
        if timeout < std::time::Duration::from_millis(100) || timeout > MAX_STORE_TIMEOUT {
            self.problem(&at("timeout"), "`timeout` must be between 100ms and 1m");
            ok = false;
        }
        if raw.username.as_deref().is_some_and(str::is_empty) {
            self.problem(&at("username"), "`username` is empty");
            ok = false;
        }
        let endpoint = endpoint?;
        ok.then_some(RedisConfig {
            endpoint,
            username: raw.username,
            password,
            ca_file,
            timeout,
        })
    }

    fn sentinel(&mut self, raw: RawSentinel) -> Option<RedisEndpoint> {
        let at = |k: &'static str| ["fleet", "redis", "sentinel", k];
        let mut ok = true;
        let master = match raw.master {
            Some(m) if !m.is_empty() => Some(m),
            _ => {
                self.problem(
                    &["fleet", "redis", "sentinel"],
                    "`sentinel` needs `master:`, the name of the service the sentinels watch (as in `sentinel monitor NAME …`)",
                );
                None
            }
        };
        let mut nodes = Vec::new();
        match raw.nodes {
            Some(list) if !list.is_empty() => {
                for (i, text) in list.iter().enumerate() {
                    let index = i.to_string();
                    match self.redis_url(
                        text,
                        &["fleet", "redis", "sentinel", "nodes", &index],
                        &["redis", "rediss"],
                    ) {
                        Some(url) => nodes.push(url),
                        None => ok = false,
                    }
                }
            }
            _ => {
                self.problem(
                    &["fleet", "redis", "sentinel"],
                    "`sentinel` needs `nodes:`, the sentinels' URLs, such as `[\"redis://s1:26379\", \"redis://s2:26379\"]`",
                );
                ok = false;
            }
        }
        if nodes.iter().any(|u| u.scheme() == "rediss") && nodes.iter().any(|u| u.scheme() == "redis") {
            self.problem(
                &["fleet", "redis", "sentinel", "nodes"],
                "mix of `redis://` and `rediss://` sentinels: TLS is used for all or for none (the master is reached the same way); write them all alike",
            );
            ok = false;
        }
        let password = self.optional_secret(raw.password, &at("password"), &mut ok);
        let master = master?;
        ok.then_some(RedisEndpoint::Sentinel {
            master,
            nodes,
            username: raw.username,
            password,
        })
    }

    /// A secret that may be left out (a password); one given but invalid clears `ok`.
    fn optional_secret(&mut self, raw: Option<RawSecret>, at: &[&str], ok: &mut bool) -> Option<SecretSource> {
        let source = self.secret(raw?, at);
        *ok &= source.is_some();
        source
    }

    /// A store URL with one of `schemes` and no credentials in it (they go in `username` and
    /// `password`, where a secret source keeps the password out of the file).
    fn redis_url(&mut self, text: &str, at: &[&str], schemes: &[&str]) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) => url,
            // Never echoed if it may hold a password (`redis://:secret@host`).
            Err(e) if text.contains('@') => {
                self.problem(
                    at,
                    format!("this is not a URL ({e}); write it as `rediss://host:6380/0`, without credentials (they go in `username:` and `password:`)"),
                );
                return None;
            }
            Err(e) => {
                self.problem(
                    at,
                    format!("`{text}` is not a URL ({e}); write it as `rediss://host:6380/0`"),
                );
                return None;
            }
        };
        if !schemes.contains(&url.scheme()) {
            self.problem(
                at,
                format!(
                    "`{}` is not a Redis URL scheme here; use {}",
                    url.scheme(),
                    schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ")
                ),
            );
            return None;
        }
        if url.password().is_some() || !url.username().is_empty() {
            // Never echoed: the URL holds a password.
            self.problem(
                at,
                "the URL holds credentials; give them as `username:` and `password: { file: … }` instead, so that the password is not in the configuration file",
            );
            return None;
        }
        if matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_none_or(str::is_empty) {
            self.problem(at, format!("`{text}` names no host"));
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(at, format!("`{text}`: settings go in `fleet.redis`, not in a ?query"));
            return None;
        }
        Some(url)
    }

    /// How the client takes part in the fleet: `None` for a client kept local (no `fleet:`
    /// section, or `fleet: false`).
    pub(super) fn fleet_use(&mut self, cx: &ClientCtx<'_>, fleet: Option<FleetRole>) -> Result<Option<FleetUse>, ()> {
        let c = &cx.merged;
        match (fleet, c.fleet) {
            (None, Some(true)) => {
                self.problem(
                    &cx.at("fleet"),
                    "`fleet: true` shares the client through the fleet store, which needs a top-level `fleet:` section",
                );
                Err(())
            }
            (None, _) | (Some(_), Some(false)) => {
                if cx.own.fleet_key.is_some() {
                    self.problem(
                        &cx.at("fleet_key"),
                        "`fleet_key` applies only to a client shared with the fleet",
                    );
                    return Err(());
                }
                Ok(None)
            }
            (Some(_), _) => {
                let key = match &c.fleet_key {
                    Some(raw) => Some(self.secret(raw.clone(), &cx.at("fleet_key")).ok_or(())?),
                    None => None,
                };
                // An invalid `fleet:` section has its own problems; the client is left out.
                let fleet = self.fleet.clone().ok_or(())?;
                Ok(Some(FleetUse { key, fleet }))
            }
        }
    }
}

/// A namespace: what a client name may hold, at most 64 characters.
fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
