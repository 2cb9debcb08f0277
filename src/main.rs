//! The `tokend` command: parse the command line, set up logging and the runtime, run the chosen
//! command, map the outcome to an exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use tokend::app::{self, AppError};
use tokend::config::{self, DEFAULT_CONFIG_PATH};
use tokend::logging::{self, LogFormat};
use tokend::socket_client::{self, CliError};
use tokend::{check, dev};

/// sysexits.h EX_CONFIG: the configuration is invalid.
const EX_CONFIG: u8 = 78;

/// Keeps OAuth 2.0 client-credentials tokens fresh and publishes them to files.
#[derive(Debug, Parser)]
#[command(name = "tokend", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "TOKEND_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level for tokend's own messages (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
struct SocketArg {
    /// The socket to talk to [default: socket.path from --config if readable, else /run/tokend/tokend.sock].
    #[arg(long, env = "TOKEND_SOCKET")]
    socket: Option<PathBuf>,
}

impl SocketArg {
    /// The socket path, and a note when it is the default because the config was unreadable.
    fn resolve(&self, config: &Path) -> (PathBuf, Option<String>) {
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

fn main() -> ExitCode {
    // A panic anywhere must take the whole daemon down (and let systemd restart it) rather than
    // leave a process running with a dead refresh task.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));

    let cli = Cli::parse();
    logging::init(cli.log_format, cli.log_level);

    if let Command::Check = cli.command {
        return run_check(&cli.config);
    }
    if let Command::Get { .. } | Command::Status { .. } = cli.command {
        return run_socket_command(&cli);
    }
    // File writes (with fsync) and DNS lookups run on blocking threads. The cap keeps a burst of
    // refreshes from spawning a thread per client, yet leaves room for a few hung writes (a stuck
    // NFS mount) without holding up everyone else's.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => app::run(&cli.config, CancellationToken::new()).await.map(|()| true),
            Command::Once { force } => app::once(config::load(&cli.config)?, force).await,
            Command::Dev(args) => dev::run(args, CancellationToken::new()).await.map(|()| true),
            Command::Check | Command::Get { .. } | Command::Status { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(AppError::Config(e)) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("tokend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `get` and `status`: a current-thread runtime is plenty for one request.
fn run_socket_command(cli: &Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut note = None;
    let result: Result<(), CliError> = runtime.block_on(async {
        match &cli.command {
            Command::Get {
                name,
                wait,
                timeout,
                json,
                socket,
            } => {
                let (socket, why) = socket.resolve(&cli.config);
                note = why;
                let body = socket_client::get(&socket, name, wait.then_some(*timeout), *json).await?;
                let mut out = std::io::stdout().lock();
                // Ignored: a closed stdout (`tokend get x | head -c0`) is not tokend's failure.
                let _ = out.write_all(&body).and_then(|()| out.write_all(b"\n"));
                Ok(())
            }
            Command::Status { json, socket } => {
                let (socket, why) = socket.resolve(&cli.config);
                note = why;
                let clients = socket_client::status(&socket).await?;
                if *json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({ "clients": clients })).unwrap_or_default()
                    );
                } else {
                    print!("{}", socket_client::status_table(&clients));
                }
                Ok(())
            }
            _ => unreachable!("only socket commands come here"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokend: {e}");
            if let (CliError::Unavailable { .. }, Some(note)) = (&e, note) {
                eprintln!("tokend: note: {note}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_check(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let report = check::check(&config);
    print!("{}", report.text);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for p in &report.problems {
        eprintln!("problem: {p}");
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} problem{} found",
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    }
}
