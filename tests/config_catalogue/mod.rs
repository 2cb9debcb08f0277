//! The configuration catalogue: one case per class of bad configuration, and
//! each is refused the same way by `check`, by `once` and by `run` at start-up: exit 78
//! (EX_CONFIG, which the unit's `RestartPreventExitStatus=78` does not restart) and the same
//! message, naming the file, the line and the fix. Every shape error's exact wording is in the
//! parser's snapshot (src/config/tests.rs); this proves what the real binary does with a class
//! of each, and with what only real files can show: secret files, their modes, directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::T;
use crate::util::*;

/// A valid configuration: one client, its secret in `{dir}/secrets`, its token in `{dir}/out`.
/// No socket, and nothing listens at the token URL: nothing here may get as far as a request.
pub(crate) const BASE: &str = "\
state_dir: {dir}/state
socket: { enabled: false }
clients:
  x:
    token_url: http://127.0.0.1:9/token
    client_id: a
    client_secret: { file: {dir}/secrets/x }
    outputs:
      - path: {dir}/out/x.token
";

pub(crate) struct Case {
    pub class: &'static str,
    /// Replacements in `BASE`, in order.
    pub edit: &'static [(&'static str, &'static str)],
    /// Makes the secret file's mode this (it is 0600), or removes it (`None`).
    pub secret_mode: Option<Option<u32>>,
    /// Environment for tokend (`{dir}` is replaced).
    pub env: &'static [(&'static str, &'static str)],
    /// What tokend prints on stderr: `{config}` is the file, `{dir}` the test's directory.
    pub stderr: &'static str,
}

/// Lays out a case in a new directory: the secret, `credentials/`, and `config.yaml` from
/// `BASE` with the case's edits. Returns the directory, the config's path and tokend's
/// environment (the schema test, `tests/schema`, lays out the same cases).
pub(crate) fn lay_out(case: &Case, name: &str) -> (TestDir, std::path::PathBuf, Vec<(String, String)>) {
    let dir = TestDir::new(name);
    let d = dir.path().display().to_string();
    let secret = dir.secret("secrets/x", "catalogue-secret");
    match case.secret_mode {
        None => {}
        Some(None) => fs::remove_file(&secret).unwrap(),
        Some(Some(mode)) => fs::set_permissions(&secret, fs::Permissions::from_mode(mode)).unwrap(),
    }
    fs::create_dir(dir.join("credentials")).unwrap();
    let mut yaml = BASE.to_owned();
    for (from, to) in case.edit {
        let edited = yaml.replace(from, to);
        assert_ne!(edited, yaml, "{}: `{from}` is not in the config", case.class);
        yaml = edited;
    }
    let cfg = dir.write("config.yaml", &yaml.replace("{dir}", &d));
    let env = case
        .env
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("{dir}", &d)))
        .collect();
    (dir, cfg, env)
}

pub(crate) const CASES: &[Case] = &[
    Case {
        class: "YAML syntax error",
        edit: &[("/secrets/x }", "/secrets/x")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:8:12: did not find expected ',' or '}', while parsing a flow mapping at line 7 column 20\n",
    },
    Case {
        class: "unknown key, with the key it is likely a typo of",
        edit: &[("    token_url:", "    tokne_url:")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:5:5: clients.x: unknown key `tokne_url`; did you mean `token_url`?\n",
    },
    Case {
        class: "unknown key, with nothing close to it",
        edit: &[("    client_id: a\n", "    client_id: a\n    zzz: 1\n")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:7:5: clients.x: unknown key `zzz`; expected one of: token_url, issuer, client_id, client_secret, auth, basic_encoding, private_key, key_id, signing_alg, assertion_audience, client_certificate, client_key, ca_file, proxy, no_proxy, validate, audience, scope, require_scope, resource, organization, params, allow_insecure_http, timeouts, refresh, retry, outputs, readers, hooks, fleet, fleet_key\n",
    },
    Case {
        class: "wrong type",
        edit: &[("client_id: a", "client_id: [a]")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:6:16: clients.x.client_id: expected a string, found a list\n",
    },
    Case {
        class: "bad duration",
        edit: &[("    outputs:", "    timeouts: { connect: 5 parsecs }\n    outputs:")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:8:26: clients.x.timeouts.connect: `5 parsecs` is not a duration (unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like \"30s\", \"5m\" or \"1h\"\n",
    },
    Case {
        class: "duration without a unit",
        edit: &[("    outputs:", "    retry: { max: 300 }\n    outputs:")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:8:19: clients.x.retry.max: a duration needs a unit: write \"300s\", \"300m\" or similar, not the bare number 300\n",
    },
    Case {
        class: "bad mode: a bare number",
        edit: &[("/out/x.token\n", "/out/x.token\n        mode: 640\n")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:10:15: clients.x.outputs[0].mode: mode must be a quoted octal string: write \"0640\", not the bare number 640 (YAML reads it as decimal)\n",
    },
    Case {
        class: "bad mode: not octal",
        edit: &[("/out/x.token\n", "/out/x.token\n        mode: \"0648\"\n")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:10:15: clients.x.outputs[0].mode: `0648` is not an octal file mode; write it as a quoted string such as \"0600\" or \"0640\"\n",
    },
    Case {
        class: "bad mode: others may write",
        edit: &[("/out/x.token\n", "/out/x.token\n        mode: \"0666\"\n")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:10:9: clients.x.outputs[0].mode: mode \"0666\" lets other users write the token file, and so replace the token between refreshes; group and others may read (such as \"0640\"), never write\n",
    },
    Case {
        class: "duplicate output path",
        edit: &[(
            "/out/x.token\n",
            "/out/x.token\n      - { path: {dir}/out/x.token, format: json }\n",
        )],
        secret_mode: None,
        env: &[],
        stderr: "{config}:10:11: clients.x.outputs[1].path: `{dir}/out/x.token` is already written by clients.x.outputs[0]; each file needs exactly one writer\n",
    },
    Case {
        class: "output inside the state directory",
        edit: &[("{dir}/out/x.token", "{dir}/state/tokens/x.token")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:9:9: clients.x.outputs[0].path: `{dir}/state/tokens/x.token` is inside the state directory {dir}/state, which holds tokend's saved tokens and must be tokend's alone; write outputs elsewhere, such as /run/tokend/x.token\n",
    },
    Case {
        class: "output in the directory of a secret file",
        edit: &[("{dir}/out/x.token", "{dir}/secrets/x.token")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:9:9: clients.x.outputs[0].path: `{dir}/secrets/x.token` is in {dir}/secrets, the directory of the secret file of clients.x.client_secret: tokend would need to write where a secret is kept, and could replace it; write outputs elsewhere, such as /run/tokend/x.token\n",
    },
    Case {
        class: "output inside $CREDENTIALS_DIRECTORY",
        edit: &[("{dir}/out/x.token", "{dir}/credentials/x.token")],
        secret_mode: None,
        env: &[("CREDENTIALS_DIRECTORY", "{dir}/credentials")],
        stderr: "{config}:9:9: clients.x.outputs[0].path: `{dir}/credentials/x.token` is inside $CREDENTIALS_DIRECTORY ({dir}/credentials), where systemd passes tokend its secrets; write outputs elsewhere, such as /run/tokend/x.token\n",
    },
    Case {
        class: "unreadable secret: no such file",
        edit: &[],
        secret_mode: Some(None),
        env: &[],
        stderr: "{config}:7:5: clients.x.client_secret: cannot read client secret from file {dir}/secrets/x: No such file or directory (os error 2); create it (mode 0600, owned by tokend's user) or correct the path\n",
    },
    Case {
        class: "unreadable secret: the variable is not set",
        edit: &[("{ file: {dir}/secrets/x }", "{ env: TOKEND_CATALOGUE_SECRET }")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:7:5: clients.x.client_secret: cannot read client secret from environment variable TOKEND_CATALOGUE_SECRET: the variable is not set; set it in tokend's environment (under systemd, `Environment=` or `EnvironmentFile=` in a drop-in)\n",
    },
    Case {
        class: "unreadable secret: no $CREDENTIALS_DIRECTORY",
        edit: &[("{ file: {dir}/secrets/x }", "{ credential: x }")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:7:5: clients.x.client_secret: cannot read client secret from systemd credential x: $CREDENTIALS_DIRECTORY is not set; pass the client secret with LoadCredential= in the unit\n",
    },
    Case {
        class: "loose secret permissions: readable by every user",
        edit: &[],
        secret_mode: Some(Some(0o644)),
        env: &[],
        stderr: "{config}:7:5: clients.x.client_secret: cannot read client secret from file {dir}/secrets/x: the file is readable by every user (mode 0644); `chmod 0600 {dir}/secrets/x` (or 0640 and `group_readable: true` if its group must read it)\n",
    },
    Case {
        class: "loose secret permissions: readable by its group",
        edit: &[],
        secret_mode: Some(Some(0o640)),
        env: &[],
        stderr: "{config}:7:5: clients.x.client_secret: cannot read client secret from file {dir}/secrets/x: the file is readable by its group (mode 0640); `chmod 0600 {dir}/secrets/x`, or add `group_readable: true` to the source if that group must read it\n",
    },
    Case {
        class: "unusable CA file: no such file",
        edit: &[("    outputs:", "    ca_file: {dir}/ca.pem\n    outputs:")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:8:5: clients.x.ca_file: cannot use the TLS settings: cannot read ca_file {dir}/ca.pem: No such file or directory (os error 2); correct the path\n",
    },
    Case {
        class: "unusable CA file: not PEM",
        edit: &[("    outputs:", "    ca_file: {dir}/config.yaml\n    outputs:")],
        secret_mode: None,
        env: &[],
        stderr: "{config}:8:5: clients.x.ca_file: cannot use the TLS settings: ca_file holds no PEM certificate; name a file of `-----BEGIN CERTIFICATE-----` blocks (the CA that signed the IdP's certificate)\n",
    },
];

/// What one command did: its exit code and its stderr.
struct Refusal {
    code: Option<i32>,
    stderr: String,
}

fn check_and_once(dir: &TestDir, cfg: &str, command: &str, env: &[(String, String)]) -> Refusal {
    let o = Command::new(BIN)
        .args(["--config", cfg, command])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.path())
        .output()
        .expect("run tokend");
    Refusal {
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `run` would keep running if it accepted the configuration: it must exit within `T`.
fn run(dir: &TestDir, cfg: &str, env: &[(String, String)]) -> Refusal {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut daemon = Tokend::spawn(dir, &["--log-format", "text", "--config", cfg, "run"], &env);
    let deadline = std::time::Instant::now() + T;
    while daemon.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Still running: it accepted the configuration (and is killed when dropped).
    let code = if daemon.is_running() {
        None
    } else {
        daemon.wait(T).code()
    };
    Refusal {
        code,
        stderr: daemon.output(),
    }
}

#[test]
fn every_class_of_bad_config_is_refused_with_78_and_the_same_message_by_check_once_and_run() {
    let mut failures = Vec::new();
    for case in CASES {
        let (dir, cfg, env) = lay_out(case, "catalogue");
        let d = dir.path().display().to_string();
        let cfg = cfg.to_str().unwrap();
        let expected = case.stderr.replace("{config}", cfg).replace("{dir}", &d);
        for (command, got) in [
            ("check", check_and_once(&dir, cfg, "check", &env)),
            ("once", check_and_once(&dir, cfg, "once", &env)),
            ("run", run(&dir, cfg, &env)),
        ] {
            if got.code != Some(78) || got.stderr != expected {
                failures.push(format!(
                    "{} — tokend {command}: exit {:?}, stderr:\n{}\nexpected exit 78, stderr:\n{expected}",
                    case.class, got.code, got.stderr
                ));
            }
        }
        assert!(
            !dir.join("out").exists() && !dir.join("state").exists(),
            "{}: a refused configuration wrote something",
            case.class
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} refusals differ:\n\n{}",
        failures.len(),
        CASES.len() * 3,
        failures.join("\n\n")
    );
}

/// A secret only root may read, for a tokend that runs as `nobody`: `check --as-user nobody`
/// (run by root, who could read it) and `once` and `run` as nobody refuse it alike, with exit
/// 78. `check` can say whose file it is and whom to give it to; the others say what they met.
#[test]
fn a_secret_the_services_user_cannot_read_is_refused_with_78() {
    if !crate::running_as_root("a_secret_the_services_user_cannot_read_is_refused_with_78") {
        return;
    }
    let dir = TestDir::new("catalogue-denied");
    let d = dir.path().display().to_string();
    let secret = dir.secret("secrets/x", "catalogue-secret");
    let cfg = dir.write("config.yaml", &BASE.replace("{dir}", &d));
    crate::hand_to_nobody(&dir);
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    let cfg = cfg.to_str().unwrap();

    let check = Command::new(BIN)
        .args(["--config", cfg, "check", "--as-user", "nobody"])
        .output()
        .unwrap();
    assert_eq!(
        (check.status.code(), String::from_utf8_lossy(&check.stderr).into_owned()),
        (
            Some(78),
            format!(
                "{cfg}:7:5: clients.x.client_secret: client secret {d}/secrets/x is not readable by tokend (user nobody, uid 65534) (mode 0600, owner 0:root); `chown nobody {d}/secrets/x` (keep the mode 0600)\n"
            )
        )
    );
    let expected = format!(
        "{cfg}:7:5: clients.x.client_secret: cannot read client secret from file {d}/secrets/x: Permission denied (os error 13); tokend's user must be able to read it: make that user its owner (keep the mode 0600)\n"
    );
    let once = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", BIN])
        .args(["--config", cfg, "once"])
        .output()
        .unwrap();
    assert_eq!(
        (once.status.code(), String::from_utf8_lossy(&once.stderr).into_owned()),
        (Some(78), expected.clone())
    );
    let mut run = Tokend::spawn_as(&dir, 65534, &["--config", cfg, "run"]);
    assert_eq!((run.wait(T).code(), run.output()), (Some(78), expected));
}

/// A reload is held to what a start is: a configuration whose secret has become loose is
/// rejected with the same message, and the running one keeps serving its token (which a restart
/// would not: it would refuse to start, so the operator hears of it now).
#[test]
fn a_reload_with_a_loose_secret_is_rejected_and_the_running_configuration_stays() {
    let dir = TestDir::new("catalogue-reload");
    let issuer = Issuer::start(&dir, &[("app", "catalogue-secret")], "1h");
    let d = dir.path().display().to_string();
    let secret = dir.secret("secrets/x", "catalogue-secret");
    let yaml = BASE
        .replace("{dir}", &d)
        .replace(
            "socket: { enabled: false }",
            &format!("socket: {{ path: {d}/tokend.sock }}"),
        )
        .replace("http://127.0.0.1:9/token", &issuer.token_url())
        .replace("client_id: a", "client_id: app");
    let cfg = dir.write("config.yaml", &yaml);
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let token = read(&dir.join("out/x.token")).unwrap();

    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    // A change the reload would apply: a second output.
    fs::write(
        &cfg,
        yaml.replace(
            "/out/x.token\n",
            "/out/x.token\n      - path: {d}/out/x2.token\n"
                .replace("{d}", &d)
                .as_str(),
        ),
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_event(T, "the rejected reload", |e| is(e, "reload", "rejected"));
    let cfg = cfg.display();
    let refused = format!(
        "invalid configuration: {cfg}:7:5: clients.x.client_secret: cannot read client secret from file {d}/secrets/x: the file is readable by every user (mode 0644); `chmod 0600 {d}/secrets/x` (or 0640 and `group_readable: true` if its group must read it)"
    );
    assert!(
        daemon
            .events()
            .iter()
            .any(|e| e["message"].as_str() == Some(refused.as_str())),
        "{refused}\nin\n{}",
        daemon.output()
    );
    assert!(
        !dir.join("out/x2.token").exists(),
        "the new configuration was not applied"
    );
    assert_eq!(socket_status(&socket, "/v1/tokens/x"), Some(200));
    assert_eq!(read(&dir.join("out/x.token")), Some(token));
    assert!(daemon.stop().success());
}
