//! `tokend run`: the socket comes up, then the refresh tasks and the token proxies; the loop
//! feeds systemd's watchdog and `STATUS=`, beats for `/healthz`, and applies each reload asked
//! for, until a stop.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config_watch::ConfigWatch;
use super::sources::Sources;
use super::status_line::{self, STATUS_EVERY, StatusUpdates};
use super::{AppError, Daemon, Reload, load_applicable, memory, systemd};
use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::proxy::Proxies;
use crate::server::access::Authority;
use crate::server::socket::SocketError;
use crate::server::{HEARTBEAT_EVERY, Server};
use crate::store::Store;

/// What asks the running daemon to act, from outside its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Load the configuration again and apply it (SIGHUP, or the watched file changed).
    Reload,
    /// Stop (SIGTERM, SIGINT).
    Stop,
}

/// `tokend run`: the daemon, until SIGTERM/SIGINT or `stop`; with `watch_config`, a changed
/// configuration file is reloaded as on SIGHUP.
pub async fn run(config_path: &Path, watch_config: bool, stop: CancellationToken) -> Result<(), AppError> {
    // Watching starts before the file is read, so a change in between is not missed (it
    // reloads what was just loaded, at worst); a bad configuration is still reported first.
    let watch = watch_config.then(|| ConfigWatch::new(config_path));
    let config = load_applicable(config_path)?;
    let watch = watch
        .transpose()
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", config_path.display()))?;
    // Registered before any task starts, so no signal is missed.
    let signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let signals_handle = signals.handle();
    let controls = controls(signals, watch, config_path);
    let clients = config.clients.len();
    info!(config = %config_path.display(), clients, state_dir = %config.state_dir.display(), "tokend starting");
    raise_open_files_limit();
    let (mut daemon, mut server, mut proxies, first) = start(config_path, config).await?;
    serve(
        &mut daemon,
        &mut server,
        &mut proxies,
        first,
        controls,
        stop,
        config_path,
    )
    .await;
    info!("stopping");
    systemd::stopping();
    signals_handle.close();
    proxies.shutdown().await;
    server.shutdown().await;
    daemon.shutdown().await;
    info!("stopped");
    Ok(())
}

/// The adapters from the outside world to `Control`: SIGHUP and a changed configuration file
/// ask for a reload, SIGTERM and SIGINT (or the signal stream ending) for a stop.
fn controls(
    signals: signal_hook_tokio::Signals,
    watch: Option<ConfigWatch>,
    config_path: &Path,
) -> impl futures_util::Stream<Item = Control> + Unpin {
    let signals = signals
        .filter_map(|signal| async move {
            match signal {
                SIGHUP => Some(Control::Reload),
                SIGTERM | SIGINT => Some(Control::Stop),
                _ => None,
            }
        })
        .chain(futures_util::stream::once(async { Control::Stop }));
    let path = config_path.to_path_buf();
    let changes = futures_util::stream::unfold(watch, move |mut watch| {
        let path = path.clone();
        async move {
            file_changed(&mut watch).await;
            info!(config = %path.display(), "the configuration file changed");
            Some((Control::Reload, watch))
        }
    });
    futures_util::stream::select(Box::pin(signals), Box::pin(changes))
}

/// The socket comes up first, so a reader that starts with tokend finds it and can wait; then
/// the refresh tasks (the receivers resolve as each group ends its first attempt) and the token
/// proxies, which answer 503 until their client has a token.
async fn start(
    config_path: &Path,
    config: crate::config::Config,
) -> Result<(Daemon, Server, Proxies, Vec<tokio::sync::oneshot::Receiver<()>>), AppError> {
    let (store, metrics) = (Store::new(), Arc::new(Metrics::new()));
    // Before the socket comes up, so its listing and readiness know every client.
    store.retain_clients(config.clients.iter().map(|c| &c.name));
    let authority = Authority::new(config.access.clone());
    let mut server =
        Server::start(config.socket.as_ref(), authority, store.clone(), metrics.clone()).map_err(|e| match e {
            // The socket's mode or group cannot be applied: the configuration must change.
            SocketError::Group { .. } | SocketError::Mode { .. } => {
                AppError::Config(ConfigError::single(config_path, "socket", e.to_string()))
            }
            other => anyhow::anyhow!("{other}").into(),
        })?;
    if let Err(e) = server.listen_tcp(config.metrics_listen).await {
        return Err(anyhow::anyhow!("cannot serve metrics.listen {:?}: {e}", config.metrics_listen).into());
    }
    let proxy_configs = config.proxies.clone();
    let (daemon, first) = Daemon::start(config, store.clone(), metrics.clone());
    match Proxies::start(&proxy_configs, &store, &metrics).await {
        Ok(proxies) => Ok((daemon, server, proxies, first)),
        Err(e) => {
            server.shutdown().await;
            daemon.shutdown().await;
            Err(anyhow::anyhow!("{e}").into())
        }
    }
}

/// The daemon's loop, until `stop` or a `Control::Stop`. It feeds systemd's watchdog (so a loop
/// that wedges gets tokend restarted), beats for `/healthz`, reports READY once every group
/// has made its first attempt, keeps `STATUS=` current (after a change, at most once a second,
/// and every minute for the "in 41m" ages, only under systemd), and applies reloads: one asked
/// for while another waits for its stopped tasks is done once that one is over.
pub(super) async fn serve<S: Sources>(
    daemon: &mut Daemon<S>,
    server: &mut Server,
    proxies: &mut Proxies,
    first: Vec<tokio::sync::oneshot::Receiver<()>>,
    mut controls: impl futures_util::Stream<Item = Control> + Unpin,
    stop: CancellationToken,
    config_path: &Path,
) {
    let watchdog = systemd::watchdog_period();
    let mut watchdog_ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut status = StatusUpdates::new(daemon.store());
    let mut status_ticker = tokio::time::interval(STATUS_EVERY);
    let mut changes = daemon.store().changes();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    let startup = futures_util::future::join_all(first);
    tokio::pin!(startup);
    let mut started = false;
    let mut loading: Option<Pin<Box<dyn Future<Output = Loaded> + Send>>> = None;
    let mut settling: Option<Pin<Box<dyn Future<Output = Reload> + Send>>> = None;
    let mut reload_again = false;
    loop {
        let mut reload_asked = false;
        tokio::select! {
            _ = watchdog_ticker.tick(), if watchdog.is_some() => systemd::watchdog(),
            _ = heartbeat.tick() => server.beat(),
            _ = &mut startup, if !started => {
                started = true;
                status.ready();
            }
            _ = changes.changed(), if status.follows() => status.changed(),
            _ = tokio::time::sleep_until(status.flush_at()), if status.pending() => status.send_if_new(),
            _ = status_ticker.tick(), if status.follows() => status.send_if_new(),
            _ = stop.cancelled() => break,
            control = controls.next() => match control {
                Some(Control::Reload) => reload_asked = true,
                Some(Control::Stop) | None => break,
            },
            loaded = async { loading.as_mut().expect("guarded").await }, if loading.is_some() => {
                loading = None;
                settling = apply_reload(daemon, server, loaded, started).await;
                reload_asked = settling.is_none() && std::mem::take(&mut reload_again);
            }
            settled = async { settling.as_mut().expect("guarded").await }, if settling.is_some() => {
                settling = None;
                finish_reload(daemon, proxies, settled, started).await;
                reload_asked = std::mem::take(&mut reload_again);
            }
        }
        if reload_asked {
            if settling.is_some() || loading.is_some() {
                info!("a reload is still under way; reloading again once it is over");
                reload_again = true;
            } else {
                loading = Some(begin_reload(config_path, started));
            }
        }
    }
}

/// Ends a reload whose stopped tasks have ended (or were left behind): the new tasks start, the
/// proxies follow the new configuration, and systemd hears the reload is over.
async fn finish_reload<S: Sources>(daemon: &mut Daemon<S>, proxies: &mut Proxies, settled: Reload, started: bool) {
    daemon.finish(settled);
    tokio::task::spawn_blocking(memory::release_free);
    let proxy_configs = daemon.config().proxies.clone();
    if let Err(e) = proxies
        .reconfigure(&proxy_configs, daemon.store(), daemon.metrics())
        .await
    {
        error!(error = %e, "a token proxy of the new configuration cannot run");
    }
    if started {
        systemd::ready(&status_line::line(&daemon.store().all(), SystemTime::now()));
    }
}

/// A reload's configuration as read off the loop: usable, refused, or not read in time.
type Loaded = Result<crate::config::Config, String>;

/// How long a reload waits for the configuration and every secret it names to be read: a file
/// on a hung file system (a stuck NFS mount) must not hold up the loop (signals, the watchdog)
/// nor the reload for longer than a hung output write holds a stop.
const LOAD_WAIT: Duration = super::STOPPED_TASKS_WAIT;

/// Starts a reload: the configuration file and every secret, key and certificate it names are
/// read on a blocking thread, for `LOAD_WAIT` at most, while the loop runs on. Before start-up
/// has completed (READY not yet sent), systemd is not told about the reload: READY will follow
/// when start-up completes.
fn begin_reload(config_path: &Path, started: bool) -> Pin<Box<dyn Future<Output = Loaded> + Send>> {
    if started {
        systemd::reloading();
    }
    info!(config = %config_path.display(), "reloading configuration");
    let path = config_path.to_owned();
    let reading = tokio::task::spawn_blocking(move || {
        load_applicable(&path).map_err(|e| {
            let lines: Vec<String> = e
                .to_string()
                .lines()
                .map(|l| format!("invalid configuration: {l}"))
                .collect();
            lines.join("\n")
        })
    });
    // The wait is measured on the real clock: a reading is real work on another thread,
    // which tokio's paused time (the daemon's tests) would otherwise skip past.
    let deadline = std::time::Instant::now() + LOAD_WAIT;
    Box::pin(async move {
        let mut reading = std::pin::pin!(reading);
        loop {
            tokio::select! {
                read = &mut reading => return read.unwrap_or_else(|e| Err(format!("reading the configuration failed: {e}"))),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(format!(
                            "the configuration and its secrets could not be read within {} (a hung file system?)",
                            humantime::format_duration(LOAD_WAIT)
                        ));
                    }
                }
            }
        }
    })
}

/// Applies a configuration read by `begin_reload`: if it is good, readers and the socket change
/// at once, and the groups begin to change (see `Daemon::reconfigure`); the future returned
/// ends the wait for the stopped tasks. A rejected configuration changes nothing.
async fn apply_reload<S: Sources>(
    daemon: &mut Daemon<S>,
    server: &mut Server,
    loaded: Loaded,
    started: bool,
) -> Option<Pin<Box<dyn Future<Output = Reload> + Send>>> {
    match loaded {
        Ok(config) => {
            // Readers first: a reader taken away must lose access before anything else happens.
            server
                .reconfigure(config.socket.as_ref(), Authority::new(config.access.clone()))
                .await;
            if let Err(e) = server.listen_tcp(config.metrics_listen).await {
                match server.tcp_addr() {
                    Some(addr) => {
                        error!(error = %e, listen = %addr, "cannot serve the new metrics.listen; still serving the previous address")
                    }
                    None => {
                        error!(error = %e, "cannot serve the new metrics.listen; health and metrics are not served over TCP now")
                    }
                }
            }
            Some(Box::pin(daemon.reconfigure(config).settle()))
        }
        Err(e) => {
            for line in e.lines() {
                error!("{line}");
            }
            error!(
                reload = "rejected",
                "the new configuration was rejected; still running the previous one unchanged"
            );
            if started {
                systemd::ready(&status_line::line(&daemon.store().all(), SystemTime::now()));
            }
            None
        }
    }
}

/// The next change of the watched configuration file; never, without a watch.
async fn file_changed(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// Every socket connection needs a descriptor; the soft limit (often 1024) is raised to the hard
/// limit so the connection cap, not the descriptor table, decides how many readers are served.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open files limit"),
    }
}
