//! `dirhost check`: finds what is wrong and says how to fix it.
//!
//! Each check produces [`Finding`]s; every finding names its fix. The checks only read (the
//! model, a dry-run plan, /proc, loopback connections): `check` never changes anything.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::reconcile::{self, Request};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine; listed in verbose output.
    Ok,
    /// Works, but should be looked at.
    Warning,
    /// Something is broken.
    Error,
}

/// One result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// Which check found it (`services`, `ports`, `inotify`, `domain`, `dns`,
    /// `certificates`, `files`).
    pub check: &'static str,
    /// The domain concerned, if any.
    pub domain: Option<String>,
    /// What was found.
    pub message: String,
    /// What to do about it (empty for `Ok`).
    pub fix: String,
}

impl Finding {
    fn new(
        severity: Severity,
        check: &'static str,
        domain: Option<&str>,
        message: String,
        fix: String,
    ) -> Self {
        Self {
            severity,
            check,
            domain: domain.map(str::to_string),
            message,
            fix,
        }
    }
}

/// Options for a run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these domains (ASCII); `None`: all.
    pub only: Option<BTreeSet<String>>,
    /// Skip DNS lookups (offline machines, tests).
    pub no_dns: bool,
}

/// Runs every check.
pub fn check(cfg: &Config, config_path: &Path, opts: &Options) -> anyhow::Result<Vec<Finding>> {
    let mut out = Vec::new();
    services(cfg, &mut out);
    ports(cfg, &mut out);
    let req = Request {
        only: opts.only.clone(),
        force: false,
        dry_run: true,
        ..Request::default()
    };
    let model = crate::model::load_scoped(&cfg.paths.srv, opts.only.as_ref(), reconcile::now())?;
    inotify(cfg, model.domains.len(), &mut out);
    mail_ports(cfg, &model, &mut out);
    let report = match reconcile::reconcile_model(&model, cfg, config_path, &req) {
        Ok(r) => r,
        // A customer (not root) cannot read dirhost's state: check what the model shows.
        Err(e) if !nix::unistd::geteuid().is_root() => {
            out.push(Finding::new(
                Severity::Warning,
                "files",
                None,
                format!("generated files not compared (that needs root): {e:#}"),
                "run `sudo dirhost check` for the full check".into(),
            ));
            reconcile::Report {
                skipped: model.skipped.clone(),
                ..Default::default()
            }
        }
        Err(e) => return Err(e),
    };
    for s in &report.skipped {
        let is_domain = crate::model::validate::domain_name(&s.name).is_ok();
        out.push(Finding::new(
            if is_domain {
                Severity::Error
            } else {
                Severity::Warning
            },
            "domain",
            Some(&s.name),
            format!("skipped: {}", s.reason),
            skip_fix(&s.reason),
        ));
    }
    for (d, w) in &report.warnings {
        out.push(Finding::new(
            Severity::Warning,
            "domain",
            Some(d),
            w.clone(),
            warning_fix(w),
        ));
    }
    for n in &report.plan.notices {
        out.push(Finding::new(
            Severity::Warning,
            "files",
            n.domain.as_deref(),
            format!("{}: {}", n.path.display(), n.message),
            "run `dirhost apply --dry-run --diff` to see what it is missing; `dirhost apply --force` replaces it".into(),
        ));
    }
    if !report.plan.changes.is_empty() {
        out.push(Finding::new(
            Severity::Warning,
            "files",
            None,
            format!(
                "{} generated file(s) are out of date",
                report.plan.changes.len()
            ),
            "run `dirhost apply` (or start `dirhost watch`)".into(),
        ));
    }
    certificates(cfg, &model, &mut out);
    // Sites and mail-only domains with webmail: both have a vhost and get certificates.
    let webmail_only = crate::model::vhost::webmail_only(cfg, &model);
    let served = |d: &crate::model::Domain| d.web || webmail_only.contains(&d.name);
    let web = if opts.no_dns {
        0
    } else {
        model.domains.values().filter(|d| served(d)).count()
    };
    let mut progress = crate::progress::Progress::counter("checking DNS", Some(web));
    for d in model.domains.values() {
        if !opts.no_dns && served(d) {
            progress.step(&d.name);
            dns(cfg, d.name.as_str(), &d.all_names(), &mut out);
        }
        if d.web && d.mandatory_ssl && d.cert.is_none() {
            out.push(Finding::new(
                Severity::Warning,
                "domain",
                Some(&d.name),
                "mandatory SSL but no usable certificate yet: HTTPS visitors get an error".into(),
                "run `dirhost ssl renew DOMAIN`, or put a certificate set in config/ssl/".into(),
            ));
        }
    }
    progress.finish();
    Ok(out)
}

fn skip_fix(reason: &str) -> String {
    if reason.contains("owned by uid") || reason.contains("group is gid") {
        "chown -R the domain's directory to its customer's user and group (ids >= 1000)".into()
    } else if reason.contains("not a valid domain name") {
        "rename the directory to a lower-case domain name, or move it out of /srv".into()
    } else if reason.contains("symbolic link") {
        "replace the symbolic link with a real file or directory".into()
    } else {
        "fix the file named in the message; the domain is served again at the next apply".into()
    }
}

fn warning_fix(w: &str) -> String {
    if w.contains("certificate") {
        "check the set's files with `openssl x509 -noout -text -in ssl.crt`; `dirhost ssl renew DOMAIN` issues a new one".into()
    } else {
        "see the message".into()
    }
}

/// Is each service's binary installed (the first word of its test command, on PATH)?
fn services(cfg: &Config, out: &mut Vec<Finding>) {
    let c = &cfg.commands;
    for (name, argv, package) in [
        ("apache", &c.apache_test, "apache2"),
        ("exim", &c.exim_test, "exim4-daemon-heavy"),
        ("dovecot", &c.dovecot_test, "dovecot-imapd dovecot-pop3d"),
    ] {
        let Some(prog) = argv.first() else { continue };
        if find_program(prog).is_some() {
            out.push(Finding::new(
                Severity::Ok,
                "services",
                None,
                format!("{name}: {prog} found"),
                String::new(),
            ));
        } else {
            out.push(Finding::new(
                Severity::Error,
                "services",
                None,
                format!("{name}: `{prog}` (from [commands] {name}_test) is not installed"),
                format!("apt-get install {package}, or fix [commands] in the config file"),
            ));
        }
    }
}

/// `prog` if it is a path, else the first match on PATH.
pub fn find_program(prog: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(prog);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|c| c.is_file())
}

/// Whether something accepts connections on `port` on 127.0.0.1 (2 s at most).
fn answers(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Are the web ports answering on loopback?
fn ports(cfg: &Config, out: &mut Vec<Finding>) {
    for (what, port) in [("http", cfg.ports.http), ("https", cfg.ports.https)] {
        if answers(port) {
            out.push(Finding::new(
                Severity::Ok,
                "ports",
                None,
                format!("{what} port {port} answers"),
                String::new(),
            ));
        } else {
            out.push(Finding::new(
                Severity::Error,
                "ports",
                None,
                format!("nothing answers on {what} port {port} (127.0.0.1)"),
                "start Apache (systemctl start apache2) and check its Listen directives (ports.conf)".into(),
            ));
        }
    }
}

/// Does the kernel (or `[watch] max_watches`, when lower) allow enough inotify watches for
/// the daemon (about five per domain)?
fn inotify(cfg: &Config, domains: usize, out: &mut Vec<Finding>) {
    let kernel = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    let (limit, source) = match (kernel, cfg.watch.max_watches) {
        (Some(k), Some(m)) if m < k => (m, "[watch] max_watches"),
        (None, Some(m)) => (m, "[watch] max_watches"),
        (Some(k), _) => (k, "fs.inotify.max_user_watches"),
        (None, None) => return,
    };
    let needed = watches_needed(domains);
    if needed > limit {
        let fix = if source.starts_with('[') {
            format!(
                "raise or remove [watch] max_watches in the config file (needs {needed}); the daemon rescans every few seconds until then"
            )
        } else {
            format!(
                "sysctl -w fs.inotify.max_user_watches={} and persist it in /etc/sysctl.d/; the daemon rescans every few seconds until then",
                needed * 2
            )
        };
        out.push(Finding::new(
            Severity::Error,
            "inotify",
            None,
            format!(
                "{source} is {limit}, the daemon needs about {needed} watches for {domains} domains"
            ),
            fix,
        ));
    } else {
        out.push(Finding::new(
            Severity::Ok,
            "inotify",
            None,
            format!("{source} {limit} covers the ~{needed} watches needed"),
            String::new(),
        ));
    }
}

/// When some domain has mailboxes: do Exim (SMTP) and Dovecot (IMAPS) answer?
fn mail_ports(cfg: &Config, model: &crate::model::Model, out: &mut Vec<Finding>) {
    let with_mail: Vec<&str> = model
        .domains
        .values()
        .filter(|d| {
            let rel = Path::new(&d.dir_name).join("mailboxes");
            matches!(crate::safefs::stat(&cfg.paths.srv, &rel), Ok(Some(_)))
        })
        .map(|d| d.name.as_str())
        .collect();
    let Some(first) = with_mail.first() else {
        return;
    };
    for (what, port, service) in [
        ("SMTP (Exim)", cfg.mail.smtp, "exim4"),
        ("IMAPS (Dovecot)", cfg.mail.imaps, "dovecot"),
    ] {
        if answers(port) {
            out.push(Finding::new(
                Severity::Ok,
                "services",
                None,
                format!("{what} answers on port {port}"),
                String::new(),
            ));
        } else {
            out.push(Finding::new(
                Severity::Error,
                "services",
                None,
                format!(
                    "nothing answers on {what} port {port} (127.0.0.1), but {} domain(s) have mailboxes ({first}…)",
                    with_mail.len()
                ),
                format!(
                    "systemctl start {service}; `journalctl -u {service}` says why it stopped"
                ),
            ));
        }
    }
}

/// Each web site's certificate: live set and next renewal, or the last error.
fn certificates(cfg: &Config, model: &crate::model::Model, out: &mut Vec<Finding>) {
    use crate::model::validate::SslProvider;
    let now = reconcile::now();
    let rows = match crate::acme::cli::rows(cfg, now) {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::new(
                Severity::Warning,
                "certificates",
                None,
                format!("could not read the certificate state: {e:#}"),
                "run `dirhost check` as root".into(),
            ));
            return;
        }
    };
    let utc = |t: Option<i64>| crate::acme::cli::utc(t);
    for r in rows
        .iter()
        .filter(|r| model.domains.contains_key(&r.domain))
    {
        let d = Some(r.domain.as_str());
        if let Some(e) = &r.last_error {
            out.push(Finding::new(
                Severity::Error,
                "certificates",
                d,
                format!(
                    "the last certificate order failed ({} failure(s) in a row; next attempt {}): {e}",
                    r.failures,
                    utc(r.next_attempt)
                ),
                format!(
                    "make every name of {} point at this server (see the dns findings), then `dirhost ssl renew {} --force`",
                    r.domain, r.domain
                ),
            ));
        }
        for (name, why) in &r.left_out {
            out.push(Finding::new(
                Severity::Warning,
                "certificates",
                d,
                format!("{name} was left out of the certificate: {why}"),
                format!("point {name} at this server, or remove that name"),
            ));
        }
        match (&r.live, r.expires) {
            (Some(set), Some(expires)) if expires - now < 7 * 86_400 => {
                out.push(Finding::new(
                    Severity::Error,
                    "certificates",
                    d,
                    format!("certificate set {set} expires {}", utc(Some(expires))),
                    format!(
                        "`dirhost ssl renew {} --force`; `dirhost ssl list` shows the last error",
                        r.domain
                    ),
                ));
            }
            (Some(set), expires) => out.push(Finding::new(
                Severity::Ok,
                "certificates",
                d,
                format!(
                    "certificate set {set} valid until {}, next renewal {}",
                    utc(expires),
                    utc(r.next_renewal)
                ),
                String::new(),
            )),
            (None, _) if r.provider != SslProvider::Manual && r.last_error.is_none() => {
                out.push(Finding::new(
                    Severity::Warning,
                    "certificates",
                    d,
                    "no certificate yet: HTTPS is not served".into(),
                    format!(
                        "`dirhost ssl renew {}` (its names must point at this server), or wait for the daemon's next pass",
                        r.domain
                    ),
                ));
            }
            _ => {}
        }
    }
}

/// Watches the daemon places: /srv, and per domain its directory, public/, config/,
/// config/ssl/ and mailboxes/.
pub fn watches_needed(domains: usize) -> usize {
    1 + domains * 5
}

/// Do the site's names resolve (A and AAAA) to this host? The same check, resolver
/// (`[acme] resolver`) and host addresses (`[acme] host_addresses`) as certificate orders.
fn dns(cfg: &Config, domain: &str, names: &[String], out: &mut Vec<Finding>) {
    match crate::acme::dns::check_names(cfg, names) {
        Ok(check) => {
            for name in &check.here {
                out.push(Finding::new(
                    Severity::Ok,
                    "dns",
                    Some(domain),
                    format!("{name} resolves to this host"),
                    String::new(),
                ));
            }
            for (name, why) in &check.elsewhere {
                out.push(Finding::new(
                    Severity::Warning,
                    "dns",
                    Some(domain),
                    format!("{name} {why}"),
                    format!(
                        "point the A/AAAA records of {name} at this server (certificates are only ordered for names that do), or remove the name"
                    ),
                ));
            }
        }
        Err(e) => out.push(Finding::new(
            Severity::Warning,
            "dns",
            Some(domain),
            format!("could not check its names: {e:#}"),
            "check [acme] resolver and host_addresses in the config file".into(),
        )),
    }
}

/// Pure decision for one name: resolved addresses vs the addresses the site binds to (or
/// the host's, when it binds to all).
pub fn classify_dns(
    name: &str,
    resolved: &[IpAddr],
    site_ips: &[IpAddr],
    host: &[IpAddr],
) -> (Severity, String, String) {
    if resolved.is_empty() {
        return (
            Severity::Warning,
            format!("{name} does not resolve (no A/AAAA record)"),
            format!(
                "add A/AAAA records for {name} pointing at this server; certificates cannot be issued for it until then"
            ),
        );
    }
    let ours: &[IpAddr] = if site_ips.is_empty() { host } else { site_ips };
    let elsewhere: Vec<String> = resolved
        .iter()
        .filter(|a| !ours.contains(a))
        .map(ToString::to_string)
        .collect();
    if elsewhere.is_empty() {
        (
            Severity::Ok,
            format!("{name} resolves to this host"),
            String::new(),
        )
    } else {
        (
            Severity::Warning,
            format!(
                "{name} resolves to {} which is not this host",
                elsewhere.join(", ")
            ),
            format!(
                "point the DNS records of {name} at this server, or remove the name (alias or www.)"
            ),
        )
    }
}

/// The host's own addresses (from /proc: IPv4 via the kernel's local routing table, IPv6 from
/// if_inet6), plus loopback.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in text.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(n) = u128::from_str_radix(hex, 16) {
                out.push(IpAddr::from(std::net::Ipv6Addr::from(n)));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        // Lines "|-- a.b.c.d" followed by "/32 host LOCAL" name the host's own addresses.
        let mut last: Option<IpAddr> = None;
        for line in text.lines() {
            let t = line.trim_start_matches([' ', '|', '+', '-']);
            if let Ok(ip) = t.trim().parse::<IpAddr>() {
                last = Some(ip);
            } else if t.contains("host LOCAL")
                && let Some(ip) = last.filter(|ip| !out.contains(ip))
            {
                out.push(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn dns_classification() {
        let host = [ip("192.0.2.1"), ip("2001:db8::1")];
        let cases: Vec<(Vec<IpAddr>, Vec<IpAddr>, Severity)> = vec![
            (vec![], vec![], Severity::Warning),
            (vec![ip("192.0.2.1")], vec![], Severity::Ok),
            (
                vec![ip("192.0.2.1"), ip("2001:db8::1")],
                vec![],
                Severity::Ok,
            ),
            (vec![ip("198.51.100.7")], vec![], Severity::Warning),
            (
                vec![ip("192.0.2.1"), ip("198.51.100.7")],
                vec![],
                Severity::Warning,
            ),
            // A site bound to its own address must resolve to that one.
            (
                vec![ip("192.0.2.1")],
                vec![ip("192.0.2.9")],
                Severity::Warning,
            ),
            (vec![ip("192.0.2.9")], vec![ip("192.0.2.9")], Severity::Ok),
        ];
        for (i, (resolved, site, want)) in cases.into_iter().enumerate() {
            let (sev, msg, fix) = classify_dns("a.test", &resolved, &site, &host);
            assert_eq!(sev, want, "case {i}: {msg}");
            assert_eq!(
                fix.is_empty(),
                sev == Severity::Ok,
                "case {i}: every problem names a fix"
            );
        }
    }

    #[test]
    fn skip_fixes_name_an_action() {
        for reason in [
            "owned by uid 0: domains must be owned by a user with uid >= 1000",
            "\"X.com\" is not a valid domain name: must be lower-case",
            "config/ip: \"x\" is not an IP address",
        ] {
            assert!(!skip_fix(reason).is_empty());
        }
        assert!(skip_fix("owned by uid 33").contains("chown"));
    }

    #[test]
    fn local_addresses_include_loopback() {
        let a = local_addresses();
        assert!(a.contains(&ip("127.0.0.1")));
        assert_eq!(watches_needed(10_000), 50_001);
    }
}
