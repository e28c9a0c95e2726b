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
        let (_, key) = cert_set(
            sb.root(),
            &v,
            &[VICTIM, &format!("www.{VICTIM}")],
            OTHER,
            true,
        );
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
    /// A further request to the hostile name: (path, allowed statuses, text that must not
    /// be in the body).
    probe: Option<(String, Vec<u16>, Vec<String>)>,
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
        probe: None,
    }
}

impl Case {
    fn named(mut self, name: &[u8]) -> Self {
        self.name = name.to_vec();
        self
    }
    fn bare(mut self) -> Self {
        self.site = false;
        self
    }
    fn probe(mut self, path: &str, statuses: &[u16], absent: &[&str]) -> Self {
        self.probe = Some((
            path.to_string(),
            statuses.to_vec(),
            absent.iter().map(|s| s.to_string()).collect(),
        ));
        self
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

/// The tail of every injection payload: must never reach a generated file.
const INJECTED: &str = "DHINJ";

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
        (
            "public/htdocs",
            "public/htdocs is a symbolic link",
            Some(404),
        ),
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
    more_cases(w, &mut next, &mut cases);
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
    // (The victim's key file itself may be hard-linked into a hostile tree by a case.)
    use std::os::unix::fs::MetadataExt;
    let key_ino = std::fs::metadata(w.srv().join(VICTIM).join("config/ssl/sets/1/ssl.key"))
        .unwrap()
        .ino();
    for hit in files_containing(w.sb.root(), &key_line, &[key_ino]) {
        let p = hit.to_string_lossy();
        assert!(
            p.contains(VICTIM) && !p.contains("h-"),
            "{label}: the victim's key is in {p}"
        );
    }
    // No injected text in anything dirhost generated (the servers' configuration, the state).
    let mut generated = files_containing(w.sb.root(), INJECTED, &skip);
    generated.retain(|p| {
        let rel = p.strip_prefix(w.sb.root()).unwrap();
        !(rel.starts_with("srv") || rel.starts_with("logs"))
    });
    assert!(
        generated.is_empty(),
        "{label}: injected text in {generated:?}"
    );
    // Nothing was created as the hostile customer outside its own domains (dirhost acts as
    // the owner only inside the owner's tree), e.g. in the victim's tree or the state dir.
    for e in walkdir::WalkDir::new(w.sb.root())
        .into_iter()
        .filter_map(Result::ok)
    {
        use std::os::unix::fs::MetadataExt;
        let rel = e.path().strip_prefix(w.sb.root()).unwrap();
        let own = rel.starts_with("srv")
            && rel
                .components()
                .nth(1)
                .is_some_and(|c| !matches!(c.as_os_str().to_str(), Some(GOOD | VICTIM)));
        if !own {
            let m = e.metadata().unwrap();
            assert_ne!(
                m.uid(),
                HOSTILE,
                "{label}: {} was made as the hostile customer",
                e.path().display()
            );
        }
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
            let shown = dirhost::model::validate::printable(&String::from_utf8_lossy(&c.name));
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
            assert_eq!(
                r.status, want,
                "{} ({}): GET / {r:?}\n{text}",
                c.id, c.attack
            );
        }
        if let (Some((path, statuses, absent)), Some(host)) = (&c.probe, host_of(c)) {
            let r = w.sb.http_get(&host, path).unwrap();
            assert!(
                statuses.contains(&r.status),
                "{} ({}): GET {path}: {r:?}\n{text}",
                c.id,
                c.attack
            );
            for a in absent {
                assert!(
                    !r.body.contains(a.as_str()),
                    "{} ({}): {a:?} served",
                    c.id,
                    c.attack
                );
            }
        }
    }
    check_common(w, &label, &text);
    // A payload's newline never starts a line of its own in dirhost's output (forged lines).
    for forged in [
        "Include /etc/shadow",
        "RewriteRule ^ /etc/shadow",
        "</VirtualHost>",
    ] {
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(forged)),
            "{label}: a customer value forged the output line {forged:?}:\n{text}"
        );
    }
    for c in batch {
        let mut outcome = match &c.report {
            Some(r) => format!("reported: \"{r}\""),
            None => "no report needed (nothing dirhost reads)".to_string(),
        };
        if let Some(s) = c.status {
            outcome.push_str(&format!("; GET / → {s}"));
        }
        if let Some((path, statuses, _)) = &c.probe {
            outcome.push_str(&format!(
                "; GET {path} → {statuses:?}, nothing of another's"
            ));
        }
        catalogue_row("hostile_web", &c.id, &c.attack, &outcome);
    }
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

/// Characters and sequences that would break out of a config value.
const PAYLOADS: &[(&str, &str)] = &[
    ("newline", "\nInclude /etc/shadow\n"),
    ("crlf", "\r\nRewriteRule ^ /etc/shadow\r\n"),
    ("quote", "\""),
    ("single-quote", "'"),
    ("lt", "<"),
    ("gt", ">"),
    ("hash", "#"),
    ("percent", "%{ENV:SECRET}"),
    ("exim-expansion", "${run{/bin/sh -c id}}"),
    ("backslash", "\\"),
    ("space", " x "),
    ("semicolon", ";"),
    ("backtick", "`id`"),
    ("nul", "\0"),
    ("escape", "\x1b[2J"),
    ("unicode-line-separator", "\u{2028}"),
];

fn more_cases(w: &World, next: &mut impl FnMut(&str) -> String, cases: &mut Vec<Case>) {
    // --- FIFOs, sockets, devices and directories where a flag file is expected: refused
    // without blocking.
    for place in [
        "config/ip",
        "config/mandatory-ssl",
        "config/php.ini",
        "config/ssl-provider",
    ] {
        type Maker = fn(&Path);
        let kinds: [(&str, Maker); 5] = [
            ("a FIFO", |p| fifo(p, HOSTILE)),
            ("a socket", |p| socket(p, HOSTILE)),
            ("/dev/zero (char 1,5)", |p| chardev(p, 1, 5, HOSTILE)),
            ("/dev/tty (char 5,0)", |p| chardev(p, 5, 0, HOSTILE)),
            ("a directory", |p| mkdirs(p, HOSTILE)),
        ];
        for (kind, make) in kinds {
            cases.push(case(
                &next("W"),
                format!("{place} is {kind}"),
                move |_, d| make(&d.join(place)),
                Some("not a regular file"),
                None,
            ));
        }
    }
    // --- Huge files: a 1 GB sparse flag file is an error, not an OOM.
    for place in [
        "config/ip",
        "config/mandatory-ssl",
        "config/php.ini",
        "config/hsts",
    ] {
        cases.push(case(
            &next("W"),
            format!("{place} is a 1 GB sparse file"),
            move |_, d| sparse(&d.join(place), 1 << 30, HOSTILE),
            Some("larger than"),
            None,
        ));
    }
    // --- A hard link to the root-only secret: read as the owner, so permission denied.
    for place in ["config/ip", "config/php.ini", "config/ssl-provider"] {
        cases.push(case(
            &next("W"),
            format!("{place} is a hard link to the root-only secret"),
            move |w, d| {
                mkdirs(&d.join("config"), HOSTILE);
                std::fs::hard_link(&w.secret.path, d.join(place)).unwrap();
            },
            Some("Permission denied"),
            None,
        ));
    }
    // --- Directive injection through config/ip (the web value that reaches the vhost).
    for (pname, p) in PAYLOADS {
        let text = format!("127.0.0.1{p}DHINJ");
        cases.push(case(
            &next("W"),
            format!("config/ip with {pname}: {text:?}"),
            move |_, d| file(&d.join("config/ip"), text.as_bytes(), HOSTILE, 0o644),
            Some("config/ip"),
            None,
        ));
    }
    // --- ...through config/php.ini (values reach the PHP-FPM pool file).
    for (pname, p) in PAYLOADS {
        let text = format!("memory_limit = 128M{p}DHINJ\n");
        // `;` starts an ini comment: the value is then just 128M (accepted, canonical).
        let report = (*pname != "semicolon").then_some("php.ini");
        cases.push(case(
            &next("P"),
            format!("config/php.ini with {pname}: {text:?}"),
            move |_, d| file(&d.join("config/php.ini"), text.as_bytes(), HOSTILE, 0o644),
            report,
            None,
        ));
    }
    for text in [
        "open_basedir = /\n",
        "disable_functions =\n",
        "auto_prepend_file = /etc/shadow\n",
        "extension = /tmp/evil.so\n",
        "sendmail_path = /bin/sh -c id\n",
        "memory_limit = 128M\nphp_admin_value[open_basedir] = /\n",
        "[HOST=victim.test]\nmemory_limit = 1G\n",
        "memory_limit = \"128M\nopen_basedir=/\"\n",
        "memory_limit = 99999999999999999999999G\n",
        "max_execution_time = -1\n",
    ] {
        cases.push(case(
            &next("P"),
            format!("config/php.ini tries {text:?}"),
            move |_, d| file(&d.join("config/php.ini"), text.as_bytes(), HOSTILE, 0o644),
            Some("php.ini"),
            None,
        ));
    }
    cases.push(case(
        &next("P"),
        "config/php is a value with a directive in it",
        |_, d| {
            file(
                &d.join("config/php"),
                b"yes\nphp_admin_value[open_basedir] = /\n",
                HOSTILE,
                0o644,
            )
        },
        Some("config/php says"),
        None,
    ));
    // --- PHP code that tries to read outside its domain.
    let steal = format!(
        "<?php foreach (['{}', '{}', '{}', '/etc/shadow'] as $f) {{ echo @file_get_contents($f); }} echo 'php-ran';",
        w.secret.path.display(),
        w.private.path.display(),
        w.srv()
            .join(VICTIM)
            .join("public/htdocs/index.html")
            .display()
    );
    for (what, extra) in [
        ("a plain domain", None::<fn(&Path)>),
        (
            "php/ a symlink to /etc",
            Some(|d: &Path| link("/etc", &d.join("php"), HOSTILE)),
        ),
        (
            "php/sessions a symlink to the victim's domain",
            Some(|d: &Path| {
                mkdirs(&d.join("php"), HOSTILE);
                link(
                    d.parent().unwrap().join(VICTIM),
                    &d.join("php/sessions"),
                    HOSTILE,
                )
            }),
        ),
    ] {
        let code = steal.clone();
        let c = case(
            &next("P"),
            format!("PHP page reads the secret, the victim's files and /etc/shadow; {what}"),
            move |_, d| {
                if let Some(f) = extra {
                    f(d)
                }
                file(
                    &d.join("public/htdocs/steal.php"),
                    code.as_bytes(),
                    HOSTILE,
                    0o644,
                )
            },
            None,
            Some(200),
        )
        .probe(
            "/steal.php",
            &[200, 500, 503],
            &[SECRET, VICTIM_PRIVATE, "victim site", "root:"],
        );
        cases.push(c);
    }

    // --- Domain directory names.
    for (pname, p) in PAYLOADS {
        if *p == "\0" {
            continue; // cannot be in a file name
        }
        let name = format!("a{}b.test", p.replace('/', "_"));
        cases.push(
            case(
                &next("N"),
                format!("domain directory named with {pname}: {name:?}"),
                |_, _| {},
                Some("not a valid domain name"),
                None,
            )
            .named(name.as_bytes()),
        );
    }
    for (what, name, report) in [
        ("non-UTF-8", b"\xff\xfe.test".to_vec(), "not UTF-8"),
        ("upper case", b"Upper.test".to_vec(), "lower-case"),
        (
            "255 bytes",
            format!("{}.test", "a".repeat(250)).into_bytes(),
            "not a valid domain name",
        ),
        (
            "a 64-byte label",
            format!("{}.test", "b".repeat(64)).into_bytes(),
            "longer than 63",
        ),
        (
            "a terminal escape",
            b"esc\x1b[31m.test".to_vec(),
            "not a valid domain name",
        ),
        ("one label", b"localhost".to_vec(), "at least two labels"),
        ("a numeric TLD", b"10.0.0.1".to_vec(), "numeric"),
        (
            "bad punycode",
            "\u{200d}zwj.test".as_bytes().to_vec(),
            "not a valid",
        ),
    ] {
        cases.push(
            case(
                &next("N"),
                format!("domain directory named with {what}"),
                |_, _| {},
                Some(report),
                None,
            )
            .named(&name),
        );
    }
    // --- Owners that are not customers.
    for (what, uid, gid, report) in [
        ("root", 0, 0, "owned by uid 0"),
        ("www-data (33)", 33, 33, "owned by uid 33"),
        (
            "a customer uid with group root",
            HOSTILE,
            0,
            "group is gid 0",
        ),
        ("nobody", 65534, 65534, "owned by uid 65534"),
        ("uid 999", 999, 999, "owned by uid 999"),
    ] {
        cases.push(case(
            &next("N"),
            format!("domain directory owned by {what}"),
            move |_, d| std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap(),
            Some(report),
            Some(404),
        ));
    }

    // --- Alias symlinks in /srv.
    cases.push(
        case(
            &next("A"),
            "alias symlink owned by the hostile customer pointing at the victim's domain",
            |w, d| link(w.srv().join(VICTIM), d, HOSTILE),
            Some("alias symlink is owned by uid"),
            Some(404),
        )
        .bare(),
    );
    cases.push(
        case(
            &next("A"),
            "alias symlink owned by www-data pointing at the victim's domain",
            |w, d| link(w.srv().join(VICTIM), d, 33),
            Some("alias symlink is owned by uid 33"),
            Some(404),
        )
        .bare(),
    );
    for (what, target) in [
        ("/etc", PathBuf::from("/etc")),
        ("the victim's public/", w.srv().join(VICTIM).join("public")),
        ("a dangling path", PathBuf::from("/nonexistent")),
        ("itself", PathBuf::from("h-loop.test")),
    ] {
        cases.push(
            case(
                &next("A"),
                format!("alias symlink pointing at {what}: ignored"),
                move |_, d| link(&target, d, HOSTILE),
                None,
                Some(404),
            )
            .bare(),
        );
    }
    for (pname, p) in PAYLOADS {
        if *p == "\0" {
            continue;
        }
        let name = format!("al{}ias.test", p.replace('/', "_"));
        cases.push(
            case(
                &next("A"),
                format!("alias symlink named with {pname} to the good domain"),
                |w, d| link(w.srv().join(GOOD), d, OWNER),
                Some("not a valid domain name"),
                None,
            )
            .named(name.as_bytes())
            .bare(),
        );
    }

    // --- Certificates.
    let vset = w.srv().join(VICTIM).join("config/ssl/sets/1");
    // Only the set's name is taken from the link (Sympl writes absolute and relative forms):
    // it is never followed, so a link into the victim's tree names the domain's own set.
    for (what, target, report) in [
        (
            "the secret (absolute)",
            w.secret.path.display().to_string(),
            "config/ssl/current points at",
        ),
        (
            "the victim's set (relative, ../..)",
            "../../../victim.test/config/ssl/sets/1".into(),
            "certificate set 1 does not exist",
        ),
        (
            "sets/../../../victim.test/config/ssl/sets/1",
            "sets/../../../victim.test/config/ssl/sets/1".into(),
            "certificate set 1 does not exist",
        ),
        (
            "the victim's set (absolute)",
            vset.display().to_string(),
            "certificate set 1 does not exist",
        ),
        (
            "a missing set",
            "sets/7".into(),
            "certificate set 7 does not exist",
        ),
        (
            "a name with a newline",
            "sets/1\nInclude /etc/shadow".into(),
            "config/ssl/current points at",
        ),
    ] {
        cases.push(case(
            &next("C"),
            format!("config/ssl/current points at {what}"),
            move |_, d| {
                mkdirs(&d.join("config/ssl/sets"), HOSTILE);
                link(&target, &d.join("config/ssl/current"), HOSTILE)
            },
            Some(report),
            Some(200),
        ));
    }
    let vkey = vset.join("ssl.key");
    let vcrt = vset.join("ssl.crt");
    {
        let vkey = vkey.clone();
        cases.push(case(
            &next("C"),
            "sets/1/ssl.key is a symlink to the victim's key",
            move |w, d| own_set(w, d, Some(&vkey), None),
            Some(LINK_REFUSED),
            Some(200),
        ));
    }
    {
        let vcrt = vcrt.clone();
        cases.push(case(
            &next("C"),
            "sets/1/ssl.crt is a symlink to the victim's certificate",
            move |w, d| own_set(w, d, None, Some(&vcrt)),
            Some(LINK_REFUSED),
            Some(200),
        ));
    }
    {
        let vset = vset.clone();
        cases.push(case(
            &next("C"),
            "sets/1 is a symlink to the victim's set directory",
            move |_, d| {
                mkdirs(&d.join("config/ssl/sets"), HOSTILE);
                link(&vset, &d.join("config/ssl/sets/1"), HOSTILE);
                link("sets/1", &d.join("config/ssl/current"), HOSTILE);
            },
            Some(LINK_REFUSED),
            Some(200),
        ));
    }
    {
        let vkey = vkey.clone();
        cases.push(case(
            &next("C"),
            "sets/1/ssl.key is a hard link to the victim's key (0600, another uid)",
            move |w, d| {
                own_set(w, d, None, None);
                let k = d.join("config/ssl/sets/1/ssl.key");
                std::fs::remove_file(&k).unwrap();
                std::fs::hard_link(&vkey, &k).unwrap();
            },
            Some("Permission denied"),
            Some(200),
        ));
    }
    cases.push(case(
        &next("C"),
        "sets/1/ssl.key is a FIFO",
        |w, d| {
            own_set(w, d, None, None);
            fifo(&d.join("config/ssl/sets/1/ssl.key"), HOSTILE)
        },
        Some("not a regular file"),
        Some(200),
    ));
    cases.push(case(
        &next("C"),
        "sets/1/ssl.crt is a 1 GB sparse file",
        |w, d| {
            own_set(w, d, None, None);
            sparse(&d.join("config/ssl/sets/1/ssl.crt"), 1 << 30, HOSTILE)
        },
        Some("larger than"),
        Some(200),
    ));
    {
        let vcrt = vcrt.clone();
        cases.push(case(
            &next("C"),
            "the victim's (public) certificate copied, with the hostile customer's own key",
            move |w, d| {
                own_set(w, d, None, None);
                std::fs::copy(&vcrt, d.join("config/ssl/sets/1/ssl.crt")).unwrap();
            },
            Some("does not belong"),
            Some(200),
        ));
    }
    for (what, legacy) in [("ssl.key", vkey.clone()), ("ssl.crt", vcrt.clone())] {
        cases.push(case(
            &next("C"),
            format!("legacy config/{what} is a symlink to the victim's"),
            move |_, d| {
                // The legacy files are only read when a certificate is there.
                let name = d.file_name().unwrap().to_str().unwrap().to_string();
                let (crt, _) = self_signed(d, &[&name], 30);
                file(&d.join("config/ssl.crt"), crt.as_bytes(), HOSTILE, 0o644);
                link(&legacy, &d.join("config").join(what), HOSTILE)
            },
            Some(LINK_REFUSED),
            Some(200),
        ));
    }

    // --- Access logs.
    let vlogs = w.srv().join(VICTIM).join("public/logs");
    for (what, make) in [
        ("public/logs is a symlink to the victim's logs", {
            let v = vlogs.clone();
            Box::new(move |d: &Path| link(&v, &d.join("public/logs"), HOSTILE))
                as Box<dyn Fn(&Path)>
        }),
        (
            "public/logs/access.log is a symlink to the victim's access.log",
            {
                let v = vlogs.join("access.log");
                Box::new(move |d: &Path| link(&v, &d.join("public/logs/access.log"), HOSTILE))
            },
        ),
        ("public/logs/access.log is a symlink to the secret", {
            let s = w.secret.path.clone();
            Box::new(move |d: &Path| link(&s, &d.join("public/logs/access.log"), HOSTILE))
        }),
        ("public/logs/access.log is a hard link to the secret", {
            let s = w.secret.path.clone();
            Box::new(move |d: &Path| {
                mkdirs(&d.join("public/logs"), HOSTILE);
                std::fs::hard_link(&s, d.join("public/logs/access.log")).unwrap()
            })
        }),
        (
            "public/logs/access.log is a FIFO",
            Box::new(|d: &Path| fifo(&d.join("public/logs/access.log"), HOSTILE)),
        ),
        (
            "public/logs is a regular file",
            Box::new(|d: &Path| file(&d.join("public/logs"), b"x", HOSTILE, 0o644)),
        ),
    ] {
        cases.push(
            case(&next("L"), what, move |_, d| make(d), None, Some(200)).probe(
                "/hostile-probe",
                &[404],
                &[],
            ),
        );
    }

    // --- htdocs, cgi-bin and .well-known.
    let vindex = w.srv().join(VICTIM).join("public/htdocs/index.html");
    {
        let v = vindex.clone();
        cases.push(
            case(
                &next("H"),
                "htdocs/steal.html is a symlink to the victim's index.html",
                move |_, d| link(&v, &d.join("public/htdocs/steal.html"), HOSTILE),
                None,
                Some(200),
            )
            .probe("/steal.html", &[403], &["victim site"]),
        );
    }
    {
        let v = vindex.clone();
        cases.push(
            case(
                &next("H"),
                ".htaccess asks for FollowSymLinks, then a symlink to the victim's index.html",
                move |_, d| {
                    file(
                        &d.join("public/htdocs/.htaccess"),
                        b"Options +FollowSymLinks\n",
                        HOSTILE,
                        0o644,
                    );
                    link(&v, &d.join("public/htdocs/steal.html"), HOSTILE)
                },
                None,
                None,
            )
            .probe("/steal.html", &[403, 500], &["victim site"]),
        );
    }
    {
        let s = w.secret.path.clone();
        cases.push(
            case(
                &next("H"),
                ".htaccess tries Include of the secret",
                move |_, d| {
                    file(
                        &d.join("public/htdocs/.htaccess"),
                        format!("Include {}\n", s.display()).as_bytes(),
                        HOSTILE,
                        0o644,
                    )
                },
                None,
                None,
            )
            .probe("/", &[500], &[SECRET]),
        );
    }
    {
        let s = w.secret.path.clone();
        cases.push(
            case(
                &next("H"),
                "htdocs/index.html is a hard link to the root-only secret",
                move |_, d| {
                    let i = d.join("public/htdocs/index.html");
                    std::fs::remove_file(&i).unwrap();
                    std::fs::hard_link(&s, &i).unwrap();
                },
                None,
                Some(403),
            )
            .probe("/index.html", &[403], &[SECRET]),
        );
    }
    {
        let v = w.srv().join(VICTIM).join("public/htdocs");
        cases.push(
            case(
                &next("H"),
                "htdocs/.well-known/acme-challenge is a symlink to the victim's htdocs",
                move |_, d| {
                    link(
                        &v,
                        &d.join("public/htdocs/.well-known/acme-challenge"),
                        HOSTILE,
                    )
                },
                None,
                Some(200),
            )
            .probe(
                "/.well-known/acme-challenge/index.html",
                &[404],
                &["victim site"],
            ),
        );
    }
    cases.push(
        case(
            &next("H"),
            "htdocs/.well-known is a FIFO",
            |_, d| fifo(&d.join("public/htdocs/.well-known"), HOSTILE),
            None,
            Some(200),
        )
        .probe("/.well-known/acme-challenge/x", &[404], &[]),
    );
    cases.push(case(
        &next("H"),
        "htdocs nested 1,500 directories deep (longer than PATH_MAX)",
        |_, d| nested(&d.join("public/htdocs"), "deep", 1500, HOSTILE),
        None,
        Some(200),
    ));
    cases.push(case(
        &next("H"),
        "htdocs is a FIFO",
        |_, d| {
            remove_tree(&d.join("public/htdocs"));
            fifo(&d.join("public/htdocs"), HOSTILE)
        },
        None,
        Some(404),
    ));
    for (what, target) in [
        ("/usr/lib/cgi-bin", PathBuf::from("/usr/lib/cgi-bin")),
        (
            "the victim's htdocs",
            w.srv().join(VICTIM).join("public/htdocs"),
        ),
    ] {
        cases.push(
            case(
                &next("H"),
                format!("public/cgi-bin is a symlink to {what}"),
                move |_, d| link(&target, &d.join("public/cgi-bin"), HOSTILE),
                None,
                Some(200),
            )
            .probe("/cgi-bin/index.html", &[403, 404, 500], &["victim site"]),
        );
    }
}

/// A certificate set of the hostile domain's own (valid, self-signed), optionally with the
/// key or certificate replaced by a symlink.
fn own_set(w: &World, d: &Path, key_link: Option<&Path>, crt_link: Option<&Path>) {
    let name = d.file_name().unwrap().to_str().unwrap();
    let (crt, key) = self_signed(d, &[name, &format!("www.{name}")], 30);
    let set = d.join("config/ssl/sets/1");
    file(&set.join("ssl.crt"), crt.as_bytes(), HOSTILE, 0o644);
    file(&set.join("ssl.key"), key.as_bytes(), HOSTILE, 0o600);
    if let Some(k) = key_link {
        link(k, &set.join("ssl.key"), HOSTILE);
    }
    if let Some(c) = crt_link {
        link(c, &set.join("ssl.crt"), HOSTILE);
    }
    link("sets/1", &d.join("config/ssl/current"), HOSTILE);
    let _ = w;
}
