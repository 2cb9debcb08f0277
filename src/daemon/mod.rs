//! The daemon's owner: starts one refresh task per group, reports readiness, and handles
//! signals — SIGHUP reloads (validate the whole new config first, then restart only the groups
//! that changed), SIGTERM/SIGINT stop cleanly. Also `tokend once`.

pub mod config_watch;
pub mod memory;
pub mod preflight;
pub mod status_line;
pub mod systemd;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::identity::Identity;
use crate::config::{self, ClientName, Config, ConfigError, RequestSpec};
use crate::fleet::Source;
use crate::metrics::Metrics;
use crate::oauth::HttpClients;
use crate::output::{atomic, lock};
use crate::proxy::Proxies;
use crate::refresh::clock::Clock;
use crate::refresh::fingerprint::Fingerprint;
use crate::refresh::state;
use crate::refresh::{Group, IdpSource, Publisher, Runner};
use crate::server::access::Authority;
use crate::server::socket::SocketError;
use crate::server::{HEARTBEAT_EVERY, Server};
use crate::store::Store;
use config_watch::ConfigWatch;

/// Why tokend stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

struct Running {
    group: Arc<Group>,
    /// Stops the task at its next safe point (a reload or a stop).
    cancel: CancellationToken,
    /// A reload replaced the group: it writes no file from now on (see `Publisher::retire_on`).
    retired: CancellationToken,
    handle: JoinHandle<()>,
    retry_now: Arc<tokio::sync::Notify>,
}

/// How long a reload waits for the tasks it stops (each finishes the file it is writing), and a
/// stop for every task, before going on without them: a write hung on a stuck file system must
/// not hold up the new configuration, nor keep systemd waiting.
pub const STOPPED_TASKS_WAIT: Duration = Duration::from_secs(10);

/// The running set of groups.
pub struct Daemon {
    config: Config,
    /// This host's part in the fleet, with `fleet:`.
    fleet: Option<crate::fleet::Member>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    http: HttpClients,
    running: Vec<Running>,
    /// Tasks a reload stopped that had not ended within `STOPPED_TASKS_WAIT`, by label.
    lingering: Vec<(String, JoinHandle<()>)>,
    tracker: TaskTracker,
}

/// A reload under way: the new configuration, and the tasks it stopped, still ending.
pub struct Reload {
    config: Config,
    summary: Summary,
    stopped: Vec<Running>,
    lingering: Vec<(String, JoinHandle<()>)>,
    /// Outputs of members whose grant changed: they hold the old grant's token.
    withdrawn: Vec<PathBuf>,
    state_dir: PathBuf,
}

impl Daemon {
    /// Starts a task for every group of `config`. The receivers resolve as each group finishes
    /// its first attempt.
    pub fn start(config: Config, store: Arc<Store>, metrics: Arc<Metrics>) -> (Daemon, Vec<oneshot::Receiver<()>>) {
        store.retain_clients(config.clients.iter().map(|c| &c.name));
        let groups = Group::from_clients(&config.clients);
        let mut daemon = Daemon {
            http: HttpClients::new(config.max_concurrent_requests),
            fleet: join_fleet(config.fleet.as_ref(), &metrics, &store),
            config,
            store,
            metrics,
            running: Vec::new(),
            lingering: Vec::new(),
            tracker: TaskTracker::new(),
        };
        let first = daemon.spawn_all(groups.into_iter().map(|g| (g, Vec::new())).collect());
        (daemon, first)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts a task for each group of `batch`. Before any of them starts, one blocking job
    /// prepares the files of the whole batch (see `prepare`): it deletes each group's files of
    /// the previous grant it is to replace, and the temp files killed runs left, reading each
    /// directory once however many groups write there.
    fn spawn_all(&mut self, batch: Vec<(Group, Vec<PathBuf>)>) -> Vec<oneshot::Receiver<()>> {
        let batch: Vec<(Arc<Group>, Vec<PathBuf>)> = batch.into_iter().map(|(g, w)| (Arc::new(g), w)).collect();
        let groups: Vec<Arc<Group>> = batch.iter().map(|(g, _)| g.clone()).collect();
        let (prepared_tx, prepared) = tokio::sync::watch::channel(false);
        let state_dir = self.config.state_dir.clone();
        self.tracker.spawn(async move {
            if let Err(e) = tokio::task::spawn_blocking(move || prepare(&batch, &state_dir)).await {
                error!(error = %e, "cleaning up before the refresh tasks started stopped unexpectedly");
            }
            prepared_tx.send_replace(true);
        });
        groups.into_iter().map(|g| self.spawn(g, prepared.clone())).collect()
    }

    /// Starts `group`'s task, once `prepared` turns true (or its sender is gone).
    fn spawn(&mut self, group: Arc<Group>, prepared: tokio::sync::watch::Receiver<bool>) -> oneshot::Receiver<()> {
        let mut runner = runner(
            &group,
            &self.config.state_dir,
            &self.store,
            &self.metrics,
            &self.http,
            self.fleet.as_ref(),
        );
        let (cancel, retired) = (CancellationToken::new(), CancellationToken::new());
        runner.retire_on(retired.clone());
        runner.start_after(prepared);
        let (tx, rx) = oneshot::channel();
        let retry_now = runner.retry_handle();
        // The runner's own future, not one wrapping it: a wrapper would hold the runner twice.
        let task = runner.run(cancel.clone(), Some(tx));
        let handle = self.tracker.spawn(task);
        self.running.push(Running {
            group,
            cancel,
            retired,
            handle,
            retry_now,
        });
        rx
    }

    /// Starts replacing the configuration, at once and without waiting on anything: changed and
    /// removed groups are told to stop and to write nothing more, and a member whose grant
    /// changed (or that is removed) stops being served by the socket and the proxies right away.
    /// Groups that are unchanged keep running untouched (same token, same timer). Then `settle`
    /// waits for the stopped tasks, and `finish` starts the new ones.
    pub fn reconfigure(&mut self, config: Config) -> Reload {
        let new_groups = Group::from_clients(&config.clients);
        let by_spec: HashMap<&RequestSpec, &Group> = new_groups.iter().map(|g| (&*g.spec, g)).collect();
        let by_member: HashMap<&ClientName, &Group> = new_groups
            .iter()
            .flat_map(|g| g.members().map(move |m| (&m.name, g)))
            .collect();
        // A moved state directory restarts every group, so that each saves where it now should.
        let same_state_dir = self.config.state_dir == config.state_dir;
        let (keep, stop): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| same_state_dir && by_spec.get(&*r.group.spec).is_some_and(|g| **g == *r.group));
        let mut withdrawn = Vec::new();
        for r in &stop {
            r.retired.cancel();
            r.cancel.cancel();
            let old = Fingerprint::of(&r.group.spec);
            for member in r.group.members() {
                let now = by_member.get(&member.name);
                if now.is_some_and(|g| Fingerprint::of(&g.spec) == old) {
                    continue;
                }
                self.store.update(&member.name, |s| {
                    s.token = None;
                    s.failures = 0;
                });
                if now.is_some() {
                    withdrawn.extend(member.outputs.iter().map(|o| o.path.clone()));
                }
            }
            // The new task reports its outputs afresh: none the reload removed stays failing.
            for member in r.group.members() {
                self.metrics.forget_outputs(&member.name);
            }
        }
        self.store.retain_clients(config.clients.iter().map(|c| &c.name));
        self.http.set_max_concurrent_requests(config.max_concurrent_requests);
        // Changed fleet settings changed every shared group's spec: those were stopped above,
        // and start again on the new member.
        if self.fleet.as_ref().map(|m| &m.config) != config.fleet.as_ref() {
            self.fleet = join_fleet(config.fleet.as_ref(), &self.metrics, &self.store);
        }
        // A reload may be the fix for failing requests (a rotated secret, key or certificate):
        // failing groups retry now rather than after their backoff.
        for r in &keep {
            r.retry_now.notify_one();
        }
        self.running = keep;
        Reload {
            summary: Summary::new(&self.config, &config),
            state_dir: self.config.state_dir.clone(),
            config,
            stopped: stop,
            lingering: Vec::new(),
            withdrawn,
        }
    }

    /// Ends a reload: starts the new and changed groups, each taking over a still-valid token if
    /// its grant is unchanged, and forgets removed clients.
    pub fn finish(&mut self, reload: Reload) {
        let Reload {
            config,
            summary,
            lingering,
            withdrawn,
            ..
        } = reload;
        let mut withdrawn: HashSet<PathBuf> = withdrawn.into_iter().collect();
        self.lingering.retain(|(_, handle)| !handle.is_finished());
        self.lingering.extend(lingering);
        for name in &summary.removed {
            self.metrics.forget(name);
        }
        // New groups save state where the new configuration says.
        self.config = config;
        let running: HashMap<&RequestSpec, &Group> = self.running.iter().map(|r| (&*r.group.spec, &*r.group)).collect();
        let mut batch = Vec::new();
        for group in Group::from_clients(&self.config.clients) {
            if running.get(&*group.spec).is_none_or(|r| **r != group) {
                let theirs = group
                    .members()
                    .flat_map(|m| &m.outputs)
                    .filter_map(|o| withdrawn.take(&o.path))
                    .collect();
                batch.push((group, theirs));
            }
        }
        // Readiness was reported at start-up; later first attempts are not awaited.
        drop(self.spawn_all(batch));
        // Files of the old grant that no group writes any more.
        if !withdrawn.is_empty() {
            let withdrawn: Vec<PathBuf> = withdrawn.into_iter().collect();
            self.tracker
                .spawn_blocking(move || withdraw_files("a changed client", &withdrawn));
        }
        info!(
            reload = "applied",
            added = %summary.added.len(),
            changed = %summary.changed.len(),
            removed = %summary.removed.len(),
            unchanged = %summary.unchanged,
            "configuration reloaded{}",
            summary.details()
        );
    }

    /// Stops every task (each at a safe point) and waits for them, for `STOPPED_TASKS_WAIT` at
    /// most: a task stuck in a write on a hung file system is left behind, and named.
    pub async fn shutdown(self) {
        for r in &self.running {
            r.cancel.cancel();
        }
        self.tracker.close();
        if tokio::time::timeout(STOPPED_TASKS_WAIT, self.tracker.wait())
            .await
            .is_err()
        {
            let stuck: Vec<String> = self
                .running
                .iter()
                .filter(|r| !r.handle.is_finished())
                .map(|r| r.group.label())
                .chain(
                    self.lingering
                        .iter()
                        .filter(|(_, h)| !h.is_finished())
                        .map(|(label, _)| label.clone()),
                )
                .collect();
            error!(
                clients = %stuck.join(", "),
                waited = %humantime::format_duration(STOPPED_TASKS_WAIT),
                "stopped without waiting for writes still in progress (a hung file system?); \
                 each file holds the previous token or the new one, never a partial one"
            );
        }
    }
}

impl Reload {
    /// Waits, for `STOPPED_TASKS_WAIT` at most, until the stopped tasks have ended (each
    /// finishes the file it was writing), then deletes the removed clients' state files.
    /// Whatever is still stuck is left behind, named, and can no longer write anything that
    /// matters (see `Publisher::retire_on`).
    pub async fn settle(mut self) -> Reload {
        let deadline = tokio::time::Instant::now() + STOPPED_TASKS_WAIT;
        for mut r in std::mem::take(&mut self.stopped) {
            match tokio::time::timeout_at(deadline, &mut r.handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(client = %r.group.label(), error = %e, "refresh task ended abnormally"),
                Err(_) => {
                    warn!(
                        client = %r.group.label(),
                        waited = %humantime::format_duration(STOPPED_TASKS_WAIT),
                        "the previous configuration's task is still writing (a hung file system?); \
                         starting the new configuration without it: the old write cannot replace anything the new one writes"
                    );
                    self.lingering.push((r.group.label(), r.handle));
                }
            }
        }
        let (dir, removed) = (self.state_dir.clone(), self.summary.removed.clone());
        let remove = tokio::task::spawn_blocking(move || {
            for name in &removed {
                let _held = lock::hold(&state::path(&dir, name));
                if let Err(e) = state::remove(&dir, name) {
                    warn!(client = %name, error = %e, "cannot delete the removed client's state file");
                }
            }
        });
        if tokio::time::timeout_at(deadline, remove).await.is_err() {
            warn!("the removed clients' state files are still being deleted (a hung file system?)");
        }
        self
    }
}

/// Deletes files that hold a token no longer to be served, each with the file held.
fn withdraw_files(label: &str, paths: &[PathBuf]) {
    for path in paths {
        let _held = lock::hold(path);
        match std::fs::remove_file(path) {
            Ok(()) => {
                info!(client = %label, path = %path.display(), "removed a file holding the previous grant's token")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                error!(client = %label, path = %path.display(), error = %e, "cannot remove a file holding the previous grant's token")
            }
        }
    }
}

struct Summary {
    added: Vec<ClientName>,
    changed: Vec<ClientName>,
    removed: Vec<ClientName>,
    unchanged: usize,
}

impl Summary {
    fn new(old: &Config, new: &Config) -> Summary {
        let mut s = Summary {
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
            unchanged: 0,
        };
        for client in &new.clients {
            match old.clients.iter().find(|c| c.name == client.name) {
                None => s.added.push(client.name.clone()),
                Some(previous) if previous == client && old.state_dir == new.state_dir => s.unchanged += 1,
                Some(_) => s.changed.push(client.name.clone()),
            }
        }
        let names: BTreeSet<&ClientName> = new.clients.iter().map(|c| &c.name).collect();
        s.removed = old
            .clients
            .iter()
            .filter(|c| !names.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        s
    }

    fn details(&self) -> String {
        let mut parts = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !names.is_empty() {
                let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                parts.push(format!("{what}: {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }
}

/// A group's refresh task: tokens from its IdP (through the fleet, for a group shared with it),
/// published to its members, on the system clock.
fn runner(
    group: &Arc<Group>,
    state_dir: &Path,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    http: &HttpClients,
    fleet: Option<&crate::fleet::Member>,
) -> Runner<Source> {
    let clock = Clock::system();
    let publisher = Publisher::new(group.clone(), state_dir, store.clone(), metrics.clone(), clock.clone());
    let idp = IdpSource::new(group, http, metrics.clone());
    // Without the fleet, a refresher's client asks the IdP alone; a follower's has no
    // credentials, and serves no new token until a reload or a restart joins the fleet.
    let alone = if matches!(group.spec.credentials, crate::config::Credentials::Follower) {
        "this follower's client gets no new token until the fleet can be joined (a reload or a restart tries again)"
    } else {
        "this client's tokens come from the IdP alone"
    };
    let source = match (group.spec.fleet.is_some(), fleet) {
        (false, _) => Source::Idp(idp),
        (true, Some(member)) => member.source(group, idp, clock.clone()).unwrap_or_else(|e| {
            error!(client = %group.label(), error = %e, "this client cannot share through the fleet; {alone}");
            Source::Idp(IdpSource::new(group, http, metrics.clone()))
        }),
        (true, None) => {
            error!(client = %group.label(), "the fleet could not be joined; {alone}");
            Source::Idp(idp)
        }
    };
    Runner::new(group.clone(), source, publisher, clock)
}

/// This host's part in the fleet `config` names, if any; one that cannot be joined (its key
/// became unreadable since the configuration was checked) is logged, and the shared groups ask
/// the IdP alone.
fn join_fleet(
    config: Option<&Arc<config::Fleet>>,
    metrics: &Arc<Metrics>,
    store: &Arc<Store>,
) -> Option<crate::fleet::Member> {
    store.set_fleet(None);
    let config = config?;
    match crate::fleet::Member::join(config, metrics) {
        Ok(member) => {
            let (shared, at) = (member.shared.clone(), config.redis.endpoint.describe());
            store.set_fleet(Some(Box::new(move || shared.report(at.clone()))));
            info!(
                fleet = "joined",
                store = %config.redis.endpoint.describe(),
                role = config.role.as_str(),
                namespace = %config.namespace,
                node = %member.shared.node,
                "fleet mode: tokens are shared through the fleet store"
            );
            Some(member)
        }
        Err(e) => {
            error!(error = %e, "cannot join the fleet");
            None
        }
    }
}

/// Before a batch of groups starts: each group's files of the previous grant it replaces go
/// (`withdraw_files`), then the temp files killed runs left next to any of their files, then a
/// warning for each output directory others may write.
fn prepare(batch: &[(Arc<Group>, Vec<PathBuf>)], state_dir: &Path) {
    for (group, withdraw) in batch {
        withdraw_files(&group.label(), withdraw);
    }
    let groups: Vec<&Group> = batch.iter().map(|(g, _)| &**g).collect();
    remove_stale_temps(&groups, state_dir);
    warn_replaceable_dirs(&groups);
}

/// Deletes the temp files killed runs left next to `groups`' outputs and state files, reading
/// each directory once: with every output in one directory, reading it once per output made
/// start-up quadratic in the number of clients.
fn remove_stale_temps(groups: &[&Group], state_dir: &Path) {
    let state_files: Vec<PathBuf> = groups
        .iter()
        .flat_map(|g| g.members())
        .map(|m| state::path(state_dir, &m.name))
        .collect();
    let outputs = groups
        .iter()
        .flat_map(|g| g.members())
        .flat_map(|m| &m.outputs)
        .map(|o| &o.path);
    let mut by_dir: BTreeMap<&Path, HashSet<&str>> = BTreeMap::new();
    for path in outputs.chain(&state_files) {
        if let Ok((dir, name)) = atomic::split(path) {
            by_dir.entry(dir).or_default().insert(name);
        }
    }
    for (dir, names) in by_dir {
        let found = match atomic::stale_temps(dir, &names) {
            Ok(found) => found,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot clean up temp files");
                continue;
            }
        };
        for (target, temp) in found {
            // Held: a task a reload left behind may still be writing its temp file there (it
            // is gone, renamed into place, once held).
            let _held = lock::hold(&target);
            match std::fs::remove_file(&temp) {
                Ok(()) => info!(path = %temp.display(), "removed a temp file left by an interrupted run"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(path = %temp.display(), error = %e, "cannot clean up temp files"),
            }
        }
    }
}

/// Warns once about each output directory others may write (see `output::replaceable_by`),
/// naming the clients that write there.
fn warn_replaceable_dirs(groups: &[&Group]) {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: BTreeMap<&Path, Vec<&ClientName>> = BTreeMap::new();
    for member in groups.iter().flat_map(|g| g.members()) {
        let mut member_dirs: Vec<&Path> = member.outputs.iter().filter_map(|o| o.path.parent()).collect();
        member_dirs.sort();
        member_dirs.dedup();
        for dir in member_dirs {
            dirs.entry(dir).or_default().push(&member.name);
        }
    }
    for (dir, clients) in dirs {
        let Ok(mode) = std::fs::metadata(dir).map(|m| m.permissions().mode()) else {
            continue;
        };
        if let Some(who) = crate::output::replaceable_by(mode) {
            warn!(
                clients = %some_of(&clients),
                dir = %dir.display(),
                mode = %format!("{:04o}", mode & 0o7777),
                "an output directory can be written by {who}: {}",
                crate::output::REPLACEABLE_FIX
            );
        }
    }
}

/// `a,b,c` — or, past five names, `a,b,c,d,e and 995 more`.
fn some_of(names: &[&ClientName]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<&str> = names.iter().take(SHOWN).map(|n| n.as_str()).collect();
    match names.len().saturating_sub(SHOWN) {
        0 => shown.join(","),
        more => format!("{} and {more} more", shown.join(",")),
    }
}

/// Loads the configuration and reads every secret, key, certificate and CA file it names
/// (`preflight`): what `once` starts from, and `run` (and a reload) after `load_applicable`.
pub fn load_usable(config_path: &Path) -> Result<Config, ConfigError> {
    let config = config::load(config_path)?;
    preflight::credentials(&config)?;
    Ok(config)
}

/// Loads a usable configuration and checks that this process can apply it: a socket group it is
/// not in is a configuration error (exit 78), not a failure worth restarting for.
fn load_applicable(config_path: &Path) -> Result<Config, ConfigError> {
    let config = load_usable(config_path)?;
    match Identity::current().cannot_serve(&config) {
        Some(problem) => Err(ConfigError::single(config_path, "socket.group", problem)),
        None => Ok(config),
    }
}

/// `tokend run`: the daemon, until SIGTERM/SIGINT or `stop`; with `watch_config`, a changed
/// configuration file is reloaded as on SIGHUP.
pub async fn run(config_path: &Path, watch_config: bool, stop: CancellationToken) -> Result<(), AppError> {
    // Watching starts before the file is read, so a change in between is not missed (it
    // reloads what was just loaded, at worst); a bad configuration is still reported first.
    let watch = watch_config.then(|| ConfigWatch::new(config_path));
    let config = load_applicable(config_path)?;
    let mut watch = watch
        .transpose()
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", config_path.display()))?;
    // Registered before any task starts, so no signal is missed.
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let clients = config.clients.len();
    info!(config = %config_path.display(), clients, state_dir = %config.state_dir.display(), "tokend starting");
    raise_open_files_limit();
    let (store, metrics) = (Store::new(), Arc::new(Metrics::new()));
    // Before the socket comes up, so its listing and readiness know every client.
    store.retain_clients(config.clients.iter().map(|c| &c.name));
    // The socket comes up first, so a reader that starts with tokend finds it and can wait.
    let authority = Authority::new(config.access.clone());
    let mut server =
        Server::start(config.socket.as_ref(), authority, store.clone(), metrics.clone()).map_err(|e| match e {
            // The socket's mode or group cannot be applied: the configuration must change.
            SocketError::Group { .. } | SocketError::Mode { .. } => {
                AppError::Config(ConfigError::single(config_path, "socket", e.to_string()))
            }
            other => anyhow::anyhow!("{other}").into(),
        })?;
    if let Err(e) = server.listen_tcp(config.metrics_listen).await {
        return Err(anyhow::anyhow!("cannot serve metrics.listen {:?}: {e}", config.metrics_listen).into());
    }
    let proxy_configs = config.proxies.clone();
    let (mut daemon, first) = Daemon::start(config, store.clone(), metrics.clone());
    // Token proxies answer 503 until their client has a token; they come up with the tasks.
    let mut proxies = match Proxies::start(&proxy_configs, &store, &metrics).await {
        Ok(p) => p,
        Err(e) => {
            server.shutdown().await;
            daemon.shutdown().await;
            return Err(anyhow::anyhow!("{e}").into());
        }
    };
    // The watchdog is fed from this loop, the one that handles signals and reloads: if it wedges,
    // systemd restarts tokend.
    let watchdog = systemd::watchdog_period();
    let mut watchdog_ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    // STATUS= follows the store: after a change (at most once a second) and every minute (the
    // "in 41m" ages), only when running under systemd.
    let mut status = Status::new(daemon.store());
    let mut status_ticker = tokio::time::interval(STATUS_EVERY);
    let mut changes = daemon.store().changes();

    // `/healthz` fails if this loop stops beating (stuck in a reload, say).
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);

    let startup = futures_util::future::join_all(first);
    tokio::pin!(startup);
    let mut started = false;
    // A reload waiting for the tasks it stopped (see `Reload::settle`); the loop runs on
    // meanwhile. A reload asked for during one is done once it is over.
    let mut settling: Option<Pin<Box<dyn Future<Output = Reload> + Send>>> = None;
    let mut reload_again = false;
    loop {
        let mut reload_asked = false;
        tokio::select! {
            _ = watchdog_ticker.tick(), if watchdog.is_some() => systemd::watchdog(),
            _ = heartbeat.tick() => server.beat(),
            _ = &mut startup, if !started => {
                started = true;
                let line = status.line();
                info!(status = %line, "ready");
                systemd::ready(&line);
                status.sent(line);
                // Start-up's peak (the configuration's YAML tree, every first fetch) is over.
                tokio::task::spawn_blocking(memory::release_free);
            }
            _ = changes.changed(), if status.follows() => status.changed(),
            _ = tokio::time::sleep_until(status.flush_at()), if status.pending() => status.send_if_new(),
            _ = status_ticker.tick(), if status.follows() => status.send_if_new(),
            _ = stop.cancelled() => break,
            _ = changed(&mut watch) => {
                info!(config = %config_path.display(), "the configuration file changed");
                reload_asked = true;
            }
            signal = signals.next() => match signal {
                Some(SIGHUP) => reload_asked = true,
                Some(SIGTERM | SIGINT) | None => break,
                Some(_) => {}
            },
            settled = async { settling.as_mut().expect("guarded").await }, if settling.is_some() => {
                settling = None;
                daemon.finish(settled);
                tokio::task::spawn_blocking(memory::release_free);
                let proxy_configs = daemon.config().proxies.clone();
                if let Err(e) = proxies.reconfigure(&proxy_configs, daemon.store(), daemon.metrics()).await {
                    error!(error = %e, "a token proxy of the new configuration cannot run");
                }
                if started {
                    systemd::ready(&status_line::line(&daemon.store().all(), SystemTime::now()));
                }
                reload_asked = std::mem::take(&mut reload_again);
            }
        }
        if reload_asked {
            if settling.is_some() {
                info!("a reload is still under way; reloading again once it is over");
                reload_again = true;
            } else {
                settling = begin_reload(&mut daemon, &mut server, config_path, started).await;
            }
        }
    }
    info!("stopping");
    systemd::stopping();
    signals.handle().close();
    proxies.shutdown().await;
    server.shutdown().await;
    daemon.shutdown().await;
    info!("stopped");
    Ok(())
}

/// Starts a reload: the whole new configuration is validated first; if it is good, readers and
/// the socket change at once, and the groups begin to change (see `Daemon::reconfigure`); the
/// future returned ends the wait for the stopped tasks. A rejected configuration changes
/// nothing. Before start-up has completed (READY not yet sent), systemd is not told about the
/// reload: READY will follow when start-up completes.
async fn begin_reload(
    daemon: &mut Daemon,
    server: &mut Server,
    config_path: &Path,
    started: bool,
) -> Option<Pin<Box<dyn Future<Output = Reload> + Send>>> {
    if started {
        systemd::reloading();
    }
    info!(config = %config_path.display(), "reloading configuration");
    match load_applicable(config_path) {
        Ok(config) => {
            // Readers first: a reader taken away must lose access before anything else happens.
            server
                .reconfigure(config.socket.as_ref(), Authority::new(config.access.clone()))
                .await;
            if let Err(e) = server.listen_tcp(config.metrics_listen).await {
                match server.tcp_addr() {
                    Some(addr) => {
                        error!(error = %e, listen = %addr, "cannot serve the new metrics.listen; still serving the previous address")
                    }
                    None => {
                        error!(error = %e, "cannot serve the new metrics.listen; health and metrics are not served over TCP now")
                    }
                }
            }
            Some(Box::pin(daemon.reconfigure(config).settle()))
        }
        Err(e) => {
            for line in e.to_string().lines() {
                error!("invalid configuration: {line}");
            }
            error!(
                reload = "rejected",
                "the new configuration was rejected; still running the previous one unchanged"
            );
            if started {
                systemd::ready(&status_line::line(&daemon.store().all(), SystemTime::now()));
            }
            None
        }
    }
}

/// The next change of the watched configuration file; never, without a watch.
async fn changed(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// STATUS= at least this often, so relative times ("in 41m") stay true.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// After a change, STATUS= waits this long for more changes (a start-up publishes many).
const STATUS_SETTLE: Duration = Duration::from_secs(1);

/// systemd's `STATUS=`, kept current: recomputed after changes to the store (settled) and on a
/// timer, and sent when its text changed.
struct Status {
    store: Arc<Store>,
    last: String,
    /// A change was seen: send at this time, once more changes have had time to arrive.
    pending: Option<tokio::time::Instant>,
    under_systemd: bool,
}

impl Status {
    fn new(store: &Arc<Store>) -> Status {
        Status {
            store: store.clone(),
            last: String::new(),
            pending: None,
            under_systemd: systemd::notifies(),
        }
    }

    /// Whether there is anyone to tell.
    fn follows(&self) -> bool {
        self.under_systemd
    }

    fn line(&self) -> String {
        status_line::line(&self.store.all(), SystemTime::now())
    }

    fn sent(&mut self, line: String) {
        self.last = line;
        self.pending = None;
    }

    fn changed(&mut self) {
        self.pending
            .get_or_insert_with(|| tokio::time::Instant::now() + STATUS_SETTLE);
    }

    fn pending(&self) -> bool {
        self.pending.is_some()
    }

    fn flush_at(&self) -> tokio::time::Instant {
        self.pending.unwrap_or_else(tokio::time::Instant::now)
    }

    fn send_if_new(&mut self) {
        let line = self.line();
        if line != self.last {
            systemd::status(&line);
            self.last = line;
        }
        self.pending = None;
    }
}

/// `tokend once`: fetch what is missing or due (everything with `force`), write the outputs, and
/// report whether every client now has a valid token and every output was written.
pub async fn once(config: Config, force: bool) -> Result<bool, AppError> {
    let store = Store::new();
    store.retain_clients(config.clients.iter().map(|c| &c.name));
    let http = HttpClients::new(config.max_concurrent_requests);
    let metrics = Arc::new(Metrics::new());
    let fleet = join_fleet(config.fleet.as_ref(), &metrics, &store);
    let mut jobs = Vec::new();
    let groups: Vec<Arc<Group>> = Group::from_clients(&config.clients).into_iter().map(Arc::new).collect();
    let batch: Vec<(Arc<Group>, Vec<PathBuf>)> = groups.into_iter().map(|g| (g, Vec::new())).collect();
    prepare(&batch, &config.state_dir);
    for (group, _) in batch {
        let mut runner = runner(&group, &config.state_dir, &store, &metrics, &http, fleet.as_ref()).single_attempt();
        jobs.push(async move {
            if !force {
                runner.seed().await;
            }
            if force || runner.is_due(SystemTime::now()) {
                // Failures are logged by `refresh`; a still-valid seeded token remains published.
                let _ = runner.refresh().await;
            }
            runner.failed_outputs()
        });
    }
    let failed_outputs: usize = futures_util::future::join_all(jobs).await.into_iter().sum();
    let now = SystemTime::now();
    let mut all_valid = failed_outputs == 0;
    for (name, snapshot) in store.all() {
        if snapshot.valid_token(now).is_none() {
            error!(client = %name, "no valid token");
            all_valid = false;
        }
    }
    Ok(all_valid)
}

/// Every socket connection needs a descriptor; the soft limit (often 1024) is raised to the hard
/// limit so the connection cap, not the descriptor table, decides how many readers are served.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open files limit"),
    }
}
