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
    /// More output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring Apache's configuration in line with /srv.
    ///
    /// Examples:
    ///   dirhost apply                   # every domain
    ///   dirhost apply example.com       # one domain
    ///   dirhost apply --dry-run --diff  # show what would change, and what hand-edited files miss
    Apply(ApplyArgs),
    /// Web sites.
    #[command(subcommand)]
    Web(WebCommand),
    /// Certificates: list sets, renew, select a set.
    #[command(subcommand)]
    Ssl(crate::acme::cli::SslCommand),
    /// Mailboxes: list, add, passwd, remove; DNS records for DKIM, SPF and DMARC.
    ///
    /// Examples:
    ///   dirhost mail add alice@example.com
    ///   dirhost mail list example.com --json
    ///   dirhost mail dns example.com
    #[command(subcommand)]
    Mail(crate::mail::cli::MailCommand),
    /// DNS: export every domain's records (A/AAAA, MX, SRV, SPF, DKIM, DMARC, CAA, TLSA) for
    /// OctoDNS, BIND or as JSON.
    ///
    /// Examples:
    ///   dirhost dns export --format bind
    ///   dirhost dns export example.com --format octodns --output /etc/octodns/zones
    #[command(subcommand)]
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
    #[command(subcommand)]
    Site(SiteCommand),
    /// Find what is wrong, and say how to fix it (exit 1 when anything is).
    ///
    /// Checks: services installed, web ports answering, inotify limits, every domain's names
    /// resolving to this host, domains skipped and why, hand-edited and out-of-date files.
    ///
    /// Examples:
    ///   dirhost check
    ///   dirhost check example.com --json
    Check(CheckArgs),
    /// Print a shell completion script.
    ///
    /// The Debian package installs them; by hand, e.g.:
    ///   dirhost completions bash > /etc/bash_completion.d/dirhost
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
    let result = match cli.command {
        Command::Apply(a) => cmd_apply(&cfg, &path, &a),
        Command::Web(WebCommand::List { json }) => cmd_web_list(&cfg, json),
        Command::Ssl(c) => crate::acme::cli::run(&cfg, &path, c),
        Command::Mail(m) => crate::mail::cli::run(&cfg, &path, &m),
        Command::Dns(c) => crate::dns::cli::run(&cfg, c),
        Command::Stats(c) => crate::stats::cli::run(&cfg, &path, c),
        Command::Demo(d) => cmd_demo(&d),
        Command::Watch => crate::daemon::run_until_signal(&cfg, &path).map(|()| 0),
        Command::Check(c) => cmd_check(&cfg, &path, &c),
        Command::Site(s) => cmd_site(&cfg, &path, s),
        Command::LogWriter => crate::logwriter::run(&cfg).map(|()| 0),
        Command::Completions { .. } | Command::Manpages { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("dirhost: {e:#}");
            ExitCode::from(1)
        }
    }
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
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
        let ascii = crate::model::validate::domain_name(&n.to_lowercase())
            .with_context(|| format!("{n:?} is not a domain name"))?;
        out.insert(ascii);
    }
    Ok(Some(out))
}

fn cmd_apply(cfg: &Config, path: &Path, a: &ApplyArgs) -> Result<u8> {
    let req = Request {
        only: domain_args(&a.domains)?,
        force: a.force,
        dry_run: a.dry_run,
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
fn reconcile_after(cfg: &Config, path: &Path, domain: &str) -> Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        println!("the dirhost daemon will pick this up within a second");
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

fn cmd_site(cfg: &Config, path: &Path, cmd: SiteCommand) -> Result<u8> {
    use crate::site;
    match cmd {
        SiteCommand::Add { domain, owner } => {
            let domain = domain.to_lowercase();
            let owner = match owner {
                Some(o) => site::resolve_owner(&o)?,
                None if nix::unistd::geteuid().is_root() => {
                    anyhow::bail!("as root, say who owns the domain: --owner USER")
                }
                None => crate::safefs::Owner {
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: nix::unistd::getegid().as_raw(),
                },
            };
            let dir = site::add(cfg, &domain, owner)?;
            println!("created {}", dir.display());
            reconcile_after(cfg, path, &domain)
        }
        SiteCommand::Remove { domain } => {
            let entry = site::find_entry(&cfg.paths.srv, &domain)?;
            match site::remove(cfg, &domain, reconcile::now())? {
                Some(to) => println!(
                    "moved {} to {}",
                    cfg.paths.srv.join(&entry).display(),
                    to.display()
                ),
                None => println!("removed the alias {entry}"),
            }
            reconcile_after(cfg, path, &entry)
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
            let ascii = crate::model::validate::domain_name(&entry)?;
            let only = std::iter::once(ascii.clone()).collect();
            let m = crate::model::load_scoped(&cfg.paths.srv, Some(&only), reconcile::now())?;
            let Some(d) = m.domains.get(&ascii) else {
                let why = m.skipped_reason(&entry).unwrap_or("not a domain directory");
                anyhow::bail!("{entry} is not served: {why}");
            };
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, d)?;
                writeln!(out)?;
            } else {
                writeln!(out, "domain:        {}", d.name)?;
                writeln!(out, "directory:     {}", d.dir.display())?;
                writeln!(out, "owner:         {}:{}", d.uid, d.gid)?;
                writeln!(
                    out,
                    "web:           {}",
                    if d.web {
                        "yes"
                    } else {
                        "no (no public/htdocs)"
                    }
                )?;
                writeln!(out, "aliases:       {}", d.aliases.join(" "))?;
                writeln!(
                    out,
                    "mandatory ssl: {}",
                    if d.mandatory_ssl { "yes" } else { "no" }
                )?;
                writeln!(
                    out,
                    "certificate:   {}",
                    d.cert.as_ref().map_or("-".to_string(), |c| format!(
                        "set {} (expires {})",
                        c.name, c.info.not_after
                    ))
                )?;
                for w in &d.warnings {
                    writeln!(out, "warning:       {w}")?;
                }
            }
            Ok(0)
        }
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
                Severity::Ok => "ok",
                Severity::Warning => "warning",
                Severity::Error => "error",
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
