//! The command line: every command and flag, as clap derives them. `main.rs` runs them; the man
//! pages and shell completions under `packaging/` are generated from these definitions (and a
//! test keeps them in sync).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{self, DEFAULT_CONFIG_PATH};
use crate::dev;
use crate::logging::LogFormat;

/// Keeps OAuth 2.0 client-credentials tokens fresh and publishes them to files.
#[derive(Debug, Parser)]
#[command(name = "tokend", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "TOKEND_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level for tokend's own messages (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: tracing::Level,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (SIGHUP reloads, SIGTERM stops).
    Run,
    /// Validate the configuration, secrets and output directories, and print the plan.
    Check,
    /// Fetch missing or due tokens, write the outputs, and exit (0 if every client has a valid token).
    Once {
        /// Request a new token for every client, even if the current one is still fresh.
        #[arg(long)]
        force: bool,
    },
    /// Print a client's token, read through the socket (for `TOKEN=$(tokend get NAME)`).
    Get {
        /// The client's name.
        name: String,
        /// Wait until the client has a valid token (at most --timeout).
        #[arg(long)]
        wait: bool,
        /// How long --wait may block.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the JSON form (token, type, expires_at, expires_in, scope, version).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show every client's state, expiry, next refresh and last error, read through the socket.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Run a local development issuer and the daemon against it (never for production).
    Dev(dev::DevArgs),
}

#[derive(Debug, clap::Args)]
pub struct SocketArg {
    /// The socket to talk to [default: socket.path from --config if readable, else /run/tokend/tokend.sock].
    #[arg(long, env = "TOKEND_SOCKET")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    /// The socket path, and a note when it is the default because the config was unreadable.
    pub fn resolve(&self, config: &Path) -> (PathBuf, Option<String>) {
        if let Some(path) = &self.socket {
            return (path.clone(), None);
        }
        match config::load(config) {
            Ok(c) => (
                c.socket
                    .map_or_else(|| PathBuf::from(config::DEFAULT_SOCKET_PATH), |s| s.path),
                None,
            ),
            Err(_) => (
                PathBuf::from(config::DEFAULT_SOCKET_PATH),
                Some(format!(
                    "{} could not be read, so the default socket path was used; pass --socket or set TOKEND_SOCKET",
                    config.display()
                )),
            ),
        }
    }
}
