//! Hooks: what runs once a client's new token is in all its files (`hooks:`), so that consumers
//! that read their credentials once (at start, on SIGHUP) pick it up.
//!
//! Each hook has a task of its own, fed the latest token through a watch channel: it never
//! blocks the refresh, the outputs or other clients, and it is never running twice. A token
//! that arrives while the hook runs is handed to it once that run ends (only the newest, when
//! several came). A failed run is retried with backoff (1 s, doubling) up to the hook's
//! `retries`, unless a newer token comes first. Dropping `Hooks` (the client's group stopped or
//! was reconfigured) stops the tasks and kills a command still running.

mod exec;
mod signal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{error, info, warn};

use crate::config::{Client, ClientName, Hook, HookAction};
use crate::metrics::Metrics;
use crate::token::Token;

/// The first retry of a failed hook comes after this; each next one after twice as long.
const RETRY_INITIAL: Duration = Duration::from_secs(1);

/// Reason a token was published, as far as hooks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A new token from the IdP.
    New,
    /// A saved token reused at start-up: hooks with `on_reuse` run.
    Reused,
}

/// What a hook run is told.
#[derive(Debug)]
pub struct Event {
    pub client: ClientName,
    pub outputs: Vec<PathBuf>,
    pub token: Arc<Token>,
    /// The store's version of the token (the socket's `Token-Version`).
    pub version: u64,
    pub why: Reason,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnded {
    Ok,
    Failed(String),
    TimedOut,
}

impl RunEnded {
    fn label(&self) -> &'static str {
        match self {
            RunEnded::Ok => "ok",
            RunEnded::Failed(_) => "failed",
            RunEnded::TimedOut => "timeout",
        }
    }
}

/// What feeds one hook's task: the newest event, if any yet.
type Feed = watch::Sender<Option<Arc<Event>>>;

/// The hooks of a group's clients.
pub struct Hooks {
    /// Per hook: its client, whether it runs for reused tokens, its feed.
    feeds: Vec<(ClientName, bool, Feed)>,
    /// `tokend once`: runs happen inside `fire`, which waits for them.
    inline: Vec<(ClientName, Hook)>,
    metrics: Arc<Metrics>,
    _stop: Option<DropGuard>,
}

impl Hooks {
    /// Starts a task per hook of `clients` (none if they have no hooks).
    pub fn start<'a>(clients: impl Iterator<Item = &'a Arc<Client>>, metrics: Arc<Metrics>) -> Hooks {
        let stop = CancellationToken::new();
        let mut feeds = Vec::new();
        for client in clients {
            for hook in &client.hooks {
                let (tx, rx) = watch::channel(None);
                tokio::spawn(run(
                    hook.clone(),
                    client.name.clone(),
                    rx,
                    metrics.clone(),
                    stop.clone(),
                ));
                feeds.push((client.name.clone(), hook.on_reuse, tx));
            }
        }
        Hooks {
            feeds,
            inline: Vec::new(),
            metrics,
            _stop: Some(stop.drop_guard()),
        }
    }

    /// For `tokend once`: hooks run when fired, and `fire` returns when they are done.
    pub fn inline<'a>(clients: impl Iterator<Item = &'a Arc<Client>>, metrics: Arc<Metrics>) -> Hooks {
        let inline = clients
            .flat_map(|c| c.hooks.iter().map(|h| (c.name.clone(), h.clone())))
            .collect();
        Hooks {
            feeds: Vec::new(),
            inline,
            metrics,
            _stop: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty() && self.inline.is_empty()
    }

    /// Hands `event` to the client's hooks (those that run for `event.why`).
    pub async fn fire(&self, event: Event) {
        let event = Arc::new(event);
        for (client, on_reuse, tx) in &self.feeds {
            if *client == event.client && (event.why == Reason::New || *on_reuse) {
                tx.send_replace(Some(event.clone()));
            }
        }
        for (client, hook) in &self.inline {
            if *client == event.client && (event.why == Reason::New || hook.on_reuse) {
                attempts(hook, client, &event, &self.metrics, &CancellationToken::new(), None).await;
            }
        }
    }
}

/// A hook's task: one run per token (the newest), retried on failure.
async fn run(
    hook: Hook,
    client: ClientName,
    mut feed: watch::Receiver<Option<Arc<Event>>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut pending: Option<Arc<Event>> = None;
    loop {
        let event = match pending.take() {
            Some(event) => event,
            None => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = feed.changed() => if changed.is_err() { return },
                }
                match feed.borrow_and_update().clone() {
                    Some(event) => event,
                    None => continue,
                }
            }
        };
        match attempts(&hook, &client, &event, &metrics, &stop, Some(&mut feed)).await {
            Next::Done => {}
            Next::Newer(event) => pending = event,
            Next::Stop => return,
        }
    }
}

/// How a hook's attempts at one event ended.
enum Next {
    Done,
    /// A newer token came while a retry was waiting: the hook runs for it instead.
    Newer(Option<Arc<Event>>),
    Stop,
}

/// Runs `hook` for `event`, retrying a failure with backoff up to its `retries`. With `feed` (a
/// background task), a newer token replaces a waiting retry; without (`once`), retries just wait.
async fn attempts(
    hook: &Hook,
    client: &ClientName,
    event: &Event,
    metrics: &Metrics,
    stop: &CancellationToken,
    mut feed: Option<&mut watch::Receiver<Option<Arc<Event>>>>,
) -> Next {
    let mut attempt = 0;
    loop {
        // A command still running when tokend stops is killed inside (with its group).
        let outcome = execute(hook, event, stop).await;
        if stop.is_cancelled() {
            return Next::Stop;
        }
        if settle(hook, client, &outcome, attempt, metrics, "retrying").is_none() {
            return Next::Done;
        }
        attempt += 1;
        if attempt > hook.retries {
            if feed.is_some() {
                error!(
                    client = %client,
                    hook = %describe(hook),
                    attempts = attempt,
                    "hook failed every attempt; it runs again with the next token"
                );
            }
            return Next::Done;
        }
        let Some(feed) = feed.as_deref_mut() else {
            tokio::time::sleep(backoff(attempt)).await;
            continue;
        };
        tokio::select! {
            _ = stop.cancelled() => return Next::Stop,
            _ = tokio::time::sleep(backoff(attempt)) => {}
            changed = feed.changed() => {
                if changed.is_err() {
                    return Next::Stop;
                }
                return Next::Newer(feed.borrow_and_update().clone());
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    RETRY_INITIAL * 2u32.saturating_pow(attempt.saturating_sub(1).min(16))
}

async fn execute(hook: &Hook, event: &Event, stop: &CancellationToken) -> RunEnded {
    match &hook.action {
        HookAction::Exec { .. } => exec::run(hook, event, stop).await,
        HookAction::Signal { signal, pid_file, .. } => signal::send(*signal, pid_file),
    }
}

/// Logs and counts a run; `Some(())` if it should be retried.
fn settle(
    hook: &Hook,
    client: &ClientName,
    outcome: &RunEnded,
    attempt: u32,
    metrics: &Metrics,
    then: &str,
) -> Option<()> {
    metrics.hook_run(client, outcome.label());
    let shown = describe(hook);
    match outcome {
        RunEnded::Ok => {
            info!(client = %client, hook = %shown, "hook ran");
            None
        }
        RunEnded::Failed(why) => {
            let then = if attempt < hook.retries {
                then
            } else {
                "no attempts left"
            };
            warn!(client = %client, hook = %shown, attempt = attempt + 1, error = %why, "hook failed; {then}");
            Some(())
        }
        RunEnded::TimedOut => {
            let then = if attempt < hook.retries {
                then
            } else {
                "no attempts left"
            };
            warn!(
                client = %client,
                hook = %shown,
                attempt = attempt + 1,
                timeout = %humantime::format_duration(hook.timeout),
                "hook ran past its timeout and was killed with its process group; {then}"
            );
            Some(())
        }
    }
}

/// `exec /usr/bin/systemctl reload app` or `signal SIGHUP to /run/app.pid`, for logs.
pub fn describe(hook: &Hook) -> String {
    match &hook.action {
        HookAction::Exec { argv, .. } => format!("exec {}", argv.join(" ")),
        HookAction::Signal { name, pid_file, .. } => format!("signal {name} to {}", pid_file.display()),
    }
}
