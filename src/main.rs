//! The `tokend` command: parse the command line, set up logging and the runtime, run the chosen
//! command, map the outcome to an exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use tokend::app::{self, AppError};
use tokend::config::{self, DEFAULT_CONFIG_PATH};
use tokend::logging::{self, LogFormat};
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
    /// Run a local development issuer and the daemon against it (never for production).
    Dev(dev::DevArgs),
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
            Command::Check => unreachable!("handled above"),
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
