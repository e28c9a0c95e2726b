//! PHP for every site, confined to its domain: what dirhost knows about PHP-FPM and about
//! each domain's PHP switches.
//!
//! Owns:
//! * finding the installed PHP-FPM ([`installed_versions`], [`default_version`]), from which
//!   the `[php]` and `[commands] php_*` defaults are derived;
//! * reading a domain's `config/php` (off when it says `false`/`no`) and `config/php.ini`
//!   (an allow-list, see [`ini`]) through `safefs`, acting as the domain's owner
//!   ([`read`]): the result is a [`State`], or a refusal in words the owner can act on;
//! * where a domain's pool file and socket are ([`pool_file`], [`socket_path`]) and the
//!   private directories PHP uses inside the domain ([`DIRS`], [`ensure_dirs`], [`prepare`]).
//!
//! Must not: write anywhere but the domain's own `php/` directory (and only through
//! `safefs`, as the owner), spawn processes, or touch PHP-FPM's own configuration (pool
//! files are rendered by `render::php` and written by `apply` like every other file).

pub mod ini;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::config::Config;
use crate::model::validate::Flag;
use crate::model::{Domain, Model};
use crate::safefs;

/// The PHP version assumed when no PHP-FPM is installed (Debian bookworm's).
pub const FALLBACK_VERSION: &str = "8.2";

/// Where Debian installs `php-fpm<version>`.
const SBIN: &str = "/usr/sbin";

/// The directory under `/srv/<domain>/` that holds PHP's private directories.
pub const PHP_DIR: &str = "php";
/// `php/tmp`: uploads in progress (`upload_tmp_dir`) and `sys_get_temp_dir()`.
pub const TMP_DIR: &str = "php/tmp";
/// `php/sessions`: `session.save_path`.
pub const SESSION_DIR: &str = "php/sessions";
/// Every directory [`ensure_dirs`] creates, in creation order, with its mode.
pub const DIRS: &[(&str, u32)] = &[(PHP_DIR, 0o700), (TMP_DIR, 0o700), (SESSION_DIR, 0o700)];

/// Longest path a unix socket may have (`sun_path` is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// PHP-FPM versions installed as `/usr/sbin/php-fpm<major>.<minor>`, newest first.
pub fn installed_versions(sbin: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(sbin) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, u32)> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| parse_version(n.strip_prefix("php-fpm")?))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.dedup();
    found.into_iter().map(|(a, b)| format!("{a}.{b}")).collect()
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The newest installed PHP-FPM version (looked up once per process), `None` when PHP-FPM
/// is not installed.
pub fn default_version() -> Option<&'static str> {
    static V: OnceLock<Option<String>> = OnceLock::new();
    V.get_or_init(|| installed_versions(Path::new(SBIN)).into_iter().next())
        .as_deref()
}

/// [`default_version`], or [`FALLBACK_VERSION`] when none is installed.
pub fn version_or_fallback() -> &'static str {
    default_version().unwrap_or(FALLBACK_VERSION)
}

/// A domain's PHP, as its `config/` files and the server's `[php]` settings decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// A pool runs the domain's PHP, with these owner settings on top of dirhost's.
    On {
        /// From `config/php.ini`, validated.
        settings: Vec<ini::Setting>,
    },
    /// No pool; `.php` files are refused by Apache, never served as source.
    Off {
        /// Why.
        reason: String,
    },
}

impl State {
    /// PHP runs for the domain.
    pub fn is_on(&self) -> bool {
        matches!(self, Self::On { .. })
    }
}

/// Reads a domain's `config/php` and `config/php.ini` (through `safefs`, as the owner).
///
/// `Err` is a refusal to report: a `config/php` that is neither on nor off, a `php.ini` with
/// a setting outside the allow-list or a bad value, or a file that cannot be read safely
/// (symlink, FIFO, too large). The caller leaves the domain's previous configuration in
/// place rather than guess.
pub fn read(cfg: &Config, srv: &Path, d: &Domain) -> Result<State, String> {
    let dir = safefs::LazyDir::new(srv, Path::new(&d.dir_name));
    read_known(cfg, &dir, d, None)
}

/// [`read`], given the names in the domain's `config/` when the caller listed it already
/// (the model did): a file that is not there is not read. `dir` is the domain's directory
/// (opened only if something is read; both files in one batch as the owner).
pub fn read_known(
    cfg: &Config,
    dir: &safefs::LazyDir<'_>,
    d: &Domain,
    config: Option<&std::collections::BTreeSet<String>>,
) -> Result<State, String> {
    if !cfg.php.enabled {
        return Ok(State::Off {
            reason: "dirhost manages no PHP on this server ([php] enabled = false)".into(),
        });
    }
    let as_owner = dir.as_owner(d.owner());
    let file = |name: &str| {
        if config.is_some_and(|c| !c.contains(name)) {
            return Ok(None);
        }
        as_owner
            .read(&Path::new("config").join(name), safefs::MAX_VALUE_FILE)
            .map_err(|e| format!("config/{name}: {e}"))
    };
    let flag = Flag::parse(file("php")?.as_deref()).map_err(|e| format!("config/php: {e}"))?;
    match flag {
        Flag::Unset | Flag::True => {}
        Flag::False => {
            return Ok(State::Off {
                reason: "switched off by config/php".into(),
            });
        }
        Flag::Value(v) => {
            return Err(format!(
                "config/php says {:?}: it must be empty, true/yes (PHP on) or false/no (PHP off)",
                v.trim()
            ));
        }
    }
    let settings = match file("php.ini")? {
        None => Vec::new(),
        Some(bytes) => ini::parse(&bytes).map_err(|e| {
            format!(
                "{e} (nothing in config/php.ini was applied; the previous configuration is kept)"
            )
        })?,
    };
    Ok(State::On { settings })
}

/// `<[php] pool_dir>/<domain>.conf`.
pub fn pool_file(cfg: &Config, domain: &str) -> PathBuf {
    cfg.php.pool_dir.join(format!("{domain}.conf"))
}

/// The pool's socket: `<[php] socket_dir>/dirhost-<domain>.sock`, or, when that is longer
/// than a unix socket path may be, `dirhost-<md5 of the name>.sock`. `Err` when even that
/// does not fit (the socket directory's path is too long).
pub fn socket_path(cfg: &Config, domain: &str) -> Result<PathBuf, String> {
    let dir = &cfg.php.socket_dir;
    let named = dir.join(format!("dirhost-{domain}.sock"));
    if named.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(named);
    }
    use md5::{Digest, Md5};
    let hex: String = Md5::digest(domain.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hashed = dir.join(format!("dirhost-{hex}.sock"));
    if hashed.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(hashed);
    }
    Err(format!(
        "[php] socket_dir {} is too long for a unix socket path",
        dir.display()
    ))
}

/// Creates `php/`, `php/tmp` and `php/sessions` under the domain, as its owner, through
/// `safefs` (never through a symlink). Existing directories are left as they are.
pub fn ensure_dirs(srv: &Path, d: &Domain) -> Result<(), String> {
    for (rel, mode) in DIRS {
        let path = PathBuf::from(&d.dir_name).join(rel);
        safefs::mkdir_all(srv, &path, d.owner(), *mode).map_err(|e| format!("{rel}: {e}"))?;
    }
    Ok(())
}

/// Creates PHP's private directories for every served domain whose PHP is on (as the model's
/// [`crate::model::Services`] say, when loaded). Run before a
/// (non dry-run) apply; returns `(domain, warning)` for the domains where that failed (their
/// sites still work, but sessions and uploads will not until it is fixed).
pub fn prepare(cfg: &Config, model: &Model) -> Vec<(String, String)> {
    let srv = &cfg.paths.srv;
    let web: Vec<&Domain> = model.domains.values().filter(|d| d.web).collect();
    // One descriptor of /srv for the pass: each listing walks from it, not from a new open.
    let srv_dir = safefs::Dir::open_base(srv);
    crate::model::par_map(&web, |d| {
        // The switches read in the model phase; read them here only for a model without.
        let on = match model.services.as_ref().and_then(|s| s.php.get(&d.name)) {
            Some(state) => matches!(state, Ok(State::On { .. })),
            None => matches!(read(cfg, srv, d), Ok(State::On { .. })),
        };
        if !on {
            return None;
        }
        // Both already there (every apply but the first): one listing of `php/`, no owner
        // switch. Only a hint to skip work: whatever else is there is the owner's business,
        // and a missing entry goes through `ensure_dirs`, which never follows a link.
        let php_dir = PathBuf::from(&d.dir_name).join(PHP_DIR);
        let listed = match &srv_dir {
            Ok(srv_dir) => srv_dir.list_dir(&php_dir),
            Err(_) => safefs::list_dir(srv, &php_dir),
        };
        if let Ok(Some(names)) = listed {
            let has = |rel: &str| {
                let name = rel.rsplit('/').next().unwrap_or(rel);
                names.iter().any(|n| n == name)
            };
            if has(TMP_DIR) && has(SESSION_DIR) {
                return None;
            }
        }
        let e = ensure_dirs(srv, d).err()?;
        let w = format!("PHP's private directory could not be created: {e}");
        tracing::warn!(domain = %d.name, "{w}");
        Some((d.name.clone(), w))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// A domain's PHP for `dirhost web list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `on`, `off` or `refused`.
    pub state: &'static str,
    /// The owner's accepted settings (`on` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<ini::Setting>,
    /// Why it is off or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pool's socket (`on` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

/// The PHP status of `d` (which must be a served domain to have PHP at all).
pub fn status(cfg: &Config, d: &Domain) -> Status {
    if !d.web {
        return Status {
            state: "off",
            settings: Vec::new(),
            reason: Some("no public/htdocs".into()),
            socket: None,
        };
    }
    match read(cfg, &cfg.paths.srv, d) {
        Ok(State::On { settings }) => Status {
            state: "on",
            settings,
            reason: None,
            socket: socket_path(cfg, &d.name).ok(),
        },
        Ok(State::Off { reason }) => Status {
            state: "off",
            settings: Vec::new(),
            reason: Some(reason),
            socket: None,
        },
        Err(reason) => Status {
            state: "refused",
            settings: Vec::new(),
            reason: Some(reason),
            socket: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_installed_versions_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "php-fpm7.4",
            "php-fpm8.2",
            "php-fpm8.10",
            "php-fpm",
            "php-fpm8",
            "php-fpm8.2.bak",
            "php-fpmx.y",
            "php8.2",
        ] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        assert_eq!(installed_versions(dir.path()), ["8.10", "8.2", "7.4"]);
        assert!(installed_versions(&dir.path().join("missing")).is_empty());
    }

    fn domain_in(srv: &Path, name: &str) -> Domain {
        use std::os::unix::fs::MetadataExt;
        let dir = srv.join(name);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        Domain::for_test(name, dir, m.uid(), m.gid())
    }

    #[test]
    fn reads_the_switch_and_the_allow_list() {
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path();
        let d = domain_in(srv, "example.com");
        let mut cfg = Config::default();
        cfg.php.enabled = true;
        let config = d.dir.join("config");
        let r = || read(&cfg, srv, &d);
        assert_eq!(
            r(),
            Ok(State::On {
                settings: Vec::new()
            })
        );
        std::fs::write(config.join("php.ini"), "memory_limit = 64M\n").unwrap();
        match r() {
            Ok(State::On { settings }) => assert_eq!(settings[0].value, "64M"),
            other => panic!("{other:?}"),
        }
        std::fs::write(config.join("php.ini"), "open_basedir = /\n").unwrap();
        let e = r().unwrap_err();
        assert!(e.contains("line 1") && e.contains("open_basedir"), "{e}");
        std::fs::write(config.join("php"), "false\n").unwrap();
        assert!(
            matches!(r(), Ok(State::Off { .. })),
            "off wins over a bad php.ini"
        );
        std::fs::write(config.join("php"), "yes").unwrap();
        std::fs::remove_file(config.join("php.ini")).unwrap();
        assert!(r().unwrap().is_on());
        std::fs::write(config.join("php"), "8.1").unwrap();
        assert!(r().unwrap_err().contains("config/php says \"8.1\""));
        std::fs::remove_file(config.join("php")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", config.join("php.ini")).unwrap();
        assert!(r().unwrap_err().contains("symbolic link"));
        let mut off = cfg.clone();
        off.php.enabled = false;
        assert!(matches!(read(&off, srv, &d), Ok(State::Off { .. })));
    }

    #[test]
    fn makes_private_dirs_without_following_links() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path();
        let d = domain_in(srv, "example.com");
        ensure_dirs(srv, &d).unwrap();
        ensure_dirs(srv, &d).unwrap(); // idempotent
        for (rel, mode) in DIRS {
            let m = std::fs::metadata(d.dir.join(rel)).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.permissions().mode() & 0o777, *mode, "{rel}");
        }
        let e = domain_in(srv, "evil.com");
        std::os::unix::fs::symlink(tmp.path().join("example.com"), e.dir.join("php")).unwrap();
        assert!(ensure_dirs(srv, &e).unwrap_err().contains("symbolic link"));
    }

    #[test]
    fn socket_paths_fit_a_sockaddr() {
        let mut cfg = Config::default();
        cfg.php.socket_dir = "/run/php".into();
        assert_eq!(
            socket_path(&cfg, "example.com").unwrap(),
            Path::new("/run/php/dirhost-example.com.sock")
        );
        let long = format!("{}.com", "a".repeat(120));
        let p = socket_path(&cfg, &long).unwrap();
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH, "{}", p.display());
        assert_eq!(p, socket_path(&cfg, &long).unwrap(), "stable");
        assert_ne!(p, socket_path(&cfg, &format!("b{long}")).unwrap());
        cfg.php.socket_dir = PathBuf::from(format!("/{}", "d".repeat(100)));
        assert!(socket_path(&cfg, "example.com").is_err());
    }
}
