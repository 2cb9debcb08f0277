//! The wall clock the refresh loop plans by, injectable so the loop is tested under
//! `tokio::time::pause()`. Deadlines are wall-clock times (a token's `expires_at`), while tokio's
//! timers run on the monotonic clock, which stops while a VM is suspended and ignores steps of
//! the wall clock. So sleepers do not hold tokio timers: each waits in one queue ordered by wall
//! time, and one driver task per clock sleeps on tokio's timer until the earliest deadline in
//! it, or until the process-wide `watcher` reports that the wall clock moved against the
//! monotonic one (a step either way, or a resume from suspend). The driver then re-reads the
//! wall clock and wakes the sleepers whose deadline has come — only those after a step forward
//! or a resume — or, after a step back, every sleeper. Each sleeper measures the step itself,
//! against the `Reading` its plans were made on (see `Wake::SteppedBack`): one that planned
//! after the step goes back to sleep, and one whose plans straddle it (made before, slept
//! after) moves them by exactly as much, once. No sleeper wakes up before its deadline
//! otherwise, however many there are, and a step wakes none whose deadline is still ahead.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};

mod watcher;

/// A wall clock that falls behind the monotonic clock by more than this was stepped back (NTP
/// slews far less than this between two readings).
pub const STEP_BACK_TOLERANCE: Duration = Duration::from_secs(1);

/// Why a wall-clock sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The deadline was reached.
    Deadline,
    /// The wall clock lies about this much behind where it stood when the sleeper's plans
    /// were made (the `Reading` it slept on), counting the time elapsed since: stepped back,
    /// net of any step forward (a resume, whose real time passed) in between.
    SteppedBack(Duration),
}

/// The wall clock read together with the monotonic clock: what a plan was made on. Comparing
/// a later reading with it tells whether the wall clock was stepped back in between, and by
/// how much, whoever noticed first and whatever the task was doing then (asleep, or waiting
/// for the IdP).
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub wall: SystemTime,
    monotonic: tokio::time::Instant,
}

impl Reading {
    /// How far the wall clock was stepped back between this reading and `later`, if by more
    /// than the tolerance.
    pub fn stepped_back_by(&self, later: &Reading) -> Option<Duration> {
        let expected = self.wall + later.monotonic.saturating_duration_since(self.monotonic);
        expected
            .duration_since(later.wall)
            .ok()
            .filter(|behind| *behind > STEP_BACK_TOLERANCE)
    }

    /// This reading as the clock stepped back by `by` shows it: plans moved by `by` are on it.
    pub fn stepped_back(self, by: Duration) -> Reading {
        Reading {
            wall: self.wall.checked_sub(by).unwrap_or(UNIX_EPOCH),
            ..self
        }
    }
}

#[derive(Clone)]
pub struct Clock {
    timers: Arc<Timers>,
}

/// The sleepers of one clock and what drives them.
struct Timers {
    now: Box<dyn Fn() -> SystemTime + Send + Sync>,
    /// Bumped each time the wall clock moved against the monotonic clock.
    changes: watch::Receiver<u64>,
    queue: Mutex<Queue>,
    /// Tells the driver that the earliest deadline changed.
    rearm: Notify,
}

#[derive(Default)]
struct Queue {
    /// Who waits for which wall-clock time; the number tells equal deadlines apart.
    sleepers: BTreeMap<(SystemTime, u64), Waker>,
    next: u64,
    /// A driver task is running (on the runtime of the sleeper that started it: tokend runs
    /// every refresh task on one runtime; if that one is shut down, the next sleeper starts a
    /// driver on its own).
    driven: bool,
}

impl Clock {
    /// The system's wall clock, with the process-wide watcher's reports: one queue and one
    /// driver for every client.
    pub fn system() -> Clock {
        static SYSTEM: OnceLock<Clock> = OnceLock::new();
        SYSTEM
            .get_or_init(|| Clock::from_fn(SystemTime::now, watcher::subscribe()))
            .clone()
    }

    /// A clock that reads `now` and is told of changes through `changes` (tests: tokio's paused
    /// time plus jumps).
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static, changes: watch::Receiver<u64>) -> Clock {
        Clock {
            timers: Arc::new(Timers {
                now: Box::new(now),
                changes,
                queue: Mutex::default(),
                rearm: Notify::new(),
            }),
        }
    }

    pub fn now(&self) -> SystemTime {
        (self.timers.now)()
    }

    pub fn read(&self) -> Reading {
        self.timers.read()
    }

    /// Sleeps until the wall clock reaches `deadline` (at once if it has), or until the wall
    /// clock is seen to have been stepped back since `planned_on`, the reading the deadline
    /// was computed on (at once if it has been). Measured against that reading, a step is
    /// reported once to each plan, however it was noticed: by the driver, by this sleep
    /// ending on time late (steps each below the tolerance that add up to more), or before
    /// the sleep began (while its task waited for the IdP).
    pub async fn sleep_until(&self, deadline: SystemTime, planned_on: Reading) -> Wake {
        loop {
            let now = self.read();
            if let Some(by) = planned_on.stepped_back_by(&now) {
                return Wake::SteppedBack(by);
            }
            if now.wall >= deadline {
                return Wake::Deadline;
            }
            Sleeper {
                timers: &self.timers,
                deadline,
                key: None,
            }
            .await;
        }
    }
}

impl Timers {
    fn read(&self) -> Reading {
        Reading {
            wall: (self.now)(),
            monotonic: tokio::time::Instant::now(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One wait in the queue: ready once the driver has taken it out (its deadline came, or the
/// clock was stepped back); leaves the queue if dropped before.
struct Sleeper<'a> {
    timers: &'a Arc<Timers>,
    deadline: SystemTime,
    key: Option<(SystemTime, u64)>,
}

impl Future for Sleeper<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut queue = self.timers.queue();
        if let Some(key) = self.key {
            return match queue.sleepers.get_mut(&key) {
                // Taken out by the driver: woken.
                None => {
                    self.key = None;
                    Poll::Ready(())
                }
                Some(waker) => {
                    waker.clone_from(cx.waker());
                    Poll::Pending
                }
            };
        }
        let key = (self.deadline, queue.next);
        queue.next += 1;
        queue.sleepers.insert(key, cx.waker().clone());
        let earliest = queue.sleepers.keys().next() == Some(&key);
        let start_driver = !std::mem::replace(&mut queue.driven, true);
        drop(queue);
        self.key = Some(key);
        if start_driver {
            tokio::spawn(drive(self.timers.clone()));
        } else if earliest {
            self.timers.rearm.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.timers.queue().sleepers.remove(&key);
        }
    }
}

/// Marks the clock undriven when the driver ends (its runtime shut down).
struct Driving(Arc<Timers>);

impl Drop for Driving {
    fn drop(&mut self) {
        self.0.queue().driven = false;
    }
}

/// Wakes each sleeper of `timers` at its deadline, and every sleeper after a step back.
async fn drive(timers: Arc<Timers>) {
    let driving = Driving(timers);
    let timers = &driving.0;
    let mut changes = timers.changes.clone();
    changes.mark_unchanged();
    let mut last: Option<Reading> = None;
    loop {
        let now = timers.read();
        let wall = now.wall;
        // Checked on every turn, whatever ended the last wait: a report and a deadline can
        // come together, and a step must not go unseen because the deadline won.
        let stepped_back = last.is_some_and(|then| then.stepped_back_by(&now).is_some());
        last = Some(now);
        let earliest = {
            let mut queue = timers.queue();
            if stepped_back {
                // Plans made on the old clock must move: every sleeper measures the step
                // against its own plans' reading (see `Clock::sleep_until`).
                for (_, waker) in std::mem::take(&mut queue.sleepers) {
                    waker.wake();
                }
            }
            while let Some(entry) = queue.sleepers.first_entry()
                && entry.key().0 <= wall
            {
                entry.remove().wake();
            }
            queue.sleepers.keys().next().map(|(deadline, _)| *deadline)
        };
        let sleep = async {
            match earliest {
                Some(at) => tokio::time::sleep(at.duration_since(wall).unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = timers.rearm.notified() => {}
            () = next_change(&mut changes) => {}
        }
    }
}

/// Returns when `changes` is bumped; never, once its sender is gone (nothing can report then).
async fn next_change(changes: &mut watch::Receiver<u64>) {
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
pub(crate) mod manual;

#[cfg(test)]
mod tests;
