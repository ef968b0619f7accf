//! How errors end up in front of the user: one line, the context chain joined, and an exit
//! code that tells a signal from a failure. A leaf module: every other module may use it.

/// The run was cut short by a signal; the cleanup guard has run.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {name}; {cleanup}")]
pub struct Interrupted {
    pub name: &'static str,
    pub exit_code: u8,
    /// What the cleanup removed or could not remove.
    pub cleanup: String,
}

/// The innermost cause of an error: for network errors, the part that says what happened
/// ("Connection refused") rather than the wrappers around it.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An error as one line: the context chain joined by ": ", inner newlines folded.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    let line = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    // The last guard against an input's bytes reaching the terminal: control characters and
    // the replacement character (bytes that were no UTF-8) become `?`.
    line.chars().map(|c| if c.is_control() || c == char::REPLACEMENT_CHARACTER { '?' } else { c }).collect()
}

/// 130/143 after SIGINT/SIGTERM, as shells report them; 1 for every other failure.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Interrupted>().map(|i| i.exit_code).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_on_one_line() {
        let err = anyhow::anyhow!("inner\nsecond line").context("outer");
        assert_eq!(one_line(&err), "outer: inner; second line");
        let bytes = anyhow::anyhow!("{}", String::from_utf8_lossy(b"field \x00\x1b[31m\xff end"));
        assert_eq!(one_line(&bytes), "field ??[31m? end");
        assert_eq!(exit_code(&err), 1);
        let sig: anyhow::Error =
            Interrupted { name: "SIGINT", exit_code: 130, cleanup: "removed nothing".into() }.into();
        assert_eq!(exit_code(&sig.context("building")), 130);
    }
}
