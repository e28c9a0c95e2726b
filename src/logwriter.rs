//! `dirhost log-writer`: Apache's piped access-log writer.
//!
//! Apache runs as root when it opens its logs, so a per-site `CustomLog
//! /srv/<domain>/public/logs/access.log` would let a customer who replaces that file with a
//! symlink make Apache append to any file on the system. Instead one `GlobalLog` pipe feeds
//! this process lines prefixed with the vhost name and the HTTPS flag; it appends each line to
//! the domain's `public/logs/access.log` (or `ssl_access.log`) through `safefs`, acting as
//! the domain's owner and refusing symlinks. Lines for unknown names are dropped.
//!
//! It must keep going whatever one domain's files look like: a refused write is reported on
//! stderr (Apache's error log) and the line dropped.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::Config;
use crate::safefs::{self, Kind, Owner};

/// How many log files stay open at once; beyond that all are closed and reopened on demand.
const MAX_OPEN: usize = 256;
/// Reopen files after this many lines, so a rotated or replaced file is picked up.
const REOPEN_EVERY: u64 = 10_000;

/// One parsed log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The vhost's ServerName (an ASCII domain name).
    pub vhost: &'a str,
    /// Served over HTTPS.
    pub https: bool,
    /// The combined-format log line.
    pub rest: &'a str,
}

/// Splits `"<vhost> <HTTPS env or -> <combined line>"`. `None` for malformed lines.
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let (vhost, rest) = line.split_once(' ')?;
    let (https, rest) = rest.split_once(' ')?;
    crate::model::validate::domain_name(vhost).ok()?;
    Some(Line {
        vhost,
        https: https == "on",
        rest,
    })
}

/// Reads log lines from stdin until EOF.
pub fn run(cfg: &Config) -> Result<()> {
    let stdin = std::io::stdin();
    let mut w = Writer::new(cfg.paths.srv.clone());
    let mut buf = String::new();
    let mut lock = stdin.lock();
    loop {
        buf.clear();
        match lock.read_line(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => w.write_line(buf.trim_end_matches('\n')),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue, // not UTF-8: drop
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends lines to domains' log files.
pub struct Writer {
    srv: PathBuf,
    open: HashMap<(String, bool), std::fs::File>,
    lines: u64,
}

impl Writer {
    /// A writer for the domains under `srv`.
    pub fn new(srv: PathBuf) -> Self {
        Self {
            srv,
            open: HashMap::new(),
            lines: 0,
        }
    }

    /// Appends one raw line from Apache; never fails (problems go to stderr).
    pub fn write_line(&mut self, raw: &str) {
        let Some(line) = parse_line(raw) else {
            return;
        };
        self.lines += 1;
        if self.lines.is_multiple_of(REOPEN_EVERY) || self.open.len() >= MAX_OPEN {
            self.open.clear();
        }
        let key = (line.vhost.to_string(), line.https);
        if !self.open.contains_key(&key) {
            match open_log(&self.srv, line.vhost, line.https) {
                Ok(Some(f)) => {
                    self.open.insert(key.clone(), f);
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("dirhost log-writer: {}: {e}", line.vhost);
                    return;
                }
            }
        }
        if let Some(f) = self.open.get_mut(&key) {
            let mut out = Vec::with_capacity(line.rest.len() + 1);
            out.extend_from_slice(line.rest.as_bytes());
            out.push(b'\n');
            if let Err(e) = f.write_all(&out) {
                eprintln!("dirhost log-writer: {}: {e}", line.vhost);
                self.open.remove(&key);
            }
        }
    }
}

/// Opens `/srv/<domain>/public/logs/(ssl_)access.log` for appending as the domain's owner,
/// creating `logs/` if needed. `Ok(None)`: no such domain (or not one we serve).
fn open_log(srv: &Path, vhost: &str, https: bool) -> Result<Option<std::fs::File>, String> {
    let Some(dir) = domain_dir(srv, vhost) else {
        return Ok(None);
    };
    let st = match safefs::stat(srv, Path::new(&dir)) {
        Ok(Some(st)) if st.kind == Kind::Dir => st,
        Ok(_) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if st.uid < crate::model::MIN_OWNER_ID || st.gid < crate::model::MIN_OWNER_ID {
        return Ok(None);
    }
    let owner = Owner {
        uid: st.uid,
        gid: st.gid,
    };
    // A domain without a website (webmail only) may have no public/ yet: made 0755 like
    // `dirhost site add` makes it, so that htdocs added later is reachable by Apache.
    let public = PathBuf::from(&dir).join("public");
    safefs::mkdir_all(srv, &public, owner, 0o755).map_err(|e| e.to_string())?;
    let logs = public.join("logs");
    safefs::mkdir_all(srv, &logs, owner, 0o750).map_err(|e| e.to_string())?;
    let name = if https {
        "ssl_access.log"
    } else {
        "access.log"
    };
    // 0640: raw logs hold full visitor addresses; only the owner (and their group) reads them.
    safefs::open_append(srv, &logs.join(name), owner, 0o640)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The /srv entry for an ASCII vhost name: the name itself, or a Unicode directory whose
/// punycode form it is.
fn domain_dir(srv: &Path, vhost: &str) -> Option<String> {
    if srv.join(vhost).is_dir() {
        return Some(vhost.to_string());
    }
    if !vhost.contains("xn--") {
        return None;
    }
    std::fs::read_dir(srv)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| crate::model::validate::domain_name(n).as_deref() == Ok(vhost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let l = parse_line("example.com on 1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 5").unwrap();
        assert_eq!(l.vhost, "example.com");
        assert!(l.https);
        assert_eq!(l.rest, "1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 5");
        assert!(!parse_line("example.com - x").unwrap().https);
        for bad in ["", "nospace", "../etc - x", "a b", "Example.com - x"] {
            assert!(parse_line(bad).is_none(), "{bad:?}");
        }
    }
}
