//! The command line: `check` and its exit statuses and findings, `tokend dev`, JSON logs; and,
//! in `newcomer`, what a newcomer meets in the first hour.

mod newcomer;

use std::fs;

use serde_json::Value;

use crate::util::*;
use crate::{SECRET, T, config, out};

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
