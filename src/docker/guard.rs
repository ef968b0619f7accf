//! A guard per container: removed explicitly (awaited, errors reported) on the normal path,
//! by a background task from `Drop` when the future holding it is dropped (an error, Ctrl-C).
//! The label sweep of the command-level guard catches whatever both miss.

use super::{Docker, Result};

pub struct ContainerGuard {
    docker: Docker,
    id: String,
    armed: bool,
}

impl ContainerGuard {
    pub fn new(docker: &Docker, id: String) -> Self {
        Self { docker: docker.clone(), id, armed: true }
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
        if !self.armed {
            return;
        }
        // Drop cannot wait; a task on the runtime removes it. If the runtime is already
        // gone, the label sweep (or `nodeimg clean`) does.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
            handle.spawn(async move { docker.remove_container(&id).await });
        }
    }
}
