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
            () = changed(&mut changes) => {}
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
pub(crate) mod manual {
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
            self.jump_back_unreported(d);
            self.report();
        }

        /// Steps the clock back before the watcher has seen it (it checks every few seconds).
        pub fn jump_back_unreported(&self, d: Duration) {
            self.offset.lock().unwrap().1 += d;
        }

        /// The watcher's report of what the clock did since it last looked.
        pub fn report(&self) {
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
            async move { clock.sleep_until(t0 + S(3600), clock.read()).await }
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
            async move { clock.sleep_until(deadline, clock.read()).await }
        });
        tokio::time::sleep(S(10)).await;
        handle.jump_back(Duration::from_millis(500));
        assert_eq!(sleeper.await.unwrap(), Wake::Deadline);
    }

    /// A sleep on `clock` until `deadline` in a task, with the number of times it was polled
    /// (each wake-up is one poll).
    fn counted_sleeper(clock: &Clock, deadline: SystemTime) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<Wake>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let sleep = {
            let (clock, planned_on) = (clock.clone(), clock.read());
            async move { clock.sleep_until(deadline, planned_on).await }
        };
        let task = tokio::spawn({
            let polls = polls.clone();
            let mut sleep = Box::pin(sleep);
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                sleep.as_mut().poll(cx)
            })
        });
        (polls, task)
    }

    /// The "wakes only the tasks affected": a step forward (a resume) ends the sleeps
    /// whose deadline it passed, and no other sleeper runs at all; a step back wakes each one,
    /// since each must move what it planned on the old clock — by how far the clock now lies
    /// behind where it stood when the plans were made: 900 s forward (a resume whose clock
    /// overshot), then 1,020 s back, is 120 s back.
    #[tokio::test(start_paused = true)]
    async fn a_step_forward_wakes_only_the_sleepers_it_made_due() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, handle) = manual::clock(t0);
        let (soon_polls, soon) = counted_sleeper(&clock, t0 + S(600));
        let later: Vec<_> = (1..=100).map(|i| counted_sleeper(&clock, t0 + S(3600 + i))).collect();
        tokio::time::sleep(S(10)).await;
        assert!(later.iter().all(|(polls, _)| polls.load(Ordering::Relaxed) == 1));
        handle.jump_forward(S(900));
        let jumped = tokio::time::Instant::now();
        assert_eq!(soon.await.unwrap(), Wake::Deadline);
        assert_eq!(jumped.elapsed(), S(0));
        assert_eq!(soon_polls.load(Ordering::Relaxed), 2);
        tokio::time::sleep(S(10)).await;
        let woken = later
            .iter()
            .filter(|(polls, _)| polls.load(Ordering::Relaxed) > 1)
            .count();
        assert_eq!(woken, 0, "sleepers still short of their deadline were woken");

        handle.jump_back(S(1020));
        for (polls, task) in later {
            assert_eq!(task.await.unwrap(), Wake::SteppedBack(S(120)));
            assert_eq!(polls.load(Ordering::Relaxed), 2);
        }
        assert_eq!(jumped.elapsed(), S(10), "a step back is seen at once");
    }

    /// Each sleep measures a step against the reading its plans were made on, not against
    /// when the step was noticed: plans made before a step and slept on after it (their task
    /// was waiting for the IdP then) end at once, moved by exactly as much; a sleep planned
    /// after the step, woken when the driver notices it, sleeps on to its deadline; and one
    /// that straddles the step moves by it once.
    #[tokio::test(start_paused = true)]
    async fn a_step_back_is_measured_against_the_plans_own_reading() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, handle) = manual::clock(t0);
        let (_, straddling) = counted_sleeper(&clock, t0 + S(7200));
        let planned_before = clock.read();
        tokio::time::sleep(S(10)).await;
        handle.jump_back_unreported(S(600));
        assert_eq!(
            clock.sleep_until(t0 + S(3600), planned_before).await,
            Wake::SteppedBack(S(600)),
            "a sleep begun after the step on plans made before it"
        );
        assert!(!straddling.is_finished(), "woken before the step was noticed");
        // Its earlier deadline turns the driver, which notices the step and wakes every sleeper.
        let (late_polls, planned_after) = counted_sleeper(&clock, clock.now() + S(60));
        assert_eq!(straddling.await.unwrap(), Wake::SteppedBack(S(600)));
        // The watcher's report, late: nothing more to wake.
        handle.report();
        tokio::time::sleep(S(1)).await;
        assert_eq!(late_polls.load(Ordering::Relaxed), 2, "woken once, by the driver");
        assert!(!planned_after.is_finished(), "a step it planned after ended its sleep");
        let noticed = tokio::time::Instant::now();
        assert_eq!(planned_after.await.unwrap(), Wake::Deadline);
        assert_eq!(noticed.elapsed(), S(59));
        assert_eq!(late_polls.load(Ordering::Relaxed), 3);
    }

    /// A sleep given up (its task cancelled) leaves the queue, and one that ends on time
    /// leaves nothing behind either.
    #[tokio::test(start_paused = true)]
    async fn sleeps_leave_the_queue_when_they_end_or_are_dropped() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, _handle) = manual::clock(t0);
        let dropped = tokio::time::timeout(S(5), clock.sleep_until(t0 + S(3600), clock.read())).await;
        assert!(dropped.is_err());
        assert_eq!(clock.sleep_until(t0 + S(65), clock.read()).await, Wake::Deadline);
        assert!(clock.timers.queue().sleepers.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_returns_at_once_for_a_past_deadline() {
        let start = tokio::time::Instant::now();
        assert_eq!(
            Clock::system()
                .sleep_until(SystemTime::now() - S(5), Clock::system().read())
                .await,
            Wake::Deadline
        );
        assert_eq!(start.elapsed(), S(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_on_time_without_jumps() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        let (clock, _) = manual::clock(t0);
        let start = tokio::time::Instant::now();
        assert_eq!(clock.sleep_until(t0 + S(95), clock.read()).await, Wake::Deadline);
        assert_eq!(start.elapsed(), S(95));
        assert_eq!(clock.now(), t0 + S(95));
    }

    /// The idle cost: a day-long sleep reads the clock as often as a minute-long one (when it
    /// starts and when it ends, the driver's too), not every so often in between (a sleeper
    /// used to wake every 30 s: 2,880 times a day).
    #[tokio::test(start_paused = true)]
    async fn a_long_sleep_does_no_work_until_its_deadline() {
        async fn reads_for(length: Duration) -> usize {
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
            assert_eq!(clock.sleep_until(t0 + length, clock.read()).await, Wake::Deadline);
            assert_eq!(began.elapsed(), length);
            reads.load(Ordering::Relaxed)
        }
        let (minute, day) = (reads_for(S(60)).await, reads_for(S(86_400)).await);
        assert_eq!(
            day, minute,
            "a day's sleep read the clock {day} times, a minute's {minute}"
        );
        assert!(day <= 6, "{day} clock reads");
    }
}
