//! From the raw YAML to the validated model, one concern per file: `client` (endpoint, id,
//! parameters, policies), `credentials`, `transport`, `validation`, `outputs` and `socket`. Every
//! problem is collected, not just the first, and each names its key and the line it is on.

mod client;
mod credentials;
mod fleet;
mod hooks;
mod outputs;
mod proxies;
mod socket;
mod transport;
mod validation;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{self, Problem};
use super::host::Host;
use super::model::{
    Access, Client, Config, Credentials, DEFAULT_MAX_CONCURRENT_REQUESTS, Fleet, MAX_MAX_CONCURRENT_REQUESTS, Owner,
    Readers, RequestSpec,
};
use super::raw::{FleetRole, RawClient, RawConfig, RawIdp, RawReaders};
use super::values::Principal;
use super::{DEFAULT_STATE_DIR, RUNTIME_DIR};
use crate::secret::SecretSource;

pub struct Validator<'a> {
    source: &'a str,
    host: &'a dyn Host,
    pub problems: Vec<Problem>,
    /// This node's role, when `fleet:` is set: a follower's fleet clients need no credentials.
    fleet_role: Option<FleetRole>,
    /// The validated `fleet:` section, for the clients that share through it.
    fleet: Option<Arc<Fleet>>,
}

/// One client under validation.
struct ClientCtx<'a> {
    /// The client's name, as key paths spell it.
    n: &'a str,
    /// What the client wrote itself.
    own: &'a RawClient,
    /// What `defaults` says.
    defaults: &'a RawClient,
    /// The two merged (`RawClient::inherit`): the values that are validated.
    merged: RawClient,
    /// `allow_insecure_http`, own or inherited.
    allow_http: bool,
}

impl<'a> ClientCtx<'a> {
    fn new(n: &'a str, own: &'a RawClient, defaults: &'a RawClient) -> Self {
        let merged = own.inherit(defaults);
        let allow_http = merged.allow_insecure_http.unwrap_or(false);
        ClientCtx {
            n,
            own,
            defaults,
            merged,
            allow_http,
        }
    }

    /// The key path of one of this client's settings.
    fn at<'k>(&self, key: &'k str) -> [&'k str; 3]
    where
        'a: 'k,
    {
        ["clients", self.n, key]
    }
}

/// Users or groups, for lookups and messages.
#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

impl<'a> Validator<'a> {
    pub fn new(source: &'a str, host: &'a dyn Host) -> Self {
        Validator {
            source,
            host,
            problems: Vec::new(),
            fleet_role: None,
            fleet: None,
        }
    }

    /// Records a problem at `path`. A client setting the client did not write itself came from
    /// `defaults`, so the problem is reported there (once, however many clients inherit it).
    fn problem(&mut self, path: &[&str], message: impl Into<String>) {
        let problem = Problem::at(self.source, path, message);
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    pub fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let state_dir = match raw.state_dir {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    self.problem(&["state_dir"], format!("`{}` must be an absolute path", dir.display()));
                }
                dir
            }
            None => self.default_state_dir(),
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
        self.fleet_role = raw.fleet.as_ref().map(|f| f.role.unwrap_or_default());
        self.fleet = raw.fleet.and_then(|f| self.fleet(f)).map(Arc::new);
        let mut clients = Vec::new();
        let mut access = Access::default();
        for (name, own) in &raw.clients.clients {
            let cx = ClientCtx::new(name.as_str(), own, &defaults);
            // Readers are checked where they are written: the client's own, or `defaults`'.
            let at: &[&str] = if own.readers.is_some() {
                &["clients", name.as_str(), "readers"]
            } else {
                &["defaults", "readers"]
            };
            let readers = match &cx.merged.readers {
                Some(raw) => self.readers(at, raw),
                None => Readers::default(),
            };
            if !readers.is_empty() {
                access.readers.insert(name.clone(), readers);
            }
            if let Some(client) = self.client(name, &cx) {
                clients.push(client);
            }
        }
        let clients = share_requests(clients);
        let socket = self.socket(raw.socket.unwrap_or_default(), &mut access);
        let metrics_listen = self.metrics_listen(raw.metrics.unwrap_or_default());
        let max_concurrent_requests = self.max_concurrent_requests(raw.idp.unwrap_or_default());
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
        let proxies = self.proxies(raw.proxies.unwrap_or_default(), &clients, &access, socket.as_ref());
        Config {
            source: path.to_owned(),
            state_dir,
            clients,
            socket,
            metrics_listen,
            access,
            proxies,
            max_concurrent_requests,
            fleet: self.fleet.clone(),
        }
    }

    fn max_concurrent_requests(&mut self, raw: RawIdp) -> usize {
        let n = raw.max_concurrent_requests.unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS);
        if !(1..=MAX_MAX_CONCURRENT_REQUESTS).contains(&n) {
            self.problem(
                &["idp", "max_concurrent_requests"],
                format!("must be from 1 to {MAX_MAX_CONCURRENT_REQUESTS} (default {DEFAULT_MAX_CONCURRENT_REQUESTS})"),
            );
        }
        n.clamp(1, MAX_MAX_CONCURRENT_REQUESTS)
    }

    fn readers(&mut self, at: &[&str], raw: &RawReaders) -> Readers {
        let mut readers = Readers::default();
        for (i, spec) in raw.users.iter().flatten().enumerate() {
            let index = i.to_string();
            readers
                .users
                .extend(self.owner(&[at, &["users", index.as_str()]].concat(), spec.clone(), Kind::User));
        }
        for (i, spec) in raw.groups.iter().flatten().enumerate() {
            let index = i.to_string();
            readers
                .groups
                .extend(self.owner(&[at, &["groups", index.as_str()]].concat(), spec.clone(), Kind::Group));
        }
        readers
    }

    /// A user or group resolved to its id, or a problem at `at`.
    fn owner(&mut self, at: &[&str], spec: Principal, kind: Kind) -> Option<Owner> {
        let name = match &spec {
            Principal::Id(id) => {
                return Some(Owner {
                    spec: spec.clone(),
                    id: *id,
                });
            }
            Principal::Name(name) => name,
        };
        let (what, found) = match kind {
            Kind::User => ("user", self.host.user_id(name)),
            Kind::Group => ("group", self.host.group_id(name)),
        };
        match found {
            Ok(Some(id)) => Some(Owner { spec, id }),
            Ok(None) => {
                self.problem(at, format!("there is no {what} `{name}` on this system"));
                None
            }
            Err(e) => {
                self.problem(at, format!("cannot look up {what} `{name}`: {e}"));
                None
            }
        }
    }

    /// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) if present, else `/var/lib/tokend`.
    fn default_state_dir(&self) -> PathBuf {
        self.host
            .var("STATE_DIRECTORY")
            .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// Checks that need every client: two writers must never race on one file, and no output
    /// goes where tokend keeps what it trusts (saved tokens, secrets).
    fn cross_checks(&mut self, clients: &[Arc<Client>], source: &Path, state_dir: &Path) {
        let secret_dirs = secret_dirs(clients);
        let credentials_dir = self
            .host
            .var("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute());
        let mut seen: HashMap<&Path, (&str, usize)> = HashMap::new();
        for client in clients {
            for (i, output) in client.outputs.iter().enumerate() {
                let index = i.to_string();
                let key = ["clients", client.name.as_str(), "outputs", index.as_str(), "path"];
                let path = output.path.display();
                let elsewhere = match output.path.file_name() {
                    Some(name) => format!(
                        "write outputs elsewhere, such as {}",
                        Path::new(RUNTIME_DIR).join(name).display()
                    ),
                    None => format!("write outputs elsewhere, such as under {RUNTIME_DIR}"),
                };
                let dir = output.path.parent();
                if output.path == source {
                    self.problem(&key, "an output must not overwrite the configuration file");
                } else if output.path.starts_with(state_dir) {
                    // Whoever may write there could plant a saved token (refresh::state trusts only
                    // tokend's own files); tokend's state files are named after the clients.
                    self.problem(
                        &key,
                        format!(
                            "`{path}` is inside the state directory {}, which holds tokend's saved tokens and must be tokend's alone; {elsewhere}",
                            state_dir.display()
                        ),
                    );
                } else if let Some(creds) = credentials_dir.as_deref().filter(|d| output.path.starts_with(d)) {
                    self.problem(
                        &key,
                        format!(
                            "`{path}` is inside $CREDENTIALS_DIRECTORY ({}), where systemd passes tokend its secrets; {elsewhere}",
                            creds.display()
                        ),
                    );
                } else if let Some((secret_dir, secret_key)) =
                    dir.and_then(|d| secret_dirs.iter().find(|(s, _)| s.as_path() == d))
                {
                    // Writing a token file there needs write access to the secret's directory:
                    // a rename could replace the secret, and readers of the token would be
                    // given the way to it.
                    self.problem(
                        &key,
                        format!(
                            "`{path}` is in {}, the directory of the secret file of {secret_key}: tokend would need to write where a secret is kept, and could replace it; {elsewhere}",
                            secret_dir.display()
                        ),
                    );
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

/// The directories holding a configured secret or key file, each with the key that names it
/// (the first, if several do). A client certificate is no secret.
fn secret_dirs(clients: &[Arc<Client>]) -> Vec<(PathBuf, String)> {
    let mut dirs: Vec<(PathBuf, String)> = Vec::new();
    for client in clients {
        let sources: Vec<(&SecretSource, &str)> = match &client.spec.credentials {
            Credentials::SecretPost(s) | Credentials::SecretBasic { secret: s, .. } => vec![(s, "client_secret")],
            Credentials::PrivateKey(pk) => vec![(&pk.key, "private_key")],
            Credentials::Certificate { key, .. } => vec![(key, "client_key")],
            Credentials::Follower => Vec::new(),
        };
        for (source, key) in sources {
            if let SecretSource::File(path) | SecretSource::SharedFile(path) = source
                && let Some(dir) = path.parent()
                && !dirs.iter().any(|(d, _)| d == dir)
            {
                dirs.push((dir.to_owned(), format!("clients.{}.{key}", client.name)));
            }
        }
    }
    dirs
}

/// Makes clients with equal requests hold the same `Arc<RequestSpec>`, so that grouping them
/// (one request, one token) is cheap and the spec is stored once.
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
