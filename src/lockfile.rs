//! Exclusive lock files in dirhost's state directory: one `flock` helper for the apply lock,
//! the per-domain ACME locks, the DNS state lock and the statistics generator lock.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// A held lock, released when dropped (or when the process exits, however it exits).
#[derive(Debug)]
pub struct FileLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Opens (creating with `mode` if absent; never truncating) and locks `path` exclusively,
/// waiting for the holder to release it.
pub fn exclusive(path: &Path, mode: u32) -> Result<FileLock> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(FileLock)
        .map_err(|(_, e)| e)
        .with_context(|| format!("failed to lock {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = exclusive(&path, 0o600).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let _second = exclusive(&p, 0o600).unwrap();
            tx.send(()).unwrap();
        });
        // Still held: the other thread cannot have it.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(first);
        rx.recv().unwrap();
        t.join().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
