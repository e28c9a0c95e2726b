//! Support for the hostile-/srv catalogue (SECURITY.md): sentinels that must never be read or
//! written through a customer's tree, the odd file types customers can plant, and the scans
//! that prove nothing leaked. Everything lives inside the sandbox's temp root.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The hostile customer's uid/gid (the good ones are `common::OWNER` and `common::OTHER`).
pub const HOSTILE: u32 = 2003;

/// Content of the root-only sentinel file: stands in for /etc/shadow in content checks.
pub const SECRET: &str = "DIRHOST-SENTINEL-SECRET-6c1d9e0a";
/// Content of a file in the victim domain, private to the victim (0600).
pub const VICTIM_PRIVATE: &str = "DIRHOST-SENTINEL-VICTIM-b22f40c7";

/// A file whose content and mtime must never change, and whose content must never appear
/// in anything dirhost writes or prints.
pub struct Sentinel {
    pub path: PathBuf,
    pub content: String,
    pub mtime: SystemTime,
    pub ino: u64,
}

impl Sentinel {
    /// Creates `path` with `content`, owned by `uid`, mode `mode`.
    pub fn create(path: &Path, content: &str, uid: u32, mode: u32) -> Self {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        chown(path, Some(uid), Some(uid)).unwrap();
        let m = std::fs::metadata(path).unwrap();
        Self {
            path: path.to_path_buf(),
            content: content.to_string(),
            mtime: m.modified().unwrap(),
            ino: m.ino(),
        }
    }

    /// Panics unless the file is exactly as created (content, mtime, inode).
    pub fn assert_untouched(&self, case: &str) {
        let m = std::fs::symlink_metadata(&self.path)
            .unwrap_or_else(|e| panic!("{case}: sentinel {} gone: {e}", self.path.display()));
        assert!(
            m.is_file(),
            "{case}: sentinel {} replaced",
            self.path.display()
        );
        assert_eq!(m.ino(), self.ino, "{case}: sentinel replaced");
        assert_eq!(
            std::fs::read_to_string(&self.path).unwrap(),
            self.content,
            "{case}: sentinel {} written",
            self.path.display()
        );
        assert_eq!(
            m.modified().unwrap(),
            self.mtime,
            "{case}: sentinel mtime changed"
        );
    }
}

/// Every regular file under `root` (symlinks not followed, `skip_ino` files left out) whose
/// content contains `needle`. Reads at most 4 MiB of each file.
pub fn files_containing(root: &Path, needle: &str, skip_ino: &[u64]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        if skip_ino.contains(&m.ino()) || m.len() > 4 << 20 {
            continue;
        }
        if let Ok(bytes) = std::fs::read(e.path())
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            hits.push(e.path().to_path_buf());
        }
    }
    hits
}

/// A symlink at `at` -> `target`, owned (lchown) by `uid`; parents created as `uid`.
pub fn link(target: impl AsRef<Path>, at: &Path, uid: u32) {
    mkdirs(at.parent().unwrap(), uid);
    remove_tree(at);
    symlink(target.as_ref(), at).unwrap();
    lchown(at, Some(uid), Some(uid)).unwrap();
}

/// `mkdir -p` with every created component owned by `uid`, 0755.
pub fn mkdirs(dir: &Path, uid: u32) {
    let mut missing = Vec::new();
    let mut d = dir.to_path_buf();
    while std::fs::symlink_metadata(&d).is_err() {
        missing.push(d.clone());
        if !d.pop() {
            break;
        }
    }
    for d in missing.iter().rev() {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown(d, Some(uid), Some(uid)).unwrap();
    }
}

/// A regular file owned by `uid`, parents created as `uid`.
pub fn file(path: &Path, content: &[u8], uid: u32, mode: u32) {
    mkdirs(path.parent().unwrap(), uid);
    remove_tree(path);
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
}

/// A sparse regular file of `len` bytes (a 1 GB flag file costs no disk).
pub fn sparse(path: &Path, len: u64, uid: u32) {
    file(path, b"", uid, 0o644);
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A FIFO (nobody ever writes to it: a reader that opens it blocking hangs forever).
pub fn fifo(path: &Path, uid: u32) {
    mkdirs(path.parent().unwrap(), uid);
    remove_tree(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A Unix socket file (the listener is closed again; the file stays).
pub fn socket(path: &Path, uid: u32) {
    mkdirs(path.parent().unwrap(), uid);
    remove_tree(path);
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A character device node: 1,5 is /dev/zero (endless), 5,0 is /dev/tty (blocks or fails).
pub fn chardev(path: &Path, major: u64, minor: u64, uid: u32) {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    mkdirs(path.parent().unwrap(), uid);
    remove_tree(path);
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(major, minor),
    )
    .unwrap();
    lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A directory chain `depth` levels deep below `dir` (made with *at() calls, so the total
/// path may exceed PATH_MAX), each level named `name`, owned by `uid`.
pub fn nested(dir: &Path, name: &str, depth: usize, uid: u32) {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, mkdirat};
    mkdirs(dir, uid);
    let mut fd: OwnedFd = {
        let f = std::fs::File::open(dir).unwrap();
        f.into()
    };
    for _ in 0..depth {
        mkdirat(Some(fd.as_raw_fd()), name, Mode::from_bits_truncate(0o755)).unwrap();
        let next = openat(
            Some(fd.as_raw_fd()),
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
        // SAFETY: openat returned a fresh descriptor that nothing else owns.
        fd = unsafe { OwnedFd::from_raw_fd(next) };
        nix::unistd::fchown(
            fd.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .unwrap();
    }
}

/// A path from raw bytes (non-UTF-8 names).
pub fn raw_name(base: &Path, bytes: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(bytes))
}

/// Removes a directory tree as root without following symlinks (std's remove_dir_all is
/// symlink-safe); fine if it is already gone. Fails loudly otherwise.
pub fn remove_tree(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Err(_) => {}
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
    }
}

/// Counts the catalogue cases that ran, for the summary line each test prints.
pub fn summary(what: &str, ran: usize) {
    println!("hostile {what}: {ran} cases ran");
    eprintln!("hostile {what}: {ran} cases ran");
}

/// With `DIRHOST_HOSTILE_CATALOGUE=<file>` set, each case appends one tab-separated row
/// (test, id, attack, expected outcome) to that file: SECURITY.md's tables are made from it,
/// so the catalogue and the tests cannot drift apart.
pub fn catalogue_row(test: &str, id: &str, attack: &str, outcome: &str) {
    let Ok(path) = std::env::var("DIRHOST_HOSTILE_CATALOGUE") else {
        return;
    };
    use std::io::Write;
    let clean = |s: &str| dirhost::model::validate::printable(s).replace(['\t', '|'], " ");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{test}\t{id}\t{}\t{}", clean(attack), clean(outcome)).unwrap();
}

/// Gives the domain at `domain_dir` a self-signed certificate set `sets/1` for `names`
/// (certificate 0644, key 0600, both owned by `uid`; made in `tmp`), and points
/// `config/ssl/current` at it when `current`. Returns the certificate's and the key's PEM.
pub fn cert_set(
    tmp: &Path,
    domain_dir: &Path,
    names: &[&str],
    uid: u32,
    current: bool,
) -> (String, String) {
    let (crt, key) = crate::common::self_signed(tmp, names, 30);
    file(
        &domain_dir.join("config/ssl/sets/1/ssl.crt"),
        crt.as_bytes(),
        uid,
        0o644,
    );
    file(
        &domain_dir.join("config/ssl/sets/1/ssl.key"),
        key.as_bytes(),
        uid,
        0o600,
    );
    if current {
        link("sets/1", &domain_dir.join("config/ssl/current"), uid);
    }
    (crt, key)
}
