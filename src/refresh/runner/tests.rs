//! The loop's timing under tokio's paused time: a scripted token source, a manual wall clock,
//! real files in a temporary directory.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use secrecy::ExposeSecret;

use super::*;
use crate::config::{ClientName, parse_str};
use crate::metrics::Metrics;
use crate::oauth::ResponseError;
use crate::refresh::clock::manual;
use crate::store::Store;

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

fn t0() -> SystemTime {
    UNIX_EPOCH + S(1_800_000_000)
}

/// The client under test, unless a test brings its own: refresh at exactly 80%, retries
/// from 1s doubling to 8s.
const CLIENT: &str = "refresh: { at: 80%, jitter: 0%, min_remaining: 1s }\nretry: { initial: 1s, max: 8s }";

enum Answer {
    Token(Duration),
    Fail(FetchError),
    /// The wall clock steps back by this much while the request is out; then the answer.
    StepBackDuring(Duration, Box<Answer>),
}

fn transient() -> Answer {
    Answer::Fail(FetchError::Transport {
        url: "https://idp.example/t".into(),
        reason: "Connection refused".into(),
    })
}

fn oauth_error(status: u16, error: &str, retry_after: Option<Duration>) -> Answer {
    Answer::Fail(FetchError::Response(ResponseError::OAuth {
        status,
        error: error.into(),
        description: None,
        retry_after,
    }))
}

/// Answers in order; once the script is used up, one-hour tokens.
struct Script {
    calls: Arc<Mutex<Vec<SystemTime>>>,
    answers: VecDeque<Answer>,
    clock: manual::Handle,
}

impl TokenSource for Script {
    async fn obtain(&mut self, sent_at: SystemTime, _current: Option<Arc<Token>>) -> Result<Token, FetchError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(sent_at);
            calls.len()
        };
        let mut answer = self.answers.pop_front().unwrap_or(Answer::Token(S(3600)));
        if let Answer::StepBackDuring(by, then) = answer {
            tokio::time::sleep(MS(10)).await;
            self.clock.jump_back(by);
            tokio::time::sleep(MS(10)).await;
            answer = *then;
        }
        match answer {
            Answer::Token(lifetime) => Ok(Token::for_test(&format!("token-{n}"), sent_at, lifetime)),
            Answer::Fail(e) => Err(e),
            Answer::StepBackDuring(..) => unreachable!("one step per request"),
        }
    }
}

struct Harness {
    dir: tempfile::TempDir,
    calls: Arc<Mutex<Vec<SystemTime>>>,
    clock: manual::Handle,
    store: Arc<Store>,
    retry_now: Arc<Notify>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start(client: &str, answers: Vec<Answer>) -> Harness {
        Self::start_in(tempfile::tempdir().unwrap(), client, answers, 1.0)
    }

    /// `jitter` is the backoff's sample: 1.0, the top of the full-jitter range, makes each
    /// delay equal its cap.
    fn start_in(dir: tempfile::TempDir, client: &str, answers: Vec<Answer>, jitter: f64) -> Harness {
        let d = dir.path().display();
        let mut yaml = format!(
            "state_dir: {d}/state\nsocket: {{ enabled: false }}\nclients:\n  c:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: {{ file: /s }}\n"
        );
        for line in client.replace("DIR", &d.to_string()).lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
        let config = parse_str(&yaml, Path::new("/etc/tokend/config.yaml")).unwrap();
        let group = Arc::new(Group::from_clients(&config.clients).remove(0));
        let store = Store::new();
        store.retain_clients(config.clients.iter().map(|c| &c.name));
        let (clock, handle) = manual::clock(t0());
        let publisher = Publisher::new(
            group.clone(),
            &config.state_dir,
            store.clone(),
            Arc::new(Metrics::new()),
            clock.clone(),
        );
        let calls = Arc::new(Mutex::new(Vec::new()));
        let source = Script {
            calls: calls.clone(),
            answers: answers.into(),
            clock: handle.clone(),
        };
        let mut runner = Runner::new(group, source, publisher, clock);
        runner.jitter = match jitter {
            0.0 => || 0.0,
            _ => || 1.0,
        };
        let retry_now = runner.retry_handle();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(runner.run(cancel.clone(), None));
        Harness {
            dir,
            calls,
            clock: handle,
            store,
            retry_now,
            cancel,
            task,
        }
    }

    /// When each request was sent, in wall-clock seconds after t0, to the millisecond.
    fn sent(&self) -> Vec<f64> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .map(|t| (t.duration_since(t0()).unwrap().as_millis() as f64) / 1000.0)
            .collect()
    }

    fn requests(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn snapshot(&self) -> crate::store::Snapshot {
        self.store.get(&ClientName::new("c").unwrap()).unwrap()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn tokens_are_refreshed_at_the_planned_time() {
    let h = Harness::start(CLIENT, vec![Answer::Token(S(100)), Answer::Token(S(100))]);
    sleep(S(79)).await;
    assert_eq!(h.sent(), [0.0]);
    sleep(S(2)).await;
    assert_eq!(h.sent(), [0.0, 80.0]);
    sleep(S(80)).await;
    assert_eq!(h.sent(), [0.0, 80.0, 160.0]);
    let s = h.snapshot();
    assert_eq!(s.next_attempt, Some(t0() + S(160) + S(2880)));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_and_retry_after_is_a_floor() {
    let mut answers: Vec<Answer> = (0..5).map(|_| transient()).collect();
    answers.push(oauth_error(429, "too_many_requests", Some(S(30))));
    let h = Harness::start(CLIENT, answers);
    sleep(S(120)).await;
    // Caps 1, 2, 4, 8, then `retry.max` (8s); the 429's Retry-After (30s) beats the 8s.
    assert_eq!(h.sent(), [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 53.0]);
    let s = h.snapshot();
    assert_eq!((s.failures, s.last_error.as_deref()), (0, None));
    assert!(s.valid_token(t0() + S(120)).is_some());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rejection_waits_retry_max_however_the_jitter_falls() {
    let answers = (0..3).map(|_| oauth_error(401, "invalid_client", None)).collect();
    let h = Harness::start_in(tempfile::tempdir().unwrap(), CLIENT, answers, 0.0);
    sleep(S(1)).await;
    let s = h.snapshot();
    assert_eq!((s.failures, s.next_attempt), (1, Some(t0() + S(8))));
    assert!(s.last_error.unwrap().contains("invalid_client"));
    sleep(S(30)).await;
    assert_eq!(h.sent(), [0.0, 8.0, 16.0, 24.0]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_suspend_longer_than_the_lifetime_refreshes_at_once_on_wake() {
    let h = Harness::start(CLIENT, vec![Answer::Token(S(60))]);
    sleep(S(10)).await;
    // The VM sleeps two hours; tokio's monotonic clock never saw them. The manual clock reports
    // the jump at once, as the watcher's timer does (a suspend: within `clock::watcher::CHECK`).
    h.clock.jump_forward(S(7200));
    let woke = tokio::time::Instant::now();
    while h.requests() < 2 {
        sleep(MS(100)).await;
    }
    assert!(woke.elapsed() <= S(1), "noticed after {:?}", woke.elapsed());
    let sent = h.sent();
    assert!(sent[1] >= 7210.0 && sent[1] <= 7211.0, "{sent:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_clock_step_moves_the_refresh_by_as_much_and_keeps_its_interval() {
    // Back: the refresh planned for t0+2880 on the old clock moves to t0+2580 on the new one,
    // so it still comes 2880 s after the request by the monotonic clock: not at once (which
    // would send every group to the IdP together), not 300 s late.
    let h = Harness::start(CLIENT, vec![Answer::Token(S(3600))]);
    sleep(S(600)).await;
    h.clock.jump_back(S(300));
    sleep(S(1970)).await;
    assert_eq!(h.sent(), [0.0]);
    // Readers see the token expire when it does, on the new clock: 300 s earlier.
    let shown = h.snapshot().token.unwrap();
    assert_eq!((shown.issued_at, shown.expires_at), (t0() - S(300), t0() + S(3300)));
    sleep(S(320)).await;
    assert_eq!(h.sent(), [0.0, 2580.0]);
    // The new token is planned on the new clock alone.
    assert_eq!(h.snapshot().next_attempt, Some(t0() + S(2580) + S(2880)));
    h.stop().await;

    // Steps add up: back 300 s, then back 1000 s more (past the token's issue time).
    let h = Harness::start(CLIENT, vec![Answer::Token(S(3600))]);
    sleep(S(100)).await;
    h.clock.jump_back(S(300));
    sleep(S(100)).await;
    h.clock.jump_back(S(1000));
    // 2880 s after the request by the monotonic clock; the wall clock reads 1300 s less.
    sleep(S(2670)).await;
    assert_eq!(h.sent(), [0.0]);
    sleep(S(20)).await;
    assert_eq!(h.sent(), [0.0, 1580.0]);
    h.stop().await;

    // Forward: the refresh comes at its wall-clock time, early by the monotonic clock.
    let h = Harness::start(CLIENT, vec![Answer::Token(S(3600))]);
    sleep(S(10)).await;
    h.clock.jump_forward(S(2700));
    sleep(S(60)).await;
    assert_eq!(h.sent(), [0.0]);
    sleep(S(240)).await;
    assert_eq!(h.sent(), [0.0, 2880.0]);
    h.stop().await;
}

/// The clock steps back while a request is out, and no sleep sees it (the task waits for the
/// IdP): the new token's times, counted from when the request was sent, move earlier by as
/// much, once. It is not taken for a token issued in the future and replaced at once (each
/// client of a host whose clock NTP stepped back did that, one extra request each), and its
/// refresh keeps its interval.
#[tokio::test(start_paused = true)]
async fn a_step_back_during_a_request_moves_its_token_once() {
    let step_then = |answer| vec![Answer::StepBackDuring(S(600), Box::new(answer))];
    let h = Harness::start(CLIENT, step_then(Answer::Token(S(3600))));
    sleep(S(100)).await;
    assert_eq!(h.sent(), [0.0], "the token was replaced at once");
    let shown = h.snapshot().token.unwrap();
    assert_eq!((shown.issued_at, shown.expires_at), (t0() - S(600), t0() + S(3000)));
    assert_eq!(h.snapshot().next_attempt, Some(t0() + S(2280)));
    sleep(S(2790)).await;
    assert_eq!(h.sent(), [0.0, 2280.0]);
    h.stop().await;

    // A refresh that fails across the step: the current token's expiry moves (readers must
    // not believe it valid for 600 s more), and the retry comes after its backoff (1 s) on the
    // new clock, not 600 s early.
    let mut answers = vec![Answer::Token(S(3600))];
    answers.extend(step_then(transient()));
    let h = Harness::start(CLIENT, answers);
    sleep(S(2880) + MS(100)).await;
    assert_eq!(h.requests(), 2);
    let shown = h.snapshot().token.unwrap();
    assert_eq!(shown.expires_at, t0() + S(3000));
    let failed_at = t0() + S(2280) + MS(20);
    assert_eq!(h.snapshot().next_attempt, Some(failed_at + S(1)));
    sleep(S(1)).await;
    assert_eq!(h.sent(), [0.0, 2880.0, 2281.02]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_retries_a_failing_group_now_and_leaves_a_healthy_one_alone() {
    let answers = (0..3).map(|_| oauth_error(401, "invalid_client", None)).collect();
    let h = Harness::start(CLIENT, answers);
    sleep(S(2)).await;
    h.retry_now.notify_one();
    sleep(S(1)).await;
    assert_eq!(h.sent(), [0.0, 2.0]);
    // Then the backoff goes on from there; the failure count keeps growing.
    sleep(S(8)).await;
    assert_eq!(h.sent(), [0.0, 2.0, 10.0]);
    assert_eq!(h.snapshot().failures, 3);
    h.stop().await;

    let h = Harness::start(CLIENT, vec![]);
    sleep(S(5)).await;
    h.retry_now.notify_one();
    sleep(S(60)).await;
    assert_eq!(h.sent(), [0.0]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_output_is_retried_with_backoff_and_the_same_token() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: the first output cannot be written.
    std::fs::write(dir.path().join("blocked"), "not a directory").unwrap();
    let client = format!("{CLIENT}\noutputs: [{{ path: DIR/blocked/c.token }}, {{ path: DIR/ok.token }}]");
    let h = Harness::start_in(dir, &client, vec![], 1.0);
    let (ok, blocked) = (h.dir.path().join("ok.token"), h.dir.path().join("blocked/c.token"));
    sleep(MS(100)).await;
    assert_eq!(std::fs::read_to_string(&ok).unwrap(), "token-1");
    // Retries at 1s, then 1+2 = 3s, then 3+4 = 7s; the fault clears at 4.1s.
    sleep(S(4)).await;
    std::fs::remove_file(h.dir.path().join("blocked")).unwrap();
    sleep(MS(2800)).await;
    assert!(!blocked.exists(), "retried before its backoff");
    sleep(MS(200)).await;
    assert_eq!(std::fs::read_to_string(&blocked).unwrap(), "token-1");
    assert_eq!(h.requests(), 1, "an output retry never asks for a new token");
    h.stop().await;
}

/// A state directory that cannot be written (a full disk) holds up no output, and the save is
/// retried with the same token, without a new request, once it can be.
#[tokio::test(start_paused = true)]
async fn a_failed_state_save_is_retried_with_backoff_and_holds_up_no_output() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the state directory should be.
    std::fs::write(dir.path().join("state"), "not a directory").unwrap();
    let client = format!("{CLIENT}\noutputs: [{{ path: DIR/c.token }}]");
    let h = Harness::start_in(dir, &client, vec![], 1.0);
    let state = h.dir.path().join("state/c.state");
    sleep(MS(100)).await;
    assert_eq!(
        std::fs::read_to_string(h.dir.path().join("c.token")).unwrap(),
        "token-1"
    );
    // Retries at 1s, then 3s, then 7s; the fault clears at 4.1s.
    sleep(S(4)).await;
    std::fs::remove_file(h.dir.path().join("state")).unwrap();
    sleep(MS(2800)).await;
    assert!(!state.exists(), "retried before its backoff");
    sleep(MS(200)).await;
    let name = ClientName::new("c").unwrap();
    let saved = crate::refresh::state::read(&h.dir.path().join("state"), &name).expect("saved on the retry");
    assert_eq!(saved.token.access_token.expose_secret(), "token-1");
    assert_eq!(h.requests(), 1, "a state retry never asks for a new token");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_saved_token_is_published_at_once_and_refreshed_when_planned() {
    let dir = tempfile::tempdir().unwrap();
    let client = format!("{CLIENT}\noutputs: [{{ path: DIR/c.token }}]");
    // Saved by an earlier run: obtained 600s ago, 1000s lifetime, so due at 800s - 600s.
    {
        let yaml =
            "clients:\n  c:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: { file: /s }\n";
        let config = parse_str(yaml, Path::new("/x.yaml")).unwrap();
        let fp = crate::refresh::fingerprint::Fingerprint::of(&config.clients[0].spec);
        let saved = Token::for_test("saved", t0() - S(600), S(1000));
        let name = ClientName::new("c").unwrap();
        crate::refresh::state::save(&dir.path().join("state"), &name, fp.as_str(), &saved).unwrap();
    }
    let h = Harness::start_in(dir, &client, vec![], 1.0);
    sleep(MS(100)).await;
    assert_eq!(std::fs::read_to_string(h.dir.path().join("c.token")).unwrap(), "saved");
    sleep(S(199)).await;
    assert_eq!(h.requests(), 0);
    sleep(S(1)).await;
    assert_eq!(h.sent(), [200.0]);
    h.stop().await;
}

/// Whoever learns of a new token from the store (a long-poll, `/readyz`, READY=1) finds the
/// files already holding it: the files are written first.
#[tokio::test(start_paused = true)]
async fn the_store_announces_a_token_only_once_its_files_hold_it() {
    let client = format!("{CLIENT}\noutputs: [{{ path: DIR/out/c.token }}]");
    let answers = (0..4).map(|_| Answer::Token(S(10))).collect();
    let h = Harness::start(&client, answers);
    let mut changes = h.store.subscribe("c").unwrap();
    let file = h.dir.path().join("out/c.token");
    let mut seen = 0;
    while seen < 4 {
        changes.changed().await.unwrap();
        let Some(token) = changes.borrow_and_update().token.clone() else {
            continue;
        };
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(on_disk, token.access_token.expose_secret(), "announced before written");
        seen += 1;
    }
    h.stop().await;
}
