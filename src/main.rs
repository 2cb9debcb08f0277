//! The `tokend` command: parse the command line, set up logging and the runtime, run the chosen
//! command, map the outcome to an exit status.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use tokend::cli::client::{self, CliError};
use tokend::cli::{Cli, Command, FleetCommand, ProbeCheck, SocketArg};
use tokend::cli::{check, dev, prepare_dirs};
use tokend::config;
use tokend::daemon::{self, AppError};
use tokend::logging;
use tracing::Level;

/// sysexits.h EX_CONFIG: the configuration is invalid.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    // A panic anywhere must take the whole daemon down (and let systemd restart it) rather than
    // leave a process running with a dead refresh task.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));

    // rustls takes its crypto from the process: reqwest passes its own, the fleet's Redis
    // client does not. Ignored: it fails only if a provider is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let Cli {
        config,
        log_format,
        log_level,
        command,
    } = Cli::parse();
    logging::init(log_format, log_level);
    match command {
        Command::Check { as_user, connect } => run_check(&config, as_user.as_deref(), connect),
        Command::Fleet(FleetCommand::Keygen) => {
            let key = tokend::fleet::seal::FleetKey::generate();
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", secrecy::ExposeSecret::expose_secret(&key)).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    logging::eprint_lines(Level::ERROR, &format!("tokend: cannot write the key: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Configured => match config::lists_clients(&config) {
            Some(false) => {
                logging::eprint_lines(
                    Level::INFO,
                    &format!(
                        "tokend: {} lists no clients yet, so there is nothing to run; add one (see tokend(1)), then start tokend again",
                        config.display()
                    ),
                );
                ExitCode::FAILURE
            }
            Some(true) | None => ExitCode::SUCCESS,
        },
        Command::Run { watch_config } => on_runtime(daemon::run(&config, watch_config, CancellationToken::new())),
        Command::PrepareDirs { owner, dirs } => match prepare_dirs::dirs(&owner, &dirs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                logging::eprint_lines(Level::ERROR, &format!("tokend: {e}"));
                ExitCode::FAILURE
            }
        },
        Command::Once { force } => on_runtime(async {
            let all_valid = daemon::once(daemon::load_usable(&config)?, force).await?;
            Ok(if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
        Command::Dev(args) => on_runtime(dev::run(args, CancellationToken::new())),
        Command::Get {
            name,
            wait,
            timeout,
            json,
            socket,
        } => socket_command(&config, &socket, async |path| {
            let body = client::get(path, &name, wait.then_some(timeout), json).await?;
            let mut out = std::io::stdout().lock();
            // Ignored: a closed stdout (`tokend get x | head -c0`) is not tokend's failure.
            let _ = out.write_all(&body).and_then(|()| out.write_all(b"\n"));
            Ok(())
        }),
        Command::Probe { check, socket } => socket_command(&config, &socket, async |path| {
            client::probe(path, check == ProbeCheck::Ready).await
        }),
        Command::Status { json, socket } => socket_command(&config, &socket, async |path| {
            let status = client::status(path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                print!("{}", client::status_table(&status));
            }
            Ok(())
        }),
    }
}

/// The commands that run tokend's tasks (`run`, `once`, `dev`). File writes (with fsync) and DNS
/// lookups run on blocking threads; the cap keeps a burst of refreshes from spawning a thread per
/// client, yet leaves room for a few hung writes (a stuck NFS mount) without holding up the rest.
/// A worker takes at most 32 ready sockets from each poll (tokio's default is 1,024): with
/// hundreds of busy socket connections, readiness is handed out in smaller batches, so fewer
/// connections wait behind one long batch; the 256-connection p99 was about a fifth shorter in
/// two sets of runs (BENCHMARKS.md, "Socket API against nginx").
fn on_runtime<T: Into<Exit>>(job: impl Future<Output = Result<T, AppError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .max_io_events_per_tick(32)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::eprint_lines(Level::ERROR, &format!("tokend: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(job);
    // A blocking thread still stuck in a write (a hung file system, already reported) must not
    // keep the process from exiting: dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(done) => done.into().0,
        Err(AppError::Config(e)) => {
            logging::eprint_lines(Level::ERROR, &e.to_string());
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            logging::eprint_lines(Level::ERROR, &format!("tokend: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// How a command that ran to its end exits: `run` and `dev` with success, `once` as it says.
struct Exit(ExitCode);

impl From<()> for Exit {
    fn from((): ()) -> Exit {
        Exit(ExitCode::SUCCESS)
    }
}

impl From<ExitCode> for Exit {
    fn from(code: ExitCode) -> Exit {
        Exit(code)
    }
}

/// `get` and `status`: one request to the socket; a current-thread runtime is plenty.
fn socket_command(
    config: &Path,
    socket: &SocketArg,
    request: impl AsyncFnOnce(&Path) -> Result<(), CliError>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (path, note) = socket.resolve(config);
    match runtime.block_on(request(&path)) {
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

fn run_check(path: &Path, as_user: Option<&str>, connect: bool) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let who = match check::service_identity(as_user) {
        Ok(who) => who,
        Err(e) => {
            eprintln!("tokend: --as-user: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let check::Report {
        text,
        config: refused,
        problems,
        warnings,
    } = check::check(&config, &who, connect);
    print!("{text}");
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    // Exactly as `run` and `once` would refuse to start.
    let is_refused = !refused.is_empty();
    if is_refused {
        let refused = config::ConfigError {
            file: config.source.clone(),
            problems: refused,
        };
        eprintln!("{refused}");
    }
    for p in &problems {
        eprintln!("problem: {p}");
    }
    if !problems.is_empty() {
        eprintln!(
            "{} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
    }
    if is_refused {
        ExitCode::from(EX_CONFIG)
    } else if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
