//! Publishing a group's token: to the state files and every member's outputs first, then to
//! the store (so whoever the socket tells of a token finds it in the files), then to the
//! members' hooks. An output that fails is retried with its own backoff, with the same token,
//! without a new request and without holding up the others; a member's hooks wait until all
//! its outputs are written. A state file that cannot be saved (a full disk) is retried with
//! the outputs, and holds up nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{ClientName, Output};
use crate::metrics::Metrics;
use crate::metrics::outcome::Outcome;
use crate::output::hooks::{self, Hooks, Reason};
use crate::output::{self, lock};
use crate::refresh::clock::Clock;
use crate::refresh::fingerprint::Fingerprint;
use crate::refresh::state::{self, Saved, Unusable};
use crate::store::{Snapshot, Store};
use crate::token::Token;

use super::Group;

/// Output retries back off from this …
pub const OUTPUT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// … to this.
pub const OUTPUT_RETRY_MAX: Duration = Duration::from_secs(60);

/// Where a group's requests stand, as the store shows it next to the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Consecutive failed requests.
    pub failures: u32,
    /// When the next request is planned (a refresh or a retry).
    pub next: SystemTime,
    /// The IdP's `Retry-After` asked for no request before this time.
    pub held_until: Option<SystemTime>,
}

pub struct Publisher {
    group: Arc<Group>,
    label: String,
    fingerprint: Fingerprint,
    state_dir: PathBuf,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Read after each write, for the retry time: a write can take long (a hung NFS mount).
    clock: Clock,
    current: Option<Arc<Token>>,
    /// Outputs whose last write failed, with their client's name.
    failed: Vec<(ClientName, Output)>,
    /// Members whose state file does not hold the current token: its save failed.
    unsaved: Vec<ClientName>,
    retry_at: SystemTime,
    retry_backoff: Duration,
    /// `tokend once`: a failed write is final, and its message says so.
    single_attempt: bool,
    hooks: Hooks,
    /// Members whose hooks wait for a failed output to be written, and why they would run.
    hooks_due: Vec<(ClientName, Reason)>,
    /// Cancelled when a reload replaces this group: from then on it writes no file, even from a
    /// write job already under way (one file at a time, checked with the file held).
    retired: CancellationToken,
}

impl Publisher {
    pub fn new(
        group: Arc<Group>,
        state_dir: &Path,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Publisher {
        Publisher {
            label: group.label(),
            fingerprint: Fingerprint::of(&group.spec),
            state_dir: state_dir.to_owned(),
            store,
            hooks: Hooks::start(group.members(), metrics.clone()),
            metrics,
            clock,
            current: None,
            failed: Vec::new(),
            unsaved: Vec::new(),
            retry_at: SystemTime::UNIX_EPOCH,
            retry_backoff: OUTPUT_RETRY_INITIAL,
            single_attempt: false,
            hooks_due: Vec::new(),
            retired: CancellationToken::new(),
            group,
        }
    }

    /// Writes nothing more once `retired` is cancelled (see the field).
    pub fn retire_on(&mut self, retired: CancellationToken) {
        self.retired = retired;
    }

    /// Makes `notify` how others (the token proxy) ask this group for a new token now.
    pub fn on_refresh_request(&self, notify: &Arc<tokio::sync::Notify>) {
        self.store
            .on_refresh_request(self.group.members().map(|m| &m.name), notify);
    }

    /// For `tokend once`: failed writes are not retried, and hooks run before it exits.
    pub fn single_attempt(&mut self) {
        self.single_attempt = true;
        self.hooks = Hooks::inline(self.group.members(), self.metrics.clone());
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The token last published, even if it has expired since.
    pub fn current(&self) -> Option<&Arc<Token>> {
        self.current.as_ref()
    }

    /// How many outputs failed their last write.
    pub fn failed_outputs(&self) -> usize {
        self.failed.len()
    }

    /// When failed outputs (and unsaved state files) are next retried, if any failed.
    pub fn retry_due(&self) -> Option<SystemTime> {
        (!self.failed.is_empty() || !self.unsaved.is_empty()).then_some(self.retry_at)
    }

    /// Takes over the members' entries in the store: a member whose request changed stops
    /// serving the old request's token at once; the others' snapshots are returned (a reload
    /// leaves the previous task's token and failures there).
    pub fn take_over(&self) -> Vec<Snapshot> {
        let ours = self.fingerprint.as_str();
        self.group
            .members()
            .filter_map(|m| {
                let mut reset = false;
                self.store.update(&m.name, |s| {
                    if &*s.fingerprint != ours {
                        s.token = None;
                        s.failures = 0;
                        s.held_until = None;
                        reset = true;
                    }
                });
                if reset {
                    self.metrics.refresh_failures(&m.name, 0);
                }
                self.store.get(&m.name)
            })
            .collect()
    }

    /// What the members' state files hold, read on a blocking thread.
    pub async fn saved(&self) -> Vec<(ClientName, Result<Saved, Unusable>)> {
        let dir = self.state_dir.clone();
        let names: Vec<ClientName> = self.group.members().map(|m| m.name.clone()).collect();
        let read = move || names.into_iter().map(|n| (n.clone(), state::read(&dir, &n))).collect();
        tokio::task::spawn_blocking(read).await.unwrap_or_else(|e| {
            warn!(client = %self.label, error = %e, "cannot read the state files");
            Vec::new()
        })
    }

    /// Counts a finished request (or a token taken from the fleet) for every member.
    pub fn record_request(&self, outcome: Outcome) {
        for member in self.group.members() {
            self.metrics.refresh(&member.name, outcome);
        }
    }

    /// Records a failed request in the store; the current token stays published.
    pub fn report_failure(&self, error: &str, attempts: Attempts) {
        if self.retired.is_cancelled() {
            return;
        }
        for member in self.group.members() {
            self.store.update(&member.name, |s| {
                s.fingerprint = self.fingerprint.shared();
                s.last_error = Some(error.to_owned());
                s.failures = attempts.failures;
                s.next_attempt = Some(attempts.next);
                s.held_until = attempts.held_until;
            });
            self.metrics.next_attempt(&member.name, attempts.next);
            self.metrics.refresh_failures(&member.name, attempts.failures);
        }
    }

    /// Makes `token` current: the state files (for a new token) and every output, then the
    /// store, then the hooks. In that order, whoever learns of the token from the socket (a
    /// long-poll, `/readyz`, systemd's READY=1) finds the files already holding it; an output that
    /// failed is retried with backoff and does not hold the store back. Never cancelled part-way
    /// (a stop waits for the files to be written), but once a reload has replaced the group
    /// (`retire_on`) it writes nothing more and leaves the store alone. `why`: the hooks that
    /// `fire_hooks` is to run (none for a token only re-timed, or kept across a reload).
    pub async fn publish(&mut self, token: Arc<Token>, attempts: Attempts, save_state: bool, why: Option<Reason>) {
        self.current = Some(token.clone());
        let all = self
            .group
            .members()
            .flat_map(|m| m.outputs.iter().map(|o| (m.name.clone(), o.clone())))
            .collect();
        let members = if save_state {
            self.group.members().map(|m| m.name.clone()).collect()
        } else {
            // The state files hold this token already (reused, or kept across a reload), or a
            // save of it is still to be retried.
            std::mem::take(&mut self.unsaved)
        };
        (self.failed, self.unsaved) = self.write(&token, all, members).await;
        // Replaced while writing: the store and the hooks belong to the new configuration now.
        if self.retired.is_cancelled() {
            return;
        }
        self.retry_backoff = OUTPUT_RETRY_INITIAL;
        self.retry_at = self.clock.now() + OUTPUT_RETRY_INITIAL;
        for member in self.group.members() {
            self.metrics.token_published(&member.name, token.expires_at);
            self.metrics.next_attempt(&member.name, attempts.next);
            self.metrics.refresh_failures(&member.name, attempts.failures);
            self.store.update(&member.name, |s| {
                s.set_token(token.clone());
                s.fingerprint = self.fingerprint.shared();
                if attempts.failures == 0 {
                    s.last_error = None;
                }
                s.failures = attempts.failures;
                s.next_attempt = Some(attempts.next);
                s.held_until = attempts.held_until;
            });
        }
        // A re-timed token (`why` None) leaves hooks still waiting for an output as they are.
        if let Some(why) = why
            && !self.hooks.is_empty()
        {
            self.hooks_due.clear();
            let names: Vec<ClientName> = self.group.members().map(|m| m.name.clone()).collect();
            for name in names {
                self.hooks_due.push((name, why));
            }
        }
    }

    /// Runs the due hooks (of the last `publish`) of every member whose outputs are all
    /// written; the others' wait for `retry_failed` to write them.
    pub async fn fire_hooks(&mut self) {
        let Some(token) = self.current.clone().filter(|_| !self.retired.is_cancelled()) else {
            return;
        };
        let due = std::mem::take(&mut self.hooks_due);
        for (name, why) in due {
            if self.failed.iter().any(|(n, _)| *n == name) {
                self.hooks_due.push((name, why));
                continue;
            }
            let Some(member) = self.group.members().find(|m| m.name == name) else {
                continue;
            };
            let event = hooks::Event {
                outputs: member.outputs.iter().map(|o| o.path.clone()).collect(),
                version: self.store.with(name.as_str(), |s| s.version).unwrap_or(0),
                client: name,
                token: token.clone(),
                why,
            };
            self.hooks.fire(event).await;
        }
    }

    /// The wall clock stepped back by `by`: the next retry moves earlier by as much, so that it
    /// still comes after the planned backoff and not that much later.
    pub fn stepped_back(&mut self, by: Duration, now: SystemTime) {
        self.retry_at = self.retry_at.checked_sub(by).unwrap_or(now);
    }

    /// Writes the failed outputs and unsaved state files again, with the current token; backs
    /// off if some still fail.
    pub async fn retry_failed(&mut self) {
        let Some(token) = self.current.clone() else {
            return;
        };
        let pending = std::mem::take(&mut self.failed);
        let unsaved = std::mem::take(&mut self.unsaved);
        let (outputs, states) = (pending.len(), unsaved.len());
        (self.failed, self.unsaved) = self.write(&token, pending, unsaved).await;
        if outputs > 0 && self.failed.is_empty() {
            info!(client = %self.label, outputs, "failed outputs written");
        }
        if states > 0 && self.unsaved.is_empty() {
            info!(client = %self.label, dir = %self.state_dir.display(), "state saved after all");
        }
        if !self.hooks_due.is_empty() {
            self.fire_hooks().await;
        }
        if !self.failed.is_empty() || !self.unsaved.is_empty() {
            self.retry_backoff = (self.retry_backoff * 2).min(OUTPUT_RETRY_MAX);
            self.retry_at = self.clock.now() + self.retry_backoff;
        }
    }

    /// Writes the state files of `members`, then `which` outputs, on a blocking thread;
    /// returns the outputs and the members' state files that failed.
    async fn write(
        &self,
        token: &Arc<Token>,
        which: Vec<(ClientName, Output)>,
        members: Vec<ClientName>,
    ) -> (Vec<(ClientName, Output)>, Vec<ClientName>) {
        let token = token.clone();
        let label = self.label.clone();
        let label_for_lock = self.label.clone();
        let fingerprint = self.fingerprint.shared();
        let state_dir = self.state_dir.clone();
        let metrics = self.metrics.clone();
        let (then, restart) = if self.single_attempt {
            (
                "`once` does not retry",
                "the next run reuses the token saved before, if still valid, or requests a new one",
            )
        } else {
            (
                "retrying with backoff",
                "retrying with backoff; until then a restart reuses the token saved before, if still valid, or requests a new one",
            )
        };
        let retired = self.retired.clone();
        // Holds the file, then writes it unless this group has been replaced meanwhile (`None`).
        let unless_retired = move |path: &Path, write: &dyn Fn() -> std::io::Result<()>| {
            let _held = lock::hold(path);
            if retired.is_cancelled() {
                debug!(client = %label_for_lock, path = %path.display(), "not written: a reload replaced this client's configuration");
                return None;
            }
            Some(write())
        };
        let job = tokio::task::spawn_blocking(move || {
            // The state files first: a restart after a crash part-way reuses the token they
            // hold, which is then never older than one the outputs already showed readers.
            let mut unsaved = Vec::new();
            for name in members {
                let path = state::path(&state_dir, &name);
                let Some(saved) = unless_retired(&path, &|| state::save(&state_dir, &name, &fingerprint, &token))
                else {
                    continue;
                };
                metrics.state_write(&name, saved.is_ok());
                if let Err(e) = saved {
                    warn!(
                        client = %label,
                        dir = %state_dir.display(),
                        error = %e,
                        "cannot save the token for reuse after a restart; the outputs are unaffected; {restart}"
                    );
                    unsaved.push(name);
                }
            }
            let mut failed = Vec::new();
            for (name, out) in which {
                let Some(written) = unless_retired(&out.path, &|| output::write(&out, &token)) else {
                    continue;
                };
                metrics.output_write(&name, &out.path, written.is_ok());
                match written {
                    Ok(()) => debug!(client = %name, path = %out.path.display(), "wrote output"),
                    Err(e) => {
                        error!(
                            client = %name,
                            path = %out.path.display(),
                            error = %e,
                            "cannot write output; the other outputs are unaffected; {then}"
                        );
                        failed.push((name, out));
                    }
                }
            }
            (failed, unsaved)
        });
        match job.await {
            Ok(failed) => failed,
            Err(e) => {
                error!(client = %self.label, error = %e, "output writer stopped unexpectedly");
                (Vec::new(), Vec::new())
            }
        }
    }
}
