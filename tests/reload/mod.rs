//! Reloads and stops while a file system hangs (a stuck NFS mount, made here with fanotify
//! permission events: `hang.py`): the main loop — signals, the watchdog — keeps running, a
//! changed grant's old token stops being served at once, and a stop does not wait forever.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{SECRET, T, config, running_as_root};
use crate::out;
use crate::util::*;
use serde_json::Value;
use std::fs;

/// `hang.py` watching one directory.
struct Hang {
    _child: Reaped,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Hang {
    fn start(dir: &Path) -> Hang {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reload/hang.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let hang = Hang {
            _child: Reaped(child),
            stdin,
            lines,
        };
        assert_eq!(hang.next(T).as_deref(), Some("ready"), "hang.py did not start");
        hang
    }

    fn next(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Holds every open from now on: returns once hang.py says the hold is in force, so that a
    /// write the test triggers next cannot slip through before it (a busy machine can take a
    /// while to run hang.py's command thread).
    fn hold(&mut self) {
        self.send("hold");
        assert_eq!(
            self.next(T).as_deref(),
            Some("holding"),
            "hang.py did not take the hold"
        );
    }

    /// Waits until an open is held: a write is stuck.
    fn wait_held(&self) {
        assert_eq!(
            self.next(Duration::from_secs(30)).as_deref(),
            Some("held"),
            "no write reached the hung directory"
        );
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        // Then `Reaped` kills and reaps it.
        self.send("release");
    }
}

/// The systemd notifications tokend sends, with when each came.
fn notifications(socket: std::os::unix::net::UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send((Instant::now(), msg)).is_err() {
                break;
            }
        }
    });
    rx
}

/// `tokend run` with a systemd watchdog of 1 s, and the notifications it sends.
fn run_watched(dir: &TestDir, cfg: &Path) -> (Tokend, mpsc::Receiver<(Instant, String)>) {
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let notified = notifications(notify);
    let env = [
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let daemon = Tokend::spawn(dir, &["--config", cfg.to_str().unwrap(), "run"], &env);
    (daemon, notified)
}

fn watchdog_pings(rx: &mpsc::Receiver<(Instant, String)>, during: Duration) -> usize {
    let end = Instant::now() + during;
    let mut pings = 0;
    while let Ok((_, msg)) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        pings += usize::from(msg.trim_end() == "WATCHDOG=1");
        if Instant::now() >= end {
            break;
        }
    }
    pings
}

#[test]
fn a_reload_and_a_stop_do_not_wait_on_a_hung_file_system() {
    if !running_as_root("a_reload_and_a_stop_do_not_wait_on_a_hung_file_system") {
        return;
    }
    let dir = TestDir::new("hung-fs");
    std::fs::create_dir_all(dir.join("hung")).unwrap();
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    // A client's config: its audience and the paths (under `dir`) of its outputs.
    let client = |audience: &str, outputs: &[&str]| {
        let outputs: Vec<String> = outputs
            .iter()
            .map(|p| format!("{{ path: {} }}", dir.join(p).display()))
            .collect();
        format!("audience: https://{audience}/\noutputs: [{}]", outputs.join(", "))
    };
    let other = client("other", &["hung/other.token"]);
    let stuck = client("old", &["hung/stuck.token"]);
    let cfg = config(&dir, &issuer, &[("stuck", &stuck), ("other", &other)]);
    let mut hang = Hang::start(&dir.join("hung"));
    let (mut daemon, notified) = run_watched(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let token_of = |name: &str| socket_status(&socket, &format!("/v1/tokens/{name}"));
    assert_eq!(token_of("stuck"), Some(200));

    // The file system hangs; a reload that adds an output to `stuck` restarts its task, which
    // writes the token it keeps to its outputs, and hangs there.
    hang.hold();
    let more = client("old", &["hung/stuck.token", "hung/stuck.copy"]);
    config(&dir, &issuer, &[("stuck", &more), ("other", &other)]);
    daemon.signal(Signal::SIGHUP);
    hang.wait_held();
    // Meanwhile the operator moves `stuck` to another audience.
    let moved = client("new", &["out/stuck.token"]);
    config(&dir, &issuer, &[("stuck", &moved), ("other", &other)]);
    let reloaded_at = Instant::now();
    daemon.signal(Signal::SIGHUP);
    // The old grant's token is withdrawn from the socket at once, not when the write ends.
    wait_for(Duration::from_secs(3), "the old grant's token withdrawn", || {
        (token_of("stuck") == Some(503)).then_some(())
    });
    // The main loop runs on: the watchdog is fed (every 0.5 s) while the old task is stuck.
    let pings = watchdog_pings(&notified, Duration::from_secs(4));
    assert!(
        pings >= 4,
        "{pings} watchdog pings in 4 s during a reload stuck on a write"
    );
    // The new grant's task starts once the wait for the old one is given up, and writes where
    // the new configuration says.
    let token = wait_for(Duration::from_secs(30), "the new grant's token", || {
        read(&dir.join("out/stuck.token"))
    });
    assert_eq!(claims(&token)["aud"], "https://new/");
    assert!(
        reloaded_at.elapsed() < Duration::from_secs(25),
        "{:?}",
        reloaded_at.elapsed()
    );
    daemon.wait_event(T, "the reload", |e| is(e, "reload", "applied"));
    wait_for(T, "the new grant's token on the socket", || {
        (token_of("stuck") == Some(200)).then_some(())
    });

    // Once the file system answers again, the stuck write of the old grant ends and its file is
    // removed: nothing of the old grant is left to read.
    hang.send("release");
    wait_for(T, "the old grant's files removed", || {
        (!dir.join("hung/stuck.token").exists() && !dir.join("hung/stuck.copy").exists()).then_some(())
    });
    // Nor does the old task, its write done, put the old grant's token back on the socket.
    std::thread::sleep(Duration::from_millis(500));
    let (status, served) = curl(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://localhost/v1/tokens/stuck",
    ]);
    assert_eq!(
        (status, claims(served.trim())["aud"].as_str()),
        (200, Some("https://new/"))
    );
    assert_eq!(temp_files(&dir.join("hung")), Vec::<String>::new());
    daemon.wait_event(T, "the old task left behind", |e| {
        is(e, "task", "left_behind") && is(e, "client", "stuck")
    });

    // A stop while a write hangs ends within its bound, with the stuck write named.
    hang.hold();
    let more = client("other", &["hung/other.token", "hung/other.copy"]);
    config(&dir, &issuer, &[("stuck", &moved), ("other", &more)]);
    daemon.signal(Signal::SIGHUP);
    hang.wait_held();
    let stopping = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait(Duration::from_secs(30));
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    assert!(status.success(), "{status:?}\n{}", daemon.output());
    let stopped = daemon.wait_event(T, "the incomplete stop", |e| is(e, "stop", "incomplete"));
    assert!(
        stopped["clients"]
            .as_str()
            .is_some_and(|c| c.contains("stuck") || c.contains("other")),
        "{stopped}"
    );
}

#[test]
fn sighup_adds_changes_and_removes_clients_and_survives_a_broken_config() {
    let dir = TestDir::new("reload");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let client =
        |aud: &str, file: &str| format!("audience: https://{aud}/\noutputs: [{{ path: {} }}]", out(&dir, file));
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("a", &client("a", "a.token")),
            ("b", &client("b", "b.token")),
            ("c", &client("c", "c.token")),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    // Ready means every token is in the store; the files follow it (store, outputs, state).
    wait_ready(&dir.join("tokend.sock"));
    let token_a = wait_for(T, "a's file", || read(&dir.join("out/a.token")));
    let token_b = wait_for(T, "b's file", || read(&dir.join("out/b.token")));
    wait_for(T, "c's state file", || dir.join("state/c.state").exists().then_some(()));

    config(
        &dir,
        &issuer,
        &[
            ("a", &client("a", "a.token")),
            ("b", &client("b2", "b.token")),
            ("d", &client("d", "d.token")),
        ],
    );
    daemon.signal(Signal::SIGHUP);
    let reload = daemon.wait_event(T, "the reload", |e| is(e, "reload", "applied"));
    for (field, count) in [("added", "1"), ("changed", "1"), ("removed", "1"), ("unchanged", "1")] {
        assert_eq!(reload[field], count, "{field}: {reload}");
    }
    let listed = socket_json(&dir.join("tokend.sock"), "/v1/tokens");
    let names: Vec<&str> = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "d"]);
    let new_b = wait_for(T, "b's new token", || {
        read(&dir.join("out/b.token")).filter(|t| *t != token_b)
    });
    assert_eq!(claims(&new_b)["aud"], "https://b2/");
    let token_d = wait_for(T, "d's token", || read(&dir.join("out/d.token")));
    assert_eq!(claims(&token_d)["aud"], "https://d/");
    assert_eq!(
        read(&dir.join("out/a.token")).unwrap(),
        token_a,
        "unchanged client keeps its token"
    );
    let for_a = issuer
        .requests()
        .iter()
        .filter(|r| r["audience"] == "https://a/")
        .count();
    assert_eq!(for_a, 1, "unchanged client made no new request");
    assert!(!dir.join("state/c.state").exists(), "removed client's state is deleted");

    // A broken config is rejected and the running one keeps working.
    dir.write("config.yaml", "clients:\n  a:\n    tokne_url: nope\n");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_event(T, "the rejected reload", |e| is(e, "reload", "rejected"));
    let log = daemon.output();
    assert!(
        log.contains("config.yaml:3:5: clients.a: unknown key `tokne_url`; did you mean `token_url`?"),
        "{log}"
    );
    let mut daemon = daemon;
    assert!(daemon.is_running());
    assert_eq!(read(&dir.join("out/a.token")).unwrap(), token_a);
    assert_eq!(issuer.request_count(), 5);
    assert!(daemon.stop().success());
}

/// A reload leaves an unchanged client's task alone: the same token, the same planned refresh,
/// no request. (That a timer fires on time is the refresh loop's unit tests' business.)
#[test]
fn a_reload_leaves_unchanged_clients_untouched() {
    let dir = TestDir::new("timers");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let a = format!("audience: https://a/\noutputs: [{{ path: {} }}]", out(&dir, "a.token"));
    let cfg = config(&dir, &issuer, &[("a", &a)]);
    let daemon = Tokend::run(&dir, &cfg);
    let refreshed = daemon.wait_event(T, "a's token", |e| is(e, "outcome", "refreshed"));
    let token = read(&dir.join("out/a.token")).unwrap();
    config(&dir, &issuer, &[("a", &a), ("b", "audience: https://b/")]);
    daemon.signal(Signal::SIGHUP);
    let reload = daemon.wait_event(T, "the reload", |e| is(e, "reload", "applied"));
    assert_eq!(
        (reload["added"].as_str(), reload["unchanged"].as_str()),
        (Some("1"), Some("1"))
    );
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let listed = socket_json(&socket, "/v1/tokens");
    let status_a = &listed["clients"][0];
    assert_eq!(status_a["name"], "a");
    assert_eq!(status_a["next_refresh"], refreshed["next_refresh"], "the same plan");
    assert_eq!(read(&dir.join("out/a.token")).unwrap(), token);
    let restarted = daemon
        .events()
        .into_iter()
        .any(|e| is(&e, "client", "a") && (is(&e, "outcome", "kept") || is(&e, "outcome", "reused")));
    assert!(!restarted, "a's task was restarted:\n{}", daemon.output());
    let for_a = issuer
        .requests()
        .iter()
        .filter(|r| r["audience"] == "https://a/")
        .count();
    assert_eq!(for_a, 1);
    assert!(daemon.stop().success());
}

/// A reload that removes a client while its files are being written waits for the write to
/// finish before deleting the client's state: nothing of the removed client appears afterwards.
#[test]
fn a_reload_waits_for_writes_in_progress() {
    const OUTPUTS: usize = 1500;
    let dir = TestDir::new("reload-mid-write");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let many: String = (0..OUTPUTS)
        .map(|i| format!("- {{ path: {} }}\n", out(&dir, &format!("many/{i}.token"))))
        .collect();
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("many", &format!("outputs:\n{many}")),
            ("stay", "audience: https://stay/"),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let count = || fs::read_dir(dir.join("out/many")).map(|d| d.count()).unwrap_or(0);
    wait_for(T, "the first outputs", || (count() > 0).then_some(()));
    config(&dir, &issuer, &[("stay", "audience: https://stay/")]);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_event(Duration::from_secs(60), "the reload", |e| is(e, "reload", "applied"));
    let after_reload = count();
    assert!(
        !dir.join("state/many.state").exists(),
        "the removed client's state is gone"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        count(),
        after_reload,
        "a removed client's write went on after the reload"
    );
    assert!(
        !dir.join("state/many.state").exists(),
        "the removed client's state came back"
    );
    assert!(daemon.stop().success());
}

/// A reload may be what fixes a failing client (a rotated secret, key or certificate), so a
/// failing group retries once right after it, whether the reload restarted it (here: a group-mate's
/// outputs changed) or left it alone, and then backs off again instead of looping. The
/// retry uses the secret file as it is now: rotation plus SIGHUP recovers at once.
#[test]
fn a_reload_retries_failing_clients_once_with_the_current_secret() {
    let dir = TestDir::new("reload-backoff");
    let issuer = Issuer::start(&dir, &[("app", "the-right-secret")], "1h");
    let x = format!(
        "outputs: [{{ path: {} }}]\nretry: {{ initial: 1s, max: 1h }}",
        out(&dir, "x.token")
    );
    let z = |file: &str| {
        format!(
            "outputs: [{{ path: {} }}]\nretry: {{ initial: 1s, max: 1h }}",
            out(&dir, file)
        )
    };
    let cfg = config(&dir, &issuer, &[("x", &x), ("z", &z("z.token"))]);
    let daemon = Tokend::run(&dir, &cfg);
    let rejected = |e: &Value| is(e, "outcome", "rejected");
    daemon.wait_event(T, "the rejection", rejected);
    assert_eq!(issuer.request_count(), 1);
    // Restarted by the reload: one retry (still the wrong secret), then the hour-long backoff.
    config(&dir, &issuer, &[("x", &x), ("z", &z("z2.token"))]);
    daemon.signal(Signal::SIGHUP);
    let reload = daemon.wait_event(T, "the reload", |e| is(e, "reload", "applied"));
    assert_eq!(reload["changed"], "1");
    daemon.wait_events(2, T, "the retry's rejection", rejected);
    let status = &socket_json(&dir.join("tokend.sock"), "/v1/tokens")["clients"][0];
    assert_eq!(status["failures"], 2, "{status}");
    assert!(
        status["next_refresh_in"].as_u64().unwrap() > 3000,
        "the retry is followed by the backoff, not another retry: {status}"
    );
    assert_eq!(issuer.request_count(), 2);
    // Untouched by the reload (nothing changed), but the secret file was rotated: one retry, and it works.
    dir.secret("secret", "the-right-secret");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_event(T, "the retry", |e| is(e, "retry", "now"));
    wait_for(T, "the token after the rotation", || read(&dir.join("out/x.token")));
    assert_eq!(issuer.request_count(), 3);
    assert!(daemon.stop().success());
}

/// A reload reads the configuration and its secrets off the main loop: a secret on a hung file
/// system does not stall the watchdog, signals or the socket, the reload is given up after the
/// bound a hung write gets, and a stop while it hangs ends in good time.
#[test]
fn a_reload_does_not_wait_on_a_secret_on_a_hung_file_system() {
    if !running_as_root("a_reload_does_not_wait_on_a_secret_on_a_hung_file_system") {
        return;
    }
    let dir = TestDir::new("hung-secret");
    fs::create_dir_all(dir.join("secrets")).unwrap();
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let secret = dir.secret("secrets/app", SECRET);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("secrets"), fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "c",
            &format!(
                "client_secret: {{ file: {} }}\noutputs: [{{ path: {} }}]",
                secret.display(),
                out(&dir, "c.token")
            ),
        )],
    );
    let mut hang = Hang::start(&dir.join("secrets"));
    let (mut daemon, notified) = run_watched(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_for(T, "the token", || read(&dir.join("out/c.token")));

    hang.hold();
    let reloaded_at = Instant::now();
    daemon.signal(Signal::SIGHUP);
    hang.wait_held();
    let pings = watchdog_pings(&notified, Duration::from_secs(4));
    assert!(
        pings >= 4,
        "{pings} watchdog pings in 4 s while a reload reads a hung secret"
    );
    assert_eq!(socket_status(&socket, "/v1/tokens/c"), Some(200));
    let given_up = daemon.wait_event(Duration::from_secs(20), "the reload given up", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be read within 10s (a hung file system?)"))
    });
    assert!(reloaded_at.elapsed() < Duration::from_secs(15), "{given_up}");
    daemon.wait_event(T, "the reload rejected", |e| is(e, "reload", "rejected"));

    // A stop while another reload hangs on the secret.
    daemon.signal(Signal::SIGHUP);
    hang.wait_held();
    let stopping = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", daemon.output());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the stop took {:?}",
        stopping.elapsed()
    );
}
