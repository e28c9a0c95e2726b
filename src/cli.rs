//! The command line: clap definitions and thin commands that call the pipeline and print.
//!
//! Results go to stdout, diagnostics to stderr (through tracing). Exit codes: 0 ok, 1 some
//! domain failed, 2 usage error, 78 bad config file (sysexits' EX_CONFIG).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::reconcile::{self, Report, Request};

/// Exit code for an unusable configuration file.
pub const EXIT_CONFIG: u8 = 78;

/// dirhost: the directory tree is the interface. `mkdir -p /srv/example.com/public/htdocs`
/// and example.com is served.
#[derive(Debug, Parser)]
#[command(name = "dirhost", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Config file (default /etc/dirhost/dirhost.toml; every key optional).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More output on stderr (-v info, -vv debug, -vvv trace). Colour only on a terminal,
    /// never with NO_COLOR set.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr (no notes, no progress).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring the servers' configuration (Apache, Exim, Dovecot, PHP-FPM) in line with /srv.
    ///
    /// Examples:
    ///   dirhost apply                   # every domain
    ///   dirhost apply example.com       # one domain
    ///   dirhost apply --dry-run --diff  # show what would change, and what hand-edited files miss
    #[command(verbatim_doc_comment)]
    Apply(ApplyArgs),
    /// Web sites.
    ///
    /// Example: dirhost web list --json
    #[command(subcommand)]
    Web(WebCommand),
    /// Certificates: list sets, renew, select a set.
    ///
    /// Examples:
    ///   dirhost ssl list
    ///   dirhost ssl renew example.com --force
    #[command(subcommand, verbatim_doc_comment)]
    Ssl(crate::acme::cli::SslCommand),
    /// Mailboxes: list, add, passwd, remove; DNS records for DKIM, SPF and DMARC.
    ///
    /// Examples:
    ///   dirhost mail add alice@example.com
    ///   dirhost mail list example.com --json
    ///   dirhost mail dns example.com
    #[command(subcommand, verbatim_doc_comment)]
    Mail(crate::mail::cli::MailCommand),
    /// DNS: export every domain's records (A/AAAA, MX, SRV, SPF, DKIM, DMARC, CAA, TLSA) for
    /// OctoDNS, BIND or as JSON.
    ///
    /// Examples:
    ///   dirhost dns export --format bind
    ///   dirhost dns export example.com --format octodns --output /etc/octodns/zones
    #[command(subcommand, verbatim_doc_comment)]
    Dns(crate::dns::cli::DnsCommand),
    /// Web statistics: off by default; on with config/stats and a password, at
    /// https://DOMAIN/stats/.
    ///
    /// Examples:
    ///   dirhost stats enable example.com --user alice
    ///   dirhost stats generate
    ///   dirhost stats list --json
    #[command(subcommand)]
    Stats(crate::stats::cli::StatsCommand),
    /// Run a self-contained sandbox: a private loopback Apache serving a sample /srv tree.
    ///
    /// Example: dirhost demo --dir /tmp/dirhost-demo
    Demo(DemoArgs),
    /// Keep Apache in step with /srv: watch it and reconcile each change as it happens.
    ///
    /// Runs in the foreground (for systemd: Type=notify, it sends READY=1 and honours
    /// WatchdogSec). SIGTERM stops it after the current batch; SIGHUP re-reads the config.
    ///
    /// Example: dirhost watch -v
    Watch,
    /// Domains: create, list, show, remove (the /srv tree stays the truth).
    ///
    /// Examples:
    ///   dirhost site add example.com --owner alice
    ///   dirhost site list --json
    #[command(subcommand, verbatim_doc_comment)]
    Site(SiteCommand),
    /// Find what is wrong, and say how to fix it (exit 1 when anything is).
    ///
    /// Checks: services installed and answering, inotify limits, every domain's names
    /// resolving to this host, certificates (next renewal or last error), domains skipped
    /// and why, hand-edited and out-of-date files. Every finding names its fix.
    ///
    /// Examples:
    ///   dirhost check
    ///   dirhost check example.com --json
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
    /// Print a shell completion script.
    ///
    /// The Debian package installs them. Example, by hand:
    ///   dirhost completions bash > /etc/bash_completion.d/dirhost
    #[command(verbatim_doc_comment)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (dirhost.1, dirhost-apply.1, ...) into DIR (for packaging).
    #[command(hide = true)]
    Manpages {
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Apache's piped access-log writer (run by Apache, not by people).
    #[command(hide = true)]
    LogWriter,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// Domains to reconcile (default: all).
    domains: Vec<String>,
    /// Show what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Show diffs: of every planned change, and of what each hand-edited file is missing.
    #[arg(long)]
    diff: bool,
    /// Replace hand-edited files and re-enable sites an admin disabled.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Create /srv/DOMAIN/public/htdocs (and config/) owned by the customer, with the
    /// skeleton from /etc/dirhost/skel, then serve it.
    ///
    /// Examples:
    ///   dirhost site add example.com --owner alice
    ///   dirhost site add example.com          # as the customer: owned by you
    #[command(verbatim_doc_comment)]
    Add {
        /// The domain.
        domain: String,
        /// The customer's user name or uid (needed when run as root).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List every domain (and the /srv entries that were skipped, with why).
    ///
    /// Example: dirhost site list --json
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one domain.
    ///
    /// Example: dirhost site show example.com
    Show {
        /// The domain.
        domain: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Take a domain offline by moving it to /srv/.dirhost-archive/ (nothing is deleted).
    ///
    /// Example: dirhost site remove example.com
    Remove {
        /// The domain.
        domain: String,
    },
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Domains to check (default: all).
    domains: Vec<String>,
    /// Machine-readable output: an array of findings with `severity`, `check`, `domain`,
    /// `message`, `fix`.
    #[arg(long)]
    json: bool,
    /// Skip DNS lookups.
    #[arg(long)]
    no_dns: bool,
    /// Also list the checks that passed.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum WebCommand {
    /// List the sites and how they are served.
    ///
    /// Example: dirhost web list --json
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Where to build the sandbox (kept afterwards).
    #[arg(long, default_value = "/tmp/dirhost-demo")]
    dir: PathBuf,
    /// Set everything up, reconcile once, print what to try and exit (for scripts).
    #[arg(long)]
    once: bool,
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(&cli.global);
    crate::progress::set_quiet(cli.global.quiet);
    // These only print what clap knows: no config file needed.
    let docs = match &cli.command {
        Command::Completions { shell } => Some(crate::clidoc::completions(
            *shell,
            &mut std::io::stdout().lock(),
        )),
        Command::Manpages { dir } => Some(crate::clidoc::manpages(dir)),
        _ => None,
    };
    if let Some(done) = docs {
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dirhost: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let (cfg, path) = match load_config(&cli.global) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dirhost: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut command = cli.command;
    let quiet = cli.global.quiet;
    let result = match guard(&cfg, &mut command, quiet) {
        Ok(Some(code)) => return ExitCode::from(code),
        Ok(None) => run(cfg, path, command, quiet),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("dirhost: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn run(cfg: Config, path: PathBuf, command: Command, quiet: bool) -> Result<u8> {
    match command {
        Command::Apply(a) => cmd_apply(&cfg, &path, &a),
        Command::Web(WebCommand::List { json }) => cmd_web_list(&cfg, json),
        Command::Ssl(c) => {
            // Certificate orders take seconds each: show that something is happening.
            let _spin = matches!(c, crate::acme::cli::SslCommand::Renew { .. })
                .then(|| crate::progress::Progress::spinner("ordering certificates"));
            crate::acme::cli::run(&cfg, &path, c)
        }
        Command::Mail(m) => crate::mail::cli::run(&cfg, &path, &m),
        Command::Dns(c) => crate::dns::cli::run(&cfg, c),
        Command::Stats(c) => crate::stats::cli::run(&cfg, &path, c),
        Command::Demo(d) => cmd_demo(&d),
        Command::Watch => crate::daemon::run_until_signal(&cfg, &path).map(|()| 0),
        Command::Check(c) => cmd_check(&cfg, &path, &c),
        Command::Site(s) => cmd_site(&cfg, &path, s, quiet),
        Command::LogWriter => crate::logwriter::run(&cfg).map(|()| 0),
        Command::Completions { .. } | Command::Manpages { .. } => {
            anyhow::bail!("internal error: documentation commands are handled before this")
        }
    }
}

/// The exit code for an error: a [`site::NameError`](crate::site::NameError) says (2 for a
/// bad or unknown name, 1 otherwise); anything else is 1.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(n) = cause.downcast_ref::<crate::site::NameError>() {
            return n.exit_code();
        }
        if let Some(crate::site::LookupError::Name(n)) =
            cause.downcast_ref::<crate::site::LookupError>()
        {
            return n.exit_code();
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
    }
    1
}

/// A command line that is wrong in a way clap cannot see (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `None` when running as root; the caller's uid otherwise.
fn caller() -> Option<u32> {
    let uid = nix::unistd::geteuid();
    (!uid.is_root()).then(|| uid.as_raw())
}

/// Prints on stderr (unless -q) that the daemon will apply a change a customer made.
pub fn defer_to_daemon(quiet: bool) {
    if !quiet {
        eprintln!(
            "dirhost: not running as root, so nothing is reloaded here: the dirhost daemon applies the change within a second"
        );
    }
}

/// The domains a user who is not root owns: what "all domains" means for them.
fn own_domains(srv: &Path, uid: u32) -> Result<Vec<String>> {
    let mine = crate::site::owned_by(srv, uid)?;
    if mine.is_empty() {
        anyhow::bail!(
            "you (uid {uid}) own no domain in {}: name one, or run this as root",
            srv.display()
        );
    }
    Ok(mine)
}

fn is_no_such_domain(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::site::LookupError>(),
            Some(crate::site::LookupError::Name(
                crate::site::NameError::NoSuchDomain { .. }
            ))
        )
    })
}

/// Whether dirhost has generated configuration for `name` (a domain or mail alias that may
/// have just left /srv): its vhost or its mail settings.
fn was_generated(cfg: &Config, name: &str) -> bool {
    crate::site::parse_name(name).is_ok_and(|ascii| {
        let site = cfg.paths.apache.join("sites-available");
        let mail = crate::mail::MailLayout::new(cfg).domains_dir;
        site.join(format!("{ascii}.conf")).exists() || mail.join(&ascii).exists()
    })
}

/// Before a command runs: checks every domain it names (exists, else a suggestion; usable,
/// where the command needs that; the caller's own, when not root), and what a user who is
/// not root may do. `Some(code)`: the command is done (it was only for root, and the daemon
/// does the rest).
fn guard(cfg: &Config, command: &mut Command, quiet: bool) -> Result<Option<u8>> {
    use crate::acme::cli::SslCommand;
    use crate::mail::cli::MailCommand;
    let srv = &cfg.paths.srv;
    let user = caller();
    let now = reconcile::now();
    let check = |names: &[String], usable: bool| -> Result<()> {
        for n in names {
            crate::site::check_named(srv, n, usable, user, now)?;
        }
        Ok(())
    };
    let mail_domain = |address: &str| -> Vec<String> {
        address
            .rsplit_once('@')
            .map(|(_, d)| vec![d.to_string()])
            .unwrap_or_default()
    };
    let root_only = |what: &str| -> Result<Option<u8>> {
        match user {
            None => Ok(None),
            Some(uid) => anyhow::bail!(
                "{what} needs root (you are uid {uid}); the dirhost daemon does it by itself"
            ),
        }
    };
    match command {
        Command::Apply(a) => {
            for n in &a.domains {
                match crate::site::check_named(srv, n, false, user, now) {
                    Ok(_) => {}
                    // A domain just removed from /srv: apply takes its configuration down.
                    Err(e) if was_generated(cfg, n) && is_no_such_domain(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(uid) = user {
                if a.domains.is_empty() {
                    a.domains = own_domains(srv, uid)?;
                }
                if !a.dry_run {
                    // Writing the servers' configuration and reloading them is root's; the
                    // daemon does it for every change to /srv.
                    defer_to_daemon(quiet);
                    if !quiet {
                        eprintln!("dirhost: `dirhost apply --dry-run` shows what it will change");
                    }
                    return Ok(Some(0));
                }
            }
        }
        Command::Check(c) => {
            check(&c.domains, false)?;
            if let Some(uid) = user
                && c.domains.is_empty()
            {
                c.domains = own_domains(srv, uid)?;
            }
        }
        Command::Site(SiteCommand::Show { domain, .. }) => {
            check(std::slice::from_ref(domain), true)?
        }
        Command::Site(SiteCommand::Remove { domain }) => {
            check(std::slice::from_ref(domain), false)?
        }
        Command::Site(SiteCommand::Add { owner, .. }) => {
            if let (Some(uid), Some(o)) = (user, owner.as_deref()) {
                let wanted = crate::site::resolve_owner(o)?;
                if wanted.uid != uid {
                    anyhow::bail!(
                        "only root can add a domain for someone else (--owner {o} is uid {}, you are uid {uid})",
                        wanted.uid
                    );
                }
            }
        }
        Command::Ssl(SslCommand::Renew { domains, .. }) => {
            check(domains, true)?;
            return root_only("ordering certificates");
        }
        Command::Ssl(SslCommand::Select { domain, .. }) => {
            check(std::slice::from_ref(domain), true)?;
            return root_only("switching certificate sets");
        }
        Command::Mail(m) => match m {
            MailCommand::List {
                domain: Some(d), ..
            }
            | MailCommand::Dns { domain: d } => check(std::slice::from_ref(d), true)?,
            MailCommand::Add { address, .. } => check(&mail_domain(address), true)?,
            MailCommand::Passwd { address, .. } | MailCommand::Remove { address, .. } => {
                for d in mail_domain(address) {
                    let entry = crate::site::check_named(srv, &d, true, user, now)?;
                    crate::site::check_mailbox(srv, &entry, address)?;
                }
            }
            MailCommand::EncryptPasswords { domains } => {
                check(domains, true)?;
                if let Some(uid) = user
                    && domains.is_empty()
                {
                    *domains = own_domains(srv, uid)?;
                }
            }
            MailCommand::List { domain: None, .. } => {}
        },
        Command::Dns(crate::dns::cli::DnsCommand::Export(a)) => {
            // A name not in /srv is reported by the export itself (exit 1), which still
            // exports the others; invalid names and other owners' domains stop it here.
            for n in &a.domains {
                match crate::site::check_named(srv, n, false, user, now) {
                    Err(e) if is_no_such_domain(&e) => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        Command::Stats(c) => {
            use crate::stats::cli::StatsCommand;
            match c {
                StatsCommand::Enable { domain, .. }
                | StatsCommand::Disable { domain }
                | StatsCommand::Password { domain, .. } => {
                    check(std::slice::from_ref(domain), true)?
                }
                StatsCommand::Generate { domains } => {
                    check(domains, true)?;
                    // Reports are written into dirhost's state directory.
                    return root_only("generating statistics now");
                }
                StatsCommand::List { .. } => {}
            }
        }
        Command::Watch => return root_only("the daemon (dirhost watch)"),
        Command::Demo(_) => return root_only("the demo (its own Apache, Exim and Dovecot)"),
        _ => {}
    }
    Ok(None)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(g: &Global) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DIRHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Colour on `stream`: only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn colour(stream: &impl std::io::IsTerminal) -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream.is_terminal()
}

/// `text` in an ANSI colour (31 red, 33 yellow, 32 green) when `on`.
fn paint(on: bool, code: u8, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn load_config(g: &Global) -> Result<(Config, PathBuf)> {
    let (path, explicit) = match &g.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG_PATH), false),
    };
    let cfg = Config::load(&path, explicit)?;
    let abs = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .context("failed to find the current directory")?
            .join(path)
    };
    Ok((cfg, abs))
}

/// Turns names typed by a user into ASCII domain names, with errors they can act on.
fn domain_args(names: &[String]) -> Result<Option<BTreeSet<String>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeSet::new();
    for n in names {
        out.insert(crate::site::parse_name(n)?);
    }
    Ok(Some(out))
}

fn cmd_apply(cfg: &Config, path: &Path, a: &ApplyArgs) -> Result<u8> {
    let req = Request {
        only: domain_args(&a.domains)?,
        force: a.force,
        dry_run: a.dry_run,
        ..Request::default()
    };
    let report = reconcile::reconcile(cfg, path, &req)?;
    let mut out = std::io::stdout().lock();
    print_report(&mut out, &report, a.dry_run, a.diff)?;
    Ok(if report.failed_domains().is_empty() {
        0
    } else {
        1
    })
}

fn print_report(out: &mut impl Write, r: &Report, dry_run: bool, diff: bool) -> Result<()> {
    let verb = if dry_run { "would" } else { "did" };
    let changes = if dry_run {
        &r.plan.changes
    } else {
        &r.outcome.applied
    };
    for c in changes {
        let what = match &c.action {
            crate::plan::Action::Write { .. } => "write",
            crate::plan::Action::Link { .. } => "link",
            crate::plan::Action::Remove => "remove",
        };
        writeln!(out, "{verb} {what} {}", c.path.display())?;
        if diff && let crate::plan::Action::Write { contents, .. } = &c.action {
            let old = std::fs::read_to_string(&c.path).unwrap_or_default();
            write_diff(out, &c.path, &old, contents)?;
        }
    }
    for n in &r.plan.notices {
        writeln!(out, "kept {}: {}", n.path.display(), n.message)?;
    }
    if diff {
        for (path, wanted) in &r.edited {
            let current = std::fs::read_to_string(path).unwrap_or_default();
            writeln!(
                out,
                "--- what {} is missing (- yours, + dirhost's):",
                path.display()
            )?;
            write_diff(
                out,
                path,
                crate::checksum::body(&current),
                crate::checksum::body(wanted),
            )?;
        }
    }
    for s in &r.skipped {
        writeln!(out, "skipped {}: {}", s.name, s.reason)?;
    }
    for (d, e) in &r.render_failed {
        writeln!(out, "failed {d}: {e}")?;
    }
    for (d, e) in &r.outcome.culprits {
        writeln!(
            out,
            "left out {d}: its configuration was refused by the server's test, previous configuration kept: {e}"
        )?;
    }
    for (d, w) in &r.warnings {
        writeln!(out, "warning {d}: {w}")?;
    }
    for s in &r.outcome.reloaded {
        writeln!(out, "reloaded {s:?}")?;
    }
    if changes.is_empty() && !dry_run {
        writeln!(out, "nothing to change")?;
    }
    Ok(())
}

fn write_diff(out: &mut impl Write, path: &Path, old: &str, new: &str) -> Result<()> {
    let d = similar::TextDiff::from_lines(old, new);
    let name = path.display().to_string();
    write!(
        out,
        "{}",
        d.unified_diff().context_radius(3).header(&name, &name)
    )?;
    Ok(())
}

#[derive(serde::Serialize)]
struct SiteRow {
    domain: String,
    aliases: Vec<String>,
    ips: Vec<String>,
    mandatory_ssl: bool,
    hsts: bool,
    ssl_provider: crate::model::validate::SslProvider,
    certificate_set: Option<String>,
    certificate_expires: Option<i64>,
    warnings: Vec<String>,
    /// PHP: `{"state": "on"|"off"|"refused", "settings"?, "reason"?, "socket"?}`.
    php: crate::php::Status,
}

fn cmd_web_list(cfg: &Config, json: bool) -> Result<u8> {
    let model = crate::model::load(&cfg.paths.srv, reconcile::now())?;
    let rows: Vec<SiteRow> = model
        .domains
        .values()
        .filter(|d| d.web)
        .map(|d| SiteRow {
            domain: d.name.clone(),
            aliases: d.aliases.clone(),
            ips: d.ips.iter().map(ToString::to_string).collect(),
            mandatory_ssl: d.mandatory_ssl,
            hsts: d.mandatory_ssl && d.hsts,
            ssl_provider: d.ssl_provider,
            certificate_set: d.cert.as_ref().map(|c| c.name.clone()),
            certificate_expires: d.cert.as_ref().map(|c| c.info.not_after),
            warnings: d.warnings.clone(),
            php: crate::php::status(cfg, d),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<32} {:<8} {:<10} ALIASES",
        "DOMAIN", "SSL", "MANDATORY"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<32} {:<8} {:<10} {}",
            r.domain,
            r.certificate_set.as_deref().unwrap_or("-"),
            if r.mandatory_ssl { "yes" } else { "no" },
            r.aliases.join(" ")
        )?;
    }
    Ok(0)
}

/// After a command changed /srv: as root, reconcile the domain now; otherwise the daemon's
/// next reconcile does it (users get no privileges for reloads).
fn reconcile_after(cfg: &Config, path: &Path, domain: &str, quiet: bool) -> Result<u8> {
    if caller().is_some() {
        defer_to_daemon(quiet);
        return Ok(0);
    }
    let ascii = crate::model::validate::domain_name(domain)?;
    let req = Request {
        only: Some(std::iter::once(ascii).collect()),
        ..Request::default()
    };
    let report = reconcile::reconcile(cfg, path, &req)?;
    print_report(&mut std::io::stdout().lock(), &report, false, false)?;
    Ok(if report.failed_domains().is_empty() {
        0
    } else {
        1
    })
}

fn cmd_site(cfg: &Config, path: &Path, cmd: SiteCommand, quiet: bool) -> Result<u8> {
    use crate::site;
    match cmd {
        SiteCommand::Add { domain, owner } => {
            let domain = domain.to_lowercase();
            site::parse_name(&domain)?;
            let owner = match owner {
                Some(o) => site::resolve_owner(&o)?,
                None if caller().is_none() => {
                    return Err(UsageError(
                        "as root, say who owns the domain: --owner USER".into(),
                    )
                    .into());
                }
                None => crate::safefs::Owner {
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: nix::unistd::getegid().as_raw(),
                },
            };
            let dir = site::add(cfg, &domain, owner).map_err(|e| {
                explain_denied(
                    e,
                    cfg,
                    &format!("dirhost site add {domain} --owner {}", owner.uid),
                )
            })?;
            println!("created {}", dir.display());
            reconcile_after(cfg, path, &domain, quiet)
        }
        SiteCommand::Remove { domain } => {
            let entry = site::find_entry(&cfg.paths.srv, &domain)?;
            let moved = site::remove(cfg, &domain, reconcile::now())
                .map_err(|e| explain_denied(e, cfg, &format!("dirhost site remove {entry}")))?;
            match moved {
                Some(to) => println!(
                    "moved {} to {}",
                    cfg.paths.srv.join(&entry).display(),
                    to.display()
                ),
                None => println!("removed the alias {entry}"),
            }
            reconcile_after(cfg, path, &entry, quiet)
        }
        SiteCommand::List { json } => {
            let (sites, skipped) = site::list(cfg, reconcile::now())?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(
                    &mut out,
                    &serde_json::json!({"domains": sites, "skipped": skipped}),
                )?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<32} {:>6} {:<4} {:<8} ALIASES",
                    "DOMAIN", "UID", "WEB", "SSL"
                )?;
                for s in &sites {
                    writeln!(
                        out,
                        "{:<32} {:>6} {:<4} {:<8} {}",
                        s.domain,
                        s.uid,
                        if s.web { "yes" } else { "no" },
                        s.certificate_set.as_deref().unwrap_or("-"),
                        s.aliases.join(" ")
                    )?;
                }
                for s in &skipped {
                    writeln!(out, "skipped {}: {}", s.name, s.reason)?;
                }
            }
            Ok(0)
        }
        SiteCommand::Show { domain, json } => {
            let entry = site::find_entry(&cfg.paths.srv, &domain)?;
            let info = site::show(cfg, &entry, reconcile::now())?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &info)?;
                writeln!(out)?;
            } else {
                writeln!(out, "domain:        {}", info.domain)?;
                writeln!(out, "directory:     {}", info.directory.display())?;
                writeln!(out, "owner:         {}:{}", info.uid, info.gid)?;
                writeln!(
                    out,
                    "web:           {}",
                    if info.web {
                        "yes"
                    } else {
                        "no (no public/htdocs)"
                    }
                )?;
                writeln!(out, "aliases:       {}", info.aliases.join(" "))?;
                writeln!(out, "addresses:     {}", info.ips.join(" "))?;
                writeln!(
                    out,
                    "mandatory ssl: {}",
                    if info.mandatory_ssl { "yes" } else { "no" }
                )?;
                writeln!(
                    out,
                    "certificate:   {}",
                    match (&info.certificate_set, info.certificate_expires) {
                        (Some(set), Some(t)) =>
                            format!("set {set} (expires {})", crate::acme::cli::utc(Some(t))),
                        (Some(set), None) => format!("set {set}"),
                        _ => "-".to_string(),
                    }
                )?;
                for w in &info.warnings {
                    writeln!(out, "warning:       {w}")?;
                }
            }
            Ok(0)
        }
    }
}

/// A permission error from a user who is not root, turned into what to do about it.
fn explain_denied(e: anyhow::Error, cfg: &Config, root_command: &str) -> anyhow::Error {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    match caller() {
        Some(uid) if denied => e.context(format!(
            "you (uid {uid}) may not change {} itself, only root can: ask the admin to run `{root_command}`",
            cfg.paths.srv.display()
        )),
        _ => e,
    }
}

fn cmd_check(cfg: &Config, path: &Path, c: &CheckArgs) -> Result<u8> {
    use crate::doctor::{self, Severity};
    let opts = doctor::Options {
        only: domain_args(&c.domains)?,
        no_dns: c.no_dns,
    };
    let findings = doctor::check(cfg, path, &opts)?;
    let bad = findings.iter().any(|f| f.severity != Severity::Ok);
    let colour = colour(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    if c.json {
        serde_json::to_writer_pretty(&mut out, &findings)?;
        writeln!(out)?;
    } else {
        for f in findings
            .iter()
            .filter(|f| c.all || f.severity != Severity::Ok)
        {
            let tag = match f.severity {
                Severity::Ok => paint(colour, 32, "ok"),
                Severity::Warning => paint(colour, 33, "warning"),
                Severity::Error => paint(colour, 31, "error"),
            };
            let who = f
                .domain
                .as_deref()
                .map(|d| format!(" {d}:"))
                .unwrap_or_default();
            writeln!(out, "{tag} [{}]{who} {}", f.check, f.message)?;
            if !f.fix.is_empty() {
                writeln!(out, "    fix: {}", f.fix)?;
            }
        }
        if !bad {
            writeln!(out, "all checks passed")?;
        }
    }
    Ok(u8::from(bad))
}

fn cmd_demo(d: &DemoArgs) -> Result<u8> {
    let exe = std::env::current_exe().context("failed to find the dirhost binary")?;
    let mut sb = crate::sandbox::Sandbox::at(&d.dir)?;
    sb.set_dirhost_binary(&exe)?;
    let sample = "example.test";
    if !sb.srv().join(sample).exists() {
        sb.add_site(
            sample,
            1000,
            "<h1>Hello from example.test, served by dirhost</h1>\n",
        )?;
    }
    sb.start_apache()?;
    // HTTPS (issue 4): certificates from a local Pebble, when it is installed.
    let ca = crate::acme::localca::demo_ca(&mut sb);
    // Mail (issue 5): a mailbox, and the sandbox's own Exim and Dovecot (root only).
    let mail = crate::mail::sandbox::demo(&mut sb, sample, 1000)?;
    let cfg = sb.config().clone();
    let path = sb.config_path().to_path_buf();
    let report = reconcile::reconcile(&cfg, &path, &Request::default())?;
    let mut out = std::io::stdout().lock();
    print_report(&mut out, &report, false, false)?;
    let port = sb.http_port();
    let srv = sb.srv().display().to_string();
    writeln!(
        out,
        "\ndirhost demo is running in {dir}\n  private Apache on 127.0.0.1:{port} (http) and :{https} (https)\n\nTry:\n  curl -H 'Host: {sample}' http://127.0.0.1:{port}/\n  mkdir -p {srv}/mysite.test/public/htdocs && echo hi > {srv}/mysite.test/public/htdocs/index.html && chown -R 1000:1000 {srv}/mysite.test\n  curl -H 'Host: mysite.test' http://127.0.0.1:{port}/\n  touch {srv}/{sample}/config/mandatory-ssl   (mkdir {srv}/{sample}/config first)\n  {exe} --config {cfg} web list\n",
        dir = d.dir.display(),
        https = sb.https_port(),
        exe = exe.display(),
        cfg = path.display(),
    )?;
    if let Some((_, text)) = &mail {
        writeln!(out, "{text}")?;
    }
    let https = crate::acme::localca::demo_https(ca.as_ref(), &cfg, &path, sample, &exe);
    writeln!(out, "{https}")?;
    out.flush()?;
    drop(out);
    if d.once {
        return Ok(0);
    }
    writeln!(
        std::io::stdout(),
        "Watching {srv}: changes go live within a second. Ctrl-C stops the demo."
    )?;
    crate::daemon::run_until_signal(&cfg, &path)?;
    Ok(0)
}
