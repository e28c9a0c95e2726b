//! Where the last run stopped reading each log, so a run feeds the generator only the lines
//! appended since (GoAccess's own "skip lines older than the last run" stays as a second
//! guard). Keyed by device and inode, not by name, so `access.log` rotated to
//! `access.log.1` resumes where it was; a file that shrank (truncated, replaced) is read
//! from its start. Only complete lines are fed: a line the log writer is still appending is
//! left for the next run.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Serialize};

/// Bytes already fed, per log file (`"<dev>:<ino>"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offsets {
    pub files: BTreeMap<String, u64>,
}

/// The key of an open log file.
pub fn key(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Where to start reading a file of `size` bytes that the last run left at `previous`.
pub fn start_at(previous: Option<u64>, size: u64) -> u64 {
    match previous {
        Some(o) if o <= size => o,
        _ => 0, // new, truncated or replaced: from the start
    }
}

/// How far back [`complete_end`] looks for the end of the last complete line.
pub const LINE_WINDOW: u64 = 1 << 20;

/// The end of the last complete line in `data`, which starts at file offset `base`: the
/// offset just after its last `\n`, or `None` when it has none.
pub fn last_newline_end(base: u64, data: &[u8]) -> Option<u64> {
    data.iter()
        .rposition(|&b| b == b'\n')
        .map(|i| base + i as u64 + 1)
}

/// The end of what to feed from `f` between `start` and `size`: after the last complete
/// line. A tail without a newline in the last [`LINE_WINDOW`] bytes is one huge line still
/// being written, or garbage: it is fed whole rather than stalling every later run.
pub fn complete_end(f: &std::fs::File, start: u64, size: u64) -> u64 {
    if size <= start {
        return start;
    }
    let from = size.saturating_sub(LINE_WINDOW).max(start);
    let mut buf = vec![0u8; (size - from) as usize];
    match f.read_exact_at(&mut buf, from) {
        Ok(()) => match last_newline_end(from, &buf) {
            Some(end) => end,
            None if from > start => size,
            None => start, // a partial first line: wait for its end
        },
        Err(_) => start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_at_resumes_or_restarts() {
        let cases = [
            (None, 100, 0),        // never read
            (Some(40), 100, 40),   // grew
            (Some(100), 100, 100), // unchanged
            (Some(120), 100, 0),   // truncated or replaced
            (Some(0), 0, 0),
        ];
        for (prev, size, want) in cases {
            assert_eq!(start_at(prev, size), want, "{prev:?} {size}");
        }
    }

    #[test]
    fn last_newline_end_finds_the_last_complete_line() {
        let cases: [(u64, &[u8], Option<u64>); 5] = [
            (0, b"a\nb\n", Some(4)),
            (0, b"a\nb", Some(2)),
            (10, b"a\nb", Some(12)),
            (0, b"abc", None),
            (0, b"", None),
        ];
        for (base, data, want) in cases {
            assert_eq!(last_newline_end(base, data), want, "{data:?}");
        }
    }

    #[test]
    fn complete_end_leaves_a_partial_line_for_later() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"one\ntwo\nthr").unwrap();
        assert_eq!(complete_end(&f, 0, 11), 8);
        assert_eq!(complete_end(&f, 8, 11), 8, "only a partial line is new");
        assert_eq!(complete_end(&f, 11, 11), 11);
    }
}
