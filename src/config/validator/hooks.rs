//! What runs after a refresh: `exec` hooks (a command, no shell) and `signal` hooks (a pid file).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::outputs::is_env_name;
use super::{ClientCtx, Kind, Validator};
use crate::config::model::{DEFAULT_HOOK_RETRIES, DEFAULT_HOOK_TIMEOUT, Hook, HookAction};
use crate::config::raw::RawHook;

/// No hook may take longer than this, nor retry more often.
const MAX_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
const MAX_HOOK_RETRIES: u32 = 10;

impl Validator<'_> {
    pub(super) fn hooks(&mut self, cx: &ClientCtx<'_>) -> Option<Vec<Hook>> {
        let mut hooks = Vec::new();
        let mut ok = true;
        for (i, raw) in cx.merged.hooks.clone().unwrap_or_default().into_iter().enumerate() {
            match self.hook(cx.n, i, raw) {
                Some(hook) => hooks.push(hook),
                None => ok = false,
            }
        }
        ok.then_some(hooks)
    }

    fn hook(&mut self, n: &str, i: usize, raw: RawHook) -> Option<Hook> {
        let index = i.to_string();
        let key = |k: &'static str| -> Vec<&str> {
            let mut v = vec!["clients", n, "hooks", index.as_str()];
            if !k.is_empty() {
                v.push(k);
            }
            v
        };
        let timeout = raw.timeout.map_or(DEFAULT_HOOK_TIMEOUT, |s| s.0);
        let mut ok = true;
        if timeout.is_zero() || timeout > MAX_HOOK_TIMEOUT {
            self.problem(&key("timeout"), "a hook's `timeout` must be between 1s and 1h");
            ok = false;
        }
        let retries = raw.retries.unwrap_or(DEFAULT_HOOK_RETRIES);
        if retries > MAX_HOOK_RETRIES {
            self.problem(&key("retries"), format!("at most {MAX_HOOK_RETRIES} `retries`"));
            ok = false;
        }
        let action = match (raw.exec, raw.signal) {
            (Some(_), Some(_)) => {
                self.problem(
                    &key("signal"),
                    "a hook either runs a command (`exec`) or sends a `signal`, not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    &key(""),
                    "a hook needs `exec: [/abs/command, args…]` or `signal: SIGHUP` with `pid_file`",
                );
                return None;
            }
            (Some(argv), None) => {
                if raw.pid_file.is_some() {
                    self.problem(&key("pid_file"), "`pid_file` goes with `signal`, not `exec`");
                    ok = false;
                }
                match argv.first() {
                    None => {
                        self.problem(&key("exec"), "`exec` needs at least the command");
                        ok = false;
                    }
                    Some(command) if !Path::new(command).is_absolute() => {
                        self.problem(
                            &key("exec"),
                            format!(
                                "`{command}` must be an absolute path (hooks run without a shell and do not search PATH), such as `/usr/bin/{command}`"
                            ),
                        );
                        ok = false;
                    }
                    Some(_) => {}
                }
                let working_directory = match raw.working_directory {
                    Some(d) if !Path::new(&d).is_absolute() => {
                        self.problem(&key("working_directory"), format!("`{d}` must be an absolute path"));
                        ok = false;
                        None
                    }
                    other => other.map(PathBuf::from),
                };
                let user = match raw.user {
                    Some(spec) => {
                        let owner = self.owner(&key("user"), spec, Kind::User);
                        ok &= owner.is_some();
                        owner
                    }
                    None => None,
                };
                let token_variable = match raw.token_variable {
                    Some(v) if !is_env_name(&v) => {
                        self.problem(
                            &key("token_variable"),
                            format!("`{v}` is not a valid environment variable name"),
                        );
                        ok = false;
                        None
                    }
                    other => other,
                };
                let mut environment = Vec::new();
                for (name, value) in raw.environment.unwrap_or_default() {
                    if !is_env_name(&name) || name.starts_with("TOKEND_") {
                        self.problem(
                            &key("environment"),
                            format!("`{name}` is not a variable a hook may set (a valid name, not TOKEND_…)"),
                        );
                        ok = false;
                    }
                    environment.push((name, value));
                }
                HookAction::Exec {
                    argv,
                    working_directory,
                    user,
                    token_variable,
                    environment,
                }
            }
            (None, Some(name)) => {
                for (given, k) in [
                    (raw.working_directory.is_some(), "working_directory"),
                    (raw.user.is_some(), "user"),
                    (raw.token_variable.is_some(), "token_variable"),
                    (raw.environment.is_some(), "environment"),
                ] {
                    if given {
                        self.problem(&key(k), format!("`{k}` goes with `exec`, not `signal`"));
                        ok = false;
                    }
                }
                let upper = name.to_ascii_uppercase();
                let full = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                let signal = match nix::sys::signal::Signal::from_str(&full) {
                    Ok(s) if !matches!(s, nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP) => {
                        Some(s as i32)
                    }
                    _ => {
                        self.problem(
                            &key("signal"),
                            format!("`{name}` is not a signal a hook may send (such as SIGHUP, SIGUSR1, SIGTERM)"),
                        );
                        None
                    }
                };
                let pid_file = match raw.pid_file {
                    None => {
                        self.problem(
                            &key("signal"),
                            "`signal` needs `pid_file`, the file holding the process's pid (for a systemd unit, use `exec: [/usr/bin/systemctl, kill, --kill-whom=main, --signal=SIGHUP, app.service]`)",
                        );
                        None
                    }
                    Some(p) if !Path::new(&p).is_absolute() => {
                        self.problem(&key("pid_file"), format!("`{p}` must be an absolute path"));
                        None
                    }
                    Some(p) => Some(PathBuf::from(p)),
                };
                HookAction::Signal {
                    signal: signal?,
                    name: full,
                    pid_file: pid_file?,
                }
            }
        };
        ok.then_some(Hook {
            action,
            timeout,
            retries,
            on_reuse: raw.on_reuse.unwrap_or(false),
        })
    }
}
