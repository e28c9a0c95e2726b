//! The typed, validated view of /srv: which domains exist, who owns them, their aliases and
//! what their `config/` files say.
//!
//! Reading follows Sympl's conventions (see ARCHITECTURE.md). Everything is read through
//! `safefs`, acting as the domain's owner and never following a symlink below /srv, with
//! bounded sizes. A domain whose files are hostile or malformed is not partly understood: it
//! lands in [`Model::skipped`] with the reason, and the rest of the pipeline leaves whatever
//! it had generated for it alone.
//!
//! The model never writes and never spawns processes.

pub mod srvindex;
pub mod validate;
pub mod vhost;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::certs;
use crate::safefs::{self, Kind, Owner};
use validate::{Flag, SslProvider};
pub use vhost::VhostKind;

/// Lowest uid/gid a domain owner may have (Sympl: system users own nothing in /srv).
pub const MIN_OWNER_ID: u32 = 1000;
/// `nobody`/`nogroup` on Debian; never a valid owner.
const NOBODY: u32 = 65534;

/// Everything dirhost knows about /srv at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Model {
    /// Valid domains by ASCII name.
    pub domains: BTreeMap<String, Domain>,
    /// Entries of /srv that were not taken, with why.
    pub skipped: Vec<Skipped>,
    /// What the domains' files say to the other services (PHP, mail), read in the model
    /// phase by [`Model::load_services`]; `None` until then.
    #[serde(skip)]
    pub services: Option<Services>,
    /// The names in each loaded domain's `config/` (empty when it has none), as listed while
    /// loading: later readers skip files that are not there.
    #[serde(skip)]
    config_files: BTreeMap<String, BTreeSet<String>>,
    /// Each loaded domain's aliases that are symlinks in /srv (not `www.` forms).
    #[serde(skip)]
    symlink_aliases: BTreeMap<String, Vec<String>>,
}

/// Per-domain facts for the services besides Apache, read from /srv (through `safefs`, as
/// each owner) in the model phase, so that render is a pure function of the model.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Each served domain's PHP (`config/php`, `config/php.ini`), or why it was refused.
    pub php: BTreeMap<String, Result<crate::php::State, String>>,
    /// Every domain's mailboxes and mail settings.
    pub mail: crate::mail::MailModel,
    /// Each domain's webmail switch (`mailboxes/`, `config/webmail`), or why it was refused;
    /// for sites and mail-only domains alike. Empty when `[webmail]` is off.
    pub webmail: BTreeMap<String, Result<bool, String>>,
    /// Each served domain's statistics switch and credentials (`config/stats`,
    /// `config/stats-password`).
    pub stats: BTreeMap<String, crate::stats::State>,
}

/// A /srv entry that dirhost refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The entry's name in /srv (lossy if it is not UTF-8).
    pub name: String,
    /// What is wrong, in words a user can act on.
    pub reason: String,
}

/// One hosted domain: a real directory /srv/<name> owned by a normal user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// ASCII (punycode) name, used in every generated file.
    pub name: String,
    /// The directory's own name under /srv (may be Unicode).
    pub dir_name: String,
    /// `/srv/<dir_name>`.
    pub dir: PathBuf,
    /// Owner of the directory; all reads and writes under it act as this user.
    pub uid: u32,
    /// Group of the directory.
    pub gid: u32,
    /// Other names served with this domain: symlinked aliases and `www.` forms, sorted.
    pub aliases: Vec<String>,
    /// Present when `public/htdocs` is a real directory.
    pub web: bool,
    /// Addresses from `config/ip`; empty means every address.
    pub ips: Vec<IpAddr>,
    /// `config/ssl-provider`.
    pub ssl_provider: SslProvider,
    /// `config/mandatory-ssl` (Sympl) or `config/ssl-only` (Symbiosis).
    pub mandatory_ssl: bool,
    /// Send HSTS with mandatory SSL unless `config/no-hsts` or `config/hsts` = false.
    pub hsts: bool,
    /// The live certificate set, when one exists and verifies.
    pub cert: Option<CertSet>,
    /// Problems that did not stop the domain (e.g. an unusable certificate set).
    pub warnings: Vec<String>,
}

impl Domain {
    /// The owner, for `safefs` calls.
    pub fn owner(&self) -> Owner {
        Owner {
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// A plain site `name` at `dir` owned by `uid`:`gid`, every setting at its default: the
    /// starting point of unit tests (`Domain { aliases, ..Domain::for_test(..) }`).
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, dir: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        Self {
            name: name.into(),
            dir_name: name.into(),
            dir: dir.into(),
            uid,
            gid,
            aliases: Vec::new(),
            web: true,
            ips: Vec::new(),
            ssl_provider: validate::SslProvider::Letsencrypt,
            mandatory_ssl: false,
            hsts: true,
            cert: None,
            warnings: Vec::new(),
        }
    }

    /// The domain followed by its aliases: every name the site answers to.
    pub fn all_names(&self) -> Vec<String> {
        std::iter::once(self.name.clone())
            .chain(self.aliases.iter().cloned())
            .collect()
    }
}

/// A verified certificate set, with its material read once (so what was verified is exactly
/// what gets installed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertSet {
    /// Set name (`sets/<name>`), or `legacy` for files directly in `config/`.
    pub name: String,
    /// Leaf then chain, PEM.
    #[serde(skip)]
    pub chain_pem: String,
    /// Private key, PEM.
    #[serde(skip)]
    pub key_pem: String,
    /// Facts about the leaf.
    pub info: certs::CertInfo,
    /// Names the site answers to that the certificate does not cover (HTTPS visitors of
    /// those names see a certificate error).
    pub uncovered: Vec<String>,
}

/// Reads all of /srv as of `now` (unix seconds, for certificate validity).
pub fn load(srv: &Path, now: i64) -> anyhow::Result<Model> {
    load_scoped(srv, None, now)
}

/// Reads /srv, but only the domains in `only` (ASCII names) when given: the daemon's path
/// for a batch of dirty domains. /srv's listing is still read (one `getdents` pass) to find
/// alias symlinks and `www.` directories; other domains' directories are not touched.
pub fn load_scoped(srv: &Path, only: Option<&BTreeSet<String>>, now: i64) -> anyhow::Result<Model> {
    load_scoped_indexed(srv, only, now, None)
}

/// [`load_scoped`] with the daemon's index of /srv ([`srvindex`]): a full load builds it
/// from its own listing; a scoped load takes /srv's entries from it, when there is one,
/// instead of listing /srv. The model is the same either way.
pub fn load_scoped_indexed(
    srv: &Path,
    only: Option<&BTreeSet<String>>,
    now: i64,
    index: Option<&srvindex::Shared>,
) -> anyhow::Result<Model> {
    if let (Some(o), Some(shared)) = (only, index) {
        // The entries this scope can concern and the `www.` names among those the rule may
        // ask about, taken under the index's lock (held only for this lookup).
        let found = shared.with(|ix| {
            ix.entries_for(srv, o).map(|entries| {
                let www: BTreeSet<String> = entries
                    .iter()
                    .filter_map(|(n, _, _)| n.to_str())
                    .filter_map(|n| validate::domain_name(n).ok())
                    .map(|n| format!("www.{n}"))
                    .chain(o.iter().map(|n| format!("www.{n}")))
                    .filter(|w| ix.has_www(w))
                    .collect();
                (entries, www)
            })
        });
        if let Some(Some((entries, www))) = found {
            return load_entries(srv, only, now, entries, Some(www)).map(|(m, _)| m);
        }
    }
    let entries: Vec<srvindex::Entry> = list_srv(srv)?
        .into_iter()
        .map(|(n, t, ino)| (n, t.is_none_or(|t| t.is_symlink()), ino))
        .collect();
    let Some(shared) = index.filter(|_| only.is_none()) else {
        return load_entries(srv, only, now, entries, None).map(|(m, _)| m);
    };
    // A full load for the daemon: the index is built from this very listing, unless lstat
    // disagreed with the listing's inodes (a mount point, an overlay): then there is none.
    // Built before the load, so that its allocations sit together rather than scattered
    // among the load's (freed after the reconcile): scattered, they kept pages of the
    // daemon's heap resident that `malloc_trim` would otherwise give back.
    shared.clear();
    let built = safefs::stat(srv, Path::new(""))
        .ok()
        .flatten()
        .map(|st| srvindex::SrvIndex::build((st.dev, st.ino), &entries));
    let (model, consistent) = load_entries(srv, only, now, entries, None)?;
    shared.set(built.filter(|_| consistent));
    Ok(model)
}

/// The load proper, from /srv's entries (a listing, or the index's). `www`: when the
/// entries are the index's, the `www.` names that exist among those the rule may ask about.
/// Also says whether every entry `lstat`ed had the listing's inode on /srv's device.
fn load_entries(
    srv: &Path,
    only: Option<&BTreeSet<String>>,
    now: i64,
    mut entries: Vec<srvindex::Entry>,
    www: Option<BTreeSet<String>>,
) -> anyhow::Result<(Model, bool)> {
    // One descriptor of /srv for the whole load: each entry is looked at, and each domain
    // directory opened, relative to it (not by opening /srv again per file).
    let srv_dir = safefs::Dir::open_base(srv)
        .map_err(|e| anyhow::anyhow!("failed to open {}: {e}", srv.display()))?;
    let srv_dev = srv_dir.stat(Path::new("")).ok().flatten().map(|s| s.dev);
    let mut consistent = srv_dev.is_some();
    if only.is_none() {
        // A full load visits every entry: in name order. A scoped one sorts only what it
        // keeps (sorting 10,000 names was a third of a scoped load).
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut model = Model::default();
    // Scoped: symlinks that are not named themselves, checked once the domains in scope are
    // known (only those pointing at one of them are aliases to read).
    let mut maybe_aliases: Vec<&str> = Vec::new();
    let mut links: Vec<(String, Stat)> = Vec::new();
    let mut dirs: Vec<(String, OsString, Stat)> = Vec::new();
    let named = |raw: &str| match only {
        None => true,
        Some(o) => {
            o.contains(raw)
                || (!raw.is_ascii() && validate::domain_name(raw).is_ok_and(|a| o.contains(&a)))
        }
    };
    // A dirty alias symlink dirties the domain it points at.
    let alias_targets: BTreeSet<u64> = match only {
        None => BTreeSet::new(),
        Some(_) => entries
            .iter()
            .filter(|(n, l, _)| *l && n.to_str().is_some_and(named))
            .filter_map(|(n, _, _)| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(srv.join(n)).ok().map(|m| m.ino())
            })
            .collect(),
    };
    let in_scope = |raw: &str, ino: u64| named(raw) || alias_targets.contains(&ino);
    for (name, maybe_link, ino) in &entries {
        let lossy = name.to_string_lossy().into_owned();
        if !srvindex::looked_at(&lossy) {
            continue;
        }
        let Some(raw) = name.to_str() else {
            if only.is_none() {
                model.skip(&lossy, "the name is not UTF-8".into());
            }
            continue;
        };
        let maybe_link = *maybe_link;
        if !maybe_link && !in_scope(raw, *ino) {
            continue;
        }
        if only.is_some() && !in_scope(raw, *ino) {
            maybe_aliases.push(raw);
            continue;
        }
        let st = match lstat(&srv_dir, raw) {
            Ok(Some(st)) => st,
            Ok(None) => continue, // vanished while we looked
            Err(e) => {
                model.skip(&lossy, e.to_string());
                continue;
            }
        };
        consistent &= st.ino == *ino && Some(st.dev) == srv_dev;
        match st.kind {
            Kind::Symlink => links.push((raw.to_string(), st)),
            Kind::Dir if in_scope(raw, *ino) => dirs.push((raw.to_string(), name.clone(), st)),
            _ => {} // out of scope, or plain files in /srv are not domains; Sympl ignores them too
        }
    }

    if only.is_some() {
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
    }

    // Domains first, so aliases can find their targets.
    let mut by_inode: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut seen_ascii: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<(String, String, Stat)> = Vec::new();
    for (raw, _, st) in dirs {
        let ascii = match validate::domain_name(&raw) {
            Ok(a) => a,
            Err(e) => {
                model.skip(&raw, e.to_string());
                continue;
            }
        };
        if let Err(reason) = owner_ok(st.uid, st.gid) {
            model.skip(&raw, reason);
            continue;
        }
        if !seen_ascii.insert(ascii.clone()) {
            model.skip(&raw, format!("another directory in /srv is also {ascii}"));
            continue;
        }
        by_inode.insert((st.dev, st.ino), ascii.clone());
        pending.push((raw, ascii, st));
    }

    // Scoped: of the other symlinks, those that point at a domain in scope (one `stat`
    // each, following the link only to compare inodes, as `alias_target` does).
    if only.is_some() {
        use std::os::unix::fs::MetadataExt;
        for raw in maybe_aliases {
            let points_here = std::fs::metadata(srv.join(raw))
                .is_ok_and(|m| by_inode.contains_key(&(m.dev(), m.ino())));
            if !points_here {
                continue;
            }
            match lstat(&srv_dir, raw) {
                Ok(Some(st)) if st.kind == Kind::Symlink => links.push((raw.to_string(), st)),
                Ok(_) => {}
                Err(e) => model.skip(raw, e.to_string()),
            }
        }
        links.sort_by(|a, b| a.0.cmp(&b.0));
    }

    // Symlinked aliases: /srv/<alias> -> a domain directory.
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (raw, link) in links {
        match alias_target(srv, &raw, &link, &by_inode, &pending) {
            Ok(Some((alias, target))) => aliases.entry(target).or_default().push(alias),
            Ok(None) => {} // dangling or not ours: Sympl ignores these silently
            Err(reason) => model.skip(&raw, reason),
        }
    }

    // `with_www` only asks whether `www.<name>` exists: only such entries are converted
    // (an IDN conversion of every /srv entry made a scoped load grow with /srv).
    let existing: BTreeSet<String> = match www {
        Some(www) => www,
        None => entries
            .iter()
            .filter_map(|(n, _, _)| n.to_str())
            .filter_map(srvindex::www_key)
            .collect(),
    };
    let pending: Vec<(String, String, Stat, Vec<String>)> = pending
        .into_iter()
        .map(|(raw, ascii, st)| {
            let mut names = aliases.remove(&ascii).unwrap_or_default();
            model.symlink_aliases.insert(ascii.clone(), names.clone());
            names.push(ascii.clone());
            let all_aliases = with_www(&names, &existing, &ascii);
            (raw, ascii, st, all_aliases)
        })
        .collect();
    let read = par_map(&pending, |(raw, ascii, st, all_aliases)| {
        read_domain(&srv_dir, raw, ascii, st, all_aliases.clone(), now)
    });
    for ((raw, ascii, _, _), result) in pending.into_iter().zip(read) {
        match result {
            Ok((d, config)) => {
                model.config_files.insert(ascii.clone(), config);
                model.domains.insert(ascii, d);
            }
            Err(reason) => model.skip(&raw, reason),
        }
    }
    Ok((model, consistent))
}

/// [`load_scoped`] followed by [`Model::load_services`]: everything the pipeline needs,
/// read in one phase.
pub fn load_with_services(
    cfg: &crate::config::Config,
    only: Option<&BTreeSet<String>>,
    now: i64,
) -> anyhow::Result<Model> {
    let mut model = load_scoped(&cfg.paths.srv, only, now)?;
    model.load_services(cfg);
    Ok(model)
}

/// [`load_with_services`] with the daemon's index of /srv (see [`load_scoped_indexed`]).
pub fn load_with_services_indexed(
    cfg: &crate::config::Config,
    only: Option<&BTreeSet<String>>,
    now: i64,
    index: Option<&srvindex::Shared>,
) -> anyhow::Result<Model> {
    let mut model = load_scoped_indexed(&cfg.paths.srv, only, now, index)?;
    model.load_services(cfg);
    Ok(model)
}

impl Model {
    /// Reads the PHP and mail files of every domain in the model (through `safefs`, as the
    /// owner) into [`Model::services`]. Problems are per domain, recorded there.
    pub fn load_services(&mut self, cfg: &crate::config::Config) {
        let webmail_on = crate::webmail::enabled(cfg);
        // PHP and statistics are read for sites only; the webmail switch for every domain
        // (a mail-only domain gets a webmail-only vhost, see [`vhost`]).
        let all: Vec<&Domain> = self
            .domains
            .values()
            .filter(|d| d.web || webmail_on)
            .collect();
        let host = cfg.hostname();
        let srv_dir = safefs::Dir::open_base(&cfg.paths.srv).ok();
        let per_domain = par_map(&all, |d| {
            let config = self.config_files(&d.name);
            // One handle of the domain's directory for its reads, opened only if one is needed.
            let dir = match &srv_dir {
                Some(srv) => safefs::LazyDir::below(srv, Path::new(&d.dir_name)),
                None => safefs::LazyDir::new(&cfg.paths.srv, Path::new(&d.dir_name)),
            };
            let php = d.web.then(|| crate::php::read_known(cfg, &dir, d, config));
            let webmail = webmail_on.then(|| crate::webmail::wanted_in(&dir, d, d.name == host));
            let stats = d.web.then(|| crate::stats::read_in(&dir, d, config));
            (d.name.clone(), php, webmail, stats)
        });
        let (mut php, mut webmail, mut stats) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for (name, p, w, s) in per_domain {
            if let Some(w) = w {
                webmail.insert(name.clone(), w);
            }
            if let Some(s) = s {
                stats.insert(name.clone(), s);
            }
            if let Some(p) = p {
                php.insert(name, p);
            }
        }
        let mail = crate::mail::load_prepared(cfg, self);
        self.services = Some(Services {
            php,
            mail,
            webmail,
            stats,
        });
    }

    /// The model with [`Model::services`] loaded: itself when they are, else a copy that
    /// loads them (for callers that built the model with [`load`] alone).
    pub fn with_services(&self, cfg: &crate::config::Config) -> std::borrow::Cow<'_, Model> {
        match self.services {
            Some(_) => std::borrow::Cow::Borrowed(self),
            None => {
                let mut m = self.clone();
                m.load_services(cfg);
                std::borrow::Cow::Owned(m)
            }
        }
    }

    /// The names in `domain`'s `config/` as listed by the load, `None` when unknown (a model
    /// put together by hand).
    pub fn config_files(&self, domain: &str) -> Option<&BTreeSet<String>> {
        self.config_files.get(domain)
    }

    /// `domain`'s aliases that are symlinks in /srv, as the load found them; `None` when
    /// unknown (a model put together by hand).
    pub fn symlink_aliases(&self, domain: &str) -> Option<&[String]> {
        self.symlink_aliases.get(domain).map(Vec::as_slice)
    }

    fn skip(&mut self, name: &str, reason: String) {
        // Escaped: a /srv entry named "a\nskipped b.test: …" must not forge report lines.
        let name = validate::printable(name);
        tracing::warn!(domain = %name, "skipped: {reason}");
        self.skipped.push(Skipped { name, reason });
    }

    /// The entry for `name` in `skipped`, if any.
    pub fn skipped_reason(&self, name: &str) -> Option<&str> {
        self.skipped
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.reason.as_str())
    }
}

type Stat = safefs::Stat;

/// /srv's entries with their type from the directory listing itself (`d_type`, no stat),
/// in directory order. The type is only a hint for skipping work; decisions use `safefs::stat`.
fn list_srv(srv: &Path) -> anyhow::Result<Vec<(OsString, Option<std::fs::FileType>, u64)>> {
    use anyhow::Context;
    use std::os::unix::fs::DirEntryExt;
    let mut out = Vec::new();
    let rd = std::fs::read_dir(srv).with_context(|| format!("failed to list {}", srv.display()))?;
    for entry in rd {
        let entry = entry.with_context(|| format!("failed to list {}", srv.display()))?;
        out.push((entry.file_name(), entry.file_type().ok(), entry.ino()));
    }

    Ok(out)
}

fn lstat(srv: &safefs::Dir, rel: &str) -> Result<Option<Stat>, safefs::SafeError> {
    srv.stat(Path::new(rel))
}

/// Sympl's rule: system users (uid or gid below 1000) own nothing that dirhost serves.
fn owner_ok(uid: u32, gid: u32) -> Result<(), String> {
    if uid < MIN_OWNER_ID || uid == NOBODY {
        return Err(format!(
            "owned by uid {uid}: domains must be owned by a user with uid >= {MIN_OWNER_ID} (chown it to the customer's user)"
        ));
    }
    if gid < MIN_OWNER_ID || gid == NOBODY {
        return Err(format!(
            "group is gid {gid}: domains must belong to a group with gid >= {MIN_OWNER_ID}"
        ));
    }
    Ok(())
}

/// Resolves an alias symlink in /srv. `Ok(None)`: dangling or pointing at something that is
/// not a domain (ignored, as Sympl does). `Err`: a link we must refuse and report.
fn alias_target(
    srv: &Path,
    raw: &str,
    link: &Stat,
    by_inode: &BTreeMap<(u64, u64), String>,
    domains: &[(String, String, Stat)],
) -> Result<Option<(String, String)>, String> {
    // Following the link is safe here: we only stat it, and only compare the inode with the
    // domains we already know.
    let Ok(meta) = std::fs::metadata(srv.join(raw)) else {
        return Ok(None);
    };
    use std::os::unix::fs::MetadataExt;
    let Some(target) = by_inode.get(&(meta.dev(), meta.ino())) else {
        return Ok(None);
    };
    let alias = validate::domain_name(raw).map_err(|e| e.to_string())?;
    let Some((_, _, tst)) = domains.iter().find(|(_, a, _)| a == target) else {
        return Ok(None);
    };
    // A link made by one customer must not pull another customer's site under a name:
    // the link must belong to the target's owner (or to root, i.e. the admin).
    if link.uid != 0 && link.uid != tst.uid {
        return Err(format!(
            "alias symlink is owned by uid {} but points at {target}, owned by uid {}: refused",
            link.uid, tst.uid
        ));
    }
    if alias == *target {
        return Ok(None);
    }
    Ok(Some((alias, target.clone())))
}

/// Sympl's www. rule: every name not starting with `www.` also answers as `www.<name>`,
/// unless `/srv/www.<name>` exists in its own right. Returns aliases without `domain`.
pub fn with_www(names: &[String], srv_entries: &BTreeSet<String>, domain: &str) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for n in names {
        out.insert(n.clone());
        if !n.starts_with("www.") {
            let www = format!("www.{n}");
            let own_dir = srv_entries.contains(&www) && !names.contains(&www);
            if !own_dir {
                out.insert(www);
            }
        }
    }
    out.remove(domain);
    out.into_iter().collect()
}

/// Files in `config/` that dirhost reads as flags or values.
const VALUE_FILES: &[&str] = &[
    "ip",
    "ssl-provider",
    "mandatory-ssl",
    "ssl-only",
    "no-hsts",
    "hsts",
];

/// Reads one domain through a handle of its directory (one walk from /srv per domain; the
/// handle also pins the directory whose owner was checked), `config/` through a handle of
/// its own, and the files read as the owner in batches (one credential switch per batch).
fn read_domain(
    srv: &safefs::Dir,
    raw: &str,
    ascii: &str,
    st: &Stat,
    aliases: Vec<String>,
    now: i64,
) -> Result<(Domain, BTreeSet<String>), String> {
    let owner = Owner {
        uid: st.uid,
        gid: st.gid,
    };
    let dir = match srv.open_dir(Path::new(raw)) {
        Ok(Some(dir)) => dir,
        Ok(None) => return Err("the directory vanished while it was read".into()),
        Err(e) => return Err(e.to_string()),
    };
    match dir.stat(Path::new("")) {
        Ok(Some(held)) if (held.dev, held.ino) == (st.dev, st.ino) => {}
        Ok(_) => return Err("the directory was replaced while it was read".into()),
        Err(e) => return Err(e.to_string()),
    }
    let config = dir
        .open_dir(Path::new("config"))
        .map_err(|e| format!("config/: {e}"))?;
    let config_names: BTreeSet<String> = match config.as_ref().map(|c| c.list_dir(Path::new(""))) {
        Some(Ok(Some(names))) => names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect(),
        None | Some(Ok(None)) => BTreeSet::new(),
        Some(Err(e)) => return Err(format!("config/: {e}")),
    };
    let mut values: BTreeMap<&str, Flag> = BTreeMap::new();
    {
        // As the owner from the domain's directory down, as ever (the `config` handle above
        // is root's, for the listing); one switch for all of them.
        let as_owner = dir.as_owner(owner);
        for name in VALUE_FILES {
            if !config_names.contains(*name) {
                continue;
            }
            let bytes = as_owner
                .read(&Path::new("config").join(name), safefs::MAX_VALUE_FILE)
                .map_err(|e| format!("config/{name}: {e}"))?;
            let flag = Flag::parse(bytes.as_deref()).map_err(|e| format!("config/{name}: {e}"))?;
            values.insert(name, flag);
        }
    }
    let flag = |n: &str| values.get(n).cloned().unwrap_or(Flag::Unset);

    let mut warnings = Vec::new();
    let ips = match flag("ip") {
        Flag::Value(v) => validate::ip_list(&v).map_err(|e| format!("config/ip: {e}"))?,
        _ => Vec::new(),
    };
    let (ssl_provider, warn) = validate::ssl_provider(&flag("ssl-provider"));
    warnings.extend(warn);
    let mandatory_ssl = flag("mandatory-ssl").is_on() || flag("ssl-only").is_on();
    let hsts = !(flag("no-hsts").is_on() || flag("hsts") == Flag::False);

    let web = match dir.stat(Path::new("public/htdocs")) {
        Ok(Some(s)) if s.kind == Kind::Dir => true,
        Ok(Some(s)) if s.kind == Kind::Symlink => {
            warnings.push(
                "public/htdocs is a symbolic link: not served (make it a real directory)".into(),
            );
            false
        }
        Ok(_) => false,
        Err(e) => return Err(format!("public/htdocs: {e}")),
    };

    let mut domain = Domain {
        name: ascii.to_string(),
        dir_name: raw.to_string(),
        dir: srv.path().join(raw),
        uid: st.uid,
        gid: st.gid,
        aliases,
        web,
        ips,
        ssl_provider,
        mandatory_ssl,
        hsts,
        cert: None,
        warnings,
    };
    let (cert, mut cert_warnings) = match &config {
        Some(config) => {
            let names = domain.all_names();
            current_cert_set(&dir, config, owner, &config_names, &names, now)
        }
        None => (None, Vec::new()),
    };
    if let Some(c) = cert.as_ref().filter(|c| !c.uncovered.is_empty()) {
        cert_warnings.push(format!(
            "certificate set {} does not cover {}: HTTPS for those names shows a certificate error",
            c.name,
            c.uncovered.join(", ")
        ));
    }
    domain.cert = cert;
    domain.warnings.extend(cert_warnings);
    for w in &domain.warnings {
        tracing::warn!(domain = %ascii, "{w}");
    }
    Ok((domain, config_names))
}

/// Finds the live certificate set: `config/ssl/current` -> `sets/<N>`; when that is missing
/// or unusable, the valid set that expires last (Sympl's rollover rule: a broken `current`
/// never takes a working certificate away); else the legacy files directly in `config/`.
/// Problems come back as warnings: the site is still served.
/// `config` is root's handle of the domain's `config/` (listings, links); the files are read
/// as the owner from `dom`, the domain's directory, down.
fn current_cert_set(
    dom: &safefs::Dir,
    config: &safefs::Dir,
    owner: Owner,
    config_names: &BTreeSet<String>,
    names: &[String],
    now: i64,
) -> (Option<CertSet>, Vec<String>) {
    let mut warnings = Vec::new();
    if config_names.contains("ssl") {
        let current = match config.read_link(Path::new("ssl/current")) {
            Ok(Some(target)) => match set_from_link(&target) {
                Some(set) => Some(set),
                None => {
                    warnings.push(format!(
                        "config/ssl/current points at {}: expected sets/<name>",
                        validate::printable(&target.to_string_lossy())
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                warnings.push(format!("config/ssl/current: {e}"));
                None
            }
        };
        if let Some(set) = &current {
            match read_set(dom, config, owner, set, names, now) {
                Ok(c) => return (Some(c), warnings),
                Err(w) => warnings.push(w),
            }
        }
        let sets: Vec<String> = match config.list_dir(Path::new("ssl/sets")) {
            Ok(Some(v)) => v.into_iter().filter_map(|n| n.into_string().ok()).collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                warnings.push(format!("config/ssl/sets: {e}"));
                Vec::new()
            }
        };
        let mut broken = Vec::new();
        let best = sets
            .iter()
            .filter(|n| validate::set_name(n) && Some(*n) != current.as_ref())
            .filter_map(|n| {
                read_set(dom, config, owner, n, names, now)
                    .map_err(|w| broken.push(w))
                    .ok()
            })
            .max_by_key(|c| c.info.not_after);
        if let Some(c) = best {
            if current.is_some() {
                warnings.push(format!("using certificate set {} instead", c.name));
            }
            return (Some(c), warnings);
        }
        // No usable set at all: say why for each one (with a usable set, older broken or
        // expired sets are normal history and stay quiet).
        warnings.extend(broken);
    }
    match legacy_set(dom, owner, config_names, names, now) {
        Ok(c) => (c, warnings),
        Err(w) => {
            warnings.push(w);
            (None, warnings)
        }
    }
}

fn read_set(
    dom: &safefs::Dir,
    config: &safefs::Dir,
    owner: Owner,
    set: &str,
    names: &[String],
    now: i64,
) -> Result<CertSet, String> {
    let missing = || format!("certificate set {set} does not exist");
    let sub = Path::new("ssl/sets").join(set);
    let dir = match config.open_dir(&sub) {
        Ok(Some(dir)) => dir,
        Ok(None) => return Err(missing()),
        Err(e) => return Err(format!("certificate set {set}: {e}")),
    };
    let files: BTreeSet<String> = match dir.list_dir(Path::new("")) {
        Ok(Some(f)) => f.into_iter().filter_map(|n| n.into_string().ok()).collect(),
        Ok(None) => return Err(missing()),
        Err(e) => return Err(format!("certificate set {set}: {e}")),
    };
    load_set(
        dom,
        &Path::new("config").join(sub),
        owner,
        &files,
        set,
        names,
        now,
    )
}

/// `sets/<N>` or `<anything>/config/ssl/sets/<N>` → `N`, when `N` is a valid set name.
fn set_from_link(target: &Path) -> Option<String> {
    let mut comps: Vec<String> = target
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let n = comps.pop()?;
    let sets = comps.pop()?;
    (sets == "sets"
        && validate::set_name(&n)
        && (comps.is_empty() || comps.ends_with(&["config".into(), "ssl".into()])))
    .then_some(n)
}

fn legacy_set(
    dom: &safefs::Dir,
    owner: Owner,
    config_names: &BTreeSet<String>,
    names: &[String],
    now: i64,
) -> Result<Option<CertSet>, String> {
    let has_any = ["ssl.crt", "ssl.combined", "ssl.pem", "ssl.cert"]
        .iter()
        .any(|f| config_names.contains(*f));
    if !has_any {
        return Ok(None);
    }
    load_set(
        dom,
        Path::new("config"),
        owner,
        config_names,
        "legacy",
        names,
        now,
    )
    .map(Some)
}

/// Reads and verifies a set's files. Certificates come from ssl.crt/ssl.cert/ssl.pem/
/// ssl.combined then ssl.bundle; the key from ssl.key, else from a combined file.
/// `sub`: the set's directory below `dom`, the domain's; `files`: what its listing showed.
fn load_set(
    dom: &safefs::Dir,
    sub: &Path,
    owner: Owner,
    files: &BTreeSet<String>,
    set: &str,
    names: &[String],
    now: i64,
) -> Result<CertSet, String> {
    // The set's files in one batch as the owner (dropped before verifying), its directory
    // walked once, as the owner, from the domain's.
    let as_owner = dom.as_owner(owner);
    let set_dir = std::cell::OnceCell::new();
    let read = |f: &str| -> Result<Option<certs::Pem>, String> {
        if !files.contains(f) {
            return Ok(None);
        }
        let set_dir = match set_dir.get() {
            Some(d) => d,
            None => {
                let opened = as_owner
                    .open_dir(sub)
                    .map_err(|e| format!("certificate set {set}: {e}"))?;
                set_dir.get_or_init(|| opened)
            }
        };
        let Some(set_dir) = set_dir else {
            return Ok(None);
        };
        let bytes = set_dir
            .read(Path::new(f), safefs::MAX_VALUE_FILE)
            .map_err(|e| format!("certificate set {set}: {e}"))?;
        match bytes {
            None => Ok(None),
            Some(b) => certs::parse_pem(&b)
                .map(Some)
                .map_err(|e| format!("certificate set {set}: {f}: {e}")),
        }
    };
    let mut pem = certs::Pem::default();
    let mut key_from_file = false;
    if let Some(k) = read("ssl.key")? {
        pem.keys = k.keys;
        key_from_file = true;
    }
    for f in ["ssl.crt", "ssl.cert", "ssl.pem", "ssl.combined"] {
        if let Some(p) = read(f)? {
            if pem.certs.is_empty() {
                pem.certs = p.certs;
            }
            if !key_from_file && pem.keys.is_empty() {
                pem.keys = p.keys;
            }
        }
    }
    if let Some(b) = read("ssl.bundle")? {
        for c in b.certs {
            if !pem.certs.contains(&c) {
                pem.certs.push(c);
            }
        }
    }
    drop(set_dir);
    drop(as_owner);
    // The set must cover the domain itself; names it leaves out (a `www.` or alias whose DNS
    // does not point here yet, so the CA could not validate it) are reported, not fatal.
    let info = certs::verify_set(&pem, &names[..names.len().min(1)], now)
        .map_err(|e| format!("certificate set {set} is not usable: {e}"))?;
    let uncovered: Vec<&str> = names
        .iter()
        .filter(|n| !certs::covers(&info.names, n))
        .map(String::as_str)
        .collect();
    let key = pem
        .keys
        .first()
        .ok_or_else(|| format!("certificate set {set} has no key"))?;
    Ok(CertSet {
        name: set.to_string(),
        chain_pem: certs::to_pem_certs(&pem.certs),
        key_pem: certs::to_pem_key(key),
        info,
        uncovered: uncovered.into_iter().map(str::to_string).collect(),
    })
}

/// Hands the memory a big pass freed back to the kernel (a full resync, a certificate pass
/// over every domain). glibc keeps freed heap pages otherwise, and a pass over 10,000
/// domains would leave the idle daemon holding the peak (about 100 MB) for good.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at two (the main one and one for the workers): with an arena
/// per worker thread, much of what a full resync freed stayed resident despite the daemon's
/// `malloc_trim` (`dirhost watch` at 63 MB RSS after its first full resync of 10,000
/// domains, 34 MB with two arenas; `benches/watch.rs -- daemon`). One arena for everything
/// made the workers queue on its lock (a 10,000-domain no-op 1.6 s instead of 0.9 s).
fn cap_malloc_arenas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes a malloc tunable; any value is valid to ask for.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    });
}

/// `items.iter().map(f)`, over up to four threads when there are enough items to be worth
/// it (the per-domain work of a 10,000-domain load or render), in order. `safefs` switches
/// credentials per thread, so `f` may read /srv as owners.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_PER_THREAD: usize = 64;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    cap_malloc_arenas();
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        let v: Vec<usize> = (0..1000).collect();
        assert_eq!(
            par_map(&v, |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert_eq!(par_map(&v[..3], |x| x + 1), vec![1, 2, 3]);
        assert!(par_map(&[] as &[u8], |x| *x).is_empty());
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }
    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn www_rules_follow_sympl() {
        // single domain D -> [www.D]
        assert_eq!(
            with_www(&v(&["d.com"]), &set(&["d.com"]), "d.com"),
            v(&["www.d.com"])
        );
        // symlink S -> D: [S, www.D, www.S]
        assert_eq!(
            with_www(&v(&["s.com", "d.com"]), &set(&["d.com", "s.com"]), "d.com"),
            v(&["s.com", "www.d.com", "www.s.com"])
        );
        // /srv/www.O exists in its own right: O gets no www alias
        assert_eq!(
            with_www(&v(&["o.com"]), &set(&["o.com", "www.o.com"]), "o.com"),
            Vec::<String>::new()
        );
        // www.x itself as the domain gets no www.www.
        assert_eq!(
            with_www(&v(&["www.x.com"]), &set(&["www.x.com"]), "www.x.com"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn owners() {
        for (uid, gid, ok) in [
            (1000, 1000, true),
            (2001, 2001, true),
            (0, 0, false),
            (33, 33, false),
            (999, 1000, false),
            (1000, 999, false),
            (65534, 65534, false),
        ] {
            assert_eq!(owner_ok(uid, gid).is_ok(), ok, "{uid}:{gid}");
        }
    }

    #[test]
    fn current_links() {
        for (link, want) in [
            ("sets/0", Some("0")),
            ("sets/12", Some("12")),
            ("/srv/example.com/config/ssl/sets/3", Some("3")),
            ("sets/../../../etc", None),
            ("/etc/ssl/private", None),
            ("sets/A", None),
            ("0", None),
            ("other/sets/1", None),
        ] {
            assert_eq!(set_from_link(Path::new(link)).as_deref(), want, "{link}");
        }
    }
}
