//! sd_notify: READY once every client has had its first attempt, RELOADING/READY around a reload,
//! STATUS whenever the summary changes, STOPPING on shutdown, and the watchdog ping. All are
//! no-ops outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn notifies() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[NotifyState<'_>]) {
    if !notifies() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
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
