//! Announcements of new tokens, by channel: the subscriber (one connection per process)
//! delivers each message to its channel here, and each fleet group holds a `Subscription` to
//! its own channel, which keeps only the newest message. The subscriber subscribes to every
//! channel someone holds, and drops a channel when its last holder goes (a reload).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, watch};

/// The newest sealed value announced on a channel.
pub type Announced = Option<Arc<[u8]>>;

/// Cloning shares the registry.
#[derive(Clone, Default)]
pub struct Announcements {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: Mutex<HashMap<String, Entry>>,
    /// Told when the set of channels changes, for the subscriber.
    changed: Notify,
}

struct Entry {
    tx: watch::Sender<Announced>,
    holders: usize,
}

impl Announcements {
    /// Starts listening on `channel`.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        let mut channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = match channels.get_mut(channel) {
            Some(entry) => {
                entry.holders += 1;
                entry.tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(None);
                channels.insert(channel.to_owned(), Entry { tx, holders: 1 });
                self.inner.changed.notify_one();
                rx
            }
        };
        Subscription {
            announcements: self.clone(),
            channel: channel.to_owned(),
            rx,
        }
    }

    /// Hands a message to whoever listens on `channel`.
    pub fn deliver(&self, channel: &str, payload: &[u8]) {
        let channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = channels.get(channel) {
            entry.tx.send_replace(Some(payload.into()));
        }
    }

    /// Every channel someone listens on.
    pub fn channels(&self) -> Vec<String> {
        let channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.keys().cloned().collect()
    }

    /// Returns once the set of channels has changed since the last call returned.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    fn release(&self, channel: &str) {
        let mut channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = channels.get_mut(channel) {
            entry.holders -= 1;
            if entry.holders == 0 {
                channels.remove(channel);
                self.inner.changed.notify_one();
            }
        }
    }
}

/// One group's place on its channel; leaving it (dropping) unsubscribes once no one else holds
/// the channel.
pub struct Subscription {
    announcements: Announcements,
    channel: String,
    rx: watch::Receiver<Announced>,
}

impl Subscription {
    /// Waits for the next announcement on the channel and returns it. Pending forever if the
    /// registry is gone.
    pub async fn next(&mut self) -> Arc<[u8]> {
        loop {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(value) = self.rx.borrow_and_update().clone() {
                return value;
            }
        }
    }

    /// The newest announcement not yet seen, if one came.
    pub fn take(&mut self) -> Option<Arc<[u8]>> {
        if self.rx.has_changed().unwrap_or(false) {
            return self.rx.borrow_and_update().clone();
        }
        None
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.announcements.release(&self.channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_holder_gets_the_newest_message_of_its_channel_and_the_last_one_out_unsubscribes() {
        let a = Announcements::default();
        let mut one = a.subscribe("tokend:x:a:fp:new");
        let mut two = a.subscribe("tokend:x:a:fp:new");
        let mut other = a.subscribe("tokend:x:b:fp:new");
        let mut listed = a.channels();
        listed.sort();
        assert_eq!(listed, ["tokend:x:a:fp:new", "tokend:x:b:fp:new"]);
        a.deliver("tokend:x:a:fp:new", b"first");
        a.deliver("tokend:x:a:fp:new", b"second");
        a.deliver("tokend:x:nobody:fp:new", b"lost");
        assert_eq!(&*one.next().await, b"second");
        assert_eq!(two.take().as_deref(), Some(&b"second"[..]));
        assert_eq!(two.take(), None);
        assert_eq!(other.take(), None);
        drop(one);
        assert_eq!(a.channels().len(), 2);
        drop(two);
        assert_eq!(a.channels(), ["tokend:x:b:fp:new"]);
        // The changes were announced to the subscriber (a permit is kept for it).
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed())
            .await
            .unwrap();
    }
}
