//! dirhost's own configuration: `/etc/dirhost/dirhost.toml`.
//!
//! Every key is optional and defaults to Debian's layout, so an empty file (or no file at
//! all) describes a stock Debian server. Tests and `dirhost demo` point every path at a temp
//! tree. The keys are a public interface: they are documented in the README, and renaming
//! one is a breaking change.
//!
//! This module only parses and validates; it never touches the paths it names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where the config file lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dirhost/dirhost.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Filesystem locations.
    pub paths: Paths,
    /// Argv lists used to test and reload each service.
    pub commands: Commands,
    /// Ports the generated configs listen on.
    pub ports: Ports,
    /// Web serving options that are not per domain.
    pub web: Web,
    /// Certificates from an ACME CA (Let's Encrypt by default).
    pub acme: Acme,
    /// How `dirhost watch` batches events and rescans /srv.
    pub watch: Watch,
    /// Mail: Exim and Dovecot (ports, host certificate, service users).
    pub mail: Mail,
    /// PHP-FPM: a pool per domain.
    pub php: Php,
    /// `dirhost dns export`: addresses, name servers, CAA, hooks.
    pub dns: Dns,
    /// Webmail: Roundcube at https://<domain>/webmail/ (see `webmail::Settings`).
    pub webmail: crate::webmail::Settings,
    /// Web statistics (GoAccess), see `crate::stats`.
    pub stats: crate::stats::StatsConfig,
}

/// `[paths]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    /// The tree of domains (`/srv`).
    pub srv: PathBuf,
    /// dirhost's own state: ACME challenges, accounts, backups (`/var/lib/dirhost`).
    pub state: PathBuf,
    /// Apache's configuration root (`/etc/apache2`).
    pub apache: PathBuf,
    /// Exim's configuration root (`/etc/exim4`).
    pub exim: PathBuf,
    /// Dovecot's configuration root (`/etc/dovecot`).
    pub dovecot: PathBuf,
    /// Admin template overrides: a file here replaces the built-in template of the same
    /// relative name, e.g. `apache/site.conf.tera` (`/etc/dirhost/templates`).
    pub templates: PathBuf,
    /// Skeleton copied into a domain made by `dirhost site add` (`/etc/dirhost/skel`), like
    /// Sympl's skel.d.
    pub skel: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            srv: "/srv".into(),
            state: "/var/lib/dirhost".into(),
            apache: "/etc/apache2".into(),
            exim: "/etc/exim4".into(),
            dovecot: "/etc/dovecot".into(),
            templates: "/etc/dirhost/templates".into(),
            skel: "/etc/dirhost/skel".into(),
        }
    }
}

/// `[commands]`: each an argv list, run without a shell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Commands {
    /// Tests the whole candidate Apache configuration; must exit 0 when it is valid.
    pub apache_test: Vec<String>,
    /// Graceful reload of Apache.
    pub apache_reload: Vec<String>,
    /// Tests the candidate Exim configuration.
    pub exim_test: Vec<String>,
    /// Reloads Exim.
    pub exim_reload: Vec<String>,
    /// Tests the candidate Dovecot configuration.
    pub dovecot_test: Vec<String>,
    /// Reloads Dovecot.
    pub dovecot_reload: Vec<String>,
    /// Tests the candidate PHP-FPM configuration (`php-fpm<version> -t`).
    pub php_test: Vec<String>,
    /// Reloads PHP-FPM gracefully.
    pub php_reload: Vec<String>,
    /// The dirhost binary itself, as Apache runs it for the piped access-log writer
    /// (`/usr/bin/dirhost`).
    pub dirhost: PathBuf,
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

impl Default for Commands {
    fn default() -> Self {
        Self {
            apache_test: argv(&["apache2ctl", "configtest"]),
            apache_reload: argv(&["systemctl", "reload", "apache2"]),
            exim_test: argv(&["exim4", "-bV", "-C", "/etc/exim4/exim4.conf"]),
            exim_reload: argv(&["systemctl", "reload", "exim4"]),
            dovecot_test: argv(&["doveconf", "-n"]),
            dovecot_reload: argv(&["systemctl", "reload", "dovecot"]),
            // The newest installed PHP-FPM (Debian's php<version>-fpm), see `php::default_version`.
            php_test: vec![
                format!("php-fpm{}", crate::php::version_or_fallback()),
                "-t".into(),
            ],
            php_reload: vec![
                "systemctl".into(),
                "reload".into(),
                format!("php{}-fpm", crate::php::version_or_fallback()),
            ],
            dirhost: "/usr/bin/dirhost".into(),
        }
    }
}

/// `[ports]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Ports {
    /// Plain HTTP (80).
    pub http: u16,
    /// HTTPS (443).
    pub https: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            http: 80,
            https: 443,
        }
    }
}

/// `[web]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Web {
    /// Proxies (IP addresses or CIDR ranges) allowed to speak the PROXY protocol to Apache
    /// (mod_remoteip), e.g. an IPv4 SNI proxy in front of an IPv6-only server. Empty: off.
    pub trusted_proxies: Vec<String>,
    /// The host's own name, used for the default vhost; empty means the system hostname.
    pub hostname: String,
    /// Execute `public/cgi-bin/` as `/cgi-bin/` (off by default). CGI programs run as
    /// Apache's user (www-data), not as the domain's owner, so a customer's CGI could reach
    /// other domains' PHP-FPM sockets: only enable it on single-tenant servers.
    pub cgi: bool,
}

/// Let's Encrypt's production directory, the default `[acme] directory`.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[acme]`: how certificates are obtained for sites whose `config/ssl-provider` is
/// `letsencrypt` (the default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Acme {
    /// The CA's RFC 8555 directory URL (Let's Encrypt production by default; staging is
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// Contact addresses given to the CA (`admin@example.com` or `mailto:...`).
    pub contact: Vec<String>,
    /// PEM file with an extra root to trust for the CA's own HTTPS (a private CA, Pebble);
    /// empty: the system's roots only.
    pub ca_bundle: PathBuf,
    /// PEM file of the roots an issued chain must lead to before the set goes live (the
    /// system store by default); empty: no chain check.
    pub chain_roots: PathBuf,
    /// External account binding key id, when the CA requires one (with `eab_hmac_key`).
    pub eab_kid: String,
    /// External account binding HMAC key, base64url as the CA gives it.
    pub eab_hmac_key: String,
    /// Key type of new certificates.
    pub key_type: KeyType,
    /// DNS server (`address:port`) used to check which names point at this host; empty:
    /// the system resolver.
    pub resolver: String,
    /// This host's public addresses; empty: the addresses of the local interfaces (not
    /// loopback or link-local).
    pub host_addresses: Vec<String>,
    /// Executables run with `live-update` and the changed domains on stdin after a new
    /// certificate set went live.
    pub hooks_dir: PathBuf,
}

impl Default for Acme {
    fn default() -> Self {
        Self {
            directory: LETSENCRYPT_PRODUCTION.to_string(),
            contact: Vec::new(),
            ca_bundle: PathBuf::new(),
            chain_roots: "/etc/ssl/certs/ca-certificates.crt".into(),
            eab_kid: String::new(),
            eab_hmac_key: String::new(),
            key_type: KeyType::EcdsaP256,
            resolver: String::new(),
            host_addresses: Vec::new(),
            hooks_dir: "/etc/dirhost/ssl-hooks.d".into(),
        }
    }
}

/// `[acme] key_type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSA, 2048 bits.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

/// `[watch]`: timing of `dirhost watch`. Every key is optional.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Watch {
    /// Events are collected until none has arrived for this long (at most 1 s after the
    /// first), then reconciled as one batch (250).
    pub debounce_ms: u64,
    /// A full rescan of /srv every this many seconds, ±10 % (600).
    pub resync_secs: u64,
    /// Behave as if the kernel's inotify watch limit were this many watches (unset: only the
    /// kernel's `fs.inotify.max_user_watches` counts). For tests and for leaving watches to
    /// other programs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watches: Option<usize>,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            debounce_ms: 250,
            resync_secs: 600,
            max_watches: None,
        }
    }
}

impl Watch {
    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.debounce_ms <= 60_000,
            "[watch] debounce_ms must be at most 60000"
        );
        anyhow::ensure!(self.resync_secs > 0, "[watch] resync_secs must be positive");
        Ok(())
    }
}

/// `[mail]`: Exim and Dovecot settings that are not per domain. Every key is optional; the
/// defaults are Debian's (`exim4-daemon-heavy`, `dovecot-imapd`, `dovecot-pop3d`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Mail {
    /// SMTP with STARTTLS (25).
    pub smtp: u16,
    /// SMTP over implicit TLS, authenticated submission only (465).
    pub smtps: u16,
    /// Submission with STARTTLS, authenticated only (587).
    pub submission: u16,
    /// IMAP over implicit TLS (993).
    pub imaps: u16,
    /// POP3 over implicit TLS (995).
    pub pop3s: u16,
    /// Addresses Exim and Dovecot listen on; empty: every IPv4 and IPv6 address.
    pub listen: Vec<String>,
    /// The host's name in the SMTP greeting and as Exim's `primary_hostname`; empty: `[web]
    /// hostname`, else the system's.
    pub hostname: String,
    /// Host certificate (PEM, with its chain), used when a client names no hosted domain.
    /// Exim reads it as its own user: Debian's `exim-gencert` makes `/etc/exim4/exim.crt`
    /// and `exim.key` (root:Debian-exim 0640).
    pub certificate: PathBuf,
    /// Private key of the host certificate.
    pub key: PathBuf,
    /// Exim's spool directory (`/var/spool/exim4`).
    pub exim_spool: PathBuf,
    /// Exim's `log_file_path` (`/var/log/exim4/%slog`).
    pub exim_log: String,
    /// The user (and group of the same name) Exim runs as (`Debian-exim`).
    pub exim_user: String,
    /// The group Dovecot's auth process runs as (`dovecot`): it reads the password files.
    pub dovecot_group: String,
    /// Dovecot's `base_dir` (`/run/dovecot`), where Exim finds Dovecot's auth socket.
    pub dovecot_run: PathBuf,
    /// Send all outgoing mail through this host (`host` or `host:port`); empty: deliver to
    /// each domain's MX.
    pub smarthost: String,
    /// Hosts (addresses or CIDR ranges) that may relay without authenticating.
    pub relay_from: Vec<String>,
    /// Where mail for `postmaster@<hosted domain>` goes when the domain has no mailbox,
    /// alias or default forward for it (`root`: the system's aliases).
    pub postmaster: String,
}

impl Default for Mail {
    fn default() -> Self {
        Self {
            smtp: 25,
            smtps: 465,
            submission: 587,
            imaps: 993,
            pop3s: 995,
            listen: Vec::new(),
            hostname: String::new(),
            certificate: "/etc/exim4/exim.crt".into(),
            key: "/etc/exim4/exim.key".into(),
            exim_spool: "/var/spool/exim4".into(),
            exim_log: "/var/log/exim4/%slog".into(),
            exim_user: "Debian-exim".into(),
            dovecot_group: "dovecot".into(),
            dovecot_run: "/run/dovecot".into(),
            smarthost: String::new(),
            relay_from: vec!["127.0.0.1".into(), "::1".into()],
            postmaster: "root".into(),
        }
    }
}

impl Mail {
    fn validate(&self) -> Result<()> {
        let ports = [
            ("smtp", self.smtp),
            ("smtps", self.smtps),
            ("submission", self.submission),
            ("imaps", self.imaps),
            ("pop3s", self.pop3s),
        ];
        for (i, (name, port)) in ports.iter().enumerate() {
            anyhow::ensure!(*port != 0, "[mail] {name} must be non-zero");
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                anyhow::bail!("[mail] {name} and {other} must differ");
            }
        }
        for a in &self.listen {
            a.parse::<std::net::IpAddr>()
                .with_context(|| format!("[mail] listen: {a:?} is not an address"))?;
        }
        for p in &self.relay_from {
            crate::model::validate::parse_cidr(p)
                .with_context(|| format!("[mail] relay_from: {p:?} is not an address or CIDR"))?;
        }
        for (name, p) in [
            ("certificate", &self.certificate),
            ("key", &self.key),
            ("exim_spool", &self.exim_spool),
            ("dovecot_run", &self.dovecot_run),
        ] {
            anyhow::ensure!(p.is_absolute(), "[mail] {name} must be an absolute path");
        }
        anyhow::ensure!(
            self.exim_log.starts_with('/') || self.exim_log == "syslog",
            "[mail] exim_log must be an absolute path (with %s) or `syslog`"
        );
        if !self.hostname.is_empty() {
            crate::model::validate::domain_name(&self.hostname)
                .with_context(|| format!("[mail] hostname {:?}", self.hostname))?;
        }
        for (name, v) in [
            ("exim_user", &self.exim_user),
            ("dovecot_group", &self.dovecot_group),
        ] {
            anyhow::ensure!(
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "[mail] {name} {v:?} is not a user or group name"
            );
        }
        if !self.smarthost.is_empty() {
            self.smarthost_parts()?;
        }
        let addr_ok = |a: &str| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@.-_+".contains(&b))
        };
        anyhow::ensure!(
            addr_ok(&self.postmaster),
            "[mail] postmaster {:?} is not a mail address or local user",
            self.postmaster
        );
        Ok(())
    }

    /// `smarthost` split into host and port (25 when not given).
    pub fn smarthost_parts(&self) -> Result<Option<(String, u16)>> {
        let s = self.smarthost.as_str();
        if s.is_empty() {
            return Ok(None);
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .with_context(|| format!("[mail] smarthost {s:?}: bad port"))?,
            ),
            _ => (s, 25),
        };
        let ok = host.parse::<std::net::IpAddr>().is_ok()
            || crate::model::validate::domain_name(host).is_ok();
        anyhow::ensure!(
            ok,
            "[mail] smarthost {s:?}: {host:?} is not a host name or address"
        );
        Ok(Some((host.to_string(), port)))
    }

    /// Exim's and Dovecot's `primary_hostname`: `hostname`, else the config's host name.
    pub fn hostname(&self, cfg: &Config) -> String {
        if self.hostname.is_empty() {
            cfg.hostname()
        } else {
            self.hostname.clone()
        }
    }
}

/// `[php]`: PHP-FPM pools, one per served domain, each running as the domain's owner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Php {
    /// Manage PHP at all: pools, and `.php` handed to them. Defaults to whether a PHP-FPM is
    /// installed (`/usr/sbin/php-fpm<version>`). When false, no pools are written and `.php`
    /// files are refused unless an Apache PHP module (mod_php) handles them.
    pub enabled: bool,
    /// Where pool files are written (`/etc/php/<version>/fpm/pool.d` of the newest installed
    /// PHP-FPM; Debian's php-fpm.conf includes every `*.conf` there).
    pub pool_dir: PathBuf,
    /// Where the pools' sockets are (`/run/php`, which Debian's php-fpm unit creates).
    pub socket_dir: PathBuf,
    /// The user that owns every pool socket: Apache's (`www-data`). Sockets are mode 0660,
    /// so only this user and group (and root) can talk to a pool.
    pub socket_user: String,
    /// The group of every pool socket (`www-data`).
    pub socket_group: String,
    /// `pm.max_children`: at most this many PHP processes per domain at once (5).
    pub max_children: u32,
    /// `pm.process_idle_timeout` in seconds: an idle PHP process exits after this long, so
    /// idle domains cost no processes (10).
    pub idle_timeout_secs: u32,
    /// `disable_functions` for every pool: functions that start programs, plus `putenv`
    /// (with `mail()` it can load arbitrary code) and `dl`.
    pub disable_functions: Vec<String>,
}

/// The default `[php] disable_functions`.
pub const PHP_DISABLE_FUNCTIONS: &[&str] = &[
    "exec",
    "passthru",
    "shell_exec",
    "system",
    "proc_open",
    "popen",
    "pcntl_exec",
    "pcntl_fork",
    "pcntl_signal",
    "pcntl_alarm",
    "putenv",
    "dl",
];

impl Default for Php {
    fn default() -> Self {
        let v = crate::php::version_or_fallback();
        Self {
            enabled: crate::php::default_version().is_some(),
            pool_dir: format!("/etc/php/{v}/fpm/pool.d").into(),
            socket_dir: "/run/php".into(),
            socket_user: "www-data".into(),
            socket_group: "www-data".into(),
            max_children: 5,
            idle_timeout_secs: 10,
            disable_functions: PHP_DISABLE_FUNCTIONS
                .iter()
                .map(|f| (*f).to_string())
                .collect(),
        }
    }
}

impl Php {
    fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("pool_dir", &self.pool_dir),
            ("socket_dir", &self.socket_dir),
        ] {
            anyhow::ensure!(p.is_absolute(), "[php] {name} must be an absolute path");
        }
        for (name, v) in [
            ("socket_user", &self.socket_user),
            ("socket_group", &self.socket_group),
        ] {
            anyhow::ensure!(
                !v.is_empty()
                    && v.len() <= 32
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
                "[php] {name} {v:?} is not a user or group name"
            );
        }
        anyhow::ensure!(
            (1..=1000).contains(&self.max_children),
            "[php] max_children must be between 1 and 1000"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&self.idle_timeout_secs),
            "[php] idle_timeout_secs must be between 1 and 86400"
        );
        for f in &self.disable_functions {
            anyhow::ensure!(
                !f.is_empty()
                    && f.len() <= 64
                    && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "[php] disable_functions: {f:?} is not a function name"
            );
        }
        Ok(())
    }
}

/// `[dns]`: `dirhost dns export` and the DNS hooks. Every key is optional.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// The host's public addresses, published as A/AAAA for domains without `config/ip`;
    /// empty: `[acme] host_addresses`, else the interfaces' addresses that are not loopback
    /// or link-local.
    pub addresses: Vec<String>,
    /// Name servers for the zones' NS records and SOA; empty: `ns1.<hostname>` and
    /// `ns2.<hostname>`.
    pub nameservers: Vec<String>,
    /// The CA's CAA identity (`letsencrypt.org`); empty: derived from `[acme] directory`
    /// for well-known CAs; `none`: no CAA records.
    pub caa_issuer: String,
    /// Executables run with `dns-update` and the changed zones on stdin when the records
    /// change.
    pub hooks_dir: PathBuf,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            nameservers: Vec::new(),
            caa_issuer: String::new(),
            hooks_dir: "/etc/dirhost/dns-hooks.d".into(),
        }
    }
}

impl Dns {
    fn validate(&self) -> Result<()> {
        for a in &self.addresses {
            a.parse::<std::net::IpAddr>()
                .with_context(|| format!("[dns] addresses: {a:?} is not an address"))?;
        }
        for n in &self.nameservers {
            crate::model::validate::domain_name(n.strip_suffix('.').unwrap_or(n))
                .ok()
                .filter(|a| a == n.strip_suffix('.').unwrap_or(n))
                .with_context(|| format!("[dns] nameservers: {n:?} is not a host name"))?;
        }
        if !self.caa_issuer.is_empty() && self.caa_issuer != "none" {
            crate::model::validate::domain_name(&self.caa_issuer)
                .ok()
                .filter(|a| *a == self.caa_issuer)
                .with_context(|| {
                    format!(
                        "[dns] caa_issuer {:?} is not a domain name",
                        self.caa_issuer
                    )
                })?;
        }
        anyhow::ensure!(
            self.hooks_dir.as_os_str().is_empty() || self.hooks_dir.is_absolute(),
            "[dns] hooks_dir must be an absolute path (or empty)"
        );
        Ok(())
    }
}

impl Config {
    /// Parses a config file's text. Unknown keys are errors: a typo must not silently fall
    /// back to a default that points at the live system.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads `path`. A missing file at the default location means "all defaults"; a missing
    /// file that the user named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text)
                .with_context(|| format!("invalid config file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => {
                Err(e).with_context(|| format!("failed to read config file {}", path.display()))
            }
        }
    }

    /// Renders the config back to TOML (used by `dirhost demo` and the test sandbox).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    fn validate(&self) -> Result<()> {
        let c = &self.commands;
        for (name, v) in [
            ("apache_test", &c.apache_test),
            ("apache_reload", &c.apache_reload),
            ("exim_test", &c.exim_test),
            ("exim_reload", &c.exim_reload),
            ("dovecot_test", &c.dovecot_test),
            ("dovecot_reload", &c.dovecot_reload),
            ("php_test", &c.php_test),
            ("php_reload", &c.php_reload),
        ] {
            anyhow::ensure!(!v.is_empty(), "[commands] {name} must not be empty");
        }
        for (name, p) in [
            ("srv", &self.paths.srv),
            ("state", &self.paths.state),
            ("apache", &self.paths.apache),
            ("exim", &self.paths.exim),
            ("dovecot", &self.paths.dovecot),
            ("templates", &self.paths.templates),
            ("skel", &self.paths.skel),
            ("dirhost (in [commands])", &self.commands.dirhost),
        ] {
            anyhow::ensure!(p.is_absolute(), "[paths] {name} must be an absolute path");
        }
        anyhow::ensure!(
            self.ports.http != 0 && self.ports.https != 0,
            "[ports] must be non-zero"
        );
        anyhow::ensure!(
            self.ports.http != self.ports.https,
            "[ports] http and https must differ"
        );
        for p in &self.web.trusted_proxies {
            crate::model::validate::parse_cidr(p).with_context(|| {
                format!("[web] trusted_proxies: {p:?} is not an address or CIDR")
            })?;
        }
        if !self.web.hostname.is_empty() {
            crate::model::validate::domain_name(&self.web.hostname)
                .with_context(|| format!("[web] hostname {:?}", self.web.hostname))?;
        }
        self.acme.validate()?;
        self.watch.validate()?;
        self.mail.validate()?;
        self.php.validate()?;
        self.webmail.validate()?;
        self.stats.validate()?;
        self.dns.validate()
    }

    /// The host's name: `[web] hostname`, else the system's, else `localhost`.
    pub fn hostname(&self) -> String {
        if !self.web.hostname.is_empty() {
            return self.web.hostname.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .and_then(|h| crate::model::validate::domain_name(&h).ok())
            .unwrap_or_else(|| "localhost".to_string())
    }
}

impl Acme {
    fn validate(&self) -> Result<()> {
        let url = self.directory.as_str();
        anyhow::ensure!(
            url.starts_with("https://") || url.starts_with("http://"),
            "[acme] directory must be an http(s) URL, got {url:?}"
        );
        for (name, p) in [
            ("ca_bundle", &self.ca_bundle),
            ("chain_roots", &self.chain_roots),
            ("hooks_dir", &self.hooks_dir),
        ] {
            anyhow::ensure!(
                p.as_os_str().is_empty() || p.is_absolute(),
                "[acme] {name} must be an absolute path (or empty)"
            );
        }
        anyhow::ensure!(
            self.eab_kid.is_empty() == self.eab_hmac_key.is_empty(),
            "[acme] eab_kid and eab_hmac_key go together: set both or neither"
        );
        if !self.eab_hmac_key.is_empty() {
            self.eab_key()?;
        }
        for c in &self.contact {
            let addr = c.strip_prefix("mailto:").unwrap_or(c);
            anyhow::ensure!(
                addr.contains('@') && !addr.contains(|ch: char| ch.is_whitespace() || ch == ','),
                "[acme] contact {c:?} is not an e-mail address"
            );
        }
        if !self.resolver.is_empty() {
            self.resolver
                .parse::<std::net::SocketAddr>()
                .with_context(|| {
                    format!("[acme] resolver {:?} must be address:port", self.resolver)
                })?;
        }
        for a in &self.host_addresses {
            a.parse::<std::net::IpAddr>()
                .with_context(|| format!("[acme] host_addresses: {a:?} is not an address"))?;
        }
        Ok(())
    }

    /// The decoded external account binding key (base64url, padding optional).
    pub fn eab_key(&self) -> Result<Vec<u8>> {
        let text = self.eab_hmac_key.trim().trim_end_matches('=');
        data_encoding::BASE64URL_NOPAD
            .decode(text.as_bytes())
            .context("[acme] eab_hmac_key is not base64url")
    }

    /// `contact` as `mailto:` URIs.
    pub fn contact_uris(&self) -> Vec<String> {
        self.contact
            .iter()
            .map(|c| {
                if c.starts_with("mailto:") {
                    c.clone()
                } else {
                    format!("mailto:{c}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_debian_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.paths.srv, PathBuf::from("/srv"));
        assert_eq!(c.ports.http, 80);
    }

    #[test]
    fn partial_file_overrides_only_what_it_names() {
        let c = Config::parse("[paths]\nsrv = \"/tmp/x/srv\"\n[ports]\nhttp = 8080\n").unwrap();
        assert_eq!(c.paths.srv, PathBuf::from("/tmp/x/srv"));
        assert_eq!(c.paths.apache, PathBuf::from("/etc/apache2"));
        assert_eq!(c.ports.http, 8080);
        assert_eq!(c.ports.https, 443);
    }

    #[test]
    fn rejects_bad_files() {
        for bad in [
            "[paths]\nsrvv = \"/srv\"\n",
            "[paths]\nsrv = \"relative\"\n",
            "[commands]\napache_test = []\n",
            "[ports]\nhttp = 443\n",
            "[web]\ntrusted_proxies = [\"not an ip\"]\n",
            "not toml at all [",
            "[acme]\ndirectoryy = \"https://x\"\n",
            "[acme]\ndirectory = \"ftp://x\"\n",
            "[acme]\nkey_type = \"rsa-1024\"\n",
            "[acme]\neab_kid = \"kid\"\n",
            "[acme]\neab_kid = \"kid\"\neab_hmac_key = \"not base64!\"\n",
            "[acme]\ncontact = [\"not an address\"]\n",
            "[acme]\nresolver = \"127.0.0.1\"\n",
            "[acme]\nhost_addresses = [\"localhost\"]\n",
            "[acme]\nca_bundle = \"relative.pem\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn acme_defaults_and_overrides() {
        let d = Config::parse("").unwrap().acme;
        assert_eq!(d.directory, LETSENCRYPT_PRODUCTION);
        assert_eq!(d.key_type, KeyType::EcdsaP256);
        assert_eq!(d.hooks_dir, PathBuf::from("/etc/dirhost/ssl-hooks.d"));
        assert_eq!(
            d.chain_roots,
            PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
        );
        assert!(d.ca_bundle.as_os_str().is_empty() && d.resolver.is_empty());
        let c = Config::parse(
            "[acme]\ndirectory = \"https://localhost:14000/dir\"\n\
             contact = [\"admin@example.com\", \"mailto:ops@example.com\"]\n\
             ca_bundle = \"/tmp/ca.pem\"\nkey_type = \"rsa-2048\"\n\
             eab_kid = \"kid-1\"\neab_hmac_key = \"c2VjcmV0LWtleQ\"\n\
             resolver = \"127.0.0.1:8053\"\nhost_addresses = [\"127.0.0.1\", \"::1\"]\n\
             hooks_dir = \"/tmp/hooks\"\nchain_roots = \"\"\n",
        )
        .unwrap()
        .acme;
        assert_eq!(c.key_type, KeyType::Rsa2048);
        assert_eq!(
            c.contact_uris(),
            ["mailto:admin@example.com", "mailto:ops@example.com"]
        );
        assert_eq!(c.eab_key().unwrap(), b"secret-key");
        assert_eq!(c.host_addresses, ["127.0.0.1", "::1"]);
        assert!(c.chain_roots.as_os_str().is_empty());
        assert_eq!(
            Config::parse(
                &Config {
                    acme: c.clone(),
                    ..Config::default()
                }
                .to_toml()
                .unwrap()
            )
            .unwrap()
            .acme,
            c
        );
    }

    #[test]
    fn watch_defaults_and_overrides() {
        let w = Config::parse("").unwrap().watch;
        assert_eq!(
            (w.debounce_ms, w.resync_secs, w.max_watches),
            (250, 600, None)
        );
        let w = Config::parse("[watch]\nmax_watches = 3\nresync_secs = 60\n")
            .unwrap()
            .watch;
        assert_eq!(
            (w.debounce_ms, w.resync_secs, w.max_watches),
            (250, 60, Some(3))
        );
        for bad in [
            "[watch]\nresync_secs = 0\n",
            "[watch]\ndebounce_ms = 600000\n",
            "[watch]\nmax_watches = -1\n",
            "[watch]\nresync = 5\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted {bad:?}");
        }
        let mut c = Config::default();
        c.watch.max_watches = Some(7);
        assert_eq!(Config::parse(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn dns_defaults_overrides_and_bad_values() {
        let d = Config::parse("").unwrap().dns;
        assert!(d.addresses.is_empty() && d.nameservers.is_empty() && d.caa_issuer.is_empty());
        assert_eq!(d.hooks_dir, PathBuf::from("/etc/dirhost/dns-hooks.d"));
        let c = Config::parse(
            "[dns]\naddresses = [\"192.0.2.1\", \"2001:db8::1\"]\n\
             nameservers = [\"ns1.example.net\", \"ns2.example.net.\"]\n\
             caa_issuer = \"letsencrypt.org\"\nhooks_dir = \"/tmp/dns-hooks\"\n",
        )
        .unwrap();
        assert_eq!(c.dns.addresses, ["192.0.2.1", "2001:db8::1"]);
        assert_eq!(c.dns.caa_issuer, "letsencrypt.org");
        assert_eq!(Config::parse(&c.to_toml().unwrap()).unwrap(), c);
        assert!(Config::parse("[dns]\ncaa_issuer = \"none\"\n").is_ok());
        for bad in [
            "[dns]\naddress = []\n",
            "[dns]\naddresses = [\"example.com\"]\n",
            "[dns]\nnameservers = [\"ns1 example.net\"]\n",
            "[dns]\nnameservers = [\"NS1.example.net\"]\n",
            "[dns]\ncaa_issuer = \"letsencrypt.org; accounturi=x\"\n",
            "[dns]\nhooks_dir = \"relative\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn mail_defaults_overrides_and_bad_values() {
        let d = Config::parse("").unwrap().mail;
        assert_eq!(
            (d.smtp, d.smtps, d.submission, d.imaps, d.pop3s),
            (25, 465, 587, 993, 995)
        );
        assert_eq!(d.certificate, PathBuf::from("/etc/exim4/exim.crt"));
        assert_eq!(d.exim_user, "Debian-exim");
        assert_eq!(d.smarthost_parts().unwrap(), None);
        let c = Config::parse(
            "[mail]\nsmtp = 2525\nlisten = [\"127.0.0.1\", \"::1\"]\n\
             smarthost = \"127.0.0.1:2526\"\nrelay_from = [\"10.0.0.0/8\"]\n\
             postmaster = \"admin@example.com\"\nhostname = \"mail.example.com\"\n",
        )
        .unwrap();
        assert_eq!(c.mail.smtp, 2525);
        assert_eq!(
            c.mail.smarthost_parts().unwrap(),
            Some(("127.0.0.1".to_string(), 2526))
        );
        assert_eq!(c.mail.hostname(&c), "mail.example.com");
        let relay = Config::parse("[mail]\nsmarthost = \"relay.example.net\"\n").unwrap();
        assert_eq!(
            relay.mail.smarthost_parts().unwrap(),
            Some(("relay.example.net".to_string(), 25))
        );
        assert_eq!(Config::parse(&c.to_toml().unwrap()).unwrap(), c);
        for bad in [
            "[mail]\nsmtpp = 25\n",
            "[mail]\nsmtp = 0\n",
            "[mail]\nsmtp = 587\n",
            "[mail]\nlisten = [\"localhost\"]\n",
            "[mail]\ncertificate = \"relative.pem\"\n",
            "[mail]\nsmarthost = \"bad host:25\"\n",
            "[mail]\nsmarthost = \"relay.example.net:0\"\n",
            "[mail]\nrelay_from = [\"everyone\"]\n",
            "[mail]\npostmaster = \"a b\"\n",
            "[mail]\nexim_user = \"\"\n",
            "[mail]\nexim_log = \"relative/%slog\"\n",
            "[mail]\nhostname = \"Not A Name\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn round_trips() {
        let mut c = Config::default();
        c.paths.srv = "/tmp/a".into();
        c.web.trusted_proxies = vec!["192.0.2.0/24".into()];
        assert_eq!(Config::parse(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn php_defaults_follow_the_installed_fpm_and_reject_bad_values() {
        let c = Config::parse("").unwrap();
        let v = crate::php::version_or_fallback();
        assert_eq!(
            c.commands.php_test,
            [format!("php-fpm{v}"), "-t".to_string()]
        );
        assert_eq!(c.commands.php_reload[2], format!("php{v}-fpm"));
        assert_eq!(
            c.php.pool_dir,
            PathBuf::from(format!("/etc/php/{v}/fpm/pool.d"))
        );
        assert_eq!(c.php.enabled, crate::php::default_version().is_some());
        assert_eq!(c.php.socket_dir, PathBuf::from("/run/php"));
        assert!(c.php.disable_functions.iter().any(|f| f == "exec"));
        let c = Config::parse(
            "[php]\nenabled = true\npool_dir = \"/etc/php/8.3/fpm/pool.d\"\nmax_children = 2\n\
             disable_functions = [\"exec\"]\n",
        )
        .unwrap();
        assert!(c.php.enabled);
        assert_eq!(c.php.max_children, 2);
        assert_eq!(c.php.disable_functions, ["exec"]);
        assert_eq!(Config::parse(&c.to_toml().unwrap()).unwrap(), c);
        for bad in [
            "[php]\npool_dirr = \"/x\"\n",
            "[php]\npool_dir = \"relative\"\n",
            "[php]\nsocket_dir = \"run/php\"\n",
            "[php]\nsocket_user = \"www data\"\n",
            "[php]\nsocket_group = \"\"\n",
            "[php]\nmax_children = 0\n",
            "[php]\nidle_timeout_secs = 0\n",
            "[php]\ndisable_functions = [\"exec,system\"]\n",
            "[commands]\nphp_test = []\n",
        ] {
            assert!(Config::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
