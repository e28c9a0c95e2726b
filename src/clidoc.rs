//! Shell completions and man pages, generated from the same clap definitions as the command
//! line itself (`dirhost completions SHELL`, and the hidden `dirhost manpages --dir DIR` that
//! the Debian package build runs).
//!
//! Neither needs a config file or root: both only print what clap knows.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "dirhost", out);
    Ok(())
}

/// Writes `dirhost.1` and one page per visible subcommand (`dirhost-apply.1`,
/// `dirhost-web-list.1`, …) into `dir`, which is created if missing.
pub fn manpages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    write_pages(cmd, dir, true)
}

fn write_pages(cmd: clap::Command, dir: &Path, top: bool) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, false)?;
    }
    let man = clap_mangen::Man::new(cmd).manual("dirhost manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    if top {
        page.extend_from_slice(MAIN_PAGE_EXTRA.as_bytes());
    }
    std::fs::write(&path, page).with_context(|| format!("failed to write {}", path.display()))
}

/// Sections of `dirhost(1)` that clap does not know about.
const MAIN_PAGE_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
Some domain failed: it was skipped or left out, and the reason was printed.
.TP
2
Usage error.
.TP
78
The configuration file is unusable (sysexits' EX_CONFIG).
.SH FILES
.TP
\fI/etc/dirhost/dirhost.toml\fR
The configuration. Every key is optional; the defaults are Debian's.
.TP
\fI/etc/dirhost/templates/\fR
Overrides of the built-in templates, by the same relative name.
.TP
\fI/srv/\fIdomain\fI/\fR
A domain: \fIpublic/htdocs\fR, \fImailboxes/\fR, \fIconfig/\fR, in Sympl's layout.
.TP
\fI/var/lib/dirhost/\fR
State: ACME accounts and challenges, verified certificate copies, mail lookups.
.SH "SEE ALSO"
\fBsystemctl\fR(1) (the daemon is \fIdirhost.service\fR, running \fBdirhost watch\fR),
\fBapache2ctl\fR(8), \fBexim4\fR(8), \fBdoveconf\fR(1)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_knows_the_subcommands() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("apply"), "{text}");
        assert!(text.contains("--dry-run"), "{text}");
    }

    #[test]
    fn man_pages_cover_subcommands_but_not_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        manpages(dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("dirhost.1")).unwrap();
        assert!(main.contains(".SH FILES"), "{main}");
        assert!(dir.path().join("dirhost-apply.1").exists());
        assert!(!dir.path().join("dirhost-log-writer.1").exists());
        assert!(!dir.path().join("dirhost-manpages.1").exists());
    }
}
