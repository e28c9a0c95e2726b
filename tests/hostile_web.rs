//! The hostile-/srv catalogue (SECURITY.md), web and certificate part: the real dirhost
//! binary against the sandbox's real private Apache and PHP-FPM. Each case is one hostile
//! domain beside a good domain and a victim domain (another customer); after every apply:
//! the sentinels are untouched and their content appears in no file dirhost wrote and in
//! no output, the good and victim domains still answer 200, and the hostile domain got what
//! its case expects (reported with its message, served or not).

mod common;
mod hostile;
#[path = "common/php.rs"]
mod php_fpm;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;
use dirhost::sandbox::Sandbox;
use hostile::*;

const GOOD: &str = "good.test";
const VICTIM: &str = "victim.test";

struct World {
    sb: Sandbox,
    _fpm: php_fpm::PhpFpm,
    secret: Sentinel,
    private: Sentinel,
    victim_key: String,
}

impl World {
    fn start() -> Self {
        let mut sb = sandbox();
        let fpm = php_fpm::PhpFpm::start(&mut sb);
        // The root-only secret: stands in for /etc/shadow in every content check.
        let secret = Sentinel::create(&sb.root().join("secret"), SECRET, 0, 0o600);
        sb.add_site(GOOD, OWNER, "good site").unwrap();
        sb.add_site(VICTIM, OTHER, "victim site").unwrap();
        let private = Sentinel::create(
            &sb.srv().join(VICTIM).join("private/data.txt"),
            VICTIM_PRIVATE,
            OTHER,
            0o600,
        );
        // The victim has a certificate set of its own; its key must never leak to another.
        let v = sb.srv().join(VICTIM);
        let (crt, key) = self_signed(sb.root(), &[VICTIM, &format!("www.{VICTIM}")], 30);
        file(&v.join("config/ssl/sets/1/ssl.crt"), crt.as_bytes(), OTHER, 0o644);
        file(&v.join("config/ssl/sets/1/ssl.key"), key.as_bytes(), OTHER, 0o600);
        link("sets/1", &v.join("config/ssl/current"), OTHER);
        file(&v.join("public/logs/access.log"), b"", OTHER, 0o644);
        let out = php_fpm::apply(&sb, &[]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        Self {
            sb,
            _fpm: fpm,
            secret,
            private,
            victim_key: key,
        }
    }

    fn srv(&self) -> &Path {
        self.sb.srv()
    }
}

type Setup = Box<dyn Fn(&World, &Path)>;

struct Case {
    id: String,
    attack: String,
    /// The entry's name in /srv (raw bytes: names need not be UTF-8).
    name: Vec<u8>,
    /// Make a normal site first (htdocs with index.html), owned by HOSTILE.
    site: bool,
    setup: Setup,
    /// Text that must appear in `dirhost apply`'s output (stdout + stderr).
    report: Option<String>,
    /// Expected status of `GET /` for the name (None: not checked, e.g. not a valid name).
    status: Option<u16>,
}

fn case(
    id: &str,
    attack: impl Into<String>,
    setup: impl Fn(&World, &Path) + 'static,
    report: Option<&str>,
    status: Option<u16>,
) -> Case {
    Case {
        id: id.to_string(),
        attack: attack.into(),
        name: format!("h-{}.test", id.to_ascii_lowercase()).into_bytes(),
        site: true,
        setup: Box::new(setup),
        report: report.map(str::to_string),
        status,
    }
}

/// Where each symlink target points.
fn targets(w: &World) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("secret", w.secret.path.clone()),
        ("shadow", PathBuf::from("/etc/shadow")),
        ("victim", w.private.path.clone()),
        ("dangling", PathBuf::from("/nonexistent/dirhost-hostile")),
    ]
}

/// Directory targets for places where a directory is expected.
fn dir_targets(w: &World) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("etc", PathBuf::from("/etc")),
        ("victim", w.srv().join(VICTIM).join("config")),
        ("root", w.sb.root().to_path_buf()),
        ("dangling", PathBuf::from("/nonexistent/dirhost-hostile")),
    ]
}

const LINK_REFUSED: &str = "is a symbolic link, refusing to follow it";

fn catalogue(w: &World) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut n = 0;
    let mut next = |prefix: &str| {
        n += 1;
        format!("{prefix}{n:03}")
    };

    // --- Symlinks where a flag/value file is read: refused for the domain (skipped).
    for place in [
        "config/ip",
        "config/ssl-provider",
        "config/mandatory-ssl",
        "config/ssl-only",
        "config/no-hsts",
        "config/hsts",
        "config/php",
        "config/php.ini",
    ] {
        for (tname, target) in targets(w) {
            let id = next("W");
            let t = target.clone();
            cases.push(case(
                &id,
                format!("{place} is a symlink to {tname} ({})", target.display()),
                move |_, d| link(&t, &d.join(place), HOSTILE),
                Some(LINK_REFUSED),
                None,
            ));
        }
    }
    // --- Symlinked directories on the way to what dirhost reads.
    for (place, report, status) in [
        ("config", LINK_REFUSED, Some(404)),
        ("public", LINK_REFUSED, Some(404)),
        ("public/htdocs", "public/htdocs is a symbolic link", Some(404)),
        ("config/ssl", LINK_REFUSED, Some(200)),
        ("config/ssl/sets", LINK_REFUSED, Some(200)),
    ] {
        for (tname, target) in dir_targets(w) {
            let id = next("W");
            let t = target.clone();
            cases.push(case(
                &id,
                format!("{place}/ is a symlink to {tname} ({})", target.display()),
                move |_, d| {
                    remove_tree(&d.join(place));
                    link(&t, &d.join(place), HOSTILE)
                },
                Some(report),
                status,
            ));
        }
    }
    cases
}

fn host_of(c: &Case) -> Option<String> {
    std::str::from_utf8(&c.name)
        .ok()
        .filter(|h| !h.contains(|ch: char| ch.is_ascii_control() || ch == ' '))
        .map(str::to_string)
}

fn check_common(w: &World, label: &str, output: &str) {
    w.secret.assert_untouched(label);
    w.private.assert_untouched(label);
    let skip = [w.secret.ino, w.private.ino];
    for (needle, what) in [
        (SECRET, "the root-only secret"),
        (VICTIM_PRIVATE, "the victim's private file"),
    ] {
        let hits = files_containing(w.sb.root(), needle, &skip);
        assert!(hits.is_empty(), "{label}: {what} copied into {hits:?}");
        assert!(!output.contains(needle), "{label}: {what} in the output");
    }
    // The victim's key is only ever in the victim's own set and its own verified copy.
    let key_line = w
        .victim_key
        .lines()
        .nth(1)
        .expect("a PEM body line")
        .to_string();
    assert!(!output.contains(&key_line), "{label}: victim key in output");
    for hit in files_containing(w.sb.root(), &key_line, &[]) {
        let p = hit.to_string_lossy();
        assert!(
            p.contains(VICTIM) && !p.contains("h-"),
            "{label}: the victim's key is in {p}"
        );
    }
    for (host, body) in [(GOOD, "good site"), (VICTIM, "victim site")] {
        let r = w.sb.http_get(host, "/").unwrap();
        assert_eq!(
            r.status,
            200,
            "{label}: {host} no longer served: {r:?}\n{}",
            w.sb.apache_error_log()
        );
        assert!(r.body.contains(body), "{label}: {host}: {}", r.body);
    }
}

fn run_batch(w: &World, batch: &[Case]) {
    let label = batch
        .iter()
        .map(|c| c.id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    for c in batch {
        let dir = raw_name(w.srv(), &c.name);
        if c.site {
            let name = std::ffi::OsStr::from_bytes(&c.name);
            std::fs::create_dir(&dir).unwrap();
            let htdocs = dir.join("public/htdocs");
            mkdirs(&htdocs, HOSTILE);
            file(
                &htdocs.join("index.html"),
                format!("hostile {}", c.id).as_bytes(),
                HOSTILE,
                0o644,
            );
            std::os::unix::fs::chown(&dir, Some(HOSTILE), Some(HOSTILE)).unwrap();
            let _ = name;
        }
        (c.setup)(w, &dir);
    }
    let out = php_fpm::apply(&w.sb, &[]);
    let text = format!("{}\n{}", stdout(&out), stderr(&out));
    for c in batch {
        if let Some(want) = &c.report {
            let shown = String::from_utf8_lossy(&c.name).into_owned();
            let mentioned = text
                .lines()
                .any(|l| l.contains(want.as_str()) && l.contains(&shown));
            assert!(
                mentioned,
                "{} ({}): expected a report containing {want:?} for {shown:?}:\n{text}",
                c.id, c.attack
            );
        }
        if let (Some(want), Some(host)) = (c.status, host_of(c)) {
            let r = w.sb.http_get(&host, "/").unwrap();
            assert_eq!(r.status, want, "{} ({}): GET / {r:?}\n{text}", c.id, c.attack);
        }
    }
    check_common(w, &label, &text);
    for c in batch {
        remove_tree(&raw_name(w.srv(), &c.name));
    }
}

#[test]
fn hostile_web_and_certificate_catalogue() {
    let w = World::start();
    let cases = catalogue(&w);
    let total = cases.len();
    let mut ran = 0;
    let mut cases = cases.into_iter().peekable();
    while cases.peek().is_some() {
        let batch: Vec<Case> = cases.by_ref().take(8).collect();
        run_batch(&w, &batch);
        ran += batch.len();
    }
    assert_eq!(ran, total);
    summary("web+certificates", ran);
}
