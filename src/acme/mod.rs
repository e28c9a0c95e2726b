//! Certificates for every site: ACME (Let's Encrypt by default) over HTTP-01, self-signed,
//! or manual, per `config/ssl-provider`.
//!
//! This module owns the certificate lifecycle: which web domains need a certificate
//! ([`maintain`]: missing, due for renewal, names added), the name check before any order
//! (`dns`), the order itself (`client`), keys and self-signed certificates (`keys`),
//! installing a set in Sympl's layout and making it current only after it verified
//! (`store`), the renewal and backoff rules (`policy`, pure), the persisted per-domain state
//! (`state`), Sympl's SSL hooks (`hooks`), the key of each new certificate under the DANE
//! rollover rule (`rollover`), Sympl's per-domain `config/ssl/<provider>/` settings
//! (`overrides`), the [`Maintainer`] thread (which also publishes DNS after each pass,
//! [`publish_dns`]), `dirhost ssl` (`cli`) and the demo's local Pebble (`localca`).
//!
//! What it must not do: write Apache's configuration (after a set goes live it calls
//! `reconcile`, the one pipeline), write under /srv except through `safefs` as the owner,
//! make current a set that failed verification, order more often than the backoff schedule
//! allows (unless forced), order names that do not point at this host, or run on the
//! watcher's hot path (the daemon only [`Maintainer::kick`]s).

pub mod cli;
pub mod client;
pub mod dns;
pub mod hooks;
pub mod keys;
pub mod localca;
pub mod overrides;
pub mod policy;
pub mod rollover;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::model::validate::SslProvider;
use crate::model::{self, Domain};
use crate::reconcile::{self, Request};
use crate::render::Layout;
use policy::Renewal;
use rcgen::{KeyPair, PublicKeyData};
use state::{AriState, DomainState};
use store::{ChainCheck, Material};

/// What to do in one pass.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these domains (ASCII names); `None`: every web domain.
    pub only: Option<BTreeSet<String>>,
    /// Order now even if not due and ignore the backoff (`dirhost ssl renew --force`).
    pub force: bool,
}

/// What happened to one domain in a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A first certificate went live.
    Issued,
    /// A new certificate replaced the live one.
    Renewed,
    /// The live certificate is fine for now.
    NotDue,
    /// An earlier failure's backoff has not run out.
    BackingOff,
    /// `config/ssl-provider` is `false` (or unknown): dirhost generates nothing.
    Manual,
    /// Not a web domain, or not in /srv.
    Skipped,
    /// The attempt failed (see `error`); the previous certificate, if any, stays live.
    Failed,
}

/// One domain's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The domain.
    pub domain: String,
    /// What happened.
    pub action: Action,
    /// The set that went live (Issued/Renewed).
    pub set: Option<String>,
    /// The names ordered.
    pub ordered: Vec<String>,
    /// Names left out because they do not point at this host, with why.
    pub left_out: Vec<(String, String)>,
    /// Why it failed, or was skipped.
    pub error: Option<String>,
    /// When the live certificate expires.
    pub expires: Option<i64>,
    /// When it is due for renewal.
    pub renew_at: Option<i64>,
    /// The earliest next attempt after a failure.
    pub next_attempt: Option<i64>,
    /// Loud problems (expiry close, names not covered).
    pub warnings: Vec<String>,
}

impl Outcome {
    fn new(domain: &str, action: Action) -> Self {
        Self {
            domain: domain.to_string(),
            action,
            set: None,
            ordered: Vec::new(),
            left_out: Vec::new(),
            error: None,
            expires: None,
            renew_at: None,
            next_attempt: None,
            warnings: Vec::new(),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Serialize)]
pub struct MaintainReport {
    /// Per domain, in name order.
    pub domains: Vec<Outcome>,
    /// The reconcile after new sets went live failed (the sets are current; the next apply
    /// picks them up).
    pub reconcile_error: Option<String>,
    /// Domains whose new configuration Apache refused (previous configuration kept).
    pub left_out: BTreeMap<String, String>,
    /// The SSL hooks that ran.
    pub hooks: Vec<hooks::HookRun>,
}

impl MaintainReport {
    /// Domains whose certificate changed.
    pub fn changed(&self) -> Vec<String> {
        self.domains
            .iter()
            .filter(|o| matches!(o.action, Action::Issued | Action::Renewed))
            .map(|o| o.domain.clone())
            .collect()
    }

    /// Domains that failed.
    pub fn failed(&self) -> Vec<String> {
        self.domains
            .iter()
            .filter(|o| o.action == Action::Failed)
            .map(|o| o.domain.clone())
            .collect()
    }

    /// The outcome for `domain`.
    pub fn get(&self, domain: &str) -> Option<&Outcome> {
        self.domains.iter().find(|o| o.domain == domain)
    }
}

/// One pass over every domain with a vhost (sites, and mail-only domains with webmail) at
/// `now`: issue missing certificates, renew due ones, respect the backoff. New sets go live
/// through one reconcile, then the hooks run.
pub fn maintain(cfg: &Config, config_path: &Path, now: i64) -> Result<MaintainReport> {
    maintain_with(cfg, config_path, now, &Options::default())
}

/// [`maintain`] with options (some domains only; forced).
pub fn maintain_with(
    cfg: &Config,
    config_path: &Path,
    now: i64,
    opts: &Options,
) -> Result<MaintainReport> {
    maintain_until(cfg, config_path, now, opts, None)
}

/// [`maintain_with`] that stops before the next domain once `stop` is set (the domains not
/// reached are left out of the report; whatever went live still gets its reconcile).
fn maintain_until(
    cfg: &Config,
    config_path: &Path,
    now: i64,
    opts: &Options,
    stop: Option<&AtomicBool>,
) -> Result<MaintainReport> {
    // Scoped: only the asked-for domains' directories are read (the daemon kicks a few
    // domains at a time, whatever the size of /srv).
    let model = model::load_scoped(&cfg.paths.srv, opts.only.as_ref(), now)?;
    let mut report = MaintainReport::default();
    let mut ctx = Pass::new(cfg, now, opts.force);
    if let Some(only) = &opts.only {
        for name in only.iter().filter(|n| !model.domains.contains_key(*n)) {
            let mut o = Outcome::new(name, Action::Failed);
            o.error = Some(match model.skipped_reason(name) {
                Some(why) => format!("{name}: skipped: {why}"),
                None => format!("{name}: no such domain in {}", cfg.paths.srv.display()),
            });
            report.domains.push(o);
        }
    }
    // Mail-only domains with webmail have a vhost too (and need its certificate).
    let webmail_only = model::vhost::webmail_only(cfg, &model);
    for d in model.domains.values() {
        if opts.only.as_ref().is_some_and(|o| !o.contains(&d.name)) {
            continue;
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            tracing::info!("certificate pass interrupted: stopping");
            break;
        }
        if !d.web && !webmail_only.contains(&d.name) {
            if opts.only.is_some() {
                let mut o = Outcome::new(&d.name, Action::Skipped);
                o.error = Some(format!(
                    "{}: no public/htdocs and no webmail, not served on the web",
                    d.name
                ));
                report.domains.push(o);
            }
            continue;
        }
        let outcome = match ctx.domain(d) {
            Ok(o) => o,
            Err(e) => {
                let mut o = Outcome::new(&d.name, Action::Failed);
                o.error = Some(format!("{e:#}"));
                o
            }
        };
        report.domains.push(outcome);
    }
    report.domains.sort_by(|a, b| a.domain.cmp(&b.domain));

    let changed = report.changed();
    if !changed.is_empty() {
        let req = Request {
            only: Some(changed.iter().cloned().collect()),
            ..Request::default()
        };
        match reconcile::reconcile(cfg, config_path, &req) {
            Ok(r) => {
                for (d, why) in &r.outcome.culprits {
                    tracing::error!(domain = %d, "Apache refused the configuration with the new certificate: {why}");
                    report.left_out.insert(d.clone(), why.clone());
                }
            }
            Err(e) => {
                tracing::error!("reconcile after new certificates failed: {e:#}");
                report.reconcile_error = Some(format!("{e:#}"));
            }
        }
        report.hooks = hooks::run(&cfg.acme.hooks_dir, &changed);
    }
    Ok(report)
}

/// State shared by the domains of one pass: the ACME client and the chain roots are made
/// once, and only when some domain needs them.
struct Pass<'a> {
    cfg: &'a Config,
    now: i64,
    force: bool,
    client: Option<std::result::Result<client::Client, String>>,
    roots: Option<std::result::Result<ChainCheck, String>>,
}

/// Why a domain needs a new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Missing,
    Renew(Renewal),
    ReplaceSelfSigned,
    Forced,
}

impl<'a> Pass<'a> {
    fn new(cfg: &'a Config, now: i64, force: bool) -> Self {
        Self {
            cfg,
            now,
            force,
            client: None,
            roots: None,
        }
    }

    fn client(&mut self) -> std::result::Result<&client::Client, String> {
        let cfg = self.cfg;
        let c = self
            .client
            .get_or_insert_with(|| client::Client::connect(cfg).map_err(|e| format!("{e:#}")));
        c.as_ref().map_err(Clone::clone)
    }

    fn roots(&mut self) -> std::result::Result<ChainCheck, String> {
        let cfg = self.cfg;
        self.roots
            .get_or_insert_with(|| store::chain_roots(cfg).map_err(|e| format!("{e:#}")))
            .clone()
    }

    fn domain(&mut self, d: &Domain) -> Result<Outcome> {
        if !matches!(
            d.ssl_provider,
            SslProvider::Letsencrypt | SslProvider::Selfsigned
        ) {
            return Ok(Outcome::new(&d.name, Action::Manual));
        }
        let _lock = state::lock_domain(self.cfg, &d.name)?;
        let mut st = state::load(self.cfg, &d.name);
        let now = self.now;
        let mut out = Outcome::new(&d.name, Action::NotDue);
        let acme = d.ssl_provider == SslProvider::Letsencrypt;
        // Sympl's config/ssl/<provider>/ settings: a bad value refuses the order.
        let ov = match overrides::read(&self.cfg.paths.srv, d) {
            Ok(o) => o,
            Err(e) => {
                return Ok(self.fail(d, &mut st, out, format!("{}: {e}", d.name), None));
            }
        };
        for w in &ov.ignored {
            tracing::warn!(domain = %d.name, "{w}");
            out.warnings.push(format!("{}: {w}", d.name));
        }
        let spec = ov
            .key
            .unwrap_or_else(|| keys::KeySpec::from(self.cfg.acme.key_type));

        let need = match &d.cert {
            None => Some(Need::Missing),
            Some(c) => {
                let (nb, na) = (c.info.not_before, c.info.not_after);
                out.expires = Some(na);
                if acme && !c.info.self_signed {
                    self.refresh_ari(d, c, &mut st);
                }
                let ari_at = st
                    .ari
                    .as_ref()
                    .filter(|a| a.serial == c.info.serial_hex)
                    .map(|a| a.renew_at);
                out.renew_at = Some(policy::renew_at(nb, na, ari_at));
                if policy::urgent(nb, na, now) {
                    let days = (na - now) as f64 / policy::DAY as f64;
                    let w = format!(
                        "{}: the certificate expires in {days:.1} days ({})",
                        d.name,
                        st.last_error
                            .as_deref()
                            .map_or("no renewal attempted yet".to_string(), |e| format!(
                                "last renewal error: {e}"
                            ))
                    );
                    tracing::error!(domain = %d.name, "URGENT: {w}");
                    out.warnings.push(w);
                }
                match policy::decide(nb, na, ari_at, now) {
                    r if r.is_due() => Some(Need::Renew(r)),
                    _ if acme && c.info.self_signed => Some(Need::ReplaceSelfSigned),
                    _ if self.force => Some(Need::Forced),
                    _ => None,
                }
            }
        };
        // The next key exists ahead of the renewal, so its TLSA record is out long before.
        if let Some(c) = &d.cert {
            let live = crate::dns::records::leaf_spki(&c.chain_pem).ok();
            if let Err(e) = rollover::ensure_next(self.cfg, &d.name, spec, live.as_deref()) {
                tracing::error!(domain = %d.name, "{e:#}");
            }
        }
        let Some(need) = need else {
            state::save(self.cfg, &d.name, &st)?;
            return Ok(out);
        };
        if !policy::may_attempt(st.next_attempt, now, self.force) {
            out.action = Action::BackingOff;
            out.next_attempt = st.next_attempt;
            out.error = st.last_error.clone();
            state::save(self.cfg, &d.name, &st)?;
            return Ok(out);
        }

        // Which names to order.
        let names = d.all_names();
        let (ordered, left_out) = if acme {
            match dns::check_names(self.cfg, &names) {
                Ok(check) => (check.here, check.elsewhere),
                Err(e) => {
                    return Ok(self.fail(
                        d,
                        &mut st,
                        out,
                        format!("{}: name check: {e:#}", d.name),
                        None,
                    ));
                }
            }
        } else {
            (names.clone(), Vec::new())
        };
        for (name, why) in &left_out {
            tracing::warn!(domain = %d.name, name = %name, "not in the certificate: {why}");
        }
        out.left_out = left_out.clone();
        if ordered.is_empty() {
            let why = left_out
                .iter()
                .map(|(n, w)| format!("{n} {w}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(self.fail(
                d,
                &mut st,
                out,
                format!(
                    "{}: none of the site's names point at this host: {why}",
                    d.name
                ),
                None,
            ));
        }
        // A set of ours that covers every name pointing here is enough, even if the model
        // does not use it because other names are not covered: ordering again would give
        // the same names and burn the CA's limits.
        if need == Need::Missing
            && !self.force
            && let Some(set) = self.own_set_covering(d, &ordered)
        {
            out.warnings.push(format!(
                "{}: set {set} covers {} but not {}: Apache does not use it until every name \
                 of the site points here (or the alias is removed)",
                d.name,
                ordered.join(", "),
                left_out
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            state::save(self.cfg, &d.name, &st)?;
            return Ok(out);
        }

        tracing::info!(domain = %d.name, names = ?ordered, reason = ?need, "ordering a certificate");
        st.begin(now);
        state::save(self.cfg, &d.name, &st)?;
        out.ordered = ordered.clone();
        match self.obtain(d, &ordered, &st, spec, ov.lifetime_days) {
            Ok(material) => {
                let chain = if acme {
                    match self.roots() {
                        Ok(c) => c,
                        Err(e) => {
                            return Ok(self.fail(
                                d,
                                &mut st,
                                out,
                                format!("{}: {e}", d.name),
                                None,
                            ));
                        }
                    }
                } else {
                    ChainCheck::Skip
                };
                // A fresh certificate is checked against the wall clock too: `now` was taken
                // before the order, and a CA may start validity at issuance.
                let check_at = now.max(reconcile::now());
                match store::install(
                    &self.cfg.paths.srv,
                    d,
                    &material,
                    &ordered,
                    &chain,
                    check_at,
                ) {
                    Ok((set, info)) => {
                        tracing::info!(domain = %d.name, set = %set, expires = info.not_after, "new certificate set is current");
                        // The key just put live is no longer "next": make the following one.
                        let live = KeyPair::from_pem(&material.key_pem)
                            .ok()
                            .map(|k| k.subject_public_key_info());
                        if let Err(e) =
                            rollover::ensure_next(self.cfg, &d.name, spec, live.as_deref())
                        {
                            tracing::error!(domain = %d.name, "{e:#}");
                        }
                        st.succeeded(now, &set);
                        st.ordered = ordered;
                        st.left_out = left_out;
                        state::save(self.cfg, &d.name, &st)?;
                        out.action = if d.cert.is_some() {
                            Action::Renewed
                        } else {
                            Action::Issued
                        };
                        out.set = Some(set);
                        out.expires = Some(info.not_after);
                        out.renew_at =
                            Some(policy::renew_at(info.not_before, info.not_after, None));
                        out.warnings = ov
                            .ignored
                            .iter()
                            .map(|w| format!("{}: {w}", d.name))
                            .collect();
                        Ok(out)
                    }
                    Err(e) => Ok(self.fail(d, &mut st, out, format!("{e:#}"), None)),
                }
            }
            Err((e, retry_after)) => Ok(self.fail(d, &mut st, out, e, retry_after)),
        }
    }

    /// Key, then certificate: from the CA, or self-signed.
    fn obtain(
        &mut self,
        d: &Domain,
        names: &[String],
        st: &DomainState,
        spec: keys::KeySpec,
        lifetime_days: Option<i64>,
    ) -> std::result::Result<Material, (String, Option<i64>)> {
        let plain = |e: anyhow::Error| (format!("{}: {e:#}", d.name), None);
        let (key, choice) = rollover::choose(self.cfg, d, spec, self.now).map_err(plain)?;
        match choice {
            rollover::Choice::Reuse => tracing::info!(
                domain = %d.name,
                "reusing the live key: the next key's TLSA record has not been published for one TTL yet"
            ),
            rollover::Choice::Next => {
                tracing::info!(domain = %d.name, "the next key (TLSA published ahead) goes live")
            }
            rollover::Choice::Fresh => {}
        }
        let key_pem = keys::key_pem(&key);
        if d.ssl_provider == SslProvider::Selfsigned {
            let days = lifetime_days.unwrap_or(keys::SELF_SIGNED_DAYS);
            let chain_pem = keys::self_signed_days(&key, names, self.now, days).map_err(plain)?;
            return Ok(Material { key_pem, chain_pem });
        }
        let csr = keys::csr_der(&key, names).map_err(plain)?;
        // ARI: say which certificate this one replaces, when the CA offers ARI for it.
        let replaces = match (&d.cert, &st.ari) {
            (Some(c), Some(a)) if a.serial == c.info.serial_hex => {
                leaf_der(c).and_then(|l| client::cert_id(&l))
            }
            _ => None,
        };
        let acme_dir = Layout::new(self.cfg).acme_dir;
        let client = self
            .client()
            .map_err(|e| (format!("{}: {e}", d.name), None))?;
        let _ = client.take_retry_after();
        client
            .order(names, &csr, &acme_dir, replaces)
            .map(|chain_pem| Material { key_pem, chain_pem })
            .map_err(|e| {
                (
                    format!("{}: {e:#} (CA {})", d.name, client.directory()),
                    client.take_retry_after(),
                )
            })
    }

    fn fail(
        &self,
        d: &Domain,
        st: &mut DomainState,
        mut out: Outcome,
        error: String,
        retry_after: Option<i64>,
    ) -> Outcome {
        // `ordered` is set once an attempt has begun (and counted).
        if !out.ordered.is_empty() {
            st.fail(self.now, error.clone(), retry_after);
        } else {
            st.failed(self.now, error.clone(), retry_after);
        }
        tracing::error!(domain = %d.name, next_attempt = ?st.next_attempt, "certificate attempt failed: {error}");
        if let Err(e) = state::save(self.cfg, &d.name, st) {
            tracing::error!(domain = %d.name, "{e:#}");
        }
        out.action = Action::Failed;
        out.error = Some(error);
        out.next_attempt = st.next_attempt;
        out
    }

    /// Asks the CA for the live certificate's ARI window when it is time to (errors only
    /// logged: ARI is advice, the lifetime rule still applies).
    fn refresh_ari(&mut self, d: &Domain, c: &model::CertSet, st: &mut DomainState) {
        let now = self.now;
        let fresh = st
            .ari
            .as_ref()
            .is_some_and(|a| a.serial == c.info.serial_hex && a.next_check > now);
        if fresh || st.ari_next_check.is_some_and(|t| t > now) {
            return;
        }
        let Some(leaf) = leaf_der(c) else { return };
        if client::cert_id(&leaf).is_none() {
            st.ari_next_check = Some(now + 12 * 3_600);
            return;
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(domain = %d.name, "no ARI check: {e}");
                return;
            }
        };
        match client.renewal_info(&leaf, now) {
            Ok(Some((window, next_check))) => {
                let keep = st
                    .ari
                    .as_ref()
                    .filter(|a| a.serial == c.info.serial_hex && a.window == window)
                    .map(|a| a.renew_at);
                let renew_at =
                    keep.unwrap_or_else(|| policy::ari_renew_at(window, random_fraction()));
                st.ari = Some(AriState {
                    serial: c.info.serial_hex.clone(),
                    window,
                    renew_at,
                    next_check,
                });
                st.ari_next_check = Some(next_check);
            }
            Ok(None) => {
                st.ari = None;
                st.ari_next_check = Some(now + 12 * 3_600);
            }
            Err(e) => {
                tracing::warn!(domain = %d.name, "{e:#}");
                st.ari_next_check = Some(now + 3_600);
            }
        }
    }

    /// Our current set, if it verifies (key, dates) and covers `names`.
    fn own_set_covering(&self, d: &Domain, names: &[String]) -> Option<String> {
        let srv = &self.cfg.paths.srv;
        let set = store::current(srv, d).ok().flatten()?;
        let info = store::verify_on_disk(srv, d, &set, names, &ChainCheck::Skip, self.now).ok()?;
        (!policy::decide(info.not_before, info.not_after, None, self.now).is_due()).then_some(set)
    }
}

fn leaf_der(c: &model::CertSet) -> Option<Vec<u8>> {
    crate::certs::parse_pem(c.chain_pem.as_bytes())
        .ok()
        .and_then(|p| p.certs.into_iter().next())
}

/// A uniformly random number in `[0, 1)`.
pub fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return 0.5;
    }
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Exports the DNS records of `only` (all when `None`) and hands the changed ones to the
/// DNS hooks, which records when each TLSA association was first published (the rollover
/// rule, [`crate::dns::key_may_go_live`], reads that). Errors are logged: the next pass
/// offers the change again.
pub fn publish_dns(cfg: &Config, only: Option<&BTreeSet<String>>) {
    let now = reconcile::now();
    let mut export = match crate::dns::build(cfg, only, now) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("DNS export failed: {e:#}");
            return;
        }
    };
    // A domain that left /srv is only noticed (its zones withdrawn from the hooks) by a
    // full export.
    if !export.missing.is_empty() {
        match crate::dns::build(cfg, None, now) {
            Ok(e) => export = e,
            Err(e) => tracing::error!("DNS export failed: {e:#}"),
        }
    }
    match crate::dns::run_hooks_if_changed(cfg, &export, now) {
        Ok(r) if r.domains.is_empty() => {}
        Ok(r) if r.ok() => tracing::info!(domains = ?r.domains, "DNS records published"),
        Ok(r) => tracing::warn!(
            domains = ?r.domains,
            "DNS hooks failed; the change is offered again at the next pass"
        ),
        Err(e) => tracing::error!("DNS publication failed: {e:#}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The maintainer thread.

/// Shortest and longest gap between two full passes: twice a day on average, at random
/// times (Let's Encrypt asks clients not to run on the hour).
const FULL_PASS_MIN: u64 = 9 * 3_600;
const FULL_PASS_MAX: u64 = 15 * 3_600;
/// Kicks arriving this close together are served by one pass.
const KICK_COALESCE: Duration = Duration::from_millis(50);

enum Msg {
    Kick(BTreeSet<String>),
    Stop,
}

/// Runs [`maintain`] in its own thread: a full pass at start-up (after up to a minute) and
/// then twice a day at random times, a pass for the kicked domains as soon as
/// [`Maintainer::kick`] is called, and a retry of failed domains when their backoff runs out.
pub struct Maintainer {
    tx: mpsc::Sender<Msg>,
    handle: Option<JoinHandle<()>>,
    /// Set by [`Maintainer::stop`]: a pass stops before its next domain.
    stop: Arc<AtomicBool>,
}

impl Maintainer {
    /// Starts the thread.
    pub fn start(cfg: Config, config_path: PathBuf) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("dirhost-acme".into())
            .spawn(move || maintainer_loop(&cfg, &config_path, &rx, &flag))
            .context("failed to start the certificate maintainer thread")?;
        Ok(Self {
            tx,
            handle: Some(handle),
            stop,
        })
    }

    /// Asks for a pass over `domains` now (e.g. a new site appeared). Never blocks.
    pub fn kick<I: IntoIterator<Item = String>>(&self, domains: I) {
        let set: BTreeSet<String> = domains.into_iter().collect();
        if !set.is_empty() {
            let _ = self.tx.send(Msg::Kick(set));
        }
    }

    /// Stops the thread: a pass in progress finishes the domain it is at (an order is
    /// bounded in time) and its reconcile, and skips the rest.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// [`Maintainer::stop`], waiting at most `limit` (an order in progress may take
    /// minutes; systemd's stop timeout is shorter). Returns false when it gave up: the
    /// process is about to exit, and an order cut short is already counted as an attempt
    /// (`state::DomainState::begin`), so it never causes extra orders.
    pub fn stop_within(mut self, limit: Duration) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Stop);
        let Some(h) = self.handle.take() else {
            return true;
        };
        let deadline = std::time::Instant::now() + limit;
        while !h.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = h.join();
        true
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn secs_from_now(t: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(t.saturating_sub(now)).unwrap_or(0))
}

fn maintainer_loop(cfg: &Config, config_path: &Path, rx: &mpsc::Receiver<Msg>, stop: &AtomicBool) {
    let jitter = |lo: u64, hi: u64| lo + ((hi - lo) as f64 * random_fraction()) as u64;
    let mut next_full = reconcile::now() + jitter(0, 60) as i64;
    // Failed domains and when their backoff runs out.
    let mut retries: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        let now = reconcile::now();
        let next_retry = retries.values().min().copied().unwrap_or(i64::MAX);
        let wake = next_full.min(next_retry);
        let (only, full) = match rx.recv_timeout(secs_from_now(wake, now)) {
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Kick(mut set)) => {
                // Gather kicks that arrive together (mkdir -p of several sites).
                while let Ok(msg) = rx.recv_timeout(KICK_COALESCE) {
                    match msg {
                        Msg::Kick(more) => set.extend(more),
                        Msg::Stop => return,
                    }
                }
                (Some(set), false)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = reconcile::now();
                if now >= next_full {
                    next_full = now + jitter(FULL_PASS_MIN, FULL_PASS_MAX) as i64;
                    (None, true)
                } else {
                    let due: BTreeSet<String> = retries
                        .iter()
                        .filter(|(_, t)| **t <= now)
                        .map(|(d, _)| d.clone())
                        .collect();
                    (Some(due), false)
                }
            }
        };
        if only.as_ref().is_some_and(BTreeSet::is_empty) {
            continue;
        }
        let opts = Options {
            only: only.clone(),
            force: false,
        };
        match maintain_until(cfg, config_path, reconcile::now(), &opts, Some(stop)) {
            Ok(report) => {
                if full {
                    retries.clear();
                }
                for o in &report.domains {
                    match (&o.action, o.next_attempt) {
                        (Action::Failed | Action::BackingOff, Some(t)) => {
                            retries.insert(o.domain.clone(), t);
                        }
                        _ => {
                            retries.remove(&o.domain);
                        }
                    }
                }
                let changed = report.changed();
                if !changed.is_empty() {
                    tracing::info!(domains = ?changed, "new certificates are live");
                }
                if full {
                    let count = |a: Action| report.domains.iter().filter(|o| o.action == a).count();
                    tracing::info!(
                        domains = report.domains.len(),
                        new = changed.len(),
                        failed = count(Action::Failed),
                        backing_off = count(Action::BackingOff),
                        "certificate pass done; the next in {} h",
                        (next_full - reconcile::now()).max(0) / 3_600
                    );
                }
                if !stop.load(Ordering::Relaxed) {
                    publish_dns(cfg, only.as_ref());
                }
            }
            Err(e) => {
                tracing::error!("certificate maintenance failed: {e:#}");
                if let Some(only) = only {
                    let later = reconcile::now() + 600;
                    for d in only {
                        retries.insert(d, later);
                    }
                }
            }
        }
        if full {
            // A pass over every domain loaded the whole model: give its memory back.
            crate::model::release_memory();
        }
    }
}
