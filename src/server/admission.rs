//! Who gets a connection. Every caller counts against `max_connections`; beyond that, a caller
//! that may read nothing (a "stranger": allowed to connect by the socket's mode, listed nowhere)
//! may hold only a few connections, a reader at most `max_connections_per_user`, and root and
//! tokend's own user have a small reserve above the cap. So no single local user, and certainly
//! no stranger, can starve the readers. A refused connection is answered 503 at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections a caller who may read nothing can hold (enough for health checks).
pub const STRANGER_CONNECTIONS: usize = 4;
/// Connections root and tokend's own user may open above the cap.
pub const PRIVILEGED_RESERVE: usize = 32;

/// How much a caller is trusted, from the access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Privileged,
    Reader,
    Stranger,
}

/// The settings a reload may change on a running listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_user: usize,
    /// Deadline for each request head (also closes idle keep-alive connections).
    pub header_timeout: Duration,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

pub struct Admission {
    counts: Mutex<Counts>,
    limits: Mutex<Limits>,
}

/// Why a connection was refused, for the log and the 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AtCapacity,
    TooManyForUser(usize),
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            counts: Mutex::default(),
            limits: Mutex::new(limits),
        })
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().expect("admission lock poisoned") = limits;
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().expect("admission lock poisoned")
    }

    /// Admits a connection from `uid`, or says why not. The connection counts until the guard
    /// is dropped.
    pub fn admit(self: &Arc<Self>, uid: u32, class: Class) -> Result<Guard, Refusal> {
        let limits = *self.limits.lock().expect("admission lock poisoned");
        let mut counts = self.counts.lock().expect("admission lock poisoned");
        let mine = counts.per_uid.get(&uid).copied().unwrap_or(0);
        let (cap, per_user) = match class {
            Class::Privileged => (limits.max_connections + PRIVILEGED_RESERVE, usize::MAX),
            Class::Reader => (limits.max_connections, limits.max_per_user),
            Class::Stranger => (limits.max_connections, STRANGER_CONNECTIONS.min(limits.max_per_user)),
        };
        if mine >= per_user {
            return Err(Refusal::TooManyForUser(per_user));
        }
        if counts.total >= cap {
            return Err(Refusal::AtCapacity);
        }
        counts.total += 1;
        *counts.per_uid.entry(uid).or_default() += 1;
        Ok(Guard {
            admission: self.clone(),
            uid,
        })
    }

    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.counts.lock().expect("admission lock poisoned").total
    }
}

/// One admitted connection.
pub struct Guard {
    admission: Arc<Admission>,
    uid: u32,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock().expect("admission lock poisoned");
        counts.total -= 1;
        if let Some(n) = counts.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Rate limit for refusal log lines: the first refusal of a (uid, what) pair is logged, then at
/// most one line a minute for it, carrying the number of refusals not logged in between. Keeps a
/// refused caller in a loop from flooding the journal (and drowning tokend's real errors).
#[derive(Default)]
pub struct RefusalLog {
    seen: Mutex<HashMap<(u32, String), (Instant, u64)>>,
}

impl RefusalLog {
    const PERIOD: Duration = Duration::from_secs(60);

    /// `Some(suppressed since the last line)` if this refusal should be logged.
    pub fn should_log(&self, uid: u32, what: &str) -> Option<u64> {
        let mut seen = self.seen.lock().expect("refusal log lock poisoned");
        if seen.len() > 10_000 {
            seen.clear();
        }
        let now = Instant::now();
        match seen.get_mut(&(uid, what.to_owned())) {
            None => {
                seen.insert((uid, what.to_owned()), (now, 0));
                Some(0)
            }
            Some((last, count)) if now.duration_since(*last) >= Self::PERIOD => {
                let suppressed = *count;
                (*last, *count) = (now, 0);
                Some(suppressed)
            }
            Some((_, count)) => {
                *count += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_class_and_user() {
        let a = Admission::new(Limits {
            max_connections: 10,
            max_per_user: 6,
            header_timeout: Duration::from_secs(1),
        });
        let strangers: Vec<_> = (0..STRANGER_CONNECTIONS)
            .map(|_| a.admit(7, Class::Stranger).unwrap())
            .collect();
        assert_eq!(
            a.admit(7, Class::Stranger).err(),
            Some(Refusal::TooManyForUser(STRANGER_CONNECTIONS))
        );
        let readers: Vec<_> = (0..6).map(|_| a.admit(8, Class::Reader).unwrap()).collect();
        assert_eq!(a.admit(8, Class::Reader).err(), Some(Refusal::TooManyForUser(6)));
        assert_eq!(a.admit(9, Class::Reader).err(), Some(Refusal::AtCapacity));
        // Root still gets in, up to the reserve.
        let root: Vec<_> = (0..PRIVILEGED_RESERVE)
            .map(|_| a.admit(0, Class::Privileged).unwrap())
            .collect();
        assert_eq!(a.admit(0, Class::Privileged).err(), Some(Refusal::AtCapacity));
        assert_eq!(a.open_connections(), 10 + PRIVILEGED_RESERVE);
        drop((strangers, readers, root));
        assert_eq!(a.open_connections(), 0);
        assert!(a.admit(9, Class::Reader).is_ok());
    }

    #[test]
    fn refusals_are_logged_once_a_minute_with_a_count() {
        let log = RefusalLog::default();
        assert_eq!(log.should_log(5, "billing"), Some(0));
        assert_eq!(log.should_log(5, "billing"), None);
        assert_eq!(log.should_log(5, "billing"), None);
        assert_eq!(log.should_log(5, "other"), Some(0));
        assert_eq!(log.should_log(6, "billing"), Some(0));
    }
}
