//! The daily run: every domain's report once a day, at a time of day picked at random once
//! per server (so a fleet of servers does not run at the same minute) and kept in
//! `<state>/stats/daily-time`, so a restart neither skips nor doubles a day. One pass
//! shortly after start makes the reports that are missing, or all of them when the last
//! daily run (`<state>/stats/last-daily-run`) missed its time while the daemon was down.
//!
//! A thread that sleeps in one blocking wait until its next run: no polling.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::config::Config;

/// Seconds in a day.
const DAY: u64 = 86_400;
/// The first pass (domains without a report) waits this long after start.
const FIRST_PASS: Duration = Duration::from_secs(60);

/// The running scheduler; stops when dropped.
pub struct Scheduler {
    _stop: Sender<()>,
}

/// Starts the daily statistics thread (`dirhost watch`).
pub fn start(cfg: &Config) -> Scheduler {
    let (tx, rx) = mpsc::channel::<()>();
    let cfg = cfg.clone();
    let offset = daily_offset(&cfg);
    tracing::info!(
        "statistics: daily run at {:02}:{:02} UTC",
        offset / 3600,
        offset % 3600 / 60
    );
    let spawned = std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            // Reports are background work: this thread, and the generators it starts, run
            // at nice 10 so they never compete with serving or with the reconcile loop.
            // SAFETY: setpriority on the calling thread (Linux: who = 0 is this thread).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            let mut first = true;
            loop {
                let wait = if first {
                    FIRST_PASS
                } else {
                    Duration::from_secs(until_next(now_secs(), offset))
                };
                match rx.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return, // stopped
                }
                if first {
                    first = false;
                    if !missed(now_secs(), last_run(&cfg), offset) {
                        missing_reports(&cfg);
                        continue;
                    }
                    tracing::info!("statistics: the last daily run was missed; running now");
                }
                match super::generate(&cfg, None) {
                    Ok(results) => {
                        record_run(&cfg, now_secs());
                        let failed = results.iter().filter(|r| r.error.is_some()).count();
                        tracing::info!(
                            "statistics: daily run: {} report(s), {failed} failed",
                            results.len()
                        );
                    }
                    Err(e) => tracing::error!("statistics: daily run failed: {e:#}"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("statistics: could not start the daily thread: {e}");
    }
    Scheduler { _stop: tx }
}

/// Reports for domains whose statistics are on but never generated (made by hand while the
/// daemon was down, say).
fn missing_reports(cfg: &Config) {
    let Ok(model) = crate::model::load(&cfg.paths.srv, crate::reconcile::now()) else {
        return;
    };
    let missing: std::collections::BTreeSet<String> = model
        .domains
        .values()
        .filter(|d| super::read(&cfg.paths.srv, d).is_on())
        .filter(|d| super::last_summary(cfg, &d.name).is_none())
        .map(|d| d.name.clone())
        .collect();
    if !missing.is_empty()
        && let Err(e) = super::generate(cfg, Some(&missing))
    {
        tracing::error!("statistics: {e:#}");
    }
    tracing::info!(
        missing = missing.len(),
        "statistics: start-up check done (reports made for domains that had none)"
    );
    drop(model);
    // The check loaded every domain: give that memory back.
    crate::model::release_memory();
}

fn state_file(cfg: &Config, name: &str) -> std::path::PathBuf {
    super::Layout::new(cfg).root.join(name)
}

/// This server's time of day for the daily run: chosen at random once, then kept.
fn daily_offset(cfg: &Config) -> u64 {
    let path = state_file(cfg, "daily-time");
    if let Some(v) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|v| *v < DAY)
    {
        return v;
    }
    let v = random_below(DAY);
    if let Err(e) = super::write_root_file(&path, format!("{v}\n").as_bytes(), 0, 0o644) {
        tracing::warn!(
            "statistics: could not keep the daily time in {}: {e:#}",
            path.display()
        );
    }
    v
}

fn last_run(cfg: &Config) -> Option<u64> {
    std::fs::read_to_string(state_file(cfg, "last-daily-run"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

fn record_run(cfg: &Config, now: u64) {
    let path = state_file(cfg, "last-daily-run");
    if let Err(e) = super::write_root_file(&path, format!("{now}\n").as_bytes(), 0, 0o644) {
        tracing::warn!(
            "statistics: could not record the daily run in {}: {e:#}",
            path.display()
        );
    }
}

/// Whether the daily run due most recently before `now` (at `offset` seconds after
/// midnight UTC) did not happen: the last run was before it. Never run at all is not
/// "missed" (new servers only make the missing reports).
pub fn missed(now: u64, last: Option<u64>, offset: u64) -> bool {
    let Some(last) = last else { return false };
    // The most recent scheduled time at or before now (until_next is a full day when the
    // time is exactly now).
    let due = now.saturating_sub(DAY - until_next(now, offset));
    last < due
}

/// Seconds from `now` (unix) to the next time of day `offset` (seconds after midnight UTC);
/// a full day when it is exactly now.
pub fn until_next(now: u64, offset: u64) -> u64 {
    let today = now % DAY;
    let offset = offset % DAY;
    if offset > today {
        offset - today
    } else {
        DAY - today + offset
    }
}

fn now_secs() -> u64 {
    u64::try_from(crate::reconcile::now()).unwrap_or(0)
}

fn random_below(n: u64) -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return now_secs() % n;
    }
    u64::from_le_bytes(b) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_run_is_within_a_day_at_the_chosen_time() {
        let midnight = 20_000 * DAY;
        assert_eq!(until_next(midnight, 3600), 3600);
        assert_eq!(until_next(midnight + 3600, 3600), DAY);
        assert_eq!(until_next(midnight + 7200, 3600), DAY - 3600);
        for off in [0, 1, 43_210, DAY - 1] {
            for t in [0, 5, 43_210, DAY - 1] {
                let w = until_next(midnight + t, off);
                assert!((1..=DAY).contains(&w));
                assert_eq!((midnight + t + w) % DAY, off);
            }
        }
        assert!(random_below(DAY) < DAY);
    }

    #[test]
    fn a_run_is_missed_only_when_its_time_passed_since_the_last() {
        let midnight = 20_000 * DAY;
        let at3 = 3 * 3600;
        let cases = [
            // (now, last run, missed)
            (midnight + at3 + 60, Some(midnight + at3 + 1), false), // ran today at 03:00
            (midnight + at3 + 60, Some(midnight - DAY + at3), true), // yesterday's, not today's
            (midnight + 3600, Some(midnight - DAY + at3), false),   // today's is still ahead
            (midnight + 3600, Some(midnight - 2 * DAY + at3), true), // yesterday's was missed
            (midnight + at3, Some(midnight - DAY + at3), true),     // due exactly now
            (midnight + at3 + 60, None, false),                     // never ran
        ];
        for (now, last, want) in cases {
            assert_eq!(missed(now, last, at3), want, "now {now} last {last:?}");
        }
    }
}
