//! Sympl's SSL hooks: after new certificate sets went live, every executable in
//! `[acme] hooks_dir` (default `/etc/dirhost/ssl-hooks.d`) whose name matches
//! `^[A-Za-z0-9_-]+$` runs with the argument `live-update` and the changed domains on stdin,
//! one per line, in name order.
//!
//! This module owns running them: without a shell, stdin closed after the list, bounded in
//! time (a hook that hangs is killed), output logged. A failing hook is reported and never
//! undoes the certificate change. It must not run anything outside that directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one hook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HookRun {
    /// The hook's file name.
    pub name: String,
    /// `None` when it exited 0, else what went wrong.
    pub error: Option<String>,
}

fn hook_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Runs every hook in `dir` for `domains`. A missing directory means no hooks.
pub fn run(dir: &Path, domains: &[String]) -> Vec<HookRun> {
    if domains.is_empty() || dir.as_os_str().is_empty() {
        return Vec::new();
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), "cannot list SSL hooks: {e}");
            return vec![HookRun {
                name: dir.display().to_string(),
                error: Some(e.to_string()),
            }];
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = std::fs::metadata(e.path()).ok()?;
            (hook_name_ok(&name) && meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .then_some(name)
        })
        .collect();
    names.sort();
    let input: String = domains.iter().map(|d| format!("{d}\n")).collect();
    names
        .into_iter()
        .map(|name| {
            let error = run_one(&dir.join(&name), &input).err();
            if let Some(e) = &error {
                tracing::error!(hook = %name, "SSL hook failed: {e}");
            } else {
                tracing::info!(hook = %name, "SSL hook ran");
            }
            HookRun { name, error }
        })
        .collect()
}

fn run_one(path: &Path, input: &str) -> Result<(), String> {
    let mut child = Command::new(path)
        .arg("live-update")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores stdin may close it early: not an error.
        let _ = stdin.write_all(input.as_bytes());
    }
    let deadline = Instant::now() + HOOK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("{status}: {}", err.trim()));
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {} s", HOOK_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_valid_executables_with_the_domains_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = |name: &str, body: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let record = format!("#!/bin/sh\necho \"$1\" >> {0}\ncat >> {0}\n", out.display());
        script("10-record", &record, 0o755);
        script("20_fail", "#!/bin/sh\necho nope >&2\nexit 3\n", 0o755);
        script("not.valid", &record, 0o755);
        script("noexec", &record, 0o644);
        let runs = run(dir.path(), &["a.test".into(), "b.test".into()]);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["10-record", "20_fail"]);
        assert_eq!(runs[0].error, None);
        assert!(runs[1].error.as_deref().unwrap().contains("nope"));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "live-update\na.test\nb.test\n"
        );
        assert!(run(&dir.path().join("missing"), &["a".into()]).is_empty());
        assert!(run(dir.path(), &[]).is_empty());
    }
}
