//! Turns the model into the files the servers should see: a pure function of the model, the
//! config and the templates.
//!
//! Templates live in `templates/{apache,exim,dovecot}` and are compiled into the binary; an
//! admin replaces one by putting a file with the same relative name under
//! `[paths] templates`. Templates format; they do not decide: every decision (addresses,
//! redirects, which certificate) is made here in Rust, on values the model validated.
//!
//! A domain whose render fails is reported and left out; the others are unaffected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::checksum;
use crate::config::Config;
use crate::model::{Domain, Model, VhostKind};

pub mod mail;
pub mod php;

/// Which server a file belongs to: decides which config test and reload it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// PHP-FPM (a pool per domain). Ordered first: apply reloads services in this order,
    /// so a new site's pool exists before Apache sends it requests.
    Php,
    /// Apache httpd.
    Apache,
    /// Exim (mail transfer).
    Exim,
    /// Dovecot (IMAP/POP3, authentication for Exim).
    Dovecot,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Apache => "apache",
            Self::Exim => "exim",
            Self::Dovecot => "dovecot",
            Self::Php => "php-fpm",
        })
    }
}

/// How a file is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A config file an admin may edit: sealed with a checksum line; hand edits are kept.
    Config,
    /// dirhost's private copy (e.g. a verified certificate): replaced whenever it differs.
    Private,
}

/// One file the servers should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Full contents (sealed, for `FileKind::Config`).
    pub contents: String,
    /// Permission bits.
    pub mode: u32,
    /// Protection rule.
    pub kind: FileKind,
    /// The domain it serves, `None` for shared files.
    pub domain: Option<String>,
    /// The server that reads it.
    pub service: Service,
}

/// A symlink that enables a config (Debian's `a2ensite`/`a2enconf` layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    /// The link, e.g. `/etc/apache2/sites-enabled/example.com.conf`.
    pub path: PathBuf,
    /// Its target, e.g. `../sites-available/example.com.conf`.
    pub target: PathBuf,
    /// The file it enables.
    pub enables: PathBuf,
    /// The domain it serves, `None` for shared files.
    pub domain: Option<String>,
    /// The server that reads it.
    pub service: Service,
}

/// Everything that should exist after an apply.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Files, in a stable order.
    pub files: Vec<DesiredFile>,
    /// Enabling symlinks.
    pub links: Vec<DesiredLink>,
    /// Domains that failed to render, with the error: they are left as they are on disk.
    pub failed: BTreeMap<String, String>,
}

/// Built-in templates, by the relative name an admin override uses.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "exim/exim4.conf.tera",
        include_str!("../../templates/exim/exim4.conf.tera"),
    ),
    (
        "dovecot/local.conf.tera",
        include_str!("../../templates/dovecot/local.conf.tera"),
    ),
    (
        php::POOL_TEMPLATE,
        include_str!("../../templates/php/pool.conf.tera"),
    ),
    (
        "apache/dirhost.conf.tera",
        include_str!("../../templates/apache/dirhost.conf.tera"),
    ),
    (
        "apache/site.conf.tera",
        include_str!("../../templates/apache/site.conf.tera"),
    ),
    (
        "apache/site-body.tera",
        include_str!("../../templates/apache/site-body.tera"),
    ),
    (
        crate::webmail::render::APACHE_TEMPLATE,
        include_str!("../../templates/apache/webmail.tera"),
    ),
    (
        crate::webmail::render::CONFIG_TEMPLATE,
        include_str!("../../templates/roundcube/config.inc.php.tera"),
    ),
    (
        crate::webmail::render::DEFAULTS_TEMPLATE,
        include_str!("../../templates/roundcube/defaults.inc.php.tera"),
    ),
    (
        crate::webmail::render::POOL_TEMPLATE,
        include_str!("../../templates/roundcube/pool.conf.tera"),
    ),
    (
        "apache/stats.tera",
        include_str!("../../templates/apache/stats.tera"),
    ),
    (
        "apache/site-defaults.tera",
        include_str!("../../templates/apache/site-defaults.tera"),
    ),
    (
        WEBMAIL_SITE_TEMPLATE,
        include_str!("../../templates/apache/webmail-site.conf.tera"),
    ),
];

/// Where dirhost's generated files live, all derived from the config in one place.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<apache>/sites-available`.
    pub sites_available: PathBuf,
    /// `<apache>/sites-enabled`.
    pub sites_enabled: PathBuf,
    /// `<apache>/conf-available`.
    pub conf_available: PathBuf,
    /// `<apache>/conf-enabled`.
    pub conf_enabled: PathBuf,
    /// `<state>/acme-challenge`: HTTP-01 tokens, served on port 80 for every name.
    pub acme_dir: PathBuf,
    /// `<state>/ssl`: verified copies of each domain's live certificate set.
    pub ssl_dir: PathBuf,
    /// `[php] pool_dir`: one PHP-FPM pool file per domain.
    pub php_pool_dir: PathBuf,
}

impl Layout {
    /// Derives every generated path from the config.
    pub fn new(cfg: &Config) -> Self {
        let a = &cfg.paths.apache;
        Self {
            sites_available: a.join("sites-available"),
            sites_enabled: a.join("sites-enabled"),
            conf_available: a.join("conf-available"),
            conf_enabled: a.join("conf-enabled"),
            acme_dir: cfg.paths.state.join("acme-challenge"),
            ssl_dir: cfg.paths.state.join("ssl"),
            php_pool_dir: cfg.php.pool_dir.clone(),
        }
    }

    /// The vhost file of `domain`.
    pub fn site_file(&self, domain: &str) -> PathBuf {
        self.sites_available.join(format!("{domain}.conf"))
    }

    /// The shared snippet.
    pub fn shared_file(&self) -> PathBuf {
        self.conf_available.join("dirhost.conf")
    }
}

/// Loads the templates: built-ins, then the admin's overrides from `dir` (same names).
pub fn templates(dir: &Path) -> Result<tera::Tera> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    let mut sources: Vec<(String, String)> = Vec::new();
    for (name, builtin) in BUILTIN {
        let over = dir.join(name);
        let text = match std::fs::read_to_string(&over) {
            Ok(t) => {
                tracing::debug!(template = %name, path = %over.display(), "using admin override");
                t
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*builtin).to_string(),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to read template {}", over.display()));
            }
        };
        sources.push(((*name).to_string(), text));
    }
    tera.add_raw_templates(sources)
        .context("failed to compile templates")?;
    Ok(tera)
}

/// What identifies a compiled template set: the override directory and, for every template
/// name, the override file's identity (`None`: absent, the built-in is used).
type TemplateKey = (PathBuf, Vec<Option<(u64, u64, i64, i64, u64)>>);

fn template_key(dir: &Path) -> TemplateKey {
    use std::os::unix::fs::MetadataExt;
    let files = BUILTIN
        .iter()
        .map(|(name, _)| {
            std::fs::metadata(dir.join(name))
                .ok()
                .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
        })
        .collect();
    (dir.to_path_buf(), files)
}

/// [`templates`], compiled once per process and reused while the override directory and
/// its files stay the same (checked with one `stat` per template name on every call, so an
/// admin's edit or a new `[paths] templates` after SIGHUP is picked up by the next call).
/// Compiling costs 5–7 ms; the daemon reconciles one domain in less than that.
pub fn templates_cached(dir: &Path) -> Result<std::sync::Arc<tera::Tera>> {
    use std::sync::Arc;
    let key = template_key(dir);
    let mut cache = TEMPLATE_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, t)) = cache.as_ref()
        && *k == key
    {
        return Ok(Arc::clone(t));
    }
    let tera = Arc::new(templates(dir)?);
    *cache = Some((key, Arc::clone(&tera)));
    Ok(tera)
}

/// Forgets the compiled templates (the next [`templates_cached`] compiles them again), e.g.
/// on SIGHUP.
pub fn clear_template_cache() {
    *TEMPLATE_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

type CachedTemplates = Option<(TemplateKey, std::sync::Arc<tera::Tera>)>;
static TEMPLATE_CACHE: std::sync::Mutex<CachedTemplates> = std::sync::Mutex::new(None);

/// The command line Apache runs as its piped access-log writer.
pub fn log_writer_command(cfg: &Config, config_path: &Path) -> String {
    format!(
        "{} log-writer --config {}",
        cfg.commands.dirhost.display(),
        config_path.display()
    )
}

/// Renders every file for `model`. `config_path` is where the running config was read from
/// (the log writer is told to read the same one).
///
/// A pure function of a model loaded with its services ([`crate::model::load_with_services`],
/// as `reconcile` does). Given a model without them (a caller that used `model::load`
/// alone), they are loaded into a copy first.
pub fn render(
    model: &Model,
    cfg: &Config,
    config_path: &Path,
    tera: &tera::Tera,
) -> Result<Desired> {
    let model = model.with_services(cfg);
    let model: &Model = &model;
    let services = model
        .services
        .as_ref()
        .context("the model's service facts are missing")?;
    let layout = Layout::new(cfg);
    for (what, p) in [
        ("[paths] srv", cfg.paths.srv.as_path()),
        ("[paths] state", cfg.paths.state.as_path()),
        ("[paths] templates", cfg.paths.templates.as_path()),
        ("[commands] dirhost", cfg.commands.dirhost.as_path()),
        ("--config", config_path),
    ] {
        safe_path(p).with_context(|| format!("{what} cannot be used in a generated config"))?;
    }
    let mut out = Desired::default();

    let shared = SharedView {
        srv: cfg.paths.srv.display().to_string(),
        acme_dir: layout.acme_dir.display().to_string(),
        override_dir: cfg.paths.templates.display().to_string(),
        http_port: cfg.ports.http,
        hostname: cfg.hostname(),
        log_writer: log_writer_command(cfg, config_path),
        trusted_proxies: cfg.web.trusted_proxies.clone(),
        proxy_exceptions: crate::net::complement(&cfg.web.trusted_proxies)?,
    };
    let text = tera
        .render(
            "apache/dirhost.conf.tera",
            &tera::Context::from_serialize(&shared)?,
        )
        .context("failed to render apache/dirhost.conf.tera")?;
    let shared_file = layout.shared_file();
    out.links.push(DesiredLink {
        path: layout.conf_enabled.join("dirhost.conf"),
        target: PathBuf::from("../conf-available/dirhost.conf"),
        enables: shared_file.clone(),
        domain: None,
        service: Service::Apache,
    });
    out.files.push(DesiredFile {
        path: shared_file,
        contents: checksum::seal(&text),
        mode: 0o644,
        kind: FileKind::Config,
        domain: None,
        service: Service::Apache,
    });

    // Every domain with a vhost: sites, and mail-only domains whose webmail is wanted.
    let web: Vec<(&Domain, VhostKind)> = model
        .domains
        .values()
        .filter_map(|d| Some((d, model.vhost_kind(cfg, &d.name)?)))
        .collect();
    let rendered = crate::model::par_map(&web, |&(d, kind)| {
        if kind == VhostKind::WebmailOnly {
            let wanted = services.webmail.get(&d.name).cloned().unwrap_or(Ok(false));
            return match crate::webmail::site_view(cfg, d, wanted)? {
                // Webmail unusable on this server (reported once below): no vhost at all.
                None => Ok(None),
                Some(webmail) => render_site(
                    d,
                    cfg,
                    &layout,
                    tera,
                    WEBMAIL_SITE_TEMPLATE,
                    php::ApacheView::none(),
                    Some(webmail),
                    crate::stats::ApacheView::default(),
                )
                .map(Some),
            };
        }
        // PHP first: a refused config/php or config/php.ini leaves the whole domain as it was.
        let state = services
            .php
            .get(&d.name)
            .cloned()
            .unwrap_or_else(|| Err("its PHP settings were not read".into()));
        state.map_err(anyhow::Error::msg).and_then(|state| {
            let view = php::ApacheView::new(cfg, d, &state)?;
            let pool = php::render_pool(d, &state, cfg, tera)?;
            let wanted = services.webmail.get(&d.name).cloned().unwrap_or(Ok(false));
            let webmail = crate::webmail::site_view(cfg, d, wanted)?;
            let stats = services
                .stats
                .get(&d.name)
                .map_or_else(crate::stats::ApacheView::default, |s| {
                    crate::stats::apache_view(cfg, d, s)
                });
            let (mut files, link) = render_site(
                d,
                cfg,
                &layout,
                tera,
                "apache/site.conf.tera",
                view,
                webmail,
                stats,
            )?;
            files.extend(pool);
            Ok(Some((files, link)))
        })
    });
    for ((d, _), rendered) in web.into_iter().zip(rendered) {
        match rendered {
            Ok(None) => {}
            Ok(Some((files, link))) => {
                out.files.extend(files);
                out.links.push(link);
            }
            Err(e) => {
                tracing::error!(domain = %d.name, "failed to render: {e:#}");
                out.failed.insert(d.name.clone(), format!("{e:#}"));
            }
        }
    }
    // Mail problems never hold Apache back: the mail files are then left as they are.
    if let Err(e) = mail::render(model, &services.mail, cfg, tera, &mut out) {
        tracing::error!("mail: Exim's and Dovecot's configuration was not rendered: {e:#}");
    }
    if let Err(e) = crate::webmail::render(cfg, tera, &mut out) {
        tracing::error!("webmail: Roundcube's configuration was not rendered: {e:#}");
    }
    Ok(out)
}

#[derive(Serialize)]
struct SharedView {
    srv: String,
    acme_dir: String,
    override_dir: String,
    http_port: u16,
    hostname: String,
    log_writer: String,
    trusted_proxies: Vec<String>,
    proxy_exceptions: Vec<String>,
}

#[derive(Serialize)]
struct SiteView {
    domain: String,
    aliases: Vec<String>,
    http_addrs: Vec<String>,
    https_addrs: Vec<String>,
    https_port_suffix: String,
    docroot: String,
    cgi_bin: String,
    cgi: bool,
    override_dir: String,
    mandatory_ssl: bool,
    hsts: bool,
    ssl: Option<SslView>,
    php: php::ApacheView,
    webmail: Option<crate::webmail::ApacheView>,
    stats: crate::stats::ApacheView,
    /// Addresses that need a default vhost before this site's (see `site-defaults.tera`).
    default_http: Vec<DefaultView>,
    default_https: Vec<DefaultView>,
    acme_dir: String,
}

/// A default vhost for one address, defined by whichever site file Apache reads first.
#[derive(Serialize)]
struct DefaultView {
    addr: String,
    /// The `Define` variable that marks it as defined.
    guard: String,
}

impl DefaultView {
    fn new(addr: &str) -> Self {
        let guard: String = addr
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Self {
            addr: addr.to_string(),
            guard: format!("dirhost_default_{guard}"),
        }
    }
}

#[derive(Serialize)]
struct SslView {
    set: String,
    chain: String,
    key: String,
}

/// The vhost of a mail-only domain ([`VhostKind::WebmailOnly`]).
pub const WEBMAIL_SITE_TEMPLATE: &str = "apache/webmail-site.conf.tera";

#[allow(clippy::too_many_arguments)]
fn render_site(
    d: &Domain,
    cfg: &Config,
    layout: &Layout,
    tera: &tera::Tera,
    template: &str,
    php: php::ApacheView,
    webmail: Option<crate::webmail::ApacheView>,
    stats: crate::stats::ApacheView,
) -> Result<(Vec<DesiredFile>, DesiredLink)> {
    safe_path(&d.dir).context("the domain's directory name cannot be used in a config")?;
    let mut files = Vec::new();
    let ssl = match &d.cert {
        Some(set) => {
            let dir = layout.ssl_dir.join(&d.name);
            let chain = dir.join("chain.pem");
            let key = dir.join("key.pem");
            for (path, contents) in [(&chain, &set.chain_pem), (&key, &set.key_pem)] {
                files.push(DesiredFile {
                    path: path.clone(),
                    contents: contents.clone(),
                    mode: 0o600,
                    kind: FileKind::Private,
                    domain: Some(d.name.clone()),
                    service: Service::Apache,
                });
            }
            Some(SslView {
                set: set.name.clone(),
                chain: chain.display().to_string(),
                key: key.display().to_string(),
            })
        }
        None => None,
    };
    let http_addrs = addrs(d, cfg.ports.http);
    let https_addrs = addrs(d, cfg.ports.https);
    let view = SiteView {
        domain: d.name.clone(),
        aliases: d.aliases.clone(),
        // `*:http` has its default in the shared file; specific addresses and HTTPS do not.
        default_http: http_addrs
            .iter()
            .filter(|a| !a.starts_with('*'))
            .map(|a| DefaultView::new(a))
            .collect(),
        default_https: https_addrs.iter().map(|a| DefaultView::new(a)).collect(),
        acme_dir: layout.acme_dir.display().to_string(),
        http_addrs,
        https_addrs,
        https_port_suffix: if cfg.ports.https == 443 {
            String::new()
        } else {
            format!(":{}", cfg.ports.https)
        },
        docroot: d.dir.join("public/htdocs").display().to_string(),
        cgi_bin: d.dir.join("public/cgi-bin").display().to_string(),
        cgi: cfg.web.cgi,
        override_dir: cfg.paths.templates.display().to_string(),
        mandatory_ssl: d.mandatory_ssl,
        hsts: d.hsts,
        ssl,
        php,
        webmail,
        stats,
    };
    let text = tera
        .render(template, &tera::Context::from_serialize(&view)?)
        .with_context(|| format!("failed to render {template}"))?;
    let path = layout.site_file(&d.name);
    let link = DesiredLink {
        path: layout.sites_enabled.join(format!("{}.conf", d.name)),
        target: PathBuf::from(format!("../sites-available/{}.conf", d.name)),
        enables: path.clone(),
        domain: Some(d.name.clone()),
        service: Service::Apache,
    };
    files.push(DesiredFile {
        path,
        contents: checksum::seal(&text),
        mode: 0o644,
        kind: FileKind::Config,
        domain: Some(d.name.clone()),
        service: Service::Apache,
    });
    Ok((files, link))
}

/// `<VirtualHost>` addresses: every address (`*:port`) unless `config/ip` names some.
pub fn addrs(d: &Domain, port: u16) -> Vec<String> {
    if d.ips.is_empty() {
        return vec![format!("*:{port}")];
    }
    d.ips
        .iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        })
        .collect()
}

/// A path that can stand inside a quoted Apache argument and in a piped-log command line:
/// absolute, printable, no whitespace, quotes, backslashes or expansion characters.
pub fn safe_path(p: &Path) -> Result<()> {
    let s = p
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", p.display()))?;
    anyhow::ensure!(p.is_absolute(), "{s:?} is not absolute");
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'\\$%`#<>;|&*?{}".contains(*c))
    {
        anyhow::bail!("{s:?} contains {c:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        for ok in [
            "/srv/example.com",
            "/srv/bücher.de",
            "/tmp/.tmpAb12/srv/a-b_c.d",
        ] {
            assert!(safe_path(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "relative",
            "/srv/a b",
            "/srv/a\"b",
            "/srv/a\nb",
            "/srv/${x}",
            "/srv/a%b",
            "/srv/a#b",
            "/srv/a<b",
        ] {
            assert!(safe_path(Path::new(bad)).is_err(), "{bad:?}");
        }
    }
}
