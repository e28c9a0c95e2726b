//! Makes a plan real, safely: the only module that writes server configuration and runs the
//! servers' test and reload commands.
//!
//! Every write is atomic (temp file in the same directory, fsync, rename, fsync the
//! directory) and remembers what it replaced. The whole candidate configuration is tested
//! with the configured test command before any reload. When the test fails, the domains'
//! changes are rolled back and bisected: the domains whose files break the test are left out
//! (their previous files restored) and reported, everyone else's changes go live. Reload is
//! graceful, once per apply, and only when something changed; if it fails, everything is
//! restored.
//!
//! It never reads /srv: certificates and other customer material reach it as bytes that the
//! model already verified.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::config::Config;
use crate::plan::{Action, Change, Plan};
use crate::render::{Layout, Service};

/// What an apply did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Changes that went live.
    pub applied: Vec<Change>,
    /// Domains whose changes broke the config test, with the test's output. Their previous
    /// files were kept.
    pub culprits: BTreeMap<String, String>,
    /// Services reloaded.
    pub reloaded: Vec<Service>,
}

/// How a path looked before we touched it.
#[derive(Debug, Clone)]
enum Prior {
    Absent,
    File(Vec<u8>, u32),
    Link(PathBuf),
}

/// Applies `plan` (see the module doc), one service at a time: each service's changes are
/// tested with that service's test command, bisected on failure and reloaded once. Returns an
/// error when a service could not take any change (its shared config fails the test, or its
/// reload fails) — after every other service was applied; per-domain failures are in
/// [`Outcome::culprits`].
pub fn apply(plan: &Plan, cfg: &Config, layout: &Layout) -> Result<Outcome> {
    let mut out = Outcome::default();
    if plan.changes.is_empty() {
        return Ok(out);
    }
    ensure_dirs(layout)?;
    let services: std::collections::BTreeSet<Service> =
        plan.changes.iter().map(|c| c.service).collect();
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for service in services {
        let changes: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.service == service)
            .collect();
        match apply_service(service, &changes, cfg, layout) {
            Ok(part) => {
                out.applied.extend(part.applied);
                out.culprits.extend(part.culprits);
                out.reloaded.extend(part.reloaded);
            }
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(out),
        1 => Err(errors.remove(0)),
        _ => bail!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn apply_service(
    service: Service,
    changes: &[&Change],
    cfg: &Config,
    layout: &Layout,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let groups = crate::plan::by_domain(changes.iter().copied());
    let shared: Vec<&Change> = groups.get(&None).cloned().unwrap_or_default();
    let domains: Vec<(String, Vec<&Change>)> = groups
        .into_iter()
        .filter_map(|(d, c)| d.map(|d| (d, c)))
        .collect();

    let mut tx = Tx::default();
    for c in &shared {
        tx.apply(c, layout)?;
    }
    let mut live: Vec<&Change> = shared.clone();
    let mut applied_domains: Vec<usize> = Vec::new();
    for (i, (_, changes)) in domains.iter().enumerate() {
        for c in changes {
            tx.apply(c, layout)?;
        }
        applied_domains.push(i);
    }

    if let Err(first) = test(cfg, service) {
        tracing::warn!("candidate config failed the test; isolating the domains responsible");
        for (_, changes) in domains.iter().rev() {
            for c in changes.iter().rev() {
                tx.restore(&c.path)?;
            }
        }
        if let Err(e) = test(cfg, service) {
            tx.restore_all()?;
            if test(cfg, service).is_err() {
                bail!(
                    "{service}'s configuration fails its test even without dirhost's changes; nothing was changed:\n{e:#}"
                );
            }
            bail!(
                "the shared dirhost configuration fails {service}'s test; nothing was changed:\n{e:#}\n(first failure: {first:#})"
            );
        }
        let all: Vec<usize> = (0..domains.len()).collect();
        applied_domains.clear();
        let ctx = Bisect {
            service,
            domains: &domains,
            cfg,
            layout,
        };
        bisect(&ctx, &all, &mut tx, &mut applied_domains, &mut out.culprits)?;
    }

    for i in &applied_domains {
        live.extend(domains[*i].1.iter().copied());
    }
    if live.is_empty() {
        return Ok(out);
    }
    if let Err(e) = reload(cfg, service) {
        tracing::error!("reload failed, restoring the previous configuration: {e:#}");
        tx.restore_all()?;
        if let Err(e2) = reload(cfg, service) {
            tracing::error!("reload after restoring also failed: {e2:#}");
        }
        return Err(e.context(format!(
            "{service} reload failed; the previous configuration was restored"
        )));
    }
    out.reloaded.push(service);
    out.applied = live.into_iter().cloned().collect();
    for c in &out.applied {
        tracing::info!(domain = c.domain.as_deref().unwrap_or("-"), path = %c.path.display(), "{}", describe(&c.action));
    }
    Ok(out)
}

/// What a bisection needs besides the indices it works on.
struct Bisect<'a, 'c> {
    service: Service,
    domains: &'a [(String, Vec<&'c Change>)],
    cfg: &'a Config,
    layout: &'a Layout,
}

/// Finds, among `idx` (none currently applied, the current state passes the test), the
/// domains whose changes make the test fail. Good domains stay applied.
fn bisect(
    b: &Bisect<'_, '_>,
    idx: &[usize],
    tx: &mut Tx,
    good: &mut Vec<usize>,
    bad: &mut BTreeMap<String, String>,
) -> Result<()> {
    if idx.is_empty() {
        return Ok(());
    }
    for i in idx {
        for c in &b.domains[*i].1 {
            tx.apply(c, b.layout)?;
        }
    }
    let err = match test(b.cfg, b.service) {
        Ok(()) => {
            good.extend_from_slice(idx);
            return Ok(());
        }
        Err(e) => e,
    };
    for i in idx.iter().rev() {
        for c in b.domains[*i].1.iter().rev() {
            tx.restore(&c.path)?;
        }
    }
    if let [only] = idx {
        let name = &b.domains[*only].0;
        let service = b.service;
        tracing::error!(domain = %name, "left out: its configuration fails {service}'s test: {err:#}");
        bad.insert(name.clone(), format!("{err:#}"));
        return Ok(());
    }
    let (left, right) = idx.split_at(idx.len() / 2);
    bisect(b, left, tx, good, bad)?;
    bisect(b, right, tx, good, bad)
}

fn describe(a: &Action) -> &'static str {
    match a {
        Action::Write { .. } => "wrote",
        Action::Link { .. } => "linked",
        Action::Remove => "removed",
    }
}

/// Journal of what each touched path was before, so any subset can be put back.
#[derive(Default)]
struct Tx {
    priors: Vec<(PathBuf, Prior)>,
}

impl Tx {
    fn apply(&mut self, c: &Change, layout: &Layout) -> Result<()> {
        if !self.priors.iter().any(|(p, _)| *p == c.path) {
            self.priors.push((c.path.clone(), capture(&c.path)?));
        }
        match &c.action {
            Action::Write { contents, mode } => {
                let parent = c.path.parent().context("file without a parent directory")?;
                if !parent.exists() {
                    let private = parent.starts_with(&layout.ssl_dir);
                    mkdir(parent, if private { 0o700 } else { 0o755 })?;
                }
                write_atomic(&c.path, contents.as_bytes(), *mode)
            }
            Action::Link { target } => symlink_atomic(&c.path, target),
            Action::Remove => {
                remove(&c.path)?;
                if let Some(parent) = c
                    .path
                    .parent()
                    .filter(|p| p.starts_with(&layout.ssl_dir) && *p != layout.ssl_dir)
                {
                    let _ = std::fs::remove_dir(parent); // only succeeds when empty
                }
                Ok(())
            }
        }
    }

    fn restore(&mut self, path: &Path) -> Result<()> {
        let Some((_, prior)) = self.priors.iter().find(|(p, _)| p == path) else {
            return Ok(());
        };
        match prior {
            Prior::Absent => remove(path),
            Prior::File(bytes, mode) => {
                if let Some(parent) = path.parent().filter(|p| !p.exists()) {
                    mkdir(parent, 0o700)?;
                }
                write_atomic(path, bytes, *mode)
            }
            Prior::Link(target) => symlink_atomic(path, target),
        }
    }

    fn restore_all(&mut self) -> Result<()> {
        let paths: Vec<PathBuf> = self.priors.iter().rev().map(|(p, _)| p.clone()).collect();
        for p in paths {
            self.restore(&p)?;
        }
        Ok(())
    }
}

fn capture(path: &Path) -> Result<Prior> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Prior::Absent),
        Err(e) => return Err(e).with_context(|| format!("failed to stat {}", path.display())),
    };
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(path)
            .with_context(|| format!("failed to read link {}", path.display()))?;
        return Ok(Prior::Link(t));
    }
    if !meta.is_file() {
        bail!(
            "{} is not a regular file; refusing to replace it",
            path.display()
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(Prior::File(bytes, meta.permissions().mode() & 0o7777))
}

fn ensure_dirs(layout: &Layout) -> Result<()> {
    for d in [
        &layout.sites_available,
        &layout.sites_enabled,
        &layout.conf_available,
        &layout.conf_enabled,
    ] {
        if !d.exists() {
            mkdir(d, 0o755)?;
        }
    }
    if !layout.acme_dir.exists() {
        mkdir(&layout.acme_dir, 0o755)?;
    }
    if !layout.ssl_dir.exists() {
        mkdir(&layout.ssl_dir, 0o700)?;
    }
    Ok(())
}

fn mkdir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("failed to create {}", dir.display()))
}

/// Atomic replace for dirhost's own output directories (root-owned /etc and state paths;
/// /srv is written only through `safefs`).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("file without a parent directory")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".dirhost-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
    tmp.write_all(contents)
        .with_context(|| format!("failed to write {}", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to chmod {}", tmp.path().display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("failed to fsync {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("failed to rename into {}", path.display()))?;
    sync_dir(dir)
}

fn symlink_atomic(path: &Path, target: &Path) -> Result<()> {
    let dir = path.parent().context("link without a parent directory")?;
    let tmp = dir.join(format!(".dirhost-link-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("failed to create link {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to rename into {}", path.display()))?;
    sync_dir(dir)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to remove {}", path.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to fsync {}", dir.display()))
}

fn argv(cfg: &Config, service: Service, reload: bool) -> &[String] {
    let c = &cfg.commands;
    match (service, reload) {
        (Service::Apache, false) => &c.apache_test,
        (Service::Apache, true) => &c.apache_reload,
        (Service::Exim, false) => &c.exim_test,
        (Service::Exim, true) => &c.exim_reload,
        (Service::Dovecot, false) => &c.dovecot_test,
        (Service::Dovecot, true) => &c.dovecot_reload,
        (Service::Php, false) => &c.php_test,
        (Service::Php, true) => &c.php_reload,
    }
}

/// Runs a service's config test; `Err` carries its output.
pub fn test(cfg: &Config, service: Service) -> Result<()> {
    run(argv(cfg, service, false)).with_context(|| format!("{service} config test failed"))
}

/// Reloads a service gracefully.
pub fn reload(cfg: &Config, service: Service) -> Result<()> {
    run(argv(cfg, service, true)).with_context(|| format!("{service} reload failed"))
}

/// Runs an argv list (no shell); non-zero exit → error with stdout and stderr.
pub fn run(argv: &[String]) -> Result<()> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let out = Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("failed to run {prog}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    bail!(
        "`{}` exited with {}: {}",
        argv.join(" "),
        out.status,
        text.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.conf");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn journal_restores_files_links_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            sites_available: dir.path().join("sa"),
            sites_enabled: dir.path().join("se"),
            conf_available: dir.path().join("ca"),
            conf_enabled: dir.path().join("ce"),
            acme_dir: dir.path().join("acme"),
            ssl_dir: dir.path().join("ssl"),
            php_pool_dir: dir.path().join("pool.d"),
        };
        ensure_dirs(&layout).unwrap();
        let existing = layout.sites_available.join("a.conf");
        std::fs::write(&existing, "old").unwrap();
        let link = layout.sites_enabled.join("a.conf");
        std::os::unix::fs::symlink("../sites-available/a.conf", &link).unwrap();
        let fresh = layout.sites_available.join("b.conf");
        let change = |path: &Path, action| Change {
            path: path.to_path_buf(),
            action,
            domain: Some("a.com".into()),
            service: Service::Apache,
        };
        let mut tx = Tx::default();
        tx.apply(
            &change(
                &existing,
                Action::Write {
                    contents: "new".into(),
                    mode: 0o644,
                },
            ),
            &layout,
        )
        .unwrap();
        tx.apply(
            &change(
                &fresh,
                Action::Write {
                    contents: "b".into(),
                    mode: 0o644,
                },
            ),
            &layout,
        )
        .unwrap();
        tx.apply(&change(&link, Action::Remove), &layout).unwrap();
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "new");
        assert!(fresh.exists() && !link.exists());
        tx.restore_all().unwrap();
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "old");
        assert!(!fresh.exists());
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("../sites-available/a.conf")
        );
    }

    #[test]
    fn run_reports_output() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(run(&argv(&["true"])).is_ok());
        let e = run(&argv(&["sh", "-c", "echo boom >&2; exit 3"])).unwrap_err();
        assert!(format!("{e:#}").contains("boom"), "{e:#}");
        assert!(run(&argv(&["/nonexistent/binary"])).is_err());
    }
}
