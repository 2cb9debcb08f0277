//! The wall clock the refresh loop plans by, injectable so the loop is tested under
//! `tokio::time::pause()`. Deadlines are wall-clock times (a token's `expires_at`), while tokio's
//! timers run on the monotonic clock, which stops while a VM is suspended: a long sleep therefore
//! re-reads the wall clock every `WALL_CLOCK_CHECK`, so a wake-up or a clock step is noticed
//! within that time. A step back is reported, with its size, rather than slept through: a
//! deadline planned on the old clock would now come that much too late.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a long sleep re-reads the wall clock.
pub const WALL_CLOCK_CHECK: Duration = Duration::from_secs(30);

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
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock::from_fn(SystemTime::now)
    }

    /// A clock that reads `now` (tests: tokio's paused time plus jumps).
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock { now: Arc::new(now) }
    }

    pub fn now(&self) -> SystemTime {
        (self.now)()
    }

    /// Sleeps until the wall clock reaches `deadline` (at once if it has), or until the wall
    /// clock is seen to have been stepped back.
    pub async fn sleep_until(&self, deadline: SystemTime) -> Wake {
        loop {
            let (wall, monotonic) = (self.now(), tokio::time::Instant::now());
            let remaining = match deadline.duration_since(wall) {
                Ok(remaining) if !remaining.is_zero() => remaining,
                _ => return Wake::Deadline,
            };
            tokio::time::sleep(remaining.min(WALL_CLOCK_CHECK)).await;
            let expected = wall + monotonic.elapsed();
            if let Ok(behind) = expected.duration_since(self.now())
                && behind > STEP_BACK_TOLERANCE
            {
                return Wake::SteppedBack(behind);
            }
        }
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
/// stepped forward (a suspend, an NTP step) or back.
#[cfg(test)]
pub mod manual {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone)]
    pub struct Handle {
        offset: Arc<Mutex<(Duration, Duration)>>,
    }

    impl Handle {
        /// Moves the wall clock forward by `d`, as a suspended VM that wakes up sees it.
        pub fn jump_forward(&self, d: Duration) {
            self.offset.lock().unwrap().0 += d;
        }

        pub fn jump_back(&self, d: Duration) {
            self.offset.lock().unwrap().1 += d;
        }
    }

    pub fn clock(start: SystemTime) -> (Clock, Handle) {
        let handle = Handle {
            offset: Arc::new(Mutex::new((Duration::ZERO, Duration::ZERO))),
        };
        let began = tokio::time::Instant::now();
        let offset = handle.offset.clone();
        let clock = Clock::from_fn(move || {
            let (ahead, behind) = *offset.lock().unwrap();
            start + began.elapsed() + ahead - behind
        });
        (clock, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn sleeping_notices_a_wall_clock_jump_within_one_check() {
        // Five minutes into a one-hour sleep the wall clock jumps an hour ahead, as when a
        // suspended VM wakes up; the monotonic clock (tokio's) knows nothing of it.
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, handle) = manual::clock(t0);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(t0 + S(3600)).await }
        });
        tokio::time::sleep(S(300)).await;
        assert!(!sleeper.is_finished());
        handle.jump_forward(S(3600));
        let jumped = tokio::time::Instant::now();
        assert_eq!(sleeper.await.unwrap(), Wake::Deadline);
        let late = jumped.elapsed();
        assert!(late <= WALL_CLOCK_CHECK, "noticed the jump after {late:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_back_ends_the_sleep_within_one_check() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, handle) = manual::clock(t0);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(t0 + S(3600)).await }
        });
        tokio::time::sleep(S(100)).await;
        handle.jump_back(S(600));
        let stepped = tokio::time::Instant::now();
        assert_eq!(sleeper.await.unwrap(), Wake::SteppedBack(S(600)));
        assert!(stepped.elapsed() <= WALL_CLOCK_CHECK);
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
}
