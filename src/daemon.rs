//! Keeps the servers in step with /srv until told to stop.
//!
//! Interim: a full reconcile every second until SIGINT/SIGTERM. The inotify watcher (issue 3)
//! replaces the polling with events and dirty-domain batches.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::reconcile::{self, Request};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Reconciles until SIGINT or SIGTERM.
pub fn run_until_signal(cfg: &Config, config_path: &Path) -> Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    while !STOP.load(Ordering::SeqCst) {
        if let Err(e) = reconcile::reconcile(cfg, config_path, &Request::default()) {
            tracing::error!("reconcile failed: {e:#}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}
