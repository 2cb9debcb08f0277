//! The daemon: `tokend run` (`run`: the socket, the refresh tasks and the proxies, served until
//! a stop, with reloads on SIGHUP or a changed file) and `tokend once` (`once`). `tasks` owns
//! the refresh tasks, one per group, and replaces them on a reload (`reload` says what
//! changed); `cleanup` clears what killed runs and changed grants left before tasks start;
//! `preflight` reads every secret a configuration names before it is used; `systemd` and
//! `status_line` tell the service manager; `config_watch` sees the file change; `memory` hands
//! freed memory back after peaks.

mod cleanup;
pub(crate) mod config_watch;
pub(crate) mod memory;
mod once;
pub(crate) mod preflight;
mod reload;
mod run;
mod sources;
pub(crate) mod status_line;
pub(crate) mod systemd;
mod tasks;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use crate::config::identity::Identity;
use crate::config::{self, Config, ConfigError};

pub use once::once;
pub use run::run;
pub use tasks::{Daemon, Reload};

/// Why tokend stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How long a reload waits for the tasks it stops (each finishes the file it is writing), and a
/// stop for every task, before going on without them: a write hung on a stuck file system must
/// not hold up the new configuration, nor keep systemd waiting.
pub const STOPPED_TASKS_WAIT: Duration = Duration::from_secs(10);

/// Loads the configuration and reads every secret, key, certificate and CA file it names
/// (`preflight`): what `once` starts from, and `run` (and a reload) after `load_applicable`.
pub fn load_usable(config_path: &Path) -> Result<Config, ConfigError> {
    let config = config::load(config_path)?;
    preflight::credentials(&config)?;
    Ok(config)
}

/// Loads a usable configuration and checks that this process can apply it: a socket group it is
/// not in is a configuration error (exit 78), not a failure worth restarting for.
fn load_applicable(config_path: &Path) -> Result<Config, ConfigError> {
    let config = load_usable(config_path)?;
    match Identity::current().cannot_serve(&config) {
        Some(problem) => Err(ConfigError::single(config_path, "socket.group", problem)),
        None => Ok(config),
    }
}
