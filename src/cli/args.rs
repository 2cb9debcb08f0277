//! The command line: every command and flag, as clap derives them. `main.rs` runs them; the man
//! pages and shell completions under `packaging/` are generated from these definitions (and a
//! test keeps them in sync).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cli::dev;
use crate::config::{self, DEFAULT_CONFIG_PATH};
use crate::logging::LogFormat;

/// Keeps OAuth 2.0 client-credentials tokens fresh and publishes them to files.
#[derive(Debug, Parser)]
#[command(name = "tokend", version, about, after_long_help = TOKEND_NOTES)]
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

/// The notes after `tokend --help` (and in tokend(1)).
const TOKEND_NOTES: &str = "\
Files:
  /etc/tokend/config.yaml   the configuration (--config, $TOKEND_CONFIG)
  /run/tokend/              token files and the socket (tokend.sock), under the packaged unit
  /var/lib/tokend/          the last token of each client, reused after a restart ($STATE_DIRECTORY)

Exit status: 0 success; 1 failure; 78 (EX_CONFIG) invalid configuration, or a secret, key,
certificate or CA file it names that cannot be read or is readable by others. `get` and `status` also
use 69 (cannot reach the socket), 75 (no valid token yet) and 77 (not a reader of that client).

Under systemd: `systemctl reload tokend` reloads the configuration (SIGHUP); the unit stays
inactive until the configuration lists a client. Full documentation:
/usr/share/doc/tokend/README.md.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (SIGHUP reloads, SIGTERM stops).
    #[command(after_long_help = "\
Signals: SIGHUP validates the new configuration, then restarts only the clients that changed (a
broken configuration is logged and ignored); SIGTERM and SIGINT stop after writes in progress.

Under systemd (Type=notify) tokend reports READY once every client has had its first attempt,
keeps STATUS= current, and pings the watchdog from its main loop. When stderr is the journal,
each log line carries its priority, so `journalctl -u tokend -p warning` shows the warnings.

At start-up an invalid configuration, or a secret, key, certificate or CA file that cannot be read
or is readable by others, exits 78 (EX_CONFIG; the packaged unit does not restart for it), with
the same message as `tokend check`; a reload with one is rejected and the running configuration
stays. A source that stops being readable later fails only that client's refreshes.

--watch-config reloads when the file's content changes, as a Kubernetes ConfigMap update does
(the kubelet swaps a symlink, and sends no signal); a broken file is rejected as on SIGHUP.")]
    Run {
        /// Also reload when the configuration file changes (for Kubernetes ConfigMaps).
        #[arg(long, env = "TOKEND_WATCH_CONFIG", value_parser = clap::builder::BoolishValueParser::new())]
        watch_config: bool,
    },
    /// Validate the configuration, secrets and output directories, and print the plan.
    #[command(after_long_help = "\
Permissions are judged for the service's user: run as root, check looks at the files as the
`tokend` user and its groups would (or --as-user), not as root, which may read anything.
Nothing is sent over the network unless --connect asks for it.

Exit status: 0 fine; 1 a problem that would stop tokend from working once it runs (a directory
it cannot write, an owner or group it cannot set, with --connect an endpoint it cannot reach or
whose certificate it does not trust); 78 (EX_CONFIG) what `run` and `once` refuse to start with,
with the same message: an invalid configuration, or a secret, key, certificate or CA file that
the service's user cannot read or use, or that others may read.")]
    Check {
        /// Judge file permissions for this user and its groups [default: the service's user
        /// `tokend` when run as root and that user exists, else the caller].
        #[arg(long, value_name = "USER")]
        as_user: Option<String>,
        /// Also reach each token endpoint (and issuer) over the network, as a request would:
        /// DNS, proxy, TLS with `ca_file` and any client certificate. No credentials are sent.
        #[arg(long)]
        connect: bool,
    },
    /// Fetch missing or due tokens, write the outputs, and exit (0 if every client has a valid token).
    #[command(after_long_help = "\
For cron jobs and init containers: a still-valid saved token is reused without a request.
Exit status: 0 every client has a valid token and every output was written; 1 otherwise; 78 the
configuration is invalid, or a secret, key, certificate or CA file cannot be read or is loose
(as `check` says).")]
    Once {
        /// Request a new token for every client, even if the current one is still fresh.
        #[arg(long)]
        force: bool,
    },
    /// Print a client's token, read through the socket (for `TOKEN=$(tokend get NAME)`).
    #[command(after_long_help = "\
Exit status: 0 the token was printed; 1 no such client; 69 (EX_UNAVAILABLE) the socket cannot be
reached; 75 (EX_TEMPFAIL) no valid token yet, or none within --timeout; 77 (EX_NOPERM) the caller
is not a reader of this client.")]
    Get {
        /// The client's name.
        name: String,
        /// Wait until the client has a valid token (at most --timeout).
        #[arg(long)]
        wait: bool,
        /// How long --wait may block.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the token's JSON document (access_token, token_type, expires_in, scope,
        /// expires_at, expires_at_unix, issued_at), the same as a `format: json` file.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show every client's state, expiry, next refresh and last error, read through the socket.
    #[command(after_long_help = "\
Only the clients the caller may read are shown. Exit status as for `tokend get`.")]
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Ask the running daemon, through the socket, whether it is alive or ready (exit 0 if so).
    #[command(after_long_help = "\
For health checks that run a command, such as Kubernetes exec probes: `live` asks whether the
daemon's main loop runs (GET /healthz), `ready` whether every client has a valid token (GET
/readyz). Exit status: 0 yes; 1 no, with the reason on stderr; 69 (EX_UNAVAILABLE) the socket
cannot be reached.")]
    Probe {
        /// What to ask.
        #[arg(value_enum)]
        check: ProbeCheck,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Run a local development issuer and the daemon against it (never for production).
    Dev(dev::DevArgs),
    /// Create directories and give them an owner and a mode, then exit: for a Kubernetes init
    /// container with only CAP_CHOWN, since a hostPath directory is created owned by root.
    #[command(hide = true)]
    PrepareDirs {
        /// The owner, as numeric `UID:GID`.
        #[arg(long, value_name = "UID:GID")]
        owner: String,
        /// `PATH:MODE`, such as `/run/tokend:0755`.
        #[arg(required = true, value_name = "PATH:MODE")]
        dirs: Vec<String>,
    },
    /// Print the configuration file's JSON Schema, for editors that validate and complete YAML.
    #[command(after_long_help = "\
With the YAML language server (VS Code, Neovim, JetBrains and others), the first line of the
configuration names the schema:
  # yaml-language-server: $schema=/usr/share/tokend/tokend-config.schema.json
(the file the Debian package installs; or `tokend schema > tokend-config.schema.json` and a
path relative to the configuration file). The schema checks each key and value alone; `tokend
check` also checks what depends on other keys, files, users and the environment.")]
    Schema,
    /// Fleet mode's tools.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Exit 0 if the configuration lists at least one client, 1 if it lists none yet (the
    /// packaged example). For the unit's ExecCondition=: an installed but unconfigured tokend
    /// stays inactive instead of failing. A file that cannot be read or parsed counts as
    /// configured, so that `run` reports what is wrong with it.
    Configured,
}

/// `tokend fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Print a new random fleet key (32 bytes, base64) for `fleet.key`: write it to a file only
    /// tokend's user may read, the same on every host of the fleet.
    #[command(after_long_help = "\
Example:
  umask 077; tokend fleet keygen > /etc/tokend/secrets/fleet.key
  chown tokend /etc/tokend/secrets/fleet.key

Equivalent: openssl rand -base64 32. Every host of a fleet needs the same key; a host with
another key publishes nothing from the store.")]
    Keygen,
}

/// What `tokend probe` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeCheck {
    /// The daemon's main loop runs.
    Live,
    /// Every client has a valid token.
    Ready,
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
