//! Under a service manager: systemd notifications through the daemon's life, a notification
//! socket nobody reads, the journal's priorities, SIGINT.

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::util::*;
use crate::{SECRET, T, config, out};

#[test]
fn sigint_stops_cleanly_too() {
    let dir = TestDir::new("sigint");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("i", "audience: https://i/")]);
    let mut daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    daemon.signal(Signal::SIGINT);
    assert!(daemon.wait(T).success());
    assert!(
        !dir.join("tokend.sock").exists(),
        "the socket is removed on a clean stop"
    );
}

/// A supervisor that reads READY and then stops reading the notification socket cannot stall
/// tokend: the watchdog pings (every 50 ms here) fill the socket's queue (ten datagrams) within a
/// second, and every later notification is dropped rather than waited on. The daemon still
/// refreshes and SIGTERM still stops it at once (a blocking send used to hang the main loop,
/// signals and all, until the reader went away).
#[test]
fn a_notification_socket_nobody_reads_does_not_stall_the_daemon() {
    use std::os::unix::net::UnixDatagram;
    let dir = TestDir::new("notify-unread");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "3s");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "n",
            &format!(
                "refresh: {{ min_remaining: 1s }}\noutputs: [{{ path: {} }}]",
                out(&dir, "n.token")
            ),
        )],
    );
    let socket_path = dir.join("notify.sock");
    let _socket = UnixDatagram::bind(&socket_path).unwrap();
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "100000"),
    ];
    let daemon = Tokend::spawn(&dir, &["--config", cfg.to_str().unwrap(), "run"], &env);
    wait_for(T, "the first token", || read(&dir.join("out/n.token")));
    // Far more notifications than the queue holds (a ping every 50 ms, a status line per
    // refresh) while tokend goes on refreshing: three more 3-second tokens.
    wait_for(T, "three refreshes with nobody reading", || {
        (issuer.request_count() >= 4).then_some(())
    });
    let stopping = std::time::Instant::now();
    assert!(daemon.stop().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        stopping.elapsed()
    );
}

/// systemd `Type=notify`: READY once every client has had its first attempt, RELOADING and READY
/// around a reload, STATUS= kept current as tokens change, STOPPING on SIGTERM, and watchdog
/// pings.
#[test]
fn systemd_notifications_follow_the_daemon_lifecycle() {
    use std::os::unix::net::UnixDatagram;
    let dir = TestDir::new("notify");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[("n", &format!("outputs: [{{ path: {} }}]", out(&dir, "n.token")))],
    );
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let daemon = Tokend::spawn(&dir, &["--config", cfg.to_str().unwrap(), "run"], &env);
    let recv = |what: &str| -> String {
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {what} notification: {e}"));
        String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
    };
    // The next notification that is not a watchdog ping or a mere status update.
    let next = |what: &str| -> String {
        loop {
            let msg = recv(what);
            if msg != "WATCHDOG=1" && !msg.starts_with("STATUS=") {
                return msg;
            }
        }
    };
    let ready = next("READY");
    assert!(
        ready.starts_with("READY=1\nSTATUS=1/1 valid · next refresh n in ") && ready.ends_with(" · 0 failing"),
        "{ready:?}"
    );
    assert!(
        dir.join("out/n.token").exists(),
        "READY comes after the first token is written"
    );
    config(
        &dir,
        &issuer,
        &[
            ("n", &format!("outputs: [{{ path: {} }}]", out(&dir, "n.token"))),
            ("m", "audience: https://m/"),
        ],
    );
    daemon.signal(Signal::SIGHUP);
    let reloading = next("RELOADING");
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert!(next("READY after reload").starts_with("READY=1"));
    // The added client's token arrives after READY: STATUS= says so without being asked.
    let deadline = Instant::now() + T;
    loop {
        let msg = recv("STATUS with both tokens");
        if msg.starts_with("STATUS=2/2 valid · next refresh ") {
            break;
        }
        assert!(Instant::now() < deadline, "no STATUS for both clients; last {msg:?}");
    }
    // Watchdog pings at half of WATCHDOG_USEC.
    assert_eq!(recv("WATCHDOG"), "WATCHDOG=1");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(next("STOPPING"), "STOPPING=1");
}

/// When stderr is the journal (systemd sets JOURNAL_STREAM to its device and inode), every line
/// starts with its priority and carries no timestamp of its own; a JOURNAL_STREAM inherited by a
/// process whose stderr goes elsewhere changes nothing.
#[test]
fn under_the_journal_every_line_has_its_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("journal");
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {}\nsocket: {{ enabled: false }}\nclients:\n  j:\n    token_url: http://127.0.0.1:9/t\n    client_id: a\n    client_secret: {{ file: {} }}\n",
            dir.join("state").display(),
            dir.secret("secret", "s").display()
        ),
    );
    let run = |stream_of: Option<&std::path::Path>| {
        let stderr = dir.join("stderr.log");
        let file = fs::File::create(&stderr).unwrap();
        let stream = stream_of.unwrap_or(&stderr);
        let meta = fs::metadata(stream).unwrap();
        let status = std::process::Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "once"])
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stderr(file)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1));
        fs::read_to_string(&stderr).unwrap()
    };
    let journal = run(None);
    let lines: Vec<&str> = journal.lines().collect();
    assert!(lines.len() >= 2, "{journal}");
    assert!(lines.iter().all(|l| l.starts_with('<')), "{journal}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("token request failed")),
        "{journal}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>") && l.contains("no valid token")),
        "{journal}"
    );
    let year = format!(
        "{}-",
        humantime::format_rfc3339(SystemTime::now())
            .to_string()
            .split('-')
            .next()
            .unwrap()
    );
    assert!(!journal.contains(&year), "a line carries its own timestamp: {journal}");

    let elsewhere = run(Some(&cfg));
    assert!(elsewhere.lines().all(|l| !l.starts_with('<')), "{elsewhere}");
    assert!(elsewhere.contains(&year), "{elsewhere}");
}
