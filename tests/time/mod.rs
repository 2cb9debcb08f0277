//! Time as a host sees it, with the real binary: an IdP whose clock runs ahead issues tokens
//! whose `iat` (and `nbf`) lie in the future, and the host's own wall clock jumping under a
//! running daemon. (A suspend longer than a token's lifetime and wall-clock steps back and
//! forward are also driven through the injected clock, in src/refresh/runner/tests.rs; a saved
//! token issued "in the future" after the host's clock went back is
//! `a_clock_that_went_back_triggers_an_immediate_refresh`.)

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SECRET, config, out};
use crate::T;
use crate::util::*;
use serde_json::json;
use std::fs;

fn faketime_installed(test: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v faketime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TOKEND_REQUIRE_INTEROP").is_none(),
            "{test}: faketime is not installed"
        );
        eprintln!("SKIPPED {test}: needs faketime");
    }
    found
}

/// The IdP's clock is ahead: its tokens' `iat`, `nbf` and `exp` lie that far in the future.
/// tokend plans by its own clock and the token's lifetime: a token within the validation leeway
/// (60 s) is served, validated, and refreshed at 80% of its lifetime from now — not at once, not
/// in a loop, and not late. One an hour ahead is not valid yet for any resource server whose
/// clock agrees with this host's: with `validate:` it is refused with a message that says so
/// and retried after the backoff for a rejection, not in a loop; without, it is served and
/// planned by the local clock all the same.
#[test]
fn tokens_whose_iat_lies_in_the_future_are_served_and_refreshed_on_time() {
    let test = "tokens_whose_iat_lies_in_the_future_are_served_and_refreshed_on_time";
    if !faketime_installed(test) {
        return;
    }
    for (ahead, validate) in [(45, true), (3600, true), (3600, false)] {
        let dir = TestDir::new("iat-future");
        let offset = format!("+{ahead}s");
        let issuer = Issuer::start_under(&["faketime", "-f", &offset], &dir, &[("app", SECRET)], "10m", &[]);
        let body = format!(
            "issuer: {}\naudience: https://ahead/\nvalidate: {validate}\nrefresh: {{ at: 80%, jitter: 0% }}\n\
             retry: {{ initial: 200ms, max: 3s }}\noutputs: [{{ path: {} }}]",
            issuer.url,
            out(&dir, "ahead.token")
        );
        let cfg = config(&dir, &issuer, &[("ahead", &body)]);
        let daemon = Tokend::run(&dir, &cfg);
        let socket = dir.join("tokend.sock");
        let case = format!("IdP {ahead} s ahead, validate: {validate}");
        if ahead == 3600 && validate {
            let refused = daemon.wait_event(Duration::from_secs(15), "the refusal", |e| is(e, "outcome", "rejected"));
            let error = refused["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("the token is not valid yet")
                    && error.contains("is the IdP's clock ahead of this host's?"),
                "{case}: {refused}"
            );
            std::thread::sleep(Duration::from_secs(4));
            let requests = issuer.request_count();
            assert!((2..=3).contains(&requests), "{case}: {requests} requests in 4 s");
            assert!(
                !dir.join("out/ahead.token").exists(),
                "{case}: a refused token was published"
            );
            assert!(daemon.stop().success());
            continue;
        }
        wait_ready(&socket);
        let token = read(&dir.join("out/ahead.token")).unwrap();
        let iat = claims(&token)["iat"].as_i64().unwrap();
        let skew = iat - (now_ms() / 1000) as i64;
        assert!((ahead - 5..=ahead + 5).contains(&skew), "{case}: iat is {skew} s ahead");
        let status: &Value = &socket_json(&socket, "/v1/tokens")["clients"][0];
        let next = status["next_refresh_in"].as_u64().unwrap();
        assert!(
            (470..=480).contains(&next),
            "{case}: next refresh in {next} s: {status}"
        );
        let expires = status["expires_in"].as_u64().unwrap();
        assert!(
            (590..=600).contains(&expires),
            "{case}: expires in {expires} s: {status}"
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(issuer.request_count(), 1, "{case}: no refresh loop");
        let warnings: Vec<Value> = daemon
            .events()
            .into_iter()
            .filter(|e| e["level"] == "WARN" || e["level"] == "ERROR")
            .collect();
        assert!(warnings.is_empty(), "{case}: {warnings:?}");
        assert!(daemon.stop().success());
    }
}

/// The multi-threaded build: tokend reads the clock from several threads at once, and the
/// single-threaded one parses the offset file into static buffers without a lock, so a reading
/// taken while another thread re-read the file could come out with no offset at all (a second
/// step back of an hour, seen once in CI).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Changes libfaketime's offset by renaming a new file over its file: it re-reads the file at
/// every clock reading, and one made while the file is being rewritten in place (truncated,
/// empty) reads the real time — a clock that steps back and forth under the daemon.
fn set_offset(file: &Path, offset: &str) {
    let new = file.with_extension("new");
    std::fs::write(&new, format!("{offset}\n")).unwrap();
    std::fs::rename(&new, file).unwrap();
}

/// The wall clock jumps under a running daemon: libfaketime, preloaded into tokend alone, takes
/// its offset from a file it re-reads, and leaves the monotonic clock alone — as the host sees a
/// suspend or an NTP step. Two hours forward: every client's token has expired, and all twenty
/// refresh within seconds, told by the process's one clock watcher (one report, not one per
/// client; no client polls the clock). Then one hour back: every client moves its expiry
/// earlier by as much, and none asks for a token.
#[test]
fn clock_jumps_are_noticed_within_seconds_by_one_watcher_for_every_client() {
    let test = "clock_jumps_are_noticed_within_seconds_by_one_watcher_for_every_client";
    if !faketime_installed(test) {
        return;
    }
    assert!(Path::new(LIBFAKETIME).exists(), "{test}: no {LIBFAKETIME}");
    let dir = TestDir::new("clock-jump");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let bodies: Vec<(String, String)> = (0..20)
        .map(|i| {
            let body = format!(
                "audience: https://c{i}/\noutputs: [{{ path: {} }}]",
                out(&dir, &format!("c{i}"))
            );
            (format!("c{i}"), body)
        })
        .collect();
    let clients: Vec<(&str, &str)> = bodies.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
    let cfg = config(&dir, &issuer, &clients);
    let offset = dir.write("faketime", "+0\n");
    let daemon = Tokend::spawn(
        &dir,
        &["--config", cfg.to_str().unwrap(), "--log-level", "info", "run"],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    wait_ready(&dir.join("tokend.sock"));
    assert_eq!(issuer.request_count(), 20);

    set_offset(&offset, "+2h");
    let jumped = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "every client to refresh after the jump",
        || (issuer.request_count() >= 40).then_some(()),
    );
    // The watcher compares the clocks every 5 s; each task used to re-read the clock every 30 s.
    let noticed = jumped.elapsed();
    assert!(
        noticed <= Duration::from_secs(12),
        "refreshed {noticed:?} after the jump"
    );
    let stepped = |direction: &'static str| move |e: &Value| is(e, "clock", "stepped") && e["direction"] == direction;
    daemon.wait_event(Duration::from_secs(5), "the watcher's report", stepped("forward"));

    set_offset(&offset, "+1h");
    let moved = daemon.wait_events(20, Duration::from_secs(30), "every client to move its expiry", |e| {
        is(e, "clock", "stepped_back")
    });
    assert_eq!(moved.len(), 20, "{moved:?}");
    daemon.wait_event(Duration::from_secs(10), "the watcher's report", stepped("back"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(issuer.request_count(), 40, "a step back asks for no token");
    let events = daemon.events();
    let reports = |direction| events.iter().filter(|e| stepped(direction)(e)).count();
    assert_eq!((reports("forward"), reports("back")), (1, 1), "one report per step");
    assert!(daemon.stop().success());
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
