//! Scratch space for a root filesystem built on the host, and the processes that build it.
//! Both clean up when dropped, which is also what happens on Ctrl-C (the build future is
//! dropped): the process group is killed, mounts debootstrap left are detached, and only
//! then is the directory removed, so removal never walks into a mounted /proc or /dev.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Rootfs {
    path: PathBuf,
    groups: Mutex<Vec<i32>>,
}

impl Rootfs {
    /// Under `$TMPDIR`, else `/var/tmp`: on disk and usually not `noexec`, which a chroot
    /// needs (a tmpfs `/tmp` often is `noexec`).
    pub fn new() -> io::Result<Self> {
        let base = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| "/var/tmp".into());
        let dir = tempfile::Builder::new().prefix("nodeimg-rootfs-").tempdir_in(&base)?;
        Ok(Self { path: dir.keep(), groups: Mutex::new(Vec::new()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a process group working in this directory, to be killed before removal.
    pub fn track(&self, child: &tokio::process::Child) -> ProcessGroup {
        let group = ProcessGroup::new(child);
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).push(group.pgid);
        group
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        for pgid in self.groups.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            // SAFETY: signalling a process group we created; no memory is involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        // Killed processes let go of their files a moment later; retry until they have.
        let start = Instant::now();
        loop {
            detach_mounts_below(&self.path);
            match std::fs::remove_dir_all(&self.path) {
                Err(e)
                    if e.kind() != io::ErrorKind::NotFound && start.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
    }
}

/// Lazily unmounts everything mounted at or below `root`, deepest first.
fn detach_mounts_below(root: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts = mount_points_below(&mountinfo, root);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for mount in mounts {
        let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn mount_points_below(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect()
}

/// A child process in its own process group; dropping it kills the whole group (debootstrap
/// runs dpkg and maintainer scripts that would otherwise outlive it).
pub struct ProcessGroup {
    pgid: i32,
    finished: bool,
}

impl ProcessGroup {
    pub fn new(child: &tokio::process::Child) -> Self {
        Self { pgid: child.id().map(|p| p as i32).unwrap_or(0), finished: false }
    }

    pub fn finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.finished && self.pgid > 0 {
            // SAFETY: signalling a process group we created; no memory is involved.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_below_the_root_only() {
        let info = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
90 80 0:50 / /var/tmp/nodeimg-rootfs-x/proc rw - proc proc rw
91 80 0:51 / /var/tmp/nodeimg-rootfs-x/dev/null rw - devtmpfs udev rw
92 80 0:52 / /var/tmp/nodeimg-rootfs-xy/proc rw - proc proc rw";
        let found = mount_points_below(info, Path::new("/var/tmp/nodeimg-rootfs-x"));
        assert_eq!(
            found,
            vec![
                PathBuf::from("/var/tmp/nodeimg-rootfs-x/proc"),
                PathBuf::from("/var/tmp/nodeimg-rootfs-x/dev/null")
            ]
        );
    }

    #[tokio::test]
    async fn dropping_the_group_kills_its_processes() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & wait"]).process_group(0);
        let mut child = cmd.spawn().unwrap();
        let group = ProcessGroup::new(&child);
        drop(group);
        let status =
            tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await.unwrap().unwrap();
        assert!(!status.success());
    }
}
