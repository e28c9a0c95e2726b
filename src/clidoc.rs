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
Something failed: a domain was skipped, refused or left out (the reason was printed), a
permission was missing, or \fBcheck\fR found a problem.
.TP
2
Usage error: a wrong option or argument, an invalid domain name, an unknown domain (with the
closest existing one suggested), an unknown user.
.TP
78
The configuration file is unusable: missing (when given with \fB\-\-config\fR), not TOML, an
unknown key or a bad value (sysexits' EX_CONFIG).
.SH OUTPUT
Results go to standard output (tables, or JSON with \fB\-\-json\fR, whose field names are
stable), diagnostics to standard error. Colour is used only on a terminal. Progress of long
work is shown on standard error, only on a terminal, and not with \fB\-q\fR.
.SH "RUNNING AS A DOMAIN OWNER"
A user who is not root may run dirhost for the domains they own: changes are made in
\fI/srv\fR as that user, and nothing is reloaded; the daemon (\fBdirhost watch\fR) applies
every change to /srv within a second. Other owners' domains are refused. Creating or
removing a domain directory, ordering certificates, \fBwatch\fR and \fBdemo\fR need root.
.SH ENVIRONMENT
.TP
\fBNO_COLOR\fR
When set and not empty, no colour is used.
.TP
\fBDIRHOST_LOG\fR
A tracing filter (e.g. \fIdebug\fR) that replaces the level chosen by \fB\-v\fR/\fB\-q\fR.
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
