//! Integration tests: the real `tokend` binary against the development issuer running as its own
//! process on loopback, with real files and real signals. Each test uses its own directory
//! (`util::TestDir`), its own issuer (`util::Issuer`) and its own daemon (`util::Daemon`).
//!
//! Where each behaviour is tested, and where a new test goes:
//!
//! | behaviour | module |
//! |---|---|
//! | token files: formats, modes, owners, symlinks, umask, an output failing alone | `outputs` |
//! | getting and refreshing tokens: lifetimes, backoff, `Retry-After`, shared requests, discovery | `refresh` |
//! | each IdP fault switched on and off, and never hammering the IdP | `idp_faults` |
//! | what real IdPs do: bare refusals, undecoded Basic, narrowed scopes, `token_type` | `idp_quirks` |
//! | restarts: saved tokens reused, state files of the previous release | `restart` |
//! | reloads: SIGHUP, unchanged clients, writes in progress, hung file systems | `reload` |
//! | secrets: files, env, credentials, rotation; never in an output or a log | `secrets` |
//! | time: clocks that step or go back, skewed IdPs | `time` |
//! | the socket API: readers, caps, hostile callers, socket groups | `socket_api` |
//! | consumers: templates, hooks, the token proxy | `consumers` |
//! | torn reads, and crashes mid-write | `torn_reads`, `crash` |
//! | storage faults: full, read-only, deleted directories | `storage_faults` |
//! | configuration errors, each refused alike by check, once and run | `config_catalogue` |
//! | the configuration's JSON Schema: up to date, and agreeing with check | `schema` |
//! | systemd notifications, the journal, stop signals | `systemd` |
//! | the command line: check, dev, logs; a newcomer's first hour (`cli::newcomer`) | `cli` |
//! | man pages and completions generated from the command line | `generated` |
//! | fleet mode with Redis, Sentinel, TLS, ACLs | `fleet` |
//! | the shape of the source tree (no cycles, layers) | `architecture` |
//! | the Debian package booted, the image and pods, interop servers, soak, Prometheus alerts and the dashboard | `environments` |
//! | the user's documentation: links that lead somewhere, examples `check` accepts | `docs` |
//!
//! A new test goes into the module of the behaviour it shows (a new module, added here, for a new
//! behaviour). Helpers that more than one module uses live in `util` (or, for the few every
//! module shares, below: `SECRET`, `T`, `config`, `out`, `running_as_root`, `hand_to_nobody`).
//! The token server is `tokend-test-issuer` (`support/test_issuer`), which can be told to fail.

mod architecture;
mod cli;
mod config_catalogue;
mod consumers;
mod crash;
mod docs;
mod environments;
mod fleet;
mod generated;
mod idp_faults;
mod idp_quirks;
mod outputs;
mod refresh;
mod reload;
mod restart;
mod schema;
mod secrets;
mod socket_api;
mod storage_faults;
mod systemd;
mod time;
mod torn_reads;
mod util;

use std::fs;
use std::time::Duration;

use util::*;

const SECRET: &str = "s3cret+with/odd=chars&more";
const T: Duration = Duration::from_secs(15);

/// A one-client config: `extra` is indented under the client, `outputs` is a YAML flow list.
fn config(dir: &TestDir, issuer: &Issuer, clients: &[(&str, &str)]) -> std::path::PathBuf {
    let secret = dir.secret("secret", SECRET);
    let mut yaml = format!(
        "state_dir: {state}\nsocket: {{ path: {socket} }}\ndefaults:\n  token_url: {url}\n  client_id: app\n  client_secret: {{ file: {secret} }}\n  retry: {{ initial: 200ms, max: 3s }}\nclients:\n",
        state = dir.join("state").display(),
        socket = dir.join("tokend.sock").display(),
        url = issuer.token_url(),
        secret = secret.display()
    );
    for (name, body) in clients {
        yaml.push_str(&format!("  {name}:\n"));
        for line in body.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    dir.write("config.yaml", &yaml)
}

fn out(dir: &TestDir, name: &str) -> String {
    dir.join(&format!("out/{name}")).display().to_string()
}

/// Tests that change users need root. CI runs as root and sets TOKEND_REQUIRE_ROOT_TESTS=1, so
/// there they can never be skipped silently.
fn running_as_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("TOKEND_REQUIRE_ROOT_TESTS").is_none(),
        "{test} needs root"
    );
    eprintln!("SKIPPED {test}: needs root (set TOKEND_REQUIRE_ROOT_TESTS=1 to make this an error)");
    false
}

/// Lets uid 65534 into the test directory and its files.
fn hand_to_nobody(dir: &TestDir) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(dir.path()) {
        std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![root.to_owned()];
    if root.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
}
