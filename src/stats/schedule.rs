//! The daily run: every domain's report once a day, at a time of day picked at random
//! when the daemon starts (so a fleet of servers does not run at the same minute), plus
//! one pass shortly after start for domains that have no report yet.
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
    let offset = random_below(DAY);
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
                    missing_reports(&cfg);
                    continue;
                }
                match super::generate(&cfg, None) {
                    Ok(results) => {
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
}
