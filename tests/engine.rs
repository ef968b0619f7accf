//! The second Docker daemon the `--engine` tests stand in for a remote build machine with
//! ([`support::engine::SecondEngine`]): it starts, takes images copied from the main engine,
//! runs containers, keeps its images apart from the main engine's, and leaves nothing on the
//! machine when dropped (no process, mount or dir), the main engine untouched. Two of them
//! side by side do not see each other.
//!
//! Images made in the main engine have `nodeimg-test/engine-<unique>` names and are removed
//! by guards, also when an assertion fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::engine::{SecondEngine, mounts_under, processes_of, processes_under};
use support::fixtures::busybox_image;
use support::{Cleanup, block_on, docker_cli};

/// What a dropped engine leaves to check: its dir and daemon.
struct Traces {
    dir: PathBuf,
    pid: u32,
}

impl Traces {
    fn of(engine: &SecondEngine) -> Self {
        Traces { dir: engine.dir().to_owned(), pid: engine.pid() }
    }

    /// The daemon is gone, nothing runs from or is mounted under its dir, the dir is gone.
    fn assert_gone(&self) {
        let Traces { dir, pid } = self;
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "dockerd {pid} is gone");
        assert_eq!(processes_under(dir), Vec::<i32>::new(), "no process names {}", dir.display());
        let pgrep = Command::new("pgrep").arg("-f").arg(dir).output().unwrap();
        assert_eq!(
            pgrep.status.code(),
            Some(1),
            "pgrep -f {}: {}",
            dir.display(),
            String::from_utf8_lossy(&pgrep.stdout)
        );
        assert_eq!(mounts_under(dir), Vec::<String>::new(), "no mount under {}", dir.display());
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
}

/// A second daemon started with `--bridge none` deletes the host's docker0.
fn main_bridge_is_there() -> bool {
    std::path::Path::new("/sys/class/net/docker0").exists()
}

/// The main daemon's process ID (its pidfile), to see that it is the same daemon after.
fn main_daemon() -> String {
    std::fs::read_to_string("/var/run/docker.pid").unwrap_or_default().trim().to_owned()
}

fn image_names(engine: &SecondEngine) -> Vec<String> {
    let out = engine.docker_cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    out.lines().map(str::to_owned).collect()
}

fn main_has(image: &str) -> bool {
    !docker_cli(&["images", "--quiet", image]).trim().is_empty()
}

#[test]
fn second_engine_runs_apart_and_leaves_nothing() {
    let run_id = support::run_id("engine");
    let _cleanup = Cleanup(run_id.clone());
    let unique = run_id.rsplit('-').next().unwrap().to_owned();
    let name = format!("nodeimg-test/engine-busybox:{unique}");
    let main_pid = main_daemon();

    let started = Instant::now();
    let engine = SecondEngine::start();
    eprintln!("second dockerd answered after {:?}", started.elapsed());
    let traces = Traces::of(&engine);
    assert!(engine.host.starts_with("unix:///var/tmp/"), "{}", engine.host);
    assert_eq!(engine.docker_cli(&["info", "--format", "{{.Driver}}"]).trim(), "overlay2");
    assert!(!processes_under(engine.dir()).is_empty(), "its containerd runs under its exec root");

    let image = block_on(async { busybox_image(&support::docker(&run_id).await, &name).await });
    let copied = Instant::now();
    engine.copy_image(&name);
    eprintln!("copied {name} in {:?}", copied.elapsed());
    assert_eq!(image_names(&engine), vec![name.clone()], "the second engine has only what was loaded");
    let exists = block_on(async { engine.client(&run_id).await.image_exists(&name).await.unwrap() });
    assert!(exists, "nodeimg's client sees {name} there");

    let out = engine.docker_cli(&["run", "--rm", &name, "sh", "-c", "echo hello from $(hostname)"]);
    assert!(out.starts_with("hello from "), "{out}");
    // A container left running: the drop must stop it and unmount its layers.
    engine.docker_cli(&[
        "run",
        "--detach",
        "--name",
        &format!("sleeper-{unique}"),
        &name,
        "/bin/busybox",
        "sleep",
        "300",
    ]);
    assert!(!mounts_under(engine.dir()).is_empty(), "the running container's rootfs is mounted there");

    // Only where loaded: gone from the main engine, still in the second one.
    drop(image);
    assert!(!main_has(&name), "{name} is removed from the main engine");
    assert_eq!(image_names(&engine), vec![name.clone()]);
    let mine = docker_cli(&["ps", "--all", "--quiet", "--filter", &format!("name=sleeper-{unique}")]);
    assert!(mine.trim().is_empty(), "the main engine has no container of the second one: {mine}");

    let dropped = Instant::now();
    drop(engine);
    eprintln!("dropped in {:?}", dropped.elapsed());
    traces.assert_gone();

    assert_eq!(main_daemon(), main_pid, "the main daemon is the same process");
    assert!(main_bridge_is_there(), "the main daemon's docker0 is still there");
    docker_cli(&["version"]);
    let driver = docker_cli(&["info", "--format", "{{.Driver}}"]);
    assert!(!driver.trim().is_empty(), "the main engine answers");
}

#[test]
fn two_engines_side_by_side_are_independent() {
    let run_id = support::run_id("engines");
    let _cleanup = Cleanup(run_id.clone());
    let unique = run_id.rsplit('-').next().unwrap().to_owned();
    let name = format!("nodeimg-test/engine-busybox:{unique}");
    let main_pid = main_daemon();

    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(SecondEngine::start);
        let b = s.spawn(SecondEngine::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("two second dockerds answered after {:?}", started.elapsed());
    let (traces_a, traces_b) = (Traces::of(&a), Traces::of(&b));
    assert_ne!(a.host, b.host);

    let other = format!("nodeimg-test/engine-other:{unique}");
    let (image, other_image) = block_on(async {
        let docker = support::docker(&run_id).await;
        (busybox_image(&docker, &name).await, busybox_image(&docker, &other).await)
    });
    a.copy_image(&name);
    assert_eq!(image_names(&a), vec![name.clone()]);
    assert_eq!(image_names(&b), Vec::<String>::new(), "b has nothing a loaded");
    b.copy_image(&other);
    drop((image, other_image));
    assert_eq!(image_names(&a), vec![name.clone()], "a has nothing b loaded");
    assert_eq!(image_names(&b), vec![other.clone()]);

    // Containers of the same name in both: each daemon has its own.
    a.docker_cli(&["run", "--detach", "--name", "sleeper", &name, "/bin/busybox", "sleep", "300"]);
    b.docker_cli(&["run", "--detach", "--name", "sleeper", &other, "/bin/busybox", "sleep", "300"]);
    let id_a = a.docker_cli(&["ps", "--quiet", "--no-trunc"]);
    let id_b = b.docker_cli(&["ps", "--quiet", "--no-trunc"]);
    assert_eq!((id_a.lines().count(), id_b.lines().count()), (1, 1));
    assert_ne!(id_a, id_b);

    // a goes; b goes on working.
    drop(a);
    traces_a.assert_gone();
    assert_eq!(b.docker_cli(&["ps", "--quiet", "--no-trunc"]), id_b, "b's container still runs");
    let out = b.docker_cli(&["run", "--rm", &other, "/bin/sh", "-c", "echo b"]);
    assert_eq!(out.trim(), "b");
    drop(b);
    traces_b.assert_gone();

    assert_eq!(main_daemon(), main_pid, "the main daemon is the same process");
    assert!(main_bridge_is_there(), "the main daemon's docker0 is still there");
    assert!(!main_has(&name) && !main_has(&other), "the test's images are removed from the main engine");
    docker_cli(&["version"]);
}

/// A daemon that died without its own cleanup (SIGKILL): the drop still stops its
/// containerd, shims and containers and unmounts and removes everything.
#[test]
fn killed_engine_leaves_nothing() {
    let run_id = support::run_id("engine-killed");
    let _cleanup = Cleanup(run_id.clone());
    let unique = run_id.rsplit('-').next().unwrap().to_owned();
    let name = format!("nodeimg-test/engine-busybox:{unique}");
    let main_pid = main_daemon();

    let engine = SecondEngine::start();
    let traces = Traces::of(&engine);
    let image = block_on(async { busybox_image(&support::docker(&run_id).await, &name).await });
    engine.copy_image(&name);
    drop(image);
    let id = engine.docker_cli(&["run", "--detach", &name, "/bin/busybox", "sleep", "300"]).trim().to_owned();
    let pid = engine.docker_cli(&["inspect", "--format", "{{.State.Pid}}", &id]).trim().to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the container's process {pid} runs");
    assert_eq!(processes_of(std::slice::from_ref(&id)), vec![pid.parse::<i32>().unwrap()]);

    // SAFETY: signalling the test's own child process, not yet reaped.
    unsafe { libc::kill(engine.pid() as i32, libc::SIGKILL) };
    let dropped = Instant::now();
    drop(engine);
    eprintln!("dropped a killed engine in {:?}", dropped.elapsed());
    traces.assert_gone();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the container's process {pid} is gone");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("docker").join(&id))
        .chain([Path::new("/sys/fs/cgroup/docker").join(&id)])
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "the container's cgroups are removed: {cgroups:?}");

    assert_eq!(main_daemon(), main_pid, "the main daemon is the same process");
    assert!(main_bridge_is_there(), "the main daemon's docker0 is still there");
    docker_cli(&["version"]);
}

/// `images list` builds nothing: on an engine without the default base it says what it needs
/// (`-b`, or `build base-image`, which needs root) instead of starting a debootstrap build.
#[test]
fn images_list_without_a_base_says_what_it_needs() {
    let engine = SecondEngine::start();
    let run = support::Run::new("list-nobase");
    let release = support::fixtures::server_tarball(&support::fixtures::Options::default());
    let mut cmd = run.command(&["images", "list", "--offline"]);
    cmd.args(release.build_args());
    cmd.env("DOCKER_HOST", &engine.host);
    let out = support::output_within(&mut cmd, support::BUILD_LIMIT);
    let line = support::assert_one_error_line(&out, "nodeimg build base-image --runtime");
    assert!(line.contains("-b IMAGE") && line.contains("as root"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("debootstrap") || stderr.contains("(debootstrap, as root)"), "{stderr}");
    assert!(!stderr.contains("building it"), "no base build started: {stderr}");
    assert!(image_names(&engine).is_empty(), "nothing was made on the engine: {:?}", image_names(&engine));
}
