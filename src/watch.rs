//! The inotify side of `dirhost watch`: which directories under /srv are watched, which /srv
//! entries an event makes dirty, and how dirty entries are batched.
//!
//! What it owns:
//! * The set of **non-recursive** inotify watches (through `notify`): /srv itself and, in
//!   each domain directory `/srv/<d>`, the directory and its `public/`, `config/`,
//!   `config/ssl/` and `mailboxes/` when they are real directories ([`LEVELS`]), plus each
//!   mailbox directory `mailboxes/<local>/` (so a `password`, `forward`, `vacation` or `quota`
//!   file created or changed there is seen; `Maildir/` below it never is). Watches are added
//!   parent first and dropped as directories vanish ([`Tree::refresh`]), so a directory
//!   created before its parent's watch existed is still found.
//! * Mapping an event's path to the /srv entry it concerns ([`entry_for_path`],
//!   [`domain_for_path`]) and an entry to every domain a reconcile must look at
//!   ([`Tree::resolve`]: an alias symlink dirties its target, `www.<name>` dirties `<name>`).
//! * Debouncing dirty entries into batches ([`Batch`]): a plain struct driven by explicit
//!   time, so it is tested without sleeping.
//! * The inotify limits: when a watch cannot be added (`ENOSPC`, or the `[watch]
//!   max_watches` cap) it says so once, naming `fs.inotify.max_user_watches` and the number
//!   of watches needed, and reports [`Tree::limited`] so the daemon falls back to periodic
//!   full scans.
//!
//! What it must not do: reconcile, write anything, or read file contents under /srv. It looks
//! at /srv only through `safefs` (`stat`, `read_link`) and a listing of /srv itself. Events
//! are hints ("look at this domain again"), never a change log: `mkdir -p a/b/c` reports only
//! `a`, and files below the watched levels (htdocs, Maildirs) are never watched at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::EventKind;
use notify::event::ModifyKind;

use crate::model::validate;
use crate::safefs::{self, Kind};

/// The directories watched in each domain directory, relative to it (`""` is the domain
/// directory itself), every parent before its children.
pub const LEVELS: [&str; 5] = ["", "public", "config", "config/ssl", "mailboxes"];

/// Index of `mailboxes/` in [`LEVELS`]; each mailbox directory in it is watched too.
const MAILBOXES: usize = 4;

/// Index in [`LEVELS`] of each level's parent directory.
const PARENT: [Option<usize>; 5] = [None, Some(0), Some(0), Some(2), Some(0)];

/// Where the kernel's per-user watch limit is read from (and set: `sysctl
/// fs.inotify.max_user_watches=N`).
pub const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// The /srv entry `path` falls under: `<srv>/X/anything` → `X`. `None` for /srv itself, for
/// paths outside it, and for entries the model ignores (hidden names, `lost+found`, names
/// that are not UTF-8).
pub fn entry_for_path(srv: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(srv).ok()?;
    let Some(Component::Normal(first)) = rel.components().next() else {
        return None;
    };
    let name = first.to_str()?;
    if name.starts_with('.') || name == "lost+found" {
        return None;
    }
    Some(name.to_string())
}

/// The ASCII domain name of the /srv entry `path` falls under (see [`entry_for_path`]);
/// `None` when that entry's name is not a domain name.
pub fn domain_for_path(srv: &Path, path: &Path) -> Option<String> {
    validate::domain_name(&entry_for_path(srv, path)?).ok()
}

/// The domain an alias symlink's target names: its last component, as an ASCII domain.
/// (The model decides whether the alias is valid; this only says which domain to look at.)
fn link_target_domain(target: &Path) -> Option<String> {
    validate::domain_name(target.file_name()?.to_str()?).ok()
}

/// Which [`LEVELS`] entry `rel` (relative to a domain directory) is, if any.
fn level_of(rel: &Path) -> Option<usize> {
    let rel = rel.to_str()?;
    LEVELS.iter().position(|l| *l == rel)
}

const fn bit(level: usize) -> u8 {
    1 << level
}

/// Why a watch could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// The inotify watch limit (ENOSPC) or the configured cap.
    Limit,
    /// The directory vanished first.
    Gone,
    /// Anything else, in words.
    Other(String),
}

/// Where watches are placed: the real inotify watcher (`kernelwatch`), or a stand-in in tests.
pub trait Backend: Send {
    /// Adds a non-recursive watch on `path`.
    fn watch(&mut self, path: &Path) -> Result<(), AddError>;
    /// Removes the watch on `path`, if there is one.
    fn unwatch(&mut self, path: &Path);
}

/// No inotify at all (the instance could not be created): every add fails as a limit, so
/// the daemon scans periodically.
#[derive(Debug, Default)]
pub struct NoBackend;

impl Backend for NoBackend {
    fn watch(&mut self, _: &Path) -> Result<(), AddError> {
        Err(AddError::Limit)
    }
    fn unwatch(&mut self, _: &Path) {}
}

/// What an event means for the daemon.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// /srv entries to look at again.
    pub entries: Vec<String>,
    /// Events were lost or /srv itself changed: everything must be looked at again.
    pub rescan: bool,
}

/// The watched part of /srv: the watches in place, the aliases last seen, the limit state.
pub struct Tree {
    srv: PathBuf,
    backend: Box<dyn Backend>,
    srv_watched: bool,
    /// Per /srv entry, a bit per [`LEVELS`] entry that is watched.
    watched: BTreeMap<String, u8>,
    count: usize,
    /// `[watch] max_watches`: behave as if the kernel limit were this.
    cap: Option<usize>,
    /// Said in the limit message, e.g. why there is no inotify at all.
    why_limited: Option<String>,
    limited: bool,
    /// Alias entry → the domain its symlink pointed at when last seen, so that removing an
    /// alias still dirties its old target.
    aliases: BTreeMap<String, String>,
    /// Per /srv entry, the mailbox directories (`mailboxes/<name>`) that are watched.
    mailboxes: BTreeMap<String, BTreeSet<String>>,
    /// /srv entries whose names are not domain names, already reported (each once, so a
    /// customer cannot flood the log by touching one; bounded by [`MAX_REPORTED`]).
    reported_bad: BTreeSet<String>,
}

/// At most this many bad names are remembered as reported; later ones wait for the next
/// full resync, which reports every skipped entry.
const MAX_REPORTED: usize = 10_000;

impl Tree {
    /// A tree with nothing watched yet; [`Tree::refresh_all`] places the watches.
    pub fn new(srv: &Path, backend: Box<dyn Backend>, cap: Option<usize>) -> Self {
        Self {
            srv: srv.to_path_buf(),
            backend,
            srv_watched: false,
            watched: BTreeMap::new(),
            count: 0,
            cap,
            why_limited: None,
            limited: false,
            aliases: BTreeMap::new(),
            mailboxes: BTreeMap::new(),
            reported_bad: BTreeSet::new(),
        }
    }

    /// A tree without inotify (`why` says what failed): periodic scans only.
    pub fn without_inotify(srv: &Path, why: String) -> Self {
        let mut t = Self::new(srv, Box::new(NoBackend), None);
        t.why_limited = Some(why);
        t
    }

    /// True while some directory that should be watched is not (the watch limit was hit):
    /// changes there are only seen by a full scan.
    pub fn limited(&self) -> bool {
        self.limited
    }

    /// Whether /srv itself is watched (its entries' creation, removal and renames are seen:
    /// what the daemon's index of /srv relies on).
    pub fn watches_srv(&self) -> bool {
        self.srv_watched
    }

    /// How many watches are in place.
    pub fn watch_count(&self) -> usize {
        self.count
    }

    /// What `ev` means: the /srv entries it concerns and whether everything needs a rescan.
    /// Watches on directories that were removed or renamed are forgotten here (the watcher drops
    /// them itself); [`Tree::refresh`] of the returned entries puts back what still exists.
    pub fn note(&mut self, ev: &notify::Event) -> Noted {
        let mut out = Noted {
            rescan: ev.need_rescan(),
            ..Noted::default()
        };
        if matches!(ev.kind, EventKind::Access(_)) {
            return out;
        }
        let structural = matches!(
            ev.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
        );
        for path in &ev.paths {
            let Ok(rel) = path.strip_prefix(&self.srv) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                // /srv itself changed (removed, renamed, chmod): look at everything.
                if structural && self.srv_watched {
                    self.backend.unwatch(&self.srv);
                    self.srv_watched = false;
                    self.count = self.count.saturating_sub(1);
                }
                out.rescan = true;
                continue;
            }
            let Some(entry) = entry_for_path(&self.srv, path) else {
                continue;
            };
            let within = rel.strip_prefix(&entry).unwrap_or(Path::new(""));
            if exim_noise(within) {
                continue;
            }
            if structural {
                if let Some(level) = level_of(within) {
                    self.forget(&entry, level);
                } else if let Some(mailbox) = mailbox_of(within) {
                    self.forget_mailbox(&entry, &mailbox);
                }
            }
            if out.entries.last() != Some(&entry) {
                out.entries.push(entry);
            }
        }
        out
    }

    /// Drops the watch on `level` of `entry` and on every level below it.
    fn forget(&mut self, entry: &str, level: usize) {
        if is_within(MAILBOXES, level) {
            for m in self.mailboxes.remove(entry).unwrap_or_default() {
                self.backend.unwatch(&self.mailbox_path(entry, &m));
                self.count = self.count.saturating_sub(1);
            }
        }
        let Some(mut mask) = self.watched.get(entry).copied() else {
            return;
        };
        for l in (0..LEVELS.len()).rev() {
            if is_within(l, level) && mask & bit(l) != 0 {
                self.backend.unwatch(&self.path_of(entry, l));
                mask &= !bit(l);
                self.count = self.count.saturating_sub(1);
            }
        }
        self.store(entry, mask);
    }

    /// Drops the watch on the mailbox directory `mailboxes/<mailbox>` of `entry`.
    fn forget_mailbox(&mut self, entry: &str, mailbox: &str) {
        if let Some(set) = self.mailboxes.get_mut(entry)
            && set.remove(mailbox)
        {
            if set.is_empty() {
                self.mailboxes.remove(entry);
            }
            self.backend.unwatch(&self.mailbox_path(entry, mailbox));
            self.count = self.count.saturating_sub(1);
        }
    }

    fn mailbox_path(&self, entry: &str, mailbox: &str) -> PathBuf {
        self.path_of(entry, MAILBOXES).join(mailbox)
    }

    /// The mailbox directories of `entry` that should be watched: the real directories in
    /// its `mailboxes/` whose names do not start with a dot.
    fn mailbox_dirs(&self, entry: &str) -> BTreeSet<String> {
        let rel = Self::rel_of(entry, MAILBOXES);
        let names = match safefs::list_dir(&self.srv, &rel) {
            Ok(Some(n)) => n,
            Ok(None) => return BTreeSet::new(),
            Err(e) => {
                tracing::debug!("{e}");
                return BTreeSet::new();
            }
        };
        names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter(|n| self.kind(&rel.join(n)) == Some(Kind::Dir))
            .collect()
    }

    /// Brings the mailbox watches of `entry` in line with what is on disk (`want`: its
    /// `mailboxes/` level is watched or wanted). Returns how many are wanted and whether
    /// the limit was hit.
    fn sync_mailboxes(&mut self, entry: &str, want: bool, try_add: bool) -> (usize, bool) {
        let wanted = if want {
            self.mailbox_dirs(entry)
        } else {
            BTreeSet::new()
        };
        let mut have = self.mailboxes.remove(entry).unwrap_or_default();
        for gone in have.difference(&wanted).cloned().collect::<Vec<_>>() {
            self.backend.unwatch(&self.mailbox_path(entry, &gone));
            have.remove(&gone);
            self.count = self.count.saturating_sub(1);
        }
        let mut hit = false;
        for m in &wanted {
            if have.contains(m) || !try_add || hit {
                continue;
            }
            match self.add(&self.mailbox_path(entry, m)) {
                Ok(()) => {
                    have.insert(m.clone());
                }
                Err(AddError::Limit) => hit = true,
                Err(AddError::Gone) => {}
                Err(AddError::Other(e)) => {
                    tracing::warn!(domain = %entry, "cannot watch mailboxes/{m}: {e}");
                }
            }
        }
        if !have.is_empty() {
            self.mailboxes.insert(entry.to_string(), have);
        }
        (wanted.len(), hit)
    }

    fn store(&mut self, entry: &str, mask: u8) {
        if mask == 0 {
            self.watched.remove(entry);
        } else {
            self.watched.insert(entry.to_string(), mask);
        }
    }

    fn path_of(&self, entry: &str, level: usize) -> PathBuf {
        let p = self.srv.join(entry);
        if LEVELS[level].is_empty() {
            p
        } else {
            p.join(LEVELS[level])
        }
    }

    fn rel_of(entry: &str, level: usize) -> PathBuf {
        let p = PathBuf::from(entry);
        if LEVELS[level].is_empty() {
            p
        } else {
            p.join(LEVELS[level])
        }
    }

    /// The kind of `<srv>/<rel>`, not following symlinks; `None` when absent or unreadable.
    fn kind(&self, rel: &Path) -> Option<Kind> {
        match safefs::stat(&self.srv, rel) {
            Ok(st) => st.map(|s| s.kind),
            Err(e) => {
                tracing::debug!("{e}");
                None
            }
        }
    }

    /// Adds a watch, counting it against the cap.
    fn add(&mut self, path: &Path) -> Result<(), AddError> {
        if self.cap.is_some_and(|cap| self.count >= cap) {
            return Err(AddError::Limit);
        }
        self.backend.watch(path)?;
        self.count += 1;
        Ok(())
    }

    /// Brings the watches of one /srv entry in line with what is on disk, parent first: a
    /// directory is looked at only after its parent's watch is in place, so one created in
    /// between still produces an event. With `try_add` false nothing is added (a full scan
    /// that already hit the limit). Returns the levels wanted and whether the limit was hit.
    fn sync_entry(&mut self, entry: &str, try_add: bool) -> (u8, usize, bool) {
        let mut mask = self.watched.get(entry).copied().unwrap_or(0);
        let mut wanted = 0u8;
        let mut hit = false;
        let candidate = validate::domain_name(entry).is_ok()
            && !entry.starts_with('.')
            && entry != "lost+found";
        for level in 0..LEVELS.len() {
            let parent_ok = match PARENT[level] {
                None => candidate,
                Some(p) => wanted & bit(p) != 0,
            };
            let want = parent_ok && self.kind(&Self::rel_of(entry, level)) == Some(Kind::Dir);
            let have = mask & bit(level) != 0;
            if want {
                wanted |= bit(level);
            }
            match (want, have) {
                (true, false) if try_add && !hit => match self.add(&self.path_of(entry, level)) {
                    Ok(()) => mask |= bit(level),
                    Err(AddError::Limit) => hit = true,
                    Err(AddError::Gone) => wanted &= !bit(level),
                    Err(AddError::Other(e)) => {
                        tracing::warn!(domain = %entry, "cannot watch {}: {e}", LEVELS[level]);
                    }
                },
                (false, true) => {
                    self.backend.unwatch(&self.path_of(entry, level));
                    mask &= !bit(level);
                    self.count = self.count.saturating_sub(1);
                }
                _ => {}
            }
        }
        self.store(entry, mask);
        let (boxes, boxes_hit) =
            self.sync_mailboxes(entry, mask & bit(MAILBOXES) != 0, try_add && !hit);
        (wanted, boxes, hit || boxes_hit)
    }

    /// Brings the watches of one /srv entry in line with what is on disk (see the module
    /// docs). When the limit is hit, says so once and turns [`Tree::limited`] on.
    pub fn refresh(&mut self, entry: &str) {
        let (_, _, hit) = self.sync_entry(entry, true);
        if hit {
            self.hit_limit(None);
        }
    }

    /// Watches /srv and every entry in it, drops watches of entries that are gone, and
    /// relearns the aliases. Leaves [`Tree::limited`] when everything could be watched.
    pub fn refresh_all(&mut self) -> Result<()> {
        let mut hit = false;
        if !self.srv_watched {
            match self.add(&self.srv.clone()) {
                Ok(()) => self.srv_watched = true,
                Err(AddError::Limit) => hit = true,
                Err(AddError::Gone) => {
                    anyhow::bail!("{} does not exist", self.srv.display())
                }
                Err(AddError::Other(e)) => {
                    anyhow::bail!("cannot watch {}: {e}", self.srv.display())
                }
            }
        }
        let mut entries: BTreeSet<String> = self
            .watched
            .keys()
            .chain(self.mailboxes.keys())
            .cloned()
            .collect();
        for e in std::fs::read_dir(&self.srv)
            .with_context(|| format!("failed to list {}", self.srv.display()))?
        {
            let e = e.with_context(|| format!("failed to list {}", self.srv.display()))?;
            if let Ok(name) = e.file_name().into_string() {
                entries.insert(name);
            }
        }
        self.aliases.clear();
        let mut needed = 1; // /srv
        for entry in &entries {
            let (wanted, boxes, entry_hit) = self.sync_entry(entry, !hit);
            hit |= entry_hit;
            needed += wanted.count_ones() as usize + boxes;
            if wanted == 0 {
                self.learn_alias(entry);
            }
        }
        if hit {
            self.hit_limit(Some(needed));
        } else if self.limited {
            self.limited = false;
            tracing::warn!(
                "all {} directories under {} are watched again: changes are picked up as they happen",
                self.count,
                self.srv.display()
            );
        }
        Ok(())
    }

    /// Counts the directories that should be watched (for the limit message).
    fn count_needed(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.srv) else {
            return self.count;
        };
        let mut needed = 1;
        for e in dir.flatten() {
            let Ok(entry) = e.file_name().into_string() else {
                continue;
            };
            if validate::domain_name(&entry).is_err() {
                continue;
            }
            let mut wanted = 0u8;
            for (level, parent) in PARENT.iter().enumerate() {
                let parent_ok = parent.is_none_or(|p| wanted & bit(p) != 0);
                if parent_ok && self.kind(&Self::rel_of(&entry, level)) == Some(Kind::Dir) {
                    wanted |= bit(level);
                }
            }
            needed += wanted.count_ones() as usize;
            if wanted & bit(MAILBOXES) != 0 {
                needed += self.mailbox_dirs(&entry).len();
            }
        }
        needed
    }

    fn hit_limit(&mut self, needed: Option<usize>) {
        if self.limited {
            return;
        }
        self.limited = true;
        let needed = needed.unwrap_or_else(|| self.count_needed());
        let current = std::fs::read_to_string(MAX_USER_WATCHES)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        tracing::warn!(
            "{}",
            limit_message(
                &self.srv,
                self.count,
                needed,
                current,
                self.cap,
                self.why_limited.as_deref()
            )
        );
    }

    /// Remembers where the alias symlink `entry` points, for when it is removed.
    fn learn_alias(&mut self, entry: &str) {
        if let Ok(Some(target)) = safefs::read_link(&self.srv, Path::new(entry))
            && let Some(t) = link_target_domain(&target)
        {
            self.aliases.insert(entry.to_string(), t);
        }
    }

    /// Every ASCII domain a change to these /srv entries may affect: the entry's own name;
    /// for an alias symlink, its target now and the target it had when last seen; for
    /// `www.<name>`, whatever `<name>` affects (Sympl's www rule depends on whether
    /// `/srv/www.<name>` exists).
    pub fn resolve(&mut self, entries: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for entry in entries {
            self.resolve_one(entry, &mut out);
            if let Some(rest) = entry.strip_prefix("www.") {
                self.resolve_one(rest, &mut out);
            }
        }
        out
    }

    fn resolve_one(&mut self, entry: &str, out: &mut BTreeSet<String>) {
        let ascii = match validate::domain_name(entry) {
            Ok(a) => a,
            Err(e) => {
                // Never served; said at once rather than at the next full resync.
                if self.reported_bad.len() < MAX_REPORTED
                    && self.reported_bad.insert(entry.to_string())
                {
                    tracing::warn!(domain = %validate::printable(entry), "skipped: {e}");
                }
                return;
            }
        };
        out.insert(ascii);
        if let Some(old) = self.aliases.remove(entry) {
            out.insert(old);
        }
        if self.kind(Path::new(entry)) == Some(Kind::Symlink) {
            self.learn_alias(entry);
            if let Some(t) = self.aliases.get(entry) {
                out.insert(t.clone());
            }
        }
    }
}

/// The mailbox `rel` (relative to a domain directory) is, when it is `mailboxes/<name>`.
fn mailbox_of(rel: &Path) -> Option<String> {
    let mut c = rel.components();
    match (c.next(), c.next(), c.next()) {
        (Some(Component::Normal(m)), Some(Component::Normal(name)), None) if m == "mailboxes" => {
            name.to_str().map(str::to_string)
        }
        _ => None,
    }
}

/// Files Exim writes in a mailbox directory itself (the vacation autoreply's `once`
/// database and log, and their lock files): not the owner's changes, no reason to look
/// at the domain again.
fn exim_noise(rel: &Path) -> bool {
    let mut c = rel.components();
    match (c.next(), c.next(), c.next(), c.next()) {
        (
            Some(Component::Normal(m)),
            Some(Component::Normal(_)),
            Some(Component::Normal(f)),
            None,
        ) if m == "mailboxes" => f.to_str().is_some_and(|f| f.starts_with("vacation.")),
        _ => false,
    }
}

/// Whether `level` is `top` or below it.
fn is_within(level: usize, top: usize) -> bool {
    let mut l = Some(level);
    while let Some(x) = l {
        if x == top {
            return true;
        }
        l = PARENT[x];
    }
    false
}

/// The one message an admin sees when watches run out.
pub fn limit_message(
    srv: &Path,
    watching: usize,
    needed: usize,
    current: Option<u64>,
    cap: Option<usize>,
    why: Option<&str>,
) -> String {
    let current = current.map_or_else(|| "unknown".to_string(), |c| c.to_string());
    let mut m = match why {
        Some(why) => format!("cannot use inotify ({why}); "),
        None => format!("inotify watch limit reached after {watching} watches; "),
    };
    m.push_str(&format!(
        "dirhost needs {needed} to watch {srv} (each domain directory and its public/, config/, \
         config/ssl/, mailboxes/ and each mailbox). fs.inotify.max_user_watches is {current}, shared by every \
         process of this user: raise it, e.g. `sysctl -w fs.inotify.max_user_watches={suggest}` \
         and the same line in /etc/sysctl.d/dirhost.conf",
        srv = srv.display(),
        suggest = (needed * 2).max(65536),
    ));
    if why.is_some() {
        m.push_str(" (or fs.inotify.max_user_instances if that is what ran out)");
    }
    if let Some(cap) = cap {
        m.push_str(&format!(
            "; [watch] max_watches = {cap} in dirhost.toml caps it further"
        ));
    }
    m.push_str(". Until then changes that are not watched are picked up by periodic full scans.");
    m
}

/// Dirty keys (here: /srv entries) collected until the stream of events pauses for the
/// debounce window, or at most `max_delay` after the first one, then taken as one batch.
#[derive(Debug)]
pub struct Batch<K> {
    debounce: Duration,
    max_delay: Duration,
    pending: BTreeSet<K>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl<K: Ord> Batch<K> {
    /// A batch that flushes `debounce` after the last key, or `max_delay` after the first
    /// (whichever is sooner; `max_delay` is raised to `debounce` if it is shorter).
    pub fn new(debounce: Duration, max_delay: Duration) -> Self {
        Self {
            debounce,
            max_delay: max_delay.max(debounce),
            pending: BTreeSet::new(),
            first: None,
            last: None,
        }
    }

    /// Marks `key` dirty at `now`.
    pub fn add(&mut self, key: K, now: Instant) {
        self.pending.insert(key);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the batch should be taken; `None` when nothing is pending.
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.debounce).min(first + self.max_delay))
    }

    /// The pending keys, if the batch is due at `now`.
    pub fn take(&mut self, now: Instant) -> Option<BTreeSet<K>> {
        if self.due()? > now {
            return None;
        }
        self.first = None;
        self.last = None;
        Some(std::mem::take(&mut self.pending))
    }

    /// Forgets everything pending (a full resync covers it).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.first = None;
        self.last = None;
    }

    /// How many keys are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RemoveKind, RenameMode};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    #[test]
    fn domain_for_path_table() {
        let srv = Path::new("/srv");
        for (path, want) in [
            ("/srv/example.com", Some("example.com")),
            (
                "/srv/example.com/public/htdocs/deep/er",
                Some("example.com"),
            ),
            ("/srv/example.com/config/ssl/current", Some("example.com")),
            ("/srv/b\u{fc}cher.example", Some("xn--bcher-kva.example")),
            ("/srv/www.example.com", Some("www.example.com")),
            (
                "/srv/xn--bcher-kva.example/public",
                Some("xn--bcher-kva.example"),
            ),
            ("/srv", None),
            ("/srv/", None),
            ("/srv/.hidden.com", None),
            ("/srv/lost+found", None),
            ("/srv/Example.com", None),
            ("/srv/localhost", None),
            ("/srv/bad_-.com-", None),
            ("/other/example.com", None),
            ("/srvx/example.com", None),
            ("relative/example.com", None),
        ] {
            assert_eq!(
                domain_for_path(srv, Path::new(path)).as_deref(),
                want,
                "{path}"
            );
        }
        // A configured srv with a trailing slash or below another dir works the same.
        assert_eq!(
            domain_for_path(
                Path::new("/tmp/x/srv/"),
                Path::new("/tmp/x/srv/a.test/public")
            )
            .as_deref(),
            Some("a.test")
        );
        // entry_for_path keeps the raw name (needed to read an alias link).
        assert_eq!(
            entry_for_path(srv, Path::new("/srv/b\u{fc}cher.example/x")).as_deref(),
            Some("b\u{fc}cher.example")
        );
        assert_eq!(
            entry_for_path(srv, Path::new("/srv/Example.com")).as_deref(),
            Some("Example.com")
        );
    }

    #[test]
    fn levels_and_parents() {
        for (rel, want) in [
            ("", Some(0)),
            ("public", Some(1)),
            ("config/ssl", Some(3)),
            ("mailboxes", Some(4)),
            ("public/htdocs", None),
            ("config/ssl/sets", None),
        ] {
            assert_eq!(level_of(Path::new(rel)), want, "{rel:?}");
        }
        assert!(is_within(3, 2) && is_within(3, 0) && is_within(1, 0) && is_within(2, 2));
        assert!(!is_within(1, 2) && !is_within(0, 3) && !is_within(4, 1));
        for (l, p) in PARENT.iter().enumerate() {
            assert!(p.is_none_or(|p| p < l), "parents come first");
        }
    }

    #[test]
    fn batch_flushes_after_a_pause_and_at_least_every_max_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b: Batch<&str> = Batch::new(ms(250), ms(1000));
        assert_eq!(b.due(), None);
        assert!(b.take(t0).is_none());

        // One event: due one window later, not before.
        b.add("a.test", t0);
        assert_eq!(b.due(), Some(t0 + ms(250)));
        assert!(b.take(t0 + ms(249)).is_none());
        // More events within the window push it back, and duplicates collapse.
        b.add("b.test", t0 + ms(200));
        b.add("a.test", t0 + ms(210));
        assert_eq!(b.due(), Some(t0 + ms(460)));
        assert_eq!(b.len(), 2);
        let got = b.take(t0 + ms(460)).unwrap();
        assert_eq!(got, BTreeSet::from(["a.test", "b.test"]));
        assert!(b.is_empty() && b.due().is_none());

        // A continuous stream (an event every 100 ms) still flushes after max_delay.
        let start = t0 + ms(2000);
        let mut flushes = Vec::new();
        for i in 0..50u64 {
            let now = start + ms(i * 100);
            b.add("x.test", now);
            if b.take(now).is_some() {
                flushes.push(i);
            }
        }
        assert_eq!(flushes, [10, 21, 32, 43], "every ~1 s, never 50 times");

        // 500 events in a burst make one batch.
        let mut b: Batch<String> = Batch::new(ms(250), ms(1000));
        for i in 0..500u64 {
            b.add(format!("s{i}.test"), start + Duration::from_micros(i * 500));
        }
        assert!(b.take(start + ms(300)).is_none());
        assert_eq!(b.take(start + ms(600)).unwrap().len(), 500);

        // clear() forgets everything; max_delay is never shorter than the window.
        b.add("y.test".into(), start);
        b.clear();
        assert!(b.due().is_none());
        let b2: Batch<u8> = Batch::new(ms(500), ms(100));
        assert_eq!(b2.max_delay, ms(500));
    }

    /// Records watches; fails with Limit beyond `limit` (which a test may raise, as an admin
    /// raises the sysctl).
    #[derive(Clone, Default)]
    struct Fake {
        watched: Arc<Mutex<BTreeSet<PathBuf>>>,
        limit: Arc<Mutex<Option<usize>>>,
    }

    impl Backend for Fake {
        fn watch(&mut self, path: &Path) -> Result<(), AddError> {
            let mut w = self.watched.lock().unwrap();
            if self.limit.lock().unwrap().is_some_and(|l| w.len() >= l) {
                return Err(AddError::Limit);
            }
            w.insert(path.to_path_buf());
            Ok(())
        }
        fn unwatch(&mut self, path: &Path) {
            self.watched.lock().unwrap().remove(path);
        }
    }

    fn rels(srv: &Path, fake: &Fake) -> Vec<String> {
        fake.watched
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(srv).unwrap().display().to_string())
            .collect()
    }

    fn ev(kind: EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_path_buf())
    }

    #[test]
    fn tree_watches_the_levels_that_matter_and_follows_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path();
        std::fs::create_dir_all(srv.join("a.test/public/htdocs/deep")).unwrap();
        std::fs::create_dir_all(srv.join("a.test/config/ssl/sets/0")).unwrap();
        std::fs::create_dir_all(srv.join("a.test/mailboxes/bob/Maildir")).unwrap();
        std::fs::create_dir_all(srv.join("b.test")).unwrap();
        std::fs::create_dir_all(srv.join("Not-A-Domain/public")).unwrap();
        std::fs::create_dir_all(srv.join(".hidden.test/public")).unwrap();
        std::fs::write(srv.join("file.test"), "").unwrap();
        std::os::unix::fs::symlink("a.test", srv.join("alias.test")).unwrap();
        // A symlinked level is never watched (nor followed).
        std::fs::create_dir_all(srv.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", srv.join("b.test/public")).unwrap();

        let fake = Fake::default();
        let mut tree = Tree::new(srv, Box::new(fake.clone()), None);
        tree.refresh_all().unwrap();
        assert_eq!(
            rels(srv, &fake),
            [
                "",
                "a.test",
                "a.test/config",
                "a.test/config/ssl",
                "a.test/mailboxes",
                "a.test/mailboxes/bob",
                "a.test/public",
                "b.test"
            ]
        );
        assert_eq!(tree.watch_count(), 8);
        assert!(!tree.limited());

        // An alias dirties its target; www.<name> dirties <name>.
        let dirty = tree.resolve(&BTreeSet::from(["alias.test".to_string()]));
        assert_eq!(
            dirty,
            BTreeSet::from(["a.test".into(), "alias.test".into()])
        );
        let dirty = tree.resolve(&BTreeSet::from(["www.alias.test".to_string()]));
        assert_eq!(
            dirty,
            BTreeSet::from([
                "a.test".into(),
                "alias.test".into(),
                "www.alias.test".into()
            ])
        );
        // A removed alias still dirties the target it had.
        std::fs::remove_file(srv.join("alias.test")).unwrap();
        let n = tree.note(&ev(
            EventKind::Remove(RemoveKind::File),
            &srv.join("alias.test"),
        ));
        assert_eq!(n.entries, ["alias.test"]);
        let dirty = tree.resolve(&n.entries.into_iter().collect());
        assert_eq!(
            dirty,
            BTreeSet::from(["a.test".into(), "alias.test".into()])
        );

        // mkdir -p reports only the top directory; refresh finds what is below.
        std::fs::create_dir_all(srv.join("new.test/public/htdocs/x")).unwrap();
        std::fs::create_dir_all(srv.join("new.test/config")).unwrap();
        let n = tree.note(&ev(
            EventKind::Create(CreateKind::Folder),
            &srv.join("new.test"),
        ));
        assert_eq!(
            n,
            Noted {
                entries: vec!["new.test".into()],
                rescan: false
            }
        );
        tree.refresh("new.test");
        let w = rels(srv, &fake);
        assert!(w.contains(&"new.test/public".into()) && w.contains(&"new.test/config".into()));
        assert!(!w.iter().any(|p| p.contains("htdocs")), "{w:?}");

        // rm -rf config: its watch and config/ssl's go.
        std::fs::remove_dir_all(srv.join("a.test/config")).unwrap();
        let n = tree.note(&ev(
            EventKind::Remove(RemoveKind::Folder),
            &srv.join("a.test/config"),
        ));
        assert_eq!(n.entries, ["a.test"]);
        assert!(
            !rels(srv, &fake)
                .iter()
                .any(|p| p.starts_with("a.test/config"))
        );
        // ... and a directory recreated before the refresh is watched again.
        std::fs::create_dir(srv.join("a.test/config")).unwrap();
        tree.refresh("a.test");
        assert!(rels(srv, &fake).contains(&"a.test/config".into()));

        // A rename moves the watches.
        std::fs::rename(srv.join("b.test"), srv.join("c.test")).unwrap();
        let both = notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(srv.join("b.test"))
            .add_path(srv.join("c.test"));
        let n = tree.note(&both);
        assert_eq!(n.entries, ["b.test", "c.test"]);
        for e in &n.entries {
            tree.refresh(e);
        }
        let w = rels(srv, &fake);
        assert!(
            w.contains(&"c.test".into()) && !w.contains(&"b.test".into()),
            "{w:?}"
        );

        // Events on /srv itself, and overflows, ask for a rescan; access events are nothing.
        let n = tree.note(&ev(EventKind::Modify(ModifyKind::Any), srv));
        assert!(n.rescan && n.entries.is_empty());
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(tree.note(&overflow).rescan);
        let access = ev(
            EventKind::Access(notify::event::AccessKind::Any),
            &srv.join("a.test/public"),
        );
        assert_eq!(tree.note(&access), Noted::default());

        // A full refresh agrees with the incremental one, and the count matches.
        let before = rels(srv, &fake);
        tree.refresh_all().unwrap();
        assert_eq!(rels(srv, &fake), before);
        assert_eq!(tree.watch_count(), before.len());
    }

    #[test]
    fn mailbox_directories_are_watched_as_they_come_and_go() {
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path();
        std::fs::create_dir_all(srv.join("m.test/mailboxes/ann/Maildir/new")).unwrap();
        std::fs::create_dir_all(srv.join("m.test/mailboxes/.ann.removed-1")).unwrap();
        std::fs::write(srv.join("m.test/mailboxes/notadir"), "").unwrap();
        std::fs::create_dir_all(srv.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("../../elsewhere", srv.join("m.test/mailboxes/link")).unwrap();
        let fake = Fake::default();
        let mut tree = Tree::new(srv, Box::new(fake.clone()), None);
        tree.refresh_all().unwrap();
        let boxes = |fake: &Fake| -> Vec<String> {
            rels(srv, fake)
                .into_iter()
                .filter(|p| p.starts_with("m.test/mailboxes/"))
                .collect()
        };
        // Real mailbox directories only: not Maildir, hidden archives, files or symlinks.
        assert_eq!(boxes(&fake), ["m.test/mailboxes/ann"]);
        assert_eq!(tree.watch_count(), 4);

        // A password file in a watched mailbox dirties the domain.
        let n = tree.note(&ev(
            EventKind::Create(CreateKind::File),
            &srv.join("m.test/mailboxes/ann/password"),
        ));
        assert_eq!(n.entries, ["m.test"]);
        // Exim's vacation database is not the owner's change.
        let n = tree.note(&ev(
            EventKind::Modify(ModifyKind::Any),
            &srv.join("m.test/mailboxes/ann/vacation.db"),
        ));
        assert!(n.entries.is_empty());

        // A new mailbox (an event on mailboxes/) is watched after the refresh.
        std::fs::create_dir(srv.join("m.test/mailboxes/bob")).unwrap();
        let n = tree.note(&ev(
            EventKind::Create(CreateKind::Folder),
            &srv.join("m.test/mailboxes/bob"),
        ));
        assert_eq!(n.entries, ["m.test"]);
        tree.refresh("m.test");
        assert_eq!(
            boxes(&fake),
            ["m.test/mailboxes/ann", "m.test/mailboxes/bob"]
        );
        assert_eq!(tree.watch_count(), 5);

        // A removed mailbox drops its watch (from the event, and again on refresh).
        std::fs::remove_dir_all(srv.join("m.test/mailboxes/ann")).unwrap();
        tree.note(&ev(
            EventKind::Remove(RemoveKind::Folder),
            &srv.join("m.test/mailboxes/ann"),
        ));
        assert_eq!(boxes(&fake), ["m.test/mailboxes/bob"]);
        tree.refresh("m.test");
        assert_eq!(tree.watch_count(), 4);

        // rm -rf mailboxes/: every mailbox watch goes with it.
        std::fs::remove_dir_all(srv.join("m.test/mailboxes")).unwrap();
        tree.note(&ev(
            EventKind::Remove(RemoveKind::Folder),
            &srv.join("m.test/mailboxes"),
        ));
        assert!(boxes(&fake).is_empty());
        tree.refresh("m.test");
        assert_eq!(tree.watch_count(), 2);
        tree.refresh_all().unwrap();
        assert_eq!(tree.watch_count(), rels(srv, &fake).len());
    }

    #[test]
    fn hitting_the_limit_is_reported_and_recovers() {
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path();
        for d in ["a.test", "b.test", "c.test"] {
            std::fs::create_dir_all(srv.join(d).join("public/htdocs")).unwrap();
        }
        // The cap counts /srv too: 4 watches = /srv, a.test, a.test/public, b.test.
        let fake = Fake::default();
        let mut tree = Tree::new(srv, Box::new(fake.clone()), Some(4));
        tree.refresh_all().unwrap();
        assert!(tree.limited());
        assert_eq!(tree.watch_count(), 4);
        assert_eq!(rels(srv, &fake), ["", "a.test", "a.test/public", "b.test"]);

        // The kernel's own limit behaves the same; once the admin raises it, the next full
        // refresh watches everything and leaves the limited state.
        let fake = Fake::default();
        *fake.limit.lock().unwrap() = Some(2);
        let mut tree = Tree::new(srv, Box::new(fake.clone()), None);
        tree.refresh_all().unwrap();
        assert!(tree.limited());
        assert_eq!(tree.watch_count(), 2);
        tree.refresh("c.test"); // still limited: nothing added, no panic
        assert_eq!(tree.watch_count(), 2);
        *fake.limit.lock().unwrap() = None;
        tree.refresh_all().unwrap();
        assert!(!tree.limited());
        assert_eq!(tree.watch_count(), 7);

        // No inotify at all: limited from the first refresh.
        let mut none = Tree::without_inotify(srv, "too many open files".into());
        none.refresh_all().unwrap();
        assert!(none.limited());
    }

    #[test]
    fn the_limit_message_names_the_sysctl_and_the_numbers() {
        let m = limit_message(Path::new("/srv"), 4, 30_001, Some(8192), None, None);
        assert!(m.contains("fs.inotify.max_user_watches is 8192"), "{m}");
        assert!(m.contains("needs 30001"), "{m}");
        assert!(
            m.contains("sysctl -w fs.inotify.max_user_watches=65536"),
            "{m}"
        );
        let m = limit_message(Path::new("/srv"), 4, 100_000, None, Some(4), None);
        assert!(
            m.contains("is unknown") && m.contains("max_watches = 4"),
            "{m}"
        );
        assert!(m.contains("max_user_watches=200000"), "{m}");
        let m = limit_message(Path::new("/srv"), 0, 3, None, None, Some("EMFILE"));
        assert!(m.contains("max_user_instances"), "{m}");
    }
}
