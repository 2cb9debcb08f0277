//! One group's refresh loop: it keeps only when the next request is due, how many failed in a
//! row, and a few flags for what it has already reported. Asking for a token is the source's
//! job, publishing it the publisher's, and the wall clock comes in as a `Clock`, so the loop's
//! timing is unit-tested under tokio's paused time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::metrics::outcome::Outcome;
use crate::oauth::{ErrorClass, FetchError};
use crate::output::hooks::Reason;
use crate::refresh::clock::{Clock, Reading, Wake};
use crate::refresh::schedule;
use crate::token::{Token, rfc3339};

use super::publisher::{Attempts, Publisher};
use super::seed;
use super::{Group, TokenSource};

mod steps;

/// How long a stop waits for a token request in flight: by the time the answer is on its way the
/// IdP has issued (and counted, and billed) the token, so it is saved rather than thrown away and
/// asked for again after the restart. Well inside systemd's and Kubernetes' stop timeouts, and
/// within the daemon's own wait for its tasks (`STOPPED_TASKS_WAIT`).
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// A token younger than this is not replaced on request: a new one would be refused too.
pub const MIN_AGE_FOR_FORCED_REFRESH: Duration = Duration::from_secs(2);

pub struct Runner<S> {
    group: Arc<Group>,
    label: String,
    source: S,
    publisher: Publisher,
    clock: Clock,
    /// A uniform sample in [0, 1) for the retry backoff's full jitter.
    jitter: fn() -> f64,
    /// When to next ask for a token (planned refresh or retry).
    due: SystemTime,
    /// The clock reading `due` and the current token's times are on: a step back since is
    /// measured against it, so that each plan moves once, by exactly as much.
    planned_on: Reading,
    failures: u32,
    /// The current token's expiry has been reported, once.
    expiry_reported: bool,
    /// The clock was seen to have gone back since the current token was obtained, and an
    /// immediate refresh was ordered; not again for the same token, so that a failing refresh
    /// backs off normally.
    clock_leap_handled: bool,
    short_lifetime_reported: bool,
    /// The IdP's `Retry-After` asked for no request before this time (cleared by a token).
    held_until: Option<SystemTime>,
    /// The scopes asked for that the IdP left out, as last reported (empty: none).
    dropped_scope: String,
    /// Poked by a reload: an operator may have fixed what made the requests fail.
    retry_now: Arc<Notify>,
    /// Poked by the token proxy when an upstream refused the current token.
    refresh_now: Arc<Notify>,
    /// `tokend once`: one attempt, no retry, and the messages say so.
    single_attempt: bool,
    /// The task starts once this turns true (or its sender is gone): its files are ready.
    prepared: Option<watch::Receiver<bool>>,
}

impl<S: TokenSource> Runner<S> {
    pub fn new(group: Arc<Group>, source: S, publisher: Publisher, clock: Clock) -> Self {
        Runner {
            label: group.label(),
            group,
            source,
            publisher,
            due: clock.now(),
            planned_on: clock.read(),
            clock,
            jitter: rand::random::<f64>,
            failures: 0,
            expiry_reported: false,
            clock_leap_handled: false,
            short_lifetime_reported: false,
            dropped_scope: String::new(),
            held_until: None,
            retry_now: Arc::new(Notify::new()),
            refresh_now: Arc::new(Notify::new()),
            single_attempt: false,
            prepared: None,
        }
    }

    /// For `tokend once`: failures are reported as final (nothing is retried), outputs too.
    pub fn single_attempt(mut self) -> Self {
        self.single_attempt = true;
        self.publisher.single_attempt();
        self
    }

    /// Wakes a running task after a reload: if its last request failed, it retries now.
    pub fn retry_handle(&self) -> Arc<Notify> {
        self.retry_now.clone()
    }

    /// How many outputs failed their last write.
    pub fn failed_outputs(&self) -> usize {
        self.publisher.failed_outputs()
    }

    /// From when `retired` is cancelled, the group writes no file (see `Publisher::retire_on`).
    pub fn retire_on(&mut self, retired: tokio_util::sync::CancellationToken) {
        self.publisher.retire_on(retired);
    }

    /// `run` begins once `prepared` turns true: the files of its batch are ready (see
    /// `Daemon::spawn_all`).
    pub fn start_after(&mut self, prepared: watch::Receiver<bool>) {
        self.prepared = Some(prepared);
    }

    /// Whether a refresh is due at `now`.
    pub fn is_due(&self, now: SystemTime) -> bool {
        now >= self.due
            || self
                .publisher
                .current()
                .is_none_or(|t| schedule::clock_went_back(t.issued_at, now))
    }

    /// Takes over what is known about this request (the store's token, else a state file's; see
    /// `seed`) and publishes the token found.
    /// Returns where it came from, or `None` if a new token is needed.
    ///
    /// At start-up every task seeds at once, each waiting for the blocking threads that read
    /// its files: what it awaits is boxed, so that each waits with only the step it is on
    /// (unboxed, 10,000 seeds held 16 MB at the peak of a restart).
    pub async fn seed(&mut self) -> Option<Outcome> {
        let previous = self.publisher.take_over();
        self.planned_on = self.clock.read();
        let now = self.planned_on.wall;
        let mut seed = seed::kept(&previous, self.publisher.fingerprint(), now);
        if seed.needs_saved() {
            let saved = Box::pin(self.publisher.saved()).await;
            seed = seed.or_saved(saved, self.publisher.fingerprint(), self.clock.now());
        }
        for (name, reason) in &seed.passed_over {
            match reason {
                // Someone else could have written it: say so, loudly.
                crate::refresh::state::Unusable::Untrusted(why) => {
                    warn!(client = %name, reason = %why, "saved token not trusted, not reused; requesting a new one")
                }
                _ => debug!(client = %name, ?reason, "saved token not reused"),
            }
        }
        if seed.failures > 0 {
            self.failures = seed.failures;
            self.due = now;
        }
        let (token, outcome) = seed.token?;
        // A saved token passes `validate:` again before it is served, as a new one would; one
        // that fails is dropped. If the check cannot be made (the IdP's keys are out of reach),
        // the token is served: it is tokend's own (see `state::read`), and was validated when
        // it came.
        if outcome == Outcome::Reused
            && let Err(e) = Box::pin(self.source.check_saved(&token)).await
        {
            if e.class() == ErrorClass::Permanent {
                warn!(client = %self.label, error = %e, "the saved token fails validation now; not reused, requesting a new one");
                self.due = now;
                return None;
            }
            warn!(client = %self.label, error = %e, "cannot validate the saved token now; reusing it, as it was validated when it came");
        }
        if self.failures == 0 {
            self.due = self.plan(&token);
        }
        // The state file already holds this token (or, after a reload, the same grant's).
        let why = (outcome == Outcome::Reused).then_some(Reason::Reused);
        Box::pin(self.publish(token.clone(), false, why)).await;
        // Logged once the files hold the token, so the line means it is there.
        info!(
            client = %self.label,
            outcome = outcome.as_str(),
            expires_at = %rfc3339(token.expires_at),
            next_refresh = %rfc3339(self.due),
            "{}",
            if outcome == Outcome::Kept {
                "kept the current token"
            } else {
                "reused the token saved by the previous run; no request sent"
            }
        );
        Box::pin(self.publisher.fire_hooks()).await;
        Some(outcome)
    }

    /// The earliest refresh time any member's policy asks for.
    fn plan(&mut self, token: &Token) -> SystemTime {
        let plan = self.group.plan(token);
        if plan.min_remaining_unmet && !self.short_lifetime_reported {
            self.short_lifetime_reported = true;
            let lifetime = whole_seconds(token.lifetime());
            let min_remaining = self
                .group
                .members()
                .map(|m| m.refresh.min_remaining)
                .max()
                .unwrap_or_default();
            warn!(
                client = %self.label,
                lifetime = %humantime::format_duration(lifetime),
                min_remaining = %humantime::format_duration(min_remaining),
                "the token lives too briefly to be refreshed `min_remaining` before expiry: it lives {}, less than twice `refresh.min_remaining` ({}); refreshing at half its lifetime instead (set `min_remaining` below {} to refresh later)",
                humantime::format_duration(lifetime),
                humantime::format_duration(min_remaining),
                humantime::format_duration(whole_seconds(lifetime / 2)),
            );
        }
        plan.at
    }

    /// Warns when the IdP granted less than the scope asked for (RFC 6749 §3.3 lets it), once
    /// for each change of what it left out.
    fn report_scope(&mut self, token: &Token) {
        let Some(asked) = self.group.spec.grant.scope.as_deref() else {
            return;
        };
        let dropped = crate::oauth::scope::missing(asked.split(' '), token.scope.as_deref()).join(" ");
        if dropped == self.dropped_scope {
            return;
        }
        if dropped.is_empty() {
            info!(client = %self.label, scope = %asked, "the IdP grants every scope asked for again");
        } else {
            warn!(
                client = %self.label,
                scope_dropped = %dropped,
                scope_granted = token.scope.as_deref().unwrap_or_default(),
                "the IdP granted less than the scope asked for, leaving out `{dropped}`; the token is published (`require_scope` refuses such a token)"
            );
        }
        self.dropped_scope = dropped;
    }

    /// Requests a new token now. On success it is published; on failure the current token stays
    /// and the next attempt is scheduled with backoff.
    pub async fn refresh(&mut self) -> Result<(), FetchError> {
        self.planned_on = self.clock.read();
        let result = self
            .source
            .obtain(self.planned_on.wall, self.publisher.current().cloned())
            .await;
        let result = self.on_current_clock(result).await;
        self.complete(result).await
    }

    /// Acts on a request's outcome: publishes a new token, or schedules the retry. Never
    /// cancelled part-way, so a stop waits for the files to be written (see `Publisher::publish`
    /// for a reload).
    async fn complete(&mut self, result: Result<Token, FetchError>) -> Result<(), FetchError> {
        let outcome = match &result {
            Ok(token) if token.origin.node().is_some() => Outcome::Adopted,
            Ok(_) => Outcome::Refreshed,
            Err(e) => Outcome::from(e.class()),
        };
        self.publisher.record_request(outcome);
        let token = match result {
            Ok(token) => Arc::new(token),
            Err(e) => {
                self.fail(&e);
                return Err(e);
            }
        };
        self.failures = 0;
        self.held_until = None;
        self.due = self.plan(&token);
        self.publish(token.clone(), true, Some(Reason::New)).await;
        // Logged once the files hold the token, as the line below.
        self.report_scope(&token);
        // Logged once the files hold the token, so the line means it is there.
        match token.origin.node() {
            None => info!(
                client = %self.label,
                outcome = outcome.as_str(),
                lifetime = %humantime::format_duration(whole_seconds(token.lifetime())),
                lifetime_from = token.lifetime_source.as_str(),
                expires_at = %rfc3339(token.expires_at),
                next_refresh = %rfc3339(self.due),
                "obtained a new token"
            ),
            Some(node) => info!(
                client = %self.label,
                outcome = outcome.as_str(),
                node,
                lifetime = %humantime::format_duration(whole_seconds(token.lifetime())),
                expires_at = %rfc3339(token.expires_at),
                next_refresh = %rfc3339(self.due),
                "took the token another host of the fleet obtained"
            ),
        }
        self.publisher.fire_hooks().await;
        Ok(())
    }

    async fn publish(&mut self, token: Arc<Token>, save_state: bool, why: Option<Reason>) {
        self.expiry_reported = false;
        self.clock_leap_handled = false;
        let attempts = Attempts {
            failures: self.failures,
            next: self.due,
            held_until: self.held_until,
        };
        self.publisher.publish(token, attempts, save_state, why).await;
    }

    /// The token proxy's upstream refused the current token (revoked, or signed with a key it
    /// no longer trusts): refresh now, unless failing (the backoff stands) or the token is too
    /// fresh for another to differ.
    fn refresh_on_request(&mut self) {
        let now = self.clock.now();
        let fresh = self.publisher.current().is_some_and(|t| {
            now.duration_since(t.issued_at)
                .is_ok_and(|age| age < MIN_AGE_FOR_FORCED_REFRESH)
        });
        if self.failures == 0 && !fresh && self.due > now {
            info!(client = %self.label, "an upstream refused the current token; refreshing now");
            self.due = now;
        }
    }

    /// Drives the group until `cancel` fires. `first_attempt` is told once the group has a token
    /// or its first request has finished, whichever comes first (for readiness).
    ///
    /// Cancellation takes effect while sleeping; a request in flight gets `IN_FLIGHT_GRACE` to
    /// finish, and once an answer is in, it is published completely (files and state) before
    /// the task stops.
    ///
    /// There is one task per group, asleep nearly all the time, so its size is the daemon's
    /// cost per client. What the loop awaits (seeding, a request, publishing, the sleep itself)
    /// is boxed, so that the task holds only what is live between refreshes: a future is as
    /// large as the largest one it awaits inline (a request's was over 5 KiB). And the runner
    /// is moved into the task once: an `async fn`'s future keeps its arguments twice (as
    /// arguments, and as the locals they are moved into; rust-lang/rust#62958).
    #[allow(clippy::manual_async_fn, reason = "an async fn would hold the runner twice")]
    pub fn run(
        mut self,
        cancel: CancellationToken,
        first_attempt: Option<oneshot::Sender<()>>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: 'static,
    {
        async move { self.drive(&cancel, first_attempt).await }
    }

    async fn drive(&mut self, cancel: &CancellationToken, mut first_attempt: Option<oneshot::Sender<()>>) {
        if let Some(mut prepared) = self.prepared.take() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                // Err: the preparation is gone (it panicked); go on without it.
                _ = prepared.wait_for(|done| *done) => {}
            }
        }
        self.publisher.on_refresh_request(&self.refresh_now);
        if Box::pin(self.seed()).await.is_some() {
            signal_once(&mut first_attempt);
        }
        loop {
            let reading = self.clock.read();
            if let Some(by) = self.planned_on.stepped_back_by(&reading) {
                // While awake (publishing, or woken for another reason).
                Box::pin(self.stepped_back(by)).await;
            }
            let now = reading.wall;
            self.check_clock(now);
            if now >= self.due {
                // The new token's times are on this reading, and the failure's retry too.
                self.planned_on = reading;
                let request = Box::pin(self.source.obtain(now, self.publisher.current().cloned()));
                let Some(result) = in_flight(cancel, request, &self.label).await else {
                    return;
                };
                let result = Box::pin(self.on_current_clock(result)).await;
                // The outcome is logged and recorded in the store by `complete` itself.
                let _ = Box::pin(self.complete(result)).await;
                signal_once(&mut first_attempt);
                if cancel.is_cancelled() {
                    return;
                }
                continue;
            }
            let expiry = self
                .publisher
                .current()
                .map(|t| t.expires_at)
                .filter(|_| !self.expiry_reported);
            let wake = [self.publisher.retry_due(), expiry]
                .into_iter()
                .flatten()
                .fold(self.due, SystemTime::min);
            // Boxed, as the other awaits: the wait's state lives only while the task sleeps.
            let offered = self.source.offered(self.publisher.current().cloned());
            let woken = Box::pin(sleep(
                cancel,
                &self.clock,
                (wake, self.planned_on),
                &self.retry_now,
                &self.refresh_now,
                offered,
            ))
            .await;
            match woken {
                Woken::Cancelled => return,
                Woken::Clock(Wake::Deadline) => {}
                Woken::Clock(Wake::SteppedBack(by)) => Box::pin(self.stepped_back(by)).await,
                Woken::RetryNow => {
                    if self.failures > 0 {
                        info!(client = %self.label, retry = "now", "configuration reloaded; retrying now instead of after the backoff");
                        self.due = self.clock.now();
                    }
                }
                Woken::RefreshNow => self.refresh_on_request(),
                // The source has a newer token (another host got it): take it now.
                Woken::Offered => self.due = self.clock.now(),
            }
            let now = self.clock.now();
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
            if self.publisher.retry_due().is_some_and(|at| now >= at) {
                Box::pin(self.publisher.retry_failed()).await;
            }
        }
    }
}

/// The answer to a request; if `cancel` fires while it is out, it gets `IN_FLIGHT_GRACE` more,
/// and `None` if even that is not enough.
async fn in_flight<T>(cancel: &CancellationToken, request: impl Future<Output = T>, label: &str) -> Option<T> {
    let mut request = std::pin::pin!(request);
    tokio::select! {
        result = &mut request => return Some(result),
        _ = cancel.cancelled() => {}
    }
    info!(
        client = %label,
        grace = %humantime::format_duration(IN_FLIGHT_GRACE),
        "stopping: waiting for the token request in flight, so that its token is saved rather than asked for again"
    );
    let answer = tokio::time::timeout(IN_FLIGHT_GRACE, request).await.ok();
    if answer.is_none() {
        warn!(client = %label, "stopping: the token request in flight did not end within the grace; abandoned");
    }
    answer
}

/// What ended a sleep of the loop.
enum Woken {
    Cancelled,
    Clock(Wake),
    /// A reload asked failing groups to retry now.
    RetryNow,
    /// The token proxy asked for a new token.
    RefreshNow,
    /// The source has a newer token to hand over (`TokenSource::offered`).
    Offered,
}

async fn sleep(
    cancel: &CancellationToken,
    clock: &Clock,
    (until, planned_on): (SystemTime, Reading),
    retry_now: &Notify,
    refresh_now: &Notify,
    offered: impl Future<Output = ()>,
) -> Woken {
    tokio::select! {
        _ = cancel.cancelled() => Woken::Cancelled,
        woke = clock.sleep_until(until, planned_on) => Woken::Clock(woke),
        _ = retry_now.notified() => Woken::RetryNow,
        _ = refresh_now.notified() => Woken::RefreshNow,
        _ = offered => Woken::Offered,
    }
}

fn signal_once(tx: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = tx.take() {
        // Ignored: the receiver is gone once start-up has completed or been abandoned.
        let _ = tx.send(());
    }
}

/// A duration rounded to whole seconds, for log lines.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// The loop's timing, under tokio's paused time.
/// How a failure of `class` backs off: bad credentials or a refused token cannot be mended by
/// asking again soon (and each ask spends IdP quota); anything else may pass.
pub fn backoff(class: ErrorClass) -> schedule::Backoff {
    match class {
        ErrorClass::Permanent => schedule::Backoff::Maximum,
        ErrorClass::Transient | ErrorClass::RateLimited => schedule::Backoff::Exponential,
    }
}

#[cfg(test)]
mod tests;
