//! `dirhost stats`: switch a domain's statistics on and off, set its password, generate
//! reports now, list them. Every change is written under /srv as the domain's owner
//! (through `safefs`), then reconciled like any other change to /srv.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;

use super::{FLAG_FILE, PASSWORD_FILE, State, credentials};
use crate::config::Config;
use crate::model::Domain;
use crate::reconcile::{self, Request};
use crate::safefs;

/// `dirhost stats …`.
#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Switch statistics on: sets USER's password (typed, or the first line of stdin),
    /// creates config/stats, applies, and generates the first report.
    ///
    /// Example: echo 's3cret pass' | dirhost stats enable example.com --user alice
    Enable {
        domain: String,
        /// The login for https://DOMAIN/stats/.
        #[arg(long, default_value = "stats")]
        user: String,
    },
    /// Switch statistics off (removes config/stats): the report and the auth file go.
    Disable { domain: String },
    /// Set (or add) USER's password in config/stats-password, as a bcrypt hash.
    Password {
        domain: String,
        #[arg(long, default_value = "stats")]
        user: String,
    },
    /// Generate reports now (every domain whose statistics are on when none is named).
    Generate { domains: Vec<String> },
    /// Every web site's statistics: on, off or no-password (and why), users, last report.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `dirhost stats` command; returns the exit code.
pub fn run(cfg: &Config, config_path: &Path, cmd: StatsCommand) -> Result<u8> {
    match cmd {
        StatsCommand::Enable { domain, user } => {
            let d = domain_of(cfg, &domain)?;
            let password = read_password(&user)?;
            set_password(cfg, &d, &user, &password)?;
            write_owner_file(cfg, &d, FLAG_FILE, b"", 0o644)?;
            let mut code = apply(cfg, config_path, &d)?;
            match super::read(&cfg.paths.srv, &d) {
                State::On { .. } => {
                    println!(
                        "statistics on for {}: https://{}/stats/ (user {user})",
                        d.name, d.name
                    );
                    if d.cert.is_none() {
                        println!(
                            "note: {} has no certificate yet; /stats/ is only served over HTTPS (`dirhost ssl renew {}`)",
                            d.name, d.name
                        );
                    }
                    code = code.max(generate(cfg, std::slice::from_ref(&d.name))?);
                }
                other => {
                    println!(
                        "statistics for {} are still {}: {}",
                        d.name,
                        other.label(),
                        other.reason().unwrap_or("")
                    );
                    code = 1;
                }
            }
            Ok(code)
        }
        StatsCommand::Disable { domain } => {
            let d = domain_of(cfg, &domain)?;
            let rel = config_rel(&d, FLAG_FILE);
            let removed = safefs::remove_file(&cfg.paths.srv, &rel, d.owner())
                .with_context(|| format!("{}: removing config/stats", d.name))?;
            let code = apply(cfg, config_path, &d)?;
            if removed {
                println!(
                    "statistics off for {}: report and auth file removed (config/stats-password kept)",
                    d.name
                );
            } else {
                println!("statistics were already off for {}", d.name);
            }
            Ok(code)
        }
        StatsCommand::Password { domain, user } => {
            let d = domain_of(cfg, &domain)?;
            let password = read_password(&user)?;
            set_password(cfg, &d, &user, &password)?;
            let code = apply(cfg, config_path, &d)?;
            println!("password set for {user} on {}", d.name);
            if let Some(reason) = super::read(&cfg.paths.srv, &d).reason() {
                println!("statistics for {}: {reason}", d.name);
            }
            Ok(code)
        }
        StatsCommand::Generate { domains } => generate(cfg, &domains),
        StatsCommand::List { json } => list(cfg, json),
    }
}

fn domain_of(cfg: &Config, name: &str) -> Result<Domain> {
    let ascii = crate::model::validate::domain_name(&name.to_lowercase())
        .with_context(|| format!("{name:?} is not a domain name"))?;
    let only: BTreeSet<String> = [ascii.clone()].into();
    let mut model = crate::model::load_scoped(&cfg.paths.srv, Some(&only), reconcile::now())?;
    if let Some(reason) = model.skipped_reason(&ascii) {
        bail!("{ascii} is skipped: {reason}");
    }
    let d = model
        .domains
        .remove(&ascii)
        .with_context(|| format!("{ascii}: no such domain in {}", cfg.paths.srv.display()))?;
    if !d.web {
        bail!("{ascii} has no web site (public/htdocs)");
    }
    Ok(d)
}

fn config_rel(d: &Domain, name: &str) -> PathBuf {
    PathBuf::from(&d.dir_name).join("config").join(name)
}

fn write_owner_file(
    cfg: &Config,
    d: &Domain,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<()> {
    let srv = &cfg.paths.srv;
    safefs::mkdir_all(
        srv,
        &PathBuf::from(&d.dir_name).join("config"),
        d.owner(),
        0o755,
    )
    .with_context(|| format!("{}: config/", d.name))?;
    safefs::write_atomic(srv, &config_rel(d, name), contents, d.owner(), mode)
        .with_context(|| format!("{}: writing config/{name}", d.name))
}

fn set_password(cfg: &Config, d: &Domain, user: &str, password: &str) -> Result<()> {
    if !credentials::valid_user(user) {
        bail!("the user name must be 1-64 of A-Z a-z 0-9 . _ @ -");
    }
    let hash = super::bcrypt_hash(cfg, user, password)?;
    let old = safefs::read(
        &cfg.paths.srv,
        &config_rel(d, PASSWORD_FILE),
        d.owner(),
        safefs::MAX_VALUE_FILE,
    )
    .with_context(|| format!("{}: reading config/{PASSWORD_FILE}", d.name))?
    .map(|b| String::from_utf8_lossy(&b).into_owned())
    .unwrap_or_default();
    let text = credentials::set_user(&old, user, &hash);
    write_owner_file(cfg, d, PASSWORD_FILE, text.as_bytes(), 0o600)
}

/// The most of stdin read for a password (more than any password dirhost accepts).
const MAX_STDIN_LINE: u64 = 4096;

/// The password: typed twice without echo on a terminal, else the first line of stdin.
fn read_password(user: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let pw = if stdin.is_terminal() {
        let a = prompt(&format!("Password for {user}: "))?;
        let b = prompt("Again: ")?;
        if a != b {
            bail!("the passwords differ");
        }
        a
    } else {
        // Bounded: stdin may be endless (`< /dev/zero`) or hold no newline at all.
        let mut line = Vec::new();
        stdin
            .lock()
            .take(MAX_STDIN_LINE)
            .read_until(b'\n', &mut line)
            .context("reading the password from stdin")?;
        String::from_utf8(line)
            .map_err(|_| anyhow::anyhow!("the password is not valid UTF-8"))?
            .trim_end_matches(['\n', '\r'])
            .to_string()
    };
    credentials::check_plain(&pw).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pw)
}

fn prompt(text: &str) -> Result<String> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios we own.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let saved = if unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
        let old = t;
        t.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
        Some(old)
    } else {
        None
    };
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    if let Some(old) = saved {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    eprintln!();
    r.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Reconciles one domain and prints what happened; 1 when it failed.
fn apply(cfg: &Config, config_path: &Path, d: &Domain) -> Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        // The owner changed their own config/; reloading is root's, and the daemon does it.
        crate::cli::defer_to_daemon(false);
        return Ok(0);
    }
    let req = Request {
        only: Some([d.name.clone()].into()),
        force: false,
        dry_run: false,
        ..Request::default()
    };
    let report = reconcile::reconcile(cfg, config_path, &req)?;
    for (dom, w) in &report.warnings {
        println!("warning {dom}: {w}");
    }
    for (dom, e) in &report.render_failed {
        println!("failed {dom}: {e}");
    }
    for s in &report.outcome.reloaded {
        println!("reloaded {s:?}");
    }
    Ok(if report.failed_domains().is_empty() {
        0
    } else {
        1
    })
}

fn generate(cfg: &Config, domains: &[String]) -> Result<u8> {
    let only = if domains.is_empty() {
        None
    } else {
        let mut set = BTreeSet::new();
        for n in domains {
            set.insert(
                crate::model::validate::domain_name(&n.to_lowercase())
                    .with_context(|| format!("{n:?} is not a domain name"))?,
            );
        }
        Some(set)
    };
    let results = super::generate(cfg, only.as_ref())?;
    let mut code = 0;
    for r in &results {
        match (&r.summary, &r.error) {
            (Some(s), _) => println!(
                "{}: {} requests, {} visitors ({} - {})",
                r.domain, s.total_requests, s.unique_visitors, s.start_date, s.end_date
            ),
            (None, Some(e)) => {
                println!("{}: failed: {e}", r.domain);
                code = 1;
            }
            (None, None) => {}
        }
    }
    if results.is_empty() {
        println!("no domain has statistics switched on");
    }
    Ok(code)
}

#[derive(Serialize)]
struct Row {
    domain: String,
    state: &'static str,
    reason: Option<String>,
    users: Vec<String>,
    url: Option<String>,
    last: Option<super::Summary>,
}

fn list(cfg: &Config, json: bool) -> Result<u8> {
    let model = crate::model::load(&cfg.paths.srv, reconcile::now())?;
    let port = if cfg.ports.https == 443 {
        String::new()
    } else {
        format!(":{}", cfg.ports.https)
    };
    let rows: Vec<Row> = model
        .domains
        .values()
        .filter(|d| d.web)
        .map(|d| {
            let state = super::read(&cfg.paths.srv, d);
            let users = match &state {
                State::On { users } => users.iter().map(|u| u.user.clone()).collect(),
                _ => Vec::new(),
            };
            Row {
                domain: d.name.clone(),
                state: state.label(),
                reason: state.reason().map(str::to_string),
                users,
                url: state
                    .is_on()
                    .then(|| format!("https://{}{port}/stats/", d.name)),
                last: state
                    .is_on()
                    .then(|| super::last_summary(cfg, &d.name))
                    .flatten(),
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    for r in &rows {
        let last = r
            .last
            .as_ref()
            .map(|s| {
                format!(
                    "{} requests, {} visitors",
                    s.total_requests, s.unique_visitors
                )
            })
            .unwrap_or_else(|| "no report yet".into());
        match r.state {
            "on" => println!(
                "{}  on  {}  users: {}  {last}",
                r.domain,
                r.url.as_deref().unwrap_or(""),
                r.users.join(",")
            ),
            _ => println!(
                "{}  {}  {}",
                r.domain,
                r.state,
                r.reason.as_deref().unwrap_or("")
            ),
        }
    }
    Ok(0)
}
