//! The report generator behind one small interface, and its GoAccess implementation.
//!
//! Why GoAccess rather than webalizer (Sympl's classic): one self-contained HTML page (no
//! external scripts, fonts or images, so it works behind basic auth and a strict CSP) that
//! people can actually read on a phone; built-in IP anonymisation (`--anonymize-ip`);
//! incremental runs through its on-disk database (`--persist --restore`) with a retention
//! limit (`--keep-last`, data minimisation); it reads the log from stdin, so dirhost can
//! open the logs itself (safely, as the owner); and a JSON output of the same data, which
//! the tests and `dirhost stats list` use. webalizer is faster on huge logs (1.1 s vs 2.3 s
//! for 100k lines, infra-notes §7) but has no anonymisation and writes many files and PNGs
//! into its output directory, which would have to be served as a whole tree.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::safefs::Owner;

/// One domain's run.
pub struct Job<'a> {
    /// The domain (ASCII), for the report's title.
    pub domain: &'a str,
    /// The generator runs as this user and group, never as root.
    pub owner: Owner,
    /// The logs, opened by dirhost, oldest first, each with the byte range to feed (the
    /// lines appended since the last run); fed to the generator in this order.
    pub logs: Vec<LogSlice>,
    /// The generator's own database (owned by `owner`): what makes runs incremental.
    pub db_dir: &'a Path,
}

/// A part of one log file: `len` bytes from `start`.
pub struct LogSlice {
    pub file: std::fs::File,
    pub start: u64,
    pub len: u64,
}

/// What a run produced.
pub struct Generated {
    /// The report page.
    pub html: Vec<u8>,
    /// Its totals.
    pub summary: Summary,
}

/// A report's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total_requests: u64,
    pub valid_requests: u64,
    pub unique_visitors: u64,
    /// First and last day in the report (the generator's format, e.g. `25/Nov/2026`).
    pub start_date: String,
    pub end_date: String,
    /// When it was generated (unix seconds).
    pub generated_at: i64,
}

/// A statistics generator.
pub trait Generator {
    /// Its name, for messages.
    fn name(&self) -> &'static str;
    /// Adds the new log lines to the database and returns the whole report.
    fn generate(&self, job: &Job<'_>) -> Result<Generated>;
}

/// GoAccess (Debian's `goaccess`).
pub struct GoAccess {
    bin: PathBuf,
    anonymize: bool,
    keep_days: u32,
    timeout: Duration,
}

impl GoAccess {
    pub fn new(cfg: &Config) -> Self {
        Self {
            bin: cfg.stats.goaccess.clone(),
            anonymize: cfg.stats.anonymize_ip,
            keep_days: cfg.stats.keep_days,
            timeout: Duration::from_secs(cfg.stats.timeout_secs),
        }
    }

    fn base_args(&self, job: &Job<'_>) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-".into(), // the log comes on stdin
            "--log-format=COMBINED".into(),
            "--no-global-config".into(),
            "--no-progress".into(),
            format!("--db-path={}/", job.db_dir.display()),
            format!("--keep-last={}", self.keep_days),
            "--restore".into(),
        ];
        if self.anonymize {
            a.push("--anonymize-ip".into());
        }
        a
    }

    /// Runs GoAccess as the owner with `args`, feeding `logs` on stdin; returns stdout.
    fn run(&self, job: &Job<'_>, args: &[String], logs: Vec<LogSlice>) -> Result<Vec<u8>> {
        if !self.bin.is_file() {
            bail!(
                "{} is not installed (apt install goaccess, or set [stats] goaccess)",
                self.bin.display()
            );
        }
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", job.db_dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let me = nix::unistd::geteuid().as_raw();
        if me == 0 {
            // std drops root's supplementary groups (setgroups(0)) before setgid/setuid.
            if job.owner.uid == 0 || job.owner.gid == 0 {
                bail!("refusing to run the generator as root");
            }
            cmd.uid(job.owner.uid).gid(job.owner.gid);
        } else if me != job.owner.uid {
            bail!(
                "must run as root to act as the domain's owner (uid {})",
                job.owner.uid
            );
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", self.bin.display()))?;
        let pid = child.id();
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let feeder = std::thread::spawn(move || {
            for l in logs {
                let mut f = l.file;
                // A generator that stops reading (broken pipe) ends the feeding.
                let fed = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(l.start))
                    .and_then(|_| std::io::copy(&mut (&mut f).take(l.len), &mut stdin));
                if fed.is_err() {
                    break;
                }
            }
            let _ = stdin.flush();
        });
        let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let r = (&mut stdout)
                .take(super::MAX_REPORT + 1)
                .read_to_end(&mut buf);
            // Drain whatever is left so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            r.map(|_| buf)
        });
        let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(16 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            String::from_utf8_lossy(&buf).into_owned()
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                bail!("killed after {:?} ([stats] timeout_secs)", self.timeout);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = feeder.join();
        let out = reader
            .join()
            .map_err(|_| anyhow!("output reader panicked"))?
            .context("reading the generator's output")?;
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            bail!("{status}: {}", err.trim());
        }
        if out.len() as u64 > super::MAX_REPORT {
            bail!("the report is larger than {} bytes", super::MAX_REPORT);
        }
        Ok(out)
    }
}

impl Generator for GoAccess {
    fn name(&self) -> &'static str {
        "goaccess"
    }

    fn generate(&self, job: &Job<'_>) -> Result<Generated> {
        // 1. New lines into the database (lines older than the last run's are skipped by
        //    GoAccess itself), and the HTML report.
        let mut args = self.base_args(job);
        args.extend([
            "--persist".into(),
            format!("--html-report-title=Statistics for {}", job.domain),
            "--no-html-last-updated".into(),
            "-o".into(),
            "html".into(),
        ]);
        let logs = job
            .logs
            .iter()
            .map(|l| {
                Ok(LogSlice {
                    file: l.file.try_clone()?,
                    start: l.start,
                    len: l.len,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .context("duplicating log file handles")?;
        let html = self.run(job, &args, logs)?;
        if !html.starts_with(b"<!DOCTYPE html>") && !html.starts_with(b"<!doctype html>") {
            bail!("goaccess printed no HTML report");
        }
        // 2. The totals, from the database only (nothing on stdin, nothing persisted).
        let mut args = self.base_args(job);
        args.extend(["-o".into(), "json".into()]);
        let json = self.run(job, &args, Vec::new())?;
        let summary = parse_summary(&json)?;
        Ok(Generated { html, summary })
    }
}

/// The totals from GoAccess's JSON output (`general`).
pub fn parse_summary(json: &[u8]) -> Result<Summary> {
    let v: serde_json::Value =
        serde_json::from_slice(json).context("goaccess printed invalid JSON")?;
    let g = &v["general"];
    let num = |k: &str| g[k].as_u64().unwrap_or(0);
    let text = |k: &str| g[k].as_str().unwrap_or_default().to_string();
    Ok(Summary {
        total_requests: num("total_requests"),
        valid_requests: num("valid_requests"),
        unique_visitors: num("unique_visitors"),
        start_date: text("start_date"),
        end_date: text("end_date"),
        generated_at: crate::reconcile::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_from_goaccess_json() {
        let j = br#"{"general": {"start_date": "25/Nov/2026","end_date": "26/Nov/2026","total_requests": 60,"valid_requests": 59,"unique_visitors": 10}, "visitors": {}}"#;
        let s = parse_summary(j).unwrap();
        assert_eq!(
            (s.total_requests, s.valid_requests, s.unique_visitors),
            (60, 59, 10)
        );
        assert_eq!(
            (s.start_date.as_str(), s.end_date.as_str()),
            ("25/Nov/2026", "26/Nov/2026")
        );
        assert!(parse_summary(b"not json").is_err());
    }
}
