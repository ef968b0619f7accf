//! A fixture Kubernetes source repository: go.mod, upstream's print-workspace-status keys
//! from `git describe`, and a Makefile whose `all` and `quick-release-images` targets write
//! shell stand-ins and docker-save image tars in upstream's output layout. A change to one
//! component's source is `cmd/<component>/patch`: `make all` appends it to that binary only.

use std::path::Path;
use std::process::Output;

use git2::{IndexAddOption, Repository, Signature};

use super::fixtures::{self, ImageArchive};
use super::{BUILD_LIMIT, Run, output_within};

pub const TAGS: [&str; 2] = ["v1.30.0", "v1.30.1"];

const WORKSPACE_STATUS: &str = r#"#!/usr/bin/env bash
# Prints the keys upstream's hack/print-workspace-status.sh prints, from git describe.
set -e
cd "$(dirname "$0")/.."
v=$(git describe --tags --abbrev=14 --dirty 2>/dev/null || echo v0.0.0)
v=$(echo "$v" | sed -E 's/-([0-9]+)-g([0-9a-f]{14})/.\1+\2/')
commit=$(git rev-parse HEAD)
echo "STABLE_BUILD_GIT_COMMIT $commit"
echo "STABLE_BUILD_SCM_REVISION $v"
echo "STABLE_DOCKER_TAG ${v//+/_}"
echo "STABLE_DOCKER_REGISTRY registry.k8s.io"
echo "gitCommit $commit"
echo "gitVersion $v"
echo "gitMajor 1"
echo "gitMinor 30"
"#;

const KUBEADM: &str = r#"#!/bin/sh
# stand-in for kubeadm
case "$1 $2 $3" in
  "config images list") shift 3; v=$2
    for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do echo "registry.k8s.io/$c:$v"; done
    echo registry.k8s.io/pause:3.9; echo registry.k8s.io/etcd:3.5.12-0; echo registry.k8s.io/coredns/coredns:v1.11.1 ;;
  *) echo "kubeadm version: &version.Info{GitVersion:\"@VERSION@\"}" ;;
esac
"#;

const MAKEFILE: &str = r#"# stand-in for upstream's Makefile: same targets, same output layout
VERSION = $(shell bash hack/print-workspace-status.sh | awk '/^gitVersion/ {print $$2}')
TAG = $(subst +,_,$(VERSION))

all:
	@echo "+++ [0101 00:00:00] Building go targets for linux/amd64"
	@if [ -n "$(FAIL)" ]; then echo "boom: $(FAIL)"; exit 1; fi
	mkdir -p _output/local/bin/linux/amd64
	for b in kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do \
	  printf '#!/bin/sh\necho "Kubernetes %s"\n' "$(VERSION)" > _output/local/bin/linux/amd64/$$b; done
	sed 's/@VERSION@/$(VERSION)/' hack/stand-ins/kubeadm > _output/local/bin/linux/amd64/kubeadm
	for p in cmd/*/patch; do [ -f "$$p" ] || continue; b=$$(basename $$(dirname $$p)); \
	  cat "$$p" >> _output/local/bin/linux/amd64/$$b; done
	chmod 755 _output/local/bin/linux/amd64/*

quick-release-images: all
	mkdir -p _output/dockerized/bin/linux/amd64 _output/release-images/amd64
	cp _output/local/bin/linux/amd64/kube* _output/dockerized/bin/linux/amd64/
	for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do \
	  cp hack/stand-ins/$$c-$(TAG).tar _output/release-images/amd64/$$c.tar; done
"#;

fn commit_all(repo: &Repository, message: &str) -> git2::Oid {
    let sig = Signature::now("fixture", "fixture@example.com").unwrap();
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap()
}

/// Creates the repository in `dir`. `image_tar(tag, dest)` writes a docker-save tar named
/// `tag`, for the dockerized build's release images. With `fail_target`, `make all` fails.
pub fn create(dir: &Path, fail_target: bool, image_tar: impl Fn(&str, &Path)) -> Repository {
    let repo = Repository::init(dir).unwrap();
    std::fs::create_dir_all(dir.join("hack/stand-ins")).unwrap();
    std::fs::write(dir.join("go.mod"), "module k8s.io/kubernetes\n\ngo 1.22\n").unwrap();
    std::fs::write(dir.join(".gitignore"), "/_output\n").unwrap();
    std::fs::write(dir.join("hack/print-workspace-status.sh"), WORKSPACE_STATUS).unwrap();
    std::fs::write(dir.join("hack/stand-ins/kubeadm"), KUBEADM).unwrap();
    let makefile = if fail_target {
        MAKEFILE.replace("$(FAIL)", "target all failed on purpose")
    } else {
        MAKEFILE.to_owned()
    };
    std::fs::write(dir.join("Makefile"), makefile).unwrap();
    for tag in TAGS {
        for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"] {
            let dest = dir.join(format!("hack/stand-ins/{c}-{tag}.tar"));
            image_tar(&format!("registry.k8s.io/{c}-amd64:{tag}"), &dest);
        }
        std::fs::write(dir.join("CHANGELOG"), format!("{tag}\n")).unwrap();
        let oid = commit_all(&repo, tag);
        repo.tag_lightweight(tag, &repo.find_object(oid, None).unwrap(), false).unwrap();
    }
    repo
}

/// A fixture tree in a temp dir.
pub fn tree(fail_target: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let root = fixtures::busybox_root(scratch.path());
    let layer = nodeimg::archive::image::write_layer(&root, &scratch.path().join("layer.tar")).unwrap();
    create(dir.path(), fail_target, |tag, dest| fixtures::write_image_tar(&layer, tag, dest));
    dir
}

/// A build from a source tree: the run, and what the tree's build needs besides its own
/// images, as an archive (the fixture tree's kubeadm lists the fixture release's images).
pub struct SourceRun {
    pub run: Run,
    pub images: ImageArchive,
    /// An empty GOPATH and working directory, so only the flags choose the tree.
    pub nowhere: tempfile::TempDir,
}

impl SourceRun {
    pub fn new(name: &str) -> Self {
        SourceRun {
            run: Run::new(&format!("src-{name}")),
            images: ImageArchive::new(&fixtures::needed_images()),
            nowhere: tempfile::tempdir().unwrap(),
        }
    }

    pub fn build(&self, args: &[&str]) -> Output {
        self.build_with(args, &[])
    }

    /// [`SourceRun::build`] with `envs` (a value of None removes the variable).
    pub fn build_with(&self, args: &[&str], envs: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = self.build_command(&["--image-archive", self.images.path.to_str().unwrap()]);
        cmd.args(args).current_dir(self.nowhere.path()).env("GOPATH", self.nowhere.path());
        for (name, value) in envs {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        output_within(&mut cmd, BUILD_LIMIT)
    }

    /// The built image's Kubernetes version label; removes the image.
    pub fn built_version(&self) -> String {
        self.assert_clean();
        let target = &self.target;
        super::block_on(async {
            let docker = super::docker(&self.run_id).await;
            let info = docker.inspect_image(target).await.unwrap().expect("the node image exists");
            docker.remove_image(target).await.unwrap();
            info.labels["io.nodeimg.kubernetes.version"].clone()
        })
    }
}

/// The run's names, dirs and assertions.
impl std::ops::Deref for SourceRun {
    type Target = Run;

    fn deref(&self) -> &Run {
        &self.run
    }
}
