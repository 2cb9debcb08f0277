//! Helpers for the integration tests: a unique directory per test, the development issuer run as
//! its own process (the token server), the real `tokend` binary, and polling with deadlines.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tokend");
/// The test issuer (see `Issuer`).
pub const TEST_ISSUER: &str = env!("CARGO_BIN_EXE_tokend-test-issuer");

/// A fresh directory for one test, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tokend-{name}-"))
            .tempdir()
            .expect("temp dir");
        TestDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes a file, creating parent directories; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }

    /// Writes a secret file with mode 0600; the secret may appear in nothing tokend prints.
    pub fn secret(&self, name: &str, secret: &str) -> PathBuf {
        forbid(secret);
        let path = self.write(name, &format!("{secret}\n"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

/// Every secret the tests wrote (see `TestDir::secret`), in every encoding a request carries it:
/// none may appear in anything tokend prints, in any test.
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// What begins every JWT (`{"alg":`, base64url): a token or a client assertion in the output.
const JWT_MARK: &str = "eyJhbGciOi";

/// Adds `secret` (as is, form-encoded, and in a Basic header with the clients' ids) to what
/// `assert_no_leak` looks for. Short strings are left out: they would match by chance.
pub fn forbid(secret: &str) {
    use base64::Engine;
    if secret.len() < 8 {
        return;
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut all = SECRETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for form in [secret.to_owned(), encoded.clone(), b64.encode(format!("app:{encoded}"))] {
        if !all.contains(&form) {
            all.push(form);
        }
    }
}

/// Panics if `text` (what tokend printed: `what`) holds a secret the tests wrote, or a JWT.
pub fn assert_no_leak(what: &str, text: &str) {
    let secrets = SECRETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for needle in secrets.iter().map(String::as_str).chain([JWT_MARK]) {
        if let Some(at) = text.find(needle) {
            let from = text[..at].char_indices().rev().nth(200).map_or(0, |(i, _)| i);
            let context: String = text[from..].chars().take(400).collect();
            panic!("{what} leaked {needle:?}: …{context}…");
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed and reaped when dropped, so that a test that fails half-way
/// leaves none behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a file if it exists and is not empty.
pub fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().filter(|s| !s.is_empty())
}

/// Runs curl with `args`; returns (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// The test issuer (`tokend-test-issuer`: the development issuer of `tokend dev --issuer-only`,
/// which can be told to misbehave) as a separate process.
pub struct Issuer {
    child: Child,
    pub url: String,
}

impl Issuer {
    /// Starts an issuer accepting `clients` (id, secret) and issuing tokens that live `lifetime`.
    pub fn start(dir: &TestDir, clients: &[(&str, &str)], lifetime: &str) -> Issuer {
        Self::start_with(dir, clients, lifetime, &[])
    }

    /// `start` with extra arguments for the issuer (`--port`, `--rfc8414-only`).
    pub fn start_with(dir: &TestDir, clients: &[(&str, &str)], lifetime: &str, extra: &[&str]) -> Issuer {
        Self::start_under(&[], dir, clients, lifetime, extra)
    }

    /// `start_with`, run by the command `under` (`faketime -f +1h`, say), if not empty.
    pub fn start_under(
        under: &[&str],
        dir: &TestDir,
        clients: &[(&str, &str)],
        lifetime: &str,
        extra: &[&str],
    ) -> Issuer {
        let map: serde_json::Map<String, Value> = clients
            .iter()
            .map(|(id, secret)| (id.to_string(), Value::String(secret.to_string())))
            .collect();
        let file = dir.write("issuer-clients.json", &Value::Object(map).to_string());
        let mut command = match under {
            [] => Command::new(TEST_ISSUER),
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(TEST_ISSUER).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                // `faketime` forks the issuer and waits for it: killing `faketime` alone left
                // the issuer running after every test that wrapped it. Its own process group
                // lets `drop` end both.
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                c
            }
        };
        let mut child = command
            .args(["--lifetime", lifetime, "--clients-file"])
            .arg(&file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start issuer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "unexpected issuer banner: {line:?}"
        );
        Issuer { child, url }
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.url)
    }

    /// Every token request the issuer has seen.
    pub fn requests(&self) -> Vec<Value> {
        let (status, body) = curl(&[&format!("{}/_dev/requests", self.url)]);
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        v["requests"].as_array().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests().len()
    }

    /// Queues misbehaviours for the next token requests.
    pub fn faults(&self, faults: Value) {
        assert_eq!(push_faults(&self.url, &faults), 204);
    }

    /// Drops every queued misbehaviour, `until_cleared` ones included.
    pub fn clear_faults(&self) {
        let (status, _) = curl(&["-X", "DELETE", &format!("{}/_dev/faults", self.url)]);
        assert_eq!(status, 204);
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // The group when the issuer runs under a wrapper (see `start_under`); ESRCH otherwise.
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST {issuer}/_dev/faults` with `faults`; the status.
pub fn push_faults(issuer: &str, faults: &Value) -> u16 {
    curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data",
        &faults.to_string(),
        &format!("{issuer}/_dev/faults"),
    ])
    .0
}

/// The real daemon, with stdout and stderr captured to a file.
pub struct Tokend {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Tokend {
    pub fn run(dir: &TestDir, config: &Path) -> Tokend {
        Self::spawn(dir, &["--config", config.to_str().unwrap(), "run"], &[])
    }

    /// `run` at info level, for tests that load tokend with many requests: a trace of each
    /// would be most of the work (what it prints is still scanned by `assert_no_leak`).
    pub fn run_at_info(dir: &TestDir, config: &Path) -> Tokend {
        Self::spawn(
            dir,
            &["--config", config.to_str().unwrap(), "--log-level", "info", "run"],
            &[],
        )
    }

    /// Runs `tokend ARGS`, logging JSON lines (unless ARGS choose a format) for `events`.
    pub fn spawn(dir: &TestDir, args: &[&str], env: &[(&str, &str)]) -> Tokend {
        Self::spawn_under(dir, &[], args, env)
    }

    /// Runs `tokend ARGS` as the user and group `uid` (with no supplementary groups), through
    /// setpriv, which execs tokend in its place.
    pub fn spawn_as(dir: &TestDir, uid: u32, args: &[&str]) -> Tokend {
        let id = uid.to_string();
        Self::spawn_under(
            dir,
            &["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"],
            args,
            &[],
        )
    }

    /// Runs `WRAPPER... tokend ARGS`: a wrapper that ends by exec'ing tokend (setpriv, `sh -c
    /// 'umask 0; exec "$@"' sh`), or one that runs it as its child (strace).
    pub fn spawn_under(dir: &TestDir, wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Tokend {
        let n = fs::read_dir(dir.path()).unwrap().count();
        let log = dir.join(&format!("tokend-{n}.log"));
        let out = fs::File::create(&log).unwrap();
        let json: &[&str] = if args.contains(&"--log-format") {
            &[]
        } else {
            &["--log-format", "json"]
        };
        // At trace level, tokend's and every library's, unless the test chose a level: what it
        // prints is scanned for secrets and tokens when it stops (`assert_no_leak`).
        let trace: &[&str] = if args.contains(&"--log-level") {
            &[]
        } else {
            &["--log-level", "trace"]
        };
        let (program, before) = match wrapper.split_first() {
            Some((program, rest)) => (*program, [rest, &[BIN]].concat()),
            None => (BIN, Vec::new()),
        };
        let mut command = Command::new(program);
        if trace.is_empty() {
            command.env_remove("RUST_LOG");
        } else {
            command.env("RUST_LOG", "trace");
        }
        let child = command
            .args(before)
            .args(json)
            .args(trace)
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Tokend {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines so far, as JSON objects (lines that are not JSON, such as the dev banner,
    /// are left out).
    pub fn events(&self) -> Vec<Value> {
        events(&self.output())
    }

    /// Waits until `times` log events satisfy `matches`; returns them.
    pub fn wait_events(
        &self,
        times: usize,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self.events().into_iter().filter(|e| matches(e)).collect();
            if found.len() >= times {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {times}× {what} in the log:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for one log event that satisfies `matches`.
    pub fn wait_event(&self, timeout: Duration, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_events(1, timeout, what, matches).remove(0)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait(Duration::from_secs(10))
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_for(timeout, "tokend to exit", || child.try_wait().unwrap());
        self.child = None;
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Tokend {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            assert_no_leak(&format!("tokend's output ({})", self.log.display()), &self.output());
        }
    }
}

/// JSON log lines in `text`, as objects.
pub fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// Whether a log event has `field` equal to the string `value`.
pub fn is(event: &Value, field: &str, value: &str) -> bool {
    event[field].as_str() == Some(value)
}

/// The HTTP status of `GET path` on the socket, or `None` if nothing answers there.
pub fn socket_status(socket: &Path, path: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl must be installed");
    String::from_utf8_lossy(&out.stdout).parse().ok().filter(|s| *s != 0)
}

/// Waits until the daemon behind `socket` is ready: `/readyz` answers 200 (every client has a
/// valid token).
pub fn wait_ready(socket: &Path) {
    wait_for(Duration::from_secs(15), "/readyz to answer 200", || {
        (socket_status(socket, "/readyz") == Some(200)).then_some(())
    });
}

/// `GET path` on the socket as JSON.
pub fn socket_json(socket: &Path, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl must be installed");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `tokend ARGS` to completion.
/// Runs `tokend ARGS` to its end. What it prints is scanned for secrets and tokens, except
/// for `tokend get`, whose output is the token.
pub fn tokend(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run tokend");
    if !args.contains(&"get") {
        assert_no_leak(&format!("tokend {args:?}"), &String::from_utf8_lossy(&out.stdout));
        assert_no_leak(&format!("tokend {args:?}"), &String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// The claims of a JWT, without verifying it.
pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.trim().split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Held by the tests that load both cores for a minute or more (rotations under readers, the
/// soak): they run one at a time, so that none starves another into a false failure.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The token in `text`, as a file of `format` (`raw`, `header`, `json`) holds it, if it is
/// one complete token from the development issuer (for `audience`, if given).
pub fn token_in(format: &str, text: &str, audience: Option<&str>) -> Result<String, String> {
    let token = match format {
        "header" => text
            .strip_prefix("Authorization: Bearer ")
            .and_then(|t| t.strip_suffix('\n'))
            .ok_or("not a complete header line")?
            .to_owned(),
        "json" => serde_json::from_str::<Value>(text).map_err(|e| e.to_string())?["access_token"]
            .as_str()
            .ok_or("no access_token")?
            .to_owned(),
        _ => text.to_owned(),
    };
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts[2].len() != 86 {
        return Err("not three parts with a whole signature".into());
    }
    match std::panic::catch_unwind(|| claims(&token)) {
        Ok(c) if audience.is_none_or(|a| c["aud"] == a) => Ok(token),
        Ok(c) => Err(format!("another client's token: {}", c["aud"])),
        Err(_) => Err("claims do not decode".into()),
    }
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// The first line `child` prints on stdout, as JSON (a test server announcing its addresses),
/// within `timeout`; `None` if it printed none in time or the line is not JSON.
pub fn first_json_line(child: &mut Child, timeout: Duration) -> Option<Value> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(timeout).ok()?;
    serde_json::from_str(&line).ok()
}

/// The names of tokend's temp files (`.NAME.tokend-XXXXXXXX.tmp`) in `dir`, sorted; none if
/// `dir` does not exist.
pub fn temp_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tokend-"))
        .collect();
    names.sort();
    names
}

/// Wall-clock milliseconds since the epoch (the issuer's request log uses the same).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a test that needs special tools got from `ready`: `Some` to run; on `Err(why)`, `None`
/// after a loud `SKIPPED` line, or a failure when the environment variable `require` is set
/// (as `.ci/run` sets it, where the tools are installed).
pub fn unless_skipped<T>(test: &str, require: &str, ready: Result<T, String>) -> Option<T> {
    match ready {
        Ok(v) => Some(v),
        Err(why) => {
            assert!(
                std::env::var_os(require).is_none(),
                "{test} cannot run: {why}; {require} is set, so this is an error"
            );
            eprintln!("SKIPPED {test}: {why} (set {require}=1 to make this an error)");
            None
        }
    }
}

/// Runs a packaging test script (`packaging/checks.sh`: one line per check, then `N passed, M
/// failed`); prints its summary, and fails with its whole log unless every check passed.
pub fn run_checks(what: &str, script: &Path, args: &[&std::ffi::OsStr]) {
    let started = Instant::now();
    let out = Command::new(script).args(args).output().expect("run the test script");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or("no summary");
    eprintln!("{what}: {summary} ({:.0?} in all)", started.elapsed());
    assert!(out.status.success(), "{log}");
    assert!(summary.contains(" passed, 0 failed"), "{log}");
}

/// A free loopback port (a small window remains for another process to take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A text answer of the socket API (`/metrics`, say), which must be a 200.
pub fn socket_text(socket: &Path, path: &str) -> String {
    let (status, body) = curl(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        &format!("http://localhost{path}"),
    ]);
    assert_eq!(status, 200, "{path}: {body}");
    body
}
