//! Getting and refreshing tokens from the IdP: refresh before expiry, `Retry-After`, backoff and
//! the old token kept, bad credentials, Basic encoding, shared requests, a missing `expires_in`,
//! a hanging endpoint, redirects, discovery and rotated signing keys.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::*;
use crate::{SECRET, T, config, out};

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

/// A `Retry-After` that outlasts the token is honoured (the IdP asked; asking anyway risks a
/// ban), and said loudly: in the log, in `/v1/tokens` and `tokend status`, by the next-attempt
/// gauge passing the expiry gauge, and in `/readyz`, before and after the token expires.
#[test]
fn a_retry_after_longer_than_the_token_lives_is_honoured_and_said_loudly() {
    let dir = TestDir::new("retry-after-past-expiry");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "5s");
    let cfg = config(
        &dir,
        &issuer,
        &[(
            "held",
            &format!(
                "refresh: {{ at: 50%, jitter: 0%, min_remaining: 1s }}\noutputs: [{{ path: {} }}]",
                out(&dir, "held.token")
            ),
        )],
    );
    issuer.faults(json!([{}, { "status": 429, "error": "too_many_requests", "retry_after": "20" }]));
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    let held = daemon.wait_event(T, "the hold past expiry", |e| e["held_until"].is_string());
    assert_eq!(held["level"], "ERROR", "{held}");
    assert!(
        held["message"].as_str().unwrap().contains("(Retry-After)")
            && held["message"]
                .as_str()
                .unwrap()
                .contains("readers will have no valid token in between; tokend honours the wait"),
        "{held}"
    );
    let listed = socket_json(&socket, "/v1/tokens");
    let warning = listed["clients"][0]["warning"].as_str().unwrap_or_default().to_owned();
    assert!(warning.contains("before the IdP allows the next request"), "{listed}");
    let table = String::from_utf8_lossy(&tokend(&["--config", cfg.to_str().unwrap(), "status"]).stdout).into_owned();
    assert!(table.contains("WARNING: the token expires at"), "{table}");
    let metrics = socket_text(&socket, "/metrics");
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{client=\"held\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    let (next, expiry) = (
        gauge("tokend_next_attempt_timestamp_seconds"),
        gauge("tokend_token_expiry_timestamp_seconds"),
    );
    assert!(next > expiry + 10.0, "next attempt {next}, expiry {expiry}");
    let (status, body) = curl(&["--unix-socket", socket.to_str().unwrap(), "http://tokend/readyz"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("held: the IdP asked tokend to wait until"), "{body}");
    // The token expires; the wait is honoured all the same, and /readyz says why.
    wait_for(T, "not ready", || {
        (socket_status(&socket, "/readyz") == Some(503)).then_some(())
    });
    let (_, body) = curl(&["--unix-socket", socket.to_str().unwrap(), "http://tokend/readyz"]);
    assert!(
        body.contains("held: the token expired at") && body.contains("(Retry-After)"),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(issuer.request_count(), 2, "no request before the Retry-After is over");
    assert!(daemon.stop().success());
}

/// Tokens that live less than twice `refresh.min_remaining` (2 minutes by default) are refreshed
/// at half their lifetime: said once in the log, with the figures, and in `check`'s plan.
#[test]
fn a_lifetime_shorter_than_twice_min_remaining_is_said_once_and_in_the_plan() {
    let dir = TestDir::new("short-lifetime");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "4s");
    let cfg = config(
        &dir,
        &issuer,
        &[("brief", &format!("outputs: [{{ path: {} }}]", out(&dir, "brief.token")))],
    );
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(
        plan.contains("at least 2m before expiry (a token living under 4m at half its lifetime)"),
        "{plan}"
    );
    let daemon = Tokend::run(&dir, &cfg);
    daemon.wait_events(3, T, "three tokens", |e| is(e, "outcome", "refreshed"));
    let warnings: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| e["min_remaining"].is_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]["message"].as_str().unwrap().contains(
            "less than twice `refresh.min_remaining` (2m); refreshing at half its lifetime instead (set `min_remaining` below 2s to refresh later)"
        ),
        "{}",
        warnings[0]
    );
    assert!(daemon.stop().success());
}
