//! Fast, deterministic checks that the Debian packaging (debian/) agrees with the code: the
//! version, the unit, the shipped default config, and the paths and Apache modules the
//! maintainer scripts handle. The slow end-to-end check is scripts/install-test.sh.

use std::path::Path;

use dirhost::config::Config;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The upstream part of the newest debian/changelog entry, in Cargo's spelling.
fn changelog_upstream_version() -> String {
    let changelog = read("debian/changelog");
    let first = changelog.lines().next().unwrap_or_default();
    let version = first
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(v, _)| v)
        .unwrap_or_else(|| panic!("debian/changelog: no version in {first:?}"));
    // Strip an epoch and a Debian revision (native packages have neither).
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    let version = version.rsplit_once('-').map_or(version, |(v, _)| v);
    version.replace('~', "-")
}

#[test]
fn changelog_version_matches_cargo_toml() {
    assert_eq!(
        changelog_upstream_version(),
        env!("CARGO_PKG_VERSION"),
        "debian/changelog and Cargo.toml disagree on the version (debian/rules refuses to build)"
    );
}

/// `Key=value` lines of a unit file (all sections), in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn unit_is_a_notify_service_with_watchdog_restart_and_reload() {
    let unit = read("debian/dirhost.service");
    let settings = unit_settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("ExecStart").len(), 1);
    assert!(
        get("ExecStart")[0].starts_with("/usr/bin/dirhost watch"),
        "{:?}",
        get("ExecStart")
    );
    assert_eq!(get("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("WatchdogSec").len(), 1);
    assert_eq!(get("StartLimitBurst").len(), 1);
    assert_eq!(get("ProtectSystem"), ["strict"]);
}

#[test]
fn unit_lets_the_daemon_write_every_default_output_path() {
    let unit = read("debian/dirhost.service");
    let writable: Vec<String> = unit_settings(&unit)
        .into_iter()
        .filter(|(k, _)| k == "ReadWritePaths")
        .flat_map(|(_, v)| {
            v.split_whitespace()
                .map(|p| p.trim_start_matches(['-', '+']).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let cfg = Config::default();
    let p = &cfg.paths;
    for needed in [
        &p.srv,
        &p.state,
        &p.apache,
        &p.exim,
        &p.dovecot,
        &cfg.php.pool_dir,
    ] {
        assert!(
            writable.iter().any(|w| needed.starts_with(w)),
            "dirhost.service: ReadWritePaths {writable:?} does not cover {}",
            needed.display()
        );
    }
}

/// The shipped config with every `#key = value` and `#[section]` line uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_config_is_all_defaults_and_every_line_is_valid() {
    let text = read("debian/dirhost.toml");
    assert_eq!(
        Config::parse(&text).expect("debian/dirhost.toml as shipped"),
        Config::default(),
        "the shipped config must change nothing: every setting commented out"
    );
    let all = uncommented(&text);
    Config::parse(&all).unwrap_or_else(|e| {
        panic!("debian/dirhost.toml with its settings uncommented is invalid (renamed key?): {e:#}")
    });
}

#[test]
fn shipped_config_documents_every_key() {
    let text = read("debian/dirhost.toml");
    let documented: toml::Table = toml::from_str(&uncommented(&text)).unwrap();
    let defaults: toml::Table = toml::from_str(&Config::default().to_toml().unwrap()).unwrap();
    let mut missing = Vec::new();
    for (section, keys) in &defaults {
        let Some(keys) = keys.as_table() else {
            continue;
        };
        for key in keys.keys() {
            let there = documented
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key));
            if !there {
                missing.push(format!("[{section}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "debian/dirhost.toml (installed as /etc/dirhost/dirhost.toml) lacks a commented default for: {}",
        missing.join(", ")
    );
}

#[test]
fn maintainer_scripts_know_the_mail_files_dirhost_writes() {
    let layout = dirhost::mail::MailLayout::new(&Config::default());
    let postinst = read("debian/postinst");
    let postrm = read("debian/postrm");
    for file in [&layout.exim_conf, &layout.dovecot_conf] {
        let f = file.to_str().unwrap();
        assert!(postinst.contains(f), "debian/postinst does not back up {f}");
        assert!(postrm.contains(f), "debian/postrm does not purge {f}");
    }
    let domains = layout.dovecot_domains.to_str().unwrap();
    assert!(
        postrm.contains(domains),
        "debian/postrm does not purge {domains}"
    );
}

#[test]
fn postinst_enables_the_apache_modules_the_templates_use() {
    let postinst = read("debian/postinst");
    let modules_line = postinst
        .lines()
        .find_map(|l| l.strip_prefix("APACHE_MODULES="))
        .expect("APACHE_MODULES= in debian/postinst");
    let enabled: Vec<&str> = modules_line.trim_matches('"').split_whitespace().collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/apache");
    let mut templates = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        templates.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    // A directive (or handler) in a template, and the module that provides it.
    for (directive, module) in [
        ("RewriteEngine", "rewrite"),
        ("Header ", "headers"),
        ("Alias ", "alias"),
        ("SSLEngine", "ssl"),
        ("ExecCGI", "cgid"),
        ("RemoteIP", "remoteip"),
        ("proxy:unix:", "proxy_fcgi"),
    ] {
        if templates.contains(directive) {
            assert!(
                enabled.contains(&module),
                "templates use {directive:?}, but debian/postinst does not enable mod_{module}"
            );
        }
    }
}

#[test]
fn license_and_maintainer_agree_everywhere() {
    let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let package = cargo["package"].as_table().unwrap();
    assert_eq!(package["license"].as_str(), Some("GPL-3.0-or-later"));
    let copyright = read("debian/copyright");
    assert!(
        copyright.contains("Files: *\nCopyright: 2025-2026 the dirhost authors\nLicense: GPL-3+\n"),
        "debian/copyright must say GPL-3+ (Cargo.toml: GPL-3.0-or-later)"
    );
    assert!(copyright.contains("/usr/share/common-licenses/GPL-3"));
    assert!(
        read("COPYING").contains("GNU GENERAL PUBLIC LICENSE\n                       Version 3")
    );

    let control = read("debian/control");
    let maintainer = control
        .lines()
        .find_map(|l| l.strip_prefix("Maintainer: "))
        .expect("Maintainer in debian/control");
    let deb_meta = package["metadata"]["deb"]["maintainer"].as_str().unwrap();
    assert_eq!(deb_meta, maintainer, "Cargo.toml [package.metadata.deb]");
    assert!(
        read("debian/changelog").contains(&format!(" -- {maintainer}  ")),
        "debian/changelog's trailer names {maintainer}"
    );
    assert!(copyright.contains(&format!("Upstream-Contact: {maintainer}")));
}

#[test]
fn ci_builds_the_package_and_runs_lintian() {
    let ci = read(".ci/run");
    let package = ci
        .lines()
        .position(|l| l.contains("scripts/package.sh"))
        .expect(".ci/run runs scripts/package.sh");
    let tests = ci
        .lines()
        .position(|l| l.trim() == "scripts/test.sh")
        .expect(".ci/run runs scripts/test.sh");
    assert!(package > tests, "the package is built after the tests");
    assert!(ci.contains("CARGO_TARGET_DIR=/tmp/dirhost-pkg-target"));
    let script = read("scripts/package.sh");
    assert!(script.contains("lintian --fail-on error"));
}
