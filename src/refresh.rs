//! The refresh loop. Clients whose grants are identical form a `Group` and share one token
//! request; each group runs as its own task, so a slow or failing IdP for one group never delays
//! another. A group task seeds itself from the previous token (in memory after a reload, or the
//! state file after a restart), then sleeps on the wall clock until the token is due, refreshes,
//! publishes it to every member's outputs and the store, and backs off on failure while the old
//! token keeps being served.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Client, ClientName, Output, RequestSpec, RetryPolicy, Timeouts};
use crate::metrics::Metrics;
use crate::oauth::exchange::{self, Terms};
use crate::oauth::issuer::IssuerCache;
use crate::oauth::{ErrorClass, FetchError, HttpClients};
use crate::outcome::Outcome;
use crate::output;
use crate::schedule;
use crate::state;
use crate::store::{Snapshot, Store};
use crate::token::{Token, rfc3339};

/// Output retries back off from this …
const OUTPUT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// … to this.
const OUTPUT_RETRY_MAX: Duration = Duration::from_secs(60);

/// Clients that receive the same token: they share one `RequestSpec`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub spec: Arc<RequestSpec>,
    /// The first member in config order: its timeouts and retry policy are the group's.
    lead: Arc<Client>,
    /// The other members, in config order.
    others: Vec<Arc<Client>>,
}

impl Group {
    /// Groups clients that send the same request (`spec ==`: the same grant, authenticated the
    /// same way with the same credentials, over the same transport, validated by the same
    /// rules), in config order. Refresh times take the earliest any member's policy asks for.
    pub fn from_clients(clients: &[Arc<Client>]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<&RequestSpec, usize> = HashMap::new();
        for client in clients {
            match index.get(&*client.spec) {
                Some(&i) => groups[i].others.push(client.clone()),
                None => {
                    index.insert(&client.spec, groups.len());
                    groups.push(Group {
                        spec: client.spec.clone(),
                        lead: client.clone(),
                        others: Vec::new(),
                    });
                }
            }
        }
        groups
    }

    /// Every member, in config order.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Client>> {
        std::iter::once(&self.lead).chain(&self.others)
    }

    pub fn timeouts(&self) -> Timeouts {
        self.lead.timeouts
    }

    pub fn retry(&self) -> RetryPolicy {
        self.lead.retry
    }

    /// The shortest lifetime any member assumes for a token whose response states none.
    pub fn default_lifetime(&self) -> Duration {
        self.members()
            .map(|m| m.refresh.default_lifetime)
            .fold(self.lead.refresh.default_lifetime, Duration::min)
    }

    /// When to refresh `token`: the earliest any member's policy asks for.
    pub fn plan(&self, token: &Token) -> schedule::RefreshPlan {
        let sample = token.jitter_sample();
        let plan = |m: &Arc<Client>| schedule::refresh_at(token.issued_at, token.expires_at, &m.refresh, sample);
        self.members()
            .map(plan)
            .fold(plan(&self.lead), |a, b| if b.at < a.at { b } else { a })
    }

    /// What a token held by this group was obtained and accepted under: the grant, and the
    /// validation rules it passed. A saved or kept token is reused only under the same
    /// fingerprint, so turning `validate:` on or changing it never publishes an unchecked token.
    pub fn fingerprint(&self) -> String {
        let grant = self.spec.grant.fingerprint();
        match &self.spec.validation {
            None => grant,
            Some(rules) => {
                let text = format!("{grant}|{rules:?}");
                crate::config::sha256_hex(text.as_bytes())
            }
        }
    }

    /// The member names, for logs: `billing` or `billing,reports`.
    pub fn label(&self) -> String {
        self.members().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Where a group's first token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// Another task of this process held a valid token for the same grant (a reload).
    Memory,
    /// A state file from an earlier run.
    StateFile,
}

/// One group's refresh state machine. `run` drives it forever; `tokend once` calls its steps.
pub struct Runner {
    group: Group,
    label: String,
    fingerprint: String,
    http: HttpClients,
    /// The issuer's metadata and keys.
    issuer: IssuerCache,
    state_dir: PathBuf,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    current: Option<Arc<Token>>,
    /// When to next ask for a token (planned refresh or retry).
    due: SystemTime,
    failures: u32,
    /// Outputs whose last write failed, as (member, output) indexes, and when to retry them.
    failed_outputs: Vec<(usize, usize)>,
    output_retry: (SystemTime, Duration),
    expiry_reported: bool,
    /// The clock was seen to have gone back since the current token was obtained, and an
    /// immediate refresh was ordered; not again for the same token, so that a failing refresh
    /// backs off normally.
    clock_leap_handled: bool,
    short_lifetime_reported: bool,
    /// Poked by a reload: an operator may have fixed what made the requests fail.
    retry_now: Arc<tokio::sync::Notify>,
}

impl Runner {
    pub fn new(
        group: Group,
        state_dir: &std::path::Path,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        http: &HttpClients,
    ) -> Self {
        let http = http.clone();
        Runner {
            label: group.label(),
            fingerprint: group.fingerprint(),
            group,
            http,
            issuer: IssuerCache::default(),
            state_dir: state_dir.to_owned(),
            store,
            metrics,
            current: None,
            due: SystemTime::now(),
            failures: 0,
            failed_outputs: Vec::new(),
            output_retry: (SystemTime::now(), OUTPUT_RETRY_INITIAL),
            expiry_reported: false,
            clock_leap_handled: false,
            short_lifetime_reported: false,
            retry_now: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Wakes a running task after a reload: if its last request failed, it retries now.
    pub fn retry_handle(&self) -> Arc<tokio::sync::Notify> {
        self.retry_now.clone()
    }

    /// How many outputs failed their last write.
    pub fn failed_outputs(&self) -> usize {
        self.failed_outputs.len()
    }

    /// Whether a refresh is due at `now`.
    pub fn is_due(&self, now: SystemTime) -> bool {
        now >= self.due
            || self
                .current
                .as_ref()
                .is_none_or(|t| schedule::clock_went_back(t.issued_at, now))
    }

    /// Takes over what is known about this grant: after a reload, the previous task's token and
    /// retry state (from the store); after a restart, a still-valid saved token. A token found is
    /// published. Returns where it came from, or `None` if a new token is needed.
    pub async fn seed(&mut self) -> Option<Seed> {
        let now = SystemTime::now();
        // A member whose grant changed must not go on serving the old grant's token.
        for member in self.group.members() {
            self.store.update(&member.name, |s| {
                if s.fingerprint != self.fingerprint {
                    s.token = None;
                    s.failures = 0;
                }
            });
        }
        let previous: Vec<Snapshot> = self
            .group
            .members()
            .filter_map(|m| self.store.get(&m.name))
            .filter(|s| s.fingerprint == self.fingerprint)
            .collect();
        // Only a reload leaves failures in the store: the grant keeps its failure count (its
        // backoff grows on), but tries once at once, since the reload may be the fix.
        if let Some(failing) = previous.iter().filter(|s| s.failures > 0).max_by_key(|s| s.failures) {
            self.failures = failing.failures;
            self.due = now;
        }
        let from_memory = previous
            .iter()
            .filter_map(|s| s.valid_token(now).cloned())
            .max_by_key(|t| t.expires_at);
        if let Some(token) = from_memory {
            self.adopt(token, Seed::Memory).await;
            return Some(Seed::Memory);
        }
        let dir = self.state_dir.clone();
        let names: Vec<ClientName> = self.group.members().map(|m| m.name.clone()).collect();
        let fingerprint = self.fingerprint.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let mut best: Option<Token> = None;
            for name in &names {
                match state::load(&dir, name, &fingerprint, now, Duration::from_secs(1)) {
                    Ok(token) if best.as_ref().is_none_or(|b| token.expires_at > b.expires_at) => best = Some(token),
                    Ok(_) | Err(state::Unusable::Missing) => {}
                    Err(reason) => debug!(client = %name, ?reason, "saved token not reused"),
                }
            }
            best
        })
        .await
        .ok()
        .flatten()?;
        self.adopt(Arc::new(saved), Seed::StateFile).await;
        Some(Seed::StateFile)
    }

    async fn adopt(&mut self, token: Arc<Token>, seed: Seed) {
        if self.failures == 0 {
            // Deterministic for a given token, so a reload or restart keeps the schedule.
            self.due = self.plan(&token);
        }
        info!(
            client = %self.label,
            outcome = if seed == Seed::Memory { Outcome::Kept } else { Outcome::Reused }.as_str(),
            expires_at = %rfc3339(token.expires_at),
            next_refresh = %rfc3339(self.due),
            "{}",
            if seed == Seed::Memory {
                "kept the current token"
            } else {
                "reused the token saved by the previous run; no request sent"
            }
        );
        // The state file already holds this token (or, after a reload, the same grant's).
        self.publish(token, false).await;
    }

    /// The earliest refresh time any member's policy asks for.
    fn plan(&mut self, token: &Token) -> SystemTime {
        let earliest = self.group.plan(token);
        if earliest.min_remaining_unmet && !self.short_lifetime_reported {
            self.short_lifetime_reported = true;
            warn!(
                client = %self.label,
                lifetime = %humantime::format_duration(whole_seconds(token.lifetime())),
                "the token lives too briefly to be refreshed `min_remaining` before expiry; refreshing at half its lifetime"
            );
        }
        earliest.at
    }

    /// Requests a new token now. On success it is published; on failure the current token stays
    /// and the next attempt is scheduled with backoff.
    pub async fn refresh(&mut self) -> Result<(), FetchError> {
        let started = Instant::now();
        let result = self.request().await;
        self.complete(result, started.elapsed()).await
    }

    /// The request alone: cancellable, as it changes nothing but caches.
    async fn request(&mut self) -> Result<Token, FetchError> {
        let terms = Terms {
            timeouts: self.group.timeouts(),
            default_lifetime: self.group.default_lifetime(),
        };
        exchange::obtain(&self.group.spec, &self.http, &mut self.issuer, terms, SystemTime::now()).await
    }

    /// Acts on a request's outcome: publishes a new token, or schedules the retry. Never
    /// cancelled part-way, so a reload or shutdown waits for the files to be written.
    async fn complete(&mut self, result: Result<Token, FetchError>, took: Duration) -> Result<(), FetchError> {
        let outcome = match &result {
            Ok(_) => Outcome::Refreshed,
            Err(e) => Outcome::from(e.class()),
        };
        for member in self.group.members() {
            self.metrics.refresh(&member.name, outcome, took);
        }
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                self.failures = 0;
                self.due = self.plan(&token);
                info!(
                    client = %self.label,
                    outcome = Outcome::Refreshed.as_str(),
                    lifetime = %humantime::format_duration(whole_seconds(token.lifetime())),
                    lifetime_from = token.lifetime_source.as_str(),
                    expires_at = %rfc3339(token.expires_at),
                    next_refresh = %rfc3339(self.due),
                    "obtained a new token"
                );
                self.publish(token, true).await;
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: &FetchError) {
        self.failures += 1;
        let class = e.class();
        let delay = schedule::retry_delay(
            &self.group.retry(),
            class,
            self.failures,
            e.retry_after(),
            rand::random::<f64>(),
        );
        let now = SystemTime::now();
        self.due = now + delay;
        let retry_in = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)).to_string();
        let keeping = match self.current.as_ref().filter(|t| t.is_valid_at(now)) {
            Some(t) => format!("still serving the current token, valid until {}", rfc3339(t.expires_at)),
            None => "no valid token is available".to_owned(),
        };
        let message = e.to_string();
        for member in self.group.members() {
            self.store.update(&member.name, |s| {
                s.fingerprint = self.fingerprint.clone();
                s.last_error = Some(message.clone());
                s.failures = self.failures;
                s.next_attempt = Some(self.due);
            });
        }
        match class {
            ErrorClass::Permanent => error!(
                client = %self.label,
                outcome = Outcome::from(class).as_str(),
                attempt = self.failures,
                error = %message,
                "token request rejected; check the client's credentials and settings; {keeping}; retrying in {retry_in}"
            ),
            ErrorClass::RateLimited => warn!(
                client = %self.label,
                outcome = Outcome::from(class).as_str(),
                attempt = self.failures,
                error = %message,
                retry_after = ?e.retry_after().map(|d| d.as_secs()),
                "token endpoint asked to slow down; {keeping}; retrying in {retry_in}"
            ),
            ErrorClass::Transient => warn!(
                client = %self.label,
                outcome = Outcome::from(class).as_str(),
                attempt = self.failures,
                error = %message,
                "token request failed; {keeping}; retrying in {retry_in}"
            ),
        }
    }

    /// Makes `token` current: store first (readers see it at once), then files, then state.
    async fn publish(&mut self, token: Arc<Token>, save_state: bool) {
        self.current = Some(token.clone());
        self.expiry_reported = false;
        self.clock_leap_handled = false;
        for member in self.group.members() {
            self.metrics.token_published(&member.name, token.expires_at);
            self.store.update(&member.name, |s| {
                s.set_token(token.clone());
                s.fingerprint = self.fingerprint.clone();
                if self.failures == 0 {
                    s.last_error = None;
                }
                s.failures = self.failures;
                s.next_attempt = Some(self.due);
            });
        }
        let all: Vec<(usize, usize)> = self
            .group
            .members()
            .enumerate()
            .flat_map(|(m, member)| (0..member.outputs.len()).map(move |o| (m, o)))
            .collect();
        self.failed_outputs = self.write_outputs(&token, all, save_state).await;
        self.output_retry = (SystemTime::now() + OUTPUT_RETRY_INITIAL, OUTPUT_RETRY_INITIAL);
    }

    /// Writes the given outputs on a blocking thread; returns those that failed.
    async fn write_outputs(
        &self,
        token: &Arc<Token>,
        which: Vec<(usize, usize)>,
        save_state: bool,
    ) -> Vec<(usize, usize)> {
        let members: Vec<Arc<Client>> = self.group.members().cloned().collect();
        let token = token.clone();
        let label = self.label.clone();
        let fingerprint = self.fingerprint.clone();
        let state_dir = self.state_dir.clone();
        let metrics = self.metrics.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            for (m, o) in which {
                let out: &Output = &members[m].outputs[o];
                match output::write(out, &token) {
                    Ok(()) => debug!(client = %members[m].name, path = %out.path.display(), "wrote output"),
                    Err(e) => {
                        metrics.output_error(&members[m].name);
                        error!(
                            client = %members[m].name,
                            path = %out.path.display(),
                            error = %e,
                            "cannot write output; the other outputs are unaffected; retrying with backoff"
                        );
                        failed.push((m, o));
                    }
                }
            }
            if save_state {
                for member in members.iter() {
                    if let Err(e) = state::save(&state_dir, &member.name, &fingerprint, &token) {
                        warn!(
                            client = %label,
                            dir = %state_dir.display(),
                            error = %e,
                            "cannot save the token for reuse after a restart; a restart will request a new one"
                        );
                    }
                }
            }
            failed
        });
        match job.await {
            Ok(failed) => failed,
            Err(e) => {
                error!(client = %self.label, error = %e, "output writer stopped unexpectedly");
                Vec::new()
            }
        }
    }

    async fn retry_outputs(&mut self) {
        let Some(token) = self.current.clone() else {
            return;
        };
        let pending = std::mem::take(&mut self.failed_outputs);
        let count = pending.len();
        self.failed_outputs = self.write_outputs(&token, pending, false).await;
        let (_, backoff) = self.output_retry;
        if self.failed_outputs.is_empty() {
            info!(client = %self.label, outputs = count, "failed outputs written");
        } else {
            let next = (backoff * 2).min(OUTPUT_RETRY_MAX);
            self.output_retry = (SystemTime::now() + next, next);
        }
    }

    /// A token whose issue time lies in the future: the clock went back. Refresh at once, once.
    fn check_clock(&mut self, now: SystemTime) {
        if let Some(token) = &self.current
            && !self.clock_leap_handled
            && schedule::clock_went_back(token.issued_at, now)
        {
            self.clock_leap_handled = true;
            warn!(
                client = %self.label,
                issued_at = %rfc3339(token.issued_at),
                "the clock went back since the token was obtained; its expiry cannot be trusted, refreshing now"
            );
            self.due = self.due.min(now);
        }
    }

    /// Drives the group until `cancel` fires. `first_attempt` is told once the group has a token
    /// or its first request has finished, whichever comes first (for readiness).
    ///
    /// Cancellation only takes effect while sleeping or waiting for the token endpoint; once a
    /// response is in, it is published completely (files and state) before the task can stop.
    pub async fn run(mut self, cancel: CancellationToken, first_attempt: Option<tokio::sync::oneshot::Sender<()>>) {
        let mut first_attempt = first_attempt;
        if self.seed().await.is_some() {
            signal_once(&mut first_attempt);
        }
        loop {
            let now = SystemTime::now();
            self.check_clock(now);
            if now >= self.due {
                let started = Instant::now();
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = self.request() => result,
                };
                // The outcome is logged and recorded in the store by `complete` itself.
                let _ = self.complete(result, started.elapsed()).await;
                signal_once(&mut first_attempt);
                continue;
            }
            let mut wake = self.due;
            if !self.failed_outputs.is_empty() {
                wake = wake.min(self.output_retry.0);
            }
            let expiry = self
                .current
                .as_ref()
                .map(|t| t.expires_at)
                .filter(|_| !self.expiry_reported);
            if let Some(expiry) = expiry {
                wake = wake.min(expiry);
            }
            let retry_now = self.retry_now.clone();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = schedule::sleep_until(wake) => {}
                _ = retry_now.notified() => {
                    if self.failures > 0 {
                        info!(client = %self.label, "configuration reloaded; retrying now instead of after the backoff");
                        self.due = SystemTime::now();
                    }
                }
            }
            let now = SystemTime::now();
            if let Some(expiry) = expiry
                && now >= expiry
            {
                self.expiry_reported = true;
                error!(
                    client = %self.label,
                    expired_at = %rfc3339(expiry),
                    "the token expired before a new one could be obtained; readers now get an expired token"
                );
            }
            if !self.failed_outputs.is_empty() && now >= self.output_retry.0 {
                self.retry_outputs().await;
            }
        }
    }
}

fn signal_once(tx: &mut Option<tokio::sync::oneshot::Sender<()>>) {
    if let Some(tx) = tx.take() {
        // Ignored: the receiver is gone once start-up has completed or been abandoned.
        let _ = tx.send(());
    }
}

/// A duration rounded to whole seconds, for log lines.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}
