//! Time as a host sees it, with the real binary: an IdP whose clock runs ahead issues tokens
//! whose `iat` (and `nbf`) lie in the future. (A suspend longer than a token's lifetime and
//! wall-clock steps back and forward are driven through the injected clock, in
//! src/refresh/runner/tests.rs; a saved token issued "in the future" after the host's clock went
//! back is `a_clock_that_went_back_triggers_an_immediate_refresh`.)

use std::time::Duration;

use serde_json::Value;

use super::{SECRET, config, out};
use crate::util::*;

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
