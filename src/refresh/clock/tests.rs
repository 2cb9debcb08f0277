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
