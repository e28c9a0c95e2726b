//! `dirhost site …`: creating, showing and removing domains by editing /srv.
//!
//! The tree stays the single source of truth: these commands only do what `mkdir`, `cp` and
//! `mv` would, safely (through `safefs`, as the domain's owner), and then ask the pipeline to
//! reconcile. They never delete a customer's content: `remove` moves the domain into an
//! archive directory that only root can read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::model::{self, MIN_OWNER_ID, validate};
use crate::safefs::{self, Owner};

/// Where `remove` puts domains: a hidden directory in /srv (the model ignores dot-names).
pub const ARCHIVE_DIR: &str = ".dirhost-archive";

/// Resolves `--owner`: a user name (uid and primary gid from the passwd database), or
/// numeric `UID[:GID]` (no passwd entry needed, as for a directory chowned by number; GID
/// defaults to the user's primary group, else to UID).
pub fn resolve_owner(spec: &str) -> Result<Owner> {
    let (uid_part, gid_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let owner = if let Ok(uid) = uid_part.parse::<u32>() {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))?;
        let gid = match gid_part {
            Some(g) => g
                .parse::<u32>()
                .with_context(|| format!("{g:?} is not a numeric gid"))?,
            None => user.map_or(uid, |u| u.gid.as_raw()),
        };
        Owner { uid, gid }
    } else {
        let Some(user) = nix::unistd::User::from_name(uid_part)? else {
            return Err(crate::cli::UsageError(format!(
                "no such user {uid_part:?} (give a user name or a numeric uid)"
            ))
            .into());
        };
        Owner {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    };
    check_owner(owner, spec)?;
    Ok(owner)
}

fn check_owner(owner: Owner, who: &str) -> Result<()> {
    if owner.uid < MIN_OWNER_ID || owner.gid < MIN_OWNER_ID {
        bail!(
            "{who} has uid {} and gid {}: domains must be owned by a user with uid and gid >= {MIN_OWNER_ID}",
            owner.uid,
            owner.gid
        );
    }
    Ok(())
}

/// Creates `/srv/<name>/public/htdocs` and `config/` owned by `owner`, then copies the
/// skeleton (`[paths] skel`) into it. Returns the domain directory.
pub fn add(cfg: &Config, name: &str, owner: Owner) -> Result<PathBuf> {
    let ascii = validate::domain_name(name).with_context(|| format!("cannot add {name:?}"))?;
    check_owner(owner, &format!("uid {}", owner.uid))?;
    let srv = &cfg.paths.srv;
    let dir = srv.join(name);
    if std::fs::symlink_metadata(&dir).is_ok() {
        bail!("{} already exists", dir.display());
    }
    if ascii != name && srv.join(&ascii).exists() {
        bail!("{} already exists (as {ascii})", name);
    }
    // /srv itself is root's: create the domain directory as the caller, hand it to the
    // owner (lchown: never through a link), then work inside it as the owner.
    std::fs::create_dir(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    std::os::unix::fs::lchown(&dir, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("failed to chown {}", dir.display()))?;
    let rel = |p: &str| PathBuf::from(name).join(p);
    for sub in ["public/htdocs", "config"] {
        safefs::mkdir_all(srv, &rel(sub), owner, 0o755)
            .with_context(|| format!("failed to create {sub} in {}", dir.display()))?;
    }
    copy_skeleton(&cfg.paths.skel, srv, Path::new(name), owner)?;
    Ok(dir)
}

/// Copies regular files and directories from `skel` into the domain, as the owner. Symlinks
/// and special files in the skeleton are skipped; existing files are not overwritten.
fn copy_skeleton(skel: &Path, srv: &Path, domain: &Path, owner: Owner) -> Result<()> {
    if !skel.is_dir() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(skel).min_depth(1).follow_links(false) {
        let entry =
            entry.with_context(|| format!("failed to read the skeleton {}", skel.display()))?;
        let rel_in_skel = entry.path().strip_prefix(skel).context("skeleton path")?;
        let target = domain.join(rel_in_skel);
        let ft = entry.file_type();
        if ft.is_dir() {
            safefs::mkdir_all(srv, &target, owner, 0o755)?;
        } else if ft.is_file() {
            if safefs::stat(srv, &target)?.is_some() {
                continue;
            }
            let bytes = std::fs::read(entry.path())
                .with_context(|| format!("failed to read {}", entry.path().display()))?;
            safefs::write_atomic(srv, &target, &bytes, owner, 0o644)?;
        }
    }
    Ok(())
}

/// Moves `/srv/<name>` into the archive (or removes an alias symlink, which holds no
/// content). Returns where the content went (`None` for an alias).
pub fn remove(cfg: &Config, name: &str, now: i64) -> Result<Option<PathBuf>> {
    let srv = &cfg.paths.srv;
    let entry = find_entry(srv, name)?;
    let path = srv.join(&entry);
    let meta = std::fs::symlink_metadata(&path)
        .with_context(|| format!("failed to stat {}", path.display()))?;
    if meta.file_type().is_symlink() {
        std::fs::remove_file(&path)
            .with_context(|| format!("failed to remove the alias {}", path.display()))?;
        return Ok(None);
    }
    let archive = srv.join(ARCHIVE_DIR);
    if !archive.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&archive)
            .with_context(|| format!("failed to create {}", archive.display()))?;
    }
    let dest = archive.join(format!("{entry}.{now}"));
    std::fs::rename(&path, &dest)
        .with_context(|| format!("failed to move {} to {}", path.display(), dest.display()))?;
    Ok(Some(dest))
}

/// A domain named on the command line that cannot be used; callers branch on the kind (the
/// command line maps [`NameError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// Not a domain name at all (a usage error).
    #[error("{name:?} is not a valid domain name: {why}")]
    Invalid {
        /// What was typed.
        name: String,
        /// Why it is not a name.
        why: String,
    },
    /// No such entry in /srv (a usage error), with the closest existing domain.
    #[error("no such domain {name}{}", match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => format!(" in {}", srv.display()),
    })]
    NoSuchDomain {
        /// The ASCII name.
        name: String,
        /// The closest existing domain, if one is close.
        suggestion: Option<String>,
        /// The /srv that was searched.
        srv: PathBuf,
    },
    /// The entry exists but the model refuses it (owner uid < 1000, …).
    #[error("{name} is {reason}")]
    Skipped {
        /// The entry.
        name: String,
        /// The model's reason, e.g. "owned by uid 33: domains must be owned by …".
        reason: String,
    },
    /// No such mailbox (a usage error), with the closest existing one.
    #[error("no such mailbox {address}{}", match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => " (`dirhost mail add` creates it)".to_string(),
    })]
    NoSuchMailbox {
        /// What was typed.
        address: String,
        /// The closest existing address, if one is close.
        suggestion: Option<String>,
    },
    /// Run by a user who does not own the domain.
    #[error(
        "{name} belongs to uid {owner}, not to you (uid {you}): run this as its owner, or as root"
    )]
    NotYours {
        /// The entry.
        name: String,
        /// Its owner.
        owner: u32,
        /// The caller's uid.
        you: u32,
    },
}

impl NameError {
    /// 2 for what is wrong with the command line itself, 1 for a domain that fails.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } | Self::NoSuchDomain { .. } | Self::NoSuchMailbox { .. } => 2,
            Self::Skipped { .. } | Self::NotYours { .. } => 1,
        }
    }
}

/// The ASCII form of a name typed by a user, or [`NameError::Invalid`].
pub fn parse_name(name: &str) -> Result<String, NameError> {
    validate::domain_name(&name.to_lowercase()).map_err(|e| NameError::Invalid {
        name: name.to_string(),
        why: match e {
            validate::Invalid::DomainName(_, why) => why.to_string(),
            other => other.to_string(),
        },
    })
}

/// The /srv entry for a name a user typed (ASCII or Unicode), or an error that suggests
/// the closest existing domain.
pub fn find_entry(srv: &Path, name: &str) -> Result<String> {
    Ok(lookup_entry(srv, name)?)
}

/// [`find_entry`] with a typed error.
pub fn lookup_entry(srv: &Path, name: &str) -> Result<String, LookupError> {
    let wanted = parse_name(name)?;
    let mut names = Vec::new();
    let dir = std::fs::read_dir(srv).map_err(|e| LookupError::Io(srv.to_path_buf(), e))?;
    for e in dir {
        let e = e.map_err(|e| LookupError::Io(srv.to_path_buf(), e))?;
        let Ok(n) = e.file_name().into_string() else {
            continue;
        };
        if n.starts_with('.') {
            continue;
        }
        if n == wanted || validate::domain_name(&n).as_deref() == Ok(wanted.as_str()) {
            return Ok(n);
        }
        names.push(n);
    }
    Err(NameError::NoSuchDomain {
        suggestion: suggest(&wanted, &names).map(str::to_string),
        name: wanted,
        srv: srv.to_path_buf(),
    }
    .into())
}

/// Why [`lookup_entry`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The name is wrong.
    #[error(transparent)]
    Name(#[from] NameError),
    /// /srv could not be listed.
    #[error("failed to list {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// Checks a domain named on the command line: it exists (else a suggestion), and, when
/// `usable`, the model serves it (else why not: owner uid, invalid value…); for a caller
/// who is not root (`caller`), that the domain (an alias: its target) is theirs. Returns the
/// /srv entry.
pub fn check_named(
    srv: &Path,
    name: &str,
    usable: bool,
    caller: Option<u32>,
    now: i64,
) -> Result<String> {
    let entry = lookup_entry(srv, name)?;
    if let Some(you) = caller {
        use std::os::unix::fs::MetadataExt;
        // Following an alias link: what matters is whose domain it leads to.
        if let Ok(meta) = std::fs::metadata(srv.join(&entry))
            && meta.uid() != you
        {
            return Err(NameError::NotYours {
                name: entry,
                owner: meta.uid(),
                you,
            }
            .into());
        }
    }
    if usable {
        let ascii = parse_name(&entry)?;
        let only = std::iter::once(ascii.clone()).collect();
        let m = model::load_scoped(srv, Some(&only), now)?;
        let served = m.domains.contains_key(&ascii)
            || m.domains.values().any(|d| d.aliases.contains(&ascii));
        if !served {
            let reason = m
                .skipped_reason(&entry)
                .unwrap_or("not a domain directory (nor an alias of one)")
                .to_string();
            return Err(NameError::Skipped {
                name: entry,
                reason: if reason.starts_with("owned by") || reason.starts_with("not ") {
                    reason
                } else {
                    format!("skipped: {reason}")
                },
            }
            .into());
        }
    }
    Ok(entry)
}

/// Checks that `local@domain` names an existing mailbox of the /srv entry `entry` (read
/// without following links); else [`NameError::NoSuchMailbox`] with the closest one. A
/// `mailboxes/` that cannot be listed is left for the command itself to report.
pub fn check_mailbox(srv: &Path, entry: &str, address: &str) -> Result<(), NameError> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Ok(());
    };
    let local = local.to_lowercase();
    let rel = Path::new(entry).join("mailboxes");
    let Ok(Some(names)) = safefs::list_dir(srv, &rel) else {
        return Ok(());
    };
    let names: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    if names.contains(&local) {
        return Ok(());
    }
    Err(NameError::NoSuchMailbox {
        address: address.to_string(),
        suggestion: suggest(&local, &names).map(|l| format!("{l}@{domain}")),
    })
}

/// The candidate closest to `name` by edit distance, if it is close (at most 2 edits, or a
/// third of the name's length for long names).
pub fn suggest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    let limit = (name.len() / 3).max(2);
    candidates
        .iter()
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One domain, as `site list` and `site show` print it (`--json`: these field names are
/// stable, see README).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteInfo {
    /// ASCII name.
    pub domain: String,
    /// Its directory.
    pub directory: PathBuf,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Served on the web (`public/htdocs` exists).
    pub web: bool,
    /// Other names (alias symlinks and `www.` names).
    pub aliases: Vec<String>,
    /// `config/ip` (empty: every address).
    pub ips: Vec<String>,
    /// `config/mandatory-ssl`.
    pub mandatory_ssl: bool,
    /// Live certificate set, if any.
    pub certificate_set: Option<String>,
    /// When it expires (unix seconds).
    pub certificate_expires: Option<i64>,
    /// Problems that do not stop the domain.
    pub warnings: Vec<String>,
}

impl SiteInfo {
    fn of(d: &model::Domain) -> Self {
        Self {
            domain: d.name.clone(),
            directory: d.dir.clone(),
            uid: d.uid,
            gid: d.gid,
            web: d.web,
            aliases: d.aliases.clone(),
            ips: d.ips.iter().map(ToString::to_string).collect(),
            mandatory_ssl: d.mandatory_ssl,
            certificate_set: d.cert.as_ref().map(|c| c.name.clone()),
            certificate_expires: d.cert.as_ref().map(|c| c.info.not_after),
            warnings: d.warnings.clone(),
        }
    }
}

/// The /srv entries (domain directories, not aliases) owned by `uid`: what a customer who
/// runs a command for "all domains" means.
pub fn owned_by(srv: &Path, uid: u32) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(srv).with_context(|| format!("failed to list {}", srv.display()))? {
        let e = e.with_context(|| format!("failed to list {}", srv.display()))?;
        let Ok(n) = e.file_name().into_string() else {
            continue;
        };
        if n.starts_with('.') {
            continue;
        }
        if let Ok(meta) = std::fs::symlink_metadata(e.path())
            && meta.is_dir()
            && meta.uid() == uid
        {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

/// Every valid domain, plus the skipped entries with their reasons.
pub fn list(cfg: &Config, now: i64) -> Result<(Vec<SiteInfo>, Vec<model::Skipped>)> {
    let m = model::load(&cfg.paths.srv, now)?;
    let sites = m.domains.values().map(SiteInfo::of).collect();
    Ok((sites, m.skipped))
}

/// One domain by its /srv entry (an alias: the domain it leads to).
pub fn show(cfg: &Config, entry: &str, now: i64) -> Result<SiteInfo> {
    let ascii = parse_name(entry)?;
    let only = std::iter::once(ascii.clone()).collect();
    let m = model::load_scoped(&cfg.paths.srv, Some(&only), now)?;
    let d = m
        .domains
        .get(&ascii)
        .or_else(|| m.domains.values().find(|d| d.aliases.contains(&ascii)));
    match d {
        Some(d) => Ok(SiteInfo::of(d)),
        None => Err(NameError::Skipped {
            name: entry.to_string(),
            reason: m
                .skipped_reason(entry)
                .unwrap_or("not a domain directory")
                .to_string(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let c: Vec<String> = ["example.com", "example.org", "shop.example.net"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(suggest("exmaple.com", &c), Some("example.com"));
        assert_eq!(suggest("example.co", &c), Some("example.com"));
        assert_eq!(suggest("example.org", &c), Some("example.org"));
        assert_eq!(suggest("totally-different.test", &c), None);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
