//! The decisions of a resumable download, apart from the I/O: how long silence may last,
//! which failures earn another try and after what pause, and what a server's answer to a
//! range request means for the bytes already on disk.

use std::time::Duration;

/// Tries per download, the first included.
pub const MAX_TRIES: u32 = 4;

pub const STALL_ENV: &str = "NODEIMG_DOWNLOAD_STALL_TIMEOUT";

const DEFAULT_STALL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{STALL_ENV}={0:?} is not a whole number of seconds above zero")]
pub struct BadStallTimeout(String);

/// How long a download may go without receiving a byte: `NODEIMG_DOWNLOAD_STALL_TIMEOUT`
/// seconds (tests use a couple of seconds), else 30 s.
pub fn stall_timeout(env: Option<&str>) -> Result<Duration, BadStallTimeout> {
    match env {
        None => Ok(DEFAULT_STALL),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(BadStallTimeout(text.to_owned())),
        },
    }
}

/// Why a try ended early in a way another try may fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Interruption {
    #[error("stalled: no data for {} s", .0.as_secs())]
    Stalled(Duration),
    /// A reset, or a connection closed before the announced length.
    #[error("{0}")]
    Broken(String),
    /// A server error while resuming: the server was sending this file a moment ago.
    #[error("the server answered {0}")]
    ServerError(String),
}

impl Interruption {
    /// The pause before try `failed_try + 1`: 1 s, 2 s, 4 s after quick failures, so a
    /// restarting server is not hammered; none after a stall, which already waited.
    pub fn backoff(&self, failed_try: u32) -> Duration {
        match self {
            Interruption::Stalled(_) => Duration::ZERO,
            _ => Duration::from_secs(1 << failed_try.saturating_sub(1).min(4)),
        }
    }
}

/// The `Range` header asking for the bytes after the `have` already on disk.
pub fn range_header(have: u64) -> Option<String> {
    (have > 0).then(|| format!("bytes={have}-"))
}

/// What to do with the part file given a successful answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// A 206 continuing exactly where the part file ends.
    Append,
    /// A whole file (a 200; a server that ignores or refuses to honour `Range`, or whose
    /// file changed since, per `If-Range`): start over from byte zero.
    Restart,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("asked for the bytes from {asked} on, the server sent {got:?}")]
    WrongRange { asked: u64, got: Option<String> },
    #[error("the file changed size during the download ({was} bytes, now {now})")]
    SizeChanged { was: u64, now: u64 },
}

/// Reads a successful (2xx) answer to a request for the bytes from `have` on; `total` is
/// the size announced by the answer the part file started with.
pub fn on_response(
    have: u64,
    status: u16,
    content_range: Option<&str>,
    total: Option<u64>,
) -> Result<Resume, RangeError> {
    if status != 206 {
        return Ok(Resume::Restart);
    }
    let wrong = || RangeError::WrongRange { asked: have, got: content_range.map(str::to_owned) };
    let (start, now) = content_range.and_then(parse_content_range).ok_or_else(wrong)?;
    if have == 0 || start != have {
        return Err(wrong());
    }
    match (total, now) {
        (Some(was), Some(now)) if was != now => Err(RangeError::SizeChanged { was, now }),
        _ => Ok(Resume::Append),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?);
    let total = if total == "*" { None } else { Some(total.parse::<u64>().ok()?) };
    (start <= end && total.is_none_or(|t| end < t)).then_some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_timeout_defaults_to_30_s() {
        assert_eq!(stall_timeout(None), Ok(Duration::from_secs(30)));
        assert_eq!(stall_timeout(Some("2")), Ok(Duration::from_secs(2)));
        for bad in ["0", "", "2s", "-1", "1.5"] {
            assert_eq!(stall_timeout(Some(bad)), Err(BadStallTimeout(bad.into())), "{bad}");
        }
        let message = BadStallTimeout("2s".into()).to_string();
        assert_eq!(
            message,
            r#"NODEIMG_DOWNLOAD_STALL_TIMEOUT="2s" is not a whole number of seconds above zero"#
        );
    }

    #[test]
    fn quick_failures_back_off_stalls_do_not() {
        let reset = Interruption::Broken("connection reset".into());
        let pauses: Vec<u64> = (1..MAX_TRIES).map(|t| reset.backoff(t).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4]);
        assert_eq!(Interruption::ServerError("503".into()).backoff(2), Duration::from_secs(2));
        assert_eq!(Interruption::Stalled(Duration::from_secs(30)).backoff(1), Duration::ZERO);
        assert_eq!(reset.backoff(40), Duration::from_secs(16), "bounded, no overflow");
        assert_eq!(Interruption::Stalled(Duration::from_secs(30)).to_string(), "stalled: no data for 30 s");
    }

    #[test]
    fn ranges_are_asked_only_with_bytes_on_disk() {
        assert_eq!(range_header(0), None);
        assert_eq!(range_header(1_000).as_deref(), Some("bytes=1000-"));
    }

    #[test]
    fn a_206_continuing_the_part_file_is_appended() {
        assert_eq!(on_response(500, 206, Some("bytes 500-999/1000"), Some(1000)), Ok(Resume::Append));
        assert_eq!(on_response(500, 206, Some("bytes 500-999/*"), Some(1000)), Ok(Resume::Append));
        assert_eq!(on_response(500, 206, Some("bytes 500-999/1000"), None), Ok(Resume::Append));
    }

    #[test]
    fn a_200_restarts_from_zero() {
        assert_eq!(on_response(0, 200, None, None), Ok(Resume::Restart), "the first try");
        assert_eq!(on_response(500, 200, None, Some(1000)), Ok(Resume::Restart), "Range ignored");
        assert_eq!(on_response(500, 200, Some("bytes 500-999/1000"), Some(1000)), Ok(Resume::Restart));
    }

    #[test]
    fn a_206_for_other_bytes_is_refused() {
        let wrong = |got: Option<&str>| RangeError::WrongRange { asked: 500, got: got.map(str::to_owned) };
        assert_eq!(
            on_response(500, 206, Some("bytes 0-999/1000"), Some(1000)),
            Err(wrong(Some("bytes 0-999/1000")))
        );
        assert_eq!(on_response(500, 206, None, Some(1000)), Err(wrong(None)));
        assert_eq!(on_response(500, 206, Some("bytes */1000"), Some(1000)), Err(wrong(Some("bytes */1000"))));
        assert_eq!(
            on_response(500, 206, Some("bytes 500-1999/1000"), None),
            Err(wrong(Some("bytes 500-1999/1000")))
        );
        assert!(matches!(
            on_response(0, 206, Some("bytes 0-9/10"), None),
            Err(RangeError::WrongRange { .. })
        ));
        assert_eq!(
            on_response(500, 206, Some("bytes 500-1999/2000"), Some(1000)),
            Err(RangeError::SizeChanged { was: 1000, now: 2000 })
        );
    }
}
