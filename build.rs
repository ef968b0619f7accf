//! Embeds `base-image/` into the binary so `nodeimg build base-image` works from any
//! directory, and so the cache key of the base image is the content actually built.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("base-image");
    println!("cargo:rerun-if-changed=base-image");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut out = String::from("pub static FILES: &[EmbeddedFile] = &[\n");
    for path in files {
        let rel = path.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
        let executable = fs::metadata(&path).unwrap().permissions().mode() & 0o111 != 0;
        let mode = if executable { 0o755 } else { 0o644 };
        writeln!(
            out,
            "    EmbeddedFile {{ path: {rel:?}, mode: 0o{mode:o}, contents: include_bytes!({:?}) }},",
            path.to_str().unwrap()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("base_image_files.rs");
    fs::write(dest, out).unwrap();
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            walk(&path, files);
        } else if meta.is_file() {
            files.push(path);
        } else {
            panic!("base-image/ may hold only files and directories: {}", path.display());
        }
    }
}
