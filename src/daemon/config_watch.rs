//! Reloading when the configuration file changes (`run --watch-config`), for Kubernetes, where a
//! ConfigMap update arrives without a signal: the kubelet writes the new files into a fresh
//! directory and swaps the `..data` symlink next to `config.yaml`. inotify on the file's
//! directory (and on its symlink target's, when that is elsewhere) wakes tokend; once the
//! events have settled, a file whose content differs from the last one seen is reloaded exactly
//! as on SIGHUP. Events that leave the content as it was (a `touch`, an unrelated file in the
//! directory) change nothing. The file is also looked at every `POLL_EVERY` without an event,
//! so a watch the kernel dropped (its directory removed and made again) does not end watching.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::refresh::fingerprint::sha256_hex;

/// Events are collected this long after the first before the file is read: an editor's save or
/// the kubelet's swap is several steps.
pub const SETTLE: Duration = Duration::from_millis(500);
/// Without events, the file is looked at this often anyway: a watch can be lost (its directory
/// removed and made again, a mount replaced) without a word from the kernel.
pub const POLL_EVERY: Duration = Duration::from_secs(30);

pub struct ConfigWatch {
    path: PathBuf,
    inotify: Arc<Inotify>,
    /// One message per batch of events, from the thread that blocks reading them (a thread
    /// rather than tokio's reactor, which would need `unsafe` to register the descriptor).
    events: mpsc::Receiver<()>,
    /// The directories watched, with their watch descriptors.
    watching: Vec<(PathBuf, WatchDescriptor)>,
    /// The digest of the content last seen (`None`: unreadable).
    seen: Option<String>,
    /// Events arrived; the file is read at this instant.
    settling: Option<tokio::time::Instant>,
    /// When the file was last looked at without an event, and how often it is.
    polled: tokio::time::Instant,
    poll: Duration,
}

impl ConfigWatch {
    /// Starts watching `path`, taking its current content as seen.
    pub fn new(path: &Path) -> std::io::Result<ConfigWatch> {
        ConfigWatch::polling(path, POLL_EVERY)
    }

    /// As `new`, looking at the file every `poll` without an event.
    fn polling(path: &Path, poll: Duration) -> std::io::Result<ConfigWatch> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let (tx, events) = mpsc::channel(1);
        let reader = inotify.clone();
        std::thread::Builder::new().name("config-watch".into()).spawn(move || {
            loop {
                match reader.read_events() {
                    // Full means a wake-up is already pending: enough.
                    Ok(_) => match tx.try_send(()) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                        Err(mpsc::error::TrySendError::Closed(())) => return,
                    },
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        warn!(error = %e, "cannot read configuration file events; no longer watching");
                        return;
                    }
                }
            }
        })?;
        let mut watch = ConfigWatch {
            path: path.to_owned(),
            inotify,
            events,
            watching: Vec::new(),
            seen: digest(path),
            settling: None,
            polled: tokio::time::Instant::now(),
            poll,
        };
        watch.rewatch()?;
        Ok(watch)
    }

    /// Waits until the file's content has changed since it was last seen.
    ///
    /// Cancel-safe, as a `select!` loop needs: what it has seen is kept in `self` between
    /// awaits, so a call dropped half-way through a settling batch is finished by the next.
    pub async fn changed(&mut self) {
        loop {
            let Some(deadline) = self.settling else {
                // An event, or the poll: a watch the kernel dropped (its directory replaced or
                // removed) must not end watching for good.
                let poll_at = self.polled + self.poll;
                tokio::select! {
                    _ = self.next_events() => {}
                    _ = tokio::time::sleep_until(poll_at) => {}
                }
                self.polled = tokio::time::Instant::now();
                // Let the rest of a save or a swap happen, then look.
                self.settling = Some(tokio::time::Instant::now() + SETTLE);
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                // Later events of the same batch: taken, the deadline stays.
                _ = self.next_events() => continue,
            }
            self.settling = None;
            if let Err(e) = self.rewatch() {
                warn!(config = %self.path.display(), error = %e, "cannot watch the configuration's directory");
            }
            let now = digest(&self.path);
            if now != self.seen {
                debug!(config = %self.path.display(), "the configuration file changed");
                self.seen = now;
                return;
            }
        }
    }

    async fn next_events(&mut self) {
        if self.events.recv().await.is_none() {
            // The reader thread ended (and said why): never wake again.
            std::future::pending::<()>().await;
        }
    }

    /// Watches the directory of the path and of its resolved target (the ConfigMap's current
    /// timestamped directory, which the next update replaces). Every directory is added again
    /// each time: the kernel hands back the same descriptor for the same directory and a new one
    /// for a directory that was replaced, whose old watch it dropped.
    fn rewatch(&mut self) -> std::io::Result<()> {
        let mut dirs: Vec<PathBuf> = self.path.parent().map(Path::to_owned).into_iter().collect();
        if let Ok(target) = std::fs::canonicalize(&self.path)
            && let Some(dir) = target.parent()
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_owned());
        }
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ATTRIB;
        let mut watching = Vec::new();
        let mut failed = None;
        for dir in dirs {
            match self.inotify.add_watch(&dir, flags) {
                Ok(wd) => watching.push((dir, wd)),
                // The others are still watched; the poll (`POLL_EVERY`) tries again.
                Err(e) => failed = Some(std::io::Error::other(format!("{}: {e}", dir.display()))),
            }
        }
        for (_, wd) in std::mem::replace(&mut self.watching, watching) {
            if !self.watching.iter().any(|(_, w)| *w == wd) {
                // Ignored: the directory may be gone already, and its watch with it.
                let _ = self.inotify.rm_watch(wd);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

fn digest(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|bytes| sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Waits for the next change, at most `timeout`; `true` if there was one.
    async fn changes_within(watch: &mut ConfigWatch, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, watch.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn a_configmap_style_swap_and_an_edit_are_seen_and_a_touch_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // As the kubelet lays out a ConfigMap volume: config.yaml -> ..data/config.yaml, and
        // ..data -> ..<timestamp>.
        std::fs::create_dir(d.join("..2026_01")).unwrap();
        std::fs::write(d.join("..2026_01/config.yaml"), "first").unwrap();
        symlink("..2026_01", d.join("..data")).unwrap();
        symlink("..data/config.yaml", d.join("config.yaml")).unwrap();
        let mut watch = ConfigWatch::new(&d.join("config.yaml")).unwrap();

        // The update: a new directory, a new symlink renamed over ..data, the old directory gone.
        std::fs::create_dir(d.join("..2026_02")).unwrap();
        std::fs::write(d.join("..2026_02/config.yaml"), "second").unwrap();
        symlink("..2026_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_01")).unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(5)).await,
            "the swap was missed"
        );

        // A wait dropped while the batch settles (another branch of a select! won) loses
        // nothing: the next wait reports the change.
        std::fs::create_dir(d.join("..2026_03")).unwrap();
        std::fs::write(d.join("..2026_03/config.yaml"), "third").unwrap();
        symlink("..2026_03", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_02")).unwrap();
        assert!(
            !changes_within(&mut watch, SETTLE / 2).await,
            "reported before settling"
        );
        assert!(watch.settling.is_some(), "the wait was not dropped while settling");
        assert!(
            changes_within(&mut watch, Duration::from_secs(5)).await,
            "the change was lost with the dropped wait"
        );

        // The same content again (a touch): no change.
        std::fs::write(d.join("..2026_03/config.yaml"), "third").unwrap();
        assert!(
            !changes_within(&mut watch, SETTLE * 3).await,
            "a touch counted as a change"
        );

        // An edit in place, on a plain file.
        let plain = d.join("plain.yaml");
        std::fs::write(&plain, "a").unwrap();
        let mut watch = ConfigWatch::new(&plain).unwrap();
        std::fs::write(&plain, "b").unwrap();
        assert!(
            changes_within(&mut watch, Duration::from_secs(5)).await,
            "the edit was missed"
        );
    }

    /// The watched directory removed and made again: the kernel drops the watch on the old
    /// one, and no event comes from the new one. The poll finds the new content.
    #[tokio::test]
    async fn a_directory_made_again_is_found_by_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        let remake = |content: &str| {
            let _ = std::fs::remove_dir_all(&conf);
            std::fs::create_dir(&conf).unwrap();
            std::fs::write(conf.join("config.yaml"), content).unwrap();
        };
        for (poll, seen) in [(Duration::from_secs(1), true), (Duration::from_secs(3600), false)] {
            remake("first");
            let mut watch = ConfigWatch::polling(&conf.join("config.yaml"), poll).unwrap();
            std::fs::remove_dir_all(&conf).unwrap();
            // Gone is a change too (the reload reports the missing file and keeps running).
            assert!(
                changes_within(&mut watch, Duration::from_secs(5)).await,
                "the removal was missed"
            );
            remake("second");
            // Without the poll the new directory stays unseen: the poll is what finds it.
            assert_eq!(
                changes_within(&mut watch, Duration::from_secs(3)).await,
                seen,
                "polling every {poll:?}"
            );
        }
    }
}
