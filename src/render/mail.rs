//! Renders the mail side: Exim's and Dovecot's configuration and the per-domain files they
//! read, into the same [`Desired`] set as Apache's.
//!
//! Shared files (`<exim>/exim4.conf`, `<dovecot>/local.conf`) depend only on the config and
//! the templates, never on which domains exist: a scoped reconcile renders them identically.
//! Everything that depends on a domain is a per-domain file (`domain: Some(..)`), so one
//! domain's problem is bisected out on its own:
//! * `<state>/mail/exim/domains/<name>`: lsearch file of each mail name (owner, home,
//!   quotas, aliases, DKIM); its existence makes the name local to Exim.
//! * `<state>/mail/exim/tls/<name>`, `dkim/<domain>`.
//! * `<state>/mail/dovecot/passwd/<name>`: the passwd-file (hashes only).
//! * `<dovecot>/dirhost.d/<domain>.conf`: TLS by SNI for Dovecot.
//!
//! Mailbox facts come from the model ([`crate::model::Services::mail`], read by
//! [`crate::mail::load`] in the model phase). The DKIM key and the hashes of plaintext
//! passwords were kept or made there too ([`crate::mail::prepare`]): rendering reads no file
//! and runs no program, so the same model always renders the same files.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Desired, DesiredFile, FileKind, Service, safe_path};
use crate::checksum;
use crate::config::Config;
use crate::mail::password::Stored;
use crate::mail::{self, Login, MailDomain, MailLayout, MailModel};
use crate::model::{Domain, Model};

/// Adds the mail files for `model` to `out`. Domains whose mail files cannot be read or
/// rendered go to `out.failed` (their previous files stay).
pub fn render(
    model: &Model,
    mail: &MailModel,
    cfg: &Config,
    tera: &tera::Tera,
    out: &mut Desired,
) -> Result<()> {
    let layout = MailLayout::new(cfg);
    for (what, p) in [
        ("[mail] certificate", cfg.mail.certificate.as_path()),
        ("[mail] key", cfg.mail.key.as_path()),
        ("[mail] exim_spool", cfg.mail.exim_spool.as_path()),
        ("[mail] dovecot_run", cfg.mail.dovecot_run.as_path()),
        ("[paths] exim", cfg.paths.exim.as_path()),
        ("[paths] dovecot", cfg.paths.dovecot.as_path()),
    ] {
        safe_path(p).with_context(|| format!("{what} cannot be used in a generated config"))?;
    }
    if cfg.mail.exim_log != "syslog" {
        safe_path(Path::new(&cfg.mail.exim_log.replace("%s", "")))
            .context("[mail] exim_log cannot be used in a generated config")?;
    }
    let hostname = cfg.mail.hostname(cfg);
    let smarthost = cfg.mail.smarthost_parts()?;
    let view = SharedView {
        srv: cfg.paths.srv.display().to_string(),
        domains_dir: layout.domains_dir.display().to_string(),
        tls_dir: layout.tls_dir.display().to_string(),
        passwd_dir: layout.passwd_dir.display().to_string(),
        domains_conf_dir: layout.dovecot_domains.display().to_string(),
        certificate: cfg.mail.certificate.display().to_string(),
        key: cfg.mail.key.display().to_string(),
        smtp: cfg.mail.smtp,
        smtps: cfg.mail.smtps,
        submission: cfg.mail.submission,
        imaps: cfg.mail.imaps,
        pop3s: cfg.mail.pop3s,
        auth_socket: layout.auth_socket.display().to_string(),
        auth_socket_name: mail::AUTH_SOCKET.to_string(),
        relay_from: cfg
            .mail
            .relay_from
            .iter()
            .map(|r| crate::model::validate::parse_cidr(r))
            .collect::<Result<_, _>>()?,
        postmaster: cfg.mail.postmaster.clone(),
        listen: if cfg.mail.listen.is_empty() {
            Vec::new()
        } else {
            cfg.mail.listen.clone()
        },
        dovecot_listen: if cfg.mail.listen.is_empty() {
            "*, ::".into()
        } else {
            cfg.mail.listen.join(", ")
        },
        smarthost: smarthost.as_ref().map(|(h, _)| h.clone()),
        smarthost_port: smarthost.as_ref().map_or(25, |(_, p)| *p),
        hostname,
        exim_user: cfg.mail.exim_user.clone(),
        dovecot_group: cfg.mail.dovecot_group.clone(),
        spool: cfg.mail.exim_spool.display().to_string(),
        log: cfg.mail.exim_log.clone(),
        ssl_dh: None,
    };
    let ctx = tera::Context::from_serialize(&view)?;
    for (template, path, service) in [
        ("exim/exim4.conf.tera", &layout.exim_conf, Service::Exim),
        (
            "dovecot/local.conf.tera",
            &layout.dovecot_conf,
            Service::Dovecot,
        ),
    ] {
        let text = tera
            .render(template, &ctx)
            .with_context(|| format!("failed to render {template}"))?;
        out.files.push(DesiredFile {
            path: path.clone(),
            contents: checksum::seal(&text),
            mode: 0o644,
            kind: FileKind::Config,
            domain: None,
            service,
        });
    }

    for (name, why) in &mail.failed {
        out.failed.insert(name.clone(), why.clone());
    }
    for m in mail.domains.values() {
        let Some(d) = model.domains.get(&m.name) else {
            continue;
        };
        match render_domain(d, m, &layout) {
            Ok(files) => out.files.extend(files),
            Err(e) => {
                tracing::error!(domain = %m.name, "failed to render its mail files: {e:#}");
                out.failed.insert(m.name.clone(), format!("mail: {e:#}"));
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct SharedView {
    srv: String,
    domains_dir: String,
    tls_dir: String,
    passwd_dir: String,
    domains_conf_dir: String,
    certificate: String,
    key: String,
    smtp: u16,
    smtps: u16,
    submission: u16,
    imaps: u16,
    pop3s: u16,
    auth_socket: String,
    auth_socket_name: String,
    relay_from: Vec<String>,
    postmaster: String,
    listen: Vec<String>,
    dovecot_listen: String,
    smarthost: Option<String>,
    smarthost_port: u16,
    hostname: String,
    exim_user: String,
    dovecot_group: String,
    spool: String,
    log: String,
    ssl_dh: Option<String>,
}

fn private(
    path: std::path::PathBuf,
    contents: String,
    domain: &str,
    service: Service,
) -> DesiredFile {
    DesiredFile {
        path,
        contents,
        mode: 0o640,
        kind: FileKind::Private,
        domain: Some(domain.to_string()),
        service,
    }
}

fn render_domain(d: &Domain, m: &MailDomain, layout: &MailLayout) -> Result<Vec<DesiredFile>> {
    safe_path(&d.dir).context("the domain's directory name cannot be used in a mail config")?;
    anyhow::ensure!(
        !d.dir.to_string_lossy().contains(':'),
        "the domain's directory name contains ':'"
    );
    let mut files = Vec::new();

    // DKIM: the key the model phase kept or made (`mail::prepare`).
    let dkim_key = match (&m.dkim_selector, &m.dkim_key) {
        (Some(_), Some(key)) => {
            let path = layout.dkim_key(&m.name);
            files.push(private(path.clone(), key.clone(), &m.name, Service::Exim));
            Some(path)
        }
        (Some(_), None) => anyhow::bail!("DKIM is on but no key was prepared"),
        (None, _) => None,
    };

    // The lsearch file Exim reads for each name.
    let mut info = String::new();
    info.push_str(&format!(
        "# dirhost: mail settings of {} (generated; read by Exim, replaced on every change)\n",
        m.name
    ));
    info.push_str(&format!("domain: {}\n", m.name));
    info.push_str(&format!("home: {}\n", d.dir.display()));
    info.push_str(&format!("uid: {}\ngid: {}\n", m.uid, m.gid));
    info.push_str(&format!("quota: {}\n", m.default_quota));
    for b in &m.mailboxes {
        if b.quota != m.default_quota {
            info.push_str(&format!("quota.{}: {}\n", b.local, b.quota));
        }
    }
    for a in &m.aliases {
        info.push_str(&format!("alias.{}: {}\n", a.local, a.targets.join(", ")));
    }
    if let (Some(sel), Some(key)) = (&m.dkim_selector, &dkim_key) {
        info.push_str(&format!(
            "dkim_selector: {sel}\ndkim_key: {}\n",
            key.display()
        ));
    }

    let mut logins: Vec<(String, String, u64)> = Vec::new();
    for b in &m.mailboxes {
        let field = match &b.login {
            Login::Enabled(s @ Stored::Hash { .. }) => s.dovecot_field(),
            Login::Enabled(Stored::Plain(_)) => {
                let hash = b.crypt.as_ref().with_context(|| {
                    format!("mailboxes/{}: its password hash was not prepared", b.local)
                })?;
                Some(format!("{{SHA512-CRYPT}}{hash}"))
            }
            Login::NoPassword | Login::Disabled(_) => None,
        };
        if let Some(f) = field {
            logins.push((b.local.clone(), f, b.quota));
        }
    }

    let tls = d.cert.as_ref().map(|c| {
        let mut pem = c.chain_pem.clone();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&c.key_pem);
        pem
    });

    for name in m.mail_names() {
        files.push(private(
            layout.domains_dir.join(&name),
            info.replace(
                &format!("mail settings of {} (", m.name),
                &format!("mail settings of {name} (domain {}; ", m.name),
            ),
            &m.name,
            Service::Exim,
        ));
        let mut passwd = String::new();
        for (local, field, quota) in &logins {
            let home = d.dir.join("mailboxes").join(local);
            passwd.push_str(&format!(
                "{local}@{name}:{field}:{}:{}::{}::",
                m.uid,
                m.gid,
                home.display()
            ));
            if *quota > 0 {
                passwd.push_str(&format!("userdb_quota_rule=*:bytes={quota}"));
            }
            passwd.push('\n');
        }
        files.push(private(
            layout.passwd_dir.join(&name),
            passwd,
            &m.name,
            Service::Dovecot,
        ));
    }

    // TLS by SNI: every name the live certificate covers.
    let mut snippet = format!("# dirhost: Dovecot settings of {} (generated)\n", m.name);
    if let (Some(pem), Some(c)) = (&tls, &d.cert) {
        let names = d.all_names();
        for n in &names {
            files.push(private(
                layout.tls_dir.join(n),
                pem.clone(),
                &m.name,
                Service::Exim,
            ));
        }
        let file = layout.tls_dir.join(&m.name);
        let digest = ring::digest::digest(&ring::digest::SHA256, c.chain_pem.as_bytes());
        snippet.push_str(&format!(
            "# certificate set {}, SHA-256 of the chain {}\n",
            c.name,
            data_encoding::HEXLOWER.encode(digest.as_ref())
        ));
        for n in &names {
            snippet.push_str(&format!(
                "local_name {n} {{\n  ssl_cert = <{f}\n  ssl_key = <{f}\n}}\n",
                f = file.display()
            ));
        }
    } else {
        snippet.push_str("# no certificate set: the host certificate is used\n");
    }
    files.push(DesiredFile {
        path: layout.dovecot_domains.join(format!("{}.conf", m.name)),
        contents: checksum::seal(&snippet),
        mode: 0o644,
        kind: FileKind::Config,
        domain: Some(m.name.clone()),
        service: Service::Dovecot,
    });
    Ok(files)
}
