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
use crate::util::*;

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
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let notified = notifications(notify);
    let env = [
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let mut daemon = Tokend::spawn(&dir, &["--config", cfg.to_str().unwrap(), "run"], &env);
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
