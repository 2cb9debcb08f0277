//! One line that says how tokend is doing right now, for systemd's `STATUS=` (shown by
//! `systemctl status`) and the start-up log: `3/3 valid · next refresh billing in 41m · 0 failing`;
//! and `StatusUpdates`, which keeps systemd's copy of it current.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::systemd;
use crate::config::ClientName;
use crate::store::{Snapshot, Store};

/// The summary of `clients` at `now`.
pub fn line(clients: &[(ClientName, Snapshot)], now: SystemTime) -> String {
    let valid = clients.iter().filter(|(_, s)| s.valid_token(now).is_some()).count();
    let failing = clients.iter().filter(|(_, s)| s.failures > 0).count();
    let next = clients
        .iter()
        .filter_map(|(name, s)| s.next_attempt.map(|at| (at, name, s.failures > 0)))
        .min_by_key(|(at, _, _)| *at);
    let mut line = format!("{valid}/{} valid", clients.len());
    if let Some((at, name, failing)) = next {
        let action = if failing { "retry" } else { "refresh" };
        line.push_str(&format!(" · next {action} {name} {}", relative(at, now)));
    }
    line.push_str(&format!(" · {failing} failing"));
    line
}

/// `in 41m`, `in 2h 5m`, `in 45s`, `now`: to the minute beyond two minutes, else to the second.
fn relative(at: SystemTime, now: SystemTime) -> String {
    let Ok(d) = at.duration_since(now) else {
        return "now".into();
    };
    let secs = d.as_secs();
    let shown = if secs >= 120 {
        Duration::from_secs(secs / 60 * 60)
    } else {
        Duration::from_secs(secs)
    };
    if shown.is_zero() {
        "now".into()
    } else {
        format!("in {}", humantime::format_duration(shown))
    }
}

/// STATUS= at least this often, so relative times ("in 41m") stay true.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);
/// After a change, STATUS= waits this long for more changes (a start-up publishes many).
const STATUS_SETTLE: Duration = Duration::from_secs(1);

/// systemd's `STATUS=`, kept current: recomputed after changes to the store (settled) and on a
/// timer, and sent when its text changed.
pub struct StatusUpdates {
    store: Arc<Store>,
    last: String,
    /// A change was seen: send at this time, once more changes have had time to arrive.
    pending: Option<tokio::time::Instant>,
    under_systemd: bool,
}

impl StatusUpdates {
    pub fn new(store: &Arc<Store>) -> StatusUpdates {
        StatusUpdates {
            store: store.clone(),
            last: String::new(),
            pending: None,
            under_systemd: systemd::notifies(),
        }
    }

    /// Whether there is anyone to tell.
    pub fn follows(&self) -> bool {
        self.under_systemd
    }

    pub fn line(&self) -> String {
        line(&self.store.all(), SystemTime::now())
    }

    /// Start-up is over: READY, with the line, in the log and to systemd; and start-up's peak
    /// memory (the configuration's YAML tree, every first fetch) goes back to the system.
    pub fn ready(&mut self) {
        let line = self.line();
        tracing::info!(status = %line, "ready");
        systemd::ready(&line);
        self.sent(line);
        tokio::task::spawn_blocking(super::memory::release_free);
    }

    pub fn sent(&mut self, line: String) {
        self.last = line;
        self.pending = None;
    }

    pub fn changed(&mut self) {
        self.pending
            .get_or_insert_with(|| tokio::time::Instant::now() + STATUS_SETTLE);
    }

    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn flush_at(&self) -> tokio::time::Instant {
        self.pending.unwrap_or_else(tokio::time::Instant::now)
    }

    pub fn send_if_new(&mut self) {
        let line = self.line();
        if line != self.last {
            systemd::status(&line);
            self.last = line;
        }
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    #[test]
    fn the_line_counts_valid_and_failing_and_names_the_next_refresh() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let client = |name: &str, lifetime: u64, next_in: Option<u64>, failures: u32| {
            let token = (lifetime > 0).then(|| {
                Arc::new(Token::for_test(
                    "t",
                    now - Duration::from_secs(60),
                    Duration::from_secs(lifetime),
                ))
            });
            (
                ClientName::new(name).unwrap(),
                Snapshot {
                    token,
                    next_attempt: next_in.map(|s| now + Duration::from_secs(s)),
                    failures,
                    ..Snapshot::default()
                },
            )
        };
        let healthy = [
            client("billing", 3600, Some(41 * 60 + 30), 0),
            client("reports", 7200, Some(3 * 3600 + 5 * 60 + 59), 0),
            client("audit", 600, Some(90), 0),
        ];
        assert_eq!(
            line(&healthy, now),
            "3/3 valid · next refresh audit in 1m 30s · 0 failing"
        );
        let mixed = [
            client("billing", 3600, Some(41 * 60 + 30), 0),
            // Expired a minute ago and failing: its retry is the next attempt.
            client("reports", 30, Some(20), 2),
            client("pending", 0, None, 0),
        ];
        assert_eq!(line(&mixed, now), "1/3 valid · next retry reports in 20s · 1 failing");
        assert_eq!(
            line(&healthy[..1], now),
            "1/1 valid · next refresh billing in 41m · 0 failing"
        );
        assert_eq!(line(&[], now), "0/0 valid · 0 failing");
        let overdue = [client("late", 3600, Some(0), 0)];
        assert_eq!(
            line(&overdue, now + Duration::from_secs(5)),
            "1/1 valid · next refresh late now · 0 failing"
        );
    }
}
