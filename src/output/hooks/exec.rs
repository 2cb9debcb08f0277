//! `exec` hooks: a command, run without a shell, in a process group of its own, with an
//! environment made from nothing (tokend's own may hold secrets: `client_secret: { env }`).

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{Event, Reason, RunEnded};
use crate::config::{Hook, HookAction};
use crate::token::{rfc3339, unix_millis};

/// After the timeout, the group gets SIGTERM, then this long to exit before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
/// The end of a failed command's stderr that is logged.
const STDERR_TAIL: usize = 2048;
/// `PATH` when tokend itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub async fn run(hook: &Hook, event: &Event, stop: &CancellationToken) -> RunEnded {
    let HookAction::Exec {
        argv,
        working_directory,
        user,
        token_variable,
        environment,
    } = &hook.action
    else {
        return RunEnded::Failed("not an exec hook".into());
    };
    // Checked when the configuration was loaded, and again now: a command someone else has
    // since made writable, or moved under a directory of theirs, is not run.
    if let Some(why) =
        crate::config::identity::others_may_change(std::path::Path::new(&argv[0]), nix::unistd::geteuid().as_raw())
    {
        return RunEnded::Failed(format!("not run: {why}"));
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()))
        .env("TOKEND_CLIENT", event.client.as_str())
        .env("TOKEND_OUTPUTS", join_paths(&event.outputs))
        .env("TOKEND_EXPIRES_AT", rfc3339(event.token.expires_at))
        .env(
            "TOKEND_EXPIRES_AT_UNIX",
            (unix_millis(event.token.expires_at) / 1000).to_string(),
        )
        .env("TOKEND_TOKEN_VERSION", event.version.to_string())
        .env(
            "TOKEND_REASON",
            match event.why {
                Reason::New => "new",
                Reason::Reused => "reused",
            },
        )
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(variable) = token_variable {
        cmd.env(variable, event.token.access_token.expose_secret());
    }
    if let Some(dir) = working_directory {
        cmd.current_dir(dir);
    }
    if let Some(user) = user {
        // std drops every supplementary group when root switches user (setgroups(0)); the
        // command keeps the user's primary group only.
        let gid = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(user.id)) {
            Ok(Some(u)) => u.gid.as_raw(),
            Ok(None) => return RunEnded::Failed(format!("there is no user with uid {}", user.id)),
            Err(e) => return RunEnded::Failed(format!("cannot look up uid {}: {e}", user.id)),
        };
        cmd.uid(user.id).gid(gid);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return RunEnded::Failed(format!("cannot run {}: {e}", argv[0])),
    };
    let group = child.id().map(|id| GroupGuard(Pid::from_raw(id as i32)));
    let mut stderr = child.stderr.take();
    // Read on a task of its own: a background process the command started may keep stderr open
    // after the command exits, and must not keep the hook "running".
    let mut tail = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        if let Some(stderr) = stderr.as_mut() {
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                }
            }
        }
        kept
    });
    let status = {
        let status = tokio::select! {
            status = child.wait() => Some(status),
            _ = tokio::time::sleep(hook.timeout) => None,
            _ = stop.cancelled() => None,
        };
        if status.is_none() {
            // Past the timeout (or stopping): the whole group, politely, then not.
            if let Some(g) = &group {
                let _ = killpg(g.0, Signal::SIGTERM);
            }
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                if let Some(g) = &group {
                    let _ = killpg(g.0, Signal::SIGKILL);
                }
                let _ = child.wait().await;
            }
        }
        status
    };
    let stderr = match tokio::time::timeout(Duration::from_millis(500), &mut tail).await {
        Ok(Ok(kept)) => kept,
        _ => {
            tail.abort();
            Vec::new()
        }
    };
    if let Some(mut g) = group {
        g.disarm();
    }
    match status {
        None if stop.is_cancelled() => RunEnded::Failed("stopped with tokend".into()),
        None => RunEnded::TimedOut,
        Some(Err(e)) => RunEnded::Failed(format!("cannot wait for {}: {e}", argv[0])),
        Some(Ok(s)) if s.success() => RunEnded::Ok,
        Some(Ok(s)) => {
            let said = String::from_utf8_lossy(&stderr);
            let said = said.trim();
            let said = if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            };
            RunEnded::Failed(format!("{} exited with {s}{said}", argv[0]))
        }
    }
}

/// The output paths, `:`-separated as PATH is.
fn join_paths(paths: &[std::path::PathBuf]) -> std::ffi::OsString {
    let mut joined = std::ffi::OsString::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(p);
    }
    joined
}

/// Kills the command's process group if the run is abandoned (the task dropped mid-run).
struct GroupGuard(Pid);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = Pid::from_raw(0);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0.as_raw() > 0 {
            let _ = killpg(self.0, Signal::SIGKILL);
        }
    }
}
