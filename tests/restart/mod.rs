//! Restarts: saved tokens reused without a request, under the validation rules they passed, state
//! files of the previous release, and a saved token that fails validation is not reused.

use std::fs;

use serde_json::{Value, json};

use crate::util::*;
use crate::{SECRET, T, config, out};

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

/// The config the fixtures in `tests/fixtures/state-v1` were saved for (see the file).
const STATE_V1_CONFIG: &str = include_str!("../fixtures/state-v1/config.yaml");

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

/// A stop while a token request is out: the IdP has issued (and counted) the token by the time
/// its answer is on the way, so tokend waits for it (a bounded grace), saves it, and the next
/// start reuses it: one request across the stop. An answer slower than the grace is abandoned,
/// and the stop still ends in good time.
#[test]
fn a_stop_during_a_slow_answer_saves_the_token_instead_of_asking_again() {
    let dir = TestDir::new("stop-in-flight");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[("slow", &format!("outputs: [{{ path: {} }}]", out(&dir, "slow.token")))],
    );
    issuer.faults(json!([{ "delay_ms": 2500 }]));
    let mut first = Tokend::run(&dir, &cfg);
    wait_for(T, "the request in flight", || {
        (issuer.request_count() == 1).then_some(())
    });
    let stopping = std::time::Instant::now();
    first.signal(nix::sys::signal::Signal::SIGTERM);
    let status = first.wait(T);
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{}", first.output());
    assert!(took < std::time::Duration::from_secs(8), "the stop took {took:?}");
    eprintln!("a stop during a 2.5 s answer took {took:.1?}");
    let token = read(&dir.join("out/slow.token")).expect("the token of the answer that came during the stop");
    first.wait_event(T, "the grace", |e| is(e, "client", "slow") && e["grace"].is_string());
    let second = Tokend::run(&dir, &cfg);
    second.wait_event(T, "the reuse", |e| is(e, "outcome", "reused"));
    assert_eq!(read(&dir.join("out/slow.token")).unwrap(), token);
    assert_eq!(issuer.request_count(), 1, "one request across the stop");
    assert!(second.stop().success());

    // An answer that takes longer than the grace is abandoned.
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    issuer.faults(json!([{ "delay_ms": 30000 }]));
    let mut third = Tokend::run(&dir, &cfg);
    wait_for(T, "the second request in flight", || {
        (issuer.request_count() == 2).then_some(())
    });
    let stopping = std::time::Instant::now();
    third.signal(nix::sys::signal::Signal::SIGTERM);
    let status = third.wait(std::time::Duration::from_secs(30));
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= std::time::Duration::from_secs(4) && took < std::time::Duration::from_secs(12),
        "the stop took {took:?}; the grace is 5 s"
    );
    eprintln!("a stop during a 30 s answer took {took:.1?}");
    third.wait_event(T, "the request abandoned", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not end within the grace"))
    });
}
