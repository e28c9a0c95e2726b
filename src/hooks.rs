//! Hook directories: Sympl's `ssl-hooks.d` (after new certificates went live) and dirhost's
//! `dns-hooks.d` (after DNS records changed) share one runner.
//!
//! Contract: every regular executable file directly in the directory whose name matches
//! `^[A-Za-z0-9_-]+$` (run-parts' rule, so `foo.dpkg-old` or `README` never run) runs, in
//! name order, without a shell, with one argument (`live-update`, `dns-update`), the
//! affected names on stdin one per line (stdin is then closed), extra environment variables
//! if the caller gives any, stdout discarded, and stderr kept (first 4 KiB) for the report.
//! A hook that runs longer than the caller's limit is killed and reported. A missing
//! directory means no hooks. Failures are reported, never fatal: what the caller does with
//! them (the DNS state offers the change again; a certificate stays live) is its business.
//!
//! What this module must not do: run anything outside the directory, follow the directory's
//! entries into subdirectories, or block forever.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The outcome of one hook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HookRun {
    /// The hook's file name (or the directory, when it could not be listed).
    pub name: String,
    /// `None` when it exited 0, else what went wrong.
    pub error: Option<String>,
}

/// One run of a hook directory.
#[derive(Debug, Clone, Copy)]
pub struct Hooks<'a> {
    /// The directory (`[acme] hooks_dir`, `[dns] hooks_dir`); empty: no hooks.
    pub dir: &'a Path,
    /// The one argument every hook gets.
    pub arg: &'a str,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a Path)],
    /// How long one hook may run.
    pub timeout: Duration,
    /// For log lines and errors: "SSL", "DNS".
    pub what: &'a str,
}

/// Is `name` a hook name (`^[A-Za-z0-9_-]+$`)?
pub fn hook_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The hooks in `dir`, in name order: executable regular files with a valid name.
pub fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
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
    Ok(names)
}

impl Hooks<'_> {
    /// Runs every hook with `lines` on stdin. Nothing runs when `lines` is empty.
    pub fn run(&self, lines: &[String]) -> Vec<HookRun> {
        if lines.is_empty() || self.dir.as_os_str().is_empty() {
            return Vec::new();
        }
        let names = match list(self.dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "cannot list the {} hooks: {e}", self.what);
                return vec![HookRun {
                    name: self.dir.display().to_string(),
                    error: Some(format!("cannot list the {} hooks: {e}", self.what)),
                }];
            }
        };
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        names
            .into_iter()
            .map(|name| {
                let error = self.run_one(&self.dir.join(&name), &input).err();
                match &error {
                    Some(e) => tracing::error!(hook = %name, "{} hook failed: {e}", self.what),
                    None => tracing::info!(hook = %name, "{} hook ran", self.what),
                }
                HookRun { name, error }
            })
            .collect()
    }

    fn run_one(&self, path: &Path, input: &str) -> Result<(), String> {
        // stderr goes to a temp file, not a pipe: a chatty hook never blocks on a full pipe.
        let errfile = tempfile::tempfile().map_err(|e| format!("no temp file for stderr: {e}"))?;
        let errclone = errfile
            .try_clone()
            .map_err(|e| format!("no temp file for stderr: {e}"))?;
        let mut cmd = Command::new(path);
        cmd.arg(self.arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(errclone));
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("failed to start: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that ignores stdin may close it early: not an error.
            let _ = stdin.write_all(input.as_bytes());
        }
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("killed after {} s", self.timeout.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut err = String::new();
        let mut f = errfile;
        let _ = f.rewind();
        let _ = f.take(4096).read_to_string(&mut err);
        Err(format!("{status}: {}", err.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn runs_valid_executables_in_order_with_arg_stdin_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let record = format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $1 $HOOK_TEST_DIR\" >> {0}\ncat >> {0}\n",
            out.display()
        );
        script(dir.path(), "20-second", &record, 0o755);
        script(dir.path(), "10_first", &record, 0o755);
        script(
            dir.path(),
            "30-fail",
            "#!/bin/sh\necho nope >&2\nexit 3\n",
            0o755,
        );
        script(dir.path(), "not.valid", &record, 0o755);
        script(dir.path(), "noexec", &record, 0o644);
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let env_dir = Path::new("/z");
        let hooks = Hooks {
            dir: dir.path(),
            arg: "live-update",
            env: &[("HOOK_TEST_DIR", env_dir)],
            timeout: Duration::from_secs(10),
            what: "test",
        };
        let runs = hooks.run(&["a.test".into(), "b.test".into()]);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["10_first", "20-second", "30-fail"]);
        assert_eq!((&runs[0].error, &runs[1].error), (&None, &None));
        let err = runs[2].error.as_deref().unwrap();
        assert!(err.contains("nope") && err.contains('3'), "{err}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "10_first live-update /z\na.test\nb.test\n20-second live-update /z\na.test\nb.test\n"
        );
        // Nothing to say, no directory, no directory configured: nothing runs.
        assert!(hooks.run(&[]).is_empty());
        let missing = dir.path().join("missing");
        assert!(
            Hooks {
                dir: &missing,
                ..hooks
            }
            .run(&["a".into()])
            .is_empty()
        );
        assert!(
            Hooks {
                dir: Path::new(""),
                ..hooks
            }
            .run(&["a".into()])
            .is_empty()
        );
    }

    #[test]
    fn a_hanging_hook_is_killed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "hang", "#!/bin/sh\nexec sleep 30\n", 0o755);
        let runs = Hooks {
            dir: dir.path(),
            arg: "dns-update",
            env: &[],
            timeout: Duration::from_millis(200),
            what: "test",
        }
        .run(&["a.test".into()]);
        assert_eq!(runs.len(), 1);
        assert!(
            runs[0].error.as_deref().unwrap().contains("killed after"),
            "{runs:?}"
        );
    }

    #[test]
    fn hook_names_follow_run_parts() {
        for ok in ["10-x", "a_b", "Z9"] {
            assert!(hook_name_ok(ok), "{ok}");
        }
        for bad in ["", "a.sh", "x~", "a b", "über"] {
            assert!(!hook_name_ok(bad), "{bad}");
        }
    }
}
