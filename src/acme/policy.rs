//! When to renew and when to try again: small pure functions over unix seconds.
//!
//! This module owns the renewal schedule (a third of the lifetime left, or the CA's ARI
//! window, whichever comes first), the "warn loudly" threshold and the failure backoff
//! (1 min, 10 min, 100 min, then daily, never sooner than a Retry-After). It must not read
//! the clock, files or the network: callers pass `now` and the facts, so every rule is
//! table-tested.

use serde::{Deserialize, Serialize};

/// One day in seconds.
pub const DAY: i64 = 86_400;

/// Certificates shorter than this renew half-way through instead of at two thirds (Let's
/// Encrypt's integration guide: "half-way for certs under 10 days").
pub const SHORT_LIFETIME: i64 = 10 * DAY;

/// Under this much validity left, a certificate that should have been renewed is an
/// emergency worth a loud warning.
pub const URGENT_LEFT: i64 = 7 * DAY;

/// Never wait longer than this for a CA's Retry-After (a bogus header must not park a
/// domain forever; the admin can always `--force`).
pub const MAX_RETRY_AFTER: i64 = 7 * DAY;

/// The backoff steps after 1, 2, 3 consecutive failures; later failures wait a day.
pub const BACKOFF_STEPS: [i64; 3] = [60, 600, 6_000];

/// An ARI suggested window (RFC 9773 §4.2), unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AriWindow {
    /// Start of the suggested window.
    pub start: i64,
    /// End of the suggested window.
    pub end: i64,
}

/// The moment the lifetime rule says to renew: when a third of the lifetime is left (half of
/// it for certificates shorter than [`SHORT_LIFETIME`]).
///
/// Lifetime is `not_after - not_before`, whatever the CA chose: 6, 45, 64 or 90 days all
/// follow the same rule. A certificate with a non-positive lifetime is due at once.
pub fn lifetime_renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before);
    if lifetime <= 0 {
        return not_before;
    }
    let left = if lifetime < SHORT_LIFETIME {
        lifetime / 2
    } else {
        lifetime / 3
    };
    not_after - left
}

/// The moment inside an ARI window to renew, for a uniformly random `fraction` in `[0, 1)`
/// (RFC 9773 §4.2: pick a random time in the window). A reversed window is treated as its
/// start.
pub fn ari_renew_at(window: AriWindow, fraction: f64) -> i64 {
    let span = window.end.saturating_sub(window.start);
    if span <= 0 {
        return window.start;
    }
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // The span is at most i64::MAX; as f64 it rounds but stays in range after the clamp.
    let offset = ((span as f64) * fraction) as i64;
    window.start.saturating_add(offset.clamp(0, span))
}

/// When to renew: the earlier of the lifetime rule and the ARI choice (when the CA gave one).
pub fn renew_at(not_before: i64, not_after: i64, ari_at: Option<i64>) -> i64 {
    let by_lifetime = lifetime_renew_at(not_before, not_after);
    ari_at.map_or(by_lifetime, |a| a.min(by_lifetime))
}

/// What the renewal rule says about one certificate at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Renewal {
    /// Not yet: renew at the given time.
    NotDue {
        /// When it becomes due.
        at: i64,
    },
    /// Due by the lifetime rule.
    Due,
    /// Due because the CA's ARI window says so (before the lifetime rule would).
    DueByAri,
    /// Expired (or not valid yet): replace it.
    Expired,
}

impl Renewal {
    /// True when a new certificate should be ordered.
    pub fn is_due(self) -> bool {
        !matches!(self, Renewal::NotDue { .. })
    }
}

/// The renewal decision for a certificate valid `[not_before, not_after]` at `now`.
pub fn decide(not_before: i64, not_after: i64, ari_at: Option<i64>, now: i64) -> Renewal {
    if now > not_after || now < not_before {
        return Renewal::Expired;
    }
    let by_lifetime = lifetime_renew_at(not_before, not_after);
    if now >= by_lifetime {
        return Renewal::Due;
    }
    match ari_at {
        Some(a) if now >= a => Renewal::DueByAri,
        _ => Renewal::NotDue {
            at: renew_at(not_before, not_after, ari_at),
        },
    }
}

/// True when so little validity is left that the admin must hear about it loudly: under
/// [`URGENT_LEFT`] (7 days), or under a sixth of the lifetime for certificates shorter than
/// 42 days (a 6-day certificate always has less than 7 days left; that alone is normal).
pub fn urgent(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    let left = not_after.saturating_sub(now);
    left < URGENT_LEFT.min(lifetime / 6)
}

/// Seconds to wait after `failures` consecutive failures (1-based): 1 min, 10 min, 100 min,
/// then a day.
pub fn backoff_delay(failures: u32) -> i64 {
    match failures {
        0 => 0,
        n => BACKOFF_STEPS
            .get(usize::try_from(n - 1).unwrap_or(usize::MAX))
            .copied()
            .unwrap_or(DAY),
    }
}

/// When the next attempt may happen after the `failures`-th consecutive failure at `now`:
/// the backoff step, or the CA's Retry-After (an absolute time) when that is later, capped at
/// [`MAX_RETRY_AFTER`] from now.
pub fn next_attempt(failures: u32, now: i64, retry_after: Option<i64>) -> i64 {
    let step = now.saturating_add(backoff_delay(failures));
    match retry_after {
        Some(ra) => step.max(ra.min(now.saturating_add(MAX_RETRY_AFTER))),
        None => step,
    }
}

/// May an attempt start at `now`? `--force` always may.
pub fn may_attempt(next_attempt: Option<i64>, now: i64, force: bool) -> bool {
    force || next_attempt.is_none_or(|t| now >= t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_000_000;

    #[test]
    fn lifetime_rule_for_every_lifetime() {
        // (lifetime in days, days left when due)
        let cases: &[(i64, f64)] = &[
            (6, 3.0),
            (9, 4.5),
            (10, 10.0 / 3.0),
            (45, 15.0),
            (64, 64.0 / 3.0),
            (90, 30.0),
            (365, 365.0 / 3.0),
        ];
        for &(days, left_days) in cases {
            let (nb, na) = (T0, T0 + days * DAY);
            let at = lifetime_renew_at(nb, na);
            let left = (na - at) as f64 / DAY as f64;
            assert!(
                (left - left_days).abs() < 1e-4,
                "{days} d: {left} days left"
            );
            // One second before: not due; at the moment: due.
            assert_eq!(
                decide(nb, na, None, at - 1),
                Renewal::NotDue { at },
                "{days} d"
            );
            assert_eq!(decide(nb, na, None, at), Renewal::Due, "{days} d");
            assert_eq!(decide(nb, na, None, nb), Renewal::NotDue { at }, "{days} d");
            assert_eq!(decide(nb, na, None, na), Renewal::Due, "{days} d");
            assert_eq!(decide(nb, na, None, na + 1), Renewal::Expired, "{days} d");
            assert_eq!(decide(nb, na, None, nb - 1), Renewal::Expired, "{days} d");
        }
        // Degenerate certificates are due at once.
        assert_eq!(lifetime_renew_at(T0, T0), T0);
        assert_eq!(lifetime_renew_at(T0, T0 - 5), T0);
        assert_eq!(decide(T0, T0, None, T0), Renewal::Due);
    }

    #[test]
    fn ari_window_table() {
        let (nb, na) = (T0, T0 + 90 * DAY); // lifetime rule: due at day 60
        let life_at = nb + 60 * DAY;
        let w = |s: i64, e: i64| AriWindow {
            start: nb + s * DAY,
            end: nb + e * DAY,
        };
        // (what, window, fraction, now (day), want)
        let cases: &[(&str, AriWindow, f64, i64, Renewal)] = &[
            (
                "window start",
                w(40, 50),
                0.0,
                39,
                Renewal::NotDue { at: nb + 40 * DAY },
            ),
            ("at chosen time", w(40, 50), 0.0, 40, Renewal::DueByAri),
            (
                "middle of window",
                w(40, 50),
                0.5,
                44,
                Renewal::NotDue { at: nb + 45 * DAY },
            ),
            ("after chosen", w(40, 50), 0.5, 46, Renewal::DueByAri),
            (
                "window after lifetime rule",
                w(70, 80),
                0.5,
                59,
                Renewal::NotDue { at: life_at },
            ),
            ("lifetime rule first", w(70, 80), 0.5, 60, Renewal::Due),
            (
                "window in the past (revocation)",
                w(-10, -9),
                0.3,
                1,
                Renewal::DueByAri,
            ),
            ("reversed window", w(50, 40), 0.9, 50, Renewal::DueByAri),
            (
                "reversed window, before",
                w(50, 40),
                0.9,
                49,
                Renewal::NotDue { at: nb + 50 * DAY },
            ),
            ("NaN fraction", w(40, 50), f64::NAN, 40, Renewal::DueByAri),
            (
                "fraction > 1",
                w(40, 50),
                7.0,
                49,
                Renewal::NotDue { at: nb + 50 * DAY },
            ),
        ];
        for (what, window, fraction, day, want) in cases {
            let at = ari_renew_at(*window, *fraction);
            assert!(
                at >= window.start.min(window.end) && at <= window.start.max(window.end),
                "{what}: {at} outside the window"
            );
            assert_eq!(decide(nb, na, Some(at), nb + day * DAY), *want, "{what}");
        }
        assert!(Renewal::DueByAri.is_due() && Renewal::Expired.is_due());
        assert!(!Renewal::NotDue { at: 0 }.is_due());
    }

    #[test]
    fn urgency() {
        // (lifetime days, days left, urgent)
        let cases: &[(i64, f64, bool)] = &[
            (90, 30.0, false),
            (90, 7.01, false),
            (90, 6.99, true),
            (64, 6.5, true),
            (45, 7.5, false),
            (45, 6.9, true),
            (6, 5.0, false),
            (6, 1.01, false),
            (6, 0.9, true),
            (90, -1.0, true),
        ];
        for &(days, left, want) in cases {
            let na = T0 + days * DAY;
            let now = na - (left * DAY as f64) as i64;
            assert_eq!(urgent(T0, na, now), want, "{days} d, {left} left");
        }
    }

    #[test]
    fn backoff_steps_and_retry_after() {
        let steps: &[(u32, i64)] = &[
            (0, 0),
            (1, 60),
            (2, 600),
            (3, 6_000),
            (4, DAY),
            (5, DAY),
            (u32::MAX, DAY),
        ];
        for &(n, want) in steps {
            assert_eq!(backoff_delay(n), want, "failure {n}");
            assert_eq!(next_attempt(n, T0, None), T0 + want, "failure {n}");
        }
        // (failures, Retry-After relative to now, next attempt relative to now)
        let ra: &[(u32, i64, i64)] = &[
            (1, 30, 60),             // earlier than the step: the step wins
            (1, 3_600, 3_600),       // later: honoured
            (4, 2 * DAY, 2 * DAY),   // later than a day: honoured
            (2, -500, 600),          // in the past: ignored
            (1, 365 * DAY, 7 * DAY), // absurd: capped
        ];
        for &(n, after, want) in ra {
            assert_eq!(
                next_attempt(n, T0, Some(T0 + after)),
                T0 + want,
                "{n}, {after}"
            );
        }
        assert!(may_attempt(None, T0, false));
        assert!(!may_attempt(Some(T0 + 1), T0, false));
        assert!(may_attempt(Some(T0 + 1), T0, true));
        assert!(may_attempt(Some(T0), T0, false));
    }

    #[test]
    fn a_failing_domain_gets_at_most_the_schedule() {
        // A maintainer checking every minute for 3 days orders at most 3 + 3 times.
        let mut failures = 0;
        let mut next = None;
        let mut orders = 0;
        let mut t = T0;
        while t < T0 + 3 * DAY {
            if may_attempt(next, t, false) {
                orders += 1;
                failures += 1;
                next = Some(next_attempt(failures, t, None));
            }
            t += 60;
        }
        assert_eq!(orders, 6, "1 min, 10 min, 100 min, then daily");
    }
}
