//! One writer per file at a time, process-wide. A task stopped by a reload may still be inside a
//! write (a hung NFS mount) when the task replacing it writes the same file: whoever comes second
//! waits, and the stopped task checks that it is still wanted once it holds the file (see
//! `Publisher`), so an old write can never land over a newer one. Waiting blocks the thread:
//! hold files only on blocking threads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};

static BUSY: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);
static FREED: Condvar = Condvar::new();

/// `path`, held by this thread until dropped.
#[must_use = "the file is released when this is dropped"]
pub struct Held {
    path: PathBuf,
}

/// Waits until no one else holds `path`, then holds it.
pub fn hold(path: &Path) -> Held {
    let mut busy = busy();
    while busy.contains(path) {
        busy = FREED.wait(busy).unwrap_or_else(PoisonError::into_inner);
    }
    busy.insert(path.to_owned());
    Held { path: path.to_owned() }
}

fn busy() -> MutexGuard<'static, HashSet<PathBuf>> {
    // The set stays consistent even if a holder panicked: entries go only in `Drop`.
    BUSY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Held {
    fn drop(&mut self) {
        busy().remove(&self.path);
        FREED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_for_the_first_and_other_paths_do_not() {
        let first = hold(Path::new("/lock-test/a"));
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _other = hold(Path::new("/lock-test/b"));
            tx.send("b").unwrap();
            let _second = hold(Path::new("/lock-test/a"));
            tx.send("a").unwrap();
        });
        assert_eq!(rx.recv().unwrap(), "b", "another path is not held up");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "a is still held");
        drop(first);
        assert_eq!(rx.recv().unwrap(), "a");
        waiter.join().unwrap();
    }
}
