//! Announcements of new tokens, by channel: the subscriber (one connection per process)
//! delivers each message to its channel here, and the fleet group that listens on that channel
//! (each group has a channel of its own) takes it. Only the newest message of a channel is kept,
//! and only until it is taken: a group does not hold a token's sealed copy between refreshes.
//! The subscriber subscribes to every channel someone holds, and drops a channel when its last
//! holder goes (a reload).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

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
    slot: Arc<Slot>,
    holders: usize,
}

/// A channel's newest message not yet taken.
#[derive(Default)]
struct Slot {
    message: Mutex<Option<Arc<[u8]>>>,
    arrived: Notify,
}

impl Announcements {
    /// Starts listening on `channel`.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        let mut channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = match channels.get_mut(channel) {
            Some(entry) => {
                entry.holders += 1;
                entry.slot.clone()
            }
            None => {
                let slot = Arc::new(Slot::default());
                channels.insert(
                    channel.to_owned(),
                    Entry {
                        slot: slot.clone(),
                        holders: 1,
                    },
                );
                self.inner.changed.notify_one();
                slot
            }
        };
        Subscription {
            announcements: self.clone(),
            channel: channel.to_owned(),
            slot,
        }
    }

    /// Hands a message to whoever listens on `channel` (replacing one not yet taken).
    pub fn deliver(&self, channel: &str, payload: &[u8]) {
        let channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = channels.get(channel) {
            *entry.slot.message.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload.into());
            entry.slot.arrived.notify_one();
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

/// A group's place on its channel; leaving it (dropping) unsubscribes once no one else holds
/// the channel.
pub struct Subscription {
    announcements: Announcements,
    channel: String,
    slot: Arc<Slot>,
}

impl Subscription {
    /// Waits for the next announcement on the channel and takes it.
    pub async fn next(&mut self) -> Arc<[u8]> {
        let slot = self.slot.clone();
        loop {
            // Registered before the look: a message delivered in between leaves a permit.
            let arrived = slot.arrived.notified();
            if let Some(message) = slot.message.lock().unwrap_or_else(PoisonError::into_inner).take() {
                return message;
            }
            arrived.await;
        }
    }

    /// The newest announcement not yet taken, if one came.
    pub fn take(&mut self) -> Option<Arc<[u8]>> {
        self.slot.message.lock().unwrap_or_else(PoisonError::into_inner).take()
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
    async fn a_group_takes_the_newest_message_of_its_channel_once_and_leaving_unsubscribes() {
        let a = Announcements::default();
        let mut one = a.subscribe("tokend:x:a:fp:k:new");
        let mut other = a.subscribe("tokend:x:b:fp:k:new");
        let mut listed = a.channels();
        listed.sort();
        assert_eq!(listed, ["tokend:x:a:fp:k:new", "tokend:x:b:fp:k:new"]);
        a.deliver("tokend:x:a:fp:k:new", b"first");
        a.deliver("tokend:x:a:fp:k:new", b"second");
        a.deliver("tokend:x:nobody:fp:k:new", b"lost");
        assert_eq!(&*one.next().await, b"second");
        assert_eq!(one.take(), None, "taken once, then gone");
        assert_eq!(other.take(), None);
        // A message that comes while a group waits wakes it.
        let waiting = tokio::spawn(async move { one.next().await });
        tokio::task::yield_now().await;
        a.deliver("tokend:x:a:fp:k:new", b"third");
        assert_eq!(&*waiting.await.unwrap(), b"third");
        assert_eq!(
            a.channels(),
            ["tokend:x:b:fp:k:new"],
            "the waiting group was dropped with its task"
        );
        drop(other);
        assert!(a.channels().is_empty());
        // The changes were announced to the subscriber (a permit is kept for it).
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed())
            .await
            .unwrap();
    }
}
