//! Storage faults, with the real binary and real file systems: an output
//! directory that is full (a 64 KiB tmpfs), read-only (the tmpfs remounted `ro`), deleted while
//! tokend runs, or not writable by tokend's user; a full state directory. Each time the other
//! outputs and clients keep working, the log says what failed where and why, `/metrics` shows
//! the failing file, and once the fault is gone the write is retried and succeeds with the same
//! token, without a new token request. Mounting needs root: gated like the other root tests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{SECRET, T, config, hand_to_nobody, out, running_as_root};
use crate::util::*;

/// Output retries back off 1 s, 2 s, 4 s, 8 s, …: after a fault clears, the next retry comes
/// within 8 s in these tests (the faults last a few seconds); this leaves room for a slow box.
const RETRIED_WITHIN: Duration = Duration::from_secs(40);

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        mount(&["-t", "tmpfs", "-o", options, "tmpfs"], path);
        Tmpfs { path: path.to_owned() }
    }

    fn remount(&self, options: &str) {
        mount(&["-o", &format!("remount,{options}")], &self.path);
    }

    /// Fills the file system up with one file; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.path).status();
    }
}

fn mount(args: &[&str], path: &Path) {
    let out = Command::new("mount").args(args).arg(path).output().expect("mount");
    assert!(
        out.status.success(),
        "mount {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the metric line that starts with `series` (name and labels), if any.
fn metric(socket: &Path, series: &str) -> Option<String> {
    let (status, body) = curl(&["--unix-socket", socket.to_str().unwrap(), "http://localhost/metrics"]);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(str::to_owned)
}

fn output_failing(socket: &Path, client: &str, path: &Path) -> Option<String> {
    metric(
        socket,
        &format!(
            "tokend_output_write_failing{{client=\"{client}\",path=\"{}\"}}",
            path.display()
        ),
    )
}

/// Token requests the issuer saw for `audience`.
fn requests_for(issuer: &Issuer, audience: &str) -> usize {
    issuer
        .requests()
        .iter()
        .filter(|r| r["audience"].as_str() == Some(audience))
        .count()
}

/// Two clients with one-hour tokens: `c` writes to `faulty` and to `out/c.token`, `other` to
/// `out/other.token`.
fn two_clients(dir: &TestDir, issuer: &Issuer, faulty: &Path) -> PathBuf {
    config(
        dir,
        issuer,
        &[
            (
                "c",
                &format!(
                    "audience: https://c.example/\noutputs:\n- {{ path: {} }}\n- {{ path: {} }}",
                    faulty.display(),
                    out(dir, "c.token")
                ),
            ),
            (
                "other",
                &format!(
                    "audience: https://other.example/\noutputs: [{{ path: {} }}]",
                    out(dir, "other.token")
                ),
            ),
        ],
    )
}

/// With `daemon` running and `faulty` failing: the other output and client are written and
/// served, the log names the file and `expect`s the reason, and `/metrics` shows it failing.
/// Then `clear` removes the fault: the same token is written there, without a new request.
fn contained_reported_and_retried(
    dir: &TestDir,
    issuer: &Issuer,
    daemon: Tokend,
    faulty: &Path,
    expect: &str,
    clear: impl FnOnce(),
) {
    let socket = dir.join("tokend.sock");
    let token = wait_for(T, "c's healthy output", || read(&dir.join("out/c.token")));
    wait_for(T, "the other client's output", || read(&dir.join("out/other.token")));
    let failed = daemon.wait_event(T, "the failed write", |e| {
        is(e, "path", faulty.to_str().unwrap()) && is(e, "level", "ERROR")
    });
    assert_eq!(failed["client"], "c", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot write output; the other outputs are unaffected; retrying"),
        "{failed}"
    );
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains(expect), "expected {expect:?} in {error:?}");
    assert!(
        error.contains(&faulty.parent().unwrap().display().to_string()),
        "{error}"
    );
    // Served on the socket all the while: the failing file holds nothing back.
    wait_ready(&socket);
    assert_eq!(output_failing(&socket, "c", faulty).as_deref(), Some("1"));
    assert_eq!(
        output_failing(&socket, "c", &dir.join("out/c.token")).as_deref(),
        Some("0")
    );
    let errors: u64 = metric(&socket, "tokend_output_write_errors_total{client=\"c\"}")
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors >= 1);
    assert_eq!(
        metric(&socket, "tokend_output_write_errors_total{client=\"other\"}"),
        None
    );
    assert_eq!(temp_files(faulty.parent().unwrap()), Vec::<String>::new());
    assert!(!faulty.exists());
    // A retry fails too while the fault lasts; then the fault is cleared.
    wait_for(T, "a failed retry", || {
        metric(&socket, "tokend_output_write_errors_total{client=\"c\"}")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n >= 2)
    });
    clear();
    let retried = wait_for(RETRIED_WITHIN, "the retried output", || read(faulty));
    assert_eq!(retried, token, "the retry writes the same token");
    daemon.wait_event(T, "the retry's report", |e| {
        is(e, "client", "c") && is(e, "message", "failed outputs written")
    });
    assert_eq!(output_failing(&socket, "c", faulty).as_deref(), Some("0"));
    assert_eq!(
        requests_for(issuer, "https://c.example/"),
        1,
        "no new token was requested"
    );
    assert!(read(&dir.join("out/other.token")).is_some());
    assert!(daemon.stop().success());
}

#[test]
fn a_full_output_directory_fails_only_that_output_and_is_retried_once_space_is_freed() {
    if !running_as_root("a_full_output_directory_fails_only_that_output_and_is_retried_once_space_is_freed") {
        return;
    }
    let dir = TestDir::new("output-full");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let tmpfs = Tmpfs::mount(&dir.join("out/full"), "size=64k,mode=0750");
    let filler = tmpfs.fill();
    let faulty = dir.join("out/full/c.token");
    let cfg = two_clients(&dir, &issuer, &faulty);
    let daemon = Tokend::run(&dir, &cfg);
    contained_reported_and_retried(&dir, &issuer, daemon, &faulty, "No space left on device", || {
        fs::remove_file(&filler).unwrap();
    });
}

#[test]
fn a_read_only_output_directory_fails_only_that_output_and_is_retried_once_writable() {
    if !running_as_root("a_read_only_output_directory_fails_only_that_output_and_is_retried_once_writable") {
        return;
    }
    let dir = TestDir::new("output-ro");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let tmpfs = Tmpfs::mount(&dir.join("out/ro"), "size=64k,mode=0750");
    tmpfs.remount("ro");
    let faulty = dir.join("out/ro/c.token");
    let cfg = two_clients(&dir, &issuer, &faulty);
    let daemon = Tokend::run(&dir, &cfg);
    contained_reported_and_retried(&dir, &issuer, daemon, &faulty, "Read-only file system", || {
        tmpfs.remount("rw");
    });
}

/// tokend as an unprivileged user (uid 65534) cannot write into a directory that is root's with
/// mode 0500; once the directory is handed to it, the retry succeeds.
#[test]
fn an_output_directory_tokend_may_not_write_fails_only_that_output_and_is_retried() {
    if !running_as_root("an_output_directory_tokend_may_not_write_fails_only_that_output_and_is_retried") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("output-denied");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let faulty = dir.join("out/locked/c.token");
    let cfg = two_clients(&dir, &issuer, &faulty);
    fs::create_dir_all(dir.join("out")).unwrap();
    hand_to_nobody(&dir);
    let locked = dir.join("out/locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
    let daemon = Tokend::spawn_as(&dir, 65534, &["--config", cfg.to_str().unwrap(), "run"]);
    contained_reported_and_retried(&dir, &issuer, daemon, &faulty, "Permission denied", || {
        std::os::unix::fs::chown(&locked, Some(65534), Some(65534)).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o750)).unwrap();
    });
}

/// An output directory (and the state directory) removed while tokend runs is made again, with
/// tokend's modes, at the next write; nothing else is disturbed.
#[test]
fn output_and_state_directories_deleted_while_running_are_made_again_at_the_next_refresh() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("dir-deleted");
    // Refreshed every 2 s (at half their lifetime).
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "4s");
    let faulty = dir.join("out/sub/c.token");
    let cfg = two_clients(&dir, &issuer, &faulty);
    let daemon = Tokend::run(&dir, &cfg);
    let first = wait_for(T, "the first token", || read(&faulty));
    // Once the log says the files hold it, none of their writes is in flight.
    daemon.wait_event(T, "the first token written", |e| {
        is(e, "client", "c") && e["outcome"].is_string()
    });
    fs::remove_dir_all(dir.join("out/sub")).unwrap();
    fs::remove_dir_all(dir.join("state")).unwrap();
    let again = wait_for(T, "the output, written again", || read(&faulty));
    assert_ne!(again, first, "written again at the next refresh");
    assert_eq!(mode(&dir.join("out/sub")), 0o750);
    wait_for(T, "the state file, written again", || read(&dir.join("state/c.state")));
    assert_eq!(fs::metadata(dir.join("state")).unwrap().mode() & 0o7777, 0o700);
    assert!(read(&dir.join("out/other.token")).is_some());
    let errors: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| {
            is(e, "level", "ERROR")
                || (is(e, "level", "WARN")
                    && !e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("the token lives too briefly")))
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(daemon.stop().success());
}

/// A full state directory: the existing state file stays whole, the outputs are published all
/// the same, the log and `/metrics` say the save failed, and it is retried and succeeds once
/// there is room, with the same token and no new request; the next start reuses that token.
#[test]
fn a_full_state_directory_keeps_the_old_state_file_whole_and_publishing_on() {
    if !running_as_root("a_full_state_directory_keeps_the_old_state_file_whole_and_publishing_on") {
        return;
    }
    let dir = TestDir::new("state-full");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let state = Tmpfs::mount(&dir.join("state"), "size=64k,mode=0700");
    let cfg = two_clients(&dir, &issuer, &dir.join("out/c.second"));
    assert!(tokend(&["--config", cfg.to_str().unwrap(), "once"]).status.success());
    let state_file = dir.join("state/c.state");
    let before = fs::read(&state_file).unwrap();
    let filler = state.fill();
    // Another audience for `c`: another grant, so the daemon requests (and saves) a new token.
    let cfg = config(
        &dir,
        &issuer,
        &[
            (
                "c",
                &format!(
                    "audience: https://c2.example/\noutputs: [{{ path: {} }}]",
                    out(&dir, "c.token")
                ),
            ),
            (
                "other",
                &format!(
                    "audience: https://other.example/\noutputs: [{{ path: {} }}]",
                    out(&dir, "other.token")
                ),
            ),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let token = read(&dir.join("out/c.token")).unwrap();
    assert_eq!(claims(&token)["aud"], "https://c2.example/", "published all the same");
    let warned = daemon.wait_event(T, "the failed save", |e| {
        is(e, "client", "c") && is(e, "level", "WARN") && e["dir"].is_string()
    });
    let message = warned["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot save the token for reuse after a restart; the outputs are unaffected; retrying"),
        "{warned}"
    );
    assert!(
        warned["error"].as_str().unwrap().contains("No space left on device"),
        "{warned}"
    );
    assert_eq!(
        metric(&socket, "tokend_state_write_failing{client=\"c\"}").as_deref(),
        Some("1")
    );
    assert!(
        metric(&socket, "tokend_state_write_errors_total{client=\"c\"}")
            .is_some_and(|v| v.parse::<u64>().unwrap() >= 1)
    );
    // The old state file is whole (replaced by rename only, never written in place) and no
    // temp file is left.
    assert_eq!(fs::read(&state_file).unwrap(), before);
    assert_eq!(temp_files(&dir.join("state")), Vec::<String>::new());

    // A retry fails too while the directory is full; then space is freed.
    wait_for(T, "a failed retry of the save", || {
        metric(&socket, "tokend_state_write_errors_total{client=\"c\"}")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n >= 2)
    });
    fs::remove_file(&filler).unwrap();
    let saved = wait_for(RETRIED_WITHIN, "the retried save", || {
        let v: Value = serde_json::from_slice(&fs::read(&state_file).ok()?).ok()?;
        (v["access_token"].as_str() == Some(&token)).then_some(v)
    });
    assert_eq!(saved["access_token"].as_str(), Some(token.as_str()));
    daemon.wait_event(T, "the retry's report", |e| {
        is(e, "client", "c") && is(e, "message", "state saved after all")
    });
    assert_eq!(
        metric(&socket, "tokend_state_write_failing{client=\"c\"}").as_deref(),
        Some("0")
    );
    assert_eq!(
        requests_for(&issuer, "https://c2.example/"),
        1,
        "no new token was requested"
    );
    assert!(daemon.stop().success());
    let restarted = Tokend::run(&dir, &cfg);
    restarted.wait_event(T, "the saved token reused", |e| {
        is(e, "client", "c") && is(e, "outcome", "reused")
    });
    assert_eq!(read(&dir.join("out/c.token")).unwrap(), token);
    assert!(restarted.stop().success());
}
