//! The architecture an ELF binary is for, from its header: a kubelet for another
//! architecture than the node image's would only fail when a cluster boots, so it is refused
//! before anything is written.

use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("{0}: no such file")]
    Missing(String),
    #[error("{0}: cannot read it: {1}")]
    Unreadable(String, String),
    #[error("{0} is not an ELF executable")]
    NotElf(String),
    #[error("{path} is an ELF binary for an architecture nodeimg does not know (e_machine {machine})")]
    Unknown { path: String, machine: u16 },
}

/// The Docker architecture name (`amd64`, `arm64`, ...) of the ELF binary at `path`.
pub fn architecture(path: &Path) -> Result<&'static str, ElfError> {
    let shown = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ElfError::Missing(shown.clone()),
        _ => ElfError::Unreadable(shown.clone(), e.to_string()),
    })?;
    let mut header = Vec::with_capacity(20);
    file.by_ref()
        .take(20)
        .read_to_end(&mut header)
        .map_err(|e| ElfError::Unreadable(shown.clone(), e.to_string()))?;
    from_header(&header)
        .ok_or(ElfError::NotElf(shown.clone()))?
        .map_err(|machine| ElfError::Unknown { path: shown, machine })
}

/// `None` when `header` is not an ELF header; `Err(e_machine)` for an unknown machine.
pub fn from_header(header: &[u8]) -> Option<Result<&'static str, u16>> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [header[18], header[19]];
    // EI_DATA: 1 little-endian, 2 big-endian (s390x).
    let machine = match header[5] {
        1 => u16::from_le_bytes(bytes),
        2 => u16::from_be_bytes(bytes),
        _ => return None,
    };
    Some(match machine {
        62 => Ok("amd64"),
        183 => Ok("arm64"),
        21 => Ok("ppc64le"),
        22 => Ok("s390x"),
        40 => Ok("arm"),
        3 => Ok("386"),
        other => Err(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(data: u8, machine: [u8; 2]) -> Vec<u8> {
        let mut h = b"\x7fELF\x02".to_vec();
        h.push(data);
        h.resize(18, 0);
        h.extend(machine);
        h
    }

    #[test]
    fn reads_the_machine() {
        assert_eq!(from_header(&header(1, [62, 0])), Some(Ok("amd64")));
        assert_eq!(from_header(&header(1, [183, 0])), Some(Ok("arm64")));
        assert_eq!(from_header(&header(2, [0, 22])), Some(Ok("s390x")));
        assert_eq!(from_header(&header(1, [0xff, 0xff])), Some(Err(0xffff)));
        assert_eq!(from_header(b"#!/bin/sh\necho kubelet\n"), None);
        assert_eq!(from_header(b"\x7fELF"), None);
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("kubelet");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(matches!(architecture(&script), Err(ElfError::NotElf(_))));
        assert!(matches!(architecture(&dir.path().join("none")), Err(ElfError::Missing(_))));
        let arm = dir.path().join("arm");
        std::fs::write(&arm, header(1, [183, 0])).unwrap();
        assert_eq!(architecture(&arm), Ok("arm64"));
    }
}
