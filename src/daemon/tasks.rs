//! The refresh tasks, one per group of clients that share a request: started together (after
//! one clean-up of their files), replaced on a reload without touching the unchanged ones, and
//! stopped at a safe point.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::STOPPED_TASKS_WAIT;
use super::cleanup::{self, withdraw_files};
use super::reload::{self, Summary};
use super::sources::{Sources, Upstream};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::output::lock;
use crate::refresh::state;
use crate::refresh::{Group, Publisher, Runner};
use crate::store::Store;

struct Task {
    group: Arc<Group>,
    /// Stops the task at its next safe point (a reload or a stop).
    cancel: CancellationToken,
    /// A reload replaced the group: it writes no file from now on (see `Publisher::retire_on`).
    retired: CancellationToken,
    handle: JoinHandle<()>,
    retry_now: Arc<tokio::sync::Notify>,
}

/// The running set of groups, with their tokens from `S` (the IdP, unless a test says).
pub struct Daemon<S: Sources = Upstream> {
    config: Config,
    sources: S,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    running: Vec<Task>,
    /// Tasks a reload stopped that had not ended within `STOPPED_TASKS_WAIT`, by label.
    lingering: Vec<(String, JoinHandle<()>)>,
    tracker: TaskTracker,
}

/// A reload under way: the new configuration, and the tasks it stopped, still ending.
pub struct Reload {
    config: Config,
    summary: Summary,
    stopped: Vec<Task>,
    lingering: Vec<(String, JoinHandle<()>)>,
    /// The groups to start, each with the withdrawn files it writes (see `reload::Plan`).
    start: Vec<(Group, Vec<PathBuf>)>,
    /// Withdrawn files no new group writes.
    orphaned: Vec<PathBuf>,
    state_dir: PathBuf,
}

impl Daemon {
    /// Starts a task for every group of `config`, asking the IdP (and the fleet). The receivers
    /// resolve as each group finishes its first attempt.
    pub fn start(config: Config, store: Arc<Store>, metrics: Arc<Metrics>) -> (Daemon, Vec<oneshot::Receiver<()>>) {
        let sources = Upstream::new(&config, &metrics, &store);
        Daemon::start_with(config, store, metrics, sources)
    }
}

impl<S: Sources> Daemon<S> {
    /// `start`, with the tokens from `sources`.
    pub fn start_with(
        config: Config,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        sources: S,
    ) -> (Daemon<S>, Vec<oneshot::Receiver<()>>) {
        store.retain_clients(config.clients.iter().map(|c| &c.name));
        let groups = Group::from_clients(&config.clients);
        let mut daemon = Daemon {
            sources,
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
    /// prepares the files of the whole batch (see `cleanup::before_start`): it deletes each group's files of
    /// the previous grant it is to replace, and the temp files killed runs left, reading each
    /// directory once however many groups write there.
    fn spawn_all(&mut self, batch: Vec<(Group, Vec<PathBuf>)>) -> Vec<oneshot::Receiver<()>> {
        let batch: Vec<(Arc<Group>, Vec<PathBuf>)> = batch.into_iter().map(|(g, w)| (Arc::new(g), w)).collect();
        let groups: Vec<Arc<Group>> = batch.iter().map(|(g, _)| g.clone()).collect();
        let (prepared_tx, prepared) = tokio::sync::watch::channel(false);
        let state_dir = self.config.state_dir.clone();
        self.tracker.spawn(async move {
            if let Err(e) = tokio::task::spawn_blocking(move || cleanup::before_start(&batch, &state_dir)).await {
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
            &self.sources,
        );
        let (cancel, retired) = (CancellationToken::new(), CancellationToken::new());
        runner.retire_on(retired.clone());
        runner.start_after(prepared);
        let (tx, rx) = oneshot::channel();
        let retry_now = runner.retry_handle();
        // The runner's own future, not one wrapping it: a wrapper would hold the runner twice.
        let task = runner.run(cancel.clone(), Some(tx));
        let handle = self.tracker.spawn(task);
        self.running.push(Task {
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
        let running: Vec<&Group> = self.running.iter().map(|r| &*r.group).collect();
        let plan = reload::plan(&running, &self.config, &config);
        let (mut keep, mut stop) = (Vec::new(), Vec::new());
        for (r, kept) in std::mem::take(&mut self.running).into_iter().zip(&plan.keep) {
            if *kept { keep.push(r) } else { stop.push(r) }
        }
        for r in &stop {
            r.retired.cancel();
            r.cancel.cancel();
            // The new task reports its outputs afresh: none the reload removed stays failing.
            for member in r.group.members() {
                self.metrics.forget_outputs(&member.name);
            }
        }
        for name in &plan.unserved {
            self.store.update(name, |s| {
                s.token = None;
                s.failures = 0;
            });
        }
        self.store.retain_clients(config.clients.iter().map(|c| &c.name));
        self.sources.reconfigure(&config, &self.store);
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
            start: plan.start,
            orphaned: plan.orphaned,
        }
    }

    /// Ends a reload: starts the new and changed groups (each taking over a still-valid token if
    /// its grant is unchanged, after deleting the withdrawn files it writes), deletes the other
    /// withdrawn files, and forgets removed clients.
    pub fn finish(&mut self, reload: Reload) {
        let Reload {
            config,
            summary,
            lingering,
            start,
            orphaned,
            ..
        } = reload;
        self.lingering.retain(|(_, handle)| !handle.is_finished());
        self.lingering.extend(lingering);
        for name in &summary.removed {
            self.metrics.forget(name);
        }
        // New groups save state where the new configuration says.
        self.config = config;
        // Readiness was reported at start-up; later first attempts are not awaited.
        drop(self.spawn_all(start));
        if !orphaned.is_empty() {
            self.tracker
                .spawn_blocking(move || withdraw_files("a changed client", &orphaned));
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
                stop = "incomplete",
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
                        task = "left_behind",
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

/// A group's refresh task: tokens from `sources`, published to its members.
pub(super) fn runner<S: Sources>(
    group: &Arc<Group>,
    state_dir: &Path,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    sources: &S,
) -> Runner<S::Source> {
    let clock = sources.clock();
    let publisher = Publisher::new(group.clone(), state_dir, store.clone(), metrics.clone(), clock.clone());
    Runner::new(group.clone(), sources.source(group, &clock), publisher, clock)
}
