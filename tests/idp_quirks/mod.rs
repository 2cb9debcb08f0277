//! What real IdPs do that the RFCs do not quite say, met as a user meets them: a refusal that
//! is a bare 403 (Glewlwyd's answer to a wrong secret, a forbidden auth method, an unknown key
//! or a scope the client may not have), Basic credentials taken as sent instead of decoded, a
//! scope granted narrower than asked, and a lower-case `token_type`. The token server is the
//! test issuer with the matching switch (`--bare-refusals`, `--raw-basic`, `--granted-scopes`,
//! `--omit-scope`), a process of its own.

use std::path::Path;

use serde_json::{Value, json};

use crate::util::*;
use crate::{SECRET, T, config, out};

/// `tokend once`: whether it got a token, and what it logged.
fn once(cfg: &Path) -> (bool, String) {
    let o = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A client of `issuer` with `body` (its own lines) and one raw output, `c`.
fn client(dir: &TestDir, issuer: &Issuer, body: &str) -> std::path::PathBuf {
    let body = format!("{body}\noutputs: [{{ path: {} }}]", out(dir, "c"));
    config(dir, issuer, &[("c", &body)])
}

#[test]
fn a_bare_refusal_points_at_the_credentials_and_the_method_and_a_missing_endpoint_at_the_url() {
    let dir = TestDir::new("bare-refusal");
    let issuer = Issuer::start_with(&dir, &[("app", "the-right-secret")], "1h", &["--bare-refusals"]);
    let wrong = dir.secret("wrong", "a-wrong-secret");
    for auth in ["client_secret_basic", "client_secret_post"] {
        let cfg = client(
            &dir,
            &issuer,
            &format!("auth: {auth}\nclient_secret: {{ file: {} }}", wrong.display()),
        );
        let (ok, log) = once(&cfg);
        assert!(!ok, "{log}");
        assert!(log.contains("the token endpoint answered HTTP 403 (0 bytes)"), "{log}");
        assert!(
            log.contains(&format!(
                "check the client's `client_id`, its `client_secret`, and that the IdP lets it authenticate with `{auth}` (`auth`); then that the IdP grants it the `scope` and `audience` asked for"
            )),
            "{log}"
        );
        assert!(!log.contains("token_url"), "a refusal does not blame the URL: {log}");
        assert!(
            !log.contains("basic_encoding"),
            "nothing in this secret changes when encoded: {log}"
        );
    }
    let cfg = client(&dir, &issuer, &format!("token_url: {}/oauth/nowhere", issuer.url));
    let (ok, log) = once(&cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("HTTP 404") && log.contains("check `token_url` (or `issuer`): nothing there takes token requests"),
        "{log}"
    );
    assert!(!log.contains("client_secret"), "{log}");
    assert!(!dir.join("out/c").exists());
}

#[test]
fn a_basic_secret_with_special_characters_reaches_an_idp_that_does_not_decode_it() {
    let odd = "p+q/r=s%t&u v~w:x";
    forbid(odd);
    let dir = TestDir::new("basic-raw");
    let raw_idp = Issuer::start_with(&dir, &[("app", odd)], "1h", &["--bare-refusals", "--raw-basic"]);
    let secret = dir.secret("odd", odd);
    let basic = format!(
        "auth: client_secret_basic\nclient_secret: {{ file: {} }}",
        secret.display()
    );

    // As RFC 6749 §2.3.1 says (form-encoded): refused, and the advice names the way through.
    let (ok, log) = once(&client(&dir, &raw_idp, &basic));
    assert!(!ok, "{log}");
    assert!(
        log.contains("its id or secret has characters that `client_secret_basic` form-encodes before Base64 (RFC 6749 §2.3.1), which some IdPs do not decode: try `basic_encoding: raw` (or `auth: client_secret_post`)"),
        "{log}"
    );
    // Sent as it is: a token.
    let (ok, log) = once(&client(&dir, &raw_idp, &format!("{basic}\nbasic_encoding: raw")));
    assert!(ok, "{log}");
    assert!(read(&dir.join("out/c")).is_some());
    let last = raw_idp.requests().pop().unwrap();
    assert_eq!(
        (last["auth"].as_str(), last["status"].as_u64()),
        (Some("client_secret_basic"), Some(200))
    );

    // The other way round: `raw` at an IdP that decodes, and the advice says to remove it.
    let dir = TestDir::new("basic-raw-rfc");
    let rfc_idp = Issuer::start_with(&dir, &[("app", odd)], "1h", &["--bare-refusals"]);
    let secret = dir.secret("odd", odd);
    let raw = format!(
        "auth: client_secret_basic\nbasic_encoding: raw\nclient_secret: {{ file: {} }}",
        secret.display()
    );
    let (ok, log) = once(&client(&dir, &rfc_idp, &raw));
    assert!(!ok, "{log}");
    assert!(
        log.contains("`basic_encoding: raw` sends its id and secret unencoded"),
        "{log}"
    );

    // `basic_encoding` belongs to Basic only, and `raw` cannot carry a `:` in the id.
    let (ok, log) = once(&client(
        &dir,
        &rfc_idp,
        &format!("basic_encoding: raw\nclient_secret: {{ file: {} }}", secret.display()),
    ));
    assert!(!ok);
    assert!(
        log.contains("clients.c.basic_encoding: `basic_encoding` is used only with `auth: client_secret_basic`, not `client_secret_post`; remove it"),
        "{log}"
    );
    let (ok, log) = once(&client(&dir, &rfc_idp, &format!("{raw}\nclient_id: \"a:b\"")));
    assert!(!ok);
    assert!(
        log.contains("with `basic_encoding: raw` a `client_id` cannot hold `:`"),
        "{log}"
    );
}

/// Asked for `api.read api.admin`, the IdP grants `api.read`: from the response's `scope` or,
/// when the response leaves it out, from the token's claim.
#[test]
fn a_narrowed_scope_is_warned_about_shown_and_refused_when_required() {
    for omit in [false, true] {
        let dir = TestDir::new(if omit { "scope-claim" } else { "scope-response" });
        let mut switches = vec!["--granted-scopes", "api.read"];
        if omit {
            switches.push("--omit-scope");
        }
        let issuer = Issuer::start_with(&dir, &[("app", SECRET)], "1h", &switches);
        let json_out = out(&dir, "c.json");
        let cfg = config(
            &dir,
            &issuer,
            &[(
                "c",
                &format!("scope: api.read api.admin\noutputs: [{{ path: {json_out}, format: json }}]"),
            )],
        );
        let daemon = Tokend::run(&dir, &cfg);
        let warning = daemon.wait_event(T, "the narrowed scope", |e| e["scope_dropped"].is_string());
        assert_eq!(
            (
                warning["level"].as_str(),
                warning["scope_dropped"].as_str(),
                warning["scope_granted"].as_str()
            ),
            (Some("WARN"), Some("api.admin"), Some("api.read")),
            "{warning}"
        );
        assert!(
            warning["message"]
                .as_str()
                .unwrap()
                .contains("the IdP granted less than the scope asked for, leaving out `api.admin`"),
            "{warning}"
        );
        let document: Value = serde_json::from_str(&read(Path::new(&json_out)).unwrap()).unwrap();
        assert_eq!(document["scope"], "api.read");
        let socket = dir.join("tokend.sock");
        assert_eq!(socket_json(&socket, "/v1/tokens")["clients"][0]["scope"], "api.read");
        let status = tokend(&["--config", cfg.to_str().unwrap(), "status"]);
        let table = String::from_utf8_lossy(&status.stdout);
        assert!(
            table.lines().nth(2).unwrap().contains("SCOPE") && table.contains("api.read"),
            "{table}"
        );
        let warnings = daemon
            .events()
            .iter()
            .filter(|e| e["scope_dropped"].is_string())
            .count();
        assert_eq!(warnings, 1, "warned once");
        assert!(daemon.stop().success());
    }

    // With `require_scope`, such a token is refused and nothing is published; a saved token
    // without the scope is not reused either.
    let dir = TestDir::new("scope-required");
    let issuer = Issuer::start_with(&dir, &[("app", SECRET)], "1h", &["--granted-scopes", "api.read"]);
    let cfg = client(&dir, &issuer, "scope: api.read api.admin\nrequire_scope: true");
    let (ok, log) = once(&cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("the token lacks a required scope; have the IdP grant the client those scopes, or take them out of `require_scope`"),
        "{log}"
    );
    assert!(
        log.contains("the IdP granted the scope `api.read`, without `api.admin` that `require_scope` requires"),
        "{log}"
    );
    assert!(!dir.join("out/c").exists());
    let cfg = client(&dir, &issuer, "scope: api.read api.admin\nrequire_scope: [api.read]");
    assert!(once(&cfg).0, "api.read alone is required, and granted");
    let requests = issuer.request_count();
    let cfg = client(&dir, &issuer, "scope: api.read api.admin\nrequire_scope: [api.admin]");
    let (ok, log) = once(&cfg);
    assert!(!ok);
    assert!(log.contains("without `api.admin`"), "{log}");
    assert_eq!(issuer.request_count(), requests + 1, "the saved token was not reused");
    let cfg = client(&dir, &issuer, "scope: api.read\nrequire_scope: [api.write]");
    let (ok, log) = once(&cfg);
    assert!(!ok);
    assert!(
        log.contains("`require_scope` names `api.write`, which `scope` does not ask for; add it to `scope`"),
        "{log}"
    );
}

/// RFC 6749 §7.1: the type is case-insensitive. tokend writes `Bearer` for any spelling of it
/// (as `Authorization: Bearer` is written), and other types as the IdP sent them.
#[test]
fn a_lower_case_bearer_type_is_written_as_bearer_and_other_types_as_sent() {
    let dir = TestDir::new("token-type");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    for (sent, written) in [("bearer", "Bearer"), ("BEARER", "Bearer"), ("DPoP", "DPoP")] {
        issuer.faults(json!([{ "token_type": sent }]));
        let json_out = out(&dir, "t.json");
        let header_out = out(&dir, "t.header");
        let cfg = config(
            &dir,
            &issuer,
            &[(
                "t",
                &format!("outputs: [{{ path: {json_out}, format: json }}, {{ path: {header_out}, format: header }}]"),
            )],
        );
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let (ok, log) = once(&cfg);
        assert!(ok, "{log}");
        let document: Value = serde_json::from_str(&read(Path::new(&json_out)).unwrap()).unwrap();
        assert_eq!(document["token_type"], written, "sent {sent}");
        assert!(
            read(Path::new(&header_out))
                .unwrap()
                .starts_with(&format!("Authorization: {written} ")),
            "sent {sent}"
        );
    }
}
