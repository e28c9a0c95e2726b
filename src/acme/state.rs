//! dirhost's own ACME bookkeeping under `<state>/acme/` (root's, never under /srv).
//!
//! This module owns the per-domain state files (`domains/<domain>.json`: consecutive
//! failures, last error, when the next attempt may happen, the ARI choice), the account
//! credentials (`accounts/<hash of the directory URL>.json`, 0600) and the per-domain locks
//! (`locks/<domain>.lock`). Writes are atomic (temp file, fsync, rename). It must not read or
//! write under /srv, and it must not decide anything: `policy` decides, this module
//! remembers, so the schedule survives restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::policy::{self, AriWindow};
use crate::config::Config;

/// What dirhost remembers about one domain's certificates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainState {
    /// Consecutive failed attempts (0 after a success).
    pub failures: u32,
    /// The last failure, as text naming the domain.
    pub last_error: Option<String>,
    /// When the last attempt started.
    pub last_attempt: Option<i64>,
    /// No new attempt before this (unix seconds), unless forced.
    pub next_attempt: Option<i64>,
    /// When the last certificate set went live.
    pub last_success: Option<i64>,
    /// The set that went live then.
    pub last_set: Option<String>,
    /// The names ordered then (those that pointed at this host).
    pub ordered: Vec<String>,
    /// Names of the site left out then, with why.
    pub left_out: Vec<(String, String)>,
    /// The CA's ARI window for the live certificate, when it offers one.
    pub ari: Option<AriState>,
    /// When to ask the CA for ARI again (also after it said it offers none).
    pub ari_next_check: Option<i64>,
}

/// The CA's renewal information for one certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AriState {
    /// Serial (hex) of the certificate it is about.
    pub serial: String,
    /// The suggested window.
    pub window: AriWindow,
    /// The random moment chosen inside it (stable until the window changes).
    pub renew_at: i64,
    /// When to ask the CA again (its Retry-After).
    pub next_check: i64,
}

impl DomainState {
    /// Records the start of an attempt at `now`, counted as a failure until it succeeds: a
    /// crash or kill in the middle of an order still respects the backoff schedule.
    pub fn begin(&mut self, now: i64) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some("the attempt did not finish (interrupted)".into());
        self.last_attempt = Some(now);
        self.next_attempt = Some(policy::next_attempt(self.failures, now, None));
    }

    /// Records why the attempt begun at `now` failed, honouring the CA's Retry-After.
    pub fn fail(&mut self, now: i64, error: String, retry_after: Option<i64>) {
        self.last_error = Some(error);
        self.next_attempt = Some(policy::next_attempt(self.failures.max(1), now, retry_after));
    }

    /// A failure at `now` without an attempt having begun.
    pub fn failed(&mut self, now: i64, error: String, retry_after: Option<i64>) {
        self.begin(now);
        self.fail(now, error, retry_after);
    }

    /// Records a success at `now`: clears the failures.
    pub fn succeeded(&mut self, now: i64, set: &str) {
        self.failures = 0;
        self.last_error = None;
        self.last_attempt = Some(now);
        self.next_attempt = None;
        self.last_success = Some(now);
        self.last_set = Some(set.to_string());
        self.ari = None;
        self.ari_next_check = None;
    }
}

/// `<state>/acme`.
pub fn acme_dir(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("acme")
}

fn domain_file(cfg: &Config, domain: &str) -> PathBuf {
    acme_dir(cfg).join("domains").join(format!("{domain}.json"))
}

/// The domain's state; the default when there is none yet. A corrupt file is reported and
/// treated as absent (with the failures it may have held lost, never with a crash).
pub fn load(cfg: &Config, domain: &str) -> DomainState {
    let path = domain_file(cfg, domain);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(domain, path = %path.display(), "unreadable ACME state, starting afresh: {e}");
                DomainState::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DomainState::default(),
        Err(e) => {
            tracing::error!(domain, path = %path.display(), "cannot read ACME state: {e}");
            DomainState::default()
        }
    }
}

/// Saves the domain's state (atomically, root-only).
pub fn save(cfg: &Config, domain: &str, state: &DomainState) -> Result<()> {
    let text = serde_json::to_vec_pretty(state)?;
    write_private(&domain_file(cfg, domain), &text)
        .with_context(|| format!("{domain}: failed to save the ACME state"))
}

/// Writes `bytes` to `path` atomically with mode 0600, creating parents 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent", path.display()))?;
    mkdir_private(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}

fn mkdir_private(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("failed to create {}", dir.display()))
}

/// Where the account for `directory` is stored: one file per CA directory URL.
pub fn account_file(cfg: &Config, directory: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
    let hex = data_encoding::HEXLOWER.encode(&digest.as_ref()[..16]);
    acme_dir(cfg).join("accounts").join(format!("{hex}.json"))
}

/// A held per-domain lock (released on drop).
pub type DomainLock = crate::lockfile::FileLock;

/// Takes the domain's lock, waiting for a concurrent `ssl renew` or maintainer pass.
pub fn lock_domain(cfg: &Config, domain: &str) -> Result<DomainLock> {
    let dir = acme_dir(cfg).join("locks");
    mkdir_private(&dir)?;
    crate::lockfile::exclusive(&dir.join(format!("{domain}.lock")), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.paths.state = dir.path().to_path_buf();
        assert_eq!(load(&cfg, "a.test"), DomainState::default());
        let mut s = DomainState::default();
        s.failed(1000, "boom".into(), None);
        s.failed(1100, "boom".into(), Some(5000));
        assert_eq!((s.failures, s.next_attempt), (2, Some(5000)));
        save(&cfg, "a.test", &s).unwrap();
        assert_eq!(load(&cfg, "a.test"), s);
        let path = dir.path().join("acme/domains/a.test.json");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        s.succeeded(2000, "3");
        assert_eq!(
            (s.failures, s.next_attempt, s.last_error.clone()),
            (0, None, None)
        );
        fs::write(&path, "{not json").unwrap();
        assert_eq!(load(&cfg, "a.test"), DomainState::default());
        let a = account_file(&cfg, "https://a/dir");
        assert_ne!(a, account_file(&cfg, "https://b/dir"));
        let _l = lock_domain(&cfg, "a.test").unwrap();
    }
}
