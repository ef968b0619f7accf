//! Guards for what a run creates in Docker: removed explicitly (awaited, errors reported) on
//! the normal path, by a background task from `Drop` when the future holding the guard is
//! dropped (an error, Ctrl-C). The command-level guard waits for those tasks
//! ([`Docker::finish_cleanups`]) before it sweeps by label, so nothing is left half-removed
//! when the process exits.

use std::future::Future;
use std::time::Duration;

use super::{Docker, Result};

/// Removals started by dropped guards: what each removes, and how it went.
pub(super) type Cleanups =
    std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<(String, std::result::Result<(), String>)>>>>;

/// A container of this run.
pub struct ContainerGuard {
    docker: Docker,
    id: String,
    armed: bool,
}

impl ContainerGuard {
    pub fn new(docker: &Docker, id: String) -> Self {
        Self { docker: docker.clone(), id, armed: true }
    }

    /// A container kept for debugging (`--keep-container`) whatever happens; only an
    /// explicit [`ContainerGuard::remove`] removes it.
    pub fn kept(docker: &Docker, id: String) -> Self {
        Self { docker: docker.clone(), id, armed: false }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes the container now, with its anonymous volumes.
    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        self.docker.remove_container(&self.id).await
    }

    /// Leaves the container in place (`--keep-container`); `nodeimg clean` finds it.
    pub fn keep(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.id)
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.armed {
            let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
            let what = format!("container {}", super::short_id(&id));
            self.docker.spawn_cleanup(what, async move { docker.remove_container(&id).await });
        }
    }
}

/// An image reference this run put on the host (a mirror's copy pulled for the import), which
/// carries no label of ours for `nodeimg clean` to find it by.
pub struct ImageGuard {
    docker: Docker,
    reference: String,
    armed: bool,
}

impl ImageGuard {
    pub fn new(docker: &Docker, reference: &str) -> Self {
        Self { docker: docker.clone(), reference: reference.to_owned(), armed: true }
    }

    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        self.docker.remove_image(&self.reference).await
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        if self.armed {
            let (docker, reference) = (self.docker.clone(), std::mem::take(&mut self.reference));
            let what = format!("image {reference}");
            self.docker.spawn_cleanup(what, async move { docker.remove_image(&reference).await });
        }
    }
}

impl Docker {
    /// Runs a guard's cleanup on the runtime; [`Docker::finish_cleanups`] waits for it.
    fn spawn_cleanup(&self, what: String, work: impl Future<Output = Result<()>> + Send + 'static) {
        // Drop cannot wait. Without a runtime (it is shutting down) the label sweep or
        // `nodeimg clean` does the work instead.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let task = handle.spawn(async move { (what, work.await.map_err(|e| e.to_string())) });
            self.cleanups.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        }
    }

    /// Waits (at most `limit`) for the cleanups guards started when they were dropped;
    /// returns what was removed and what could not be (with why).
    pub async fn finish_cleanups(&self, limit: Duration) -> (Vec<String>, Vec<String>) {
        let tasks: Vec<_> = std::mem::take(&mut *self.cleanups.lock().unwrap_or_else(|p| p.into_inner()));
        let (mut removed, mut failed) = (Vec::new(), Vec::new());
        match tokio::time::timeout(limit, futures_util::future::join_all(tasks)).await {
            Ok(done) => {
                for (what, result) in done.into_iter().flatten() {
                    match result {
                        Ok(()) => removed.push(what),
                        Err(why) => failed.push(format!("{what} ({why})")),
                    }
                }
            }
            Err(_) => failed.push(format!("removals still running after {} s", limit.as_secs())),
        }
        (removed, failed)
    }
}
