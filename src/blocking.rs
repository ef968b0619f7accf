//! Blocking work (git2, tar extraction) run off the async runtime, so the runtime keeps
//! answering signals, and stopped when the future awaiting it is dropped (Ctrl-C): the work
//! sees [`Cancel`] set and ends at its next check. [`run_drained`] also waits for it, for
//! work that would otherwise re-create what its caller removes next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::progress::Step;

/// Blocking work stopped because the future awaiting it was dropped (Ctrl-C).
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Set when the future awaiting blocking work is dropped; the work polls it (git2's
/// callbacks return false once it is set) and stops.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_set() { Err(Cancelled) } else { Ok(()) }
    }

    /// A callback that stopped a library call makes it fail with a generic error; say why.
    pub fn explain(&self, err: impl Into<anyhow::Error>) -> anyhow::Error {
        if self.is_set() { Cancelled.into() } else { err.into() }
    }
}

struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Runs `work` on a blocking thread, so that the runtime keeps answering signals (unlike
/// `block_in_place`, which stalls the `select!` waiting for them). Dropping the returned
/// future returns at once and sets the flag; the work stops at its next check and cleans
/// up behind itself, and the runtime's shutdown waits for it to end.
pub async fn run<T: Send + 'static>(work: impl FnOnce(&Cancel) -> Result<T> + Send + 'static) -> Result<T> {
    let cancel = Cancel::default();
    let _on_drop = CancelOnDrop(cancel.clone());
    match tokio::task::spawn_blocking(move || work(&cancel)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}

/// Where blocking work sends its progress messages; the latest one is shown.
pub type Progress = tokio::sync::watch::Sender<String>;

/// [`run`] under a step of the caller's, showing the work's messages. The step
/// stays with the awaiting future, so that a Ctrl-C closes it (and clears its spinner)
/// before the error is printed, not once the work has wound down.
pub async fn run_with_progress<T: Send + 'static>(
    step: &Step,
    work: impl FnOnce(&Cancel, &Progress) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (progress, mut messages) = tokio::sync::watch::channel(String::new());
    let work = run(move |cancel| work(cancel, &progress));
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            Ok(()) = messages.changed() => step.set_message(messages.borrow_and_update().clone()),
        }
    }
}

impl Cancel {
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

/// Like [`run`], but a dropped future also waits (at most 5 s) until the work has returned:
/// for work whose leftovers the caller removes next (an extraction into a scratch dir).
pub async fn run_drained<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Cancel) -> Result<T> + Send + 'static,
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
    match result {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
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
        self.cancel.set();
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
        let work = run_drained(move |cancel| {
            while !cancel.is_set() {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(200)); // cleanup after noticing
            seen.store(true, Ordering::SeqCst);
            Ok(())
        });
        let started = Instant::now();
        assert!(tokio::time::timeout(Duration::from_millis(100), work).await.is_err());
        // The timeout dropped the future: by now the work has noticed and returned.
        assert!(stopped.load(Ordering::SeqCst), "the drop returned before the work stopped");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn finished_work_returns_its_value() {
        assert_eq!(run_drained(|_| Ok(42)).await.unwrap(), 42);
        assert_eq!(run(|_| Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn dropping_the_future_cancels_the_blocking_work() {
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let work = run(move |cancel| {
            let start = std::time::Instant::now();
            while !cancel.is_set() && start.elapsed() < std::time::Duration::from_secs(10) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            seen_tx.send(cancel.is_set()).unwrap();
            Ok(())
        });
        // Polled once, so that the work starts, then dropped as guard.rs's select does.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), work).await.is_err());
        let seen =
            tokio::task::spawn_blocking(move || seen_rx.recv_timeout(std::time::Duration::from_secs(5)));
        assert_eq!(seen.await.unwrap(), Ok(true));
    }
}
