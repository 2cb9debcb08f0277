//! Token files: every format with its mode and owner, an output that fails alone and is retried,
//! temp files a killed run left, owners an unprivileged tokend cannot set, symlinks planted at
//! an output path, and modes that do not depend on the umask.

use std::fs;

use serde_json::Value;

use crate::util::*;
use crate::{SECRET, T, config, hand_to_nobody, out, running_as_root};

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
            .arg(BIN)
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
