//! Sympl's SSL hooks: after new certificate sets went live, every executable in
//! `[acme] hooks_dir` (default `/etc/dirhost/ssl-hooks.d`) whose name matches
//! `^[A-Za-z0-9_-]+$` runs with the argument `live-update` and the changed domains on stdin,
//! one per line, in name order.
//!
//! The runner is shared with the DNS hooks ([`crate::hooks`]); this module only fixes
//! Sympl's contract (argument, time limit). A failing hook is reported and never undoes the
//! certificate change.

use std::path::Path;
use std::time::Duration;

pub use crate::hooks::HookRun;

/// How long one hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every hook in `dir` for `domains`. A missing directory means no hooks.
pub fn run(dir: &Path, domains: &[String]) -> Vec<HookRun> {
    crate::hooks::Hooks {
        dir,
        arg: "live-update",
        env: &[],
        timeout: HOOK_TIMEOUT,
        what: "SSL",
    }
    .run(domains)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn runs_valid_executables_with_the_domains_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let p = dir.path().join("10-record");
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"$1\" >> {0}\ncat >> {0}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runs = run(dir.path(), &["a.test".into(), "b.test".into()]);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].error, None);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "live-update\na.test\nb.test\n"
        );
    }
}
