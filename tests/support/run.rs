//! One test's run of nodeimg: its run id, names of its own, scratch and cache dirs, and the
//! guards that remove what it made.

use std::process::{Command, Output};

use super::{BUILD_LIMIT, Cleanup, RemoveImage, assert_one_error_line, block_on, docker_cli};

pub struct Run {
    /// `NODEIMG_RUN_ID` of every command: its containers and images carry it as a label.
    pub run_id: String,
    /// Unique to the run, for names of its own (image tags, ...).
    pub unique: String,
    /// The image the run builds, `nodeimg-test/node:<name>-<unique>`; removed on drop.
    pub target: String,
    /// The commands' TMPDIR (nodeimg's scratch): empty again after every command.
    pub tmp: tempfile::TempDir,
    /// The commands' download cache (`NODEIMG_CACHE_DIR`).
    pub cache: tempfile::TempDir,
    /// For the test's own files: configs, archives, outputs.
    pub files: tempfile::TempDir,
    _cleanup: Cleanup,
    _target: RemoveImage,
}

impl Run {
    /// Nothing is created in Docker yet; dropping the run removes its containers and target.
    pub fn new(name: &str) -> Self {
        let run_id = super::run_id(name);
        let unique = run_id.rsplit('-').next().unwrap().to_owned();
        let target = format!("nodeimg-test/node:{name}-{unique}");
        Run {
            _cleanup: Cleanup(run_id.clone()),
            _target: RemoveImage(target.clone()),
            run_id,
            unique,
            target,
            tmp: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            files: tempfile::tempdir().unwrap(),
        }
    }

    /// `nodeimg ARGS` with the run's id, scratch dir and download cache.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = super::nodeimg();
        cmd.args(args)
            .env("NODEIMG_RUN_ID", &self.run_id)
            .env("TMPDIR", self.tmp.path())
            .env("NODEIMG_CACHE_DIR", self.cache.path());
        cmd
    }

    /// Runs `nodeimg ARGS` within [`BUILD_LIMIT`].
    pub fn output(&self, args: &[&str]) -> Output {
        super::output_within(&mut self.command(args), BUILD_LIMIT)
    }

    /// `nodeimg build node-image -i <target> ARGS`, from the tests' base image unless ARGS
    /// name one with `-b`.
    pub fn build_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(&["build", "node-image", "-i", &self.target]);
        if !args.contains(&"-b") {
            cmd.args(["-b", &super::base_image()]);
        }
        cmd.args(args);
        cmd
    }

    /// [`Run::build_command`] run within [`BUILD_LIMIT`].
    pub fn build(&self, args: &[&str]) -> Output {
        super::output_within(&mut self.build_command(args), BUILD_LIMIT)
    }

    /// No container or network of the run is left and the scratch dir is empty.
    pub fn assert_clean(&self) {
        let run_id = &self.run_id;
        let (left, networks) = block_on(async {
            let docker = super::docker(run_id).await;
            (
                docker.list_containers(Some(run_id)).await.unwrap(),
                docker.list_networks(Some(run_id)).await.unwrap(),
            )
        });
        assert!(left.is_empty(), "containers left: {left:?}");
        assert!(networks.is_empty(), "networks left: {networks:?}");
        let scratch: Vec<_> =
            std::fs::read_dir(self.tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
    }

    /// A failed command: one error line naming `needle` (see
    /// [`assert_one_error_line`](super::assert_one_error_line)), nothing left, no image under
    /// the target. Returns the error line.
    pub fn assert_failed(&self, out: &Output, needle: &str) -> String {
        let line = assert_one_error_line(out, needle);
        self.assert_clean();
        let target = &self.target;
        let exists =
            block_on(async { super::docker(&self.run_id).await.image_exists(target).await.unwrap() });
        assert!(!exists, "no image under {target}");
        line
    }

    /// IDs of the images labelled with the run's id (`docker images -q`), one per line.
    pub fn labelled_images(&self) -> String {
        let filter = format!("label={}={}", nodeimg::docker::LABEL_IMAGE_BUILD, self.run_id);
        docker_cli(&["images", "-q", "--filter", &filter]).trim().to_owned()
    }
}
