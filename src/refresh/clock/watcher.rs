//! One thread for the whole process notices when the wall clock moves against the monotonic
//! clock, and tells `Clock::system()`'s driver (which wakes the sleepers affected) by bumping a
//! counter it watches:
//!
//! - a `timerfd` on `CLOCK_REALTIME`, armed with `TFD_TIMER_CANCEL_ON_SET`, ends its wait as
//!   soon as the clock is set (`settimeofday`, an NTP step, a resume on kernels that report it
//!   so), and otherwise expires after `CHECK` — at once on resume from a longer suspend, since it
//!   is a wall-clock timer;
//! - each time it ends, the offsets of `CLOCK_REALTIME` and `CLOCK_BOOTTIME` from
//!   `CLOCK_MONOTONIC` are compared with the last reported ones: the first moves when the clock
//!   is stepped, the second grows by the time spent suspended.
//!
//! So a step is reported at once and a suspend within `CHECK` of the resume, by one wake-up per
//! `CHECK` for the whole process, however many clients it serves. If no timerfd can be had, the
//! thread sleeps `CHECK` between comparisons instead.

use std::sync::{Once, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{self, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{ClockId, clock_gettime};
use tokio::sync::watch;
use tracing::{info, warn};

use super::STEP_BACK_TOLERANCE;

/// The longest the watcher waits between two comparisons of the clocks.
pub const CHECK: Duration = Duration::from_secs(5);

/// Offsets moving by less than this are not reported: nothing planned on the wall clock is
/// off by more than the tolerance a step back is measured with (NTP slews 0.5 ms/s at most).
const REPORTED: Duration = STEP_BACK_TOLERANCE;

static CHANGES: OnceLock<watch::Sender<u64>> = OnceLock::new();
static STARTED: Once = Once::new();

/// A receiver of the process's clock reports; the watcher starts with the first one.
pub fn subscribe() -> watch::Receiver<u64> {
    let changes = CHANGES.get_or_init(|| watch::channel(0).0);
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("tokend-clock".into())
            .stack_size(256 * 1024)
            .spawn(move || watch_clocks(changes));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the clock watcher; clock steps and suspends are noticed only at the next deadline");
        }
    });
    changes.subscribe()
}

fn watch_clocks(changes: &watch::Sender<u64>) {
    let mut timer = match TimerFd::new(timerfd::ClockId::CLOCK_REALTIME, TimerFlags::TFD_CLOEXEC) {
        Ok(timer) => Some(timer),
        Err(e) => {
            warn!(error = %e, "no timerfd; checking the clocks every {}s", CHECK.as_secs());
            None
        }
    };
    let mut reported = Offsets::read();
    loop {
        match &timer {
            Some(t) => {
                if let Err(e) = wait(t) {
                    warn!(error = %e, "the clock watcher's timerfd failed; checking the clocks every {}s", CHECK.as_secs());
                    timer = None;
                }
            }
            None => std::thread::sleep(CHECK),
        }
        let now = Offsets::read();
        if !now.moved_since(&reported) {
            continue;
        }
        let (stepped, suspended) = now.since(&reported);
        if suspended > REPORTED.as_nanos() as i128 {
            info!(suspended = %seconds(suspended), "resumed from a suspend; re-planning every refresh");
        } else {
            let direction = if stepped > 0 { "forward" } else { "back" };
            info!(clock = "stepped", direction, by = %seconds(stepped.abs()), "the wall clock was stepped; re-planning every refresh");
        }
        reported = now;
        changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Waits until the wall clock is set or `CHECK` has passed on it.
fn wait(timer: &TimerFd) -> nix::Result<()> {
    let armed = Offsets::read();
    let at = TimeSpec::from_duration(Duration::from_nanos(armed.wall_nanos() as u64) + CHECK);
    timer.set(
        Expiration::OneShot(at),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
    )?;
    // A step between reading the clock and arming the timer would not cancel it, and a step
    // back would put its expiry that far off: compare now instead of waiting.
    if Offsets::read().moved_since(&armed) {
        return Ok(());
    }
    match nix::unistd::read(timer, &mut [0u8; 8]) {
        // ECANCELED: the clock was set; EINTR: a signal. Either way, compare now.
        Ok(_) | Err(Errno::ECANCELED | Errno::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `CLOCK_REALTIME` and `CLOCK_BOOTTIME` less `CLOCK_MONOTONIC`, in nanoseconds, and the
/// monotonic reading they were taken at.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Offsets {
    monotonic: i128,
    realtime: i128,
    boottime: i128,
}

impl Offsets {
    fn read() -> Offsets {
        let nanos = |id| {
            clock_gettime(id).map_or(0, |t: TimeSpec| {
                t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128
            })
        };
        let monotonic = nanos(ClockId::CLOCK_MONOTONIC);
        Offsets {
            monotonic,
            realtime: nanos(ClockId::CLOCK_REALTIME) - monotonic,
            boottime: nanos(ClockId::CLOCK_BOOTTIME) - monotonic,
        }
    }

    /// The wall clock's reading, in nanoseconds since the epoch.
    fn wall_nanos(&self) -> i128 {
        (self.monotonic + self.realtime).max(0)
    }

    /// Whether the wall clock was stepped, or the host suspended, by more than `REPORTED`.
    fn moved_since(&self, earlier: &Offsets) -> bool {
        let (stepped, suspended) = self.since(earlier);
        stepped.unsigned_abs() > REPORTED.as_nanos() || suspended > REPORTED.as_nanos() as i128
    }

    /// How far the wall clock was stepped (negative: back) and how long the host was suspended
    /// since `earlier`, in nanoseconds. A suspend moves both offsets by the same amount, so the
    /// step is what the wall clock moved beyond the suspend.
    fn since(&self, earlier: &Offsets) -> (i128, i128) {
        let suspended = self.boottime - earlier.boottime;
        (self.realtime - earlier.realtime - suspended, suspended)
    }
}

fn seconds(nanos: i128) -> String {
    format!("{:.1}s", nanos as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i128 = 1_000_000_000;

    #[test]
    fn a_suspend_moves_both_offsets_and_is_not_taken_for_a_step() {
        let before = Offsets {
            monotonic: 100 * SEC,
            realtime: 1_700_000_000 * SEC,
            boottime: 5 * SEC,
        };
        let resumed = Offsets {
            realtime: before.realtime + 600 * SEC,
            boottime: before.boottime + 600 * SEC,
            ..before
        };
        assert_eq!(resumed.since(&before), (0, 600 * SEC));
        assert!(resumed.moved_since(&before));
        let stepped_back = Offsets {
            realtime: before.realtime - 90 * SEC,
            ..before
        };
        assert_eq!(stepped_back.since(&before), (-90 * SEC, 0));
        assert!(stepped_back.moved_since(&before));
        // NTP's slew over a check is far below what is reported.
        let slewed = Offsets {
            realtime: before.realtime + 3_000_000,
            ..before
        };
        assert!(!slewed.moved_since(&before));
    }

    #[test]
    fn the_watcher_runs_once_and_reports_nothing_while_the_clocks_agree() {
        let mut a = subscribe();
        let b = subscribe();
        assert!(!a.has_changed().unwrap() && !b.has_changed().unwrap());
        // The thread names itself once it runs.
        let watchers = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter(|t| {
                    let comm = t.as_ref().unwrap().path().join("comm");
                    std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "tokend-clock")
                })
                .count()
        };
        for _ in 0..100 {
            if watchers() > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let watchers = watchers();
        assert_eq!(watchers, 1);
        a.mark_unchanged();
    }
}
