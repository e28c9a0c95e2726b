//! The hostile-/srv catalogue (SECURITY.md), statistics part (issue 6): a hostile customer
//! plants things in `config/stats`, `config/stats-password` and `public/logs` beside a good
//! domain and a victim whose statistics are on, then the real `dirhost apply`, `dirhost stats
//! generate` (GoAccess, as the owner) and `dirhost stats enable/password` run against the
//! sandbox's real Apache, which serves `/stats/` over HTTPS.

mod common;
mod hostile;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use dirhost::sandbox::Sandbox;
use hostile::*;

const GOOD: &str = "good.test";
const VICTIM: &str = "victim.test";
/// The victim's stats login.
const VIC_USER: &str = "vic";
const VIC_PW: &str = "victim pass 9";
/// The hostile customer's own stats login (valid unless a case replaces the file).
const EVE_USER: &str = "eve";
const EVE_PW: &str = "hostile pass 1";
/// A page only the victim's log (and so only the victim's report) mentions.
const MARKER: &str = "victim-only-page-q7x3";
const INJECTED: &str = "DHINJ";
/// A valid bcrypt hash body (53 characters after `$2y$05$`).
const BCRYPT: &str = "$2y$05$SFXC/3qgXTDK1eoeMKOiJuX93pHthgZzGam9ZrMbzxlCu4v/mYgdq";
const N_HOSTILE: usize = 60;

struct World {
    sb: Sandbox,
    secret: Sentinel,
    private: Sentinel,
    /// The victim's credentials file (0600, the victim's) must stay as it is.
    vic_creds: Sentinel,
    /// CA file for the hostile domains' certificate, and for the victim's.
    ca_hostile: PathBuf,
    ca_victim: PathBuf,
    hostile_crt: String,
    hostile_key: String,
    /// The victim's served report, as generated at the start: never changed by a case.
    vic_report: Vec<u8>,
}

fn name(i: usize) -> String {
    format!("h-st{i:02}.test")
}

impl World {
    fn start() -> Self {
        let sb = sandbox();
        let secret = Sentinel::create(&sb.root().join("secret"), SECRET, 0, 0o600);
        sb.add_site(GOOD, OWNER, "good site").unwrap();
        sb.add_site(VICTIM, OTHER, "victim site").unwrap();
        let v = sb.srv().join(VICTIM);
        let private = Sentinel::create(&v.join("private/data.txt"), VICTIM_PRIVATE, OTHER, 0o600);
        let (crt, _) = cert_set(sb.root(), &v, &[VICTIM], OTHER, true);
        let ca_victim = sb.root().join("victim-ca.pem");
        std::fs::write(&ca_victim, &crt).unwrap();
        // The victim's statistics are on, with a private log and a private password file.
        file(&v.join("config/stats"), b"", OTHER, 0o644);
        let vic_creds = Sentinel::create(
            &v.join("config/stats-password"),
            &format!("{VIC_USER}:{VIC_PW}\n"),
            OTHER,
            0o600,
        );
        let mut log = String::new();
        for i in 0..5 {
            log.push_str(&format!(
                "198.51.100.{i} - - [20/Nov/2026:10:00:0{i} +0000] \"GET /{MARKER}.html HTTP/1.1\" 200 123 \"-\" \"curl/8\"\n"
            ));
        }
        file(
            &v.join("public/logs/access.log"),
            log.as_bytes(),
            OTHER,
            0o600,
        );

        let names: Vec<String> = (1..=N_HOSTILE).map(name).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (hostile_crt, hostile_key) = self_signed(sb.root(), &refs, 30);
        let ca_hostile = sb.root().join("hostile-ca.pem");
        std::fs::write(&ca_hostile, &hostile_crt).unwrap();

        let out = apply(&sb, &[]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        let out = dirhost(&sb, &["stats", "generate", VICTIM]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("5 requests"), "{}", stdout(&out));
        let vic_report = std::fs::read(
            sb.config()
                .paths
                .state
                .join("stats/web/victim.test/report/index.html"),
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&vic_report).contains(MARKER));
        let w = Self {
            sb,
            secret,
            private,
            vic_creds,
            ca_hostile,
            ca_victim,
            hostile_crt,
            hostile_key,
            vic_report,
        };
        let (code, body) = w.stats(VICTIM, Some((VIC_USER, VIC_PW)));
        assert_eq!(code, 200, "{body}\n{}", w.sb.apache_error_log());
        w
    }

    fn srv(&self) -> &Path {
        self.sb.srv()
    }
    fn victim(&self) -> PathBuf {
        self.srv().join(VICTIM)
    }
    fn state(&self) -> PathBuf {
        self.sb.config().paths.state.clone()
    }

    /// GET https://HOST/stats/ through the real Apache; (status, body).
    fn stats(&self, host: &str, auth: Option<(&str, &str)>) -> (u16, String) {
        let ca = if host == VICTIM {
            &self.ca_victim
        } else {
            &self.ca_hostile
        };
        let port = self.sb.https_port();
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(ca)
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"));
        if let Some((u, p)) = auth {
            cmd.arg("-u").arg(format!("{u}:{p}"));
        }
        let out = cmd
            .arg(format!("https://{host}:{port}/stats/"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A hostile web site over HTTPS with statistics on and valid credentials of its own
    /// (each case then replaces what it attacks).
    fn hostile_site(&self, d: &str) -> PathBuf {
        let dir = self
            .sb
            .add_site(d, HOSTILE, &format!("hostile {d}"))
            .unwrap();
        let set = dir.join("config/ssl/sets/1");
        file(
            &set.join("ssl.crt"),
            self.hostile_crt.as_bytes(),
            HOSTILE,
            0o644,
        );
        file(
            &set.join("ssl.key"),
            self.hostile_key.as_bytes(),
            HOSTILE,
            0o600,
        );
        link("sets/1", &dir.join("config/ssl/current"), HOSTILE);
        file(&dir.join("config/stats"), b"", HOSTILE, 0o644);
        file(
            &dir.join("config/stats-password"),
            format!("{EVE_USER}:{EVE_PW}\n").as_bytes(),
            HOSTILE,
            0o600,
        );
        file(
            &dir.join("public/logs/access.log"),
            b"203.0.113.9 - - [20/Nov/2026:11:00:00 +0000] \"GET /mine.html HTTP/1.1\" 200 9 \"-\" \"curl/8\"\n",
            HOSTILE,
            0o644,
        );
        dir
    }
}

type Setup = Box<dyn Fn(&World, &Path)>;
type Check = Box<dyn Fn(&World, &Path, &str)>;

/// What `/stats/` of the hostile domain answers afterwards.
#[derive(Clone, Copy, PartialEq)]
enum Served {
    /// Statistics stay off: 404 whoever asks.
    Off,
    /// On, behind the customer's own login: 401 with the victim's, 200 with its own (and
    /// never the victim's report).
    Own,
}

struct Case {
    id: &'static str,
    attack: String,
    setup: Setup,
    /// Run `dirhost stats generate` for this domain too.
    generate: bool,
    /// Text expected on an output line naming the hostile domain.
    report: &'static str,
    served: Served,
    check: Check,
}

fn case(
    id: &'static str,
    attack: impl Into<String>,
    setup: impl Fn(&World, &Path) + 'static,
    generate: bool,
    report: &'static str,
    served: Served,
) -> Case {
    Case {
        id,
        attack: attack.into(),
        setup: Box::new(setup),
        generate,
        report,
        served,
        check: Box::new(|_, _, _| {}),
    }
}

impl Case {
    fn check(mut self, f: impl Fn(&World, &Path, &str) + 'static) -> Self {
        self.check = Box::new(f);
        self
    }
}

const LINK: &str = "is a symbolic link, refusing to follow it";
const NOT_REGULAR: &str = "not a regular file";
const DENIED: &str = "Permission denied";

fn pw_file(d: &Path) -> PathBuf {
    d.join("config/stats-password")
}
fn creds(d: &Path, text: &[u8]) {
    file(&pw_file(d), text, HOSTILE, 0o600);
}
fn access_log(d: &Path) -> PathBuf {
    d.join("public/logs/access.log")
}

/// The hostile domain's htpasswd copy holds only `user:$2y$…` lines of the given users.
fn htpasswd_users(w: &World, d: &Path, users: &[&str]) {
    let name = d.file_name().unwrap().to_str().unwrap();
    let h = w.state().join("stats/web").join(name).join("htpasswd");
    let text = std::fs::read_to_string(&h).unwrap_or_else(|e| panic!("{}: {e}", h.display()));
    let got: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(got, users, "{text}");
    for l in text.lines() {
        let (_, hash) = l.split_once(':').unwrap();
        assert!(
            hash.starts_with("$2y$") && hash.len() == 60 && !hash.contains(':'),
            "{l:?}"
        );
    }
}

fn catalogue() -> Vec<Case> {
    use Served::*;
    let mut v = Vec::new();
    // --- config/stats-password: what it is.
    for (id, what, target) in [
        ("ST01", "the root-only secret", "secret"),
        ("ST02", "the victim's config/stats-password", "victim"),
        ("ST03", "/etc/shadow", "shadow"),
        ("ST04", "nothing (dangling)", "dangling"),
    ] {
        v.push(case(
            id,
            format!("config/stats-password is a symlink to {what}"),
            move |w, d| {
                let t = match target {
                    "secret" => w.secret.path.clone(),
                    "victim" => w.vic_creds.path.clone(),
                    "shadow" => "/etc/shadow".into(),
                    _ => "/nonexistent/dirhost-hostile".into(),
                };
                link(t, &pw_file(d), HOSTILE)
            },
            false,
            LINK,
            Off,
        ));
    }
    v.push(case(
        "ST05",
        "config/stats-password is a FIFO (a blocking read would hang)",
        |_, d| fifo(&pw_file(d), HOSTILE),
        false,
        NOT_REGULAR,
        Off,
    ));
    v.push(case(
        "ST06",
        "config/stats-password is a 1 GB sparse file",
        |_, d| sparse(&pw_file(d), 1 << 30, HOSTILE),
        false,
        "larger than 65536 bytes",
        Off,
    ));
    v.push(case(
        "ST07",
        "config/stats-password is a directory",
        |_, d| {
            remove_tree(&pw_file(d));
            mkdirs(&pw_file(d), HOSTILE)
        },
        false,
        NOT_REGULAR,
        Off,
    ));
    v.push(case(
        "ST08",
        "config/stats-password is a hard link to the victim's 0600 credentials",
        |w, d| {
            remove_tree(&pw_file(d));
            std::fs::hard_link(&w.vic_creds.path, pw_file(d)).unwrap()
        },
        false,
        DENIED,
        Off,
    ));
    v.push(case(
        "ST09",
        "config/stats-password is a /dev/zero device node",
        |_, d| chardev(&pw_file(d), 1, 5, HOSTILE),
        false,
        NOT_REGULAR,
        Off,
    ));
    // --- config/stats-password: what it says.
    v.push(case(
        "ST10",
        "credentials: a newline splits a user name (`eve:pw` then `root` on a line of its own)",
        |_, d| creds(d, b"eve:pass word 1\nroot\n"),
        false,
        "line 2: expected user:password",
        Off,
    ));
    v.push(case(
        "ST11",
        "credentials: `:` in the user name (`e:ve:pw`): split at the first colon, never a second htpasswd field",
        |_, d| creds(d, b"e:ve:pass word\n"),
        false,
        "",
        Own,
    ).check(|w, d, _| htpasswd_users(w, d, &["e"])));
    v.push(case(
        "ST12",
        "credentials: `$` and `${…}` in the user name",
        |_, d| creds(d, b"ev${DHINJ}e:pass word\n"),
        false,
        "line 1: the user name must be",
        Off,
    ));
    v.push(case(
        "ST13",
        "credentials: an escape sequence (control character) in the user name",
        |_, d| creds(d, b"ev\x1b[2Je:pass word\n"),
        false,
        "line 1: the user name must be",
        Off,
    ));
    v.push(case(
        "ST14",
        "credentials: htpasswd injection, a carriage return then a second entry in the password",
        |_, d| creds(d, format!("eve:pass\r{VIC_USER}:DHINJ\n").as_bytes()),
        false,
        "line 1: the password contains a control character",
        Off,
    ));
    v.push(case(
        "ST15",
        "credentials: a bcrypt hash with trailing junk",
        |_, d| creds(d, format!("eve:{BCRYPT} DHINJ\n").as_bytes()),
        false,
        "line 1: a malformed bcrypt hash",
        Off,
    ));
    v.push(case(
        "ST16",
        "credentials: a bcrypt hash with a `:` and a third htpasswd field",
        |_, d| creds(d, format!("eve:{BCRYPT}:DHINJ\n").as_bytes()),
        false,
        "line 1: a malformed bcrypt hash",
        Off,
    ));
    v.push(case(
        "ST17",
        "credentials: an `$apr1$`/`{SHA}` hash (not bcrypt; Apache would take it as is)",
        |_, d| creds(d, b"eve:{SHA}DHINJ+abc=\n"),
        false,
        "line 1: looks like a password hash dirhost does not accept",
        Off,
    ));
    v.push(
        case(
            "ST18",
            "credentials: a `$` and `${…}` in a plaintext password (hashed, never expanded)",
            |_, d| creds(d, b"eve:pa$$w${DHINJ}d\n"),
            false,
            "",
            Own,
        )
        .check(|w, d, _| htpasswd_users(w, d, &["eve"])),
    );
    v.push(case(
        "ST19",
        "credentials: non-UTF-8 bytes",
        |_, d| creds(d, b"eve:pass\xff\xfe word\n"),
        false,
        "line 1: not valid UTF-8",
        Off,
    ));
    v.push(case(
        "ST20",
        "credentials: 5000 users (each would cost a bcrypt run)",
        |_, d| {
            let mut t = String::new();
            for i in 0..5000 {
                t.push_str(&format!("u{i}:p\n"));
            }
            creds(d, t.as_bytes())
        },
        false,
        "more than 100 users",
        Off,
    ));
    v.push(case(
        "ST21",
        "credentials: a plaintext password of 10 000 bytes",
        |_, d| creds(d, format!("eve:{}\n", "x".repeat(10_000)).as_bytes()),
        false,
        "line 1: a plaintext password may be at most 72 bytes",
        Off,
    ));
    // --- config/stats.
    v.push(case(
        "ST22",
        "config/stats is a FIFO",
        |_, d| fifo(&d.join("config/stats"), HOSTILE),
        false,
        NOT_REGULAR,
        Off,
    ));
    v.push(case(
        "ST23",
        "config/stats is a symlink to the victim's config/stats",
        |w, d| {
            link(
                w.victim().join("config/stats"),
                &d.join("config/stats"),
                HOSTILE,
            )
        },
        false,
        LINK,
        Off,
    ));
    v.push(
        case(
            "ST24",
            "config/stats holds a password (an old recipe), with an injection payload",
            |_, d| file(&d.join("config/stats"), b"hunter2 DHINJ\n", HOSTILE, 0o644),
            false,
            "config/stats has a value dirhost does not understand",
            Off,
        )
        .check(|_, _, out| assert!(!out.contains("hunter2"), "the value was echoed")),
    );
    // --- Logs fed to the generator.
    for (id, what, target) in [
        ("ST25", "the victim's public/logs", "victim"),
        ("ST26", "/etc", "etc"),
        ("ST27", "nothing (dangling)", "dangling"),
    ] {
        v.push(case(
            id,
            format!("public/logs is a symlink to {what}"),
            move |w, d| {
                let t: PathBuf = match target {
                    "victim" => w.victim().join("public/logs"),
                    "etc" => "/etc".into(),
                    _ => "/nonexistent/dirhost-hostile".into(),
                };
                remove_tree(&d.join("public/logs"));
                link(t, &d.join("public/logs"), HOSTILE)
            },
            true,
            LINK,
            Own,
        ));
    }
    for (id, what, target) in [
        ("ST28", "the victim's access.log", "victim"),
        ("ST29", "the root-only secret", "secret"),
    ] {
        v.push(case(
            id,
            format!("public/logs/access.log is a symlink to {what}"),
            move |w, d| {
                let t = match target {
                    "victim" => w.victim().join("public/logs/access.log"),
                    _ => w.secret.path.clone(),
                };
                link(t, &access_log(d), HOSTILE)
            },
            true,
            LINK,
            Own,
        ));
    }
    v.push(case(
        "ST30",
        "public/logs/access.log.1 is a symlink to the victim's access.log (rotated name)",
        |w, d| {
            link(
                w.victim().join("public/logs/access.log"),
                &d.join("public/logs/access.log.1"),
                HOSTILE,
            )
        },
        true,
        LINK,
        Own,
    ));
    v.push(case(
        "ST31",
        "public/logs/access.log is a FIFO (GoAccess must not wait for it)",
        |_, d| fifo(&access_log(d), HOSTILE),
        true,
        NOT_REGULAR,
        Own,
    ));
    v.push(case(
        "ST32",
        "public/logs/ssl_access.log is /dev/zero (endless)",
        |_, d| chardev(&d.join("public/logs/ssl_access.log"), 1, 5, HOSTILE),
        true,
        NOT_REGULAR,
        Own,
    ));
    v.push(case(
        "ST33",
        "public/logs/access.log is a hard link to the root-only secret (possible only where fs.protected_hardlinks is off)",
        |w, d| {
            remove_tree(&access_log(d));
            std::fs::hard_link(&w.secret.path, access_log(d)).unwrap()
        },
        true,
        DENIED,
        Own,
    ));
    v.push(case(
        "ST34",
        "public/logs/access.log is a hard link to the victim's 0600 access.log",
        |w, d| {
            remove_tree(&access_log(d));
            std::fs::hard_link(w.victim().join("public/logs/access.log"), access_log(d)).unwrap()
        },
        true,
        DENIED,
        Own,
    ));
    v.push(case(
        "ST35",
        "public/logs/access.log holds one 8 MB line among valid ones",
        |_, d| {
            let mut t = b"203.0.113.9 - - [20/Nov/2026:11:00:00 +0000] \"GET /a.html HTTP/1.1\" 200 9 \"-\" \"curl/8\"\n".to_vec();
            t.extend_from_slice(b"203.0.113.9 - - [20/Nov/2026:11:00:01 +0000] \"GET /");
            t.extend(std::iter::repeat_n(b'A', 8 << 20));
            t.extend_from_slice(b" HTTP/1.1\" 200 9 \"-\" \"curl/8\"\n");
            t.extend_from_slice(b"203.0.113.9 - - [20/Nov/2026:11:00:02 +0000] \"GET /b.html HTTP/1.1\" 200 9 \"-\" \"curl/8\"\n");
            file(&access_log(d), &t, HOSTILE, 0o644)
        },
        true,
        "requests",
        Own,
    ));
    v.push(case(
        "ST36",
        "public/logs/access.log is a 256 MB sparse file of NUL bytes",
        |_, d| sparse(&access_log(d), 256 << 20, HOSTILE),
        true,
        "0 requests",
        Own,
    ));
    v.push(case(
        "ST37",
        "log lines whose path, referrer and user agent carry HTML/script and a forged report line",
        |_, d| {
            file(
                &access_log(d),
                b"203.0.113.9 - - [20/Nov/2026:11:00:00 +0000] \"GET /<script>alert(1)</script>\\nh-st37.test: 9999 requests HTTP/1.1\" 200 9 \"</script><b>\" \"<img src=x onerror=alert(2)>\"\n",
                HOSTILE,
                0o644,
            )
        },
        true,
        "1 requests",
        Own,
    ).check(|w, d, _| {
        let name = d.file_name().unwrap().to_str().unwrap();
        let html = std::fs::read_to_string(w.state().join("stats/web").join(name).join("report/index.html")).unwrap();
        assert!(!html.contains("<script>alert(1)"), "script in the report");
        assert!(!html.contains("<img src=x"), "markup in the report");
    }));
    v.push(
        case(
            "ST38",
            "the hostile domain copies the victim's password into its own credentials",
            |_, d| creds(d, format!("{VIC_USER}:{VIC_PW}\n").as_bytes()),
            true,
            "requests",
            Own,
        )
        .check(|w, d, _| {
            // The victim's login opens the hostile report (its own copy), never the victim's.
            let name = d.file_name().unwrap().to_str().unwrap();
            let (code, body) = w.stats(name, Some((VIC_USER, VIC_PW)));
            assert_eq!(code, 200);
            assert!(!body.contains(MARKER));
            assert!(body.contains(&format!("Statistics for {name}")));
        }),
    );
    v
}

fn check_common(w: &World, label: &str, output: &str) {
    w.secret.assert_untouched(label);
    w.private.assert_untouched(label);
    w.vic_creds.assert_untouched(label);
    let skip = [w.secret.ino, w.private.ino, w.vic_creds.ino];
    for (needle, what) in [
        (SECRET, "the root-only secret"),
        (VICTIM_PRIVATE, "the victim's private file"),
        (VIC_PW, "the victim's stats password"),
    ] {
        let mut hits = files_containing(w.sb.root(), needle, &skip);
        // (ST38 writes the victim's password into its own file: it knows it.)
        hits.retain(|p| !(needle == VIC_PW && p.starts_with(w.srv().join(name(38)))));
        assert!(hits.is_empty(), "{label}: {what} copied into {hits:?}");
        assert!(!output.contains(needle), "{label}: {what} in the output");
    }
    // The victim's pages are only in the victim's log, report and database.
    let log_ino = std::fs::metadata(w.victim().join("public/logs/access.log"))
        .unwrap()
        .ino();
    for hit in files_containing(w.sb.root(), MARKER, &[log_ino]) {
        let rel = hit
            .strip_prefix(w.sb.root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.contains("/stats/web/victim.test/") || rel.contains("/stats/db/victim.test/"),
            "{label}: the victim's statistics are in {rel}"
        );
    }
    assert!(
        !output.contains(MARKER),
        "{label}: victim's pages in the output"
    );
    // No payload reached a file dirhost generated.
    let mut generated = files_containing(w.sb.root(), INJECTED, &skip);
    generated.retain(|p| {
        let rel = p.strip_prefix(w.sb.root()).unwrap();
        !(rel.starts_with("srv") || rel.starts_with("logs"))
    });
    assert!(
        generated.is_empty(),
        "{label}: injected text in {generated:?}"
    );
    // Nothing made as the hostile customer outside its own domains and its own GoAccess
    // database (which GoAccess, running as the owner, writes).
    for e in walkdir::WalkDir::new(w.sb.root())
        .into_iter()
        .filter_map(Result::ok)
    {
        let rel = e.path().strip_prefix(w.sb.root()).unwrap();
        let s = rel.to_string_lossy();
        let own =
            (rel.starts_with("srv") && s.starts_with("srv/h-st")) || s.contains("stats/db/h-st");
        if !own {
            assert_ne!(
                e.metadata().unwrap().uid(),
                HOSTILE,
                "{label}: {} was made as the hostile customer",
                e.path().display()
            );
        }
    }
    // The victim's report is as generated, served only with the victim's login.
    let report = w.state().join("stats/web/victim.test/report/index.html");
    assert!(
        std::fs::read(&report).unwrap() == w.vic_report,
        "{label}: the victim's report changed"
    );
    let (code, body) = w.stats(VICTIM, Some((VIC_USER, VIC_PW)));
    assert_eq!(
        code,
        200,
        "{label}: victim's /stats/\n{}",
        w.sb.apache_error_log()
    );
    assert!(body.contains(MARKER), "{label}: victim's report");
    assert_eq!(w.stats(VICTIM, Some((EVE_USER, EVE_PW))).0, 401, "{label}");
    assert_eq!(w.stats(VICTIM, None).0, 401, "{label}");
    for (host, body) in [(GOOD, "good site"), (VICTIM, "victim site")] {
        let r = w.sb.http_get(host, "/").unwrap();
        assert_eq!(
            r.status,
            200,
            "{label}: {host}: {r:?}\n{}",
            w.sb.apache_error_log()
        );
        assert!(r.body.contains(body), "{label}: {host}: {}", r.body);
    }
    // No payload starts an output line of its own (a forged report line).
    for l in output.lines() {
        assert!(!l.contains('\x1b'), "{label}: raw escape in {l:?}");
        assert!(
            !l.trim_start().starts_with(&format!("{VIC_USER}:")) && !l.contains("9999 requests"),
            "{label}: forged line {l:?}"
        );
    }
}

fn run_batch(w: &World, batch: &[(usize, Case)]) {
    let label = batch
        .iter()
        .map(|(_, c)| c.id)
        .collect::<Vec<_>>()
        .join(",");
    let mut gen_names = Vec::new();
    for (i, c) in batch {
        let d = w.hostile_site(&name(*i));
        (c.setup)(w, &d);
        if c.generate {
            gen_names.push(name(*i));
        }
    }
    let before = w.sb.apache_generation();
    let out = apply(&w.sb, &[]);
    let mut text = format!("{}\n{}", stdout(&out), stderr(&out));
    if text.contains("reloaded") {
        w.sb.wait_apache_generation(before + 1).unwrap();
    }
    if !gen_names.is_empty() {
        let mut args = vec!["stats", "generate"];
        args.extend(gen_names.iter().map(String::as_str));
        let out = dirhost(&w.sb, &args);
        text.push_str(&format!("\n{}\n{}", stdout(&out), stderr(&out)));
    }
    for (i, c) in batch {
        let host = name(*i);
        let d = w.srv().join(&host);
        if !c.report.is_empty() {
            assert!(
                text.lines()
                    .any(|l| l.contains(c.report) && l.contains(&host)),
                "{} ({}): expected {:?} on a line naming {host}:\n{text}",
                c.id,
                c.attack,
                c.report
            );
        }
        let (code, body) = w.stats(&host, Some((VIC_USER, VIC_PW)));
        assert!(!body.contains(MARKER), "{}: victim's report served", c.id);
        match c.served {
            Served::Off => {
                assert_eq!(code, 404, "{} ({}): /stats/ {body}\n{text}", c.id, c.attack);
                let (code, _) = w.stats(&host, Some((EVE_USER, EVE_PW)));
                assert_eq!(code, 404, "{}", c.id);
            }
            Served::Own => {
                if c.id != "ST38" {
                    assert_eq!(code, 401, "{} ({}): /stats/ {body}\n{text}", c.id, c.attack);
                }
                if pw_file(&d).is_file()
                    && std::fs::read_to_string(pw_file(&d))
                        .is_ok_and(|t| t.starts_with(&format!("{EVE_USER}:{EVE_PW}")))
                {
                    let (code, body) = w.stats(&host, Some((EVE_USER, EVE_PW)));
                    assert_eq!(
                        code,
                        200,
                        "{}: own login\n{}",
                        c.id,
                        w.sb.apache_error_log()
                    );
                    assert!(!body.contains(MARKER) && !body.contains(SECRET), "{}", c.id);
                }
            }
        }
        (c.check)(w, &d, &text);
    }
    check_common(w, &label, &text);
    for (_, c) in batch {
        let outcome = match (c.report, c.served) {
            ("", Served::Own) => "accepted as harmless: only bcrypt lines of valid users reach Apache; /stats/ behind the domain's own login".to_string(),
            (r, Served::Off) => format!("reported: \"{r}\"; statistics stay off, /stats/ → 404"),
            (r, Served::Own) if c.generate => format!(
                "generation reports \"{r}\", nothing of another's read; /stats/ only with the domain's own login"
            ),
            (r, Served::Own) => format!("reported: \"{r}\"; /stats/ only with the domain's own login"),
        };
        catalogue_row("hostile_stats", c.id, &c.attack, &outcome);
    }
    for (i, _) in batch {
        remove_tree(&w.srv().join(name(*i)));
    }
}

// ---------------------------------------------------------------------------------------
// `dirhost stats enable/password` with hostile input.

/// Stands for an endless stdin (`< /dev/zero`).
const ENDLESS: &[u8] = b"<endless>";

fn run_cli(sb: &Sandbox, args: &[&str], stdin: &[u8]) -> Output {
    if stdin == ENDLESS {
        return Command::new(env!("CARGO_BIN_EXE_dirhost"))
            .arg("--config")
            .arg(sb.config_path())
            .args(args)
            .stdin(std::fs::File::open("/dev/zero").unwrap())
            .output()
            .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .arg("--config")
        .arg(sb.config_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // A writer thread: the command may stop reading early.
    let t = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = t.join();
    out
}

struct CliCase {
    id: &'static str,
    attack: &'static str,
    setup: Setup,
    args: Vec<String>,
    stdin: Vec<u8>,
    ok: bool,
    says: &'static str,
    check: Check,
}

#[allow(clippy::too_many_arguments)] // one row of the table
fn cli(
    id: &'static str,
    attack: &'static str,
    setup: impl Fn(&World, &Path) + 'static,
    args: &[&str],
    stdin: impl Into<Vec<u8>>,
    ok: bool,
    says: &'static str,
    check: impl Fn(&World, &Path, &str) + 'static,
) -> CliCase {
    CliCase {
        id,
        attack,
        setup: Box::new(setup),
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: stdin.into(),
        ok,
        says,
        check: Box::new(check),
    }
}

fn no_setup(_: &World, _: &Path) {}

/// The credentials file is exactly one `stats:$2y$…` line.
fn one_hash(_: &World, d: &Path, _: &str) {
    let t = std::fs::read_to_string(pw_file(d)).unwrap();
    assert_eq!(t.lines().count(), 1, "{t}");
    assert!(t.starts_with("stats:$2y$") && !t.contains(INJECTED), "{t}");
}

/// The credentials file is still the hostile site's original.
fn unchanged(_: &World, d: &Path, _: &str) {
    assert_eq!(
        std::fs::read_to_string(pw_file(d)).unwrap(),
        format!("{EVE_USER}:{EVE_PW}\n")
    );
}

fn cli_catalogue() -> Vec<CliCase> {
    let d = "@"; // replaced by the case's domain
    vec![
        cli(
            "ST39",
            "`stats enable` with a password followed by a newline and an injected htpasswd line",
            |_, d| remove_tree(&pw_file(d)),
            &["stats", "enable", d],
            format!("pass word 1\n{VIC_USER}:{BCRYPT}DHINJ\n"),
            true,
            "statistics on for",
            one_hash,
        ),
        cli(
            "ST40",
            "`stats enable` with a 10 MB password on stdin (no newline)",
            |_, d| remove_tree(&pw_file(d)),
            &["stats", "enable", d],
            vec![b'p'; 10 << 20],
            false,
            "longer than 72 bytes",
            |_, d, _| assert!(!pw_file(d).exists()),
        ),
        cli(
            "ST41",
            "`stats password` with an endless stdin without a newline (`< /dev/zero`)",
            no_setup,
            &["stats", "password", d],
            ENDLESS,
            false,
            "longer than 72 bytes",
            unchanged,
        ),
        cli(
            "ST42",
            "`stats generate` after the customer replaced its GoAccess database files with symlinks to the secret and the victim's database",
            |w, d| {
                let host = d.file_name().unwrap().to_str().unwrap().to_string();
                let out = dirhost(&w.sb, &["stats", "generate", &host]);
                assert!(out.status.success(), "{}", stdout(&out));
                let db = w.state().join("stats/db").join(&host);
                let vdb = w.state().join("stats/db").join(VICTIM);
                let mut names: Vec<_> = std::fs::read_dir(&db)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                assert!(!names.is_empty());
                for (k, n) in names.iter().enumerate() {
                    let t = if k % 2 == 0 {
                        w.secret.path.clone()
                    } else {
                        vdb.join(n)
                    };
                    link(t, &db.join(n), HOSTILE);
                }
            },
            &["stats", "generate", d],
            "",
            true,
            "0 requests",
            no_check,
        ),
        cli(
            "ST43",
            "`stats password` with a terminal escape sequence in the password",
            no_setup,
            &["stats", "password", d],
            "pass\x1b]0;DHINJ\x07word\n",
            false,
            "control character",
            unchanged,
        ),
        cli(
            "ST44",
            "`stats password` with an empty stdin",
            no_setup,
            &["stats", "password", d],
            "",
            false,
            "the password is empty",
            unchanged,
        ),
        cli(
            "ST45",
            "`stats password --user` with `:` (a second htpasswd field)",
            no_setup,
            &["stats", "password", d, "--user", "vic:$2y$05$x"],
            "pass word 1\n",
            false,
            "the user name must be",
            unchanged,
        ),
        cli(
            "ST46",
            "`stats enable --user` with a newline and an injected entry",
            no_setup,
            &["stats", "enable", d, "--user", "x\nvic"],
            "pass word 1\n",
            false,
            "the user name must be",
            unchanged,
        ),
        cli(
            "ST47",
            "`stats password` when config/stats-password is a symlink to the victim's",
            |w, d| link(&w.vic_creds.path, &pw_file(d), HOSTILE),
            &["stats", "password", d],
            "pass word 1\n",
            false,
            LINK,
            |_, d, _| assert!(std::fs::symlink_metadata(pw_file(d)).unwrap().is_symlink()),
        ),
        cli(
            "ST48",
            "`stats password` when config/stats-password is a FIFO (must not block)",
            |_, d| fifo(&pw_file(d), HOSTILE),
            &["stats", "password", d],
            "pass word 1\n",
            false,
            NOT_REGULAR,
            no_check,
        ),
        cli(
            "ST49",
            "`stats enable` when config/ is a symlink to the victim's config/",
            |w, d| {
                remove_tree(&d.join("config"));
                link(w.victim().join("config"), &d.join("config"), HOSTILE)
            },
            &["stats", "enable", d],
            "pass word 1\n",
            false,
            LINK,
            no_check,
        ),
        cli(
            "ST50",
            "`stats enable` of a domain name walking up to the victim",
            no_setup,
            &["stats", "enable", "../victim.test"],
            "pass word 1\n",
            false,
            "is not a valid domain name",
            no_check,
        ),
    ]
}

fn no_check(_: &World, _: &Path, _: &str) {}

#[test]
fn hostile_stats_catalogue() {
    let w = World::start();
    let cases: Vec<(usize, Case)> = catalogue()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i + 1, c))
        .collect();
    let mut ran = 0;
    for batch in cases.chunks(8) {
        run_batch(&w, batch);
        ran += batch.len();
    }
    let base = cases.len() + 1;
    for (k, c) in cli_catalogue().into_iter().enumerate() {
        let host = name(base + k);
        let d = w.hostile_site(&host);
        let out = apply(&w.sb, &[]);
        assert!(out.status.success(), "{}: {}", c.id, stdout(&out));
        (c.setup)(&w, &d);
        let args: Vec<&str> = c
            .args
            .iter()
            .map(|a| if a == "@" { host.as_str() } else { a.as_str() })
            .collect();
        let o = run_cli(&w.sb, &args, &c.stdin);
        let text = format!("{}\n---stderr---\n{}", stdout(&o), stderr(&o));
        assert_eq!(
            o.status.success(),
            c.ok,
            "{} ({}): {args:?}\n{text}",
            c.id,
            c.attack
        );
        assert!(
            text.contains(c.says),
            "{} ({}): wanted {:?}:\n{text}",
            c.id,
            c.attack,
            c.says
        );
        (c.check)(&w, &d, &text);
        std::thread::sleep(std::time::Duration::from_millis(300));
        check_common(&w, c.id, &text);
        catalogue_row(
            "hostile_stats",
            c.id,
            c.attack,
            &format!(
                "`dirhost {}` exits {}, says \"{}\"; nothing of the victim's read or changed",
                c.args.join(" ").replace('@', "DOMAIN"),
                if c.ok { "0" } else { "non-zero" },
                c.says
            ),
        );
        remove_tree(&d);
        ran += 1;
    }
    summary("stats", ran);
}
