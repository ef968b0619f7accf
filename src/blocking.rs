//! Blocking work (tar extraction, hashing) that stops when the future awaiting it is
//! dropped, and is waited for, so it never outlives what its caller cleans up next (a
//! scratch directory an extraction would otherwise re-create after Ctrl-C removed it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Set when the caller has gone; long-running work checks it between pieces.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A reader that fails once the caller has gone, so any read loop stops at its next read.
    pub fn reader<R: std::io::Read>(&self, inner: R) -> CancelRead<R> {
        CancelRead { inner, cancel: self.clone() }
    }
}

pub struct CancelRead<R> {
    inner: R,
    cancel: Cancel,
}

impl<R: std::io::Read> std::io::Read for CancelRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_set() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

/// How long a dropped caller waits for the work to notice.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs `work` on a blocking thread. If the returned future is dropped first, the work is
/// cancelled and the drop waits (at most 5 s) until it has returned.
pub async fn run<T, F>(work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Cancel) -> T + Send + 'static,
{
    let cancel = Cancel::default();
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let mut waiter = Waiter { cancel: cancel.clone(), done: done.clone(), finished: false };
    let task = tokio::task::spawn_blocking(move || {
        let result = work(&cancel);
        let (lock, cvar) = &*done;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        result
    });
    let result = task.await;
    waiter.finished = true;
    Ok(result?)
}

struct Waiter {
    cancel: Cancel,
    done: Arc<(Mutex<bool>, Condvar)>,
    finished: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.cancel.0.store(true, Ordering::Relaxed);
        let (lock, cvar) = &*self.done;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cvar.wait_timeout_while(guard, DRAIN, |done| !*done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dropped_caller_stops_the_work_and_waits_for_it() {
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = stopped.clone();
        let work = run(move |cancel| {
            while !cancel.is_set() {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(200)); // cleanup after noticing
            seen.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        assert!(tokio::time::timeout(Duration::from_millis(100), work).await.is_err());
        // The timeout dropped the future: by now the work has noticed and returned.
        assert!(stopped.load(Ordering::SeqCst), "the drop returned before the work stopped");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn finished_work_returns_its_value() {
        assert_eq!(run(|_| 42).await.unwrap(), 42);
    }
}
