//! The wall clock the refresh loop plans by, injectable so the loop is tested under
//! `tokio::time::pause()`. Deadlines are wall-clock times (a token's `expires_at`), while tokio's
//! timers run on the monotonic clock, which stops while a VM is suspended and ignores steps of
//! the wall clock. A sleeper therefore sleeps on tokio's timer until its own deadline, and is
//! woken early only when the process-wide `watcher` reports that the wall clock moved against
//! the monotonic one (a step either way, or a resume from suspend): it then re-reads the wall
//! clock, and sleeps again or returns. No sleeper wakes up between its deadline and such a
//! report, however many there are. A step back is reported, with its size, rather than slept
//! through: a deadline planned on the old clock would now come that much too late.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

mod watcher;

/// A wall clock that falls behind the monotonic clock by more than this was stepped back (NTP
/// slews far less than this between two readings).
pub const STEP_BACK_TOLERANCE: Duration = Duration::from_secs(1);

/// Why a wall-clock sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The deadline was reached.
    Deadline,
    /// The wall clock was stepped back by about this much while sleeping.
    SteppedBack(Duration),
}

#[derive(Clone)]
pub struct Clock {
    now: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    /// Bumped each time the wall clock moved against the monotonic clock.
    changes: watch::Receiver<u64>,
}

impl Clock {
    /// The system's wall clock, with the process-wide watcher's reports.
    pub fn system() -> Clock {
        Clock {
            now: Arc::new(SystemTime::now),
            changes: watcher::subscribe(),
        }
    }

    /// A clock that reads `now` and is told of changes through `changes` (tests: tokio's paused
    /// time plus jumps).
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static, changes: watch::Receiver<u64>) -> Clock {
        Clock {
            now: Arc::new(now),
            changes,
        }
    }

    pub fn now(&self) -> SystemTime {
        (self.now)()
    }

    /// Sleeps until the wall clock reaches `deadline` (at once if it has), or until the wall
    /// clock is seen to have been stepped back.
    pub async fn sleep_until(&self, deadline: SystemTime) -> Wake {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        loop {
            let (wall, monotonic) = (self.now(), tokio::time::Instant::now());
            let remaining = match deadline.duration_since(wall) {
                Ok(remaining) if !remaining.is_zero() => remaining,
                _ => return Wake::Deadline,
            };
            tokio::select! {
                () = tokio::time::sleep(remaining) => {}
                () = changed(&mut changes) => {}
            }
            let expected = wall + monotonic.elapsed();
            if let Ok(behind) = expected.duration_since(self.now())
                && behind > STEP_BACK_TOLERANCE
            {
                return Wake::SteppedBack(behind);
            }
        }
    }
}

/// Returns when `changes` is bumped; never, once its sender is gone (nothing can report then).
async fn changed(changes: &mut watch::Receiver<u64>) {
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", humantime::format_rfc3339_millis(self.now()))
    }
}

/// A wall clock for tests: it advances with tokio's (paused) time from `start`, and can be
/// stepped forward (a suspend, an NTP step) or back; each step is reported to sleepers at once,
/// as the watcher's timer reports a step.
#[cfg(test)]
pub mod manual {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone)]
    pub struct Handle {
        offset: Arc<Mutex<(Duration, Duration)>>,
        changes: Arc<watch::Sender<u64>>,
    }

    impl Handle {
        /// Moves the wall clock forward by `d`, as a suspended VM that wakes up sees it.
        pub fn jump_forward(&self, d: Duration) {
            self.offset.lock().unwrap().0 += d;
            self.changes.send_modify(|n| *n += 1);
        }

        pub fn jump_back(&self, d: Duration) {
            self.offset.lock().unwrap().1 += d;
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub fn clock(start: SystemTime) -> (Clock, Handle) {
        let (changes, receiver) = watch::channel(0);
        let handle = Handle {
            offset: Arc::new(Mutex::new((Duration::ZERO, Duration::ZERO))),
            changes: Arc::new(changes),
        };
        let began = tokio::time::Instant::now();
        let offset = handle.offset.clone();
        let clock = Clock::from_fn(
            move || {
                let (ahead, behind) = *offset.lock().unwrap();
                start + began.elapsed() + ahead - behind
            },
            receiver,
        );
        (clock, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::UNIX_EPOCH;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// A manual clock at t0 and a task sleeping on it until t0 + 1 h.
    fn hour_long_sleeper() -> (Clock, manual::Handle, tokio::task::JoinHandle<Wake>) {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, handle) = manual::clock(t0);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(t0 + S(3600)).await }
        });
        (clock, handle, sleeper)
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_notices_a_reported_wall_clock_jump_at_once() {
        // Five minutes into a one-hour sleep the wall clock jumps an hour ahead, as when a
        // suspended VM wakes up; the monotonic clock (tokio's) knows nothing of it.
        let (_clock, handle, sleeper) = hour_long_sleeper();
        tokio::time::sleep(S(300)).await;
        assert!(!sleeper.is_finished());
        handle.jump_forward(S(3600));
        let jumped = tokio::time::Instant::now();
        assert_eq!(sleeper.await.unwrap(), Wake::Deadline);
        assert_eq!(jumped.elapsed(), S(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forward_jump_short_of_the_deadline_moves_the_wake_up_earlier() {
        let (_clock, handle, sleeper) = hour_long_sleeper();
        tokio::time::sleep(S(100)).await;
        handle.jump_forward(S(1000));
        let jumped = tokio::time::Instant::now();
        assert_eq!(sleeper.await.unwrap(), Wake::Deadline);
        assert_eq!(jumped.elapsed(), S(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_back_ends_the_sleep_at_once() {
        let (clock, handle, sleeper) = hour_long_sleeper();
        tokio::time::sleep(S(100)).await;
        handle.jump_back(S(600));
        let stepped = tokio::time::Instant::now();
        assert_eq!(sleeper.await.unwrap(), Wake::SteppedBack(S(600)));
        assert_eq!(stepped.elapsed(), S(0));
        // A step smaller than the tolerance (a slew) is slept through.
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            let deadline = clock.now() + S(90);
            async move { clock.sleep_until(deadline).await }
        });
        tokio::time::sleep(S(10)).await;
        handle.jump_back(Duration::from_millis(500));
        assert_eq!(sleeper.await.unwrap(), Wake::Deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_returns_at_once_for_a_past_deadline() {
        let start = tokio::time::Instant::now();
        assert_eq!(
            Clock::system().sleep_until(SystemTime::now() - S(5)).await,
            Wake::Deadline
        );
        assert_eq!(start.elapsed(), S(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_on_time_without_jumps() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, _) = manual::clock(t0);
        let start = tokio::time::Instant::now();
        assert_eq!(clock.sleep_until(t0 + S(95)).await, Wake::Deadline);
        assert_eq!(start.elapsed(), S(95));
        assert_eq!(clock.now(), t0 + S(95));
    }

    /// The idle cost: a day-long sleep reads the clock when it starts and when it ends, not
    /// every so often in between (a sleeper used to wake every 30 s: 2,880 times a day).
    #[tokio::test(start_paused = true)]
    async fn a_long_sleep_does_no_work_until_its_deadline() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let began = tokio::time::Instant::now();
        let reads = Arc::new(AtomicUsize::new(0));
        let (_changes, receiver) = watch::channel(0);
        let clock = Clock::from_fn(
            {
                let reads = reads.clone();
                move || {
                    reads.fetch_add(1, Ordering::Relaxed);
                    t0 + began.elapsed()
                }
            },
            receiver,
        );
        assert_eq!(clock.sleep_until(t0 + S(86_400)).await, Wake::Deadline);
        assert_eq!(began.elapsed(), S(86_400));
        assert!(
            reads.load(Ordering::Relaxed) <= 3,
            "{} clock reads",
            reads.load(Ordering::Relaxed)
        );
    }
}
