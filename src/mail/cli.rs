//! `dirhost mail ...`: the command bodies (the clap definitions are here too; `cli` only
//! routes to [`run`]).
//!
//! Every command that changes something edits /srv as the domain's owner (through `safefs`,
//! or for moving and purging a whole mailbox, through `mv`/`rm` run as the owner), then
//! reconciles that one domain: the tree stays the truth, and Exim and Dovecot follow it
//! exactly as if the owner had made the same change by hand. Passwords are read from
//! standard input (or the terminal, without echo) and never printed or logged.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;

use super::password::{self, Secret};
use super::{Login, MailDomain, MailLayout, validate};
use crate::config::Config;
use crate::model::{self, Domain};
use crate::reconcile::{self, Request};
use crate::safefs;

/// `dirhost mail ...`.
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// List mailboxes and whether they can log in.
    ///
    /// Example: dirhost mail list example.com --json
    List {
        /// Only this domain.
        domain: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Create a mailbox (mailboxes/USER/ with its Maildir and password).
    ///
    /// Example: echo 'a long password' | dirhost mail add alice@example.com --password-stdin
    Add {
        /// USER@DOMAIN.
        address: String,
        /// Read the password from standard input (the first line). Without it, a terminal
        /// is asked twice (no echo); a pipe is read the same way as with it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a mailbox's password (standard input when it is not a terminal).
    ///
    /// Example: dirhost mail passwd alice@example.com
    Passwd {
        /// USER@DOMAIN.
        address: String,
        /// Read the password from standard input even from a terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a mailbox: mail stops at once; its directory is kept as
    /// mailboxes/.USER.removed-TIME unless --purge.
    ///
    /// Example: dirhost mail remove alice@example.com
    Remove {
        /// USER@DOMAIN.
        address: String,
        /// Delete the mailbox and all its mail.
        #[arg(long)]
        purge: bool,
    },
    /// Print the DKIM, SPF and DMARC records to publish for a domain.
    ///
    /// Example: dirhost mail dns example.com
    Dns {
        /// The domain.
        domain: String,
    },
    /// Replace plaintext mailbox passwords with SHA-512-crypt hashes (Sympl's
    /// sympl-email-encrypt-passwords), except where config/mailbox-dont-encrypt-passwords.
    ///
    /// Example: dirhost mail encrypt-passwords example.com
    EncryptPasswords {
        /// Only these domains (default: all).
        domains: Vec<String>,
    },
}

/// Runs a mail command; returns the exit code.
pub fn run(cfg: &Config, config_path: &Path, cmd: &MailCommand) -> Result<u8> {
    match cmd {
        MailCommand::List { domain, json } => list(cfg, domain.as_deref(), *json),
        MailCommand::Add {
            address,
            password_stdin,
        } => add(cfg, config_path, address, *password_stdin),
        MailCommand::Passwd {
            address,
            password_stdin,
        } => passwd(cfg, config_path, address, *password_stdin),
        MailCommand::Remove { address, purge } => remove(cfg, config_path, address, *purge),
        MailCommand::Dns { domain } => dns(cfg, config_path, domain),
        MailCommand::EncryptPasswords { domains } => encrypt(cfg, config_path, domains),
    }
}

/// Finds a hosted domain by the name a user typed.
fn find_domain(cfg: &Config, raw: &str) -> Result<Domain> {
    let name = model::validate::domain_name(&raw.to_lowercase())
        .with_context(|| format!("{raw:?} is not a domain name"))?;
    let only: BTreeSet<String> = [name.clone()].into();
    let m = model::load_scoped(&cfg.paths.srv, Some(&only), reconcile::now())?;
    if let Some(d) = m.domains.get(&name) {
        return Ok(d.clone());
    }
    // An alias name: its target is loaded too; mailboxes live in the target.
    if let Some(d) = m.domains.values().find(|d| d.aliases.contains(&name)) {
        return Ok(d.clone());
    }
    match m.skipped_reason(&name) {
        Some(why) => bail!("{name} is not usable: {why}"),
        None => bail!(
            "{name} is not hosted here: no directory {}",
            cfg.paths.srv.join(&name).display()
        ),
    }
}

fn mail_domain(cfg: &Config, d: &Domain) -> Result<Option<MailDomain>> {
    let mut m = model::Model::default();
    m.domains.insert(d.name.clone(), d.clone());
    let mut mail = super::load(&cfg.paths.srv, &m, &cfg.mail.hostname(cfg));
    if let Some(why) = mail.failed.remove(&d.name) {
        bail!("{}: {why}", d.name);
    }
    Ok(mail.domains.remove(&d.name))
}

fn parse_address(cfg: &Config, raw: &str) -> Result<(String, Domain)> {
    let (local, domain) = validate::address(raw).map_err(anyhow::Error::msg)?;
    Ok((local, find_domain(cfg, &domain)?))
}

fn rel(d: &Domain, parts: &[&str]) -> PathBuf {
    parts
        .iter()
        .fold(PathBuf::from(&d.dir_name), |p, s| p.join(s))
}

fn add(cfg: &Config, config_path: &Path, address: &str, from_stdin: bool) -> Result<u8> {
    let (local, d) = parse_address(cfg, address)?;
    let srv = &cfg.paths.srv;
    let owner = d.owner();
    let what = format!("{local}@{}", d.name);
    if safefs::stat(srv, &rel(&d, &["mailboxes", &local]))
        .with_context(|| format!("{what}: cannot check the mailbox"))?
        .is_some()
    {
        bail!("{what} already exists (use `dirhost mail passwd {what}`)");
    }
    let secret = read_new_password(from_stdin)?;
    for (dir, mode) in [
        (rel(&d, &["mailboxes"]), 0o755),
        (rel(&d, &["mailboxes", &local]), 0o755),
        (rel(&d, &["mailboxes", &local, "Maildir"]), 0o700),
        (rel(&d, &["mailboxes", &local, "Maildir", "new"]), 0o700),
        (rel(&d, &["mailboxes", &local, "Maildir", "cur"]), 0o700),
        (rel(&d, &["mailboxes", &local, "Maildir", "tmp"]), 0o700),
    ] {
        safefs::mkdir_all(srv, &dir, owner, mode)
            .with_context(|| format!("{what}: failed to create {}", dir.display()))?;
    }
    write_password(cfg, &d, &local, &secret)?;
    println!("created {what}");
    apply_domain(cfg, config_path, &d)
}

fn passwd(cfg: &Config, config_path: &Path, address: &str, from_stdin: bool) -> Result<u8> {
    let (local, d) = parse_address(cfg, address)?;
    let what = format!("{local}@{}", d.name);
    require_mailbox(cfg, &d, &local, &what)?;
    let secret = read_new_password(from_stdin)?;
    write_password(cfg, &d, &local, &secret)?;
    println!("password of {what} changed");
    apply_domain(cfg, config_path, &d)
}

fn require_mailbox(cfg: &Config, d: &Domain, local: &str, what: &str) -> Result<()> {
    match safefs::stat(&cfg.paths.srv, &rel(d, &["mailboxes", local]))
        .with_context(|| format!("{what}: cannot check the mailbox"))?
    {
        Some(s) if s.kind == safefs::Kind::Dir => Ok(()),
        Some(_) => bail!("{what}: mailboxes/{local} is not a directory"),
        None => bail!("{what} does not exist (`dirhost mail add {what}` creates it)"),
    }
}

fn write_password(cfg: &Config, d: &Domain, local: &str, secret: &Secret) -> Result<()> {
    let what = format!("{local}@{}", d.name);
    let keep_plain = safefs::read(
        &cfg.paths.srv,
        &rel(d, &["config", "mailbox-dont-encrypt-passwords"]),
        d.owner(),
        safefs::MAX_VALUE_FILE,
    )
    .ok()
    .flatten()
    .and_then(|b| model::validate::Flag::parse(Some(&b)).ok())
    .is_some_and(|f| f.is_on());
    let text = if keep_plain {
        format!("{}\n", secret.expose())
    } else {
        format!("{{CRYPT}}{}\n", password::sha512_crypt(secret)?)
    };
    safefs::write_atomic(
        &cfg.paths.srv,
        &rel(d, &["mailboxes", local, "password"]),
        text.as_bytes(),
        d.owner(),
        0o600,
    )
    .with_context(|| format!("{what}: failed to write the password file"))
}

/// Reads a new password: from standard input (first line) when asked to or when it is not a
/// terminal; otherwise from the terminal, twice, without echo.
fn read_new_password(from_stdin: bool) -> Result<Secret> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("failed to read the password from standard input")?;
        return password::check_new(&line);
    }
    let first = prompt_hidden("New password: ")?;
    let second = prompt_hidden("Again: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    password::check_new(&first)
}

fn prompt_hidden(prompt: &str) -> Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password (use --password-stdin)")?;
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr on an open fd.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the life of `tty`; `old` is a valid termios.
    if unsafe { libc::tcgetattr(fd, &mut old) } != 0 {
        bail!("cannot read the terminal's settings");
    }
    let mut quiet = old;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above; `quiet` is a modified copy of the terminal's own settings.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut w = &tty;
    let _ = w.write_all(prompt.as_bytes());
    let _ = w.flush();
    let mut line = String::new();
    let res = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: restores the settings read above on the same fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    res.context("failed to read the password")?;
    Ok(line)
}

fn remove(cfg: &Config, config_path: &Path, address: &str, purge: bool) -> Result<u8> {
    let (local, d) = parse_address(cfg, address)?;
    let what = format!("{local}@{}", d.name);
    require_mailbox(cfg, &d, &local, &what)?;
    let from = d.dir.join("mailboxes").join(&local);
    if purge {
        as_owner(&d, "rm", &["-rf", "--one-file-system", "--"], &[&from])
            .with_context(|| format!("{what}: failed to delete {}", from.display()))?;
        println!("removed {what} and all its mail");
    } else {
        let stamp = format_time(reconcile::now());
        let archive = format!(".{local}.removed-{stamp}");
        let to = d.dir.join("mailboxes").join(&archive);
        as_owner(&d, "mv", &["-T", "-n", "--"], &[&from, &to])
            .with_context(|| format!("{what}: failed to move {}", from.display()))?;
        ensure_moved(cfg, &d, &local, &what)?;
        println!(
            "removed {what}; its mail is kept in {} (delete it when it is no longer needed)",
            to.display()
        );
    }
    apply_domain(cfg, config_path, &d)
}

fn ensure_moved(cfg: &Config, d: &Domain, local: &str, what: &str) -> Result<()> {
    if safefs::stat(&cfg.paths.srv, &rel(d, &["mailboxes", local]))?.is_some() {
        bail!("{what}: the mailbox is still there (an archive with the same name exists?)");
    }
    Ok(())
}

/// `YYYYmmddTHHMMSS` (UTC) for archive names.
fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Runs `prog args paths` as the domain's owner (uid, gid, no supplementary groups): it can
/// do exactly what the customer could do by hand, whatever links the tree contains.
fn as_owner(d: &Domain, prog: &str, args: &[&str], paths: &[&Path]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .args(paths)
        .stdin(std::process::Stdio::null());
    if nix::unistd::geteuid().is_root() {
        cmd.uid(d.uid).gid(d.gid).current_dir("/");
    }
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn apply_domain(cfg: &Config, config_path: &Path, d: &Domain) -> Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        // A customer edited their own /srv; reloading is root's (the daemon's) job.
        crate::cli::defer_to_daemon(false);
        return Ok(0);
    }
    super::ensure_dirs(cfg)?;
    let req = Request {
        only: Some([d.name.clone()].into()),
        ..Request::default()
    };
    let report = reconcile::reconcile(cfg, config_path, &req)?;
    let failed = report.failed_domains();
    if failed.is_empty() {
        Ok(0)
    } else {
        for f in &failed {
            eprintln!("dirhost: {f} could not be fully applied; `dirhost apply {f}` shows why");
        }
        Ok(1)
    }
}

#[derive(Serialize)]
struct Row {
    address: String,
    login: String,
    quota: u64,
    forward: bool,
    vacation: bool,
}

fn list(cfg: &Config, domain: Option<&str>, json: bool) -> Result<u8> {
    let model = match domain {
        Some(raw) => {
            let d = find_domain(cfg, raw)?;
            let mut m = model::Model::default();
            m.domains.insert(d.name.clone(), d);
            m
        }
        None => {
            let mut m = model::load(&cfg.paths.srv, reconcile::now())?;
            // A customer lists their own domains' mailboxes, not everyone's.
            let me = nix::unistd::geteuid().as_raw();
            if me != 0 {
                m.domains.retain(|_, d| d.uid == me);
            }
            m
        }
    };
    let mail = super::load(&cfg.paths.srv, &model, &cfg.mail.hostname(cfg));
    let mut rows = Vec::new();
    for m in mail.domains.values() {
        for b in &m.mailboxes {
            rows.push(Row {
                address: format!("{}@{}", b.local, m.name),
                login: match &b.login {
                    Login::Enabled(_) => "enabled".into(),
                    Login::NoPassword => "no password".into(),
                    Login::Disabled(why) => format!("disabled: {why}"),
                },
                quota: b.quota,
                forward: b.forward,
                vacation: b.vacation,
            });
        }
        for (name, why) in &m.refused {
            rows.push(Row {
                address: format!("{name}@{}", m.name),
                login: format!("refused: {why}"),
                quota: 0,
                forward: false,
                vacation: false,
            });
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<40} {:<12} {:<9} LOGIN",
            "ADDRESS", "QUOTA", "FWD/VAC"
        )?;
        for r in &rows {
            let flags = format!(
                "{}{}",
                if r.forward { "F" } else { "-" },
                if r.vacation { "V" } else { "-" }
            );
            let quota = if r.quota == 0 {
                "-".to_string()
            } else {
                r.quota.to_string()
            };
            writeln!(
                out,
                "{:<40} {:<12} {:<9} {}",
                r.address, quota, flags, r.login
            )?;
        }
    }
    for (d, why) in &mail.failed {
        eprintln!("dirhost: {d}: {why}");
    }
    Ok(if mail.failed.is_empty() { 0 } else { 1 })
}

fn dns(cfg: &Config, config_path: &Path, raw: &str) -> Result<u8> {
    let d = find_domain(cfg, raw)?;
    let m = mail_domain(cfg, &d)?;
    let (spf, dmarc, selector) = match &m {
        Some(m) => (m.spf.clone(), m.dmarc.clone(), m.dkim_selector.clone()),
        None => {
            let read = |f: &str| -> model::validate::Flag {
                safefs::read(
                    &cfg.paths.srv,
                    &rel(&d, &["config", f]),
                    d.owner(),
                    safefs::MAX_VALUE_FILE,
                )
                .ok()
                .flatten()
                .and_then(|b| model::validate::Flag::parse(Some(&b)).ok())
                .unwrap_or(model::validate::Flag::Unset)
            };
            (read("spf"), read("dmarc"), None)
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "; DNS records for mail of {}", d.name)?;
    match &selector {
        Some(sel) => {
            let layout = MailLayout::new(cfg);
            let path = layout.dkim_key(&d.name);
            if !path.exists() {
                // The key is made by the reconcile that renders the domain's mail files.
                super::ensure_dirs(cfg)?;
                let req = Request {
                    only: Some([d.name.clone()].into()),
                    ..Request::default()
                };
                reconcile::reconcile(cfg, config_path, &req)?;
            }
            let key = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: no DKIM key yet at {} (does `dirhost apply {}` work?)",
                    d.name,
                    path.display(),
                    d.name
                )
            })?;
            let public = super::dkim::public_key_b64(&key)
                .with_context(|| format!("{}: the DKIM key is unusable", d.name))?;
            let record = super::dkim::dkim_record(&public);
            writeln!(
                out,
                "{}",
                super::dkim::txt(&format!("{sel}._domainkey.{}", d.name), &record)
            )?;
        }
        None => writeln!(
            out,
            "; DKIM: off (create config/dkim to sign outgoing mail)"
        )?,
    }
    // The same rules as `dirhost dns export` (Sympl's): no file, no record.
    match crate::dns::records::spf(&spf) {
        Ok(Some(r)) => writeln!(out, "{}", super::dkim::txt(&d.name, &r))?,
        Ok(None) => writeln!(
            out,
            "; SPF: none (config/spf is absent or false; an empty config/spf publishes {})",
            crate::dns::records::DEFAULT_SPF
        )?,
        Err(why) => {
            eprintln!("dirhost: warning {}: {why}", d.name);
            writeln!(out, "; SPF: none ({why})")?;
        }
    }
    match crate::dns::records::dmarc(&dmarc) {
        Ok(Some(r)) => writeln!(
            out,
            "{}",
            super::dkim::txt(&format!("_dmarc.{}", d.name), &r)
        )?,
        Ok(None) => writeln!(
            out,
            "; DMARC: none (config/dmarc is absent or false; an empty config/dmarc publishes {})",
            crate::dns::records::DEFAULT_DMARC
        )?,
        Err(why) => {
            eprintln!("dirhost: warning {}: {why}", d.name);
            writeln!(out, "; DMARC: none ({why})")?;
        }
    }
    Ok(0)
}

fn encrypt(cfg: &Config, config_path: &Path, domains: &[String]) -> Result<u8> {
    let model = if domains.is_empty() {
        model::load(&cfg.paths.srv, reconcile::now())?
    } else {
        let mut m = model::Model::default();
        for raw in domains {
            let d = find_domain(cfg, raw)?;
            m.domains.insert(d.name.clone(), d);
        }
        m
    };
    let n = super::encrypt_passwords(cfg, &model)?;
    println!("{n} plaintext password(s) replaced by SHA-512-crypt hashes");
    if n == 0 {
        return Ok(0);
    }
    super::ensure_dirs(cfg)?;
    let req = Request {
        only: Some(model.domains.keys().cloned().collect()),
        ..Request::default()
    };
    let report = reconcile::reconcile(cfg, config_path, &req)?;
    Ok(if report.failed_domains().is_empty() {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_time_format() {
        assert_eq!(format_time(0), "19700101T000000");
        assert_eq!(format_time(1_700_000_000), "20231114T221320");
        assert_eq!(format_time(951_782_400), "20000229T000000");
    }
}
