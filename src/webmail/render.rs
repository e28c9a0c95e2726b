//! The webmail's rendered files: Roundcube's `config.inc.php` and `defaults.inc.php`, the
//! `dirhost-webmail` PHP-FPM pool, and the view a site's vhost needs ([`ApacheView`]).
//!
//! The shared files depend only on the config and the templates, never on which domains
//! exist (a scoped reconcile renders them identically); which domain a request is for comes
//! from the vhost (`SetEnv DIRHOST_WEBMAIL_DOMAIN`), so no per-domain Roundcube file exists.
//! All are `Service::Php`: the webmail pool reads them, and a change to the pool is tested
//! with `php-fpm -t` and reloaded like the domains' pools.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{WebmailLayout, enabled, identity};
use crate::checksum;
use crate::config::Config;
use crate::model::Domain;
use crate::render::{Desired, DesiredFile, FileKind, Service, safe_path};

/// Roundcube's configuration template.
pub const CONFIG_TEMPLATE: &str = "roundcube/config.inc.php.tera";
/// The template that loads the package's defaults.
pub const DEFAULTS_TEMPLATE: &str = "roundcube/defaults.inc.php.tera";
/// The webmail pool's template.
pub const POOL_TEMPLATE: &str = "roundcube/pool.conf.tera";
/// The Apache directives included in a site's vhosts.
pub const APACHE_TEMPLATE: &str = "apache/webmail.tera";

/// What a site's vhost needs to serve `/webmail/` (`apache/webmail.tera`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApacheView {
    /// Roundcube's web root, aliased at `/webmail/`.
    pub public_dir: String,
    /// The webmail pool's socket.
    pub socket: String,
    /// A full address of any hosted domain may log in here: the host's own name
    /// (`[web] hostname`), or everywhere with `[webmail] any_domain`.
    pub any_domain: bool,
}

/// The webmail view for a served domain, `None` when it gets no webmail (no mailboxes,
/// `config/webmail` off, webmail not enabled or not usable on this server). The host's own
/// name (`[web] hostname`, when it is a served domain) gets webmail without mailboxes of its
/// own, for every domain's users. `Err` for a bad `config/webmail`: the domain is then left
/// as it was.
pub fn site_view(
    cfg: &Config,
    d: &Domain,
    wanted: Result<bool, String>,
) -> Result<Option<ApacheView>> {
    if !enabled(cfg) {
        return Ok(None);
    }
    let host = d.name == cfg.hostname();
    if !wanted.map_err(anyhow::Error::msg)? {
        return Ok(None);
    }
    // Unusable webmail (say its user is missing) is reported once by `render`; the sites
    // go on without /webmail/.
    if identity(cfg).is_err() || check_paths(cfg).is_err() {
        return Ok(None);
    }
    let l = WebmailLayout::new(cfg);
    Ok(Some(ApacheView {
        public_dir: cfg.webmail.public_dir.display().to_string(),
        socket: l.socket.display().to_string(),
        any_domain: host || cfg.webmail.any_domain,
    }))
}

fn check_paths(cfg: &Config) -> Result<()> {
    let w = &cfg.webmail;
    let l = WebmailLayout::new(cfg);
    for (what, p) in [
        ("[webmail] public_dir", w.public_dir.as_path()),
        ("[webmail] defaults", w.defaults.as_path()),
        ("[webmail] config_dir", w.config_dir.as_path()),
        ("[webmail] log_dir", w.log_dir.as_path()),
        ("[php] socket_dir", l.socket.as_path()),
        ("[php] pool_dir", l.pool_file.as_path()),
        ("[paths] state", l.state_dir.as_path()),
    ] {
        safe_path(p).with_context(|| format!("{what} cannot be used in a generated config"))?;
        // PHP string literals and open_basedir (':'-separated) must hold it as it is.
        anyhow::ensure!(
            !p.to_string_lossy().contains(':'),
            "{what} {} contains ':'",
            p.display()
        );
    }
    for p in &w.code_dirs {
        safe_path(p).context("[webmail] code_dirs cannot be used in a generated config")?;
        anyhow::ensure!(
            !p.to_string_lossy().contains(':'),
            "[webmail] code_dirs: {} contains ':'",
            p.display()
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct ConfigView {
    override_dir: String,
    config_dir: String,
    defaults: String,
    database: String,
    des_key: String,
    temp_dir: String,
    log_dir: String,
    imap_host: String,
    smtp_host: String,
    any_domain: bool,
    login_rate_limit: u32,
}

#[derive(Serialize)]
struct PoolView {
    name: &'static str,
    override_dir: String,
    user: String,
    uid: u32,
    gid: u32,
    socket: String,
    socket_user: String,
    socket_group: String,
    max_children: u32,
    idle_timeout_secs: u32,
    config_dir: String,
    temp_dir: String,
    open_basedir: String,
    disable_functions: Vec<String>,
}

/// The address Roundcube connects to: loopback when Exim and Dovecot listen there (or
/// everywhere), else the first `[mail] listen` address.
fn local_address(cfg: &Config) -> String {
    let listen = &cfg.mail.listen;
    if listen.is_empty() || listen.iter().any(|a| a == "127.0.0.1") {
        return "127.0.0.1".into();
    }
    match listen.first().and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => "127.0.0.1".into(),
    }
}

/// Adds the webmail's shared files to `out` (nothing when webmail is off or unusable: the
/// reason is logged, and the previous files stay).
pub fn render(cfg: &Config, tera: &tera::Tera, out: &mut Desired) -> Result<()> {
    if !enabled(cfg) {
        return Ok(());
    }
    let id = identity(cfg)?;
    check_paths(cfg)?;
    let w = &cfg.webmail;
    let l = WebmailLayout::new(cfg);
    let s = |p: &Path| p.display().to_string();
    let addr = local_address(cfg);
    let view = ConfigView {
        override_dir: s(&cfg.paths.templates),
        config_dir: s(&w.config_dir),
        defaults: s(&w.defaults),
        database: s(&l.database()),
        des_key: s(&l.des_key),
        temp_dir: s(&l.temp_dir),
        log_dir: s(&w.log_dir),
        imap_host: format!("ssl://{addr}:{}", cfg.mail.imaps),
        smtp_host: format!("ssl://{addr}:{}", cfg.mail.smtps),
        any_domain: w.any_domain,
        login_rate_limit: w.login_rate_limit,
    };
    let ctx = tera::Context::from_serialize(&view)?;
    for (template, path) in [
        (CONFIG_TEMPLATE, &l.config_file),
        (DEFAULTS_TEMPLATE, &l.defaults_file),
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
            service: Service::Php,
        });
    }

    let mut readable: Vec<String> = w.code_dirs.iter().map(|p| format!("{}/", s(p))).collect();
    readable.extend([
        format!("{}/", s(&w.public_dir)),
        format!("{}/", s(&w.config_dir)),
        format!("{}/", s(&l.state_dir)),
        format!("{}/", s(&w.log_dir)),
        s(&w.defaults),
    ]);
    let pool = PoolView {
        name: super::POOL,
        override_dir: s(&cfg.paths.templates),
        user: w.user.clone(),
        uid: id.uid,
        gid: id.gid,
        socket: s(&l.socket),
        socket_user: cfg.php.socket_user.clone(),
        socket_group: cfg.php.socket_group.clone(),
        max_children: w.max_children,
        idle_timeout_secs: cfg.php.idle_timeout_secs,
        config_dir: s(&w.config_dir),
        temp_dir: s(&l.temp_dir),
        open_basedir: readable.join(":"),
        disable_functions: cfg.php.disable_functions.clone(),
    };
    let text = tera
        .render(POOL_TEMPLATE, &tera::Context::from_serialize(&pool)?)
        .with_context(|| format!("failed to render {POOL_TEMPLATE}"))?;
    out.files.push(DesiredFile {
        path: l.pool_file,
        contents: checksum::seal_ini(&text),
        mode: 0o644,
        kind: FileKind::Config,
        domain: None,
        service: Service::Php,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(root: &Path) -> Config {
        let mut c = crate::sandbox::sandbox_config(root, 8080, 8443, "/usr/bin/dirhost".into());
        c.webmail.enabled = true;
        c.webmail.user = "2999".into();
        c.webmail.group = "2999".into();
        c
    }

    fn tera() -> tera::Tera {
        crate::render::templates(Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn renders_sealed_config_and_pool() {
        let c = cfg(Path::new("/tmp/sb"));
        let mut out = Desired::default();
        render(&c, &tera(), &mut out).unwrap();
        assert_eq!(out.files.len(), 3);
        for f in &out.files {
            assert_eq!(
                (f.service, f.kind, f.domain.as_deref()),
                (Service::Php, FileKind::Config, None)
            );
            assert_eq!(
                checksum::inspect(f.contents.as_bytes()),
                checksum::Seal::Intact
            );
        }
        let config = &out.files[0].contents;
        assert!(out.files[0].path.ends_with("roundcube/config.inc.php"));
        for want in [
            "'sqlite:////tmp/sb/state/webmail/db/roundcube.sqlite?mode=0600'",
            "file_get_contents('/tmp/sb/state/webmail/des_key')",
            "$config['imap_host'] = 'ssl://127.0.0.1:",
            "$dirhost_any = false ||",
            "$config['username_domain_forced'] = !$dirhost_any;",
            "$config['log_logins'] = true;",
            "$config['login_rate_limit'] = 3;",
        ] {
            assert!(config.contains(want), "missing {want:?} in\n{config}");
        }
        assert!(!config.contains("des_key'] = '"), "no secret in the file");
        let defaults = &out.files[1].contents;
        assert!(
            defaults.contains("include '/etc/roundcube/defaults.inc.php';"),
            "{defaults}"
        );
        let pool = &out.files[2].contents;
        for want in [
            "[dirhost-webmail]\n",
            "user = 2999\n",
            "listen = /tmp/sb/run/php/dirhost-webmail.sock\n",
            "listen.owner = www-data\n",
            "env[ROUNDCUBE_CONFIG_DIR] = /tmp/sb/etc/dirhost/roundcube\n",
            "pm = ondemand\n",
        ] {
            assert!(pool.contains(want), "missing {want:?} in\n{pool}");
        }
        assert!(!pool.lines().any(|l| l.starts_with('#')), "{pool}");

        let mut any = c.clone();
        any.webmail.any_domain = true;
        let mut out = Desired::default();
        render(&any, &tera(), &mut out).unwrap();
        assert!(out.files[0].contents.contains("$dirhost_any = true ||"));

        let mut off = c.clone();
        off.webmail.enabled = false;
        let mut out = Desired::default();
        render(&off, &tera(), &mut out).unwrap();
        assert!(out.files.is_empty());

        let mut bad = c;
        bad.webmail.config_dir = "/etc/dirhost/round'cube".into();
        assert!(render(&bad, &tera(), &mut Desired::default()).is_err());
    }

    #[test]
    fn connects_to_loopback_when_it_can() {
        let mut c = cfg(Path::new("/tmp/sb"));
        c.mail.listen = vec![];
        assert_eq!(local_address(&c), "127.0.0.1");
        c.mail.listen = vec!["::1".into()];
        assert_eq!(local_address(&c), "[::1]");
        c.mail.listen = vec!["192.0.2.1".into(), "127.0.0.1".into()];
        assert_eq!(local_address(&c), "127.0.0.1");
    }
}
