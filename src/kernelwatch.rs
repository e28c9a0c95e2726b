//! dirhost's own inotify watcher behind [`crate::watch::Backend`]: non-recursive watches
//! with exactly the events the daemon uses.
//!
//! notify's inotify watcher also asks for `IN_OPEN` on every watched directory, with no
//! setting to leave it out: every open of a watched directory or of a file in it (Apache's,
//! and dirhost's own reads of `config/` in each pass over the domains) woke its thread, only
//! for the daemon to drop the event (29,380 wakeups while the statistics check read 10,000
//! domains' `config/`). This watcher asks the kernel only for changes: create, delete,
//! rename, modify, attribute changes, and the watched directory itself deleted or moved.
//!
//! Events are delivered as `notify::Event`s with the kinds notify gives them, so `watch`
//! and the daemon read them unchanged. As notify does, a watch is forgotten when its
//! directory is deleted or renamed away (`watch::Tree::refresh` puts back what still
//! exists), and a queue overflow is an event with the `Rescan` flag.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use notify::event::{
    CreateKind, DataChange, Flag, MetadataKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{Event, EventKind};

use crate::watch::{AddError, Backend};

/// What the kernel is asked to report on each watched directory.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

#[derive(Default)]
struct Paths {
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
}

impl Paths {
    fn forget(&mut self, path: &Path) -> Option<WatchDescriptor> {
        let wd = self.by_path.remove(path)?;
        self.by_wd.remove(&wd);
        Some(wd)
    }
}

/// The watcher: watches are added and removed from the caller's thread; a reader thread
/// turns the kernel's events into `notify::Event`s for `handler`.
pub struct Watcher {
    watches: Watches,
    paths: Arc<Mutex<Paths>>,
    /// Written to on drop: wakes the reader thread to end.
    stop: OwnedFd,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Creates the inotify instance and starts the reader thread.
    pub fn new<F>(handler: F) -> std::io::Result<Self>
    where
        F: FnMut(notify::Result<Event>) + Send + 'static,
    {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let paths = Arc::new(Mutex::new(Paths::default()));
        let stop_fd: OwnedFd = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(std::io::Error::from)?
        .into();
        let reader_stop = stop_fd.try_clone()?;
        let reader_paths = Arc::clone(&paths);
        let reader_watches = inotify.watches();
        let reader = std::thread::Builder::new()
            .name("dirhost-inotify".into())
            .spawn(move || {
                read_loop(
                    inotify,
                    reader_watches,
                    &reader_paths,
                    &reader_stop,
                    handler,
                )
            })?;
        Ok(Self {
            watches,
            paths,
            stop: stop_fd,
            reader: Some(reader),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = nix::unistd::write(&self.stop, &1u64.to_ne_bytes());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Backend for Watcher {
    fn watch(&mut self, path: &Path) -> Result<(), AddError> {
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        match self.watches.add(path, mask()) {
            Ok(wd) => {
                if let Some(old) = paths.by_path.insert(path.to_path_buf(), wd.clone())
                    && old != wd
                {
                    paths.by_wd.remove(&old);
                }
                paths.by_wd.insert(wd, path.to_path_buf());
                Ok(())
            }
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => AddError::Limit,
                Some(libc::ENOENT | libc::ENOTDIR) => AddError::Gone,
                _ => AddError::Other(format!("{}: {e}", path.display())),
            }),
        }
    }

    fn unwatch(&mut self, path: &Path) {
        let wd = self
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(path);
        if let Some(wd) = wd {
            // Already gone is fine: the kernel drops a watch whose directory was deleted.
            let _ = self.watches.remove(wd);
        }
    }
}

fn read_loop<F>(
    mut inotify: Inotify,
    mut watches: Watches,
    paths: &Mutex<Paths>,
    stop: &OwnedFd,
    mut handler: F,
) where
    F: FnMut(notify::Result<Event>),
{
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let (ready, stopped) = {
            let mut fds = [
                PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => (
                    fds[0].revents().is_some_and(|r| !r.is_empty()),
                    fds[1].revents().is_some_and(|r| !r.is_empty()),
                ),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    handler(Err(notify::Error::io(e.into())));
                    return;
                }
            }
        };
        if stopped {
            return;
        }
        if !ready {
            continue;
        }
        loop {
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    handler(Err(notify::Error::io(e)));
                    break;
                }
            };
            let mut out = Vec::new();
            let mut drop_watches = Vec::new();
            {
                let mut p = paths.lock().unwrap_or_else(|e| e.into_inner());
                for ev in events {
                    translate(&mut p, ev.wd, ev.mask, ev.name, &mut out, &mut drop_watches);
                }
            }
            for wd in drop_watches {
                let _ = watches.remove(wd);
            }
            for ev in out {
                handler(Ok(ev));
            }
        }
    }
}

/// One kernel event → the `notify::Event`s notify would have made of it (without the
/// access kinds, which are not asked for). Watches of directories deleted or renamed away
/// are forgotten and returned in `drop_watches` (to be removed from the kernel too).
fn translate(
    paths: &mut Paths,
    wd: WatchDescriptor,
    mask: EventMask,
    name: Option<&OsStr>,
    out: &mut Vec<Event>,
    drop_watches: &mut Vec<WatchDescriptor>,
) {
    if mask.contains(EventMask::Q_OVERFLOW) {
        out.push(Event::new(EventKind::Other).set_flag(Flag::Rescan));
        return;
    }
    if mask.contains(EventMask::IGNORED) {
        // The kernel removed the watch (its directory is gone, or we removed it).
        if let Some(path) = paths.by_wd.remove(&wd)
            && paths.by_path.get(&path) == Some(&wd)
        {
            paths.by_path.remove(&path);
        }
        return;
    }
    let Some(dir) = paths.by_wd.get(&wd) else {
        return;
    };
    let path = match name {
        Some(n) => dir.join(n),
        None => dir.clone(),
    };
    let is_dir = mask.contains(EventMask::ISDIR);
    let mut forget = |paths: &mut Paths, p: &Path| {
        if let Some(wd) = paths.forget(p) {
            drop_watches.push(wd);
        }
    };
    let mut push = |kind: EventKind| out.push(Event::new(kind).add_path(path.clone()));
    if mask.contains(EventMask::MOVED_FROM) {
        push(EventKind::Modify(ModifyKind::Name(RenameMode::From)));
    } else if mask.contains(EventMask::MOVED_TO) {
        push(EventKind::Modify(ModifyKind::Name(RenameMode::To)));
    }
    if mask.contains(EventMask::MOVE_SELF) {
        push(EventKind::Modify(ModifyKind::Name(RenameMode::From)));
    }
    if mask.contains(EventMask::CREATE) {
        push(EventKind::Create(if is_dir {
            CreateKind::Folder
        } else {
            CreateKind::File
        }));
    }
    if mask.contains(EventMask::DELETE) {
        push(EventKind::Remove(if is_dir {
            RemoveKind::Folder
        } else {
            RemoveKind::File
        }));
    }
    if mask.contains(EventMask::DELETE_SELF) {
        push(EventKind::Remove(RemoveKind::Folder));
    }
    if mask.contains(EventMask::MODIFY) {
        push(EventKind::Modify(ModifyKind::Data(DataChange::Any)));
    }
    if mask.contains(EventMask::ATTRIB) {
        push(EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)));
    }
    if mask.intersects(EventMask::MOVED_FROM | EventMask::DELETE | EventMask::DELETE_SELF) {
        forget(paths, &path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    type Seen = Vec<(EventKind, PathBuf)>;
    type Case<'a> = (&'a str, Box<dyn Fn()>, Seen);

    fn kinds(rx: &mpsc::Receiver<notify::Result<Event>>) -> Seen {
        let mut out = Vec::new();
        while let Ok(Ok(ev)) = rx.recv_timeout(Duration::from_millis(300)) {
            for p in ev.paths {
                out.push((ev.kind, p));
            }
        }
        // A write may come as one or two modifications (truncate, then data), depending on
        // whether the reader ran in between: the kernel merges only unread repeats.
        out.dedup();
        out
    }

    #[test]
    fn reports_changes_not_opens_and_forgets_removed_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("srv");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("file"), "x").unwrap();
        let (tx, rx) = mpsc::channel();
        let mut w = Watcher::new(move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        w.watch(&d).unwrap();

        // Reading a file and listing the directory: no event at all.
        std::fs::read(d.join("file")).unwrap();
        std::fs::read_dir(&d).unwrap().for_each(drop);
        assert_eq!(kinds(&rx), vec![]);

        // (what is done, the events it must give)
        let sub = d.join("sub");
        let cases: Vec<Case> = vec![
            (
                "mkdir",
                Box::new({
                    let sub = sub.clone();
                    move || std::fs::create_dir(&sub).unwrap()
                }),
                vec![(EventKind::Create(CreateKind::Folder), sub.clone())],
            ),
            (
                "write",
                Box::new({
                    let f = d.join("file");
                    move || std::fs::write(&f, "y").unwrap()
                }),
                vec![(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    d.join("file"),
                )],
            ),
            (
                "rename",
                Box::new({
                    let (a, b) = (d.join("file"), d.join("moved"));
                    move || std::fs::rename(&a, &b).unwrap()
                }),
                vec![
                    (
                        EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                        d.join("file"),
                    ),
                    (
                        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                        d.join("moved"),
                    ),
                ],
            ),
            (
                "chmod",
                Box::new({
                    let f = d.join("moved");
                    move || {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                            .unwrap()
                    }
                }),
                vec![(
                    EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                    d.join("moved"),
                )],
            ),
            (
                "rm",
                Box::new({
                    let f = d.join("moved");
                    move || std::fs::remove_file(&f).unwrap()
                }),
                vec![(EventKind::Remove(RemoveKind::File), d.join("moved"))],
            ),
        ];
        for (what, act, want) in cases {
            act();
            assert_eq!(kinds(&rx), want, "{what}");
        }

        // A watched subdirectory removed: its own deletion is reported and its watch is
        // forgotten (so it can be watched again once it is back).
        w.watch(&sub).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let got = kinds(&rx);
        assert!(
            got.contains(&(EventKind::Remove(RemoveKind::Folder), sub.clone())),
            "{got:?}"
        );
        assert!(!w.paths.lock().unwrap().by_path.contains_key(&sub));
        assert_eq!(w.watch(&sub), Err(AddError::Gone));
        std::fs::create_dir(&sub).unwrap();
        kinds(&rx);
        w.watch(&sub).unwrap();
        std::fs::write(sub.join("f"), "").unwrap();
        assert!(
            kinds(&rx).contains(&(EventKind::Create(CreateKind::File), sub.join("f"))),
            "a watch added again works"
        );
        // Dropping the watcher ends its thread (the test would hang otherwise).
        drop(w);
    }
}
