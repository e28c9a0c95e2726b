//! Compares the desired files with what is on disk and decides what to change.
//!
//! The decision itself ([`decide_file`], [`decide_link`]) is a pure function of the desired
//! contents and the bytes on disk, table-tested below. [`plan`] gathers the on-disk facts (it
//! reads only dirhost's output directories under /etc and the state dir, never /srv) and
//! applies the decisions. Nothing here writes.
//!
//! Rules (Sympl's, made explicit): a file whose checksum seal is intact, or that carries
//! Sympl's "DO NOT EDIT" banner, is dirhost's to replace or remove; a file whose seal no
//! longer matches was edited by hand and is kept (and reported) unless `--force`; a file
//! without a seal was made by hand and is never touched, even by `--force` removal.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checksum::{self, Seal};
use crate::render::{Desired, DesiredFile, DesiredLink, FileKind, Layout, Service};

/// What to do to one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Action {
    /// Write a file (new or replacing).
    Write {
        /// New contents.
        #[serde(skip)]
        contents: String,
        /// Permission bits.
        mode: u32,
    },
    /// Create or replace a symlink.
    Link {
        /// Link target.
        target: PathBuf,
    },
    /// Remove a file or symlink.
    Remove,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The path changed.
    pub path: PathBuf,
    /// What happens to it.
    #[serde(flatten)]
    pub action: Action,
    /// The domain it belongs to (`None`: shared).
    pub domain: Option<String>,
    /// The server that must be tested and reloaded.
    pub service: Service,
}

/// Something the user should know that is not a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// The file concerned.
    pub path: PathBuf,
    /// Its domain, if any.
    pub domain: Option<String>,
    /// What and why.
    pub message: String,
    /// For hand-edited files: what dirhost would write (for `--diff`).
    #[serde(skip)]
    pub wanted: Option<String>,
}

/// The plan: changes in a safe order (files before the links that enable them; links before
/// the files they point at when removing), and notices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Changes to make.
    pub changes: Vec<Change>,
    /// Things left alone on purpose.
    pub notices: Vec<Notice>,
}

impl Plan {
    /// Domains with at least one change.
    pub fn domains(&self) -> BTreeSet<String> {
        self.changes
            .iter()
            .filter_map(|c| c.domain.clone())
            .collect()
    }
}

/// Options that change decisions.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replace hand-edited files and re-enable sites an admin disabled.
    pub force: bool,
    /// Only these domains (by ASCII name) are considered; `None`: all. Shared files are
    /// always considered.
    pub only: Option<BTreeSet<String>>,
    /// Domains that still exist but could not be read or rendered: whatever was generated
    /// for them stays as it is.
    pub keep: BTreeSet<String>,
    /// Where the mail state lives, to remove what domains without mail no longer need;
    /// `None`: mail files are not pruned.
    pub mail: Option<crate::mail::MailLayout>,
}

impl Options {
    fn in_scope(&self, domain: Option<&String>) -> bool {
        match (domain, &self.only) {
            (None, _) | (_, None) => true,
            (Some(d), Some(only)) => only.contains(d),
        }
    }
}

/// What a desired file needs, given what is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDecision {
    /// Already as desired.
    UpToDate,
    /// Write it.
    Write,
    /// Leave it: edited by hand.
    KeepEdited,
    /// Leave it: made by hand (no seal).
    KeepUnmanaged,
}

/// Decides one desired file. `on_disk`: current contents and mode, `None` when absent.
pub fn decide_file(want: &DesiredFile, on_disk: Option<(&[u8], u32)>, force: bool) -> FileDecision {
    let Some((bytes, mode)) = on_disk else {
        return FileDecision::Write;
    };
    let same = bytes == want.contents.as_bytes() && mode & 0o7777 == want.mode;
    if same {
        return FileDecision::UpToDate;
    }
    if want.kind == FileKind::Private || force {
        return FileDecision::Write;
    }
    match checksum::inspect(bytes) {
        Seal::Intact | Seal::Banner => FileDecision::Write,
        Seal::Edited => FileDecision::KeepEdited,
        Seal::Unmanaged => FileDecision::KeepUnmanaged,
    }
}

/// What is at a link's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Nothing.
    Absent,
    /// A symlink to this target.
    Link(PathBuf),
    /// A file or directory.
    Other,
}

/// What a desired enabling link needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDecision {
    /// Already right.
    UpToDate,
    /// Create (or fix) it.
    Create,
    /// The file exists but an admin removed the link: stay disabled (Sympl's rule).
    KeepDisabled,
    /// Something else is at the path: leave it.
    KeepOther,
}

/// Decides one enabling link. `file_is_new`: the file it enables is created by this plan.
pub fn decide_link(
    want: &DesiredLink,
    state: &LinkState,
    file_is_new: bool,
    force: bool,
) -> LinkDecision {
    match state {
        LinkState::Link(t) if *t == want.target => LinkDecision::UpToDate,
        LinkState::Link(_) if force => LinkDecision::Create,
        LinkState::Link(_) | LinkState::Other => LinkDecision::KeepOther,
        LinkState::Absent if file_is_new || force || want.domain.is_none() => LinkDecision::Create,
        LinkState::Absent => LinkDecision::KeepDisabled,
    }
}

/// Builds the plan for `desired` against the filesystem.
pub fn plan(desired: &Desired, layout: &Layout, opts: &Options) -> anyhow::Result<Plan> {
    let mut p = Plan::default();
    // Hashed, not ordered: comparing paths component by component was 6 % of a no-op.
    let mut new_files: HashSet<&Path> = HashSet::new();
    let mut wanted_paths: HashSet<&Path> = HashSet::new();
    let mut link_changes = Vec::new();

    let files: Vec<&DesiredFile> = desired
        .files
        .iter()
        .filter(|f| opts.in_scope(f.domain.as_ref()))
        .collect();
    // Reading back what is on disk is most of the plan's time: over the cores.
    let on_disk = crate::model::par_map(&files, |f| read_file(&f.path));
    for (f, disk) in files.into_iter().zip(on_disk) {
        wanted_paths.insert(&f.path);
        let disk = disk?;
        let decision = decide_file(
            f,
            disk.as_ref().map(|(b, m)| (b.as_slice(), *m)),
            opts.force,
        );
        match decision {
            FileDecision::UpToDate => {}
            FileDecision::Write => {
                if disk.is_none() {
                    new_files.insert(&f.path);
                }
                p.changes.push(Change {
                    path: f.path.clone(),
                    action: Action::Write {
                        contents: f.contents.clone(),
                        mode: f.mode,
                    },
                    domain: f.domain.clone(),
                    service: f.service,
                });
            }
            FileDecision::KeepEdited => p.notices.push(Notice {
                path: f.path.clone(),
                domain: f.domain.clone(),
                message: "edited by hand: left alone (`dirhost apply --diff` shows what it is missing, `--force` replaces it)".into(),
                wanted: Some(f.contents.clone()),
            }),
            FileDecision::KeepUnmanaged => p.notices.push(Notice {
                path: f.path.clone(),
                domain: f.domain.clone(),
                message: "not written by dirhost (no checksum line): left alone; move it away or use `--force` to let dirhost manage it".into(),
                wanted: Some(f.contents.clone()),
            }),
        }
    }

    for l in desired
        .links
        .iter()
        .filter(|l| opts.in_scope(l.domain.as_ref()))
    {
        wanted_paths.insert(&l.path);
        let state = link_state(&l.path)?;
        match decide_link(l, &state, new_files.contains(l.enables.as_path()), opts.force) {
            LinkDecision::UpToDate => {}
            LinkDecision::Create => link_changes.push(Change {
                path: l.path.clone(),
                action: Action::Link {
                    target: l.target.clone(),
                },
                domain: l.domain.clone(),
                service: l.service,
            }),
            LinkDecision::KeepDisabled => p.notices.push(Notice {
                path: l.path.clone(),
                domain: l.domain.clone(),
                message: "disabled by an admin (enabling link removed): left disabled; `dirhost apply --force DOMAIN` re-enables it".into(),
                wanted: None,
            }),
            LinkDecision::KeepOther => p.notices.push(Notice {
                path: l.path.clone(),
                domain: l.domain.clone(),
                message: "something other than dirhost's link is here: left alone".into(),
                wanted: None,
            }),
        }
    }
    p.changes.extend(link_changes);

    prune(&mut p, desired, layout, opts, &wanted_paths)?;
    Ok(p)
}

/// Removes what dirhost generated for domains that no longer want it (htdocs gone, domain
/// gone), never touching hand-made or hand-edited files, nor domains in `opts.keep`.
fn prune(
    p: &mut Plan,
    desired: &Desired,
    layout: &Layout,
    opts: &Options,
    wanted: &HashSet<&Path>,
) -> anyhow::Result<()> {
    // Decided per file: a domain may still have other files (mail) after its vhost has
    // gone (htdocs removed, the last mailbox of a mail-only domain removed).
    let gone = |d: &String| {
        !opts.keep.contains(d) && !desired.failed.contains_key(d) && opts.in_scope(Some(d))
    };

    let mut unlinks = Vec::new();
    let mut removes = Vec::new();
    let site_names: Vec<String> = match &opts.only {
        Some(only) => only.iter().map(|d| format!("{d}.conf")).collect(),
        None => list(&layout.sites_available)?,
    };
    for name in site_names {
        let Some(domain) = name.strip_suffix(".conf") else {
            continue;
        };
        if crate::model::validate::domain_name(domain).as_deref() != Ok(domain) {
            continue; // not a per-domain file (000-default.conf, zz-mass-hosting.conf...)
        }
        let domain = domain.to_string();
        let path = layout.sites_available.join(&name);
        if wanted.contains(path.as_path()) || !gone(&domain) {
            continue;
        }
        let Some((bytes, _)) = read_file(&path)? else {
            continue;
        };
        let seal = checksum::inspect(&bytes);
        let link = layout.sites_enabled.join(&name);
        let link_ours = matches!(link_state(&link)?, LinkState::Link(t) if t == Path::new("../sites-available").join(&name) || t == path);
        if seal.replaceable() || (opts.force && seal == Seal::Edited) {
            if link_ours {
                unlinks.push(remove(link, &domain, Service::Apache));
            }
            removes.push(remove(path, &domain, Service::Apache));
        } else if seal == Seal::Edited {
            p.notices.push(Notice {
                path,
                domain: Some(domain),
                message: "the site is gone but this file was edited by hand: left in place".into(),
                wanted: None,
            });
        }
    }
    // Private certificate copies that nothing wants any more (site gone, or no live set).
    let ssl_domains: Vec<String> = match &opts.only {
        Some(only) => only.iter().cloned().collect(),
        None => list(&layout.ssl_dir)?,
    };
    for domain in ssl_domains {
        if !opts.in_scope(Some(&domain))
            || opts.keep.contains(&domain)
            || desired.failed.contains_key(&domain)
        {
            continue;
        }
        for f in list(&layout.ssl_dir.join(&domain))? {
            let path = layout.ssl_dir.join(&domain).join(f);
            if !wanted.contains(path.as_path()) {
                removes.push(remove(path, &domain, Service::Apache));
            }
        }
    }
    // PHP-FPM pools nothing wants any more: site gone, htdocs gone, or PHP switched off (so
    // decided per file, not per domain).
    let pool_files: Vec<String> = match &opts.only {
        Some(only) => only.iter().map(|d| format!("{d}.conf")).collect(),
        None => list(&layout.php_pool_dir)?,
    };
    for name in pool_files {
        let Some(domain) = name.strip_suffix(".conf") else {
            continue;
        };
        if crate::model::validate::domain_name(domain).as_deref() != Ok(domain)
            || opts.keep.contains(domain)
            || desired.failed.contains_key(domain)
            || !opts.in_scope(Some(&domain.to_string()))
        {
            continue; // Debian's www.conf, or a domain whose files stay as they are
        }
        let path = layout.php_pool_dir.join(&name);
        if wanted.contains(path.as_path()) {
            continue;
        }
        if let Some((bytes, _)) = read_file(&path)?
            && checksum::inspect(&bytes).replaceable()
        {
            removes.push(remove(path, domain, Service::Php));
        }
    }
    if let Some(mail) = &opts.mail {
        prune_mail(mail, desired, opts, wanted, &mut removes)?;
    }
    p.changes.extend(unlinks);
    p.changes.extend(removes);
    Ok(())
}

/// Mail state that no domain wants any more (domain gone, its mail gone, an alias or a
/// certificate name gone): `<state>/mail/exim/{domains,tls}/<name>`,
/// `<state>/mail/dovecot/passwd/<name>` (dirhost's private copies: every file there is
/// ours) and `<dovecot>/dirhost.d/<domain>.conf` (only while its seal says it is ours).
/// DKIM keys are never removed: a key outlives a pause in signing, and DNS may still
/// publish it. A file is left alone while the domain it belongs to is kept or failed.
fn prune_mail(
    mail: &crate::mail::MailLayout,
    desired: &Desired,
    opts: &Options,
    wanted: &HashSet<&Path>,
    removes: &mut Vec<Change>,
) -> anyhow::Result<()> {
    // Names to look at: everything in a full run; in a scoped run the names in scope and
    // their `www.` forms (a removed alias or domain is itself a dirty name).
    let scoped: Option<Vec<String>> = opts.only.as_ref().map(|only| {
        only.iter()
            .flat_map(|d| [d.clone(), format!("www.{d}")])
            .collect()
    });
    let names = |dir: &Path| -> anyhow::Result<Vec<String>> {
        match &scoped {
            Some(v) => Ok(v.clone()),
            None => list(dir),
        }
    };
    // The domain a mail name belongs to: from the lsearch file's `domain:` line (aliases),
    // else the name itself without `www.`.
    let owner = |name: &str| -> String {
        let from_file = |n: &str| {
            std::fs::read_to_string(mail.domains_dir.join(n))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("domain: "))
                        .map(|d| d.trim().to_string())
                })
        };
        let bare = name.strip_prefix("www.").unwrap_or(name);
        from_file(name)
            .or_else(|| from_file(bare))
            .unwrap_or_else(|| bare.to_string())
    };
    let held = |name: &str, domain: &str| {
        [name, domain]
            .iter()
            .any(|n| opts.keep.contains(*n) || desired.failed.contains_key(*n))
    };
    for (dir, service) in [
        (&mail.domains_dir, Service::Exim),
        (&mail.tls_dir, Service::Exim),
        (&mail.passwd_dir, Service::Dovecot),
    ] {
        for name in names(dir)? {
            if crate::model::validate::domain_name(&name).as_deref() != Ok(name.as_str()) {
                continue;
            }
            let path = dir.join(&name);
            if wanted.contains(path.as_path())
                || !matches!(std::fs::symlink_metadata(&path), Ok(m) if m.is_file())
            {
                continue;
            }
            let domain = owner(&name);
            if held(&name, &domain) {
                continue;
            }
            removes.push(remove(path, &domain, service));
        }
    }
    let confs: Vec<String> = match &scoped {
        Some(v) => v.iter().map(|d| format!("{d}.conf")).collect(),
        None => list(&mail.dovecot_domains)?,
    };
    for name in confs {
        let Some(domain) = name.strip_suffix(".conf") else {
            continue;
        };
        if crate::model::validate::domain_name(domain).as_deref() != Ok(domain)
            || held(domain, domain)
        {
            continue;
        }
        let path = mail.dovecot_domains.join(&name);
        if wanted.contains(path.as_path()) {
            continue;
        }
        if let Some((bytes, _)) = read_file(&path)?
            && checksum::inspect(&bytes).replaceable()
        {
            removes.push(remove(path, domain, Service::Dovecot));
        }
    }
    Ok(())
}

fn remove(path: PathBuf, domain: &str, service: Service) -> Change {
    Change {
        path,
        action: Action::Remove,
        domain: Some(domain.to_string()),
        service,
    }
}

/// Names in a directory (sorted); empty if it does not exist.
fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("failed to list {}", dir.display())));
        }
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| {
            anyhow::Error::new(e).context(format!("failed to list {}", dir.display()))
        })?;
        if let Ok(n) = e.file_name().into_string() {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

/// Contents and mode of a regular file, without following a symlink. A symlink or other
/// non-file reads as contents that match nothing (so it is treated as unmanaged).
fn read_file(path: &Path) -> anyhow::Result<Option<(Vec<u8>, u32)>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("failed to stat {}", path.display())));
        }
    };
    if !meta.is_file() {
        return Ok(Some((Vec::new(), u32::MAX)));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::Error::new(e).context(format!("failed to read {}", path.display())))?;
    Ok(Some((bytes, meta.permissions().mode())))
}

fn link_state(path: &Path) -> anyhow::Result<LinkState> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            Ok(LinkState::Link(std::fs::read_link(path).map_err(|e| {
                anyhow::Error::new(e).context(format!("failed to read link {}", path.display()))
            })?))
        }
        Ok(_) => Ok(LinkState::Other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LinkState::Absent),
        Err(e) => Err(anyhow::Error::new(e).context(format!("failed to stat {}", path.display()))),
    }
}

/// Groups changes by domain (`None` = shared), keeping order.
pub fn by_domain<'a>(
    changes: impl IntoIterator<Item = &'a Change>,
) -> BTreeMap<Option<String>, Vec<&'a Change>> {
    let mut out: BTreeMap<Option<String>, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        out.entry(c.domain.clone()).or_default().push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str, kind: FileKind) -> DesiredFile {
        DesiredFile {
            path: "/x".into(),
            contents: contents.into(),
            mode: 0o644,
            kind,
            domain: Some("a.com".into()),
            service: Service::Apache,
        }
    }

    #[test]
    fn file_decisions() {
        let want = checksum::seal("new\n");
        let old = checksum::seal("old\n");
        let edited = format!("# mine\n{old}");
        let cfg = file(&want, FileKind::Config);
        let private = file("KEY", FileKind::Private);
        use FileDecision::*;
        type Case<'a> = (&'a DesiredFile, Option<(&'a [u8], u32)>, bool, FileDecision);
        let cases: Vec<Case> = vec![
            (&cfg, None, false, Write),
            (&cfg, Some((want.as_bytes(), 0o100644)), false, UpToDate),
            (&cfg, Some((want.as_bytes(), 0o100600)), false, Write), // mode drift on an intact file
            (&cfg, Some((old.as_bytes(), 0o100644)), false, Write),
            (&cfg, Some((edited.as_bytes(), 0o100644)), false, KeepEdited),
            (&cfg, Some((edited.as_bytes(), 0o100644)), true, Write),
            (&cfg, Some((b"hand made\n", 0o100644)), false, KeepUnmanaged),
            (&cfg, Some((b"hand made\n", 0o100644)), true, Write),
            (
                &cfg,
                Some((
                    b"# DO NOT EDIT THIS FILE - CHANGES WILL BE OVERWRITTEN\nold\n",
                    0o100644,
                )),
                false,
                Write,
            ),
            (&private, Some((b"OLDKEY", 0o100644)), false, Write),
            (&private, None, false, Write),
        ];
        for (i, (want, disk, force, expect)) in cases.into_iter().enumerate() {
            assert_eq!(decide_file(want, disk, force), expect, "case {i}");
        }
    }

    #[test]
    fn link_decisions() {
        let site = DesiredLink {
            path: "/e/sites-enabled/a.com.conf".into(),
            target: "../sites-available/a.com.conf".into(),
            enables: "/e/sites-available/a.com.conf".into(),
            domain: Some("a.com".into()),
            service: Service::Apache,
        };
        let shared = DesiredLink {
            domain: None,
            ..site.clone()
        };
        let right = LinkState::Link("../sites-available/a.com.conf".into());
        let wrong = LinkState::Link("/elsewhere".into());
        use LinkDecision::*;
        let cases = [
            (&site, &right, false, false, UpToDate),
            (&site, &LinkState::Absent, true, false, Create),
            (&site, &LinkState::Absent, false, false, KeepDisabled),
            (&site, &LinkState::Absent, false, true, Create),
            (&shared, &LinkState::Absent, false, false, Create),
            (&site, &wrong, false, false, KeepOther),
            (&site, &wrong, false, true, Create),
            (&site, &LinkState::Other, true, true, KeepOther),
        ];
        for (i, (l, s, new, force, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide_link(l, s, new, force), want, "case {i}");
        }
    }
}
