//! Consumers that react to a refresh: template outputs, hooks and the token proxy,
//! driven through the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::util::*;

/// The template examples of docs/outputs.md, as written there, rendered for a real token and read the
/// way each consumer reads them.
#[test]
fn every_readme_template_renders_what_its_consumer_reads() {
    let dir = TestDir::new("templates");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let page = include_str!("../../docs/outputs.md");
    let block = page
        .split("```yaml\n")
        .filter_map(|rest| rest.split_once("```").map(|(b, _)| b))
        .find(|b| b.contains("format: template"))
        .expect("the template example in docs/outputs.md");
    // Its outputs, with paths moved into the test directory and no owner or group.
    let outputs = block.split_once("    outputs:\n").expect("outputs").1;
    let moved: String = outputs
        .lines()
        .filter(|l| !l.trim_start().starts_with("owner:") && !l.trim_start().starts_with("group:"))
        .map(|l| {
            let l = l
                .replace("/home/app/", &format!("{}/", dir.join("home").display()))
                .replace("/etc/app/", &format!("{}/", dir.join("etc").display()))
                .replace("/root/.docker/", &format!("{}/", dir.join("docker").display()));
            format!("{l}\n")
        })
        .collect();
    let secret = dir.secret("secret", "s3cret");
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {}\nsocket: {{ enabled: false }}\nclients:\n  registry:\n    token_url: {}\n    client_id: app\n    client_secret: {{ file: {} }}\n    audience: https://registry.example.com/\n    outputs:\n{moved}",
            dir.join("state").display(),
            issuer.token_url(),
            secret.display()
        ),
    );
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(report.matches("(template inline,").count(), 4, "{report}");
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    let token = fs::read_to_string(dir.join("docker/config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .expect("docker config.json is JSON")["auths"]["registry.example.com"]["auth"]
        .as_str()
        .map(|a| base64::engine::general_purpose::STANDARD.decode(a).unwrap())
        .map(|a| String::from_utf8(a).unwrap())
        .and_then(|a| a.strip_prefix("oauth2accesstoken:").map(str::to_owned))
        .expect("docker's auth is base64 of oauth2accesstoken:TOKEN");
    let claims = claims(&token);
    assert_eq!(claims["aud"], "https://registry.example.com/");

    // .netrc, read by Python's netrc module, as tools that honour ~/.netrc read it.
    let netrc = dir.join("home/.netrc");
    let o = Command::new("python3")
        .args([
            "-c",
            "import netrc, sys; print(netrc.netrc(sys.argv[1]).authenticators('api.example.com')[2])",
        ])
        .arg(&netrc)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        token,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(mode(&netrc), 0o600);

    // .properties: key=value lines.
    let properties = dir.join("etc/oauth.properties");
    let text = fs::read_to_string(&properties).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_owned()
    };
    assert_eq!(value("oauth.token"), token);
    assert_eq!(value("oauth.token.type"), "Bearer");
    assert!(value("oauth.token.expires_at").ends_with('Z'));
    assert_eq!(mode(&properties), 0o640);

    // credentials.json: the tool's own shape, with the expiry the token itself has.
    let credentials: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("etc/credentials.json")).unwrap()).unwrap();
    assert_eq!(credentials["token"], token.as_str());
    assert_eq!(credentials["client"], "registry");
    let exp = claims["exp"].as_u64().unwrap();
    let expiry = credentials["expiry"].as_u64().unwrap();
    assert!(expiry == exp || expiry + 1 == exp, "expiry {expiry}, exp {exp}");
}

const T: Duration = Duration::from_secs(20);

/// A config for clients against `issuer`, each `(name, body)` with `body` indented under it.
fn hook_config(dir: &TestDir, issuer: &Issuer, clients: &[(&str, String)]) -> PathBuf {
    let secret = dir.secret("secret", "s3cret");
    let mut yaml = format!(
        "state_dir: {}\nsocket: {{ path: {} }}\ndefaults:\n  token_url: {}\n  client_id: app\n  client_secret: {{ file: {} }}\nclients:\n",
        dir.join("state").display(),
        dir.join("tokend.sock").display(),
        issuer.token_url(),
        secret.display()
    );
    for (name, body) in clients {
        yaml.push_str(&format!("  {name}:\n"));
        for line in body.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    dir.write("config.yaml", &yaml)
}

/// `/bin/sh -c SCRIPT` as a YAML flow list; the script gets `$1`… from `args`.
fn sh(script: &str, args: &[&Path]) -> String {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".into(), script.into(), "hook".into()];
    argv.extend(args.iter().map(|p| p.display().to_string()));
    serde_json::to_string(&argv).unwrap()
}

/// An exec hook sees the client, its outputs, the expiry and the token's version, in an
/// environment made from nothing: no variable of tokend's own (they may hold secrets), and the
/// token only where a hook asks for it by name. A saved token reused at start-up runs only the
/// hooks that ask for that.
#[test]
fn exec_hooks_get_what_they_need_and_the_token_only_when_asked() {
    let dir = TestDir::new("hook-env");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let plain = dir.join("plain.env");
    let asked = dir.join("asked.env");
    let reused = dir.join("reused.log");
    let record = sh("env > \"$1\"", &[&plain]);
    let record_asked = sh("env > \"$1\"", &[&asked]);
    let count = sh("echo \"$TOKEND_REASON\" >> \"$1\"", &[&reused]);
    let out = dir.join("out/a.token");
    let cfg = hook_config(
        &dir,
        &issuer,
        &[(
            "a",
            format!(
                "outputs: [{{ path: {} }}]\nhooks:\n  - {{ exec: {record} }}\n  - {{ exec: {record_asked}, token_variable: APP_TOKEN, environment: {{ APP_MODE: prod }} }}\n  - {{ exec: {count}, on_reuse: true }}",
                out.display()
            ),
        )],
    );
    let daemon = Tokend::spawn(
        &dir,
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("TOKEND_TEST_LEAK", "tokends-own-secret")],
    );
    daemon.wait_events(3, T, "three hook runs", |e| is(e, "message", "hook ran"));
    let token = read(&out).unwrap();
    let env = |path: &Path| -> Vec<(String, String)> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let get = |vars: &[(String, String)], k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let vars = env(&plain);
    assert_eq!(get(&vars, "TOKEND_CLIENT").as_deref(), Some("a"));
    assert_eq!(get(&vars, "TOKEND_OUTPUTS"), Some(out.display().to_string()));
    assert_eq!(get(&vars, "TOKEND_REASON").as_deref(), Some("new"));
    let exp = claims(&token)["exp"].as_u64().unwrap();
    let unix: u64 = get(&vars, "TOKEND_EXPIRES_AT_UNIX").unwrap().parse().unwrap();
    assert!(unix == exp || unix + 1 == exp, "{unix} vs exp {exp}");
    assert!(get(&vars, "TOKEND_EXPIRES_AT").unwrap().ends_with('Z'));
    let (head, _) = socket_get(&dir.join("tokend.sock"), "/v1/tokens/a");
    let version = head
        .lines()
        .find_map(|l| l.strip_prefix("token-version: "))
        .map(|v| v.trim().to_owned());
    assert_eq!(get(&vars, "TOKEND_TOKEN_VERSION"), version);
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        !names.contains(&"TOKEND_TEST_LEAK"),
        "tokend's own environment leaked: {names:?}"
    );
    let text = fs::read_to_string(&plain).unwrap();
    assert!(!text.contains(&token) && !text.contains("tokends-own-secret"), "{text}");
    // The hook that asked for it by name gets the token there, and its own variables.
    let vars = env(&asked);
    assert_eq!(get(&vars, "APP_TOKEN"), Some(token.clone()));
    assert_eq!(get(&vars, "APP_MODE").as_deref(), Some("prod"));
    assert_eq!(fs::read_to_string(&asked).unwrap().matches(&token).count(), 1);
    assert!(daemon.stop().success());

    // A restart reuses the saved token: only the `on_reuse` hook runs, and says why.
    fs::remove_file(&plain).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    daemon.wait_event(T, "the reuse", |e| is(e, "outcome", "reused"));
    daemon.wait_event(T, "the on_reuse hook", |e| is(e, "message", "hook ran"));
    assert_eq!(fs::read_to_string(&reused).unwrap(), "new\nreused\n");
    assert!(!plain.exists(), "a hook without on_reuse ran for a reused token");
    assert!(daemon.stop().success());
}

/// A hook that hangs is killed at its timeout with everything it started, is counted, and
/// holds up nothing: its client keeps refreshing, and another client's hook runs each time.
/// A hook still running when the next token comes is not started a second time.
#[test]
fn a_hanging_hook_is_killed_and_holds_up_nothing() {
    let dir = TestDir::new("hook-hang");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "2s");
    let pids = dir.join("pids");
    let overlaps = dir.join("overlaps");
    let runs = dir.join("runs");
    let lock = dir.join("running");
    // Records its own pid and its background child's, then waits for ever.
    let hang = sh("sleep 600 & echo $$ $! >> \"$1\"; wait", &[&pids]);
    // Takes longer than a token lives; notes any second copy running beside it.
    let slow = sh(
        "mkdir \"$3\" 2>/dev/null || echo overlap >> \"$1\"; sleep 3; echo run >> \"$2\"; rmdir \"$3\"",
        &[&overlaps, &runs, &lock],
    );
    let cfg = hook_config(
        &dir,
        &issuer,
        &[
            (
                "hang",
                format!("audience: https://hang/\nhooks: [{{ exec: {hang}, timeout: 1s, retries: 0 }}]"),
            ),
            ("slow", format!("audience: https://slow/\nhooks: [{{ exec: {slow} }}]")),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let killed = daemon.wait_event(T, "the hung hook killed", |e| {
        is(e, "client", "hang") && e["message"].as_str().is_some_and(|m| m.contains("past its timeout"))
    });
    assert_eq!(killed["timeout"], "1s");
    // Its process and the one it started are gone.
    let recorded = wait_for(T, "the hook's pids", || read(&pids));
    for pid in recorded.split_whitespace().take(2) {
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {pid} of the killed hook still runs");
    }
    // Meanwhile both clients keep refreshing (2 s tokens, every ~1.6 s).
    daemon.wait_events(4, T, "hang's refreshes", |e| {
        is(e, "client", "hang") && is(e, "outcome", "refreshed")
    });
    daemon.wait_events(4, T, "slow's refreshes", |e| {
        is(e, "client", "slow") && is(e, "outcome", "refreshed")
    });
    let slow_runs = daemon.wait_events(2, T, "slow's hook runs", |e| {
        is(e, "client", "slow") && is(e, "message", "hook ran")
    });
    assert!(slow_runs.len() >= 2);
    assert!(!overlaps.exists(), "the slow hook ran twice at once");
    let refreshes = daemon
        .events()
        .iter()
        .filter(|e| is(e, "client", "slow") && is(e, "outcome", "refreshed"))
        .count();
    let ran = read(&runs).map_or(0, |r| r.lines().count());
    assert!(
        ran < refreshes,
        "tokens that came during a run were not coalesced: {ran} runs, {refreshes} tokens"
    );
    let (_, metrics) = socket_get(&dir.join("tokend.sock"), "/metrics");
    assert!(
        metrics.contains("tokend_hook_runs_total{client=\"hang\",outcome=\"timeout\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokend_hook_runs_total{client=\"slow\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(daemon.stop().success());
}

/// A signal hook tells a running process to reload, after checking that the pid file names a
/// live process of its owner; a pid file that does not is reported, never signalled.
#[test]
fn a_signal_hook_reloads_a_process_and_a_stale_pid_file_is_refused() {
    let dir = TestDir::new("hook-signal");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let pid_file = dir.join("app.pid");
    let reloads = dir.join("reloads");
    // A consumer that reloads (here: notes it) on SIGHUP. Its SIGHUP starts at the default: a
    // shell that inherits it ignored (the suite run under nohup) cannot trap it.
    let _consumer = Reaped(
        Command::new("env")
            .args([
                "--default-signal=HUP",
                "/bin/sh",
                "-c",
                "trap 'echo reloaded >> \"$1\"' HUP; echo $$ > \"$2\"; while :; do sleep 0.1; done",
                "consumer",
            ])
            .arg(&reloads)
            .arg(&pid_file)
            .spawn()
            .unwrap(),
    );
    wait_for(T, "the consumer's pid file", || read(&pid_file));
    let stale = dir.write("stale.pid", "999999999\n");
    let cfg = hook_config(
        &dir,
        &issuer,
        &[
            (
                "app",
                format!("hooks: [{{ signal: SIGHUP, pid_file: {} }}]", pid_file.display()),
            ),
            (
                "stale",
                format!(
                    "audience: https://stale/\nhooks: [{{ signal: HUP, pid_file: {}, retries: 0 }}]",
                    stale.display()
                ),
            ),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    wait_for(T, "the consumer's reload", || read(&reloads));
    let refused = daemon.wait_event(T, "the stale pid file refused", |e| {
        is(e, "client", "stale") && is(e, "message", "hook failed; no attempts left")
    });
    assert!(
        refused["error"].as_str().unwrap().contains("the pid file is stale"),
        "{refused}"
    );
    assert!(daemon.stop().success());
}

/// `GET path` on the socket: the response head and body.
fn socket_get(socket: &Path, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

/// `tokend once` (cron, init containers) runs a new token's hooks before it exits, and says so
/// when one fails, with the command's own words.
#[test]
fn once_runs_the_hooks_before_it_exits() {
    let dir = TestDir::new("hook-once");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let ran = dir.join("ran");
    let ok = sh("sleep 0.5; echo \"$TOKEND_CLIENT\" > \"$1\"", &[&ran]);
    let fails = sh("echo 'cannot reach the app' >&2; exit 3", &[]);
    let cfg = hook_config(
        &dir,
        &issuer,
        &[(
            "a",
            format!("hooks: [{{ exec: {ok} }}, {{ exec: {fails}, retries: 1 }}]"),
        )],
    );
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    let err = String::from_utf8_lossy(&once.stderr);
    assert_eq!(read(&ran).as_deref(), Some("a\n"), "{err}");
    assert!(
        err.contains("/bin/sh exited with exit status: 3: cannot reach the app"),
        "{err}"
    );
    assert!(
        err.contains("hook failed; retrying") && err.contains("hook failed; no attempts left"),
        "{err}"
    );
}

/// An upstream for the proxy tests, as its own process: the streaming one (`echo.py`), or
/// another script here that prints its port first.
struct Echo {
    _child: Reaped,
    url: String,
}

impl Echo {
    fn start() -> Echo {
        Echo::script("echo.py", &[])
    }

    fn script(name: &str, args: &[&Path]) -> Echo {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consumers").join(name);
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        Echo {
            _child: Reaped(child),
            url: format!("http://127.0.0.1:{}/", port.trim()),
        }
    }
}

/// The proxy adds the current token (replacing what a caller sends) to requests for a local
/// resource server that verifies the JWT's signature, across refreshes, without a request
/// failing; bodies stream both ways without tokend holding them; hop-by-hop headers stay behind.
#[test]
fn the_proxy_adds_the_current_token_across_refreshes_and_streams_bodies() {
    let dir = TestDir::new("proxy");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "2s");
    let echo = Echo::start();
    let (api, stream) = (free_port(), free_port());
    let cfg = hook_config(
        &dir,
        &issuer,
        &[("app", "audience: https://api/\nrefresh: { min_remaining: 1s }".into())],
    );
    let mut yaml = fs::read_to_string(&cfg).unwrap();
    yaml.push_str(&format!(
        "proxies:\n  - {{ client: app, upstream: \"{}/api/\", listen: \"127.0.0.1:{api}\" }}\n  - {{ client: app, upstream: \"{}\", listen: \"127.0.0.1:{stream}\" }}\n",
        issuer.url, echo.url
    ));
    let cfg = dir.write("config.yaml", &yaml);
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    // 8 s of requests: four refreshes of a 2 s token, none refused.
    let started = std::time::Instant::now();
    let mut calls = 0;
    let mut expiries = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(8) {
        let (status, body) = curl(&[
            "-H",
            "Authorization: Bearer not-the-callers-to-give",
            &format!("http://127.0.0.1:{api}/whoami"),
        ]);
        assert_eq!(status, 200, "request {calls} failed: {body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["aud"], "https://api/");
        expiries.insert(seen["expires_in"].as_u64().unwrap() + started.elapsed().as_secs());
        calls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let refreshed = daemon.events().iter().filter(|e| is(e, "outcome", "refreshed")).count();
    assert!(refreshed >= 4 && calls > 40, "{refreshed} tokens, {calls} calls");
    // A path cannot climb out of the base path.
    let (status, _) = curl(&["--path-as-is", &format!("http://127.0.0.1:{api}/../oauth/token")]);
    assert_eq!(status, 400);

    // 64 MiB up and 64 MiB down: streamed, so tokend's memory does not grow by them.
    let big = dir.join("big");
    fs::write(&big, vec![7u8; 64 << 20]).unwrap();
    let (status, body) = curl(&[
        "-H",
        "Connection: X-Hop",
        "-H",
        "X-Hop: private",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://127.0.0.1:{stream}/upload"),
    ]);
    assert_eq!(status, 200, "{body}");
    let mut echoed = body.split_whitespace();
    assert_eq!(echoed.next(), Some("67108864"));
    let sha = Command::new("sha256sum").arg(&big).output().unwrap();
    assert_eq!(
        echoed.next(),
        String::from_utf8_lossy(&sha.stdout).split_whitespace().next()
    );
    assert_eq!(echoed.next(), Some("Bearer"), "{body}");
    let token = echoed.next().unwrap();
    assert_eq!(claims(token)["aud"], "https://api/");
    assert_eq!(
        echoed.next(),
        Some("hop="),
        "a header named by Connection was forwarded: {body}"
    );
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"])
        .arg(format!("http://127.0.0.1:{stream}/big?mb=64"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 67108864");
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        peak_kib < 48 * 1024,
        "tokend peaked at {peak_kib} KiB: a body was held in memory"
    );
    let (_, metrics) = socket_get(&dir.join("tokend.sock"), "/metrics");
    assert!(
        metrics.contains("tokend_proxy_requests_total{client=\"app\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokend_proxy_requests_total{client=\"app\",status=\"400\"}"),
        "{metrics}"
    );
    assert!(daemon.stop().success());
}

/// A request path that an upstream decoding `%2F`, `%5C` or `%2E` (once or more) before it
/// resolves `..` would take out of the base path gets 400 and never reaches it, in every
/// spelling; the upstream itself shows that each would have worked. Ordinary paths, escapes
/// included, go through; `Proxy-*` headers stay behind both ways.
#[test]
fn a_proxied_path_never_leaves_the_base_path_in_any_encoding() {
    let dir = TestDir::new("proxy-paths");
    let served = dir.join("served");
    fs::create_dir_all(served.join("api")).unwrap();
    fs::create_dir_all(served.join("admin")).unwrap();
    fs::write(served.join("api/hello.txt"), "hello\n").unwrap();
    fs::write(served.join("api/a b.txt"), "spaced\n").unwrap();
    fs::write(served.join("admin/secret.txt"), "ADMIN-ONLY\n").unwrap();
    let files = Echo::script("files.py", &[&served]);
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let port = free_port();
    let cfg = hook_config(&dir, &issuer, &[("app", String::new())]);
    let mut yaml = fs::read_to_string(&cfg).unwrap();
    yaml.push_str(&format!(
        "proxies:\n  - {{ client: app, upstream: \"{}api/\", listen: \"127.0.0.1:{port}\" }}\n",
        files.url
    ));
    let cfg = dir.write("config.yaml", &yaml);
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    let proxy = format!("http://127.0.0.1:{port}");
    assert_eq!(curl(&[&format!("{proxy}/hello.txt")]), (200, "hello\n".into()));
    assert_eq!(curl(&[&format!("{proxy}/a%20b.txt")]), (200, "spaced\n".into()));
    for attack in [
        "/../admin/secret.txt",
        "/%2e%2e/admin/secret.txt",
        "/..%2fadmin/secret.txt",
        "/..%2Fadmin/secret.txt",
        "/%2e%2e%2fadmin%2fsecret.txt",
        "/%2E%2e%2Fadmin%2fsecret.txt",
        "/..%5cadmin%5csecret.txt",
        "/..%5Cadmin/secret.txt",
        "/..%252fadmin/secret.txt",
        "/%252e%252e%252fadmin%252fsecret.txt",
        "/%25252e%25252e/admin/secret.txt",
        "/..;/admin/secret.txt",
    ] {
        // The upstream, asked directly under the base path, hands the file out.
        let direct = format!("{}api{attack}", files.url);
        let (status, body) = curl(&["--path-as-is", &direct]);
        assert_eq!((status, body.as_str()), (200, "ADMIN-ONLY\n"), "{attack} directly");
        let (status, body) = curl(&["--path-as-is", &format!("{proxy}{attack}")]);
        assert_eq!(status, 400, "{attack} through the proxy: {body}");
        assert!(!body.contains("ADMIN-ONLY"), "{attack}: {body}");
    }
    // Proxy-* headers: the caller's stay behind, and so do the upstream's.
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-H", "Proxy-Foo: pf", "-H", "X-Kept: k"])
        .arg(format!("{proxy}/headers"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{answer}");
    assert!(
        !head.contains("proxy-note"),
        "the upstream's Proxy-* header came back: {head}"
    );
    let sent: Vec<&str> = body.lines().collect();
    assert!(sent.contains(&"x-kept") && sent.contains(&"authorization"), "{body}");
    assert!(
        !sent.iter().any(|h| h.starts_with("proxy-")),
        "a Proxy-* header went on: {body}"
    );
    assert!(daemon.stop().success());
}

/// An upstream that refuses the token (revoked at the IdP) gets one new token and the request
/// again; the next refusal within the rate limit does not ask again.
#[test]
fn an_upstream_401_brings_one_new_token_and_one_retry() {
    let dir = TestDir::new("proxy-401");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let port = free_port();
    let cfg = hook_config(&dir, &issuer, &[("app", String::new())]);
    let mut yaml = fs::read_to_string(&cfg).unwrap();
    yaml.push_str(&format!(
        "proxies:\n  - {{ client: app, upstream: \"{}/api/\", listen: \"127.0.0.1:{port}\" }}\n",
        issuer.url
    ));
    let cfg = dir.write("config.yaml", &yaml);
    // A client only a proxy uses needs no outputs, and check does not warn that it has none.
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success() && !said.contains("no outputs"), "{said}");
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    let whoami = format!("http://127.0.0.1:{port}/whoami");
    assert_eq!(curl(&[&whoami]).0, 200);
    assert_eq!(issuer.request_count(), 1);
    // Old enough to be replaced on request (a fresh token refused is not replaced).
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _) = curl(&["-X", "POST", &format!("{}/_dev/revoke", issuer.url)]);
    assert_eq!(status, 204);
    let (status, body) = curl(&[&whoami]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.request_count(), 2, "one new token");
    daemon.wait_event(T, "the forced refresh", |e| {
        is(e, "message", "an upstream refused the current token; refreshing now")
    });
    // Revoked again at once: the 401 goes back to the caller; no new token within the limit.
    curl(&["-X", "POST", &format!("{}/_dev/revoke", issuer.url)]);
    assert_eq!(curl(&[&whoami]).0, 401);
    assert_eq!(issuer.request_count(), 2);
    assert!(daemon.stop().success());
}

/// A Unix socket proxy serves whom the client's readers name (and root, and tokend's user);
/// anyone else who can connect gets 403 and no request is made for them.
#[test]
fn a_socket_proxy_refuses_callers_who_may_not_read_the_client() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var_os("TOKEND_REQUIRE_ROOT_TESTS").is_none(), "needs root");
        eprintln!("SKIPPED a_socket_proxy_refuses_callers_who_may_not_read_the_client: needs root");
        return;
    }
    let dir = TestDir::new("proxy-socket");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let socket = dir.join("run/app-proxy.sock");
    let cfg = hook_config(&dir, &issuer, &[("app", "readers: { users: [65534] }".into())]);
    let mut yaml = fs::read_to_string(&cfg).unwrap();
    yaml.push_str(&format!(
        "proxies:\n  - {{ client: app, upstream: \"{}/api/\", socket: {}, mode: \"0666\" }}\n",
        issuer.url,
        socket.display()
    ));
    let cfg = dir.write("config.yaml", &yaml);
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    // The directories on the way must be passable for the other users.
    let mut d = socket.parent().unwrap().to_path_buf();
    while d != Path::new("/") {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&d).unwrap().permissions().mode();
        fs::set_permissions(&d, fs::Permissions::from_mode(mode | 0o011)).unwrap();
        d = d.parent().unwrap().to_path_buf();
    }
    let as_user = |uid: &str| {
        let o = Command::new("setpriv")
            .args([
                "--reuid",
                uid,
                "--regid",
                uid,
                "--clear-groups",
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&socket)
            .arg("http://localhost/whoami")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let requests = issuer.request_count();
    assert_eq!(as_user("65534"), "200", "a reader");
    assert_eq!(as_user("65533"), "403", "not a reader");
    assert_eq!(
        issuer.request_count(),
        requests,
        "the proxy asks for no token per request"
    );
    let refused = daemon.wait_event(T, "the refusal", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused a proxy request"))
    });
    assert_eq!(refused["uid"], 65533);
    assert!(daemon.stop().success());
    assert!(!socket.exists(), "the proxy's socket is removed at exit");
}

/// Run as root, a hook can run as another user, who gets that user's primary group only (none
/// of tokend's supplementary groups), in the directory it names.
#[test]
fn a_hook_runs_as_its_user_in_its_directory() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var_os("TOKEND_REQUIRE_ROOT_TESTS").is_none(), "needs root");
        eprintln!("SKIPPED a_hook_runs_as_its_user_in_its_directory: needs root");
        return;
    }
    let dir = TestDir::new("hook-user");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let work = dir.join("work");
    fs::create_dir(&work).unwrap();
    nix::unistd::chown(&work, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let record = sh("echo \"$(id -u) $(id -G) $(pwd)\" > ./who", &[]);
    let cfg = hook_config(
        &dir,
        &issuer,
        &[(
            "a",
            format!(
                "hooks: [{{ exec: {record}, user: 65534, working_directory: {} }}]",
                work.display()
            ),
        )],
    );
    let daemon = Tokend::run(&dir, &cfg);
    daemon.wait_event(T, "the hook", |e| is(e, "message", "hook ran"));
    let who = fs::read_to_string(work.join("who")).unwrap();
    let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(65534))
        .unwrap()
        .map(|u| u.gid.as_raw())
        .unwrap();
    assert_eq!(who.trim(), format!("65534 {gid} {}", work.display()));
    assert!(daemon.stop().success());
}

/// A hook command or a template file that someone besides root and tokend's user could change
/// (its mode, its owner, a directory on the way, a symlink another user planted in `/tmp`) is
/// refused by `check` and `run` with exit 78, naming the file, the reason and the key; a
/// sticky directory such as `/tmp` is fine for what root owns. A command made writable after
/// start-up is not run.
#[test]
fn hooks_and_templates_that_others_could_change_are_refused() {
    use nix::unistd::{Uid, chown};
    use std::os::unix::fs::PermissionsExt;
    if !Uid::effective().is_root() {
        assert!(std::env::var_os("TOKEND_REQUIRE_ROOT_TESTS").is_none(), "needs root");
        eprintln!("SKIPPED hooks_and_templates_that_others_could_change_are_refused: needs root");
        return;
    }
    let dir = TestDir::new("code-trust");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "3s");
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    let nobody = Some(Uid::from_raw(65534));
    let bin = dir.join("bin");
    let shared = dir.join("shared");
    let script = bin.join("hook.sh");
    let template = bin.join("netrc.j2");
    let ran = dir.join("ran");
    let reset = || {
        for d in [&bin, &shared] {
            let _ = fs::remove_dir_all(d);
            fs::create_dir(d).unwrap();
        }
        mode(&bin, 0o755);
        mode(&shared, 0o1777);
        fs::write(&script, format!("#!/bin/sh\necho ran >> {}\n", ran.display())).unwrap();
        mode(&script, 0o755);
        fs::write(&template, "machine api password {{ access_token }}\n").unwrap();
        mode(&template, 0o644);
    };
    let config = |hook: &Path| {
        hook_config(
            &dir,
            &issuer,
            &[(
                "app",
                format!(
                    "refresh: {{ min_remaining: 1s }}\noutputs: [{{ path: {}, format: template, template_file: {} }}]\nhooks: [{{ exec: [{}] }}]",
                    dir.join("out/netrc").display(),
                    template.display(),
                    hook.display()
                ),
            )],
        )
    };
    let check = |cfg: &Path| tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    reset();
    let o = check(&config(&script));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let link = shared.join("hook");
    let cases: [(&str, &dyn Fn(), &Path, String); 7] = [
        (
            "writable",
            &|| mode(&script, 0o777),
            &script,
            format!(
                "hook command {} is writable by every user (mode 0777)",
                script.display()
            ),
        ),
        (
            "group-writable",
            &|| mode(&script, 0o775),
            &script,
            format!("hook command {} is writable by its group (mode 0775)", script.display()),
        ),
        (
            "another's",
            &|| chown(&script, nobody, None).unwrap(),
            &script,
            format!("hook command {} belongs to uid 65534", script.display()),
        ),
        (
            "in another's directory",
            &|| chown(&bin, nobody, None).unwrap(),
            &script,
            format!(
                "hook command {} is in {}, which belongs to uid 65534",
                script.display(),
                bin.display()
            ),
        ),
        (
            "in an open directory",
            &|| mode(&bin, 0o777),
            &script,
            format!(
                "hook command {} is in {}, which every user may write (mode 0777)",
                script.display(),
                bin.display()
            ),
        ),
        (
            "through another's symlink in /tmp",
            &|| {
                std::os::unix::fs::symlink(&script, &link).unwrap();
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &link,
                    nobody,
                    None,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .unwrap();
            },
            &link,
            format!(
                "hook command {} is reached through {}, which belongs to uid 65534",
                link.display(),
                link.display()
            ),
        ),
        (
            "template",
            &|| mode(&template, 0o666),
            &script,
            format!(
                "template file {} is writable by every user (mode 0666)",
                template.display()
            ),
        ),
    ];
    for (what, spoil, hook, expected) in cases {
        reset();
        spoil();
        let cfg = config(hook);
        let o = check(&cfg);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(78), "{what}: {stderr}");
        assert!(stderr.contains(&expected), "{what}: expected {expected:?} in\n{stderr}");
        let key = if what == "template" {
            "clients.app.outputs[0].template_file"
        } else {
            "clients.app.hooks[0].exec"
        };
        assert!(stderr.contains(key), "{what}: {stderr}");
        let mut daemon = Tokend::run(&dir, &cfg);
        assert_eq!(daemon.wait(T).code(), Some(78), "{what}: run started");
        assert!(daemon.output().contains(&expected), "{what}: {}", daemon.output());
    }
    // Root's own file in a sticky directory (as /tmp) is fine, through a symlink of root's too.
    reset();
    std::os::unix::fs::symlink(&script, &link).unwrap();
    let o = check(&config(&link));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Made writable after start-up: the next run is refused, and says why.
    reset();
    let daemon = Tokend::run(&dir, &config(&script));
    daemon.wait_event(T, "the first hook run", |e| is(e, "message", "hook ran"));
    mode(&script, 0o777);
    let refused = daemon.wait_event(T, "a refused run", |e| {
        e["message"].as_str().is_some_and(|m| m.starts_with("hook failed"))
    });
    let error = refused["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.starts_with("not run: ") && error.contains("writable by every user"),
        "{refused}"
    );
    let runs = fs::read_to_string(&ran).unwrap().lines().count();
    assert!(daemon.stop().success());
    assert_eq!(fs::read_to_string(&ran).unwrap().lines().count(), runs);
}
