//! Torn reads: readers of every kind a host has — Rust threads, shell `cat` loops, Python, curl
//! on the socket — read tokens while the daemon replaces them thousands of times, and none ever
//! sees an empty, partial, mixed or foreign token. `TOKEND_TORN_ROTATIONS` sets how many
//! rotations (default 2,000; RELIABILITY.md has the long run).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SECRET, config};
use crate::out;
use crate::util::*;
use std::collections::HashSet;

/// Clients rotating; readers watch the first eight.
const CLIENTS: usize = 16;

fn rotations() -> usize {
    std::env::var("TOKEND_TORN_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

struct Script {
    what: String,
    child: Child,
}

impl Script {
    fn start(what: String, program: &str, args: &[&str]) -> Script {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torn_reads");
        let child = Command::new(program)
            .arg(here.join(args[0]))
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        Script { what, child }
    }

    /// (reads, bad reads) once the script has seen the stop file.
    fn result(self) -> (String, u64, u64) {
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        let (reads, bad) = (numbers.next().unwrap(), numbers.next().unwrap());
        (self.what, reads, bad)
    }
}

#[test]
fn readers_of_every_kind_never_see_a_torn_token_across_thousands_of_rotations() {
    let _heavy = heavy();
    let rotations = rotations();
    let dir = TestDir::new("torn");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "6s");
    let file = |c: usize, ext: &str| dir.join(&format!("out/c{c}.{ext}"));
    let clients: Vec<(String, String)> = (0..CLIENTS)
        .map(|c| {
            (
                format!("c{c}"),
                format!(
                    "audience: https://c{c}/\nrefresh: {{ at: 5%, jitter: 0%, min_remaining: 0s }}\noutputs:\n\
                     - {{ path: {} }}\n- {{ path: {}, format: header }}\n- {{ path: {}, format: json }}\n\
                     - {{ path: {}, format: env, variable: TOKEN }}",
                    file(c, "token").display(),
                    file(c, "header").display(),
                    file(c, "json").display(),
                    file(c, "env").display()
                ),
            )
        })
        .collect();
    let named: Vec<(&str, &str)> = clients.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
    let cfg = config(&dir, &issuer, &named);
    let daemon = Tokend::run_at_info(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let first = read(&file(0, "token")).unwrap();
    let header = first.split('.').next().unwrap().to_owned();
    let stop = dir.join("stop");
    let stop_arg = stop.to_str().unwrap();
    let aud = |c: usize| format!("https://c{c}/");
    let path_arg = |c: usize, ext: &str| file(c, ext).display().to_string();
    let url = |c: usize| format!("http://localhost/v1/tokens/c{c}");

    // Rust readers, in this process.
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = [(0, "token"), (1, "header"), (2, "json")]
        .into_iter()
        .map(|(c, format)| {
            let (path, done, audience) = (file(c, format), done.clone(), aud(c));
            std::thread::spawn(move || {
                let (mut reads, mut bad) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    if let Err(e) = token_in(format, &text, Some(&audience)) {
                        bad += 1;
                        eprintln!("bad read of {}: {e}: {text:?}", path.display());
                    }
                    reads += 1;
                }
                (format!("Rust read() of c{c}.{format}"), reads, bad)
            })
        })
        .collect();
    // Shell, Python and curl readers, as their own processes.
    let sock = socket.to_str().unwrap();
    let scripts = vec![
        Script::start(
            "sh cat of c3.token".into(),
            "bash",
            &["reader.sh", "file", &path_arg(3, "token"), &header, stop_arg],
        ),
        Script::start(
            "sh cat of c4.header".into(),
            "bash",
            &["reader.sh", "header", &path_arg(4, "header"), &header, stop_arg],
        ),
        Script::start(
            "Python of c5.json".into(),
            "python3",
            &["reader.py", "json", &path_arg(5, "json"), &aud(5), stop_arg],
        ),
        Script::start(
            "Python of c6.env".into(),
            "python3",
            &["reader.py", "env", &path_arg(6, "env"), &aud(6), stop_arg],
        ),
        Script::start(
            "curl on the socket, c7".into(),
            "bash",
            &["reader.sh", "socket", sock, &header, stop_arg, &url(7)],
        ),
        Script::start(
            "curl on the socket, c0".into(),
            "bash",
            &["reader.sh", "socket", sock, &header, stop_arg, &url(0)],
        ),
    ];

    let start = Instant::now();
    let before = issuer.request_count();
    let deadline = start + Duration::from_secs(60 + rotations as u64 / 10);
    let mut rotated = 0;
    while rotated < rotations {
        assert!(Instant::now() < deadline, "only {rotated} rotations by the deadline");
        std::thread::sleep(Duration::from_secs(1));
        rotated = issuer.request_count() - before;
    }
    let elapsed = start.elapsed();
    fs::write(&stop, "").unwrap();
    done.store(true, Ordering::Relaxed);
    let mut results: Vec<(String, u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    results.extend(scripts.into_iter().map(Script::result));
    let (reads, bad): (u64, u64) = results
        .iter()
        .fold((0, 0), |(r, b), (_, reads, bad)| (r + reads, b + bad));
    for (what, reads, bad) in &results {
        eprintln!("{what}: {reads} reads, {bad} bad");
    }
    eprintln!(
        "{} readers, {reads} reads, {rotated} rotations (each rewriting 4 files) in {elapsed:.1?}: {bad} bad",
        results.len()
    );
    let log = daemon.output();
    let trouble: Vec<Value> = events(&log)
        .into_iter()
        .filter(|e| e["level"] == "ERROR" || e["level"] == "WARN")
        .collect();
    let first: Vec<&Value> = trouble.iter().take(5).collect();
    assert_eq!(
        bad, 0,
        "torn, partial or foreign reads; tokend's first warnings: {first:?}"
    );
    assert!(
        trouble.is_empty(),
        "{} warnings or errors while rotating, the first: {first:?}",
        trouble.len()
    );
    for (what, reads, _) in &results {
        assert!(*reads >= 50, "{what} barely ran: {reads} reads");
    }
    assert!(daemon.stop().success());
    assert_eq!(temp_files(&dir.join("out")), Vec::<String>::new());
}

/// Readers looping on open/read while the real binary replaces the files over a thousand times
/// never see an empty or partial token.
#[test]
fn readers_never_see_a_partial_token_across_a_thousand_rotations() {
    const ROTATIONS: usize = 1000;
    let _heavy = heavy();
    let dir = TestDir::new("atomic");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "r",
            &format!(
                "outputs:\n- {{ path: {} }}\n- {{ path: {}, format: header }}\n- {{ path: {}, format: json }}",
                out(&dir, "r.token"),
                out(&dir, "r.header"),
                out(&dir, "r.json")
            ),
        )],
    );
    let cfg = cfg.to_str().unwrap().to_owned();
    assert!(tokend(&["--config", &cfg, "once"]).status.success());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = ["r.token", "r.header", "r.json"]
        .into_iter()
        .map(|name| {
            let path = dir.join(&format!("out/{name}"));
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen = HashSet::new();
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = fs::read_to_string(&path).expect("the file always exists");
                    let format = name.rsplit('.').next().unwrap();
                    let token = token_in(format, &text, None).unwrap_or_else(|e| panic!("torn read: {e}: {text:?}"));
                    seen.insert(token);
                    reads += 1;
                }
                (reads, seen.len())
            })
        })
        .collect();
    let start = Instant::now();
    for _ in 0..ROTATIONS {
        let once = tokend(&["--config", &cfg, "--log-level", "warn", "once", "--force"]);
        assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    }
    let elapsed = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        let (reads, distinct) = reader.join().expect("a reader saw a torn file");
        assert!(
            reads > 100 && distinct > 10,
            "readers barely ran: {reads} reads, {distinct} tokens"
        );
    }
    assert_eq!(issuer.request_count(), ROTATIONS + 1);
    eprintln!("{ROTATIONS} rotations in {elapsed:?}");
}
