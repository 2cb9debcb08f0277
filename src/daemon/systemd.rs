//! sd_notify: READY once every client has had its first attempt, RELOADING/READY around a reload,
//! STATUS whenever the summary changes, STOPPING on shutdown, and the watchdog ping. All are
//! no-ops outside systemd. A notification never waits: a supervisor that reads only READY (or
//! reads slowly) fills the socket's queue of ten datagrams, and a blocking send would then stop
//! the daemon's main loop, signals included; such a message is dropped, with a debug line.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn notifies() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[NotifyState<'_>]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    // The message as sd_notify::notify writes it; sent the same way, but never blocking.
    let mut message = String::new();
    for state in states {
        let _ = writeln!(message, "{state}");
    }
    let sent = UnixDatagram::unbound()
        .and_then(|socket| {
            socket.set_nonblocking(true)?;
            socket.connect(&path)?;
            socket.send(message.as_bytes())
        })
        .and_then(|n| {
            (n == message.len())
                .then_some(())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::WriteZero, "incomplete write"))
        });
    if let Err(e) = sent {
        debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=`: what `systemctl status` shows under the unit's name.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// For `Type=notify-reload`: RELOADING=1 must come with the current monotonic time.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => debug!(error = %e, "cannot read the monotonic clock for RELOADING"),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog (half the interval systemd asked for), if it is enabled.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|interval| (interval / 2).max(Duration::from_millis(100)))
}

pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
