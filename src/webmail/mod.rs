//! Webmail (issue 12): Debian's Roundcube at `https://<domain>/webmail/` for every domain that
//! has mailboxes, wired to the local Dovecot (IMAPS) and Exim (SMTPS with AUTH).
//!
//! Owns:
//! * the `[webmail]` settings ([`Settings`]) and where its files live ([`WebmailLayout`]);
//! * which domains get webmail ([`wanted`]: a `mailboxes/` directory and no `config/webmail`
//!   saying `false`, read through `safefs` as the owner);
//! * the identity of the webmail's own PHP-FPM pool ([`Identity`]: a dedicated system user,
//!   never root and never Apache's user, which can reach every customer's pool);
//! * its private state ([`prepare`]): the SQLite database and temp directories, writable by the
//!   pool's user only, the log directory, and the `des_key` secret (generated once, kept across
//!   runs, `0640 root:<pool group>`);
//! * the rendered files ([`render`]): Roundcube's `config.inc.php` and `defaults.inc.php` in
//!   `[webmail] config_dir`, the pool file, and what a site's vhost needs ([`ApacheView`]).
//!
//! Must not: touch Debian's own Roundcube configuration (`/etc/roundcube`, which the package
//! owns; its `defaults.inc.php` is only read), write server configuration itself (files go
//! through plan and apply, sealed), or put a secret into a rendered file (`des_key` is read by
//! Roundcube at run time from the state directory).

pub mod render;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use render::{ApacheView, render, site_view};

use crate::config::Config;
use crate::model::Domain;
use crate::model::validate::Flag;
use crate::safefs::{self, Kind};

/// The pool's name in PHP-FPM (and its file, `<pool_dir>/dirhost-webmail.conf`). Not a domain
/// name (no dot), so it can never collide with a domain's pool.
pub const POOL: &str = "dirhost-webmail";

/// Length of the generated `des_key` (Roundcube wants 24 characters).
pub const DES_KEY_LEN: usize = 24;

/// `[webmail]`: Roundcube for every domain with mailboxes. Every key is optional; the defaults
/// are Debian's `roundcube-core` layout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Serve webmail at all. Defaults to whether Debian's Roundcube is installed
    /// (`public_dir/index.php` and `defaults` exist). It also needs `[php] enabled`.
    pub enabled: bool,
    /// Roundcube's web root, served at `/webmail/` (`/var/lib/roundcube/public_html`).
    pub public_dir: PathBuf,
    /// The package's `defaults.inc.php`, read (never written) by the rendered
    /// `defaults.inc.php` (`/etc/roundcube/defaults.inc.php`).
    pub defaults: PathBuf,
    /// Where dirhost renders Roundcube's configuration (`/etc/dirhost/roundcube`); Roundcube
    /// is told to read it instead of `/etc/roundcube` by its pool's environment.
    pub config_dir: PathBuf,
    /// Roundcube's log files (`errors.log`, `userlogins.log` for fail2ban)
    /// (`/var/log/dirhost-webmail`).
    pub log_dir: PathBuf,
    /// Directories of Roundcube's code and its libraries, readable by its PHP (`open_basedir`,
    /// with `config_dir`, `log_dir`, the state directory and `defaults`).
    pub code_dirs: Vec<PathBuf>,
    /// The user the webmail's PHP-FPM pool runs as (`dirhost-webmail`, made by the package);
    /// a name or a numeric uid. Never root, never Apache's user.
    pub user: String,
    /// The pool's group (`dirhost-webmail`); a name or a numeric gid.
    pub group: String,
    /// Allow a login to any hosted domain's mailbox through any domain's webmail. Off: the
    /// domain of the URL is forced onto the login name.
    pub any_domain: bool,
    /// Roundcube's `login_rate_limit`: failed logins per minute and account before Roundcube
    /// refuses further attempts (3).
    pub login_rate_limit: u32,
    /// `pm.max_children` of the webmail pool (5).
    pub max_children: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let public_dir = PathBuf::from("/var/lib/roundcube/public_html");
        let defaults = PathBuf::from("/etc/roundcube/defaults.inc.php");
        Self {
            enabled: public_dir.join("index.php").is_file() && defaults.is_file(),
            public_dir,
            defaults,
            config_dir: "/etc/dirhost/roundcube".into(),
            log_dir: "/var/log/dirhost-webmail".into(),
            code_dirs: [
                "/usr/share/roundcube",
                "/var/lib/roundcube",
                "/usr/share/php",
                "/usr/share/javascript",
                "/usr/share/nodejs",
                "/etc/roundcube/plugins",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            user: POOL.into(),
            group: POOL.into(),
            any_domain: false,
            login_rate_limit: 3,
            max_children: 5,
        }
    }
}

impl Settings {
    /// Checks the values (called from `Config::validate`).
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("public_dir", &self.public_dir),
            ("defaults", &self.defaults),
            ("config_dir", &self.config_dir),
            ("log_dir", &self.log_dir),
        ] {
            anyhow::ensure!(p.is_absolute(), "[webmail] {name} must be an absolute path");
        }
        for p in &self.code_dirs {
            anyhow::ensure!(
                p.is_absolute(),
                "[webmail] code_dirs: {} must be an absolute path",
                p.display()
            );
        }
        for (name, v) in [("user", &self.user), ("group", &self.group)] {
            anyhow::ensure!(
                !v.is_empty()
                    && v.len() <= 32
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
                "[webmail] {name} {v:?} is not a user or group name"
            );
        }
        anyhow::ensure!(
            (1..=1000).contains(&self.login_rate_limit),
            "[webmail] login_rate_limit must be between 1 and 1000"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.max_children),
            "[webmail] max_children must be between 1 and 1000"
        );
        Ok(())
    }
}

/// Where the webmail's files live, all derived from the config.
#[derive(Debug, Clone)]
pub struct WebmailLayout {
    /// `<config_dir>/config.inc.php`.
    pub config_file: PathBuf,
    /// `<config_dir>/defaults.inc.php`.
    pub defaults_file: PathBuf,
    /// `<[php] pool_dir>/dirhost-webmail.conf`.
    pub pool_file: PathBuf,
    /// `<[php] socket_dir>/dirhost-webmail.sock`: only Apache's user can connect.
    pub socket: PathBuf,
    /// `<state>/webmail`: root:<pool group> 0750.
    pub state_dir: PathBuf,
    /// `<state>/webmail/des_key`: root:<pool group> 0640.
    pub des_key: PathBuf,
    /// `<state>/webmail/db`: the SQLite database; the pool user's, 0700.
    pub db_dir: PathBuf,
    /// `<state>/webmail/temp`: uploads and caches; the pool user's, 0700.
    pub temp_dir: PathBuf,
}

impl WebmailLayout {
    /// Derives every webmail path from the config.
    pub fn new(cfg: &Config) -> Self {
        let w = &cfg.webmail;
        let state_dir = cfg.paths.state.join("webmail");
        Self {
            config_file: w.config_dir.join("config.inc.php"),
            defaults_file: w.config_dir.join("defaults.inc.php"),
            pool_file: cfg.php.pool_dir.join(format!("{POOL}.conf")),
            socket: cfg.php.socket_dir.join(format!("{POOL}.sock")),
            des_key: state_dir.join("des_key"),
            db_dir: state_dir.join("db"),
            temp_dir: state_dir.join("temp"),
            state_dir,
        }
    }

    /// `<db_dir>/roundcube.sqlite`.
    pub fn database(&self) -> PathBuf {
        self.db_dir.join("roundcube.sqlite")
    }
}

/// The numeric identity of the webmail pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

/// Resolves `[webmail] user` and `group` (names or numbers). Refuses root and Apache's user
/// (`[php] socket_user`), which can connect to every customer's PHP-FPM socket: a flaw in
/// Roundcube must not become every domain owner's.
pub fn identity(cfg: &Config) -> Result<Identity> {
    let w = &cfg.webmail;
    let uid = match w.user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::User::from_name(&w.user)
            .with_context(|| format!("failed to look up user {}", w.user))?
            .with_context(|| {
                format!(
                    "[webmail] user {} does not exist (the dirhost package makes it: adduser --system --group {})",
                    w.user, w.user
                )
            })?
            .uid
            .as_raw(),
    };
    let gid = match w.group.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::Group::from_name(&w.group)
            .with_context(|| format!("failed to look up group {}", w.group))?
            .with_context(|| format!("[webmail] group {} does not exist", w.group))?
            .gid
            .as_raw(),
    };
    anyhow::ensure!(
        uid != 0 && gid != 0,
        "[webmail] user and group must not be root"
    );
    let apache = match cfg.php.socket_user.parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => nix::unistd::User::from_name(&cfg.php.socket_user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    };
    anyhow::ensure!(
        apache != Some(uid),
        "[webmail] user must not be Apache's user ({}): it can reach every domain's PHP-FPM pool",
        cfg.php.socket_user
    );
    Ok(Identity { uid, gid })
}

/// Webmail can run on this server: `[webmail] enabled` and `[php] enabled` (it needs PHP-FPM).
pub fn enabled(cfg: &Config) -> bool {
    cfg.webmail.enabled && cfg.php.enabled
}

/// Whether `d` gets `/webmail/`: it has a `mailboxes/` directory (or is the host's own name,
/// `host`) and its `config/webmail` does not switch it off. Read through `safefs` as the
/// owner. `Err` for a `config/webmail` that is neither on nor off (or cannot be read safely):
/// the caller leaves the domain as it was rather than guess.
/// Called in the model phase (`Model::load_services`, as [`wanted_in`]); render uses the result.
pub fn wanted(srv: &Path, d: &Domain, host: bool) -> Result<bool, String> {
    wanted_in(&safefs::LazyDir::new(srv, Path::new(&d.dir_name)), d, host)
}

/// [`wanted`] below `dir`, the domain's directory (opened at its first use).
pub fn wanted_in(dir: &safefs::LazyDir<'_>, d: &Domain, host: bool) -> Result<bool, String> {
    let mailboxes = matches!(
        dir.stat(Path::new("mailboxes")),
        Ok(Some(s)) if s.kind == Kind::Dir
    );
    if !mailboxes && !host {
        return Ok(false); // the common case costs one stat
    }
    let raw = dir
        .read(
            Path::new("config/webmail"),
            d.owner(),
            safefs::MAX_VALUE_FILE,
        )
        .map_err(|e| format!("config/webmail: {e}"))?;
    match Flag::parse(raw.as_deref()).map_err(|e| format!("config/webmail: {e}"))? {
        Flag::False => Ok(false),
        Flag::Unset | Flag::True => Ok(mailboxes || host),
        Flag::Value(v) => Err(format!(
            "config/webmail says {:?}: it must be empty, true/yes (webmail on) or false/no (off)",
            v.trim()
        )),
    }
}

/// Makes the webmail's private state (see the module docs) before an apply. Returns warnings
/// (`("webmail", why)`); webmail then does not work until the cause is fixed, everything
/// else is unaffected.
pub fn prepare(cfg: &Config) -> Vec<(String, String)> {
    if !enabled(cfg) {
        return Vec::new();
    }
    match prepare_inner(cfg) {
        Ok(()) => Vec::new(),
        Err(e) => {
            let w = format!("webmail state could not be prepared: {e:#}");
            tracing::warn!("{w}");
            vec![("webmail".into(), w)]
        }
    }
}

fn prepare_inner(cfg: &Config) -> Result<()> {
    let id = identity(cfg)?;
    let l = WebmailLayout::new(cfg);
    dir(&l.state_dir, 0, id.gid, 0o750)?;
    dir(&l.db_dir, id.uid, id.gid, 0o700)?;
    dir(&l.temp_dir, id.uid, id.gid, 0o700)?;
    dir(&cfg.webmail.log_dir, id.uid, id.gid, 0o750)?;
    ensure_des_key(&l.des_key, id.gid)
}

/// Creates `path` (and its parents, root's 0755) if missing, then makes it `uid:gid mode`. A
/// symlink in its place is refused.
fn dir(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("failed to create {}", path.display())),
    }
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("failed to stat {}", path.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", path.display());
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("failed to chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to chmod {}", path.display()))
}

/// A usable `des_key`: [`DES_KEY_LEN`] characters from the key alphabet.
fn valid_key(k: &str) -> bool {
    k.len() == DES_KEY_LEN && k.bytes().all(|b| KEY_ALPHABET.contains(&b))
}

const KEY_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh random key (64-letter alphabet: 6 bits a character, 144 bits in all, unbiased).
pub fn new_des_key() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; DES_KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(KEY_ALPHABET[usize::from(b & 63)]))
        .collect())
}

/// Keeps the existing key (fixing its owner and mode) or writes a new one, atomically.
fn ensure_des_key(path: &Path, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let existing = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|k| valid_key(k)),
        Ok(_) => anyhow::bail!("{} is not a regular file", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("failed to stat {}", path.display())),
    };
    if existing.is_none() {
        tracing::info!(path = %path.display(), "generating Roundcube's des_key");
        let key = new_des_key()?;
        let dir = path.parent().context("des_key without a directory")?;
        let tmp = tempfile::Builder::new()
            .prefix(".des_key-")
            .tempfile_in(dir)
            .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
        std::fs::write(tmp.path(), format!("{key}\n"))
            .with_context(|| format!("failed to write {}", tmp.path().display()))?;
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("failed to fsync {}", tmp.path().display()))?;
        std::os::unix::fs::chown(tmp.path(), Some(0), Some(gid))
            .with_context(|| format!("failed to chown {}", tmp.path().display()))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o640))
            .with_context(|| format!("failed to chmod {}", tmp.path().display()))?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("failed to rename into {}", path.display()))?;
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(0), Some(gid))
        .with_context(|| format!("failed to chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
        .with_context(|| format!("failed to chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_well_formed() {
        let a = new_des_key().unwrap();
        let b = new_des_key().unwrap();
        assert!(valid_key(&a) && valid_key(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(!valid_key("short"));
        assert!(!valid_key(&"'".repeat(DES_KEY_LEN)));
    }

    #[test]
    fn settings_defaults_and_bad_values() {
        let s = Settings::default();
        assert_eq!(s.user, "dirhost-webmail");
        assert_eq!(s.config_dir, Path::new("/etc/dirhost/roundcube"));
        assert!(s.validate().is_ok());
        for bad in [
            "[webmail]\nconfig_dir = \"relative\"\n",
            "[webmail]\nuser = \"a b\"\n",
            "[webmail]\nlogin_rate_limit = 0\n",
            "[webmail]\ncode_dirs = [\"usr/share\"]\n",
            "[webmail]\nunknown = 1\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted {bad:?}");
        }
        let c = Config::parse("[webmail]\nany_domain = true\nuser = \"2999\"\n").unwrap();
        assert!(c.webmail.any_domain);
        assert_eq!(Config::parse(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn identity_refuses_root_and_apache() {
        let mut cfg = Config::default();
        cfg.webmail.user = "2999".into();
        cfg.webmail.group = "2998".into();
        assert_eq!(
            identity(&cfg).unwrap(),
            Identity {
                uid: 2999,
                gid: 2998
            }
        );
        cfg.webmail.user = "0".into();
        assert!(identity(&cfg).is_err());
        cfg.webmail.user = "root".into();
        assert!(identity(&cfg).is_err());
        cfg.webmail.user = "2999".into();
        cfg.php.socket_user = "2999".into();
        assert!(identity(&cfg).unwrap_err().to_string().contains("Apache"));
        cfg.webmail.user = "no-such-user-here".into();
        assert!(identity(&cfg).is_err());
    }

    #[test]
    fn webmail_follows_mailboxes_and_the_switch() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let srv = tmp.path();
        let dir = srv.join("example.com");
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        let d = Domain::for_test("example.com", dir.clone(), m.uid(), m.gid());
        assert_eq!(wanted(srv, &d, false), Ok(false), "no mailboxes");
        std::fs::write(dir.join("config/webmail"), "sometimes").unwrap();
        assert_eq!(
            wanted(srv, &d, false),
            Ok(false),
            "not read without mailboxes"
        );
        std::fs::remove_file(dir.join("config/webmail")).unwrap();
        assert_eq!(wanted(srv, &d, true), Ok(true), "the host's own name");
        std::fs::create_dir(dir.join("mailboxes")).unwrap();
        assert_eq!(wanted(srv, &d, false), Ok(true));
        for (text, want) in [("", Ok(true)), ("yes\n", Ok(true)), ("false\n", Ok(false))] {
            std::fs::write(dir.join("config/webmail"), text).unwrap();
            assert_eq!(wanted(srv, &d, false), want, "{text:?}");
        }
        std::fs::write(dir.join("config/webmail"), "false").unwrap();
        assert_eq!(
            wanted(srv, &d, true),
            Ok(false),
            "off wins at the host name too"
        );
        std::fs::write(dir.join("config/webmail"), "sometimes").unwrap();
        assert!(
            wanted(srv, &d, false)
                .unwrap_err()
                .contains("config/webmail says")
        );
        std::fs::remove_file(dir.join("config/webmail")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("config/webmail")).unwrap();
        assert!(wanted(srv, &d, false).is_err(), "a symlink is refused");
    }

    #[test]
    fn des_key_is_made_once_and_kept() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("des_key");
        let gid = nix::unistd::getegid().as_raw();
        if !nix::unistd::geteuid().is_root() {
            return; // chown to root needs root; the system test covers it too
        }
        ensure_des_key(&path, gid).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(valid_key(first.trim()));
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, gid, 0o640));
        ensure_des_key(&path, gid).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        std::fs::write(&path, "garbage").unwrap();
        ensure_des_key(&path, gid).unwrap();
        assert_ne!(std::fs::read_to_string(&path).unwrap(), first);
    }
}
