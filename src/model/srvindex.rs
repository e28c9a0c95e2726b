//! The daemon's in-memory index of /srv's entries, so that a scoped load does not list /srv.
//!
//! What it owns: the facts [`super::load_scoped`] takes from a listing of /srv — each
//! entry's name, whether it may be a symlink (`d_type`), its inode — plus the lookups a
//! scoped load needs from the whole listing: entries by ASCII domain name (IDN directories
//! included), entries by inode (the directory an alias symlink in scope points at), every
//! symlink (each may be an alias of a domain in scope; it is still `stat`ed at each load,
//! exactly as without the index), and the `www.` names for Sympl's `www.` rule.
//!
//! Built by a full load from the very listing it reads ([`super::load_scoped_indexed`] with
//! no scope), then kept up to date by the daemon: before each scoped reconcile it
//! [`Shared::update`]s the batch's dirty /srv entries by looking at each again
//! (`safefs` `lstat`), never trusting what an event said happened. Any doubt — an entry it
//! cannot look at, an entry on another device (a mount point, whose listing inode differs
//! from its `lstat` inode), /srv replaced, a full load whose listing inodes did not match
//! `lstat` — drops the index, and scoped loads list /srv as before until the next full
//! resync builds it again. The daemon drops it itself on a queue overflow, an inotify
//! error, a config reload, and whenever /srv itself is not watched.
//!
//! What it must not do: decide anything about a domain (the load does, from the same
//! entries it would have listed), or hold names the load ignores in a scoped load (hidden
//! names, `lost+found`, names that are not UTF-8).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::validate;
use crate::safefs::{self, Kind};

/// One /srv entry as a scoped load sees it: name, "may be a symlink" (`d_type` symlink or
/// unknown), inode.
pub(super) type Entry = (OsString, bool, u64);

/// What [`super::load_scoped`] derives from the whole of /srv's listing, by entry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SrvIndex {
    /// `(dev, ino)` of /srv when the index was built.
    srv_id: (u64, u64),
    /// Every UTF-8 entry the load looks at: may it be a symlink, and its inode.
    entries: HashMap<String, (bool, u64)>,
    /// (inode, entry), for the directory an alias in scope points at (one tree, not a set
    /// per inode: a few dozen bytes per entry).
    by_ino: BTreeSet<(u64, String)>,
    /// Entries that may be symlinks (each a possible alias of a domain in scope).
    links: BTreeSet<String>,
    /// ASCII name → the non-ASCII entries that are that domain (IDN directories).
    idn: BTreeMap<String, BTreeSet<String>>,
    /// The `www.` rule's names ([`www_key`]) → the entries that make them exist.
    www: BTreeMap<String, BTreeSet<String>>,
}

/// Whether a scoped load looks at this /srv entry at all (hidden names and `lost+found`
/// are never domains or aliases).
pub(super) fn looked_at(name: &str) -> bool {
    !name.starts_with('.') && name != "lost+found"
}

/// The name under which an entry counts for Sympl's `www.` rule ("does /srv/www.<name>
/// exist?"), if it does: `www.*` entries and IDN names that convert to one.
pub(super) fn www_key(name: &str) -> Option<String> {
    if !(name.starts_with("www.") || name.starts_with("WWW.") || !name.is_ascii()) {
        return None;
    }
    let n = validate::domain_name(name).unwrap_or_else(|_| name.to_string());
    n.starts_with("www.").then_some(n)
}

impl SrvIndex {
    /// The index of a listing (`entries` as a full load saw them) of /srv, whose
    /// `(dev, ino)` is `srv_id`.
    pub(super) fn build(srv_id: (u64, u64), entries: &[Entry]) -> Self {
        let mut ix = Self {
            srv_id,
            ..Self::default()
        };
        for (name, maybe_link, ino) in entries {
            if let Some(name) = name.to_str() {
                ix.insert(name, *maybe_link, *ino);
            }
        }
        ix
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, name: &str, maybe_link: bool, ino: u64) {
        if !looked_at(name) {
            return;
        }
        self.remove(name);
        self.entries.insert(name.to_string(), (maybe_link, ino));
        self.by_ino.insert((ino, name.to_string()));
        if maybe_link {
            self.links.insert(name.to_string());
        }
        if !name.is_ascii()
            && let Ok(ascii) = validate::domain_name(name)
        {
            self.idn.entry(ascii).or_default().insert(name.to_string());
        }
        if let Some(w) = www_key(name) {
            self.www.entry(w).or_default().insert(name.to_string());
        }
    }

    fn remove(&mut self, name: &str) {
        let Some((_, ino)) = self.entries.remove(name) else {
            return;
        };
        fn take<K: Ord + Clone>(m: &mut BTreeMap<K, BTreeSet<String>>, k: &K, name: &str) {
            if let Some(set) = m.get_mut(k) {
                set.remove(name);
                if set.is_empty() {
                    m.remove(k);
                }
            }
        }
        self.by_ino.remove(&(ino, name.to_string()));
        self.links.remove(name);
        if !name.is_ascii()
            && let Ok(ascii) = validate::domain_name(name)
        {
            take(&mut self.idn, &ascii, name);
        }
        if let Some(w) = www_key(name) {
            take(&mut self.www, &w, name);
        }
    }

    /// Looks at each of `names` in /srv again (`lstat` through `safefs`) and records what is
    /// there now. `Err` (with why) when the index can no longer be trusted.
    fn update<'a>(
        &mut self,
        srv: &Path,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let dir = safefs::Dir::open_base(srv).map_err(|e| format!("{}: {e}", srv.display()))?;
        match dir.stat(Path::new("")) {
            Ok(Some(st)) if (st.dev, st.ino) == self.srv_id => {}
            _ => return Err(format!("{} was replaced", srv.display())),
        }
        for name in names {
            if !looked_at(name) || name.contains('/') || name.is_empty() {
                continue;
            }
            match dir.stat(Path::new(name)) {
                Ok(None) => self.remove(name),
                Ok(Some(st)) if st.dev == self.srv_id.0 => {
                    self.insert(name, st.kind == Kind::Symlink, st.ino)
                }
                Ok(Some(_)) => return Err(format!("{name} is on another filesystem")),
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        Ok(())
    }

    /// The entries a scoped load of `only` can do anything with, as a listing would have
    /// shown them: the named ones (IDN directories included), the directories that named
    /// symlinks point at, and every possible symlink. `None` when a name in `only` is not an
    /// ASCII domain name (the index holds no entry a load could match with it).
    pub(super) fn entries_for(&self, srv: &Path, only: &BTreeSet<String>) -> Option<Vec<Entry>> {
        use std::os::unix::fs::MetadataExt;
        if only
            .iter()
            .any(|o| validate::domain_name(o).ok().as_deref() != Some(o.as_str()))
        {
            return None;
        }
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for o in only {
            if self.entries.contains_key(o) {
                names.insert(o);
            }
            if let Some(raws) = self.idn.get(o) {
                names.extend(raws.iter().map(String::as_str));
            }
        }
        // A dirty alias symlink puts the directory it points at in scope (the load follows
        // it again, as it does without the index).
        let mut inos = BTreeSet::new();
        for n in &names {
            if self.entries.get(*n).is_some_and(|(l, _)| *l)
                && let Ok(m) = std::fs::metadata(srv.join(n))
            {
                inos.insert(m.ino());
            }
        }
        for ino in inos {
            names.extend(
                self.by_ino
                    .range((ino, String::new())..)
                    .take_while(|(i, _)| *i == ino)
                    .map(|(_, n)| n.as_str()),
            );
        }
        names.extend(self.links.iter().map(String::as_str));
        Some(
            names
                .into_iter()
                .filter_map(|n| {
                    let (l, ino) = self.entries.get(n)?;
                    Some((OsString::from(n), *l, *ino))
                })
                .collect(),
        )
    }

    /// Whether /srv has an entry that makes `www` (a `www.` name) exist for the `www.` rule.
    pub(super) fn has_www(&self, www: &str) -> bool {
        self.www.contains_key(www)
    }
}

/// The index as the daemon holds it between batches and hands it to `reconcile` in a
/// [`crate::reconcile::Request`]: empty until a full load builds it, emptied on any doubt.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Option<SrvIndex>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entries() {
            Some(n) => write!(f, "SrvIndex({n} entries)"),
            None => write!(f, "SrvIndex(none)"),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SrvIndex>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many entries the index holds; `None` when there is no index.
    pub fn entries(&self) -> Option<usize> {
        self.lock().as_ref().map(SrvIndex::len)
    }

    /// Drops the index: scoped loads list /srv until a full load builds it again.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    pub(super) fn set(&self, ix: Option<SrvIndex>) {
        *self.lock() = ix;
    }

    /// Runs `f` on the index, if there is one.
    pub(super) fn with<R>(&self, f: impl FnOnce(&SrvIndex) -> R) -> Option<R> {
        self.lock().as_ref().map(f)
    }

    /// Brings the index up to date for these /srv entries (a batch's dirty entries: every
    /// entry an event named, whatever the event said), by looking at each again. Drops the
    /// index, saying why, when that fails. Returns whether an index is left.
    pub fn update<'a>(&self, srv: &Path, names: impl IntoIterator<Item = &'a str>) -> bool {
        let mut guard = self.lock();
        let Some(ix) = guard.as_mut() else {
            return false;
        };
        if let Err(why) = ix.update(srv, names) {
            tracing::info!(
                "index of {} dropped ({why}): the next batches list it until the next full resync",
                srv.display()
            );
            *guard = None;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, load_scoped, load_scoped_indexed};
    use super::*;
    use std::os::unix::fs::{chown, lchown, symlink};
    use std::path::PathBuf;

    /// xorshift64*: a small deterministic generator (no dependency for one test).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
            v[self.below(v.len())]
        }
    }

    /// Names a /srv may hold: domains, their www. forms, IDN names (one the same domain as
    /// an ASCII one), alias names, invalid, hidden and lost+found.
    const POOL: &[&str] = &[
        "a.test",
        "b.test",
        "c.test",
        "www.a.test",
        "www.b.test",
        "www.al1.test",
        "al1.test",
        "al2.test",
        "b\u{fc}cher.test",
        "xn--bcher-kva.test",
        "www.b\u{fc}cher.test",
        "\u{e9}t\u{e9}.test",
        "Bad_Name",
        "UPPER.test",
        "WWW.a.test",
        ".hidden.test",
        "lost+found",
    ];

    fn exists(p: &Path) -> bool {
        std::fs::symlink_metadata(p).is_ok()
    }

    fn remove(p: &Path) {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
            Ok(_) => std::fs::remove_file(p).unwrap(),
            Err(_) => {}
        }
    }

    /// Makes `name` in `srv` as one of the kinds an entry can be.
    fn create(rng: &mut Rng, srv: &Path, name: &str) {
        let p = srv.join(name);
        match rng.below(9) {
            0..=2 => {
                // A customer's domain (sometimes a site), now and then a refused owner.
                let owner = [2001, 2001, 2001, 3001, 0][rng.below(5)];
                std::fs::create_dir(&p).unwrap();
                if rng.below(2) == 0 {
                    std::fs::create_dir_all(p.join("public/htdocs")).unwrap();
                    chown(p.join("public"), Some(owner), Some(owner)).unwrap();
                    chown(p.join("public/htdocs"), Some(owner), Some(owner)).unwrap();
                }
                chown(&p, Some(owner), Some(owner)).unwrap();
            }
            3 | 4 => symlink(rng.pick(POOL), &p).unwrap(),
            5 => symlink(srv.join(rng.pick(POOL)), &p).unwrap(),
            6 => {
                // Made by another customer (refused when it points at someone else's).
                symlink(rng.pick(POOL), &p).unwrap();
                lchown(&p, Some(3001), Some(3001)).unwrap();
            }
            7 => symlink("nowhere.test", &p).unwrap(),
            _ => std::fs::write(&p, "").unwrap(),
        }
    }

    /// One random change to /srv; returns the entries it touched (what events would name).
    fn change(rng: &mut Rng, srv: &Path) -> Vec<String> {
        let name = rng.pick(POOL);
        let p = srv.join(name);
        match rng.below(4) {
            0 if !exists(&p) => create(rng, srv, name),
            0 | 1 => remove(&p),
            2 => {
                // mv name other (over a non-directory, as rename(2) allows).
                let other = rng.pick(POOL);
                let q = srv.join(other);
                let p_dir = p.is_dir() && !p.is_symlink();
                if other == name || !exists(&p) || q.is_dir() || (p_dir && exists(&q)) {
                    return vec![name.to_string()];
                }
                std::fs::rename(&p, &q).unwrap();
                return vec![name.to_string(), other.to_string()];
            }
            _ => {
                // ln -sfn target name: a temporary link renamed over the entry.
                if p.is_dir() && !p.is_symlink() {
                    return vec![name.to_string()];
                }
                let tmp = srv.join(".tmp-link");
                remove(&tmp);
                symlink(rng.pick(POOL), &tmp).unwrap();
                std::fs::rename(&tmp, &p).unwrap();
            }
        }
        vec![name.to_string()]
    }

    #[track_caller]
    fn same(a: &Model, b: &Model, what: &str) {
        assert_eq!(a.domains, b.domains, "{what}");
        assert_eq!(a.skipped, b.skipped, "{what}");
        assert_eq!(a.symlink_aliases, b.symlink_aliases, "{what}");
        assert_eq!(a.config_files, b.config_files, "{what}");
    }

    fn listing(srv: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(srv)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn scoped_loads_with_the_index_equal_loads_that_list_srv() {
        let now = 1_800_000_000;
        let scopes: Vec<String> = POOL
            .iter()
            .filter_map(|n| validate::domain_name(n).ok())
            .chain(["nowhere.test".to_string()])
            .collect();
        let mut compared = 0;
        for seed in 1..=25u64 {
            let tmp = tempfile::tempdir().unwrap();
            let srv: PathBuf = tmp.path().join("srv");
            std::fs::create_dir(&srv).unwrap();
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            for _ in 0..12 {
                let name = rng.pick(POOL);
                if !exists(&srv.join(name)) {
                    create(&mut rng, &srv, name);
                }
            }
            // A full load builds the index from its own listing, and is the plain full load.
            let shared = Shared::default();
            let full = load_scoped_indexed(&srv, None, now, Some(&shared)).unwrap();
            same(&full, &load_scoped(&srv, None, now).unwrap(), "full load");
            assert!(shared.entries().is_some(), "a full load builds the index");
            for step in 0..60 {
                let touched = change(&mut rng, &srv);
                assert!(
                    shared.update(&srv, touched.iter().map(String::as_str)),
                    "the index was dropped"
                );
                // The updated index is the one a new listing builds.
                let fresh = Shared::default();
                load_scoped_indexed(&srv, None, now, Some(&fresh)).unwrap();
                let (a, b) = (shared.lock(), fresh.lock());
                assert_eq!(*a, *b, "seed {seed} step {step}: {:?}", listing(&srv));
                drop((a, b));
                for _ in 0..3 {
                    let only: BTreeSet<String> = (0..1 + rng.below(3))
                        .map(|_| scopes[rng.below(scopes.len())].clone())
                        .collect();
                    let with = load_scoped_indexed(&srv, Some(&only), now, Some(&shared)).unwrap();
                    let without = load_scoped(&srv, Some(&only), now).unwrap();
                    same(
                        &with,
                        &without,
                        &format!(
                            "seed {seed} step {step} scope {only:?}: {:?}",
                            listing(&srv)
                        ),
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 25 * 60 * 3);
    }

    #[test]
    fn doubt_drops_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path().join("srv");
        std::fs::create_dir_all(srv.join("a.test")).unwrap();
        let shared = Shared::default();
        // Not built yet: nothing to update, and scoped loads list /srv.
        assert!(!shared.update(&srv, ["a.test"]));
        load_scoped_indexed(&srv, None, 0, Some(&shared)).unwrap();
        assert_eq!(shared.entries(), Some(1));
        assert!(shared.update(&srv, ["a.test", "gone.test", ".hidden", "lost+found"]));
        // /srv replaced under the same path: the index no longer describes it.
        std::fs::rename(&srv, tmp.path().join("old")).unwrap();
        std::fs::create_dir_all(srv.join("a.test")).unwrap();
        assert!(!shared.update(&srv, ["a.test"]));
        assert_eq!(shared.entries(), None);
        // A scoped load without an index lists /srv as before.
        let only = BTreeSet::from(["a.test".to_string()]);
        let m = load_scoped_indexed(&srv, Some(&only), 0, Some(&shared)).unwrap();
        assert!(m.skipped_reason("a.test").is_some(), "root-owned: refused");
        // A scope name that is not an ASCII domain name is never answered from the index.
        load_scoped_indexed(&srv, None, 0, Some(&shared)).unwrap();
        shared.with(|ix| {
            assert!(
                ix.entries_for(&srv, &BTreeSet::from(["A.test".to_string()]))
                    .is_none()
            );
            assert!(ix.entries_for(&srv, &only).is_some());
        });
    }
}
