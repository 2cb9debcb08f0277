//! From the raw YAML to the validated model, one concern per file: `client` (endpoint, id,
//! parameters, policies), `credentials`, `transport`, `validation`, `outputs` and `socket`. Every
//! problem is collected, not just the first, and each names its key and the line it is on.

mod client;
mod credentials;
mod hooks;
mod outputs;
mod proxies;
mod socket;
mod transport;
mod validation;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DEFAULT_STATE_DIR;
use super::error::{self, Problem};
use super::host::Host;
use super::model::{Access, Client, Config, Owner, Readers, RequestSpec};
use super::raw::{RawClient, RawConfig, RawReaders};
use super::values::Principal;

pub struct Validator<'a> {
    source: &'a str,
    host: &'a dyn Host,
    pub problems: Vec<Problem>,
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
        }
    }

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
            key: error::path_string(&path),
            message: message.into(),
        };
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
        }
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
