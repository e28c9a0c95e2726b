//! `dirhost ssl …`: list certificate sets, renew, select a set.
//!
//! This module owns the commands' argument definitions and their bodies; `crate::cli` only
//! routes to [`run`]. Output goes to stdout (JSON with `--json`), diagnostics through
//! tracing. It must not issue, verify or install anything itself: it calls
//! [`super::maintain_with`] and `store`, like the maintainer does.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;

use super::store::{self, ChainCheck, SetSummary};
use super::{Action, Options, policy, state};
use crate::config::Config;
use crate::model::validate::{self, SslProvider};
use crate::reconcile::{self, Request};

/// `dirhost ssl`.
#[derive(Debug, Subcommand)]
pub enum SslCommand {
    /// List every web site's certificate sets, expiry, next renewal and last error.
    ///
    /// Example: dirhost ssl list --json
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Obtain or renew certificates now (due or missing ones; all with --force).
    ///
    /// Examples:
    ///   dirhost ssl renew                      # every site that needs one
    ///   dirhost ssl renew example.com --force  # now, ignoring the schedule and backoff
    #[command(verbatim_doc_comment)]
    Renew {
        /// Domains (default: every web site).
        domains: Vec<String>,
        /// Order even if the certificate is not due, and ignore the failure backoff.
        #[arg(long)]
        force: bool,
    },
    /// Make an existing set current (after verifying it), e.g. to roll back.
    ///
    /// Example: dirhost ssl select example.com 0
    Select {
        /// The domain.
        domain: String,
        /// The set's name under config/ssl/sets/.
        set: String,
    },
}

/// Runs a `dirhost ssl` command; returns the exit code.
pub fn run(cfg: &Config, config_path: &Path, cmd: SslCommand) -> Result<u8> {
    match cmd {
        SslCommand::List { json } => list(cfg, json),
        SslCommand::Renew { domains, force } => renew(cfg, config_path, &domains, force),
        SslCommand::Select { domain, set } => select(cfg, config_path, &domain, &set),
    }
}

fn domain_arg(name: &str) -> Result<String> {
    validate::domain_name(&name.to_lowercase())
        .with_context(|| format!("{name:?} is not a domain name"))
}

/// One row of `dirhost ssl list`.
#[derive(Debug, Serialize)]
pub struct SslRow {
    /// The domain.
    pub domain: String,
    /// `config/ssl-provider`.
    pub provider: SslProvider,
    /// Every name of the site.
    pub names: Vec<String>,
    /// Where `config/ssl/current` points (`sets/<N>` → N).
    pub current: Option<String>,
    /// The set Apache serves (may differ from `current` when that is unusable).
    pub live: Option<String>,
    /// When the live certificate expires (unix seconds).
    pub expires: Option<i64>,
    /// When it is due for renewal (unix seconds).
    pub next_renewal: Option<i64>,
    /// Every set on disk.
    pub sets: Vec<SetSummary>,
    /// Consecutive failures.
    pub failures: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// No attempt before this (unix seconds).
    pub next_attempt: Option<i64>,
    /// When a set last went live.
    pub last_success: Option<i64>,
    /// Names left out of the last order, with why.
    pub left_out: Vec<(String, String)>,
    /// Model warnings about the certificate.
    pub warnings: Vec<String>,
}

/// Builds the rows of `dirhost ssl list` at `now`.
pub fn rows(cfg: &Config, now: i64) -> Result<Vec<SslRow>> {
    let model = crate::model::load(&cfg.paths.srv, now)?;
    let srv = &cfg.paths.srv;
    let webmail_only = crate::model::vhost::webmail_only(cfg, &model);
    Ok(model
        .domains
        .values()
        .filter(|d| d.web || webmail_only.contains(&d.name))
        .map(|d| {
            let st = state::load(cfg, &d.name);
            let names = d.all_names();
            let next_renewal = d.cert.as_ref().map(|c| {
                let ari = st
                    .ari
                    .as_ref()
                    .filter(|a| a.serial == c.info.serial_hex)
                    .map(|a| a.renew_at);
                policy::renew_at(c.info.not_before, c.info.not_after, ari)
            });
            SslRow {
                domain: d.name.clone(),
                provider: d.ssl_provider,
                current: store::current(srv, d).ok().flatten(),
                live: d.cert.as_ref().map(|c| c.name.clone()),
                expires: d.cert.as_ref().map(|c| c.info.not_after),
                next_renewal,
                sets: store::summaries(srv, d, &names, now),
                names,
                failures: st.failures,
                last_error: st.last_error,
                next_attempt: st.next_attempt,
                last_success: st.last_success,
                left_out: st.left_out,
                warnings: d.warnings.clone(),
            }
        })
        .collect())
}

/// `YYYY-MM-DD HH:MM` (UTC) or `-`.
pub fn utc(t: Option<i64>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs / 3_600,
        secs % 3_600 / 60
    )
}

fn list(cfg: &Config, json: bool) -> Result<u8> {
    let mut rows = rows(cfg, reconcile::now())?;
    // A customer lists their own domains' certificates, not everyone's.
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 {
        let mine = crate::site::owned_by(&cfg.paths.srv, me)?;
        rows.retain(|r| mine.contains(&r.domain));
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<32} {:<11} {:<6} {:<20} {:<20} LAST ERROR",
        "DOMAIN", "PROVIDER", "LIVE", "EXPIRES", "RENEW AT"
    )?;
    for r in &rows {
        let provider = match r.provider {
            SslProvider::Letsencrypt => "letsencrypt",
            SslProvider::Selfsigned => "selfsigned",
            SslProvider::Manual => "manual",
        };
        writeln!(
            out,
            "{:<32} {:<11} {:<6} {:<20} {:<20} {}",
            r.domain,
            provider,
            r.live.as_deref().unwrap_or("-"),
            utc(r.expires),
            utc(r.next_renewal),
            r.last_error.as_deref().unwrap_or("-")
        )?;
    }
    Ok(0)
}

fn renew(cfg: &Config, config_path: &Path, domains: &[String], force: bool) -> Result<u8> {
    let only = if domains.is_empty() {
        None
    } else {
        Some(
            domains
                .iter()
                .map(|d| domain_arg(d))
                .collect::<Result<BTreeSet<String>>>()?,
        )
    };
    let report =
        super::maintain_with(cfg, config_path, reconcile::now(), &Options { only, force })?;
    let mut out = std::io::stdout().lock();
    for o in &report.domains {
        let what = match o.action {
            Action::Issued => format!("issued set {}", o.set.as_deref().unwrap_or("?")),
            Action::Renewed => format!("renewed: set {}", o.set.as_deref().unwrap_or("?")),
            Action::NotDue => format!("not due until {}", utc(o.renew_at)),
            Action::BackingOff => format!("backing off until {}", utc(o.next_attempt)),
            Action::Manual => "manual (config/ssl-provider): nothing to do".into(),
            Action::Skipped => "skipped".into(),
            Action::Failed => format!("FAILED (next attempt {})", utc(o.next_attempt)),
        };
        writeln!(out, "{}: {what}", o.domain)?;
        for (n, why) in &o.left_out {
            writeln!(out, "  left out {n}: {why}")?;
        }
        if let Some(e) = &o.error {
            writeln!(out, "  error: {e}")?;
        }
        for w in &o.warnings {
            writeln!(out, "  warning: {w}")?;
        }
    }
    if let Some(e) = &report.reconcile_error {
        writeln!(out, "apply after the new certificates failed: {e}")?;
    }
    for (d, why) in &report.left_out {
        writeln!(
            out,
            "left out {d}: Apache refused its new configuration: {why}"
        )?;
    }
    for h in &report.hooks {
        if let Some(e) = &h.error {
            writeln!(out, "hook {} failed: {e}", h.name)?;
        }
    }
    let failed = !report.failed().is_empty()
        || report.reconcile_error.is_some()
        || !report.left_out.is_empty();
    Ok(u8::from(failed))
}

fn select(cfg: &Config, config_path: &Path, domain: &str, set: &str) -> Result<u8> {
    let name = domain_arg(domain)?;
    if !validate::set_name(set) {
        bail!("{set:?} is not a set name");
    }
    let now = reconcile::now();
    let model = crate::model::load(&cfg.paths.srv, now)?;
    let d = model
        .domains
        .get(&name)
        .with_context(|| format!("{name}: no such domain in {}", cfg.paths.srv.display()))?;
    let _lock = state::lock_domain(cfg, &d.name)?;
    // Same checks the model applies before Apache may use a set (the chain is the admin's
    // call here: the set may come from any CA).
    let info = store::verify_on_disk(
        &cfg.paths.srv,
        d,
        set,
        &d.all_names(),
        &ChainCheck::Skip,
        now,
    )
    .with_context(|| format!("{name}: set {set} was not selected"))?;
    store::make_current(&cfg.paths.srv, d, set)?;
    let req = Request {
        only: Some(BTreeSet::from([name.clone()])),
        ..Request::default()
    };
    let report = reconcile::reconcile(cfg, config_path, &req)?;
    let hooks = super::hooks::run(&cfg.acme.hooks_dir, std::slice::from_ref(&name));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{name}: set {set} is current (expires {})",
        utc(Some(info.not_after))
    )?;
    for h in hooks.iter().filter(|h| h.error.is_some()) {
        writeln!(
            out,
            "hook {} failed: {}",
            h.name,
            h.error.as_deref().unwrap_or("")
        )?;
    }
    Ok(u8::from(!report.failed_domains().is_empty()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(None), "-");
        assert_eq!(super::utc(Some(0)), "1970-01-01 00:00");
        assert_eq!(super::utc(Some(951_782_400)), "2000-02-29 00:00");
        assert_eq!(super::utc(Some(1_835_438_460)), "2028-02-29 12:01");
    }
}
