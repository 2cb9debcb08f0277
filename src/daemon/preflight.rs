//! Before a configuration is put to use (`run`, `once`, a reload) or approved (`check`), every
//! secret, key, certificate and CA file it names is read and used as a request would use it, and
//! every hook command and template file is checked to be changeable by root and tokend's user
//! only. One that is missing, unreadable or readable (or, for code, writable) by others is a
//! configuration error, like a typo: exit 78 (EX_CONFIG, which the unit does not restart for)
//! with the key, its line and the fix, rather than a daemon that starts and then fails every
//! refresh. After start-up, a source that stops being readable (a rotation half done) fails only
//! that client's requests: its last token is kept, and the read is tried again at the next
//! attempt. A hook command is checked again before each run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::identity;
use crate::config::{Client, Config, ConfigError, Credentials, HookAction, Problem, RequestSpec};
use crate::oauth::HttpClients;
use crate::oauth::error::FetchError;
use crate::oauth::exchange;
use crate::secret::SecretError;

/// Tries every client's credentials (each distinct request once), and checks that only root and
/// this process's user can change the hooks' commands and the template files (`code`); every
/// problem is listed.
pub fn credentials(config: &Config) -> Result<(), ConfigError> {
    let mut preflight = Preflight::new(config);
    let me = nix::unistd::geteuid().as_raw();
    let mut problems: Vec<Problem> = preflight.fleet(config);
    for client in &config.clients {
        for p in preflight.client(client).into_iter().chain(preflight.code(client, me)) {
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError {
            file: config.source.clone(),
            problems,
        })
    }
}

/// Tries clients' credentials one by one, placing each problem at the key that names the source.
pub struct Preflight {
    /// The configuration's text, to find lines in (empty if it cannot be read again: the
    /// problems then name their key without a line).
    source: String,
    http: HttpClients,
    tried: HashMap<Arc<RequestSpec>, Option<(&'static str, String)>>,
}

impl Preflight {
    pub fn new(config: &Config) -> Preflight {
        Preflight {
            source: std::fs::read_to_string(&config.source).unwrap_or_default(),
            http: HttpClients::default(),
            tried: HashMap::new(),
        }
    }

    /// What keeps the client's credentials from being used, if anything.
    pub fn client(&mut self, client: &Client) -> Option<Problem> {
        let (key, message) = self
            .tried
            .entry(client.spec.clone())
            .or_insert_with(|| {
                exchange::check_credentials(&client.spec, client.timeouts, &self.http)
                    .err()
                    .map(|e| (key_of(&e, &client.spec), e.to_string()))
            })
            .clone()?;
        Some(self.at(client, key, message))
    }

    /// What others could change in what the client runs or renders: each hook command and
    /// `template_file` that someone besides root and `uid` (tokend's user) could rewrite or
    /// replace. Whoever can change a hook chooses what tokend runs, as its user; whoever can
    /// change a template chooses what goes into a file that others may read.
    pub fn code(&self, client: &Client, uid: u32) -> Vec<Problem> {
        let name = client.name.as_str();
        let mut problems = Vec::new();
        for (i, hook) in client.hooks.iter().enumerate() {
            if let HookAction::Exec { argv, .. } = &hook.action
                && let Some(why) = identity::others_may_change(Path::new(&argv[0]), uid)
            {
                let index = i.to_string();
                problems.push(Problem::at(
                    &self.source,
                    &["clients", name, "hooks", &index, "exec"],
                    format!("hook command {why}: whoever can change it chooses what tokend runs"),
                ));
            }
        }
        for (i, output) in client.outputs.iter().enumerate() {
            if let Some(file) = output.template.as_ref().and_then(|t| t.file.as_deref())
                && let Some(why) = identity::others_may_change(file, uid)
            {
                let index = i.to_string();
                problems.push(Problem::at(
                    &self.source,
                    &["clients", name, "outputs", &index, "template_file"],
                    format!("template file {why}: whoever can change it chooses what the output holds"),
                ));
            }
        }
        problems
    }

    /// What keeps the fleet's settings from being used: a key that cannot be read or is not a
    /// key (the fleet's, or a client's own), a password that cannot be read, a CA file that
    /// holds no certificate. The store itself is not reached (`check --connect` does that).
    pub fn fleet(&self, config: &Config) -> Vec<Problem> {
        let Some(fleet) = &config.fleet else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut problem = |path: &[&str], message: String| {
            let p = Problem::at(&self.source, path, message);
            if !problems.contains(&p) {
                problems.push(p);
            }
        };
        if let Err(e) = crate::fleet::read_key(&fleet.key) {
            problem(&["fleet", "key"], e);
        }
        let redis = &fleet.redis;
        if let Some(Err(e)) = redis.password.as_ref().map(|p| p.read()) {
            problem(&["fleet", "redis", "password"], e.to_string());
        }
        if let crate::config::RedisEndpoint::Sentinel { password: Some(p), .. } = &redis.endpoint
            && let Err(e) = p.read()
        {
            problem(&["fleet", "redis", "sentinel", "password"], e.to_string());
        }
        if redis.ca_file.is_some()
            && let Err(e) = crate::fleet::redis::Redis::new(redis)
        {
            problem(&["fleet", "redis", "ca_file"], e);
        }
        for client in &config.clients {
            if let Some(own) = client.spec.fleet.as_ref().and_then(|f| f.key.as_ref())
                && let Err(e) = crate::fleet::read_key(own)
            {
                problem(&["clients", client.name.as_str(), "fleet_key"], e);
            }
        }
        problems
    }

    /// A problem with one of the client's settings (`client_secret`; "" for the client itself).
    pub fn at(&self, client: &Client, key: &str, message: impl Into<String>) -> Problem {
        let name = client.name.as_str();
        let path: Vec<&str> = ["clients", name, key].into_iter().filter(|k| !k.is_empty()).collect();
        Problem::at(&self.source, &path, message)
    }
}

/// The setting a failure to use a spec's credentials comes from.
fn key_of(e: &FetchError, spec: &RequestSpec) -> &'static str {
    match e {
        FetchError::Secret(SecretError::Unreadable { what, .. }) => key_for(what),
        FetchError::Secret(_) => "client_secret",
        FetchError::Assertion(_) => "private_key",
        FetchError::Tls(reason) if reason.starts_with("cannot read ca_file") => "ca_file",
        FetchError::Tls(_) => match (&spec.credentials, &spec.transport.ca_file) {
            (Credentials::Certificate { .. }, _) => "client_certificate",
            (_, Some(_)) => "ca_file",
            _ => "",
        },
        _ => "",
    }
}

/// The configuration key for what a secret source is read as (`SecretError::Unreadable::what`).
pub fn key_for(what: &str) -> &'static str {
    match what {
        "client secret" => "client_secret",
        "private key" => "private_key",
        "client certificate" => "client_certificate",
        "client key" => "client_key",
        "ca_file" => "ca_file",
        _ => "",
    }
}
