//! The one pipeline every command goes through: model → render → plan → apply.
//!
//! `dirhost apply`, the daemon and the subcommands call [`reconcile`]; none of them renders
//! or writes on its own. One reconcile runs at a time per state directory (an exclusive
//! `flock` on `<state>/apply.lock`).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::apply::{self, Outcome};
use crate::config::Config;
use crate::model::{self, Model, Skipped};
use crate::plan::{self, Plan};
use crate::render::{self, Layout};

/// What to reconcile.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only these domains (ASCII names); `None`: everything.
    pub only: Option<BTreeSet<String>>,
    /// Replace hand-edited files and re-enable admin-disabled sites.
    pub force: bool,
    /// Plan but change nothing.
    pub dry_run: bool,
    /// The daemon's index of /srv: a full reconcile builds it, a scoped one reads /srv's
    /// entries from it instead of listing /srv (`None`, every other caller: list /srv).
    pub srv_index: Option<model::srvindex::Shared>,
}

/// What a reconcile found and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// /srv entries that were refused, and why.
    pub skipped: Vec<Skipped>,
    /// Domains whose templates failed to render.
    pub render_failed: std::collections::BTreeMap<String, String>,
    /// The plan (also what a dry run would do).
    pub plan: Plan,
    /// What went live (empty for a dry run).
    pub outcome: Outcome,
    /// Per-domain warnings from the model.
    pub warnings: Vec<(String, String)>,
    /// Hand-edited files with what dirhost would have written, for `--diff`.
    #[serde(skip)]
    pub edited: Vec<(std::path::PathBuf, String)>,
}

impl Report {
    /// Domains that failed in a way the admin must fix: refused (except entries that are not
    /// domain names at all, which Sympl ignores too), unrenderable, or rejected by the
    /// server's config test.
    pub fn failed_domains(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .skipped
            .iter()
            .filter(|s| model::validate::domain_name(&s.name).is_ok())
            .map(|s| s.name.clone())
            .collect();
        out.extend(self.render_failed.keys().cloned());
        out.extend(self.outcome.culprits.keys().cloned());
        out
    }
}

/// Current time in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the pipeline once.
pub fn reconcile(cfg: &Config, config_path: &Path, req: &Request) -> Result<Report> {
    let _lock = if req.dry_run { None } else { Some(lock(cfg)?) };
    let model =
        model::load_with_services_indexed(cfg, req.only.as_ref(), now(), req.srv_index.as_ref())?;
    run(Cow::Owned(model), cfg, config_path, req)
}

/// Runs render → plan → apply on an already loaded model (the caller holds the lock, or is
/// doing a dry run).
pub fn reconcile_model(
    model: &Model,
    cfg: &Config,
    config_path: &Path,
    req: &Request,
) -> Result<Report> {
    run(model.with_services(cfg), cfg, config_path, req)
}

fn run(
    mut model: Cow<'_, Model>,
    cfg: &Config,
    config_path: &Path,
    req: &Request,
) -> Result<Report> {
    let mut prepare_warnings = Vec::new();
    if !req.dry_run {
        // Mail's state directories (Exim and Dovecot read them as their own groups), then
        // plaintext mailbox passwords hashed in /srv as each owner (unless the domain has
        // config/mailbox-dont-encrypt-passwords). The model is updated to the hashes now in
        // /srv, so the render below writes exactly those.
        if let Err(e) = crate::mail::ensure_dirs(cfg) {
            tracing::error!("mail: the state directories could not be prepared: {e:#}");
            prepare_warnings.push(("-".to_string(), format!("mail state directories: {e:#}")));
        }
        let plaintext = model.services.as_ref().is_some_and(|s| {
            s.mail.domains.values().any(|d| {
                !d.keep_plaintext
                    && d.mailboxes.iter().any(|m| {
                        matches!(
                            m.login,
                            crate::mail::Login::Enabled(crate::mail::password::Stored::Plain(_))
                        )
                    })
            })
        });
        if plaintext
            && let Some(services) = model.to_mut().services.as_mut()
            && let Err(e) = crate::mail::encrypt_in(cfg, &mut services.mail)
        {
            tracing::error!("mail: plaintext passwords could not be hashed: {e:#}");
        }
    }
    let model: &Model = &model;
    let tera = render::templates_cached(&cfg.paths.templates)?;
    let desired = render::render(model, cfg, config_path, &tera)?;
    let layout = Layout::new(cfg);
    let keep: BTreeSet<String> = model
        .skipped
        .iter()
        .filter_map(|s| model::validate::domain_name(&s.name).ok())
        .collect();
    // A scoped load may pull in more domains than were named (an alias's target): plan them
    // all.
    let only = req.only.as_ref().map(|o| {
        let mut all = o.clone();
        all.extend(model.domains.keys().cloned());
        all
    });
    let opts = plan::Options {
        force: req.force,
        only,
        keep,
        mail: Some(crate::mail::MailLayout::new(cfg)),
    };
    let plan = plan::plan(&desired, &layout, &opts)?;
    let mut report = Report {
        skipped: model.skipped.clone(),
        render_failed: desired.failed.clone(),
        warnings: model
            .domains
            .values()
            .flat_map(|d| d.warnings.iter().map(|w| (d.name.clone(), w.clone())))
            .collect(),
        edited: plan
            .notices
            .iter()
            .filter_map(|n| n.wanted.clone().map(|w| (n.path.clone(), w)))
            .collect(),
        ..Report::default()
    };
    report.warnings.extend(prepare_warnings);
    for n in &plan.notices {
        tracing::warn!(domain = n.domain.as_deref().unwrap_or("-"), path = %n.path.display(), "{}", n.message);
    }
    report.warnings.extend(crate::stats::warnings(cfg, model));
    if !req.dry_run {
        // Each PHP domain's own tmp/ and sessions/ directories, created as its owner.
        report.warnings.extend(crate::php::prepare(cfg, model));
        // The webmail's database, temp and log directories and its des_key.
        report.warnings.extend(crate::webmail::prepare(cfg));
        report
            .warnings
            .extend(crate::stats::prepare(cfg, model, req.only.as_ref()));
        report.outcome = apply::apply(&plan, cfg, &layout)?;
    }
    report.plan = plan;
    Ok(report)
}

/// Holds the apply lock until dropped.
pub type Lock = crate::lockfile::FileLock;

/// Takes the exclusive apply lock, waiting for another reconcile to finish.
pub fn lock(cfg: &Config) -> Result<Lock> {
    let state = &cfg.paths.state;
    std::fs::create_dir_all(state)
        .with_context(|| format!("failed to create {}", state.display()))?;
    crate::lockfile::exclusive(&state.join("apply.lock"), 0o644)
}
