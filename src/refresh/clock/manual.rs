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
