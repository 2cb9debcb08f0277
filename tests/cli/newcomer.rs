//! What a newcomer meets in the first hour, from a fresh clone and the README: `tokend dev`,
//! the development issuer, the first configuration mistakes, `once` and `check`. Each test was
//! written against a rough edge someone hit, and failed before it was smoothed.

use std::fs;

use crate::T;
use crate::util::*;

/// A second `tokend dev` in the same directory refuses before touching anything: the first one
/// keeps its secret, its config and its tokens, and the second prints no hints.
#[test]
fn a_second_tokend_dev_in_the_same_directory_changes_nothing() {
    let dir = TestDir::new("dev-twice");
    let dev_dir = dir.join("devdir");
    let first = Tokend::spawn(&dir, &["dev", "--dir", dev_dir.to_str().unwrap()], &[]);
    wait_for(T, "the first one's token", || read(&dev_dir.join("tokens/demo.token")));
    let secret = fs::read(dev_dir.join("client-secret")).unwrap();
    let config = fs::read(dev_dir.join("config.yaml")).unwrap();

    let second = tokend(&["dev", "--dir", dev_dir.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another `tokend dev` is running in") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(
        second.stdout.is_empty(),
        "hints for an issuer that is not running: {}",
        String::from_utf8_lossy(&second.stdout)
    );
    assert_eq!(fs::read(dev_dir.join("client-secret")).unwrap(), secret);
    assert_eq!(fs::read(dev_dir.join("config.yaml")).unwrap(), config);
    // The first one still works: its secret is the one its issuer accepts.
    let got = tokend(&["--config", dev_dir.join("config.yaml").to_str().unwrap(), "get", "demo"]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let mut first = first;
    assert!(first.is_running());
    assert!(first.stop().success());
}

/// The hints name a command that works as it stands: after `cargo run`, `tokend` is not on the
/// PATH, so they give the running binary's path.
#[test]
fn tokend_dev_hints_name_the_binary_that_runs() {
    let dir = TestDir::new("dev-hints");
    let dev_dir = dir.join("devdir");
    let daemon = Tokend::spawn(
        &dir,
        &["dev", "--dir", dev_dir.to_str().unwrap()],
        &[("PATH", "/usr/bin:/bin")],
    );
    wait_for(T, "the hints", || {
        daemon.output().contains("Ctrl-C stops").then_some(())
    });
    let wanted = format!("{BIN} --config {}/config.yaml status", dev_dir.display());
    assert!(daemon.output().contains(&wanted), "{wanted} in {}", daemon.output());
    let config = fs::read_to_string(dev_dir.join("config.yaml")).unwrap();
    assert!(config.contains(&format!("`{BIN} get demo --socket")), "{config}");
    assert!(daemon.stop().success());
}

/// `--issuer-only` says which credentials it accepts, in its help and when it starts, and does
/// not claim to have generated a secret.
#[test]
fn the_issuer_only_mode_says_which_credentials_it_accepts() {
    let help = tokend(&["dev", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("`tokend-dev` with secret `tokend-dev-secret`"), "{help}");
    let dir = TestDir::new("issuer-only");
    let issuer = Tokend::spawn(&dir, &["dev", "--issuer-only"], &[]);
    wait_for(T, "the banner", || {
        issuer.output().contains("accepts client_id").then_some(())
    });
    let out = issuer.output();
    assert!(
        out.contains("accepts client_id tokend-dev with client_secret tokend-dev-secret"),
        "{out}"
    );
    assert!(!out.contains("secret are generated now"), "{out}");
    // It issues tokens, and cannot be told to misbehave: fault injection is the test suite's
    // own issuer (`tokend-test-issuer`), not part of `tokend`.
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("tokend dev issuer listening on "))
        .expect("the issuer's URL")
        .trim()
        .to_owned();
    let token = || {
        curl(&[
            "-u",
            "tokend-dev:tokend-dev-secret",
            "-d",
            "grant_type=client_credentials",
            &format!("{url}/oauth/token"),
        ])
    };
    let (status, body) = token();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("access_token"), "{body}");
    assert_eq!(push_faults(&url, &serde_json::json!([{ "status": 503 }])), 404);
    let (status, body) = token();
    assert_eq!(status, 200, "{body}");
    assert!(issuer.stop().success());
}

/// `tokend dev` writes its own configuration: its help does not offer `--config` and its
/// default, and a `--config` given anyway is said to be unused.
#[test]
fn tokend_dev_help_does_not_offer_the_config_it_ignores() {
    let help = |args: &[&str]| String::from_utf8_lossy(&tokend(args).stdout).into_owned();
    let dev = help(&["dev", "--help"]);
    assert!(!dev.contains("--config") && !dev.contains("/etc/tokend"), "{dev}");
    assert!(dev.contains("--dir"), "{dev}");
    let check = help(&["check", "--help"]);
    assert!(
        check.contains("--config") && check.contains("/etc/tokend/config.yaml"),
        "{check}"
    );
    let dir = TestDir::new("dev-config");
    let dev_dir = dir.join("dev");
    let daemon = Tokend::spawn(
        &dir,
        &[
            "--config",
            "/etc/tokend/other.yaml",
            "dev",
            "--dir",
            dev_dir.to_str().unwrap(),
        ],
        &[],
    );
    wait_for(T, "a token", || read(&dev_dir.join("tokens/demo.token")));
    let out = daemon.output();
    assert!(out.contains("`tokend dev` does not use --config"), "{out}");
    assert!(daemon.stop().success());
}

/// A configuration for `once` against `issuer`: one client `billing` with `body`.
fn once_config(dir: &TestDir, issuer: &Issuer, secret: &str, body: &str) -> std::path::PathBuf {
    let secret = dir.secret("secret", secret);
    let mut yaml = format!(
        "state_dir: {}\nsocket: {{ enabled: false }}\nclients:\n  billing:\n    client_id: app\n    client_secret: {{ file: {} }}\n",
        dir.join("state").display(),
        secret.display()
    );
    for line in body.replace("ISSUER", &issuer.url).lines() {
        yaml.push_str(&format!("    {line}\n"));
    }
    dir.write("config.yaml", &yaml)
}

fn run_once(config: &std::path::Path) -> (Option<i32>, String) {
    let once = tokend(&["--config", config.to_str().unwrap(), "once"]);
    (once.status.code(), String::from_utf8_lossy(&once.stderr).into_owned())
}

/// `once` makes one attempt: its messages say what happened, what to check, and that nothing is
/// retried; a token refused by validation is not called a credentials problem.
#[test]
fn once_says_what_failed_what_to_check_and_that_nothing_is_retried() {
    let dir = TestDir::new("once-messages");
    let issuer = Issuer::start(&dir, &[("app", "the-right-secret")], "1h");
    let token_url = "token_url: ISSUER/oauth/token";

    let (code, err) = run_once(&once_config(&dir, &issuer, "a-wrong-secret", token_url));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("token request rejected; check the client's `client_id`, its `client_secret`, and that the IdP lets it authenticate with `client_secret_post` (`auth`); no valid token is available; `once` does not retry"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");

    let validated = "issuer: ISSUER\nvalidate: { audience: https://someone-else.example/ }";
    let (code, err) = run_once(&once_config(&dir, &issuer, "the-right-secret", validated));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the token failed validation; check `validate` and the client's `issuer` and `audience`"),
        "{err}"
    );
    assert!(!err.contains("credentials"), "{err}");

    // An output that cannot be written (its parent is a file): named, and not retried.
    dir.write("blocker", "");
    let output = format!(
        "{token_url}\noutputs: [{{ path: {}/blocker/billing.token }}]",
        dir.path().display()
    );
    let (code, err) = run_once(&once_config(&dir, &issuer, "the-right-secret", &output));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot write output; the other outputs are unaffected; `once` does not retry"),
        "{err}"
    );
    assert!(err.contains(&format!("{}/blocker", dir.path().display())), "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

/// `check` says no to what would certainly fail: an output where no file can be created, and
/// values still as the example has them. A missing config file says where to go from there.
#[test]
fn check_refuses_what_cannot_work_and_a_missing_config_says_what_to_do() {
    let dir = TestDir::new("check-optimistic");
    let issuer = Issuer::start(&dir, &[("app", "the-right-secret")], "1h");
    let proc_output = "token_url: ISSUER/oauth/token\noutputs: [{ path: /proc/tokend/billing.token }]";
    let cfg = once_config(&dir, &issuer, "the-right-secret", proc_output);
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("/proc is on the kernel's proc file system"), "{out}");
    // And `once`, which tries, names the directory it could not create.
    let (code, err) = run_once(&cfg);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot create directory /proc/tokend: "), "{err}");

    let example = "token_url: https://example.eu.auth0.com/oauth/token\naudience: https://billing.example.com/";
    let cfg = once_config(&dir, &issuer, "replace-with-the-client-secret", example);
    let cfg = dir.write(
        "config.yaml",
        &fs::read_to_string(&cfg)
            .unwrap()
            .replace("client_id: app", "client_id: replace-with-the-client-id"),
    );
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let out = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{out}");
    for wanted in [
        "client_id `replace-with-the-client-id` is the example's placeholder",
        "the client secret in file",
        "https://example.eu.auth0.com/oauth/token is the example's placeholder host",
        "warning: billing: audience https://billing.example.com/ looks like the example's",
    ] {
        assert!(out.contains(wanted), "{wanted} in {out}");
    }
    assert!(
        !out.contains("replace-with-the-client-secret"),
        "a secret was shown: {out}"
    );

    let missing = tokend(&["--config", dir.join("nothing-here.yaml").to_str().unwrap(), "check"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(78), "{err}");
    assert!(
        err.contains("--config PATH or TOKEND_CONFIG") && err.contains("`tokend dev`"),
        "{err}"
    );
}
