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
            apache_reload: argv(&["apache2ctl", "graceful"]),
            exim_test: argv(&["exim4", "-bV", "-C", "/etc/exim4/exim4.conf"]),
            exim_reload: argv(&["systemctl", "reload", "exim4"]),
            dovecot_test: argv(&["doveconf", "-n"]),
            dovecot_reload: argv(&["systemctl", "reload", "dovecot"]),
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
        Ok(())
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
}
