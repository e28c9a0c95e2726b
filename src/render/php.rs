//! PHP-FPM pools: one pool file per served domain whose PHP is on, plus what the domain's
//! Apache vhost needs to hand `.php` to that pool ([`ApacheView`]).
//!
//! Owns the pool's shape (through `templates/php/pool.conf.tera`): it runs as the domain's
//! owner and group (numeric ids, so owners need no passwd entry), listens on a unix socket
//! only Apache's user can use, starts processes on demand, and is confined with
//! `open_basedir` to the domain's directory, with its own temp and session directories and
//! the `[php] disable_functions` list. The owner's `config/php.ini` settings (validated by
//! `php::ini`) go in last.
//!
//! Must not: read /srv or decide anything about a domain's switches (that is `php::read`);
//! put an unvalidated value into a pool file (every path goes through `safe_path`, every
//! setting through `php::ini`); write anything (files reach disk through plan and apply,
//! sealed with `checksum::seal_ini`, as `Service::Php`).

use anyhow::{Context, Result};
use serde::Serialize;

use super::{DesiredFile, FileKind, Service, safe_path};
use crate::checksum;
use crate::config::Config;
use crate::model::Domain;
use crate::php::{self, State};

/// The template a pool is rendered from (an admin override has the same relative name).
pub const POOL_TEMPLATE: &str = "php/pool.conf.tera";

/// What the Apache site template needs about PHP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApacheView {
    /// `fpm`: `.php` goes to the domain's pool; `off`: PHP is off for the domain and `.php`
    /// is refused; `none`: dirhost manages no PHP on this server (`.php` is refused unless
    /// an Apache PHP module handles it).
    pub mode: &'static str,
    /// The pool's socket (`fpm` only).
    pub socket: String,
}

impl ApacheView {
    /// No PHP of the domain's own (a webmail-only vhost): `.php` is refused.
    pub fn none() -> Self {
        Self {
            mode: "none",
            socket: String::new(),
        }
    }

    /// The view for a domain in `state`, or the error that leaves it out.
    pub fn new(cfg: &Config, d: &Domain, state: &State) -> Result<Self> {
        Ok(match state {
            State::On { .. } => {
                let socket = php::socket_path(cfg, &d.name).map_err(anyhow::Error::msg)?;
                safe_path(&socket).context("[php] socket_dir cannot be used in a config")?;
                Self {
                    mode: "fpm",
                    socket: socket.display().to_string(),
                }
            }
            State::Off { .. } if cfg.php.enabled => Self {
                mode: "off",
                socket: String::new(),
            },
            State::Off { .. } => Self {
                mode: "none",
                socket: String::new(),
            },
        })
    }
}

#[derive(Serialize)]
struct PoolView<'a> {
    domain: &'a str,
    override_dir: String,
    uid: u32,
    gid: u32,
    socket: String,
    socket_user: &'a str,
    socket_group: &'a str,
    max_children: u32,
    idle_timeout_secs: u32,
    dir: String,
    tmp_dir: String,
    session_dir: String,
    disable_functions: &'a [String],
    settings: &'a [php::ini::Setting],
}

/// The pool file of `d`, or `None` when its PHP is off.
pub fn render_pool(
    d: &Domain,
    state: &State,
    cfg: &Config,
    tera: &tera::Tera,
) -> Result<Option<DesiredFile>> {
    let State::On { settings } = state else {
        return Ok(None);
    };
    safe_path(&d.dir).context("the domain's directory name cannot be used in a pool")?;
    let path = php::pool_file(cfg, &d.name);
    safe_path(&path).context("[php] pool_dir cannot be used")?;
    let socket = php::socket_path(cfg, &d.name).map_err(anyhow::Error::msg)?;
    safe_path(&socket).context("[php] socket_dir cannot be used in a pool")?;
    let view = PoolView {
        domain: &d.name,
        override_dir: cfg.paths.templates.display().to_string(),
        uid: d.uid,
        gid: d.gid,
        socket: socket.display().to_string(),
        socket_user: &cfg.php.socket_user,
        socket_group: &cfg.php.socket_group,
        max_children: cfg.php.max_children,
        idle_timeout_secs: cfg.php.idle_timeout_secs,
        dir: d.dir.display().to_string(),
        tmp_dir: d.dir.join(php::TMP_DIR).display().to_string(),
        session_dir: d.dir.join(php::SESSION_DIR).display().to_string(),
        disable_functions: &cfg.php.disable_functions,
        settings,
    };
    let text = tera
        .render(POOL_TEMPLATE, &tera::Context::from_serialize(&view)?)
        .with_context(|| format!("failed to render {POOL_TEMPLATE}"))?;
    Ok(Some(DesiredFile {
        path,
        contents: checksum::seal_ini(&text),
        mode: 0o644,
        kind: FileKind::Config,
        domain: Some(d.name.clone()),
        service: Service::Php,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain {
        Domain {
            aliases: vec!["www.example.com".into()],
            ..Domain::for_test("example.com", "/srv/example.com", 2001, 2002)
        }
    }

    fn cfg() -> Config {
        let mut c = Config::default();
        c.php.enabled = true;
        c.php.pool_dir = "/etc/php/8.2/fpm/pool.d".into();
        c
    }

    fn tera() -> tera::Tera {
        super::super::templates(std::path::Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn pool_runs_as_the_owner_confined_to_the_domain() {
        let settings = php::ini::parse(b"memory_limit = 256M\ndisplay_errors = on\n").unwrap();
        let f = render_pool(&domain(), &State::On { settings }, &cfg(), &tera())
            .unwrap()
            .unwrap();
        assert_eq!(
            f.path,
            std::path::Path::new("/etc/php/8.2/fpm/pool.d/example.com.conf")
        );
        assert_eq!((f.service, f.kind), (Service::Php, FileKind::Config));
        assert_eq!(f.domain.as_deref(), Some("example.com"));
        assert_eq!(
            checksum::inspect(f.contents.as_bytes()),
            checksum::Seal::Intact
        );
        let c = &f.contents;
        for want in [
            "[example.com]\n",
            "user = 2001\n",
            "group = 2002\n",
            "listen = /run/php/dirhost-example.com.sock\n",
            "listen.owner = www-data\n",
            "listen.mode = 0660\n",
            "pm = ondemand\n",
            "php_admin_value[open_basedir] = /srv/example.com/\n",
            "php_admin_value[session.save_path] = /srv/example.com/php/sessions\n",
            "php_admin_value[upload_tmp_dir] = /srv/example.com/php/tmp\n",
            "php_admin_value[disable_functions] = exec,passthru,shell_exec,system,proc_open,popen,",
            "php_admin_value[user_ini.filename] =\n",
            "php_admin_value[memory_limit] = 256M\n",
            "php_value[display_errors] = on\n",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        // php-fpm refuses `#` lines: every comment, the seal included, uses `;`.
        assert!(!c.lines().any(|l| l.starts_with('#')), "{c}");
    }

    #[test]
    fn no_pool_when_off_and_apache_view_per_state() {
        let off = State::Off {
            reason: "switched off by config/php".into(),
        };
        assert_eq!(render_pool(&domain(), &off, &cfg(), &tera()).unwrap(), None);
        let on = State::On {
            settings: Vec::new(),
        };
        let v = ApacheView::new(&cfg(), &domain(), &on).unwrap();
        assert_eq!(
            (v.mode, v.socket.as_str()),
            ("fpm", "/run/php/dirhost-example.com.sock")
        );
        assert_eq!(
            ApacheView::new(&cfg(), &domain(), &off).unwrap().mode,
            "off"
        );
        let mut none = cfg();
        none.php.enabled = false;
        assert_eq!(
            ApacheView::new(&none, &domain(), &off).unwrap().mode,
            "none"
        );
        let mut bad = cfg();
        bad.php.socket_dir = "/run/my php".into();
        assert!(ApacheView::new(&bad, &domain(), &on).is_err());
        assert!(render_pool(&domain(), &on, &bad, &tera()).is_err());
    }
}
