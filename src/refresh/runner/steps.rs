//! The runner's answers to what goes wrong: a failed attempt (its backoff and how loudly it is
//! reported), and the wall clock stepping (plans moved by as much, the token published again
//! with its times on the new clock).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use super::{Runner, backoff, whole_seconds};
use crate::metrics::outcome::Outcome;
use crate::oauth::{ErrorClass, FetchError};
use crate::refresh::TokenSource;
use crate::refresh::publisher::Attempts;
use crate::refresh::schedule;
use crate::token::{Token, rfc3339};

impl<S: TokenSource> Runner<S> {
    pub(super) fn fail(&mut self, e: &FetchError) {
        self.failures += 1;
        let class = e.class();
        let delay = schedule::retry_delay(
            &self.group.retry(),
            backoff(class),
            self.failures,
            e.retry_after(),
            (self.jitter)(),
        );
        let now = self.clock.now();
        self.due = now + delay;
        self.held_until = e
            .retry_after()
            .map(|after| now + schedule::honoured_retry_after(&self.group.retry(), after));
        let then = if self.single_attempt {
            "`once` does not retry".to_owned()
        } else {
            format!(
                "retrying in {}",
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            )
        };
        let keeping = match self.publisher.current().filter(|t| t.is_valid_at(now)) {
            Some(t) => format!("still serving the current token, valid until {}", rfc3339(t.expires_at)),
            None => "no valid token is available".to_owned(),
        };
        let message = e.to_string();
        self.publisher.report_failure(
            &message,
            Attempts {
                failures: self.failures,
                next: self.due,
                held_until: self.held_until,
            },
        );
        self.report_hold(now);
        let outcome = Outcome::from(class).as_str();
        let line = match e.advice() {
            Some(advice) => format!("{}; {advice}; {keeping}; {then}", e.summary()),
            None => format!("{}; {keeping}; {then}", e.summary()),
        };
        match class {
            ErrorClass::Permanent => error!(
                client = %self.label,
                outcome,
                attempt = self.failures,
                error = %message,
                "{line}"
            ),
            ErrorClass::RateLimited => warn!(
                client = %self.label,
                outcome,
                attempt = self.failures,
                error = %message,
                retry_after = ?e.retry_after().map(|d| d.as_secs()),
                "{line}"
            ),
            ErrorClass::Transient => warn!(
                client = %self.label,
                outcome,
                attempt = self.failures,
                error = %message,
                "{line}"
            ),
        }
    }

    /// The policy for a `Retry-After` that outlasts the token: it is honoured (the IdP asked,
    /// and asking anyway risks a ban), and said loudly, once per hold: here, in `status`, in
    /// `/readyz` and by `tokend_next_attempt_timestamp_seconds` passing the expiry gauge.
    fn report_hold(&self, now: SystemTime) {
        let Some(until) = self.held_until else {
            return;
        };
        let Some(token) = self
            .publisher
            .current()
            .filter(|t| t.is_valid_at(now) && t.expires_at < until)
        else {
            return;
        };
        error!(
            client = %self.label,
            held_until = %rfc3339(until),
            expires_at = %rfc3339(token.expires_at),
            "the IdP asked tokend to wait until {} (Retry-After), {} after the current token expires: readers will have no valid token in between; tokend honours the wait",
            rfc3339(until),
            humantime::format_duration(whole_seconds(until.duration_since(token.expires_at).unwrap_or_default())),
        );
    }

    /// The wall clock was stepped back by `by` since the plans were made (seen while sleeping,
    /// or after a request): every time planned on the old clock (the refresh, the retry, the
    /// token's expiry) now lies `by` too late, so each moves earlier by as much, and the token
    /// is published again with its times on the new clock (readers, `/readyz` and the state
    /// file must not believe it valid for longer). Each group keeps its own jittered time: a
    /// step does not send every group (and every host that stepped together) to the IdP at
    /// once.
    pub(super) async fn stepped_back(&mut self, by: Duration) {
        self.move_plans_back(by);
        if let Some(token) = self.publisher.current() {
            let token = Arc::new(token.stepped_back(by));
            self.publish(token, true, None).await;
        }
    }

    /// What `stepped_back` does, but publishing the token: its caller has a new one.
    pub(super) fn move_plans_back(&mut self, by: Duration) {
        self.planned_on = self.planned_on.stepped_back(by);
        self.due = self.due.checked_sub(by).unwrap_or(self.planned_on.wall);
        self.held_until = self.held_until.and_then(|until| until.checked_sub(by));
        self.publisher.stepped_back(by, self.planned_on.wall);
        info!(
            client = %self.label,
            clock = "stepped_back",
            by = %humantime::format_duration(whole_seconds(by)),
            next_refresh = %rfc3339(self.due),
            "the clock was stepped back; the refresh and the expiry move earlier by as much"
        );
    }

    /// A request's outcome, with the times of its token on the clock as it is now: they count
    /// from when the request was sent, and a step back while it was out (which no sleep saw)
    /// makes them lie as much too late — the token would look issued in the future, and be
    /// replaced at once.
    pub(super) async fn on_current_clock(&mut self, result: Result<Token, FetchError>) -> Result<Token, FetchError> {
        let Some(by) = self.planned_on.stepped_back_by(&self.clock.read()) else {
            return result;
        };
        match result {
            Ok(token) => {
                self.move_plans_back(by);
                Ok(token.stepped_back(by))
            }
            Err(e) => {
                self.stepped_back(by).await;
                Err(e)
            }
        }
    }

    /// A token whose issue time lies in the future: the clock went back by more than its age
    /// while tokend was not watching (before a restart), so its expiry cannot be trusted at
    /// all. Refresh at once, once per token.
    pub(super) fn check_clock(&mut self, now: SystemTime) {
        if let Some(token) = self.publisher.current()
            && !self.clock_leap_handled
            && schedule::clock_went_back(token.issued_at, now)
        {
            self.clock_leap_handled = true;
            warn!(
                client = %self.label,
                clock = "went_back",
                issued_at = %rfc3339(token.issued_at),
                "the clock went back since the token was obtained; its expiry cannot be trusted, refreshing now"
            );
            self.due = self.due.min(now);
        }
    }
}
