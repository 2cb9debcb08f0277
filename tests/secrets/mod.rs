//! Secrets: where they come from (files, the environment, systemd credentials, rotation), and that
//! no secret or token reaches an output, a log (even at trace level) or a configuration error.

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;
use crate::{SECRET, T, config, out};

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
