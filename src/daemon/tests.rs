//! The daemon in-process under tokio's paused time: its loop (`run::serve`) driven by `Control`
//! events, real configuration files in a temporary directory, and scripted token sources on a
//! manual wall clock that count what each client asks.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::run::{Control, serve};
use super::sources::Sources;
use super::{Daemon, load_applicable};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oauth::FetchError;
use crate::proxy::Proxies;
use crate::refresh::clock::{Clock, manual};
use crate::refresh::{Group, TokenSource};
use crate::server::Server;
use crate::server::access::Authority;
use crate::store::Store;
use crate::token::Token;

/// How many requests each client (by group label) has made.
type Asked = Arc<Mutex<HashMap<String, usize>>>;

/// One-hour tokens for every group, on a manual clock; `made` counts the sources made for each
/// group (one per task started).
struct Scripted {
    clock: Clock,
    asked: Asked,
    made: Asked,
}

struct ScriptedSource {
    label: String,
    asked: Asked,
}

impl TokenSource for ScriptedSource {
    async fn obtain(&mut self, sent_at: SystemTime, _current: Option<Arc<Token>>) -> Result<Token, FetchError> {
        let n = {
            let mut asked = self.asked.lock().unwrap();
            let n = asked.entry(self.label.clone()).or_default();
            *n += 1;
            *n
        };
        Ok(Token::for_test(
            &format!("{}-{n}", self.label),
            sent_at,
            Duration::from_secs(3600),
        ))
    }
}

impl Sources for Scripted {
    type Source = ScriptedSource;

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    fn source(&self, group: &Arc<Group>, _clock: &Clock) -> ScriptedSource {
        *self.made.lock().unwrap().entry(group.label()).or_default() += 1;
        ScriptedSource {
            label: group.label(),
            asked: self.asked.clone(),
        }
    }

    fn reconfigure(&mut self, _config: &Config, _store: &Arc<Store>) {}
}

/// Writes the configuration (its clients as YAML lines) where the daemon reloads it from.
fn write_config(dir: &Path, clients: &str) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let yaml = format!(
        "state_dir: {}\nsocket: {{ enabled: false }}\ndefaults:\n  token_url: https://idp.example/oauth/token\n  \
         client_id: app\n  client_secret: {{ file: {} }}\nclients:\n{clients}",
        state.display(),
        secret.display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The daemon's loop running in a task, and what the test holds of it.
struct Driven {
    controls: mpsc::UnboundedSender<Control>,
    store: Arc<Store>,
    asked: Asked,
    made: Asked,
    task: tokio::task::JoinHandle<()>,
}

fn start(path: &Path) -> Driven {
    let config = load_applicable(path).unwrap();
    let (store, metrics) = (Store::new(), Arc::new(Metrics::new()));
    let (clock, _handle) = manual::clock(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let (asked, made) = (Asked::default(), Asked::default());
    let sources = Scripted {
        clock,
        asked: asked.clone(),
        made: made.clone(),
    };
    let authority = Authority::new(config.access.clone());
    let mut server = Server::start(None, authority, store.clone(), metrics.clone()).unwrap();
    let (mut daemon, first) = Daemon::start_with(config, store.clone(), metrics, sources);
    let (controls, received) = mpsc::unbounded_channel();
    let received = futures_util::stream::unfold(received, |mut r| async move { r.recv().await.map(|c| (c, r)) });
    let path = path.to_path_buf();
    let task = tokio::spawn(async move {
        let mut proxies = Proxies::default();
        serve(
            &mut daemon,
            &mut server,
            &mut proxies,
            first,
            Box::pin(received),
            CancellationToken::new(),
            &path,
        )
        .await;
        server.shutdown().await;
        daemon.shutdown().await;
    });
    Driven {
        controls,
        store,
        asked,
        made,
        task,
    }
}

impl Driven {
    /// Each client's current token, by name.
    fn tokens(&self) -> HashMap<String, String> {
        use secrecy::ExposeSecret;
        self.store
            .all()
            .into_iter()
            .filter_map(|(name, s)| Some((name.to_string(), s.token?.access_token.expose_secret().to_owned())))
            .collect()
    }

    fn asked(&self) -> HashMap<String, usize> {
        self.asked.lock().unwrap().clone()
    }

    /// Waits (on the paused clock) until `done` holds of the tokens.
    async fn until(&self, what: &str, done: impl Fn(&HashMap<String, String>) -> bool) {
        for _ in 0..6000 {
            if done(&self.tokens()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: tokens {:?}, asked {:?}", self.tokens(), self.asked());
    }
}

fn tokens(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(start_paused = true)]
async fn a_reload_restarts_only_what_changed_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "  a: { audience: https://a/ }\n  b: { audience: https://b/ }\n  gone: { audience: https://gone/ }\n",
    );
    let daemon = start(&path);
    daemon.until("the first tokens", |t| t.len() == 3).await;
    assert_eq!(
        daemon.tokens(),
        tokens(&[("a", "a-1"), ("b", "b-1"), ("gone", "gone-1")])
    );

    // a unchanged, b's grant changed, gone removed, c added.
    write_config(
        dir.path(),
        "  a: { audience: https://a/ }\n  b: { audience: https://b/v2 }\n  c: { audience: https://c/ }\n",
    );
    daemon.controls.send(Control::Reload).unwrap();
    daemon
        .until("the reload", |t| {
            t.get("b").map(String::as_str) == Some("b-2") && t.contains_key("c")
        })
        .await;
    assert_eq!(daemon.tokens(), tokens(&[("a", "a-1"), ("b", "b-2"), ("c", "c-1")]));
    assert_eq!(
        daemon.asked(),
        HashMap::from([("a".into(), 1), ("b".into(), 2), ("gone".into(), 1), ("c".into(), 1)])
    );
    assert!(!daemon.store.all().iter().any(|(n, _)| n.as_str() == "gone"));
    // The unchanged client's task was left alone; b's and c's are new.
    assert_eq!(
        *daemon.made.lock().unwrap(),
        HashMap::from([("a".into(), 1), ("b".into(), 2), ("gone".into(), 1), ("c".into(), 1)])
    );

    // A file that does not parse: the running configuration stays as it was, nothing is asked.
    std::fs::write(&path, "clients: [not, a, mapping").unwrap();
    daemon.controls.send(Control::Reload).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(daemon.tokens(), tokens(&[("a", "a-1"), ("b", "b-2"), ("c", "c-1")]));
    assert_eq!(daemon.asked().values().sum::<usize>(), 5);

    // And a stop ends the loop, the tasks with it.
    daemon.controls.send(Control::Stop).unwrap();
    tokio::time::timeout(Duration::from_secs(60), daemon.task)
        .await
        .expect("the loop ends at Control::Stop")
        .unwrap();
}
