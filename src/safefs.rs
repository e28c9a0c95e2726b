//! Hostile-tree file access: the ONLY way dirhost reads or writes under `/srv`.
//!
//! dirhost runs as root, but everything below `/srv/<domain>/` is written by customers and
//! must be treated as hostile: any path component may be a symlink (to `/etc`, to another
//! customer), a FIFO that would block a reader forever, a device, a hard link to a root-only
//! file, or a file that keeps growing.
//!
//! # What this module owns
//!
//! * Resolving `base/rel` one component at a time with `openat(..., O_NOFOLLOW | O_DIRECTORY)`,
//!   so no symlink is ever followed below `base` ([`SafeError::Symlink`] instead).
//! * Reading small value/flag files: regular files only, opened without blocking, bounded
//!   by a size limit that is enforced on the actual read, not just on `fstat`.
//! * Directory handles: [`Dir`] holds a directory opened by that walk, and every read-side
//!   function has a method on it that walks `rel` below the held descriptor (the free
//!   functions are the same code, starting from a freshly opened `base`). A domain's reads
//!   then cost one walk to `/srv/<domain>`, and the directory cannot be swapped between
//!   them. [`AsOwner`] batches reads as the owner under one credential switch; [`LazyDir`]
//!   opens a directory only when something is read from it.
//! * Writing: atomic replace (temp file + `renameat` + `fsync`), atomic symlink replace,
//!   appending (log files), `mkdir -p`, unlink — all relative to directory fds obtained by
//!   the same walk.
//! * "Acting as the owner": [`read`], [`mkdir_all`], [`write_atomic`], [`symlink_atomic`],
//!   [`open_append`] and [`remove_file`] switch the calling **thread's** filesystem uid/gid
//!   (`setfsgid`, then `setfsuid`) to the customer for the duration of the call and restore
//!   them on every exit path. The kernel then checks permissions as the customer: a hard link to `/etc/shadow`
//!   cannot be read, a root-owned directory cannot be written into, and files we create are
//!   owned by the customer from the start (no `chown` race). Supplementary groups are not
//!   switched to the owner's: the thread's supplementary group list is *emptied* for the
//!   call (raw per-thread `setgroups` syscall, restored afterwards), so group access comes
//!   from `owner.gid` alone — a customer who is also in some other group does not get that
//!   group's access here, and root's own groups (often gid 0) do not leak to the customer.
//!   When the process is not root, no switch is attempted (the kernel already checks
//!   as the unprivileged user). An owner with uid 0 is root: nothing is restricted. [`stat`], [`list_dir`] and [`read_link`] take no owner and run
//!   with the caller's ids: they never open file contents.
//!
//! # What this module must not do
//!
//! * Follow a symlink anywhere below `base`, or accept a `rel` that is absolute or contains
//!   `..`, `.` or empty components (rejected with `ErrorKind::InvalidInput`).
//! * Open anything but a regular file for reading, or block on open/read.
//! * Read an unbounded amount of data into memory.
//! * Leave a temp file behind on error, or leave the thread with a customer's fsuid/fsgid
//!   (or without its supplementary groups) after returning (an [`AsOwner`] batch keeps
//!   them until it is dropped, on purpose, and restores them then on every path).
//! * Call `chown`/`chmod` by path, or any other path-based syscall below `base`.
//!
//! `base` itself is trusted (the caller picked it, e.g. `/srv/example.com` or `/srv`): it is
//! opened normally (symlinks in `base` are followed) and with the caller's own ids, and it
//! must exist (a missing `base` is an `Io` error, not "absent"). Linux only.

#[cfg(not(target_os = "linux"))]
compile_error!("dirhost::safefs is Linux only (setfsuid, *at() syscalls, O_NOFOLLOW semantics)");

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest flag/value file we read (64 KiB). Bigger is an error, never an OOM.
pub const MAX_VALUE_FILE: u64 = 64 * 1024;

/// Whose filesystem identity to act as (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Everything that can go wrong; every variant names the offending path.
#[derive(Debug, thiserror::Error)]
pub enum SafeError {
    /// A path component (or the final file) is a symlink where none may be.
    #[error("{path}: is a symbolic link, refusing to follow it")]
    Symlink { path: PathBuf },
    /// Expected a regular file (got FIFO, socket, device, directory...).
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    /// Expected a directory.
    #[error("{path}: not a directory")]
    NotDirectory { path: PathBuf },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type SafeResult<T> = Result<T, SafeError>;

/// Kind of a directory entry seen without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// lstat-like facts about `base/rel`, walking every component of `rel` with O_NOFOLLOW
/// (a symlink in an intermediate component -> Err(Symlink)); the final component is NOT followed.
///
/// `mode` is the full `st_mode` (file type bits included); mask with `0o7777` for permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub size: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
}

/// lstat-like facts about `base/rel` (final component not followed, intermediate symlinks
/// refused). Ok(None) if absent (ENOENT on any component of `rel`). An empty `rel` means
/// `base` itself.
pub fn stat(base: &Path, rel: &Path) -> SafeResult<Option<Stat>> {
    let rel = Rel::parse(base, rel)?;
    let base_fd = open_base(base)?;
    stat_in(base_fd.as_fd(), &rel)
}

/// Reads the regular file base/rel as `owner` (see "acting as the owner"), never following a
/// symlink in any component of rel, refusing non-regular files WITHOUT blocking (open with
/// O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC, fstat, reject non-regular; a FIFO must not hang us), and
/// refusing files larger than `limit` (check fstat size AND cap the actual read at limit+1 bytes,
/// since files can grow). Ok(None) when absent.
///
/// The final component is also lstat'ed before it is opened, so a device node is normally
/// refused without ever being opened.
pub fn read(base: &Path, rel: &Path, owner: Owner, limit: u64) -> SafeResult<Option<Vec<u8>>> {
    let rel = Rel::parse(base, rel)?;
    rel.split_last()?;
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &rel.full())?;
    read_in(base_fd.as_fd(), &rel, limit)
}

/// Opens the regular file base/rel for streaming reads as `owner` (a log file too large for
/// [`read`]): the same walk and checks as [`read`] (no symlink in any component, no FIFO or
/// device, opened as the owner so the kernel checks the owner's permissions), without a size
/// limit; the caller bounds what it reads. Ok(None) when absent.
pub fn open_read(base: &Path, rel: &Path, owner: Owner) -> SafeResult<Option<File>> {
    let rel = Rel::parse(base, rel)?;
    rel.split_last()?;
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &rel.full())?;
    open_read_in(base_fd.as_fd(), &rel)
}

/// Lists the names in directory base/rel (not following links anywhere), sorted, excluding . and ..
/// Names are raw OsString (may be non-UTF-8). Ok(None) when absent. Err(NotDirectory) if not a dir
/// (Err(Symlink) if base/rel itself is a symlink). An empty `rel` lists `base`.
pub fn list_dir(base: &Path, rel: &Path) -> SafeResult<Option<Vec<OsString>>> {
    let rel = Rel::parse(base, rel)?;
    let base_fd = open_base(base)?;
    list_dir_in(base_fd.as_fd(), &rel)
}

/// readlink of base/rel (intermediate components not followed). Ok(None) if absent;
/// Err(SafeError::Io{..EINVAL..}) if it is not a symlink.
pub fn read_link(base: &Path, rel: &Path) -> SafeResult<Option<PathBuf>> {
    let rel = Rel::parse(base, rel)?;
    rel.split_last()?;
    let base_fd = open_base(base)?;
    read_link_in(base_fd.as_fd(), &rel)
}

// ---------------------------------------------------------------------------------------------
// Directory handles: one walk, many reads.

/// A directory held open: the read-side functions of this module, relative to it.
///
/// Opened like every directory this module walks (`O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC`,
/// one component at a time, as the caller), so a symlink anywhere in the path is refused and
/// never followed. Every method walks `rel` below the held descriptor with the same checks
/// and errors as the free function of the same name, with [`Dir::path`] as its `base` (error
/// messages name `path/rel`). One walk to the domain directory then serves all of a
/// domain's reads (`/srv` need not be opened and `<domain>` walked again for each file).
///
/// A held handle is also safer than a path: the directory it refers to cannot be swapped
/// between two reads. Once open, renaming `/srv/<domain>` away and putting a symlink or
/// another directory in its place changes nothing for the handle: its reads still come from
/// the directory that was opened (and checked) first.
///
/// Opening a handle does not act as anyone: like [`stat`], it runs with the caller's ids.
/// [`Dir::read`] and [`Dir::open_read`] act as the owner for the walk below the handle and
/// the open, exactly like [`read`] and [`open_read`]; the kernel checks the owner's search
/// permission on the handle's directory for each lookup in it. So the owner's permissions
/// are checked from the handle's directory down, not on the components walked to open it
/// (as the caller): read as the owner from a handle of the domain's directory (the
/// owner's own), and use handles of deeper directories opened as the caller for listings
/// only, or [`AsOwner::open_dir`], which walks as the owner.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the trusted directory `base` (see the module docs: links in `base` are followed).
    pub fn open_base(base: &Path) -> SafeResult<Self> {
        Ok(Self {
            fd: open_base(base)?,
            path: base.to_path_buf(),
        })
    }

    /// Opens the directory base/rel, walking `rel` without following links (as
    /// [`list_dir`] does). Ok(None) when absent; Err(Symlink) if any component of `rel` is a
    /// symlink, Err(NotDirectory) if it is not a directory.
    pub fn open(base: &Path, rel: &Path) -> SafeResult<Option<Self>> {
        let parsed = Rel::parse(base, rel)?;
        let base_fd = open_base(base)?;
        open_dir_in(base_fd.as_fd(), &parsed)
    }

    /// Opens the directory self/rel (see [`Dir::open`]). An empty `rel` opens this directory
    /// again (a new descriptor for the same directory).
    pub fn open_dir(&self, rel: &Path) -> SafeResult<Option<Self>> {
        let rel = Rel::parse(&self.path, rel)?;
        open_dir_in(self.fd.as_fd(), &rel)
    }

    /// The path the handle was opened as (for messages; never used to open anything).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`stat`] below this directory (an empty `rel` is the directory itself).
    pub fn stat(&self, rel: &Path) -> SafeResult<Option<Stat>> {
        stat_in(self.fd.as_fd(), &Rel::parse(&self.path, rel)?)
    }

    /// [`read`] below this directory, as `owner` for this call.
    pub fn read(&self, rel: &Path, owner: Owner, limit: u64) -> SafeResult<Option<Vec<u8>>> {
        let rel = Rel::parse(&self.path, rel)?;
        rel.split_last()?;
        let _as_owner = ActingAs::become_owner(owner, &rel.full())?;
        read_in(self.fd.as_fd(), &rel, limit)
    }

    /// [`open_read`] below this directory, as `owner` for this call.
    pub fn open_read(&self, rel: &Path, owner: Owner) -> SafeResult<Option<File>> {
        let rel = Rel::parse(&self.path, rel)?;
        rel.split_last()?;
        let _as_owner = ActingAs::become_owner(owner, &rel.full())?;
        open_read_in(self.fd.as_fd(), &rel)
    }

    /// [`list_dir`] below this directory (an empty `rel` lists the directory itself).
    pub fn list_dir(&self, rel: &Path) -> SafeResult<Option<Vec<OsString>>> {
        list_dir_in(self.fd.as_fd(), &Rel::parse(&self.path, rel)?)
    }

    /// [`read_link`] below this directory.
    pub fn read_link(&self, rel: &Path) -> SafeResult<Option<PathBuf>> {
        let rel = Rel::parse(&self.path, rel)?;
        rel.split_last()?;
        read_link_in(self.fd.as_fd(), &rel)
    }

    /// A batch of reads as `owner` (see [`AsOwner`]): the thread's filesystem ids are
    /// switched once, at the first read, instead of around each read.
    pub fn as_owner(&self, owner: Owner) -> AsOwner<'_> {
        AsOwner {
            dir: Src::Dir(self),
            owner,
            acting: std::cell::RefCell::new(None),
        }
    }
}

/// Reads below a [`Dir`] as its owner, switching the calling thread's fsuid/fsgid (and
/// emptying its supplementary groups) at the first read and restoring them when dropped,
/// rather than around each read: several reads in a row cost one switch.
///
/// Each read walks, opens and reads exactly as [`read`] / [`open_read`] do as the owner;
/// only when the switch happens differs. While it has switched, EVERY filesystem access of
/// this thread acts as the owner (other `safefs` calls included, which can only make them
/// fail, never succeed where they would not): keep its scope to the reads, and drop it
/// before the thread does anything else. Not `Send` (the credentials are per thread): it is
/// dropped on the thread that switched, on every path, an error or a panic included.
pub struct AsOwner<'a> {
    dir: Src<'a>,
    owner: Owner,
    acting: std::cell::RefCell<Option<ActingAs>>,
}

/// Where an [`AsOwner`] reads.
enum Src<'a> {
    Dir(&'a Dir),
    /// Opened (as the caller, before any switch) at the first read; absent: every read is
    /// absent.
    Lazy(&'a LazyDir<'a>),
}

impl AsOwner<'_> {
    /// [`Dir::read`] as the batch's owner.
    pub fn read(&self, rel: &Path, limit: u64) -> SafeResult<Option<Vec<u8>>> {
        let Some((dir, rel)) = self.prepare(rel)? else {
            return Ok(None);
        };
        read_in(dir.fd.as_fd(), &rel, limit)
    }

    /// [`Dir::open_read`] as the batch's owner.
    pub fn open_read(&self, rel: &Path) -> SafeResult<Option<File>> {
        let Some((dir, rel)) = self.prepare(rel)? else {
            return Ok(None);
        };
        open_read_in(dir.fd.as_fd(), &rel)
    }

    /// Opens the directory `rel` below the batch's directory, walking AS THE OWNER (as a
    /// read would), for several reads in it: `a/b/c/f1` and `a/b/c/f2` with one walk, the
    /// owner's permissions checked on every component as they would be for each read.
    /// Ok(None) when absent.
    pub fn open_dir(&self, rel: &Path) -> SafeResult<Option<OwnerDir<'_>>> {
        let Some(dir) = self.resolve()? else {
            return Ok(None);
        };
        let parsed = Rel::parse(&dir.path, rel)?;
        self.switch(&parsed.full())?;
        Ok(open_dir_in(dir.fd.as_fd(), &parsed)?.map(|dir| OwnerDir {
            dir,
            _batch: PhantomData,
        }))
    }

    /// Validates `rel` and acts as the owner from now on (once).
    fn prepare(&self, rel: &Path) -> SafeResult<Option<(&Dir, Rel<'_>)>> {
        let Some(dir) = self.resolve()? else {
            return Ok(None);
        };
        let parsed = Rel::parse(&dir.path, rel)?;
        parsed.split_last()?;
        self.switch(&parsed.full())?;
        Ok(Some((dir, parsed)))
    }

    /// The directory (opening a lazy one, as the caller: before any switch).
    fn resolve(&self) -> SafeResult<Option<&Dir>> {
        match self.dir {
            Src::Dir(dir) => Ok(Some(dir)),
            Src::Lazy(lazy) => lazy.get(),
        }
    }

    /// Acts as the owner from now on, if not yet.
    fn switch(&self, path: &Path) -> SafeResult<()> {
        let mut acting = self.acting.borrow_mut();
        if acting.is_none() {
            *acting = Some(ActingAs::become_owner(self.owner, path)?);
        }
        Ok(())
    }
}

/// A directory an [`AsOwner`] batch opened as the owner ([`AsOwner::open_dir`]); its reads
/// belong to the batch (no switch of their own) and it cannot outlive it.
pub struct OwnerDir<'a> {
    dir: Dir,
    _batch: PhantomData<&'a AsOwner<'a>>,
}

impl OwnerDir<'_> {
    /// [`read`] below this directory, as the batch's owner.
    pub fn read(&self, rel: &Path, limit: u64) -> SafeResult<Option<Vec<u8>>> {
        let rel = Rel::parse(&self.dir.path, rel)?;
        rel.split_last()?;
        read_in(self.dir.fd.as_fd(), &rel, limit)
    }

    /// The path it was opened as (for messages).
    pub fn path(&self) -> &Path {
        &self.dir.path
    }
}

/// A [`Dir`] opened at its first use: for a pass that may need nothing from a directory
/// (every file it would read is known to be absent) and should then not open it at all.
/// Absent directory: every read is absent. A failed open is not remembered (the next use
/// tries again and reports it again).
pub struct LazyDir<'a> {
    base: Base<'a>,
    rel: &'a Path,
    dir: std::cell::OnceCell<Option<Dir>>,
}

/// Where a [`LazyDir`] walks from.
enum Base<'a> {
    /// A trusted path, opened for the walk.
    Path(&'a Path),
    /// A held directory (e.g. `/srv`, opened once for a whole pass).
    Dir(&'a Dir),
}

impl<'a> LazyDir<'a> {
    /// base/rel, opened as [`Dir::open`] does when first needed.
    pub fn new(base: &'a Path, rel: &'a Path) -> Self {
        Self {
            base: Base::Path(base),
            rel,
            dir: std::cell::OnceCell::new(),
        }
    }

    /// parent/rel, opened as [`Dir::open_dir`] does when first needed.
    pub fn below(parent: &'a Dir, rel: &'a Path) -> Self {
        Self {
            base: Base::Dir(parent),
            rel,
            dir: std::cell::OnceCell::new(),
        }
    }

    /// The handle, opening it if need be; Ok(None) when the directory does not exist.
    pub fn get(&self) -> SafeResult<Option<&Dir>> {
        if let Some(d) = self.dir.get() {
            return Ok(d.as_ref());
        }
        let opened = match self.base {
            Base::Path(base) => Dir::open(base, self.rel)?,
            Base::Dir(parent) => parent.open_dir(self.rel)?,
        };
        Ok(self.dir.get_or_init(|| opened).as_ref())
    }

    /// [`Dir::stat`].
    pub fn stat(&self, rel: &Path) -> SafeResult<Option<Stat>> {
        self.get()?.map_or(Ok(None), |d| d.stat(rel))
    }

    /// [`Dir::read`].
    pub fn read(&self, rel: &Path, owner: Owner, limit: u64) -> SafeResult<Option<Vec<u8>>> {
        self.get()?.map_or(Ok(None), |d| d.read(rel, owner, limit))
    }

    /// [`Dir::list_dir`].
    pub fn list_dir(&self, rel: &Path) -> SafeResult<Option<Vec<OsString>>> {
        self.get()?.map_or(Ok(None), |d| d.list_dir(rel))
    }

    /// [`Dir::read_link`].
    pub fn read_link(&self, rel: &Path) -> SafeResult<Option<PathBuf>> {
        self.get()?.map_or(Ok(None), |d| d.read_link(rel))
    }

    /// [`Dir::as_owner`]. The directory is opened (as the caller) at the first read, not
    /// before: a batch whose every read is skipped opens nothing.
    pub fn as_owner(&self, owner: Owner) -> AsOwner<'_> {
        AsOwner {
            dir: Src::Lazy(self),
            owner,
            acting: std::cell::RefCell::new(None),
        }
    }
}

// The one implementation of each read, relative to a directory fd.

fn stat_in(start: BorrowedFd<'_>, rel: &Rel<'_>) -> SafeResult<Option<Stat>> {
    let Some((name, dirs)) = rel.names.split_last() else {
        let st = fstat(start).map_err(|e| io_err(rel.base.to_path_buf(), e))?;
        return Ok(Some(to_stat(&st)));
    };
    let Some(dir) = walk(start, rel, dirs.len())? else {
        return Ok(None);
    };
    match fstatat_nofollow(dir.as_fd(), name) {
        Ok(st) => Ok(Some(to_stat(&st))),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(None),
        Err(e) => Err(io_err(rel.full(), e)),
    }
}

/// The regular file `rel` below `start`, opened for reading with the checks of [`read`]
/// (the caller acts as the owner around it).
fn open_regular_in(start: BorrowedFd<'_>, rel: &Rel<'_>) -> SafeResult<Option<(OwnedFd, u64)>> {
    let (name, dirs) = rel.split_last()?;
    let path = rel.full();
    let Some(dir) = walk(start, rel, dirs.len())? else {
        return Ok(None);
    };

    // Look before opening: never open a device/FIFO/socket if we can help it.
    match fstatat_nofollow(dir.as_fd(), name) {
        Ok(st) => match kind_of(st.st_mode) {
            Kind::File => {}
            Kind::Symlink => return Err(SafeError::Symlink { path }),
            Kind::Dir | Kind::Other => return Err(SafeError::NotRegular { path }),
        },
        Err(e) if is_errno(&e, libc::ENOENT) => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    }

    // It may have been swapped since; the open flags and the fstat below cover that.
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY;
    let fd = match openat(dir.as_fd(), name, flags, 0) {
        Ok(fd) => fd,
        Err(e) if is_errno(&e, libc::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(
                match fstatat_nofollow(dir.as_fd(), name).map(|st| kind_of(st.st_mode)) {
                    Ok(Kind::Symlink) => SafeError::Symlink { path },
                    Ok(Kind::Dir | Kind::Other) => SafeError::NotRegular { path },
                    Ok(Kind::File) | Err(_) if is_errno(&e, libc::ELOOP) => {
                        SafeError::Symlink { path }
                    }
                    Ok(Kind::File) | Err(_) => io_err(path, e),
                },
            );
        }
    };
    let st = fstat(fd.as_fd()).map_err(|e| io_err(path.clone(), e))?;
    if kind_of(st.st_mode) != Kind::File {
        return Err(SafeError::NotRegular { path });
    }
    Ok(Some((fd, u64::try_from(st.st_size).unwrap_or(0))))
}

fn read_in(start: BorrowedFd<'_>, rel: &Rel<'_>, limit: u64) -> SafeResult<Option<Vec<u8>>> {
    let Some((fd, size)) = open_regular_in(start, rel)? else {
        return Ok(None);
    };
    let path = || rel.full();
    if size > limit {
        return Err(SafeError::TooLarge {
            path: path(),
            limit,
        });
    }
    // Never trust the fstat size: the file can grow between fstat and read.
    match read_bounded(File::from(fd), size, limit) {
        Ok(Some(buf)) => Ok(Some(buf)),
        Ok(None) => Err(SafeError::TooLarge {
            path: path(),
            limit,
        }),
        Err(e) => Err(io_err(path(), e)),
    }
}

fn open_read_in(start: BorrowedFd<'_>, rel: &Rel<'_>) -> SafeResult<Option<File>> {
    Ok(open_regular_in(start, rel)?.map(|(fd, _)| File::from(fd)))
}

fn list_dir_in(start: BorrowedFd<'_>, rel: &Rel<'_>) -> SafeResult<Option<Vec<OsString>>> {
    let Some(dir) = open_dir_in(start, rel)? else {
        return Ok(None);
    };
    read_names(dir.fd, &dir.path).map(Some)
}

fn read_link_in(start: BorrowedFd<'_>, rel: &Rel<'_>) -> SafeResult<Option<PathBuf>> {
    let (name, dirs) = rel.split_last()?;
    let Some(dir) = walk(start, rel, dirs.len())? else {
        return Ok(None);
    };
    match readlinkat(dir.as_fd(), name) {
        Ok(target) => Ok(Some(PathBuf::from(OsString::from_vec(target)))),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(None),
        Err(e) => Err(io_err(rel.full(), e)),
    }
}

/// The directory `rel` below `start` as a [`Dir`] of its own (an empty `rel`: `start`
/// opened again, so the new descriptor has its own directory-stream position).
fn open_dir_in(start: BorrowedFd<'_>, rel: &Rel<'_>) -> SafeResult<Option<Dir>> {
    let path = rel.full();
    let fd = match walk(start, rel, rel.names.len())? {
        None => return Ok(None),
        Some(At::Owned(fd)) => fd,
        Some(At::Borrowed(fd)) => {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            openat(fd, c".", flags, 0).map_err(|e| io_err(path.clone(), e))?
        }
    };
    Ok(Some(Dir { fd, path }))
}

/// Reads at most `limit` bytes; Ok(None) if the source has more (at most `limit + 1` bytes
/// are ever read). `size_hint` only sizes the first allocation.
fn read_bounded(src: impl Read, size_hint: u64, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let initial = usize::try_from(size_hint.min(limit).min(1 << 20)).unwrap_or(0);
    let mut buf = Vec::with_capacity(initial);
    src.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > limit {
        return Ok(None);
    }
    Ok(Some(buf))
}

/// Creates directory base/rel and any missing parents (mkdir -p) as `owner` with `mode`,
/// never following symlinks; an existing directory is fine (mode/owner untouched); an existing
/// non-directory or symlink at any component is an error.
///
/// Every directory this call creates gets exactly `mode` (fchmod after mkdir, so the umask
/// does not apply). Its group is `owner.gid` unless the parent directory is set-gid.
pub fn mkdir_all(base: &Path, rel: &Path, owner: Owner, mode: u32) -> SafeResult<()> {
    let rel = Rel::parse(base, rel)?;
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &rel.full())?;
    let mut cur = base_fd;
    for (i, name) in rel.names.iter().enumerate() {
        let path = || rel.upto(i + 1);
        if let Some(fd) = open_dir_at(cur.as_fd(), name, path)? {
            cur = fd;
            continue;
        }
        let created = match mkdirat(cur.as_fd(), name, mode & 0o777) {
            Ok(()) => true,
            // Lost a race with someone else creating it: fine if it is a directory.
            Err(e) if is_errno(&e, libc::EEXIST) => false,
            Err(e) => return Err(io_err(path(), e)),
        };
        let Some(fd) = open_dir_at(cur.as_fd(), name, path)? else {
            let gone = io::Error::new(ErrorKind::NotFound, "directory vanished after mkdir");
            return Err(io_err(path(), gone));
        };
        if created {
            // Acting as the owner, so this can at worst chmod a directory the owner swapped
            // in, which the owner could chmod anyway.
            fchmod(fd.as_fd(), mode).map_err(|e| io_err(path(), e))?;
        }
        cur = fd;
    }
    Ok(())
}

/// Atomically replaces base/rel with `contents`: parent dir opened by an O_NOFOLLOW|O_DIRECTORY walk,
/// temp file created in the same dir with O_CREAT|O_EXCL|O_NOFOLLOW and a random name (".dirhost-tmp-XXXX"),
/// written, fchmod(mode), fsync, renameat over the target, then fsync the directory. All done acting as `owner`
/// so the files end up owned by owner.uid:owner.gid. On any error the temp file is removed.
/// If the target exists and is a directory or a symlink: the rename replaces a symlink (fine: rename
/// replaces the link itself, never writes through it); a directory target -> Err(NotRegular).
///
/// A missing parent directory is an `Io` error with `ErrorKind::NotFound` (no parents are created).
/// If only the final directory fsync fails, the new contents are already in place.
pub fn write_atomic(
    base: &Path,
    rel: &Path,
    contents: &[u8],
    owner: Owner,
    mode: u32,
) -> SafeResult<()> {
    let rel = Rel::parse(base, rel)?;
    let (name, dirs) = rel.split_last()?;
    let path = rel.full();
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &path)?;
    let dir = parent_dir(base_fd.as_fd(), &rel, dirs.len())?;
    refuse_dir_target(dir.as_fd(), name, &path)?;
    let io = |e: io::Error| io_err(path.clone(), e);

    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY;
    let (tmp_name, fd) = create_unique(|tmp| openat(dir.as_fd(), tmp, flags, 0o600)).map_err(io)?;
    let mut tmp = TempEntry {
        dir: dir.as_fd(),
        name: tmp_name,
        armed: true,
    };
    let mut file = File::from(fd);
    file.write_all(contents).map_err(io)?;
    fchmod(file.as_fd(), mode).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    renameat(dir.as_fd(), &tmp.name, name).map_err(|e| rename_err(&path, e))?;
    tmp.armed = false;
    fsync(dir.as_fd()).map_err(io)
}

/// Opens the regular file base/rel for appending as `owner`, creating it with exactly `mode`
/// if absent (O_APPEND|O_NOFOLLOW|O_NONBLOCK, no link followed in any component). The kernel
/// checks permissions as the owner at open time; the returned `File` keeps that access.
/// A symlink -> Err(Symlink); FIFO/socket/device/directory -> Err(NotRegular); a missing
/// parent directory -> `Io` with `ErrorKind::NotFound`.
pub fn open_append(base: &Path, rel: &Path, owner: Owner, mode: u32) -> SafeResult<File> {
    let rel = Rel::parse(base, rel)?;
    let (name, dirs) = rel.split_last()?;
    let path = rel.full();
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &path)?;
    let dir = parent_dir(base_fd.as_fd(), &rel, dirs.len())?;
    let flags =
        libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let refuse =
        |e: io::Error| match fstatat_nofollow(dir.as_fd(), name).map(|st| kind_of(st.st_mode)) {
            Ok(Kind::Symlink) => SafeError::Symlink { path: path.clone() },
            Ok(Kind::Dir | Kind::Other) => SafeError::NotRegular { path: path.clone() },
            Ok(Kind::File) | Err(_) => io_err(path.clone(), e),
        };
    // Create-or-open in two steps so that only a file we created gets `mode`.
    let fd = match openat(
        dir.as_fd(),
        name,
        flags | libc::O_CREAT | libc::O_EXCL,
        0o600,
    ) {
        Ok(fd) => {
            fchmod(fd.as_fd(), mode).map_err(|e| io_err(path.clone(), e))?;
            fd
        }
        Err(e) if is_errno(&e, libc::EEXIST) => {
            // Look before opening: never open a device/FIFO/socket if we can help it.
            match fstatat_nofollow(dir.as_fd(), name).map(|st| kind_of(st.st_mode)) {
                Ok(Kind::File) => {}
                Ok(Kind::Symlink) => return Err(SafeError::Symlink { path }),
                Ok(Kind::Dir | Kind::Other) => return Err(SafeError::NotRegular { path }),
                Err(e) => return Err(io_err(path, e)),
            }
            openat(dir.as_fd(), name, flags, 0).map_err(refuse)?
        }
        Err(e) => return Err(refuse(e)),
    };
    let st = fstat(fd.as_fd()).map_err(|e| io_err(path.clone(), e))?;
    if kind_of(st.st_mode) != Kind::File {
        return Err(SafeError::NotRegular { path });
    }
    Ok(File::from(fd))
}

/// Creates or replaces the symlink base/rel -> target atomically (temp link + renameat), as owner.
///
/// `target` is stored verbatim and never resolved. A directory at base/rel -> Err(NotRegular).
pub fn symlink_atomic(base: &Path, rel: &Path, target: &Path, owner: Owner) -> SafeResult<()> {
    let rel = Rel::parse(base, rel)?;
    let (name, dirs) = rel.split_last()?;
    let path = rel.full();
    let target_c = CString::new(target.as_os_str().as_bytes())
        .ok()
        .filter(|t| !t.as_bytes().is_empty())
        .ok_or_else(|| {
            invalid(
                path.clone(),
                "symlink target is empty or contains a NUL byte",
            )
        })?;
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &path)?;
    let dir = parent_dir(base_fd.as_fd(), &rel, dirs.len())?;
    refuse_dir_target(dir.as_fd(), name, &path)?;
    let io = |e: io::Error| io_err(path.clone(), e);

    let (tmp_name, ()) = create_unique(|tmp| symlinkat(&target_c, dir.as_fd(), tmp)).map_err(io)?;
    let mut tmp = TempEntry {
        dir: dir.as_fd(),
        name: tmp_name,
        armed: true,
    };
    renameat(dir.as_fd(), &tmp.name, name).map_err(|e| rename_err(&path, e))?;
    tmp.armed = false;
    fsync(dir.as_fd()).map_err(io)
}

/// Removes the file or symlink base/rel (unlinkat, no following). Ok(false) if it was absent
/// (including an absent parent). A directory -> Err(NotRegular).
pub fn remove_file(base: &Path, rel: &Path, owner: Owner) -> SafeResult<bool> {
    let rel = Rel::parse(base, rel)?;
    let (name, dirs) = rel.split_last()?;
    let path = rel.full();
    let base_fd = open_base(base)?;
    let _as_owner = ActingAs::become_owner(owner, &path)?;
    let Some(dir) = walk(base_fd.as_fd(), &rel, dirs.len())? else {
        return Ok(false);
    };
    match unlinkat(dir.as_fd(), name) {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
        Err(e) if is_errno(&e, libc::EISDIR) => Err(SafeError::NotRegular { path }),
        Err(e) => Err(io_err(path, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Path handling and the walk.

/// A validated `rel`: plain names only, each a C string without NUL.
struct Rel<'a> {
    base: &'a Path,
    names: Vec<CString>,
}

impl<'a> Rel<'a> {
    fn parse(base: &'a Path, rel: &Path) -> SafeResult<Self> {
        let bytes = rel.as_os_str().as_bytes();
        let whole = || base.join(rel);
        if bytes.is_empty() {
            return Ok(Self {
                base,
                names: Vec::new(),
            });
        }
        if bytes.first() == Some(&b'/') {
            return Err(invalid(
                whole(),
                "absolute path where a relative one is required",
            ));
        }
        let mut names = Vec::new();
        for seg in bytes.split(|&b| b == b'/') {
            match seg {
                b"" => return Err(invalid(whole(), "empty path component")),
                b"." => return Err(invalid(whole(), "`.` path component")),
                b".." => return Err(invalid(whole(), "`..` path component")),
                _ => names.push(
                    CString::new(seg).map_err(|_| invalid(whole(), "path contains a NUL byte"))?,
                ),
            }
        }
        Ok(Self { base, names })
    }

    /// `base` joined with the first `n` components.
    fn upto(&self, n: usize) -> PathBuf {
        let mut p = self.base.to_path_buf();
        for name in self.names.iter().take(n) {
            p.push(OsStr::from_bytes(name.as_bytes()));
        }
        p
    }

    fn full(&self) -> PathBuf {
        self.upto(self.names.len())
    }

    /// (final name, parent components); an empty `rel` is invalid here.
    fn split_last(&self) -> SafeResult<(&CStr, &[CString])> {
        match self.names.split_last() {
            Some((name, dirs)) => Ok((name.as_c_str(), dirs)),
            None => Err(invalid(
                self.base.to_path_buf(),
                "empty relative path where a file name is required",
            )),
        }
    }
}

/// Opens the trusted `base` directory (links in it are followed: the caller vouches for it).
fn open_base(base: &Path) -> SafeResult<OwnedFd> {
    let c = CString::new(base.as_os_str().as_bytes())
        .map_err(|_| invalid(base.to_path_buf(), "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    match cvt(ret) {
        // SAFETY: `open` succeeded, so `fd` is a fresh descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) if is_errno(&e, libc::ENOTDIR) => Err(SafeError::NotDirectory {
            path: base.to_path_buf(),
        }),
        Err(e) => Err(io_err(base.to_path_buf(), e)),
    }
}

/// A directory fd the walk either started from (borrowed) or opened (owned).
enum At<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl At<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            At::Borrowed(fd) => *fd,
            At::Owned(fd) => fd.as_fd(),
        }
    }
}

/// Opens the first `n` components of `rel` as directories below `start`, never following
/// links (the one walk of this module: every read, write and [`Dir`] goes through it, but
/// `mkdir_all`, which creates as it goes). Ok(None) if one of them does not exist.
fn walk<'a>(start: BorrowedFd<'a>, rel: &Rel<'_>, n: usize) -> SafeResult<Option<At<'a>>> {
    let mut cur = At::Borrowed(start);
    for (i, name) in rel.names.iter().take(n).enumerate() {
        match open_dir_at(cur.as_fd(), name, || rel.upto(i + 1))? {
            Some(fd) => cur = At::Owned(fd),
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Like [`walk`] but a missing directory is an error (for the write paths).
fn parent_dir<'a>(start: BorrowedFd<'a>, rel: &Rel<'_>, n: usize) -> SafeResult<At<'a>> {
    walk(start, rel, n)?.ok_or_else(|| {
        let e = io::Error::new(ErrorKind::NotFound, "parent directory does not exist");
        io_err(rel.upto(n), e)
    })
}

/// Opens the directory `name` in `dir` without following links. Ok(None) if absent.
fn open_dir_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: impl Fn() -> PathBuf,
) -> SafeResult<Option<OwnedFd>> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    match openat(dir, name, flags, 0) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(None),
        Err(e) if is_errno(&e, libc::ELOOP) || is_errno(&e, libc::ENOTDIR) => Err(
            match fstatat_nofollow(dir, name).map(|st| kind_of(st.st_mode)) {
                Ok(Kind::Symlink) => SafeError::Symlink { path: path() },
                Ok(Kind::File | Kind::Other) => SafeError::NotDirectory { path: path() },
                Ok(Kind::Dir) | Err(_) => io_err(path(), e),
            },
        ),
        Err(e) => Err(io_err(path(), e)),
    }
}

/// Refuses to replace a directory with a file or symlink.
fn refuse_dir_target(dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> SafeResult<()> {
    match fstatat_nofollow(dir, name) {
        Ok(st) if kind_of(st.st_mode) == Kind::Dir => Err(SafeError::NotRegular {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
        Err(e) => Err(io_err(path.to_path_buf(), e)),
    }
}

fn rename_err(path: &Path, e: io::Error) -> SafeError {
    let onto_dir = [libc::EISDIR, libc::ENOTEMPTY, libc::EEXIST];
    if onto_dir.iter().any(|&code| is_errno(&e, code)) {
        SafeError::NotRegular {
            path: path.to_path_buf(),
        }
    } else {
        io_err(path.to_path_buf(), e)
    }
}

fn read_names(dir: OwnedFd, path: &Path) -> SafeResult<Vec<OsString>> {
    let raw = dir.into_raw_fd();
    // SAFETY: `raw` is an open directory descriptor we own; on success the DIR takes it over.
    let dirp = unsafe { libc::fdopendir(raw) };
    let Some(dirp) = NonNull::new(dirp) else {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        return Err(io_err(path.to_path_buf(), e));
    };
    let stream = DirStream(dirp);
    let mut names = Vec::new();
    loop {
        nix::errno::Errno::clear();
        // SAFETY: `stream.0` is a valid DIR* used only by this thread.
        // readdir64: see `fstatat_nofollow` (EOVERFLOW on 32-bit targets otherwise).
        let ent = unsafe { libc::readdir64(stream.0.as_ptr()) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            if e.raw_os_error().unwrap_or(0) != 0 {
                return Err(io_err(path.to_path_buf(), e));
            }
            break;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated and which
        // stays valid until the next readdir/closedir on this stream.
        let name = unsafe { CStr::from_ptr(std::ptr::addr_of!((*ent).d_name).cast()) };
        let name = name.to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    names.sort();
    Ok(names)
}

/// A `DIR*` that is closed (with its fd) on drop.
struct DirStream(NonNull<libc::DIR>);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from fdopendir and is closed exactly once.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// A temp entry in `dir` that is unlinked on drop unless disarmed.
struct TempEntry<'a> {
    dir: BorrowedFd<'a>,
    name: CString,
    armed: bool,
}

impl Drop for TempEntry<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: nothing useful to do if cleanup fails.
            let _ = unlinkat(self.dir, &self.name);
        }
    }
}

/// Calls `create` with fresh random temp names until one does not exist yet.
fn create_unique<T>(mut create: impl FnMut(&CStr) -> io::Result<T>) -> io::Result<(CString, T)> {
    for _ in 0..16 {
        let name = temp_name()?;
        match create(&name) {
            Ok(v) => return Ok((name, v)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        "could not find an unused temporary name",
    ))
}

/// `.dirhost-tmp-<16 hex digits>`; O_EXCL (or symlinkat's EEXIST) is what makes it safe, the
/// randomness only makes the name unpredictable.
fn temp_name() -> io::Result<CString> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    let mut r = u64::from_ne_bytes(buf);
    if usize::try_from(got).ok() != Some(buf.len()) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()) ^ d.as_secs())
            .unwrap_or(0);
        r = nanos.rotate_left(17) ^ u64::from(std::process::id()).rotate_left(40);
    }
    r ^= COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    CString::new(format!(".dirhost-tmp-{r:016x}"))
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "bad temp name"))
}

// ---------------------------------------------------------------------------------------------
// Acting as the owner.

/// While alive, the calling thread's fsuid/fsgid are the owner's and its supplementary group
/// list is empty. Restores all three on drop. Not `Send`: these credentials are per thread,
/// so the guard must be dropped on the thread that made it.
struct ActingAs {
    restore: Option<Saved>,
    _not_send: PhantomData<*const ()>,
}

/// The thread's credentials before [`ActingAs::become_owner`].
struct Saved {
    fsuid: libc::uid_t,
    fsgid: libc::gid_t,
    /// `Some` only if the groups were changed (they are left alone when already empty).
    groups: Option<Vec<libc::gid_t>>,
}

fn current_fsuid() -> libc::uid_t {
    // SAFETY: setfsuid(-1) is invalid, changes nothing and returns the current fsuid.
    unsafe { libc::setfsuid(libc::uid_t::MAX) as libc::uid_t }
}

fn current_fsgid() -> libc::gid_t {
    // SAFETY: setfsgid(-1) is invalid, changes nothing and returns the current fsgid.
    unsafe { libc::setfsgid(libc::gid_t::MAX) as libc::gid_t }
}

/// The calling thread's supplementary groups.
fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: size 0 only asks for the count.
    let n = cvt(unsafe { libc::getgroups(0, std::ptr::null_mut()) })?;
    let mut groups = vec![0; usize::try_from(n).unwrap_or(0)];
    // SAFETY: `groups` has room for `n` entries.
    let got = cvt(unsafe { libc::getgroups(n, groups.as_mut_ptr()) })?;
    groups.truncate(usize::try_from(got).unwrap_or(0));
    Ok(groups)
}

// The 32-bit-gid variant of setgroups on the architectures that still have a 16-bit one.
#[cfg(any(target_arch = "arm", target_arch = "x86"))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(not(any(target_arch = "arm", target_arch = "x86")))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;

/// Sets the supplementary groups of the calling THREAD only. This is the raw syscall on
/// purpose: glibc's setgroups() applies the change to every thread of the process.
fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: `groups` is valid for `groups.len()` reads for the duration of the call.
    let ret = unsafe { libc::syscall(SYS_SETGROUPS, groups.len(), groups.as_ptr()) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ActingAs {
    fn become_owner(owner: Owner, path: &Path) -> SafeResult<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Unprivileged: the kernel already checks as us, and setfsuid could not switch.
            return Ok(Self {
                restore: None,
                _not_send: PhantomData,
            });
        }
        let fail = |e: io::Error| io_err(path.to_path_buf(), e);
        let groups = thread_groups().map_err(fail)?;
        // Group first: once fsuid is not 0 we may lose the right to change fsgid.
        // SAFETY: plain per-thread syscalls; they return the previous id.
        let fsgid = unsafe { libc::setfsgid(owner.gid) } as libc::gid_t;
        // SAFETY: as above.
        let fsuid = unsafe { libc::setfsuid(owner.uid) } as libc::uid_t;
        let mut guard = Self {
            restore: Some(Saved {
                fsuid,
                fsgid,
                groups: None,
            }),
            _not_send: PhantomData,
        };
        if current_fsuid() != owner.uid || current_fsgid() != owner.gid {
            let e = io::Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "cannot switch filesystem ids to {}:{}",
                    owner.uid, owner.gid
                ),
            );
            return Err(fail(e)); // `guard` restores on drop
        }
        // Root's own supplementary groups (often just 0) would otherwise still grant access
        // to e.g. root:root 0640 files. The owner's access comes through fsgid alone.
        if !groups.is_empty() {
            set_thread_groups(&[]).map_err(fail)?;
            if let Some(saved) = guard.restore.as_mut() {
                saved.groups = Some(groups);
            }
        }
        Ok(guard)
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        let Some(saved) = self.restore.take() else {
            return;
        };
        // SAFETY: plain per-thread syscalls. Uid first, to be root again for the rest.
        unsafe {
            libc::setfsuid(saved.fsuid);
            libc::setfsgid(saved.fsgid);
        }
        let mut ok = current_fsuid() == saved.fsuid && current_fsgid() == saved.fsgid;
        if let Some(groups) = &saved.groups {
            ok &= set_thread_groups(groups).is_ok();
            ok &= thread_groups().is_ok_and(|now| &now == groups);
        }
        if !ok {
            // Continuing would make later root work on this thread create customer-owned
            // files (e.g. under /etc) or miss its groups. Cannot happen for root (it keeps
            // CAP_SETUID/CAP_SETGID throughout); refuse to go on if it does.
            eprintln!(
                "dirhost: safefs: could not restore filesystem ids {}:{}; aborting",
                saved.fsuid, saved.fsgid
            );
            std::process::abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Thin syscall wrappers: io::Result, OwnedFd, O_CLOEXEC always.

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn is_errno(e: &io::Error, code: libc::c_int) -> bool {
    e.raw_os_error() == Some(code)
}

fn io_err(path: PathBuf, source: io::Error) -> SafeError {
    SafeError::Io { path, source }
}

fn invalid(path: PathBuf, msg: &'static str) -> SafeError {
    io_err(path, io::Error::new(ErrorKind::InvalidInput, msg))
}

fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and NUL-terminated name; `mode` (a u32 on Linux) is the variadic arg.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: openat succeeded, so `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// The `*64` variants throughout: on 32-bit targets (armhf, a Raspberry Pi's 32-bit OS) the
// plain `stat`/`fstatat`/`readdir` use 32-bit inode and size fields and fail with EOVERFLOW
// on file systems with large inode numbers (btrfs, XFS, NFS, overlayfs); on 64-bit targets
// they are the same functions.
fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: valid fd, NUL-terminated name, `st` is writable.
    cvt(unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: valid fd, `st` is writable.
    cvt(unsafe { libc::fstat64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// Unlinks a non-directory (a directory gives EISDIR).
fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// Renames `from` to `to`, both in `dir`.
fn renameat(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    let d = dir.as_raw_fd();
    // SAFETY: valid fd and NUL-terminated names.
    cvt(unsafe { libc::renameat(d, from.as_ptr(), d, to.as_ptr()) }).map(drop)
}

fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        // SAFETY: valid fd, NUL-terminated name, `buf` writable for `buf.len()` bytes.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // Possibly truncated: retry bigger (link targets are at most PATH_MAX on Linux).
        if cap >= 64 * 1024 {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "symlink target too long",
            ));
        }
        cap *= 4;
    }
}

fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o7777) }).map(drop)
}

fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

fn kind_of(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

// The field widths differ between targets (e.g. 32-bit ARM), hence the conversions.
#[allow(clippy::useless_conversion)]
fn to_stat(st: &libc::stat64) -> Stat {
    Stat {
        kind: kind_of(st.st_mode),
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode,
        size: u64::try_from(st.st_size).unwrap_or(0),
        nlink: u64::from(st.st_nlink),
        dev: u64::from(st.st_dev),
        ino: u64::from(st.st_ino),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Duration;
    use tempfile::TempDir;

    const CUSTOMER: Owner = Owner {
        uid: 4242,
        gid: 4242,
    };

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The ids of the test process itself (root in CI).
    fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// The thread's fsuid/fsgid must be back to the effective ids after every call.
    fn assert_ids_restored() {
        assert_eq!(
            current_fsuid(),
            nix::unistd::geteuid().as_raw(),
            "fsuid leaked"
        );
        assert_eq!(
            current_fsgid(),
            nix::unistd::getegid().as_raw(),
            "fsgid leaked"
        );
    }

    /// A temp tree whose root can be traversed by the customer (TempDir is 0700).
    fn tree() -> TempDir {
        let t = TempDir::new().unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory owned by CUSTOMER (root only).
    fn customer_dir(path: &Path) {
        fs::create_dir(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        chown(path, Some(CUSTOMER.uid), Some(CUSTOMER.gid)).unwrap();
    }

    #[derive(Debug)]
    enum Want {
        Data(&'static [u8]),
        Absent,
        Symlink(&'static str),
        NotRegular,
        NotDirectory,
        Invalid,
        Denied,
        TooLarge,
    }

    fn check<T: std::fmt::Debug>(
        base: &Path,
        what: &str,
        got: SafeResult<Option<T>>,
        want: &Want,
        data: impl Fn(&T) -> Vec<u8>,
    ) {
        match (want, &got) {
            (Want::Data(d), Ok(Some(v))) => assert_eq!(data(v), d.to_vec(), "{what}"),
            (Want::Absent, Ok(None)) => {}
            (Want::Symlink(at), Err(SafeError::Symlink { path })) => {
                assert_eq!(path, &base.join(at), "{what}")
            }
            (Want::NotRegular, Err(SafeError::NotRegular { .. }))
            | (Want::NotDirectory, Err(SafeError::NotDirectory { .. })) => {}
            (Want::Invalid, Err(SafeError::Io { source, .. }))
                if source.kind() == ErrorKind::InvalidInput => {}
            (Want::Denied, Err(SafeError::Io { source, .. }))
                if source.kind() == ErrorKind::PermissionDenied => {}
            (Want::TooLarge, Err(SafeError::TooLarge { .. })) => {}
            _ => panic!("{what}: wanted {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn read_table() {
        let t = tree();
        let b = t.path();
        let outside = TempDir::new().unwrap();
        let secret = outside.path().join("secret");
        write(&secret, b"root password", 0o644);

        write(&b.join("plain"), b"hello\n", 0o644);
        write(&b.join("empty"), b"", 0o644);
        fs::create_dir_all(b.join("dir/sub")).unwrap();
        write(&b.join("dir/sub/file"), b"nested", 0o644);
        symlink("plain", b.join("link-final")).unwrap();
        symlink("dir", b.join("linkdir")).unwrap();
        symlink(&secret, b.join("secret-link")).unwrap();
        symlink(outside.path(), b.join("outside")).unwrap();
        symlink("nowhere", b.join("dangling")).unwrap();
        nix::unistd::mkfifo(
            &b.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let _sock = UnixListener::bind(b.join("sock")).unwrap();

        let cases: &[(&str, Want)] = &[
            ("plain", Want::Data(b"hello\n")),
            ("empty", Want::Data(b"")),
            ("dir/sub/file", Want::Data(b"nested")),
            ("missing", Want::Absent),
            ("missing/deeper/file", Want::Absent),
            ("dir/missing", Want::Absent),
            ("link-final", Want::Symlink("link-final")),
            ("dangling", Want::Symlink("dangling")),
            ("linkdir/sub/file", Want::Symlink("linkdir")),
            ("secret-link", Want::Symlink("secret-link")),
            ("outside/secret", Want::Symlink("outside")),
            ("fifo", Want::NotRegular),
            ("sock", Want::NotRegular),
            ("dir", Want::NotRegular),
            ("plain/x", Want::NotDirectory),
            ("../plain", Want::Invalid),
            ("dir/../plain", Want::Invalid),
            ("/etc/passwd", Want::Invalid),
            ("./plain", Want::Invalid),
            ("dir//sub/file", Want::Invalid),
            ("dir/sub/file/", Want::Invalid),
            ("", Want::Invalid),
        ];
        for (rel, want) in cases {
            let got = read(b, p(rel), me(), MAX_VALUE_FILE);
            assert_ids_restored();
            check(b, &format!("read {rel:?}"), got, want, Vec::clone);
        }
        assert_eq!(fs::read(&secret).unwrap(), b"root password");
    }

    #[test]
    fn open_read_streams_regular_files_only() {
        let t = tree();
        let b = t.path();
        write(&b.join("plain"), b"log line\n", 0o644);
        fs::create_dir_all(b.join("dir")).unwrap();
        write(&b.join("dir/file"), b"nested", 0o644);
        symlink("plain", b.join("link-final")).unwrap();
        symlink("dir", b.join("linkdir")).unwrap();
        nix::unistd::mkfifo(
            &b.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        let cases: &[(&str, Want)] = &[
            ("plain", Want::Data(b"log line\n")),
            ("dir/file", Want::Data(b"nested")),
            ("missing", Want::Absent),
            ("missing/file", Want::Absent),
            ("link-final", Want::Symlink("link-final")),
            ("linkdir/file", Want::Symlink("linkdir")),
            ("dir", Want::NotRegular),
            ("fifo", Want::NotRegular),
            ("../plain", Want::Invalid),
        ];
        for (rel, want) in cases {
            let got = open_read(b, p(rel), me());
            assert_ids_restored();
            check(b, &format!("open_read {rel:?}"), got, want, |f: &File| {
                let mut v = Vec::new();
                (&*f).read_to_end(&mut v).unwrap();
                v
            });
        }
        if is_root() {
            write(&b.join("shadow"), b"secret", 0o600);
            let got = open_read(b, p("shadow"), CUSTOMER);
            assert_ids_restored();
            check(
                b,
                "open_read shadow as customer",
                got,
                &Want::Denied,
                |_: &File| Vec::new(),
            );
        }
    }

    #[test]
    fn read_fifo_does_not_block() {
        let t = tree();
        let base = t.path().to_path_buf();
        nix::unistd::mkfifo(
            &base.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = read(&base, p("fifo"), me(), MAX_VALUE_FILE);
            let _ = tx.send(format!("{r:?}"));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("read of a FIFO hung");
        assert!(got.contains("NotRegular"), "{got}");
    }

    #[test]
    fn read_device_refused() {
        if !is_root() {
            return;
        }
        let t = tree();
        let dev = CString::new(t.path().join("null").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path; creates a char device like /dev/null.
        let r = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(r, 0, "mknod: {}", io::Error::last_os_error());
        let got = read(t.path(), p("null"), me(), MAX_VALUE_FILE);
        assert!(matches!(got, Err(SafeError::NotRegular { .. })), "{got:?}");
        let st = stat(t.path(), p("null")).unwrap().unwrap();
        assert_eq!(st.kind, Kind::Other);
        assert_ids_restored();
    }

    #[test]
    fn read_size_limits() {
        let t = tree();
        let b = t.path();
        let max = usize::try_from(MAX_VALUE_FILE).unwrap();
        write(&b.join("ten"), &[b'x'; 10], 0o644);
        write(&b.join("eleven"), &[b'x'; 11], 0o644);
        write(&b.join("max"), &vec![b'y'; max], 0o644);
        write(&b.join("max1"), &vec![b'y'; max + 1], 0o644);
        let cases: &[(&str, u64, Option<usize>)] = &[
            ("ten", 10, Some(10)),
            ("eleven", 10, None),
            ("ten", 0, None),
            ("max", MAX_VALUE_FILE, Some(max)),
            ("max1", MAX_VALUE_FILE, None),
            ("max1", u64::MAX, Some(max + 1)),
        ];
        for (rel, limit, want) in cases {
            let got = read(b, p(rel), me(), *limit);
            assert_ids_restored();
            match (want, got) {
                (Some(n), Ok(Some(v))) => assert_eq!(v.len(), *n, "{rel} limit {limit}"),
                (None, Err(SafeError::TooLarge { path, limit: l })) => {
                    assert_eq!(path, b.join(rel));
                    assert_eq!(l, *limit);
                }
                (_, got) => panic!("{rel} limit {limit}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn read_is_capped_even_when_fstat_lies() {
        // An endless source (a file that keeps growing) is cut off after limit + 1 bytes.
        assert_eq!(read_bounded(io::repeat(b'x'), 0, 16).unwrap(), None);
        let exact = read_bounded(&b"0123456789"[..], 0, 10).unwrap();
        assert_eq!(exact.as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(read_bounded(&b"0123456789"[..], 0, 9).unwrap(), None);
        // procfs reports st_size 0 for files that do have content.
        let got = read(Path::new("/proc/self"), p("status"), me(), 10);
        assert!(
            matches!(got, Err(SafeError::TooLarge { limit: 10, .. })),
            "{got:?}"
        );
        let got = read(Path::new("/proc/self"), p("status"), me(), MAX_VALUE_FILE);
        assert!(got.unwrap().unwrap().starts_with(b"Name:"));
        assert_ids_restored();
    }

    #[test]
    fn read_checks_permissions_as_owner() {
        if !is_root() {
            return;
        }
        let t = tree();
        let b = t.path();
        let home = b.join("home");
        customer_dir(&home);
        write(&b.join("shadow"), b"root:$6$hash", 0o600);
        // A hard link planted in the customer's dir (as root could have done it).
        fs::hard_link(b.join("shadow"), home.join("shadow-link")).unwrap();
        write(&b.join("grp"), b"group readable", 0o640);
        chown(b.join("grp"), Some(0), Some(CUSTOMER.gid)).unwrap();
        write(&home.join("mine"), b"customer data", 0o600);
        chown(home.join("mine"), Some(CUSTOMER.uid), Some(CUSTOMER.gid)).unwrap();

        let cases: &[(&str, Want)] = &[
            ("shadow", Want::Denied),
            ("home/shadow-link", Want::Denied),
            ("grp", Want::Data(b"group readable")),
            ("home/mine", Want::Data(b"customer data")),
        ];
        for (rel, want) in cases {
            let got = read(b, p(rel), CUSTOMER, MAX_VALUE_FILE);
            assert_ids_restored();
            check(
                b,
                &format!("read {rel:?} as customer"),
                got,
                want,
                Vec::clone,
            );
        }
        // Root reads it; once it belongs to the customer, so do they.
        assert!(
            read(b, p("shadow"), me(), MAX_VALUE_FILE)
                .unwrap()
                .is_some()
        );
        chown(b.join("shadow"), Some(CUSTOMER.uid), Some(CUSTOMER.gid)).unwrap();
        let got = read(b, p("shadow"), CUSTOMER, MAX_VALUE_FILE).unwrap();
        assert_eq!(got.as_deref(), Some(&b"root:$6$hash"[..]));
        assert_ids_restored();
    }

    #[test]
    fn write_atomic_creates_owned_file() {
        if !is_root() {
            return;
        }
        let t = tree();
        let b = t.path();
        customer_dir(&b.join("home"));
        write_atomic(b, p("home/new"), b"v1", CUSTOMER, 0o640).unwrap();
        assert_ids_restored();
        let md = fs::symlink_metadata(b.join("home/new")).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!((md.uid(), md.gid()), (CUSTOMER.uid, CUSTOMER.gid));
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(fs::read(b.join("home/new")).unwrap(), b"v1");
        let names = list_dir(b, p("home")).unwrap().unwrap();
        assert_eq!(names, vec![OsString::from("new")]);
    }

    #[test]
    fn write_atomic_replaces() {
        let t = tree();
        let b = t.path();
        let outside = TempDir::new().unwrap();
        let victim = outside.path().join("victim");
        write(&victim, b"do not touch", 0o644);
        write(&b.join("file"), b"old", 0o644);
        symlink(&victim, b.join("cfg")).unwrap();
        let old_ino = fs::metadata(b.join("file")).unwrap().ino();

        write_atomic(b, p("file"), b"new contents", me(), 0o600).unwrap();
        assert_ids_restored();
        let md = fs::symlink_metadata(b.join("file")).unwrap();
        assert_ne!(
            md.ino(),
            old_ino,
            "must be a new inode (rename), not an in-place write"
        );
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(fs::read(b.join("file")).unwrap(), b"new contents");

        // A symlink at the target name is replaced, never written through.
        write_atomic(b, p("cfg"), b"mine", me(), 0o644).unwrap();
        assert_ids_restored();
        assert!(
            fs::symlink_metadata(b.join("cfg"))
                .unwrap()
                .file_type()
                .is_file()
        );
        assert_eq!(fs::read(b.join("cfg")).unwrap(), b"mine");
        assert_eq!(fs::read(&victim).unwrap(), b"do not touch");

        // Empty contents are fine; no temp files left behind.
        write_atomic(b, p("empty"), b"", me(), 0o644).unwrap();
        let names = list_dir(b, p("")).unwrap().unwrap();
        assert_eq!(names, ["cfg", "empty", "file"].map(OsString::from).to_vec());
    }

    #[test]
    fn write_atomic_errors() {
        let t = tree();
        let b = t.path();
        fs::create_dir(b.join("dir")).unwrap();
        write(&b.join("dir/keep"), b"x", 0o644);
        fs::create_dir(b.join("real")).unwrap();
        symlink("real", b.join("linked")).unwrap();
        write(&b.join("plain"), b"x", 0o644);

        let cases: &[(&str, Want)] = &[
            ("dir", Want::NotRegular),
            ("linked/file", Want::Symlink("linked")),
            ("plain/file", Want::NotDirectory),
            ("../escape", Want::Invalid),
            ("/tmp/escape", Want::Invalid),
            ("", Want::Invalid),
        ];
        for (rel, want) in cases {
            let got = write_atomic(b, p(rel), b"data", me(), 0o644).map(Some);
            assert_ids_restored();
            check(b, &format!("write {rel:?}"), got, want, |_| Vec::new());
        }
        let got = write_atomic(b, p("missing/file"), b"data", me(), 0o644);
        assert!(
            matches!(&got, Err(SafeError::Io { source, .. }) if source.kind() == ErrorKind::NotFound),
            "{got:?}"
        );
        // Nothing was created anywhere, in particular no temp files.
        assert_eq!(
            list_dir(b, p("")).unwrap().unwrap(),
            ["dir", "linked", "plain", "real"]
                .map(OsString::from)
                .to_vec()
        );
        assert!(list_dir(b, p("real")).unwrap().unwrap().is_empty());
        assert_eq!(
            list_dir(b, p("dir")).unwrap().unwrap(),
            vec![OsString::from("keep")]
        );
    }

    #[test]
    fn write_as_owner_into_root_dir_is_denied() {
        if !is_root() {
            return;
        }
        let t = tree();
        let b = t.path();
        fs::create_dir(b.join("etc")).unwrap();
        fs::set_permissions(b.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        write(&b.join("etc/existing"), b"root's", 0o644);

        for rel in ["etc/new", "etc/existing", "new-at-base"] {
            let got = write_atomic(b, p(rel), b"evil", CUSTOMER, 0o644).map(Some);
            assert_ids_restored();
            check(b, &format!("write {rel:?}"), got, &Want::Denied, |_| {
                Vec::new()
            });
        }
        let got = symlink_atomic(b, p("etc/ln"), p("/x"), CUSTOMER).map(Some);
        check(b, "symlink as customer", got, &Want::Denied, |_| Vec::new());
        let got = remove_file(b, p("etc/existing"), CUSTOMER).map(Some);
        check(b, "remove as customer", got, &Want::Denied, |_| Vec::new());
        let got = mkdir_all(b, p("etc/sub"), CUSTOMER, 0o755).map(Some);
        check(b, "mkdir as customer", got, &Want::Denied, |_| Vec::new());
        assert_ids_restored();
        assert_eq!(fs::read(b.join("etc/existing")).unwrap(), b"root's");
        assert_eq!(
            list_dir(b, p("etc")).unwrap().unwrap(),
            vec![OsString::from("existing")]
        );
    }

    #[test]
    fn mkdir_all_cases() {
        let root = is_root();
        let owner = if root { CUSTOMER } else { me() };
        let t = tree();
        let b = t.path();
        let home = b.join("home");
        if root {
            customer_dir(&home);
        } else {
            fs::create_dir(&home).unwrap();
        }

        mkdir_all(b, p("home/a/b/c"), owner, 0o2750).unwrap();
        assert_ids_restored();
        for rel in ["home/a", "home/a/b", "home/a/b/c"] {
            let md = fs::symlink_metadata(b.join(rel)).unwrap();
            assert!(md.is_dir(), "{rel}");
            assert_eq!((md.uid(), md.gid()), (owner.uid, owner.gid), "{rel}");
            assert_eq!(md.mode() & 0o7777, 0o2750, "{rel}");
        }
        // Existing directories are left alone.
        fs::set_permissions(b.join("home/a"), fs::Permissions::from_mode(0o700)).unwrap();
        mkdir_all(b, p("home/a/b/c"), owner, 0o755).unwrap();
        mkdir_all(b, p(""), owner, 0o755).unwrap();
        let md = fs::metadata(b.join("home/a")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o700);

        let elsewhere = TempDir::new().unwrap();
        symlink(elsewhere.path(), home.join("ln")).unwrap();
        write(&home.join("file"), b"x", 0o644);
        let cases: &[(&str, Want)] = &[
            ("home/ln", Want::Symlink("home/ln")),
            ("home/ln/x", Want::Symlink("home/ln")),
            ("home/file", Want::NotDirectory),
            ("home/file/x", Want::NotDirectory),
            ("home/../x", Want::Invalid),
            ("/x", Want::Invalid),
        ];
        for (rel, want) in cases {
            let got = mkdir_all(b, p(rel), owner, 0o755).map(Some);
            assert_ids_restored();
            check(b, &format!("mkdir_all {rel:?}"), got, want, |_| Vec::new());
        }
        assert!(
            list_dir(elsewhere.path(), p(""))
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn list_dir_cases() {
        let t = tree();
        let b = t.path();
        let d = b.join("d");
        fs::create_dir(&d).unwrap();
        let weird = OsStr::from_bytes(b"\xff\xfe-not-utf8");
        for name in [OsStr::new("b"), OsStr::new("a"), OsStr::new("C"), weird] {
            write(&d.join(name), b"", 0o644);
        }
        fs::create_dir(d.join("sub")).unwrap();
        symlink("/etc", d.join("ln")).unwrap();
        symlink("d", b.join("dlink")).unwrap();
        write(&b.join("file"), b"", 0o644);

        let got = list_dir(b, p("d")).unwrap().unwrap();
        let want: Vec<OsString> = ["C", "a", "b", "ln", "sub"]
            .iter()
            .map(OsString::from)
            .chain([weird.to_os_string()])
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            list_dir(b, p("")).unwrap().unwrap(),
            ["d", "dlink", "file"].map(OsString::from).to_vec()
        );
        let cases: &[(&str, Want)] = &[
            ("missing", Want::Absent),
            ("missing/x", Want::Absent),
            ("file", Want::NotDirectory),
            ("dlink", Want::Symlink("dlink")),
            ("d/ln", Want::Symlink("d/ln")),
            ("dlink/sub", Want::Symlink("dlink")),
            ("d/..", Want::Invalid),
        ];
        for (rel, want) in cases {
            let got = list_dir(b, p(rel));
            check(b, &format!("list_dir {rel:?}"), got, want, |_| Vec::new());
        }
    }

    #[test]
    fn stat_cases() {
        let t = tree();
        let b = t.path();
        write(&b.join("f"), b"12345", 0o640);
        fs::create_dir(b.join("d")).unwrap();
        symlink("f", b.join("ln")).unwrap();
        symlink("d", b.join("dl")).unwrap();
        nix::unistd::mkfifo(
            &b.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();

        let f = stat(b, p("f")).unwrap().unwrap();
        let md = fs::symlink_metadata(b.join("f")).unwrap();
        assert_eq!(f.kind, Kind::File);
        assert_eq!(f.size, 5);
        assert_eq!(f.mode, md.mode());
        assert_eq!(f.mode & 0o7777, 0o640);
        assert_eq!((f.uid, f.gid, f.nlink), (md.uid(), md.gid(), 1));
        assert_eq!((f.dev, f.ino), (md.dev(), md.ino()));

        let kinds: &[(&str, Kind)] = &[
            ("", Kind::Dir),
            ("d", Kind::Dir),
            ("ln", Kind::Symlink),
            ("dl", Kind::Symlink),
            ("fifo", Kind::Other),
        ];
        for (rel, kind) in kinds {
            assert_eq!(stat(b, p(rel)).unwrap().unwrap().kind, *kind, "{rel}");
        }
        assert_eq!(stat(b, p("missing")).unwrap(), None);
        assert_eq!(stat(b, p("missing/x")).unwrap(), None);
        let got = stat(b, p("dl/x")).map(|_| ());
        assert!(matches!(got, Err(SafeError::Symlink { ref path }) if path == &b.join("dl")));
        let got = stat(b, p("f/x")).map(|_| ());
        assert!(
            matches!(got, Err(SafeError::NotDirectory { .. })),
            "{got:?}"
        );
        let got = stat(b, p("../etc")).map(|_| ());
        assert!(
            matches!(got, Err(SafeError::Io { ref source, .. }) if source.kind() == ErrorKind::InvalidInput)
        );
        let got = stat(&b.join("missing-base"), p("x")).map(|_| ());
        assert!(
            matches!(got, Err(SafeError::Io { ref source, .. }) if source.kind() == ErrorKind::NotFound)
        );
    }

    #[test]
    fn read_link_cases() {
        let t = tree();
        let b = t.path();
        fs::create_dir(b.join("d")).unwrap();
        symlink("/etc/shadow", b.join("d/abs")).unwrap();
        symlink("../rel", b.join("d/rel")).unwrap();
        symlink("d", b.join("dl")).unwrap();
        write(&b.join("d/file"), b"", 0o644);

        assert_eq!(
            read_link(b, p("d/abs")).unwrap(),
            Some(PathBuf::from("/etc/shadow"))
        );
        assert_eq!(
            read_link(b, p("d/rel")).unwrap(),
            Some(PathBuf::from("../rel"))
        );
        assert_eq!(read_link(b, p("dl")).unwrap(), Some(PathBuf::from("d")));
        assert_eq!(read_link(b, p("d/missing")).unwrap(), None);
        assert_eq!(read_link(b, p("missing/x")).unwrap(), None);
        let got = read_link(b, p("d/file"));
        assert!(
            matches!(&got, Err(SafeError::Io { source, .. }) if is_errno(source, libc::EINVAL)),
            "{got:?}"
        );
        let got = read_link(b, p("dl/abs"));
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let long = "x".repeat(1000);
        symlink(&long, b.join("long")).unwrap();
        assert_eq!(read_link(b, p("long")).unwrap(), Some(PathBuf::from(long)));
    }

    #[test]
    fn remove_file_cases() {
        let t = tree();
        let b = t.path();
        let outside = TempDir::new().unwrap();
        let target = outside.path().join("target");
        write(&target, b"keep", 0o644);
        write(&b.join("f"), b"", 0o644);
        symlink(&target, b.join("ln")).unwrap();
        fs::create_dir(b.join("d")).unwrap();
        fs::create_dir(b.join("real")).unwrap();
        write(&b.join("real/f"), b"", 0o644);
        symlink("real", b.join("rl")).unwrap();

        assert!(remove_file(b, p("f"), me()).unwrap());
        assert!(!b.join("f").exists());
        assert!(!remove_file(b, p("f"), me()).unwrap());
        assert!(!remove_file(b, p("missing/f"), me()).unwrap());
        assert!(remove_file(b, p("ln"), me()).unwrap());
        assert!(fs::symlink_metadata(b.join("ln")).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        let got = remove_file(b, p("d"), me());
        assert!(matches!(got, Err(SafeError::NotRegular { .. })), "{got:?}");
        let got = remove_file(b, p("rl/f"), me());
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        assert!(b.join("real/f").exists());
        let got = remove_file(b, p("../x"), me());
        assert!(matches!(got, Err(SafeError::Io { .. })), "{got:?}");
        assert_ids_restored();
    }

    #[test]
    fn symlink_atomic_cases() {
        let root = is_root();
        let owner = if root { CUSTOMER } else { me() };
        let t = tree();
        let b = t.path();
        let home = b.join("home");
        if root {
            customer_dir(&home);
        } else {
            fs::create_dir(&home).unwrap();
        }

        symlink_atomic(b, p("home/current"), p("releases/1"), owner).unwrap();
        assert_ids_restored();
        assert_eq!(
            read_link(b, p("home/current")).unwrap(),
            Some(PathBuf::from("releases/1"))
        );
        let md = fs::symlink_metadata(home.join("current")).unwrap();
        assert_eq!((md.uid(), md.gid()), (owner.uid, owner.gid));

        symlink_atomic(b, p("home/current"), p("/srv/elsewhere/2"), owner).unwrap();
        assert_eq!(
            read_link(b, p("home/current")).unwrap(),
            Some(PathBuf::from("/srv/elsewhere/2"))
        );
        // Replacing a regular file is fine too.
        write(&home.join("file"), b"", 0o644);
        if root {
            lchown(home.join("file"), Some(owner.uid), Some(owner.gid)).unwrap();
        }
        symlink_atomic(b, p("home/file"), p("x"), owner).unwrap();
        assert_eq!(
            read_link(b, p("home/file")).unwrap(),
            Some(PathBuf::from("x"))
        );

        fs::create_dir(home.join("dir")).unwrap();
        let got = symlink_atomic(b, p("home/dir"), p("x"), owner);
        assert!(matches!(got, Err(SafeError::NotRegular { .. })), "{got:?}");
        let got = symlink_atomic(b, p("home/new"), p(""), owner);
        assert!(matches!(got, Err(SafeError::Io { .. })), "{got:?}");
        let got = symlink_atomic(b, p("home/current/x"), p("y"), owner);
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        assert_ids_restored();
        assert_eq!(
            list_dir(b, p("home")).unwrap().unwrap(),
            ["current", "dir", "file"].map(OsString::from).to_vec()
        );
    }

    #[test]
    fn bad_rel_refused_everywhere() {
        let t = tree();
        let b = t.path();
        write(&b.join("f"), b"", 0o644);
        let nul = OsStr::from_bytes(b"a\0b");
        let bad: Vec<&Path> = [
            "../f", "a/../f", "..", "/f", "/", "./f", "a/./f", "a//f", "a/",
        ]
        .iter()
        .map(|s| Path::new(*s))
        .chain([Path::new(nul)])
        .collect();
        for rel in bad {
            let results: Vec<(&str, SafeResult<()>)> = vec![
                ("stat", stat(b, rel).map(drop)),
                ("read", read(b, rel, me(), 10).map(drop)),
                ("list_dir", list_dir(b, rel).map(drop)),
                ("read_link", read_link(b, rel).map(drop)),
                ("mkdir_all", mkdir_all(b, rel, me(), 0o755)),
                ("write_atomic", write_atomic(b, rel, b"x", me(), 0o644)),
                ("symlink_atomic", symlink_atomic(b, rel, p("t"), me())),
                ("remove_file", remove_file(b, rel, me()).map(drop)),
            ];
            for (what, got) in results {
                assert!(
                    matches!(&got, Err(SafeError::Io { source, .. }) if source.kind() == ErrorKind::InvalidInput),
                    "{what}({rel:?}): {got:?}"
                );
            }
            assert_ids_restored();
        }
        assert!(b.join("f").exists());
    }

    #[test]
    fn fsuid_is_per_thread_and_restored() {
        if !is_root() {
            return;
        }
        let (to_main, from_worker) = mpsc::channel();
        let (to_worker, from_main) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let guard = ActingAs::become_owner(CUSTOMER, p("/x")).unwrap();
            to_main.send((current_fsuid(), current_fsgid())).unwrap();
            from_main.recv().unwrap();
            drop(guard);
            (current_fsuid(), current_fsgid())
        });
        let in_worker = from_worker.recv().unwrap();
        assert_eq!(in_worker, (CUSTOMER.uid, CUSTOMER.gid));
        // This thread is unaffected while the worker acts as the customer.
        assert_ids_restored();
        to_worker.send(()).unwrap();
        assert_eq!(worker.join().unwrap(), (0, 0));

        // An impossible owner is refused and nothing leaks.
        let got = read(
            Path::new("/"),
            p("etc/hostname"),
            Owner {
                uid: u32::MAX,
                gid: 0,
            },
            MAX_VALUE_FILE,
        );
        assert!(matches!(got, Err(SafeError::Io { .. })), "{got:?}");
        assert_ids_restored();
    }

    #[test]
    fn supplementary_groups_are_dropped_per_thread() {
        if !is_root() {
            return;
        }
        let t = tree();
        let base = t.path().to_path_buf();
        write(&base.join("rootgrp"), b"root group only", 0o640);
        chown(base.join("rootgrp"), Some(0), Some(0)).unwrap();
        let main_groups = thread_groups().unwrap();
        let worker = std::thread::spawn(move || {
            // Give this thread root's usual supplementary group, as under sudo or a login.
            set_thread_groups(&[0, 4]).unwrap();
            let as_customer = read(&base, p("rootgrp"), CUSTOMER, MAX_VALUE_FILE);
            let after = thread_groups().unwrap();
            let as_root = read(&base, p("rootgrp"), me(), MAX_VALUE_FILE);
            (format!("{as_customer:?}"), after, as_root.is_ok())
        });
        let (as_customer, after, as_root_ok) = worker.join().unwrap();
        assert!(as_customer.contains("PermissionDenied"), "{as_customer}");
        assert_eq!(after, vec![0, 4], "groups not restored");
        assert!(as_root_ok);
        // Other threads never saw any of it.
        assert_eq!(thread_groups().unwrap(), main_groups);
        assert_ids_restored();
    }

    #[test]
    fn open_append_cases() {
        let root = is_root();
        let owner = if root { CUSTOMER } else { me() };
        let t = tree();
        let b = t.path();
        let home = b.join("home");
        if root {
            customer_dir(&home);
        } else {
            fs::create_dir(&home).unwrap();
        }
        let outside = TempDir::new().unwrap();
        let victim = outside.path().join("victim");
        write(&victim, b"untouched", 0o666);

        let mut f = open_append(b, p("home/access.log"), owner, 0o640).unwrap();
        assert_ids_restored();
        f.write_all(b"line 1\n").unwrap();
        drop(f);
        let mut f = open_append(b, p("home/access.log"), owner, 0o600).unwrap();
        f.write_all(b"line 2\n").unwrap();
        drop(f);
        assert_eq!(
            fs::read(home.join("access.log")).unwrap(),
            b"line 1\nline 2\n"
        );
        let md = fs::metadata(home.join("access.log")).unwrap();
        assert_eq!((md.uid(), md.gid()), (owner.uid, owner.gid));
        assert_eq!(md.mode() & 0o7777, 0o640, "mode only applies on creation");

        symlink(&victim, home.join("link.log")).unwrap();
        symlink(outside.path(), home.join("dirlink")).unwrap();
        nix::unistd::mkfifo(
            &home.join("fifo.log"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        fs::create_dir(home.join("dir.log")).unwrap();
        let cases: &[(&str, Want)] = &[
            ("home/link.log", Want::Symlink("home/link.log")),
            ("home/dirlink/victim", Want::Symlink("home/dirlink")),
            ("home/fifo.log", Want::NotRegular),
            ("home/dir.log", Want::NotRegular),
            ("home/../x", Want::Invalid),
        ];
        for (rel, want) in cases {
            let got = open_append(b, p(rel), owner, 0o644).map(Some);
            assert_ids_restored();
            check(b, &format!("open_append {rel:?}"), got, want, |_| {
                Vec::new()
            });
        }
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        let got = open_append(b, p("home/missing/x.log"), owner, 0o644);
        assert!(
            matches!(&got, Err(SafeError::Io { source, .. }) if source.kind() == ErrorKind::NotFound),
            "{got:?}"
        );
        if root {
            write(&b.join("rootlog"), b"", 0o644);
            let got = open_append(b, p("rootlog"), CUSTOMER, 0o644).map(Some);
            check(b, "open_append root's file", got, &Want::Denied, |_| {
                Vec::new()
            });
            assert_ids_restored();
        }
    }

    #[test]
    fn temp_names_are_unique() {
        let a = temp_name().unwrap();
        let b = temp_name().unwrap();
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().starts_with(".dirhost-tmp-"));
    }

    /// Mounts (root only) an overlay file system with `xino=on` over two tmpfs layers: the
    /// kernel then reports inode numbers with the top bits set (above 2^63), as btrfs, XFS
    /// and NFS servers can. The 32-bit `stat`/`readdir` fail with EOVERFLOW on those (a
    /// Raspberry Pi's 32-bit OS); run this test under `qemu-arm` for armhf to see it.
    /// Unmounted on drop.
    struct LargeInodeFs {
        dir: TempDir,
    }

    impl LargeInodeFs {
        fn mount() -> Self {
            let dir = tree();
            let d = dir.path();
            let run = |args: &[&str]| {
                let st = std::process::Command::new(args[0])
                    .args(&args[1..])
                    .status()
                    .unwrap();
                assert!(st.success(), "{args:?}");
            };
            for sub in ["lower", "upper", "merged"] {
                fs::create_dir(d.join(sub)).unwrap();
            }
            let (l, u, m) = (d.join("lower"), d.join("upper"), d.join("merged"));
            run(&["mount", "-t", "tmpfs", "tmpfs", l.to_str().unwrap()]);
            run(&["mount", "-t", "tmpfs", "tmpfs", u.to_str().unwrap()]);
            fs::create_dir(u.join("up")).unwrap();
            fs::create_dir(u.join("work")).unwrap();
            fs::create_dir_all(l.join("domain/config")).unwrap();
            fs::write(l.join("domain/config/ip"), "192.0.2.1\n").unwrap();
            let opts = format!(
                "lowerdir={},upperdir={},workdir={},xino=on",
                l.display(),
                u.join("up").display(),
                u.join("work").display()
            );
            run(&[
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts,
                m.to_str().unwrap(),
            ]);
            Self { dir }
        }

        fn merged(&self) -> PathBuf {
            self.dir.path().join("merged")
        }
    }

    impl Drop for LargeInodeFs {
        fn drop(&mut self) {
            for sub in ["merged", "upper", "lower"] {
                let _ = std::process::Command::new("umount")
                    .arg(self.dir.path().join(sub))
                    .status();
            }
        }
    }

    #[test]
    fn inode_numbers_above_32_bits_work() {
        assert!(is_root(), "the tests run as root (scripts/test.sh)");
        let fsys = LargeInodeFs::mount();
        let base = fsys.merged();
        let st = stat(&base, p("domain/config/ip")).unwrap().unwrap();
        assert!(
            st.ino > u64::from(u32::MAX),
            "inode {} is not large",
            st.ino
        );
        assert_eq!(st.kind, Kind::File);
        assert_eq!(
            read(&base, p("domain/config/ip"), me(), MAX_VALUE_FILE)
                .unwrap()
                .unwrap(),
            b"192.0.2.1\n"
        );
        let names = list_dir(&base, p("domain")).unwrap().unwrap();
        assert_eq!(names, [OsString::from("config")]);
        mkdir_all(&base, p("domain/public/htdocs"), me(), 0o755).unwrap();
        write_atomic(&base, p("domain/public/htdocs/x"), b"y", me(), 0o644).unwrap();
        assert_eq!(list_dir(&base, p("domain")).unwrap().unwrap().len(), 2);
    }

    /// A domain-like tree for the handle tests: `b/dom` owned by the test owner, with files
    /// of every hostile kind below it. Returns the owner the reads act as.
    fn handle_tree(b: &Path, outside: &Path) -> Owner {
        let root = is_root();
        let dom = b.join("dom");
        if root {
            customer_dir(&dom);
        } else {
            fs::create_dir(&dom).unwrap();
        }
        write(&outside.join("secret"), b"secret", 0o644);
        fs::create_dir(dom.join("config")).unwrap();
        write(&dom.join("config/ip"), b"192.0.2.1\n", 0o644);
        write(&dom.join("config/twelve"), b"0123456789ab", 0o644);
        // Owned by the test process (root in CI), readable by nobody else.
        write(&dom.join("config/rootonly"), b"root", 0o600);
        symlink(outside, dom.join("linked")).unwrap();
        symlink("config", dom.join("config-link")).unwrap();
        symlink("nowhere", dom.join("config/dangling")).unwrap();
        symlink("ip", dom.join("config/ip-link")).unwrap();
        nix::unistd::mkfifo(
            &dom.join("config/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        if root {
            let dev = CString::new(dom.join("config/null").as_os_str().as_bytes()).unwrap();
            // SAFETY: valid path; creates a char device like /dev/null.
            let r =
                unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
            assert_eq!(r, 0, "mknod: {}", io::Error::last_os_error());
            CUSTOMER
        } else {
            me()
        }
    }

    /// (rel below `dom`, limit, expected): the same for the free functions, a [`Dir`], a
    /// batch of [`AsOwner`] reads and a [`LazyDir`].
    fn handle_cases() -> Vec<(&'static str, u64, Want)> {
        let mut cases = vec![
            ("config/ip", MAX_VALUE_FILE, Want::Data(b"192.0.2.1\n")),
            ("config/twelve", 12, Want::Data(b"0123456789ab")),
            ("config/twelve", 11, Want::TooLarge),
            ("config/missing", MAX_VALUE_FILE, Want::Absent),
            ("missing/ip", MAX_VALUE_FILE, Want::Absent),
            ("linked/secret", MAX_VALUE_FILE, Want::Symlink("dom/linked")),
            (
                "config-link/ip",
                MAX_VALUE_FILE,
                Want::Symlink("dom/config-link"),
            ),
            (
                "config/dangling",
                MAX_VALUE_FILE,
                Want::Symlink("dom/config/dangling"),
            ),
            (
                "config/ip-link",
                MAX_VALUE_FILE,
                Want::Symlink("dom/config/ip-link"),
            ),
            ("config/fifo", MAX_VALUE_FILE, Want::NotRegular),
            ("config", MAX_VALUE_FILE, Want::NotRegular),
            ("config/ip/x", MAX_VALUE_FILE, Want::NotDirectory),
            ("../dom/config/ip", MAX_VALUE_FILE, Want::Invalid),
            ("config//ip", MAX_VALUE_FILE, Want::Invalid),
            ("", MAX_VALUE_FILE, Want::Invalid),
        ];
        if is_root() {
            cases.push(("config/null", MAX_VALUE_FILE, Want::NotRegular));
            // Read as the customer, a file only root may read is refused.
            cases.push(("config/rootonly", MAX_VALUE_FILE, Want::Denied));
        } else {
            cases.push(("config/rootonly", MAX_VALUE_FILE, Want::Data(b"root")));
        }
        cases
    }

    #[test]
    fn dir_handle_read_table() {
        let t = tree();
        let b = t.path();
        let outside = TempDir::new().unwrap();
        let owner = handle_tree(b, outside.path());
        let dir = Dir::open(b, p("dom")).unwrap().unwrap();
        assert_eq!(dir.path(), b.join("dom"));
        let lazy = LazyDir::new(b, p("dom"));
        let base = Dir::open_base(b).unwrap();
        let below = LazyDir::below(&base, p("dom"));
        let one_batch = dir.as_owner(owner);
        for (rel, limit, want) in &handle_cases() {
            let what = |how: &str| format!("{how} {rel:?} limit {limit}");
            let free_rel = if rel.is_empty() {
                PathBuf::from("dom/")
            } else {
                Path::new("dom").join(rel)
            };
            let got = read(b, &free_rel, owner, *limit);
            assert_ids_restored();
            check(b, &what("read"), got, want, Vec::clone);
            let got = dir.read(p(rel), owner, *limit);
            assert_ids_restored();
            check(b, &what("Dir::read"), got, want, Vec::clone);
            let got = lazy.read(p(rel), owner, *limit);
            assert_ids_restored();
            check(b, &what("LazyDir::read"), got, want, Vec::clone);
            let got = below.as_owner(owner).read(p(rel), *limit);
            assert_ids_restored();
            check(b, &what("LazyDir::below"), got, want, Vec::clone);
            {
                let batch = dir.as_owner(owner);
                check(
                    b,
                    &what("AsOwner::read"),
                    batch.read(p(rel), *limit),
                    want,
                    Vec::clone,
                );
            }
            assert_ids_restored();
            let got = lazy.as_owner(owner).read(p(rel), *limit);
            assert_ids_restored();
            check(b, &what("LazyDir::as_owner"), got, want, Vec::clone);
            // open_read: the same checks, no limit.
            let want_open = match want {
                Want::TooLarge => &Want::Data(b"0123456789ab"),
                w => w,
            };
            let read_all = |f: &File| {
                let mut v = Vec::new();
                (&*f).read_to_end(&mut v).unwrap();
                v
            };
            let got = dir.open_read(p(rel), owner);
            assert_ids_restored();
            check(b, &what("Dir::open_read"), got, want_open, read_all);
            let got = dir.as_owner(owner).open_read(p(rel));
            assert_ids_restored();
            check(b, &what("AsOwner::open_read"), got, want_open, read_all);
        }
        // One batch for the whole table: errors do not end it or leak anything.
        for (rel, limit, want) in &handle_cases() {
            let got = one_batch.read(p(rel), *limit);
            check(
                b,
                &format!("one batch {rel:?} {limit}"),
                got,
                want,
                Vec::clone,
            );
            if is_root() {
                assert_eq!((current_fsuid(), current_fsgid()), (owner.uid, owner.gid));
            }
        }
        drop(one_batch);
        assert_ids_restored();
    }

    #[test]
    fn dir_handle_stat_list_and_links() {
        let t = tree();
        let b = t.path();
        let outside = TempDir::new().unwrap();
        handle_tree(b, outside.path());
        write(&b.join("plain"), b"", 0o644);
        symlink("dom", b.join("dom-link")).unwrap();
        let dir = Dir::open(b, p("dom")).unwrap().unwrap();

        // Opening: like list_dir, a symlink or a non-directory anywhere is refused.
        let got = Dir::open(b, p("dom-link")).map(|_| ());
        assert!(
            matches!(got, Err(SafeError::Symlink { ref path }) if *path == b.join("dom-link")),
            "{got:?}"
        );
        let got = Dir::open(b, p("plain")).map(|_| ());
        assert!(
            matches!(got, Err(SafeError::NotDirectory { .. })),
            "{got:?}"
        );
        assert!(Dir::open(b, p("missing")).unwrap().is_none());
        let got = dir.open_dir(p("config-link")).map(|_| ());
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let got = dir.open_dir(p("linked/x")).map(|_| ());
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let got = Dir::open(b, p("../x")).map(|_| ());
        assert!(
            matches!(got, Err(SafeError::Io { ref source, .. }) if source.kind() == ErrorKind::InvalidInput),
            "{got:?}"
        );
        let config = dir.open_dir(p("config")).unwrap().unwrap();
        assert_eq!(config.path(), b.join("dom/config"));

        // The same answers as the free functions.
        for rel in [
            "",
            "config",
            "config/ip",
            "config/dangling",
            "config/fifo",
            "linked",
            "missing",
            "missing/x",
        ] {
            let free_rel = match rel {
                "" => PathBuf::from("dom"),
                rel => Path::new("dom").join(rel),
            };
            let free = stat(b, &free_rel).map_err(|e| e.to_string());
            let via = dir.stat(p(rel)).map_err(|e| e.to_string());
            assert_eq!(free, via, "stat {rel:?}");
        }
        let got = dir.stat(p("linked/secret")).map(|_| ());
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let names = |v: Option<Vec<OsString>>| {
            v.map(|v| {
                v.into_iter()
                    .map(|n| n.into_string().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            names(dir.list_dir(p("")).unwrap()).unwrap(),
            ["config", "config-link", "linked"]
        );
        // Listing the handle twice works (each listing has its own position).
        assert_eq!(dir.list_dir(p("")).unwrap().unwrap().len(), 3);
        assert_eq!(
            config.list_dir(p("")).unwrap(),
            list_dir(b, p("dom/config")).unwrap()
        );
        assert_eq!(dir.list_dir(p("missing")).unwrap(), None);
        let got = dir.list_dir(p("config-link"));
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let got = dir.list_dir(p("config/ip"));
        assert!(
            matches!(got, Err(SafeError::NotDirectory { .. })),
            "{got:?}"
        );
        assert_eq!(
            dir.read_link(p("config/dangling")).unwrap(),
            Some(PathBuf::from("nowhere"))
        );
        assert_eq!(
            config.read_link(p("ip-link")).unwrap(),
            Some(PathBuf::from("ip"))
        );
        assert_eq!(dir.read_link(p("config/missing")).unwrap(), None);
        let got = dir.read_link(p("config-link/ip-link"));
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let got = dir.read_link(p("config/ip"));
        assert!(
            matches!(&got, Err(SafeError::Io { source, .. }) if is_errno(source, libc::EINVAL)),
            "{got:?}"
        );

        // A lazy handle of a missing directory: everything absent, nothing opened.
        let lazy = LazyDir::new(b, p("gone"));
        assert!(lazy.get().unwrap().is_none());
        assert_eq!(lazy.stat(p("x")).unwrap(), None);
        assert_eq!(lazy.list_dir(p("")).unwrap(), None);
        assert_eq!(lazy.read_link(p("x")).unwrap(), None);
        assert_eq!(lazy.read(p("x"), me(), 10).unwrap(), None);
        assert_eq!(lazy.as_owner(me()).read(p("x"), 10).unwrap(), None);
        // ... and of a symlink: refused at every use.
        let base = Dir::open_base(b).unwrap();
        for lazy in [
            LazyDir::new(b, p("dom-link")),
            LazyDir::below(&base, p("dom-link")),
        ] {
            for _ in 0..2 {
                let got = lazy.read(p("config/ip"), me(), 10);
                assert!(
                    matches!(&got, Err(SafeError::Symlink { path }) if *path == b.join("dom-link")),
                    "{got:?}"
                );
            }
        }
        assert_ids_restored();
    }

    /// The handle keeps reading the directory it opened, whatever is put at its path since.
    #[test]
    fn dir_handle_outlives_a_swapped_path() {
        let t = tree();
        let b = t.path();
        fs::create_dir_all(b.join("dom/config")).unwrap();
        write(&b.join("dom/config/ip"), b"one", 0o644);
        fs::create_dir_all(b.join("other/config")).unwrap();
        write(&b.join("other/config/ip"), b"other", 0o644);
        let dir = Dir::open(b, p("dom")).unwrap().unwrap();
        let lazy = LazyDir::new(b, p("dom"));
        assert!(lazy.get().unwrap().is_some());
        let config = dir.open_dir(p("config")).unwrap().unwrap();

        // Renamed away and replaced by a symlink to another directory.
        fs::rename(b.join("dom"), b.join("moved")).unwrap();
        symlink("other", b.join("dom")).unwrap();
        for (how, got) in [
            ("Dir", dir.read(p("config/ip"), me(), 10)),
            ("LazyDir", lazy.read(p("config/ip"), me(), 10)),
            ("sub-Dir", config.read(p("ip"), me(), 10)),
            ("batch", dir.as_owner(me()).read(p("config/ip"), 10)),
        ] {
            assert_eq!(got.unwrap().unwrap(), b"one", "{how}");
        }
        // A fresh walk refuses the symlink.
        let got = read(b, p("dom/config/ip"), me(), 10);
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        let got = Dir::open(b, p("dom")).map(|_| ());
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");

        // Replaced by a real directory: still the original.
        fs::remove_file(b.join("dom")).unwrap();
        fs::create_dir_all(b.join("dom/config")).unwrap();
        write(&b.join("dom/config/ip"), b"three", 0o644);
        assert_eq!(dir.read(p("config/ip"), me(), 10).unwrap().unwrap(), b"one");
        assert_eq!(
            read(b, p("dom/config/ip"), me(), 10).unwrap().unwrap(),
            b"three"
        );
        assert_eq!(
            dir.stat(p("")).unwrap().unwrap().ino,
            stat(b, p("moved")).unwrap().unwrap().ino
        );
        assert_ids_restored();
    }

    /// A batch switches once, at its first read, stays switched through errors, and
    /// restores on drop, an early return with `?` included; other threads never see it.
    #[test]
    fn as_owner_switches_once_and_restores() {
        if !is_root() {
            return;
        }
        let t = tree();
        let b = t.path().to_path_buf();
        let outside = TempDir::new().unwrap();
        handle_tree(&b, outside.path());
        let worker = std::thread::spawn(move || {
            set_thread_groups(&[0, 4]).unwrap();
            let dir = Dir::open(&b, p("dom")).unwrap().unwrap();
            let batch = dir.as_owner(CUSTOMER);
            let before = (current_fsuid(), current_fsgid(), thread_groups().unwrap());
            assert_eq!(
                batch.read(p("config/ip"), 100).unwrap().unwrap(),
                b"192.0.2.1\n"
            );
            let during = (current_fsuid(), current_fsgid(), thread_groups().unwrap());
            let denied = batch.read(p("config/rootonly"), 100).map(|_| ());
            let symlink = batch.read(p("config/ip-link"), 100).map(|_| ());
            let still = (current_fsuid(), current_fsgid());
            drop(batch);
            let after = (current_fsuid(), current_fsgid(), thread_groups().unwrap());
            // An error path: `?` out of a function holding a batch.
            let early = |dir: &Dir| -> SafeResult<Vec<u8>> {
                let batch = dir.as_owner(CUSTOMER);
                batch.read(p("config/ip"), 100)?;
                batch.read(p("config/fifo"), 100)?;
                unreachable!("the FIFO is refused");
            };
            let early_err = early(&dir).map(|_| ());
            let after_err = (current_fsuid(), current_fsgid(), thread_groups().unwrap());
            (
                before,
                during,
                format!("{denied:?} {symlink:?}"),
                still,
                after,
                format!("{early_err:?}"),
                after_err,
            )
        });
        let (before, during, errs, still, after, early_err, after_err) = worker.join().unwrap();
        assert_eq!(
            before,
            (0, 0, vec![0, 4]),
            "no switch before the first read"
        );
        assert_eq!(during, (CUSTOMER.uid, CUSTOMER.gid, vec![]));
        assert!(
            errs.contains("PermissionDenied") && errs.contains("Symlink"),
            "{errs}"
        );
        assert_eq!(still, (CUSTOMER.uid, CUSTOMER.gid));
        assert_eq!(after, (0, 0, vec![0, 4]));
        assert!(early_err.contains("NotRegular"), "{early_err}");
        assert_eq!(after_err, (0, 0, vec![0, 4]));
        assert_ids_restored();
    }

    /// The owner's permissions are checked on every component from the handle down, and
    /// [`AsOwner::open_dir`] walks as the owner: a root-only directory in between refuses.
    #[test]
    fn owner_reads_check_every_component_below_the_handle() {
        if !is_root() {
            return;
        }
        let t = tree();
        let b = t.path();
        let outside = TempDir::new().unwrap();
        handle_tree(b, outside.path());
        let dom = b.join("dom");
        fs::create_dir_all(dom.join("locked/inner")).unwrap();
        fs::set_permissions(dom.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
        write(
            &dom.join("locked/inner/f"),
            b"behind a root-only directory",
            0o644,
        );
        let dir = Dir::open(b, p("dom")).unwrap().unwrap();

        let denied = |what: &str, got: SafeResult<()>| {
            assert!(
                matches!(&got, Err(SafeError::Io { source, .. }) if source.kind() == ErrorKind::PermissionDenied),
                "{what}: {got:?}"
            );
        };
        denied(
            "read",
            read(b, p("dom/locked/inner/f"), CUSTOMER, 100).map(drop),
        );
        denied(
            "Dir::read",
            dir.read(p("locked/inner/f"), CUSTOMER, 100).map(drop),
        );
        {
            let batch = dir.as_owner(CUSTOMER);
            denied(
                "AsOwner::read",
                batch.read(p("locked/inner/f"), 100).map(drop),
            );
            denied(
                "AsOwner::open_dir",
                batch.open_dir(p("locked/inner")).map(drop),
            );
        }
        assert_ids_restored();

        // A directory opened by the batch: its reads are the batch's, as the owner.
        let batch = dir.as_owner(CUSTOMER);
        let config = batch.open_dir(p("config")).unwrap().unwrap();
        assert_eq!(config.path(), dom.join("config"));
        assert_eq!(
            (current_fsuid(), current_fsgid()),
            (CUSTOMER.uid, CUSTOMER.gid)
        );
        assert_eq!(config.read(p("ip"), 100).unwrap().unwrap(), b"192.0.2.1\n");
        denied("OwnerDir::read", config.read(p("rootonly"), 100).map(drop));
        let got = config.read(p("fifo"), 100);
        assert!(matches!(got, Err(SafeError::NotRegular { .. })), "{got:?}");
        let got = config.read(p("ip-link"), 100);
        assert!(
            matches!(&got, Err(SafeError::Symlink { path }) if *path == dom.join("config/ip-link")),
            "{got:?}"
        );
        let got = config.read(p("twelve"), 11);
        assert!(matches!(got, Err(SafeError::TooLarge { .. })), "{got:?}");
        assert_eq!(config.read(p("missing"), 100).unwrap(), None);
        let got = batch.open_dir(p("config-link")).map(drop);
        assert!(matches!(got, Err(SafeError::Symlink { .. })), "{got:?}");
        assert!(batch.open_dir(p("missing")).unwrap().is_none());
        drop(config);
        drop(batch);
        assert_ids_restored();
    }
}
