//! Integration tests: the real `tokend` binary against the development issuer running as its own
//! process on loopback, with real files and real signals. Each test uses its own directory
//! (`util::TestDir`), its own issuer (`util::Issuer`) and its own daemon (`util::Daemon`).
//!
//! Where each behaviour is tested, and where a new test goes:
//!
//! | behaviour | where |
//! |---|---|
//! | outputs: formats, modes, owners, symlinks, umask, atomic replacement | this file (`tokens_appear_…`, `modes_do_not_…`, `a_symlink_planted_…`) |
//! | refresh and retry: lifetimes, backoff, `Retry-After`, shared requests | this file; `idp_faults/` for each IdP fault switched on and off |
//! | restart: saved tokens reused, state files of the previous release | this file (`a_restart_…`, `state_files_saved_…`, `a_saved_token_…`) |
//! | reload: SIGHUP, unchanged clients, writes in progress, hung file systems | this file (`sighup_…`, `a_reload_…`); `reload/` |
//! | secrets and credentials: files, env, rotation, never logged | this file (`secrets_come_from_…`, `no_secret_or_token_…`) |
//! | time: clocks that step, skewed IdPs | `time/`; `a_clock_that_went_back_…` here |
//! | the socket API: readers, caps, hostile callers | `socket_api/` |
//! | consumers: templates, hooks, the token proxy | `consumers/` |
//! | torn reads and crashes mid-write | `torn_reads/`, `crash/` |
//! | storage faults: full, read-only, deleted directories | `storage_faults/` |
//! | configuration errors: every class refused the same way by check, once, run | `config_catalogue/` |
//! | systemd notifications, the journal, stop signals | this file (`systemd_…`, `under_the_journal_…`, `sigint_…`) |
//! | the command line and the first hour of a newcomer | `first_hour/`; `generated/` (man pages, completions) |
//! | fleet mode with Redis, Sentinel, TLS, ACLs | `fleet/` |
//! | the shape of the source tree (no cycles, layers) | `architecture/` |
//!
//! Environment suites, which start something heavy and skip (saying why) where it cannot run:
//! `booted/` (the Debian package under a booted systemd), `kubernetes/` (the image and the
//! manifests with podman), `interop_suite/` (a certified OAuth server), `soak/` (load over
//! minutes). A new test goes into the module of the behaviour it shows; one that needs a new
//! helper puts it in `util/` if another module could use it.

mod architecture;
mod booted;
mod config_catalogue;
mod consumers;
mod crash;
mod first_hour;
mod fleet;
mod generated;
mod idp_faults;
mod interop_suite;
mod kubernetes;
mod reload;
mod soak;
mod socket_api;
mod storage_faults;
mod time;
mod torn_reads;
mod util;

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use util::*;

const SECRET: &str = "s3cret+with/odd=chars&more";
const T: Duration = Duration::from_secs(15);

/// A one-client config: `extra` is indented under the client, `outputs` is a YAML flow list.
fn config(dir: &TestDir, issuer: &Issuer, clients: &[(&str, &str)]) -> std::path::PathBuf {
    let secret = dir.secret("secret", SECRET);
    let mut yaml = format!(
        "state_dir: {state}\nsocket: {{ path: {socket} }}\ndefaults:\n  token_url: {url}\n  client_id: app\n  client_secret: {{ file: {secret} }}\n  retry: {{ initial: 200ms, max: 3s }}\nclients:\n",
        state = dir.join("state").display(),
        socket = dir.join("tokend.sock").display(),
        url = issuer.token_url(),
        secret = secret.display()
    );
    for (name, body) in clients {
        yaml.push_str(&format!("  {name}:\n"));
        for line in body.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    dir.write("config.yaml", &yaml)
}

fn out(dir: &TestDir, name: &str) -> String {
    dir.join(&format!("out/{name}")).display().to_string()
}

#[test]
fn tokens_appear_in_every_format_with_the_configured_modes() {
    let dir = TestDir::new("formats");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "billing",
            &format!(
                "audience: https://billing.example/\nscope: read:invoices write:invoices\noutputs:\n\
                 - {{ path: {raw} }}\n\
                 - {{ path: {raw_nl}, newline: true }}\n\
                 - {{ path: {header}, format: header }}\n\
                 - {{ path: {json}, format: json, mode: \"0640\", group: 0 }}\n\
                 - {{ path: {env}, format: env, variable: BILLING_TOKEN, mode: \"0400\" }}",
                raw = out(&dir, "billing.token"),
                raw_nl = out(&dir, "nl/billing.token"),
                header = out(&dir, "billing.header"),
                json = out(&dir, "billing.json"),
                env = out(&dir, "billing.env"),
            ),
        )],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let raw_path = dir.join("out/billing.token");
    let token = wait_for(T, "the raw token file", || read(&raw_path));
    // Every output is written before the daemon reports itself ready.
    wait_ready(&dir.join("tokend.sock"));

    let claims = claims(&token);
    assert_eq!(claims["aud"], "https://billing.example/");
    assert_eq!(claims["scope"], "read:invoices write:invoices");
    assert!(!token.ends_with('\n'), "raw has no newline by default");
    assert_eq!(read(&dir.join("out/nl/billing.token")).unwrap(), format!("{token}\n"));
    assert_eq!(
        read(&dir.join("out/billing.header")).unwrap(),
        format!("Authorization: Bearer {token}\n")
    );
    let json: Value = serde_json::from_str(&read(&dir.join("out/billing.json")).unwrap()).unwrap();
    assert_eq!(json["access_token"], token);
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["scope"], "read:invoices write:invoices");
    // tokend counts the lifetime from the whole second before it sent the request, so its
    // expiry is the server's `exp` or one second earlier, never later.
    let (written, exp) = (
        json["expires_at_unix"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(
        written <= exp && written + 1 >= exp,
        "expires_at {written} vs exp {exp}"
    );
    assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        read(&dir.join("out/billing.env")).unwrap(),
        format!("BILLING_TOKEN={token}\n")
    );

    assert_eq!(mode(&raw_path), 0o600, "default mode");
    assert_eq!(mode(&dir.join("out/billing.json")), 0o640);
    assert_eq!(mode(&dir.join("out/billing.env")), 0o400);
    assert_eq!(mode(&dir.join("out/nl")), 0o750, "created parent directory");
    assert_eq!(mode(&dir.join("state")), 0o700);
    assert_eq!(mode(&dir.join("state/billing.state")), 0o600);

    // The consumers the README documents: curl -H @file, and `. file` in a shell.
    let (status, body) = curl(&[
        "-H",
        &format!("@{}", dir.join("out/billing.header").display()),
        &format!("{}/api/whoami", issuer.url),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["aud"],
        "https://billing.example/"
    );
    let sourced = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". {} && printf %s \"$BILLING_TOKEN\"",
            dir.join("out/billing.env").display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(sourced.stdout).unwrap(), token);

    // The wire: one request, client_secret_post, our User-Agent, the audience and scope.
    let requests = issuer.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["auth"], "client_secret_post");
    assert_eq!(requests[0]["client_id"], "app");
    assert_eq!(
        requests[0]["user_agent"],
        format!("tokend/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(requests[0]["scope"], "read:invoices write:invoices");

    let refreshed = daemon.wait_event(T, "the refresh", |e| is(e, "outcome", "refreshed"));
    assert_eq!(refreshed["client"], "billing");
    assert!(humantime::parse_rfc3339(refreshed["next_refresh"].as_str().unwrap()).is_ok());
    assert!(daemon.stop().success());
}

#[test]
fn a_short_lived_token_is_refreshed_before_it_expires() {
    let dir = TestDir::new("refresh");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "4s");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "short",
            &format!(
                "refresh: {{ min_remaining: 1s }}\noutputs: [{{ path: {} }}]",
                out(&dir, "short.token")
            ),
        )],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let path = dir.join("out/short.token");
    let mut token = wait_for(T, "the first token", || read(&path));
    for round in 0..2 {
        let exp_ms = claims(&token)["exp"].as_u64().unwrap() * 1000;
        let next = wait_for(T, "a refreshed token", || read(&path).filter(|t| *t != token));
        let replaced_at = now_ms();
        assert!(
            replaced_at < exp_ms,
            "round {round}: token replaced at {replaced_at}, after it expired at {exp_ms}"
        );
        token = next;
    }
    assert!(issuer.request_count() >= 3);
    assert!(daemon.stop().success());
}

#[test]
fn a_restart_reuses_the_saved_token_without_asking_the_idp() {
    let dir = TestDir::new("restart");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "keep",
            &format!(
                "audience: https://a/\noutputs: [{{ path: {} }}]",
                out(&dir, "keep.token")
            ),
        )],
    );
    let first = Tokend::run(&dir, &cfg);
    let path = dir.join("out/keep.token");
    let token = wait_for(T, "the token", || read(&path));
    assert!(first.stop().success());
    assert_eq!(issuer.request_count(), 1);

    // The reader's file is gone, as after a reboot with outputs on tmpfs: it is rewritten.
    fs::remove_file(&path).unwrap();
    let second = Tokend::run(&dir, &cfg);
    second.wait_event(T, "the reuse", |e| {
        is(e, "outcome", "reused") && is(e, "client", "keep")
    });
    assert_eq!(wait_for(T, "the rewritten file", || read(&path)), token);
    assert_eq!(issuer.request_count(), 1, "the IdP saw no new request");
    assert!(second.stop().success());

    // `once` reuses it too, and leaves the file that holds it as it is: not replaced (a new
    // inode) nor synced again.
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&path).unwrap().ino()
    };
    let before = inode();
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert_eq!(issuer.request_count(), 1);
    assert_eq!(inode(), before, "the file was rewritten");

    // A changed grant (another audience) must not reuse the old token.
    let changed = fs::read_to_string(&cfg).unwrap().replace("https://a/", "https://b/");
    fs::write(&cfg, changed).unwrap();
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(once.status.success());
    assert_eq!(issuer.request_count(), 2);
    assert_eq!(claims(&read(&path).unwrap())["aud"], "https://b/");
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

#[test]
fn retry_after_in_seconds_and_as_an_http_date_is_honoured() {
    let dir = TestDir::new("429");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    // A 503 whose Retry-After is a date about 4 s ahead (the date has whole seconds).
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
    issuer.faults(json!([
        { "status": 429, "error": "too_many_requests", "retry_after": "3" },
        { "status": 503, "retry_after": date },
    ]));
    let cfg = config(
        &dir,
        &issuer,
        &[("limited", &format!("outputs: [{{ path: {} }}]", out(&dir, "l.token")))],
    );
    let daemon = Tokend::run(&dir, &cfg);
    wait_for(T, "a token after the 429 and the 503", || {
        read(&dir.join("out/l.token"))
    });
    let r = issuer.requests();
    let at: Vec<u64> = r.iter().map(|r| r["at_ms"].as_u64().unwrap()).collect();
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0]["status"].as_u64(), r[1]["status"].as_u64()),
        (Some(429), Some(503))
    );
    assert!(
        at[1] - at[0] >= 2900,
        "retried after {} ms despite Retry-After: 3",
        at[1] - at[0]
    );
    let date_ms = httpdate::parse_http_date(&date)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        at[2] + 100 >= date_ms,
        "retried at {} ms, before the Retry-After date {date_ms}",
        at[2]
    );
    let limited = daemon.wait_events(2, T, "two rate-limited answers", |e| is(e, "outcome", "rate_limited"));
    let errors: Vec<&str> = limited.iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert!(errors[0].contains("HTTP 429 `too_many_requests`"), "{errors:?}");
    assert!(errors[1].contains("HTTP 503"), "{errors:?}");
    assert!(daemon.stop().success());
}

#[test]
fn failures_back_off_and_the_old_token_is_kept_until_a_refresh_succeeds() {
    let dir = TestDir::new("backoff");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "20s");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "flaky",
            &format!(
                "refresh: {{ at: 10%, jitter: 0%, min_remaining: 1s }}\ntimeouts: {{ request: 1s }}\noutputs: [{{ path: {} }}]",
                out(&dir, "f.token")
            ),
        )],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let path = dir.join("out/f.token");
    let first = wait_for(T, "the first token", || read(&path));
    issuer.faults(json!([
        { "status": 500 },
        { "status": 502, "body": "<html>bad gateway</html>", "content_type": "text/html" },
        { "status": 200, "body": "{ this is not json" },
        { "delay_ms": 2500 },
    ]));
    // Watch the file through the failures: it must hold the first token until the refresh works.
    let mut contents = vec![first.clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while contents.len() < 2 && Instant::now() < deadline {
        let now = read(&path).expect("the token file never disappears");
        if now != *contents.last().unwrap() {
            contents.push(now);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(contents.len(), 2, "expected exactly one replacement");
    let r = issuer.requests();
    let statuses: Vec<u64> = r.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    // first token, 500, 502, garbage (200), abandoned after the 1s timeout (0), then success.
    assert_eq!(statuses, vec![200, 500, 502, 200, 0, 200], "{r:?}");
    let failed = daemon.wait_events(4, T, "four failures", |e| is(e, "outcome", "failed"));
    let errors: Vec<&str> = failed.iter().map(|e| e["error"].as_str().unwrap()).collect();
    for (error, expected) in errors.iter().zip([
        "the token endpoint answered HTTP 500 (0 bytes)",
        "the token endpoint answered HTTP 502 (text/html, 24 bytes)",
        "the token endpoint sent an invalid token response: the body is not a JSON object",
        "did not answer within 1s",
    ]) {
        assert!(error.contains(expected), "{expected:?} in {errors:?}");
    }
    // Backoff: no retry comes sooner than 100 ms after the previous attempt (full jitter below
    // a cap that starts at `retry.initial` = 200ms and doubles).
    let times: Vec<u64> = r.iter().map(|r| r["at_ms"].as_u64().unwrap()).collect();
    for w in times[1..].windows(2) {
        assert!(w[1] - w[0] >= 95, "retried too fast: {times:?}");
    }
    assert!(daemon.stop().success());
}

#[test]
fn invalid_client_backs_off_straight_to_the_maximum() {
    let dir = TestDir::new("invalid-client");
    let issuer = Issuer::start(&dir, &[("app", "the-right-secret")], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[("bad", &format!("outputs: [{{ path: {} }}]", out(&dir, "bad.token")))],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let rejected = daemon.wait_events(2, T, "two rejections", |e| is(e, "outcome", "rejected"));
    assert_eq!(
        rejected[0]["error"],
        "the token endpoint answered HTTP 401 `invalid_client`: Unauthorized"
    );
    let r = issuer.requests();
    let gap = r[1]["at_ms"].as_u64().unwrap() - r[0]["at_ms"].as_u64().unwrap();
    assert!(gap >= 2900, "retried after {gap} ms; retry.max is 3s");
    assert!(!dir.join("out/bad.token").exists());
    let socket = dir.join("tokend.sock");
    assert_eq!(socket_status(&socket, "/readyz"), Some(503));
    let listed = socket_json(&socket, "/v1/tokens");
    assert_eq!(listed["clients"][0]["state"], "failing");
    assert!(daemon.stop().success());

    let once = tokend(&["--config", dir.join("config.yaml").to_str().unwrap(), "once"]);
    assert_eq!(once.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&once.stderr).contains("no valid token"));
}

#[test]
fn client_secret_basic_encodes_characters_that_need_it() {
    let dir = TestDir::new("basic");
    let (id, secret) = ("id:with+odd% chars", "se:cr+et% /&=");
    let issuer = Issuer::start(&dir, &[(id, secret)], "1h");
    let secret_file = dir.secret("basic-secret", secret);
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {}\nclients:\n  basic:\n    token_url: {}\n    client_id: \"{id}\"\n    client_secret: {{ file: {} }}\n    auth: client_secret_basic\n    outputs: [{{ path: {} }}]\n",
            dir.join("state").display(),
            issuer.token_url(),
            secret_file.display(),
            out(&dir, "basic.token"),
        ),
    );
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    let r = issuer.requests();
    assert_eq!(
        (
            r[0]["auth"].as_str(),
            r[0]["client_id"].as_str(),
            r[0]["status"].as_u64()
        ),
        (Some("client_secret_basic"), Some(id), Some(200))
    );
    assert_eq!(claims(&read(&dir.join("out/basic.token")).unwrap())["client_id"], id);
}

#[test]
fn clients_with_identical_grants_share_one_request() {
    let dir = TestDir::new("share");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let same = |file: &str| format!("audience: https://same/\noutputs: [{{ path: {} }}]", out(&dir, file));
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("one", &same("one.token")),
            ("two", &same("two.token")),
            ("other", "audience: https://other/"),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    assert_eq!(issuer.request_count(), 2);
    let one = wait_for(T, "one's file", || read(&dir.join("out/one.token")));
    let two = wait_for(T, "two's file", || read(&dir.join("out/two.token")));
    assert_eq!(one, two);
    daemon.wait_event(T, "the shared refresh", |e| {
        is(e, "outcome", "refreshed") && is(e, "client", "one,two")
    });
    assert!(daemon.stop().success());
}

#[test]
fn a_missing_expires_in_falls_back_to_the_jwt_exp() {
    let dir = TestDir::new("no-expires-in");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    issuer.faults(json!([{ "omit_expires_in": true, "lifetime_s": 600 }]));
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "jwt",
            &format!("outputs: [{{ path: {}, format: json }}]", out(&dir, "jwt.json")),
        )],
    );
    let once = tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
    let log = String::from_utf8_lossy(&once.stderr).into_owned();
    assert!(once.status.success(), "{log}");
    let refreshed = events(&log)
        .into_iter()
        .find(|e| is(e, "outcome", "refreshed"))
        .expect(&log);
    assert_eq!(refreshed["lifetime_from"], "jwt exp");
    let json: Value = serde_json::from_str(&read(&dir.join("out/jwt.json")).unwrap()).unwrap();
    let exp = claims(json["access_token"].as_str().unwrap())["exp"].as_u64().unwrap();
    let written = json["expires_at_unix"].as_u64().unwrap();
    assert!(written.abs_diff(exp) <= 1, "expires_at {written} vs exp {exp}");
}

#[test]
fn one_failing_output_does_not_stop_the_others_and_is_retried() {
    let dir = TestDir::new("output-failure");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    // A regular file where a directory should be: fails even for root.
    dir.write("out/blocked", "not a directory");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "c",
            &format!(
                "outputs:\n- {{ path: {} }}\n- {{ path: {} }}",
                out(&dir, "blocked/c.token"),
                out(&dir, "ok.token")
            ),
        )],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let token = wait_for(T, "the healthy output", || read(&dir.join("out/ok.token")));
    let blocked = out(&dir, "blocked/c.token");
    let failed = daemon.wait_event(T, "the failed write", |e| {
        is(e, "path", &blocked) && is(e, "level", "ERROR")
    });
    assert_eq!(failed["client"], "c");
    fs::remove_file(dir.join("out/blocked")).unwrap();
    let retried = wait_for(T, "the retried output", || read(&dir.join("out/blocked/c.token")));
    assert_eq!(retried, token);
    assert_eq!(issuer.request_count(), 1);
    assert!(daemon.stop().success());
}

#[test]
fn stale_temp_files_from_a_killed_run_are_removed_at_start_up() {
    let dir = TestDir::new("stale-temp");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[("t", &format!("outputs: [{{ path: {} }}]", out(&dir, "t.token")))],
    );
    let stale = dir.write("out/.t.token.tokend-Ab3dE6gH.tmp", "half a tok");
    let stale_state = dir.write("state/.t.state.tokend-Zz9yX8wV.tmp", "{");
    let unrelated = dir.write("out/.t.token.backup", "keep me");
    let once = tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
    assert!(once.status.success());
    assert!(!stale.exists() && !stale_state.exists());
    assert!(unrelated.exists());
    let removed: Vec<Value> = events(&String::from_utf8_lossy(&once.stderr))
        .into_iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.contains(".tokend-")))
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
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

/// Everything the binary prints, at trace level for tokend and every library, through successes
/// and failures, contains neither the client secret nor any token.
#[test]
fn no_secret_or_token_appears_in_any_output_even_at_trace_level() {
    let dir = TestDir::new("no-leaks");
    let issuer = Issuer::start(&dir, &[("app", SECRET), ("basic:id", SECRET)], "4s");
    issuer.faults(json!([
        { "status": 400, "error": "invalid_request" },
        { "status": 200, "body": "{\"access_token\": 17}" },
    ]));
    let cfg = config(
        &dir,
        &issuer,
        &[
            (
                "post",
                &format!(
                    "refresh: {{ min_remaining: 1s }}\noutputs: [{{ path: {} }}]",
                    out(&dir, "post.token")
                ),
            ),
            (
                "basic",
                &format!(
                    "client_id: \"basic:id\"\nauth: client_secret_basic\nrefresh: {{ min_remaining: 1s }}\noutputs: [{{ path: {} }}]",
                    out(&dir, "basic.token")
                ),
            ),
        ],
    );
    let trace = [("RUST_LOG", "trace")];
    let args = ["--config", cfg.to_str().unwrap(), "--log-level", "trace", "run"];
    let daemon = Tokend::spawn(&dir, &args, &trace);
    let mut tokens = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline && tokens.len() < 4 {
        for f in ["out/post.token", "out/basic.token"] {
            if let Some(t) = read(&dir.join(f)) {
                tokens.insert(t);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tokens.len() >= 4, "expected refreshed tokens, got {}", tokens.len());
    let log_path = daemon.log.clone();
    assert!(daemon.stop().success());
    let mut printed = fs::read_to_string(&log_path).unwrap();
    for cmd in [&["check"][..], &["once"], &["once", "--force"]] {
        let mut args = vec!["--config", cfg.to_str().unwrap(), "--log-level", "trace"];
        args.extend_from_slice(cmd);
        let o = std::process::Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        printed.push_str(&String::from_utf8_lossy(&o.stdout));
        printed.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        printed.len() > 10_000,
        "trace output unexpectedly small ({} bytes)",
        printed.len()
    );
    assert!(printed.contains("invalid_request"), "the failures were exercised");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut forbidden = vec![
        SECRET.to_owned(),
        url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>(),
        b64.encode(format!(
            "app:{}",
            url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>()
        )),
        b64.encode(format!(
            "basic%3Aid:{}",
            url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>()
        )),
    ];
    for t in &tokens {
        forbidden.push(t.clone());
        forbidden.push(t.rsplit('.').next().unwrap().to_owned()); // the signature alone
    }
    for f in &forbidden {
        assert!(!printed.contains(f.as_str()), "leaked {f:?} into the output");
    }
}

#[test]
fn a_numeric_inline_secret_is_never_echoed_in_config_errors() {
    let dir = TestDir::new("numeric-secret");
    let cfg = dir.write(
        "config.yaml",
        "clients:\n  n:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: 8374910273849123\n",
    );
    let o = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("clients.n.client_secret: a secret written inline must be a quoted string"),
        "{err}"
    );
    assert!(!err.contains("8374910273849123"), "{err}");
}

#[test]
fn check_exits_78_for_an_invalid_config_or_an_unreadable_secret_and_1_for_an_unwritable_directory() {
    let dir = TestDir::new("check");
    let bad = dir.write("bad.yaml", "clients:\n  x:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: s\n    outputs: [{ path: /run/x, mode: 640 }]\n");
    let o = tokend(&["--config", bad.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:6:37: clients.x.outputs[0].mode: mode must be a quoted octal string",
            bad.display()
        )),
        "{err}"
    );

    let missing = dir.join("nope.yaml");
    let o = tokend(&["--config", missing.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the configuration file"));

    let unreadable = dir.write(
        "unreadable.yaml",
        &format!(
            "state_dir: {}\nclients:\n  x:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: {{ file: {} }}\n    outputs: [{{ path: {} }}]\n",
            dir.join("state").display(),
            dir.join("no-such-secret").display(),
            out(&dir, "x.token")
        ),
    );
    let o = tokend(&["--config", unreadable.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(78), "as `run` and `once` refuse it");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:6:5: clients.x.client_secret: cannot read client secret from file",
            unreadable.display()
        )),
        "{err}"
    );

    // An output directory that cannot be created (a regular file is in the way).
    dir.write("blocker", "a file, not a directory");
    let secret = dir.secret("x-secret", "value");
    let blocked = dir.write(
        "blocked.yaml",
        &fs::read_to_string(&unreadable)
            .unwrap()
            .replace(dir.join("no-such-secret").to_str().unwrap(), secret.to_str().unwrap())
            .replace(&out(&dir, "x.token"), dir.join("blocker/sub/x.token").to_str().unwrap()),
    );
    let o = tokend(&["--config", blocked.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("blocker is not a directory"), "{err}");

    let secret = dir.secret("ok-secret", "hunter2-secret-value");
    let good = dir.write(
        "good.yaml",
        &fs::read_to_string(&unreadable)
            .unwrap()
            .replace(dir.join("no-such-secret").to_str().unwrap(), secret.to_str().unwrap()),
    );
    let o = tokend(&["--config", good.to_str().unwrap(), "check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("valid, 1 client (1 token request)"), "{text}");
    assert!(text.contains("client secret   file"), "{text}");
    assert!(text.contains("(readable)"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

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

#[test]
fn tokend_dev_issues_tokens_a_newcomer_can_use() {
    let dir = TestDir::new("dev");
    let dev_dir = dir.join("devdir");
    let daemon = Tokend::spawn(&dir, &["dev", "--dir", dev_dir.to_str().unwrap()], &[]);
    let header = dev_dir.join("tokens/demo.header");
    wait_for(T, "the dev token", || read(&header));
    wait_ready(&dev_dir.join("tokend.sock"));
    let log = daemon.output();
    assert!(log.contains("DEVELOPMENT MODE -- NOT FOR PRODUCTION"), "{log}");
    let url = log
        .lines()
        .find_map(|l| l.strip_prefix("issuer   "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"));
    let (status, body) = curl(&["-H", &format!("@{}", header.display()), &format!("{url}/api/whoami")]);
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(&[
        "-H",
        "Authorization: Bearer forged.token.value",
        &format!("{url}/api/whoami"),
    ]);
    assert_eq!(status, 401);
    let via_socket = tokend(&["--config", dev_dir.join("config.yaml").to_str().unwrap(), "get", "demo"]);
    assert!(
        via_socket.status.success(),
        "{}",
        String::from_utf8_lossy(&via_socket.stderr)
    );
    assert_eq!(
        format!(
            "Authorization: Bearer {}",
            String::from_utf8(via_socket.stdout).unwrap()
        ),
        read(&header).unwrap()
    );
    let check = tokend(&["--config", dev_dir.join("config.yaml").to_str().unwrap(), "check"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(daemon.stop().success());
    assert_eq!(mode(&dev_dir.join("client-secret")), 0o600);
}

#[test]
fn a_hanging_token_endpoint_does_not_delay_other_clients() {
    let dir = TestDir::new("independent");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    // Accepts connections (the kernel completes the handshake) but never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = format!("http://{}/oauth/token", black_hole.local_addr().unwrap());
    let cfg = config(
        &dir,
        &issuer,
        &[
            (
                "stuck",
                &format!(
                    "token_url: {hole}\ntimeouts: {{ request: 60s }}\noutputs: [{{ path: {} }}]",
                    out(&dir, "stuck.token")
                ),
            ),
            ("fine", &format!("outputs: [{{ path: {} }}]", out(&dir, "fine.token"))),
        ],
    );
    let started = Instant::now();
    let daemon = Tokend::run(&dir, &cfg);
    wait_for(Duration::from_secs(5), "the healthy client's token", || {
        read(&dir.join("out/fine.token"))
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dir.join("out/stuck.token").exists());
    assert!(daemon.stop().success(), "stops cleanly even with a request in flight");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = TestDir::new("json-logs");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("j", "audience: https://j/")]);
    let o = tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
    assert!(o.status.success());
    let stderr = String::from_utf8(o.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let refreshed = lines
        .iter()
        .find(|l| l["outcome"] == "refreshed")
        .expect("the refresh line");
    assert_eq!(refreshed["client"], "j");
    assert_eq!(refreshed["outcome"], "refreshed");
    assert!(refreshed["expires_at"].is_string() && refreshed["next_refresh"].is_string());
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

/// A saved token whose issue time lies in the future means the clock went back since it was
/// obtained; its expiry cannot be trusted, so tokend refreshes at once instead of reusing it.
#[test]
fn a_clock_that_went_back_triggers_an_immediate_refresh() {
    let dir = TestDir::new("clock-back");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[("c", &format!("outputs: [{{ path: {} }}]", out(&dir, "c.token")))],
    );
    assert!(tokend(&["--config", cfg.to_str().unwrap(), "once"]).status.success());
    let state_path = dir.join("state/c.state");
    let mut state: Value = serde_json::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
    // As if the token had been obtained an hour from now: the clock has since stepped back.
    let now = now_ms();
    state["issued_at_ms"] = json!(now + 3_600_000);
    state["expires_at_ms"] = json!(now + 7_200_000);
    fs::write(&state_path, state.to_string()).unwrap();
    let old = read(&dir.join("out/c.token")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    daemon.wait_event(T, "the clock leap", |e| {
        is(e, "clock", "went_back") && is(e, "client", "c")
    });
    wait_for(T, "a new token", || {
        read(&dir.join("out/c.token")).filter(|t| *t != old)
    });
    assert_eq!(issuer.request_count(), 2);
    assert!(daemon.stop().success());

    // The same leap while the IdP rejects the client: one immediate attempt, then the normal
    // backoff (retry.max = 3s for a rejection), not a tight loop.
    let mut state: Value = serde_json::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
    let now = now_ms();
    state["issued_at_ms"] = json!(now + 3_600_000);
    state["expires_at_ms"] = json!(now + 7_200_000);
    fs::write(&state_path, state.to_string()).unwrap();
    issuer.faults(json!([
        { "status": 401, "error": "invalid_client" },
        { "status": 401, "error": "invalid_client" },
        { "status": 401, "error": "invalid_client" },
    ]));
    let daemon = Tokend::run(&dir, &cfg);
    daemon.wait_event(T, "the rejection", |e| is(e, "outcome", "rejected"));
    // The next attempt is planned after the backoff, not at once again.
    let status = &socket_json(&dir.join("tokend.sock"), "/v1/tokens")["clients"][0];
    assert_eq!(status["failures"], 1, "{status}");
    assert!(status["next_refresh_in"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(issuer.request_count(), 3, "one attempt after the leap");
    assert!(daemon.stop().success());
}

/// Tests that change users need root. CI runs as root and sets TOKEND_REQUIRE_ROOT_TESTS=1, so
/// there they can never be skipped silently.
fn running_as_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("TOKEND_REQUIRE_ROOT_TESTS").is_none(),
        "{test} needs root"
    );
    eprintln!("SKIPPED {test}: needs root (set TOKEND_REQUIRE_ROOT_TESTS=1 to make this an error)");
    false
}

/// As an unprivileged user, tokend can give files its own group but not another owner: that
/// output fails clearly (and `once` says so), the others are written, and `check` predicts it.
#[test]
fn an_unprivileged_tokend_sets_groups_it_belongs_to_and_reports_owners_it_cannot_set() {
    if !running_as_root("an_unprivileged_tokend_sets_groups_it_belongs_to_and_reports_owners_it_cannot_set") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("unprivileged");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "u",
            &format!(
                "outputs:\n- {{ path: {}, group: 65534, mode: \"0640\" }}\n- {{ path: {}, owner: 0 }}\n- {{ path: {} }}",
                out(&dir, "grouped.token"),
                out(&dir, "root-owned.token"),
                out(&dir, "plain.token")
            ),
        )],
    );
    hand_to_nobody(&dir);
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", BIN])
            .args(args)
            .output()
            .expect("setpriv")
    };
    let check = as_nobody(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(check.status.code(), Some(1));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("setting the owner to 0 needs root (tokend (user nobody, uid 65534))"),
        "{err}"
    );

    let once = as_nobody(&["--config", cfg.to_str().unwrap(), "once"]);
    let err = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(1), "an output failed: {err}");
    assert!(
        err.contains("cannot write output") && err.contains("root-owned.token"),
        "{err}"
    );
    assert!(!dir.join("out/root-owned.token").exists());
    let grouped = fs::metadata(dir.join("out/grouped.token")).unwrap();
    assert_eq!(
        (grouped.uid(), grouped.gid(), grouped.mode() & 0o777),
        (65534, 65534, 0o640)
    );
    assert!(read(&dir.join("out/plain.token")).is_some());
}

/// Lets uid 65534 into the test directory and its files.
fn hand_to_nobody(dir: &TestDir) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(dir.path()) {
        std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![root.to_owned()];
    if root.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
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

/// Secrets from an environment variable and from a systemd credential (`LoadCredential=` puts it
/// in `$CREDENTIALS_DIRECTORY`), and a rotated secret file picked up without a restart.
#[test]
fn secrets_come_from_env_credentials_and_rotated_files() {
    let dir = TestDir::new("secret-sources");
    let issuer = Issuer::start(
        &dir,
        &[("env-client", "from-env"), ("cred-client", "from-credential")],
        "1h",
    );
    dir.secret("credentials/idp-secret", "from-credential");
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {state}\ndefaults:\n  token_url: {url}\nclients:\n  e:\n    client_id: env-client\n    client_secret: {{ env: TOKEND_TEST_SECRET }}\n    outputs: [{{ path: {e} }}]\n  c:\n    client_id: cred-client\n    client_secret: {{ credential: idp-secret }}\n    outputs: [{{ path: {c} }}]\n",
            state = dir.join("state").display(),
            url = issuer.token_url(),
            e = out(&dir, "e.token"),
            c = out(&dir, "c.token"),
        ),
    );
    let run = |env: &[(&str, &str)]| {
        std::process::Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "once", "--force"])
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let creds = dir.join("credentials");
    let ok = run(&[
        ("TOKEND_TEST_SECRET", "from-env"),
        ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
    ]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(read(&dir.join("out/e.token")).is_some() && read(&dir.join("out/c.token")).is_some());

    // Missing sources are a configuration error: all of them, before any request.
    let missing = run(&[]);
    assert_eq!(missing.status.code(), Some(78));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("environment variable TOKEND_TEST_SECRET: the variable is not set"),
        "{err}"
    );
    assert!(
        err.contains("$CREDENTIALS_DIRECTORY is not set; pass the client secret with LoadCredential="),
        "{err}"
    );

    // Rotation: the issuer only knows the new secret; the file changes, no restart.
    let rotated = Issuer::start(&dir, &[("app", "rotated-secret")], "1h");
    let cfg = config(
        &dir,
        &rotated,
        &[("r", &format!("outputs: [{{ path: {} }}]", out(&dir, "r.token")))],
    );
    let daemon = Tokend::run(&dir, &cfg);
    daemon.wait_event(T, "the rejection", |e| is(e, "outcome", "rejected"));
    dir.secret("secret", "rotated-secret");
    // The next attempt (after retry.max = 3s) reads the new secret.
    wait_for(T, "a token with the rotated secret", || read(&dir.join("out/r.token")));
    assert!(daemon.stop().success());
}

/// A token endpoint that redirects is not followed: the credentials would go to another host.
#[test]
fn redirects_from_the_token_endpoint_are_never_followed() {
    let dir = TestDir::new("redirect");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    issuer.faults(json!([
        { "status": 307, "location": target },
        { "status": 302, "location": target },
    ]));
    let cfg = config(&dir, &issuer, &[("r", "audience: https://r/")]);
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert_eq!(once.status.code(), Some(1));
    let err = String::from_utf8_lossy(&once.stderr);
    assert!(err.contains("the token endpoint answered HTTP 307"), "{err}");
    assert!(elsewhere.accept().is_err(), "tokend followed the redirect");
    let second = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(String::from_utf8_lossy(&second.stderr).contains("HTTP 302"));
    assert!(elsewhere.accept().is_err(), "tokend followed the redirect");
}

/// A saved token is reused only under the validation rules it passed: turning `validate:` on
/// (or changing it) makes tokend fetch and validate a new token rather than publish the old one.
#[test]
fn a_saved_token_is_reused_only_under_the_validation_rules_it_passed() {
    let dir = TestDir::new("validate-reuse");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let client = |extra: &str| {
        let body = format!(
            "issuer: {}\naudience: https://v/\n{extra}outputs: [{{ path: {} }}]",
            issuer.url,
            out(&dir, "v.token")
        );
        config(&dir, &issuer, &[("v", &body)])
    };
    let cfg = client("");
    assert!(tokend(&["--config", cfg.to_str().unwrap(), "once"]).status.success());
    assert_eq!(issuer.request_count(), 1);
    let cfg = client("validate: true\n");
    let o = tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        !events(&log).iter().any(|e| is(e, "outcome", "reused")),
        "an unvalidated token was reused: {log}"
    );
    assert_eq!(issuer.request_count(), 2);
    // Under the same rules, the validated token is reused.
    assert!(tokend(&["--config", cfg.to_str().unwrap(), "once"]).status.success());
    assert_eq!(issuer.request_count(), 2);
}

/// Discovery falls back to RFC 8414's location; after the IdP restarts with a new signing key,
/// tokend discovers it again and fetches its new keys for the unknown `kid`, with no restart.
#[test]
fn discovery_falls_back_to_rfc8414_and_a_rotated_signing_key_is_fetched() {
    let dir = TestDir::new("rotation");
    let issuer = Issuer::start_with(&dir, &[("app", SECRET)], "3s", &["--rfc8414-only"]);
    let port = issuer.port().to_string();
    let body = format!(
        "issuer: {}\naudience: https://rot/\nvalidate: true\nrefresh: {{ min_remaining: 1s }}\nretry: {{ initial: 200ms, max: 1s }}\noutputs: [{{ path: {} }}]",
        issuer.url,
        out(&dir, "rot.token")
    );
    let cfg = config(&dir, &issuer, &[("rot", &body)]);
    let daemon = Tokend::spawn(
        &dir,
        &["--config", cfg.to_str().unwrap(), "--log-level", "debug", "run"],
        &[],
    );
    let path = dir.join("out/rot.token");
    let first = wait_for(T, "the first token", || read(&path));
    let discoveries = || {
        daemon
            .events()
            .into_iter()
            .filter(|e| e["token_endpoint"].is_string())
            .count()
    };
    assert_eq!(discoveries(), 1);
    let old_kid = {
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(first.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"].clone()
    };
    // The IdP goes away and comes back on the same port with a new key.
    drop(issuer);
    daemon.wait_event(T, "a failure to connect", |e| {
        is(e, "outcome", "failed") && e["error"].as_str().is_some_and(|m| m.contains("cannot reach"))
    });
    let issuer = Issuer::start_with(&dir, &[("app", SECRET)], "3s", &["--rfc8414-only", "--port", &port]);
    let second = wait_for(Duration::from_secs(30), "a token signed with the new key", || {
        read(&path).filter(|t| *t != first)
    });
    let new_kid = {
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(second.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"].clone()
    };
    assert_ne!(old_kid, new_kid, "the IdP did not rotate its key");
    assert!(discoveries() >= 2, "{}", daemon.output());
    assert!(issuer.request_count() >= 1);
    assert!(daemon.stop().success());
}

/// `check` proves a private key can make the configured signature, and never shows a proxy
/// password.
#[test]
fn check_catches_a_key_that_cannot_sign_and_masks_proxy_passwords() {
    let dir = TestDir::new("check-keys");
    let key = dir.join("ec.pem");
    let o = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success());
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {}\nsocket: {{ enabled: false }}\nclients:\n  k:\n    token_url: https://idp.example/t\n    client_id: k\n    auth: private_key_jwt\n    private_key: {}\n    signing_alg: PS256\n    proxy: http://user:pr0xyPassw0rd@proxy.example:3128\n    outputs: [{{ path: {} }}]\n",
            dir.join("state").display(),
            key.display(),
            out(&dir, "k.token")
        ),
    );
    let o = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(78), "as `run` would refuse it: {text}");
    assert!(
        text.contains(&format!(
            "{}:8:5: clients.k.private_key: private key from file {} is a P-256 key, which cannot sign PS256",
            cfg.display(),
            key.display()
        )),
        "{text}"
    );
    assert!(text.contains("http://user:****@proxy.example:3128/"), "{text}");
    assert!(!text.contains("pr0xyPassw0rd"), "{text}");
}

/// The config the fixtures in `tests/fixtures/state-v1` were saved for (see the file).
const STATE_V1_CONFIG: &str = include_str!("fixtures/state-v1/config.yaml");

/// An upgrade must not re-request every token on every host at once: state files saved by the
/// previous release are reused, with no request, for plain and validated clients alike.
#[test]
fn state_files_saved_by_the_previous_release_are_reused_without_a_request() {
    let dir = TestDir::new("state-v1");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1");
    let state = dir.join("state");
    fs::create_dir_all(&state).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let names = ["plain", "validated", "explicit", "ipv6", "bare"];
    let now = now_ms();
    for name in names {
        let mut saved: Value =
            serde_json::from_str(&fs::read_to_string(fixtures.join(format!("{name}.state"))).unwrap()).unwrap();
        // Only the times move (they are not part of what a token was obtained under).
        saved["issued_at_ms"] = json!(now - 60_000);
        saved["expires_at_ms"] = json!(now + 3_600_000);
        // A JWT's shape, so that validated clients get as far as fetching the (unreachable)
        // keys: a saved token that cannot be checked now is reused; one that fails is not.
        saved["access_token"] = json!(format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ7bmFtZX0ifQ.c2ln-{name}"));
        let file = dir.write(&format!("state/{name}.state"), &saved.to_string());
        // As the previous release saved them (it wrote 0600 too).
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let secret = dir.secret("secret", SECRET);
    let cfg = dir.write(
        "config.yaml",
        &STATE_V1_CONFIG
            .replace("STATE", state.to_str().unwrap())
            .replace("SECRET", secret.to_str().unwrap())
            .replace("OUT", dir.join("out").to_str().unwrap()),
    );
    let once = tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
    let log = String::from_utf8_lossy(&once.stderr).into_owned();
    assert!(once.status.success(), "{log}");
    let reused: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["outcome"] == "reused")
        .map(|l| l["client"].as_str().unwrap_or_default().to_owned())
        .collect();
    for name in names {
        assert!(reused.iter().any(|c| c == name), "{name} was not reused:\n{log}");
        assert_eq!(
            read(&dir.join(&format!("out/{name}.token"))).as_deref(),
            Some(format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ7bmFtZX0ifQ.c2ln-{name}").as_str())
        );
    }
}

/// A socket group tokend is not in cannot be applied: at start-up that is a configuration error
/// (exit 78, naming the group and the fix) rather than a restart loop; at a reload the new
/// configuration is rejected and the socket keeps working; `check` says so beforehand, judging
/// the service's user, not root.
#[test]
fn a_socket_group_tokend_is_not_in_is_refused_before_it_breaks_the_socket() {
    if !running_as_root("a_socket_group_tokend_is_not_in_is_refused_before_it_breaks_the_socket") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("socket-group");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("g", "audience: https://g/")]);
    let plain = fs::read_to_string(&cfg).unwrap();
    let with_group = plain.replace("socket: {", "socket: { group: 4242,");
    hand_to_nobody(&dir);
    fs::write(&cfg, &with_group).unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "run"];

    // `check --as-user nobody` judges for nobody, although root runs it.
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check", "--as-user", "nobody"]);
    assert_eq!(check.status.code(), Some(1));
    let expected = "socket.group: tokend (user nobody, uid 65534) is not a member of group 4242";
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains(expected), "{err}");
    // As root, the same config is fine: root may give the socket any group.
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check", "--as-user", "root"]);
    assert!(!String::from_utf8_lossy(&check.stderr).contains("socket.group"));

    let mut refused = Tokend::spawn_as(&dir, 65534, &args);
    assert_eq!(refused.wait(T).code(), Some(78), "{}", refused.output());
    let log = refused.output();
    assert!(
        log.contains(expected) && log.contains("SupplementaryGroups=4242"),
        "{log}"
    );
    assert!(!dir.join("tokend.sock").exists(), "no socket was created");

    // Running without the group, a reload that asks for it is rejected; the socket stays usable.
    fs::write(&cfg, &plain).unwrap();
    let daemon = Tokend::spawn_as(&dir, 65534, &args);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    fs::write(&cfg, &with_group).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_event(T, "the rejected reload", |e| is(e, "reload", "rejected"));
    assert!(daemon.output().contains(expected), "{}", daemon.output());
    assert_eq!(fs::metadata(&socket).unwrap().gid(), 65534, "the socket kept its group");
    assert_eq!(socket_status(&socket, "/v1/tokens/g"), Some(200));
    assert!(daemon.stop().success());
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

/// A saved token passes `validate:` again before it is reused: one whose signature no longer
/// verifies (here: changed in the state file) is dropped and a new one requested.
#[test]
fn a_saved_token_that_fails_validation_is_not_reused() {
    let dir = TestDir::new("revalidate");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let secret = dir.secret("secret", SECRET);
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {}\nsocket: {{ enabled: false }}\nclients:\n  v:\n    issuer: {}\n    client_id: app\n    client_secret: {{ file: {} }}\n    audience: https://v/\n    validate: true\n    outputs: [{{ path: {} }}]\n",
            dir.join("state").display(),
            issuer.url,
            secret.display(),
            out(&dir, "v.token")
        ),
    );
    let run = || {
        let o = tokend(&["--config", cfg.to_str().unwrap(), "--log-format", "json", "once"]);
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{log}");
        log
    };
    run();
    assert_eq!(issuer.request_count(), 1);
    // Reused as it is: validated again, no request.
    let log = run();
    assert!(log.contains("\"outcome\":\"reused\""), "{log}");
    assert_eq!(issuer.request_count(), 1);
    // The token's signature changed (the file keeps tokend's owner and mode 0600).
    let state = dir.join("state/v.state");
    let mut saved: Value = serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    let token = saved["access_token"].as_str().unwrap().to_owned();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    saved["access_token"] = json!(format!("{signed}.{flipped}{}", &signature[1..]));
    fs::write(&state, saved.to_string()).unwrap();
    let log = run();
    assert!(
        log.contains("the saved token fails validation now; not reused"),
        "{log}"
    );
    assert_eq!(issuer.request_count(), 2);
    assert_ne!(
        read(&dir.join("out/v.token")).unwrap(),
        saved["access_token"].as_str().unwrap()
    );
}

/// An output path where someone planted a symlink is replaced, not followed: the file it points
/// to is untouched and the output is a file of tokend's own. `check` warns when others may
/// write an output's directory (they could swap the file between refreshes).
#[test]
fn a_symlink_planted_at_an_output_path_is_replaced_not_followed() {
    let dir = TestDir::new("planted-link");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let victim = dir.write("victim", "do not overwrite\n");
    fs::create_dir_all(dir.join("out")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("out/a.token")).unwrap();
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "a",
            &format!(
                "outputs: [{{ path: {} }}, {{ path: {}/a.token }}]",
                out(&dir, "a.token"),
                shared.display()
            ),
        )],
    );
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(said.contains("(mode 0777) can be written by every user"), "{said}");
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "do not overwrite\n");
    let meta = fs::symlink_metadata(dir.join("out/a.token")).unwrap();
    assert!(meta.file_type().is_file(), "the output is still a symlink");
    assert_eq!(mode(&dir.join("out/a.token")), 0o600);
    assert!(claims(&read(&dir.join("out/a.token")).unwrap())["aud"].is_string());
    // `once` and every start say it too; with the sticky bit (as /tmp has), others cannot
    // replace tokend's files, and nothing is said.
    let said = String::from_utf8_lossy(&once.stderr);
    assert!(
        said.contains("an output directory can be written by every user"),
        "{said}"
    );
    let daemon = Tokend::run(&dir, &cfg);
    let warned = daemon.wait_event(T, "the warning", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("an output directory can be written by every user: they could replace"))
    });
    assert_eq!(
        (warned["dir"].as_str(), warned["mode"].as_str()),
        (shared.to_str(), Some("0777"))
    );
    assert!(daemon.stop().success());
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once", "--force"]);
    let said = String::from_utf8_lossy(&once.stderr);
    assert!(once.status.success() && !said.contains("can be written by"), "{said}");
}

/// Files and the directories tokend creates get their modes whatever the umask: 000 opens
/// nothing more, 077 (the packaged unit's) closes nothing a reader's group needs.
#[test]
fn modes_do_not_depend_on_the_umask() {
    for umask in ["000", "077"] {
        let dir = TestDir::new("umask");
        let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
        let outputs = format!(
            "outputs:\n- {{ path: {} }}\n- {{ path: {}, mode: \"0640\" }}\n- {{ path: {}, mode: \"0644\" }}",
            out(&dir, "new/u.token"),
            out(&dir, "new/u.shared"),
            out(&dir, "new/u.public")
        );
        let cfg = config(&dir, &issuer, &[("u", &outputs)]);
        let o = std::process::Command::new("sh")
            .args(["-c", &format!("umask {umask}; exec \"$0\" --config \"$1\" once")])
            .arg(util::BIN)
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "umask {umask}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_no_leak("tokend once", &String::from_utf8_lossy(&o.stderr));
        let modes: Vec<(&str, u32)> = [
            "out",
            "out/new",
            "out/new/u.token",
            "out/new/u.shared",
            "out/new/u.public",
            "state",
            "state/u.state",
        ]
        .into_iter()
        .map(|p| (p, mode(&dir.join(p))))
        .collect();
        assert_eq!(
            modes,
            [
                ("out", 0o750),
                ("out/new", 0o750),
                ("out/new/u.token", 0o600),
                ("out/new/u.shared", 0o640),
                ("out/new/u.public", 0o644),
                ("state", 0o700),
                ("state/u.state", 0o600)
            ],
            "umask {umask}"
        );
    }
}
