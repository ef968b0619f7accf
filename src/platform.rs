//! Whether this host can run another architecture's programs: a build for arm64 on an
//! amd64 host runs debootstrap's second stage, containerd and kubeadm of the target arch,
//! which the kernel hands to qemu through a binfmt_misc handler. Checked before any
//! container exists, because without one the failure comes minutes later as an
//! `exec format error` deep in a build.

use std::path::{Path, PathBuf};

/// Docker's name for this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Where binfmt_misc is read. Test hook: `NODEIMG_BINFMT_DIR` points the check elsewhere
/// (a missing directory simulates a host without binfmt_misc).
pub const BINFMT_DIR_ENV: &str = "NODEIMG_BINFMT_DIR";
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("building {arch} on this {host} host needs a binfmt_misc handler for {}: {problem}", qemu_name(.arch))]
pub struct BinfmtError {
    pub arch: String,
    pub host: &'static str,
    pub problem: Box<Problem>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error(
        "binfmt_misc is not mounted at {0}: apt-get install qemu-user-static binfmt-support, then mount -t binfmt_misc binfmt_misc {0} && update-binfmts --enable"
    )]
    NotMounted(String),
    #[error("binfmt_misc is disabled ({0}/status): echo 1 > {0}/status")]
    Disabled(String),
    #[error(
        "none is registered in {dir}: apt-get install qemu-user-static binfmt-support, then update-binfmts --enable qemu-{qemu}"
    )]
    Missing { dir: String, qemu: String },
    #[error("{name} is registered but disabled: update-binfmts --enable {name}")]
    HandlerDisabled { name: String },
    #[error(
        "{name} ({interpreter}{missing}) lacks the F (fix-binary) flag, so containers cannot reach its interpreter: apt-get install qemu-user-static (its handlers have F), then update-binfmts --enable {name}"
    )]
    NoFixBinary { name: String, interpreter: String, missing: &'static str },
}

/// QEMU's name of Docker's architecture (what `qemu-<name>` handlers are called).
pub fn qemu_name(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    }
}

/// Ok when `arch` is the host's, or a handler for it is registered, enabled and usable from
/// inside containers.
pub fn ensure_runnable(arch: &str) -> Result<(), BinfmtError> {
    let host = host_architecture();
    if arch == host {
        return Ok(());
    }
    let dir = std::env::var_os(BINFMT_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| BINFMT_DIR.into());
    check_dir(&dir, arch).map_err(|problem| BinfmtError {
        arch: arch.to_owned(),
        host,
        problem: Box::new(problem),
    })
}

fn check_dir(dir: &Path, arch: &str) -> Result<(), Problem> {
    let shown = dir.display().to_string();
    let status =
        std::fs::read_to_string(dir.join("status")).map_err(|_| Problem::NotMounted(shown.clone()))?;
    if status.trim() != "enabled" {
        return Err(Problem::Disabled(shown));
    }
    let header = elf_header(arch);
    let mut entries: Vec<(String, Entry)> = std::fs::read_dir(dir)
        .map_err(|_| Problem::NotMounted(shown.clone()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "status" || name == "register" {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((name, Entry::parse(&text)?))
        })
        .filter(|(_, entry)| header.as_ref().is_some_and(|h| entry.matches(h)))
        .collect();
    // An enabled handler anywhere wins; otherwise the first by name explains the refusal.
    entries.sort_by(|a, b| (!a.1.enabled, &a.0).cmp(&(!b.1.enabled, &b.0)));
    let Some((name, entry)) = entries.into_iter().next() else {
        return Err(Problem::Missing { dir: shown, qemu: qemu_name(arch).to_owned() });
    };
    if !entry.enabled {
        return Err(Problem::HandlerDisabled { name });
    }
    // With F the kernel opened the interpreter when it was registered (possibly from another
    // mount namespace, as docker's binfmt installers do): it need not exist here. Without F
    // it is opened at each exec, by its path, inside the container: which fails.
    if !entry.flags.contains('F') {
        let missing = if Path::new(&entry.interpreter).exists() { "" } else { ", not on this host" };
        return Err(Problem::NoFixBinary { name, interpreter: entry.interpreter, missing });
    }
    Ok(())
}

/// One `/proc/sys/fs/binfmt_misc/<name>` entry of the magic kind.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    enabled: bool,
    interpreter: String,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Entry {
    /// `None` for entries that match by extension, or text that is not an entry.
    fn parse(text: &str) -> Option<Entry> {
        let mut lines = text.lines();
        let enabled = match lines.next()?.trim() {
            "enabled" => true,
            "disabled" => false,
            _ => return None,
        };
        let (mut interpreter, mut flags, mut offset, mut magic, mut mask) =
            (None, String::new(), 0, None, None);
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let value = value.trim();
            match key {
                "interpreter" => interpreter = Some(value.to_owned()),
                "flags:" => flags = value.to_owned(),
                "offset" => offset = value.parse().ok()?,
                "magic" => magic = Some(hex::decode(value).ok()?),
                "mask" => mask = Some(hex::decode(value).ok()?),
                _ => {}
            }
        }
        let magic = magic?;
        let mask = mask.unwrap_or_else(|| vec![0xff; magic.len()]);
        Some(Entry { enabled, interpreter: interpreter?, flags, offset, magic, mask })
    }

    /// The kernel's test: every masked byte of the file at `offset` equals the magic's.
    fn matches(&self, file: &[u8]) -> bool {
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            file.get(self.offset + i).is_some_and(|b| b & mask == m & mask)
        })
    }
}

/// The first 20 bytes of a 64-bit executable for `arch`: what a handler's magic must match.
fn elf_header(arch: &str) -> Option<[u8; 20]> {
    // (EI_DATA: 1 little-endian, 2 big-endian; e_machine)
    let (data, machine): (u8, u16) = match arch {
        "amd64" => (1, 62),
        "arm64" => (1, 183),
        "ppc64le" => (1, 21),
        "s390x" => (2, 22),
        _ => return None,
    };
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, data, 1, 0]);
    let (e_type, e_machine) = if data == 1 {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As read from /proc/sys/fs/binfmt_misc on Debian bookworm with qemu-user-static 7.2.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n\
        magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const S390X: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: PF\noffset 0\n\
        magic 7f454c4602020100000000000000000000020016\nmask fffffffffffffffcfffffffffffffffffffeffff\n";
    const PPC64LE: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/ppc64le-binfmt-P\nflags: PF\noffset 0\n\
        magic 7f454c4602010100000000000000000002001500\nmask fffffffffffffffcfffffffffffffffffeffff00\n";
    /// python3.11's .pyc handler: magic, but not an ELF one.
    const PYTHON: &str = "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n";
    /// An extension entry: no magic, never an ELF handler.
    const JAR: &str = "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n";

    fn dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        for (name, text) in entries {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn parses_real_entries() {
        let e = Entry::parse(AARCH64).unwrap();
        assert!(e.enabled);
        assert_eq!(e.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert_eq!(e.flags, "PF");
        assert_eq!(e.magic.len(), 20);
        assert_eq!(Entry::parse(JAR), None);
        assert!(!Entry::parse(PYTHON).unwrap().matches(&elf_header("arm64").unwrap()));
        assert_eq!(Entry::parse("garbage"), None);
    }

    #[test]
    fn magic_matches_the_architecture_only() {
        let aarch64 = Entry::parse(AARCH64).unwrap();
        assert!(aarch64.matches(&elf_header("arm64").unwrap()));
        assert!(!aarch64.matches(&elf_header("amd64").unwrap()));
        assert!(!aarch64.matches(&elf_header("s390x").unwrap()));
        assert!(Entry::parse(S390X).unwrap().matches(&elf_header("s390x").unwrap()));
        assert!(Entry::parse(PPC64LE).unwrap().matches(&elf_header("ppc64le").unwrap()));
        // Shared objects (e_type 3) match too: the mask's 0xfe covers the low bit.
        let mut dyn_header = elf_header("arm64").unwrap();
        dyn_header[16] = 3;
        assert!(aarch64.matches(&dyn_header));
    }

    #[test]
    fn a_registered_enabled_fix_binary_handler_passes() {
        let d = dir(&[("jar", JAR), ("python3.11", PYTHON), ("qemu-aarch64", AARCH64)]);
        assert_eq!(check_dir(d.path(), "arm64"), Ok(()));
        // Matched by magic, not by name.
        let renamed = dir(&[("arm64-emulator", AARCH64)]);
        assert_eq!(check_dir(renamed.path(), "arm64"), Ok(()));
    }

    #[test]
    fn each_refusal_names_its_cause() {
        let none = tempfile::tempdir().unwrap();
        let gone = none.path().join("binfmt_misc");
        assert!(matches!(check_dir(&gone, "arm64"), Err(Problem::NotMounted(_))));

        let off = dir(&[("qemu-aarch64", AARCH64)]);
        std::fs::write(off.path().join("status"), "disabled\n").unwrap();
        assert!(matches!(check_dir(off.path(), "arm64"), Err(Problem::Disabled(_))));

        let other = dir(&[("qemu-s390x", S390X)]);
        let err = check_dir(other.path(), "arm64").unwrap_err();
        assert!(err.to_string().contains("update-binfmts --enable qemu-aarch64"), "{err}");

        let disabled = dir(&[("qemu-aarch64", &AARCH64.replacen("enabled", "disabled", 1))]);
        assert_eq!(
            check_dir(disabled.path(), "arm64"),
            Err(Problem::HandlerDisabled { name: "qemu-aarch64".into() })
        );

        let no_f = AARCH64
            .replace("flags: PF", "flags: P")
            .replace("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/nonexistent/qemu-aarch64");
        let no_f = dir(&[("qemu-aarch64", &no_f)]);
        let err = check_dir(no_f.path(), "arm64").unwrap_err();
        assert!(matches!(err, Problem::NoFixBinary { .. }));
        assert!(err.to_string().contains("/nonexistent/qemu-aarch64, not on this host"), "{err}");
    }

    #[test]
    fn the_message_is_one_line_naming_both_architectures() {
        let err = BinfmtError {
            arch: "arm64".into(),
            host: "amd64",
            problem: Box::new(Problem::NotMounted(BINFMT_DIR.into())),
        };
        let text = err.to_string();
        assert!(!text.contains('\n'));
        assert!(
            text.starts_with("building arm64 on this amd64 host needs a binfmt_misc handler for aarch64: ")
        );
        assert!(text.contains("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"), "{text}");
    }

    #[test]
    fn the_host_architecture_needs_no_handler() {
        assert_eq!(ensure_runnable(host_architecture()), Ok(()));
    }
}
