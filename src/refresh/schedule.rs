//! Deadline math for refreshes and retries: pure (values in, values out) and table-tested;
//! randomness comes in as a sample argument. (Sleeping on the wall clock is `clock`'s.)

use std::time::{Duration, SystemTime};

use crate::config::{RefreshPolicy, RetryPolicy};

/// No retry comes sooner than this after a failure, however the jitter falls.
pub const MIN_RETRY: Duration = Duration::from_millis(100);

/// `Retry-After` is honoured up to this long (or `retry.max`, if longer), so that a hostile or
/// broken server cannot park a client for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// When to refresh a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPlan {
    pub at: SystemTime,
    /// The lifetime is too short to refresh `min_remaining` before expiry; tokend refreshes at
    /// half the lifetime instead, rather than refreshing in a tight loop.
    pub min_remaining_unmet: bool,
}

/// The refresh time of a token issued at `issued` and expiring at `expires`: `policy.at` of the
/// lifetime, moved by `policy.jitter` × lifetime × `sample` (`sample` in [-1, 1]), but no later
/// than `min_remaining` before expiry — unless that would be before half the lifetime.
pub fn refresh_at(issued: SystemTime, expires: SystemTime, policy: &RefreshPolicy, sample: f64) -> RefreshPlan {
    let lifetime = expires.duration_since(issued).unwrap_or(Duration::ZERO);
    let fraction = (policy.at + policy.jitter * sample.clamp(-1.0, 1.0)).clamp(0.0, 1.0);
    let planned = issued + lifetime.mul_f64(fraction);
    let latest = expires.checked_sub(policy.min_remaining).unwrap_or(issued).max(issued);
    if planned <= latest {
        return RefreshPlan {
            at: planned,
            min_remaining_unmet: false,
        };
    }
    let floor = (issued + lifetime / 2).min(planned);
    RefreshPlan {
        at: latest.max(floor),
        min_remaining_unmet: latest < floor,
    }
}

/// How a failure backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// A failure that may pass (the network, a 5xx, a rate limit): exponentially, with jitter.
    Exponential,
    /// A failure that retrying soon cannot mend (bad credentials): the maximum at once.
    Maximum,
}

/// How long to wait after the `attempt`-th consecutive failure (1-based).
///
/// `Exponential` backs off with full jitter: a uniformly random delay in [0, cap] (`sample` in
/// [0, 1)), where the cap starts at `initial` and doubles per attempt up to `max`, so a fleet
/// that failed together does not retry together. Delays never go below `MIN_RETRY`. `Maximum`
/// waits `max` at once. A `Retry-After` from the server is a floor.
pub fn retry_delay(
    policy: &RetryPolicy,
    backoff: Backoff,
    attempt: u32,
    retry_after: Option<Duration>,
    sample: f64,
) -> Duration {
    let backoff = match backoff {
        Backoff::Maximum => policy.max,
        Backoff::Exponential => {
            let doublings = attempt.saturating_sub(1).min(30);
            let cap = policy.initial.saturating_mul(1 << doublings).min(policy.max);
            cap.mul_f64(sample.clamp(0.0, 1.0)).max(MIN_RETRY)
        }
    };
    match retry_after {
        Some(ra) => backoff.max(honoured_retry_after(policy, ra)),
        None => backoff,
    }
}

/// As much of a `Retry-After` as is honoured: up to `RETRY_AFTER_CAP` or `retry.max`.
pub fn honoured_retry_after(policy: &RetryPolicy, retry_after: Duration) -> Duration {
    retry_after.min(RETRY_AFTER_CAP.max(policy.max))
}

/// A token whose issue time lies in the future means the clock stepped backwards since it was
/// obtained: its expiry can no longer be trusted, so it is refreshed at once.
pub fn clock_went_back(issued: SystemTime, now: SystemTime) -> bool {
    issued
        .duration_since(now)
        .is_ok_and(|ahead| ahead > Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy(at: f64, jitter: f64, min_remaining: u64) -> RefreshPolicy {
        RefreshPolicy {
            at,
            jitter,
            min_remaining: S(min_remaining),
            default_lifetime: S(300),
        }
    }

    #[test]
    fn refresh_time_table() {
        let t0 = UNIX_EPOCH + S(1_000_000);
        // (lifetime s, at, jitter, min_remaining s, sample, expected refresh offset s, unmet)
        let cases: &[(u64, f64, f64, u64, f64, f64, bool)] = &[
            (3600, 0.8, 0.1, 120, 0.0, 2880.0, false),  // 80% of an hour
            (3600, 0.8, 0.1, 120, 1.0, 3240.0, false),  // +10% of lifetime
            (3600, 0.8, 0.1, 120, -1.0, 2520.0, false), // -10% of lifetime
            (3600, 0.8, 0.1, 120, 0.5, 3060.0, false),
            (86400, 0.8, 0.1, 7200, 1.0, 77760.0, false), // 90% leaves 2.4h > 2h: fine
            (600, 0.8, 0.1, 120, 1.0, 480.0, false),      // 90% = 540 > 600-120: capped at 480
            (300, 0.8, 0.0, 120, 0.0, 180.0, false),      // min_remaining wins: 300-120
            (60, 0.8, 0.1, 120, 0.0, 30.0, true),         // lifetime < min_remaining: half-life
            (200, 0.8, 0.0, 120, 0.0, 100.0, true),       // 200-120=80 < 100: half-life
            (60, 0.3, 0.0, 120, 0.0, 18.0, true),         // already before half-life: unchanged
            (0, 0.8, 0.1, 120, 0.0, 0.0, false),          // expired on arrival: now
        ];
        for (i, &(life, at, jitter, min_rem, sample, expected, unmet)) in cases.iter().enumerate() {
            let plan = refresh_at(t0, t0 + S(life), &policy(at, jitter, min_rem), sample);
            let offset = plan.at.duration_since(t0).unwrap().as_secs_f64();
            assert!(
                (offset - expected).abs() < 1e-6,
                "case {i}: got {offset}, want {expected}"
            );
            assert_eq!(plan.min_remaining_unmet, unmet, "case {i}");
        }
    }

    #[test]
    fn jitter_spreads_refreshes_over_the_whole_window() {
        let t0 = UNIX_EPOCH;
        let p = policy(0.8, 0.1, 0);
        let offsets: Vec<f64> = (0..=20)
            .map(|i| {
                let sample = -1.0 + i as f64 / 10.0;
                refresh_at(t0, t0 + S(1000), &p, sample)
                    .at
                    .duration_since(t0)
                    .unwrap()
                    .as_secs_f64()
            })
            .collect();
        assert_eq!(offsets.first(), Some(&700.0));
        assert_eq!(offsets.last(), Some(&900.0));
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn retry_delay_table() {
        let p = RetryPolicy {
            initial: S(1),
            max: S(300),
        };
        use Backoff::*;
        // (backoff, attempt, retry_after, sample, expected)
        let cases: &[(Backoff, u32, Option<u64>, f64, f64)] = &[
            (Exponential, 1, None, 0.5, 0.5),       // first retry: [0, initial]
            (Exponential, 1, None, 0.0, 0.1),       // never below MIN_RETRY
            (Exponential, 2, None, 1.0, 2.0),       // [0, 2]
            (Exponential, 4, None, 0.5, 4.0),       // [0, 8]
            (Exponential, 20, None, 1.0, 300.0),    // capped at max
            (Exponential, 500, None, 0.5, 150.0),   // no overflow
            (Maximum, 1, None, 0.0, 300.0),         // invalid_client: straight to max
            (Exponential, 1, Some(30), 0.0, 30.0),  // Retry-After is a floor
            (Exponential, 9, Some(30), 1.0, 256.0), // backoff already longer
            (Exponential, 9, Some(30), 0.0, 30.0),
            (Exponential, 1, Some(86400), 0.0, 3600.0), // capped
            (Maximum, 1, Some(900), 0.0, 900.0),
        ];
        for (i, &(backoff, attempt, ra, sample, expected)) in cases.iter().enumerate() {
            let d = retry_delay(&p, backoff, attempt, ra.map(S), sample);
            assert!(
                (d.as_secs_f64() - expected).abs() < 1e-6,
                "case {i}: got {d:?}, want {expected}"
            );
        }
    }

    #[test]
    fn clock_leap_detection() {
        let now = UNIX_EPOCH + S(1000);
        assert!(!clock_went_back(now - S(500), now));
        assert!(!clock_went_back(now, now));
        assert!(!clock_went_back(now + Duration::from_millis(500), now));
        assert!(clock_went_back(now + S(60), now));
    }
}
