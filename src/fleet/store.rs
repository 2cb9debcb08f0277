//! What the fleet asks of its shared store: five Redis commands, behind a trait so that the
//! fleet's logic is tested against an in-memory store under paused time (`Memory`), and runs
//! against Redis (the `redis` module beside this one).

use std::future::Future;
use std::time::Duration;

/// Why the store could not be used. Never holds a value (values are sealed tokens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Cannot connect, the connection broke, or no answer within the timeout.
    #[error("cannot reach the fleet store ({0})")]
    Unreachable(String),
    /// The store answered, and refused (an ACL without the command or key, a read-only
    /// replica, an unexpected answer).
    #[error("the fleet store refused: {0}")]
    Refused(String),
}

pub trait Store: Send + Sync + 'static {
    /// `GET key`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// `SET key value PX ttl`.
    fn put(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `SET key owner NX PX ttl`: whether the lock was taken.
    fn lock(&self, key: &str, owner: &str, ttl: Duration) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes `key` if it still holds `owner` (a lock that expired and was taken by another
    /// is left alone).
    fn unlock(&self, key: &str, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes `key` expire `ttl` from now if it still holds `owner`.
    fn renew(&self, key: &str, owner: &str, ttl: Duration) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `PUBLISH channel value`.
    fn publish(&self, channel: &str, value: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A store shared by reference (the subscriber holds the same Redis).
impl<T: Store> Store for std::sync::Arc<T> {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        (**self).get(key)
    }

    fn put(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put(key, value, ttl)
    }

    fn lock(&self, key: &str, owner: &str, ttl: Duration) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).lock(key, owner, ttl)
    }

    fn unlock(&self, key: &str, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).unlock(key, owner)
    }

    fn renew(&self, key: &str, owner: &str, ttl: Duration) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).renew(key, owner, ttl)
    }

    fn publish(&self, channel: &str, value: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).publish(channel, value)
    }
}

/// An in-memory store for tests: keys expire on tokio's clock, and every command is counted.
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Store, StoreError};
    use crate::fleet::announce::Announcements;

    #[derive(Default)]
    struct State {
        values: HashMap<String, (String, Instant)>,
        down: bool,
    }

    /// Cloning shares the store (as two nodes share one Redis).
    #[derive(Clone, Default)]
    pub struct Memory {
        state: Arc<Mutex<State>>,
        /// Where `publish` delivers, as a subscriber connection would.
        pub subscribers: Arc<Mutex<Vec<Announcements>>>,
    }

    impl Memory {
        fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
            let mut state = self.state.lock().unwrap();
            if state.down {
                return Err(StoreError::Unreachable("down for the test".into()));
            }
            let now = Instant::now();
            state.values.retain(|_, (_, until)| *until > now);
            Ok(f(&mut state))
        }

        pub fn set_down(&self, down: bool) {
            self.state.lock().unwrap().down = down;
        }

        pub fn raw(&self, key: &str) -> Option<String> {
            self.state.lock().unwrap().values.get(key).map(|(v, _)| v.clone())
        }

        pub fn set_raw(&self, key: &str, value: &str) {
            let until = Instant::now() + Duration::from_secs(3600);
            self.state
                .lock()
                .unwrap()
                .values
                .insert(key.to_owned(), (value.to_owned(), until));
        }
    }

    impl Store for Memory {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.with(|s| s.values.get(key).map(|(v, _)| v.clone().into_bytes()))
        }

        async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
            self.with(|s| {
                s.values
                    .insert(key.to_owned(), (value.to_owned(), Instant::now() + ttl));
            })
        }

        async fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
            self.with(|s| {
                if s.values.contains_key(key) {
                    return false;
                }
                s.values
                    .insert(key.to_owned(), (owner.to_owned(), Instant::now() + ttl));
                true
            })
        }

        async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
            self.with(|s| {
                if s.values.get(key).is_some_and(|(v, _)| v == owner) {
                    s.values.remove(key);
                }
            })
        }

        async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<(), StoreError> {
            self.with(|s| {
                if let Some((v, until)) = s.values.get_mut(key)
                    && v == owner
                {
                    *until = Instant::now() + ttl;
                }
            })
        }

        async fn publish(&self, channel: &str, value: &str) -> Result<(), StoreError> {
            self.with(|_| ())?;
            for subscribers in self.subscribers.lock().unwrap().iter() {
                subscribers.deliver(channel, value.as_bytes());
            }
            Ok(())
        }
    }
}
