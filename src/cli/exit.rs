//! The `tokend` command from start to end: parse the command line, set up logging and the
//! runtime, run the chosen command, and turn how it ended into the exit status (`main`, the one
//! place that does).

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::client::{self, CliError};
use super::{Cli, Command, FleetCommand, ProbeCheck, SocketArg};
use super::{check, dev, prepare_dirs};
use crate::config;
use crate::daemon::{self, AppError};
use crate::logging;
use tracing::Level;

/// sysexits.h EX_CONFIG: the configuration is invalid.
const EX_CONFIG: u8 = 78;

/// `tokend`'s `main`.
pub fn main() -> ExitCode {
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

    let cli = Cli::parse();
    logging::init(cli.log_format, cli.log_level);
    // The one place where how a command ended becomes an exit status.
    match run(cli) {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::No) => ExitCode::FAILURE,
        Err(failure) => failure.report(),
    }
}

/// How a command that ran to its end ended.
enum Ended {
    /// It did what was asked: exit 0.
    Done,
    /// It ran, and its answer is no (`once` left a client without a valid token, `check` found
    /// problems, `configured` found no client), which it has said: exit 1.
    No,
}

impl From<()> for Ended {
    fn from((): ()) -> Ended {
        Ended::Done
    }
}

impl From<bool> for Ended {
    fn from(yes: bool) -> Ended {
        if yes { Ended::Done } else { Ended::No }
    }
}

/// Why a command could not do what was asked; each kind has its exit status.
enum Failure {
    /// The configuration cannot be used, as `run` refuses to start: EX_CONFIG (78).
    Config(String),
    /// `check` has printed why the configuration would be refused: EX_CONFIG (78).
    ConfigReported,
    /// A request over the socket: 69, 75, 77 or 1 (`CliError::exit_code`), with a note on where
    /// the socket was looked for.
    Socket(CliError, Option<String>),
    /// Anything else: 1.
    Other(String),
}

impl Failure {
    /// Says what failed on stderr and gives the exit status.
    fn report(self) -> ExitCode {
        let code = match &self {
            Failure::Config(_) | Failure::ConfigReported => EX_CONFIG,
            Failure::Socket(e, _) => e.exit_code(),
            Failure::Other(_) => 1,
        };
        match self {
            Failure::Config(text) | Failure::Other(text) => logging::eprint_lines(Level::ERROR, &text),
            Failure::ConfigReported => {}
            Failure::Socket(e, note) => {
                let mut text = format!("tokend: {e}");
                if let (CliError::Unavailable { .. }, Some(note)) = (&e, note) {
                    text.push_str(&format!("\ntokend: note: {note}"));
                }
                logging::eprint_lines(Level::ERROR, &text);
            }
        }
        ExitCode::from(code)
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Failure {
        match e {
            AppError::Config(e) => Failure::Config(e.to_string()),
            e => Failure::Other(format!("tokend: {e:#}")),
        }
    }
}

fn run(cli: Cli) -> Result<Ended, Failure> {
    let Cli { config, command, .. } = cli;
    match command {
        Command::Check { as_user, connect } => run_check(&config, as_user.as_deref(), connect),
        Command::Fleet(FleetCommand::Keygen) => {
            let key = crate::fleet::seal::FleetKey::generate();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", secrecy::ExposeSecret::expose_secret(&key))
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Other(format!("tokend: cannot write the key: {e}")))?;
            Ok(Ended::Done)
        }
        Command::Schema => {
            let mut out = std::io::stdout().lock();
            out.write_all(config::schema::to_json().as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Other(format!("tokend: cannot write the schema: {e}")))?;
            Ok(Ended::Done)
        }
        Command::Configured => Ok(match config::lists_clients(&config) {
            Some(false) => {
                logging::eprint_lines(
                    Level::INFO,
                    &format!(
                        "tokend: {} lists no clients yet, so there is nothing to run; add one (see tokend(1)), then start tokend again",
                        config.display()
                    ),
                );
                Ended::No
            }
            Some(true) | None => Ended::Done,
        }),
        Command::Run { watch_config } => on_runtime(daemon::run(&config, watch_config, CancellationToken::new())),
        Command::PrepareDirs { owner, dirs } => {
            prepare_dirs::dirs(&owner, &dirs).map_err(|e| Failure::Other(format!("tokend: {e}")))?;
            Ok(Ended::Done)
        }
        Command::Once { force } => on_runtime(async { daemon::once(daemon::load_usable(&config)?, force).await }),
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
/// connections wait behind one long batch (measured in BENCHMARKS.md, "Socket API against
/// nginx").
fn on_runtime<T: Into<Ended>>(job: impl Future<Output = Result<T, AppError>>) -> Result<Ended, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .max_io_events_per_tick(32)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("tokend: cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(job);
    // A blocking thread still stuck in a write (a hung file system, already reported) must not
    // keep the process from exiting: dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result?.into())
}

/// `get` and `status`: one request to the socket; a current-thread runtime is plenty.
fn socket_command(
    config: &Path,
    socket: &SocketArg,
    request: impl AsyncFnOnce(&Path) -> Result<(), CliError>,
) -> Result<Ended, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("tokend: cannot start the async runtime: {e}")))?;
    let (path, note) = socket.resolve(config);
    runtime.block_on(request(&path)).map_err(|e| Failure::Socket(e, note))?;
    Ok(Ended::Done)
}

fn run_check(path: &Path, as_user: Option<&str>, connect: bool) -> Result<Ended, Failure> {
    let config = config::load(path).map_err(|e| Failure::Config(e.to_string()))?;
    let who = check::service_identity(as_user).map_err(|e| Failure::Config(format!("tokend: --as-user: {e}")))?;
    let report = check::check(&config, &who, connect);
    let (out, err, verdict) = check::render(&report, &config.source);
    print!("{out}");
    eprint!("{err}");
    match verdict {
        check::Verdict::Fine => Ok(Ended::Done),
        check::Verdict::Problems => Ok(Ended::No),
        check::Verdict::Refused => Err(Failure::ConfigReported),
    }
}
