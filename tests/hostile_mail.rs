//! The hostile-/srv catalogue (SECURITY.md), mail part: the real dirhost binary against the
//! sandbox's real private Exim and Dovecot. Each case is one hostile mail domain beside a
//! good domain and a victim domain; after every batch: the sentinels are untouched and
//! their content is in no generated file, no output and no delivered message; the good
//! mailbox still receives mail over SMTP and logs in over IMAPS; the victim's Maildir got
//! nothing it was not sent; each hostile domain got what its case expects.

mod common;
mod hostile;
#[path = "common/mail.rs"]
mod mailh;

use std::path::Path;
use std::time::Duration;

use common::*;
use hostile::*;
use mailh::*;

const GOOD: &str = "mail-good.test";
const VICTIM: &str = "mail-victim.test";
const PW: &str = "a good long password";
const EVE_PW: &str = "eve's own password 1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rcpt {
    /// RCPT refused with 550.
    Rejected,
    /// Accepted by Exim (what happens next is checked by the leak scans).
    Accepted,
}

type Setup = Box<dyn Fn(&Path, &Path)>;

struct Case {
    id: String,
    attack: String,
    /// (root, domain dir)
    setup: Setup,
    report: Option<String>,
    /// Mail to `<local>@<domain>` (None: none sent).
    rcpt: Option<(String, Rcpt)>,
    /// An IMAP login (user, password, should it work).
    login: Option<(String, String, bool)>,
}

fn case(
    id: String,
    attack: impl Into<String>,
    setup: impl Fn(&Path, &Path) + 'static,
    report: Option<&str>,
) -> Case {
    Case {
        id,
        attack: attack.into(),
        setup: Box::new(setup),
        report: report.map(str::to_string),
        rcpt: None,
        login: None,
    }
}

impl Case {
    fn rcpt(mut self, local: &str, r: Rcpt) -> Self {
        self.rcpt = Some((local.to_string(), r));
        self
    }
    fn login(mut self, user: &str, pass: &str, ok: bool) -> Self {
        self.login = Some((user.to_string(), pass.to_string(), ok));
        self
    }
    fn domain(&self) -> String {
        format!("m-{}.test", self.id.to_ascii_lowercase())
    }
}

fn secret_path(root: &Path) -> std::path::PathBuf {
    root.join("secret")
}

fn victim_box(root: &Path) -> std::path::PathBuf {
    root.join("srv").join(VICTIM).join("mailboxes/bob")
}

const PAYLOADS: &[(&str, &str)] = &[
    ("newline", "\nroot:{PLAIN}x:0:0::/:\n"),
    ("colon", ":0:0::/root::"),
    ("exim-run", "${run{/bin/sh -c id}}"),
    ("exim-readfile", "${readfile{/etc/shadow}}"),
    ("dollar", "$local_part"),
    ("quote", "\""),
    ("hash", "#"),
    ("percent", "%d"),
    ("lt", "<"),
    ("semicolon", ";"),
    ("nul", "\0"),
    ("escape", "\x1b[2J"),
];

fn catalogue() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("M{n:03}")
    };

    // --- Symlinks in mailboxes/, mailbox directories, Maildir and its subdirectories.
    cases.push(
        case(
            next(),
            "mailboxes/ is a symlink to the victim's mailboxes",
            |root, d| {
                remove_tree(&d.join("mailboxes"));
                link(
                    root.join("srv").join(VICTIM).join("mailboxes"),
                    &d.join("mailboxes"),
                    HOSTILE,
                )
            },
            Some("mailboxes is a symbolic link"),
        )
        .rcpt("bob", Rcpt::Rejected)
        .login("bob", PW, false),
    );
    cases.push(
        case(
            next(),
            "mailboxes/bob is a symlink to the victim's mailbox",
            |root, d| link(victim_box(root), &d.join("mailboxes/bob"), HOSTILE),
            Some("is a symbolic link: not a mailbox"),
        )
        .rcpt("bob", Rcpt::Rejected)
        .login("bob", PW, false),
    );
    for (what, target) in [
        ("the victim's Maildir", "victim-maildir"),
        ("/etc", "/etc"),
        ("a dangling path", "/nonexistent/x"),
        ("the secret", "secret"),
    ] {
        cases.push(
            case(
                next(),
                format!("mailboxes/eve/Maildir is a symlink to {what}"),
                move |root, d| {
                    let t = match target {
                        "victim-maildir" => victim_box(root).join("Maildir"),
                        "secret" => secret_path(root),
                        t => t.into(),
                    };
                    link(t, &d.join("mailboxes/eve/Maildir"), HOSTILE)
                },
                None,
            )
            .rcpt("eve", Rcpt::Rejected),
        );
    }
    for sub in ["new", "tmp", "cur"] {
        cases.push(
            case(
                next(),
                format!("mailboxes/eve/Maildir/{sub} is a symlink to the victim's"),
                move |root, d| {
                    let m = d.join("mailboxes/eve/Maildir");
                    for s in ["new", "tmp", "cur"] {
                        mkdirs(&m.join(s), HOSTILE);
                    }
                    remove_tree(&m.join(sub));
                    link(
                        victim_box(root).join("Maildir").join(sub),
                        &m.join(sub),
                        HOSTILE,
                    )
                },
                None,
            )
            .rcpt("eve", Rcpt::Accepted),
        );
    }
    cases.push(
        case(
            next(),
            "mailboxes/eve/Maildir is a FIFO",
            |_, d| fifo(&d.join("mailboxes/eve/Maildir"), HOSTILE),
            None,
        )
        .rcpt("eve", Rcpt::Rejected),
    );

    // --- The password file.
    for (what, make) in [
        ("a symlink to the secret", 0),
        ("a symlink to the victim's password", 1),
        ("a hard link to the root-only secret", 2),
        ("a FIFO", 3),
        ("a socket", 4),
        ("/dev/zero", 5),
        ("a directory", 6),
        ("a 100 MB sparse file", 7),
        ("a dangling symlink", 8),
    ] {
        let report = match make {
            0 | 1 | 8 => "refusing to follow it",
            2 => "Permission denied",
            7 => "longer than 4096 bytes",
            _ => "not a regular file",
        };
        cases.push(
            case(
                next(),
                format!("mailboxes/eve/password is {what}"),
                move |root, d| {
                    let p = d.join("mailboxes/eve/password");
                    remove_tree(&p);
                    match make {
                        0 => link(secret_path(root), &p, HOSTILE),
                        1 => link(victim_box(root).join("password"), &p, HOSTILE),
                        2 => std::fs::hard_link(secret_path(root), &p).unwrap(),
                        3 => fifo(&p, HOSTILE),
                        4 => socket(&p, HOSTILE),
                        5 => chardev(&p, 1, 5, HOSTILE),
                        6 => mkdirs(&p, HOSTILE),
                        7 => sparse(&p, 100 << 20, HOSTILE),
                        _ => link("/nonexistent/pw", &p, HOSTILE),
                    }
                },
                Some(report),
            )
            .rcpt("eve", Rcpt::Accepted)
            .login("eve", PW, false),
        );
    }
    for (pname, p) in PAYLOADS {
        let text = format!("$6$salt${p}DHINJ");
        cases.push(
            case(
                next(),
                format!("password hash with {pname}"),
                move |_, d| {
                    file(
                        &d.join("mailboxes/eve/password"),
                        text.as_bytes(),
                        HOSTILE,
                        0o600,
                    )
                },
                Some("login disabled"),
            )
            .rcpt("eve", Rcpt::Accepted)
            .login("eve", "x", false),
        );
    }
    for (what, text) in [
        ("{PLAIN} scheme", "{PLAIN}eve"),
        ("{SHA}garbage", "{SHA}DHINJ"),
        ("two lines", "eve-password\nroot:{PLAIN}x"),
        ("a truncated SHA-512 hash", "{CRYPT}$6$abc$"),
        (
            "bcrypt with a colon",
            "$2y$10$DHINJ:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ),
        (
            "argon2 with a newline",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$\nDHINJ",
        ),
        ("non-UTF-8", "\u{0}\u{1}"),
    ] {
        cases.push(
            case(
                next(),
                format!("password file: {what}"),
                move |_, d| {
                    file(
                        &d.join("mailboxes/eve/password"),
                        text.as_bytes(),
                        HOSTILE,
                        0o600,
                    )
                },
                Some("login disabled"),
            )
            .rcpt("eve", Rcpt::Accepted)
            .login("eve", "eve", false),
        );
    }

    // --- Mailbox names.
    for name in [
        "a..b",
        "Upper",
        "x y",
        "x$y",
        "x:y",
        "x@y",
        "x%y",
        "x!y",
        "x|y",
        "x+y",
        "x\"y",
        "x#y",
        "x\ny",
        "x\x1b[31my",
        "x\\y",
    ] {
        let local = name.to_string();
        cases.push(case(
            next(),
            format!("mailbox directory named {name:?}"),
            move |_, d| mkdirs(&d.join("mailboxes").join(&local).join("Maildir"), HOSTILE),
            Some("not a valid mailbox name"),
        ));
    }
    cases.push(case(
        next(),
        "mailbox directory named with 65 characters",
        |_, d| mkdirs(&d.join("mailboxes").join("l".repeat(65)), HOSTILE),
        Some("longer than 64"),
    ));
    cases.push(case(
        next(),
        "non-UTF-8 mailbox directory name",
        |_, d| mkdirs(&raw_name(&d.join("mailboxes"), b"\xff\xfe"), HOSTILE),
        Some("not UTF-8"),
    ));
    cases.push(
        case(
            next(),
            "mailbox directory named .. (as a symlink: the only way to have an entry of that name)",
            |_, d| link("..", &d.join("mailboxes/dotdot"), HOSTILE),
            Some("is a symbolic link: not a mailbox"),
        )
        .rcpt("dotdot", Rcpt::Rejected),
    );

    // --- config/aliases.
    for (what, line) in [
        ("a pipe", "x: |/bin/sh -c 'cat /etc/shadow'"),
        ("a file", "x: /etc/shadow"),
        ("an include", "x: :include:/etc/shadow"),
        ("an Exim expansion", "x: ${run{/bin/id}}"),
        (
            "a readfile expansion",
            "x: ${readfile{/etc/shadow}}@mail-good.test",
        ),
        ("a quoted local part", "x: \"a b\"@mail-good.test"),
        ("a key with a dollar", "$local_part: eve"),
        ("a key walking a path", "../../x: eve"),
        ("a blackhole", "x: :blackhole:"),
        ("a fail with text", "x: :fail: ${readfile{/etc/shadow}}"),
    ] {
        cases.push(
            case(
                next(),
                format!("config/aliases with {what}"),
                move |_, d| {
                    file(
                        &d.join("config/aliases"),
                        format!("{line}\n").as_bytes(),
                        HOSTILE,
                        0o644,
                    )
                },
                Some("config/aliases line 1"),
            )
            .rcpt("x", Rcpt::Rejected),
        );
    }
    for (what, make) in [
        ("a symlink to the secret", 0),
        ("a FIFO", 1),
        ("a 1 GB sparse file", 2),
    ] {
        cases.push(case(
            next(),
            format!("config/aliases is {what}"),
            move |root, d| {
                let p = d.join("config/aliases");
                match make {
                    0 => link(secret_path(root), &p, HOSTILE),
                    1 => fifo(&p, HOSTILE),
                    _ => sparse(&p, 1 << 30, HOSTILE),
                }
            },
            Some("config/aliases"),
        ));
    }

    // --- Forward and filter files (read by Exim as the owner, with everything that reaches
    // outside the message forbidden).
    for (what, text) in [
        ("a pipe", "|/bin/sh -c 'cat /etc/shadow > /tmp/x'\n".to_string()),
        ("a file", "/srv/mail-victim.test/mailboxes/bob/Maildir/new/stolen\n".into()),
        ("an include", ":include:/etc/shadow\n".into()),
        ("a filter with readfile", "# Exim filter\nheaders add \"X-Leak: ${readfile{SECRET}}\"\ndeliver eve@DOMAIN\n".into()),
        ("a filter with run", "# Exim filter\nheaders add \"X-Leak: ${run{/bin/cat SECRET}}\"\ndeliver eve@DOMAIN\n".into()),
        ("a filter with lookup", "# Exim filter\nheaders add \"X-Leak: ${lookup{x}lsearch{SECRET}}\"\ndeliver eve@DOMAIN\n".into()),
        ("a filter with readsocket", "# Exim filter\nheaders add \"X-Leak: ${readsocket{/run/dovecot/auth-userdb}{x}}\"\ndeliver eve@DOMAIN\n".into()),
        ("a filter with exists", "# Exim filter\nif ${if exists{SECRET}{yes}{no}} is yes then deliver eve@DOMAIN endif\n".into()),
        ("a filter with save", "# Exim filter\nsave SECRET\n".into()),
        ("a filter with pipe", "# Exim filter\npipe \"/bin/cat SECRET\"\n".into()),
        ("a filter with logwrite", "# Exim filter\nlogfile SECRET\nlogwrite \"x\"\n".into()),
    ] {
        for place in ["mailboxes/eve/forward", "config/default_forward"] {
            let text = text.clone();
            let local = if place.starts_with("config") { "nobody-here" } else { "eve" };
            cases.push(
                case(
                    next(),
                    format!("{place} with {what}"),
                    move |root, d| {
                        let dom = d.file_name().unwrap().to_str().unwrap();
                        let t = text
                            .replace("SECRET", &secret_path(root).display().to_string())
                            .replace("DOMAIN", dom);
                        file(&d.join(place), t.as_bytes(), HOSTILE, 0o644)
                    },
                    None,
                )
                .rcpt(local, Rcpt::Accepted),
            );
        }
    }
    // dirhost reads default_forward (to copy it for Exim): a symlink refuses the domain's
    // mail. forward and vacation are read by Exim itself, as the owner.
    for (place, report, rcpt) in [
        ("mailboxes/eve/forward", None, Rcpt::Accepted),
        (
            "config/default_forward",
            Some("refusing to follow it"),
            Rcpt::Rejected,
        ),
        ("mailboxes/eve/vacation", None, Rcpt::Accepted),
    ] {
        cases.push(
            case(
                next(),
                format!("{place} is a symlink to the secret"),
                move |root, d| link(secret_path(root), &d.join(place), HOSTILE),
                report,
            )
            .rcpt("eve", rcpt),
        );
    }
    cases.push(
        case(
            next(),
            "mailboxes/eve/vacation holds an Exim expansion (never expanded)",
            |root, d| {
                let t = format!("Away. ${{readfile{{{}}}}}\n", secret_path(root).display());
                file(
                    &d.join("mailboxes/eve/vacation"),
                    t.as_bytes(),
                    HOSTILE,
                    0o644,
                )
            },
            None,
        )
        .rcpt("eve", Rcpt::Accepted),
    );

    // --- Quotas and the DKIM selector.
    for (pname, p) in PAYLOADS {
        let text = format!("1G{p}DHINJ");
        for place in ["mailboxes/eve/quota", "config/mailbox-quota"] {
            let text = text.clone();
            cases.push(
                case(
                    next(),
                    format!("{place} with {pname}"),
                    move |_, d| file(&d.join(place), text.as_bytes(), HOSTILE, 0o644),
                    Some("quota"),
                )
                .rcpt("eve", Rcpt::Accepted),
            );
        }
    }
    for (what, text) in [
        ("a huge number", "99999999999999999999999T"),
        ("a negative number", "-1G"),
        ("an exponent", "1e400"),
        ("NaN", "NaN"),
    ] {
        cases.push(
            case(
                next(),
                format!("mailboxes/eve/quota is {what}"),
                move |_, d| {
                    file(
                        &d.join("mailboxes/eve/quota"),
                        text.as_bytes(),
                        HOSTILE,
                        0o644,
                    )
                },
                Some("quota"),
            )
            .rcpt("eve", Rcpt::Accepted),
        );
    }
    for (pname, p) in PAYLOADS {
        let text = format!("sel{p}DHINJ");
        cases.push(
            case(
                next(),
                format!("config/dkim selector with {pname}"),
                move |_, d| file(&d.join("config/dkim"), text.as_bytes(), HOSTILE, 0o644),
                None,
            )
            .rcpt("eve", Rcpt::Accepted),
        );
    }
    cases.push(
        case(
            next(),
            "config/dkim is a symlink to the secret",
            |root, d| link(secret_path(root), &d.join("config/dkim"), HOSTILE),
            Some("refusing to follow it"),
        )
        .rcpt("eve", Rcpt::Rejected),
    );

    // --- Owners.
    for (what, uid) in [("root", 0), ("Debian-exim-like system user 100", 100)] {
        cases.push(
            case(
                next(),
                format!("mail domain owned by {what}"),
                move |_, d| {
                    for e in walkdir::WalkDir::new(d).into_iter().filter_map(Result::ok) {
                        std::os::unix::fs::lchown(e.path(), Some(uid), Some(uid)).unwrap();
                    }
                },
                Some(&*format!("owned by uid {uid}").leak()),
            )
            .rcpt("eve", Rcpt::Rejected)
            .login("eve", EVE_PW, false),
        );
    }
    cases
}

/// A hostile mail domain with a working mailbox `eve` (password EVE_PW).
fn base(root: &Path, d: &Path) {
    let _ = root;
    mkdirs(&d.join("mailboxes/eve/Maildir"), HOSTILE);
    mkdirs(&d.join("config"), HOSTILE);
    file(
        &d.join("mailboxes/eve/password"),
        EVE_PW.as_bytes(),
        HOSTILE,
        0o600,
    );
    std::os::unix::fs::chown(d, Some(HOSTILE), Some(HOSTILE)).unwrap();
}

#[test]
fn hostile_mail_catalogue() {
    // Nobody may relay: the tests' 127.0.0.1 is an outside sender, so mail for a domain
    // that is not hosted (a refused one) is refused instead of relayed.
    let w = mail_world_with(|cfg| cfg.mail.relay_from = Vec::new());
    let root = w.root().to_path_buf();
    let secret = Sentinel::create(&secret_path(&root), SECRET, 0, 0o600);
    add_mail_domain(&w, GOOD, OWNER);
    add_mailbox(&w, GOOD, "alice", Some(PW), OWNER);
    add_mail_domain(&w, VICTIM, OTHER);
    add_mailbox(&w, VICTIM, "bob", Some(PW), OTHER);
    let private = Sentinel::create(
        &victim_box(&root).join("private.txt"),
        VICTIM_PRIVATE,
        OTHER,
        0o600,
    );
    let vmd = w.maildir(VICTIM, "bob");
    for s in ["", "new", "cur", "tmp"] {
        let p = vmd.join(s);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&p, Some(OTHER), Some(OTHER)).unwrap();
    }
    w.apply(&[]);
    let good_md = w.maildir(GOOD, "alice");

    let cases = catalogue();
    let total = cases.len();
    let mut ran = 0;
    let mut good_sent = 0;
    let mut it = cases.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<Case> = it.by_ref().take(16).collect();
        let label = batch
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(",");
        for c in &batch {
            let d = w.srv().join(c.domain());
            base(&root, &d);
            (c.setup)(&root, &d);
        }
        let out = dirhost(&w, &["apply"]);
        let text = format!("{}\n{}", stdout(&out), stderr(&out));
        w.wait_ready();
        for c in &batch {
            if let Some(want) = &c.report {
                assert!(
                    text.lines()
                        .any(|l| l.contains(want.as_str()) && l.contains(&c.domain())),
                    "{} ({}): expected a report containing {want:?}:\n{text}",
                    c.id,
                    c.attack
                );
            }
            if let Some((local, want)) = &c.rcpt {
                let to = format!("{local}@{}", c.domain());
                let body = message("bob@remote.test", &to, &c.id, "hostile test");
                let r = smtp_send(w.smtp_port(), "bob@remote.test", &[&to], &body);
                match want {
                    Rcpt::Rejected => assert!(
                        r.as_ref().is_err_and(|e| e.starts_with("550")),
                        "{} ({}): {to}: {r:?}",
                        c.id,
                        c.attack
                    ),
                    Rcpt::Accepted => assert!(r.is_ok(), "{} ({}): {to}: {r:?}", c.id, c.attack),
                }
            }
        }
        // Logins in parallel: Dovecot delays every failed one by a few seconds.
        std::thread::scope(|s| {
            for c in &batch {
                if let Some((user, pass, ok)) = &c.login {
                    let w = &w;
                    let (id, attack, u) = (&c.id, &c.attack, format!("{user}@{}", c.domain()));
                    s.spawn(move || {
                        assert_eq!(
                            imap_login_ok(w, &u, pass),
                            *ok,
                            "{id} ({attack}): login {u}"
                        );
                    });
                }
            }
        });
        // A payload's newline never starts a line of its own in dirhost's output.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("root:{PLAIN}") || l.starts_with('y')),
            "{label}: a customer value forged an output line:\n{text}"
        );
        // The good mailbox still gets mail and logs in.
        good_sent += 1;
        let to = format!("alice@{GOOD}");
        let body = message("carol@remote.test", &to, &label, "good mail");
        smtp_send(w.smtp_port(), "carol@remote.test", &[&to], &body)
            .unwrap_or_else(|e| panic!("{label}: good mail refused: {e}\n{}", w.servers.logs()));
        assert_eq!(
            wait_count(&good_md, good_sent, Duration::from_secs(20)),
            good_sent,
            "{label}: good mail not delivered\n{}",
            w.servers.logs()
        );
        assert!(imap_login_ok(&w, &to, PW), "{label}: good login");
        // Leaks.
        secret.assert_untouched(&label);
        private.assert_untouched(&label);
        assert_eq!(
            count(&vmd),
            0,
            "{label}: something reached the victim's Maildir"
        );
        for (needle, what, ino) in [
            (SECRET, "the secret", secret.ino),
            (VICTIM_PRIVATE, "the victim's file", private.ino),
        ] {
            let hits = files_containing(&root, needle, &[ino]);
            assert!(hits.is_empty(), "{label}: {what} in {hits:?}");
            assert!(!text.contains(needle), "{label}: {what} in the output");
        }
        let mut injected = files_containing(&root, "DHINJ", &[]);
        injected.retain(|p| {
            let rel = p.strip_prefix(&root).unwrap();
            !(rel.starts_with("srv")
                || rel.starts_with("logs")
                || rel.to_string_lossy().contains("log"))
        });
        assert!(
            injected.is_empty(),
            "{label}: injected text in {injected:?}"
        );
        ran += batch.len();
        for c in &batch {
            let mut outcome = match &c.report {
                Some(r) => format!("reported: \"{r}\""),
                None => "no report needed (Exim/Dovecot refuse it)".to_string(),
            };
            if let Some((local, r)) = &c.rcpt {
                outcome.push_str(&format!("; RCPT {local}@ → {r:?}"));
            }
            if let Some((_, _, ok)) = &c.login {
                outcome.push_str(&format!(
                    "; IMAP login {}",
                    if *ok { "works" } else { "refused" }
                ));
            }
            catalogue_row("hostile_mail", &c.id, &c.attack, &outcome);
        }
        for c in &batch {
            remove_tree(&w.srv().join(c.domain()));
        }
    }
    assert_eq!(ran, total);
    // Login names that walk paths never log in (Dovecot's username characters).
    let logins = [
        format!("alice@../{GOOD}"),
        format!("../alice@{GOOD}"),
        format!("alice@{GOOD}/../{GOOD}"),
        format!("alice/../alice@{GOOD}"),
        format!("alice@{GOOD}/."),
        format!("alice%{GOOD}"),
        "*".to_string(),
        format!("alice@{GOOD}\tx"),
        format!("../../../../etc/passwd@{GOOD}"),
        format!("alice@{GOOD}@{VICTIM}"),
    ];
    std::thread::scope(|s| {
        for u in &logins {
            let w = &w;
            s.spawn(move || assert!(!imap_login_ok(w, u, PW), "login {u:?} worked"));
        }
    });
    // Recipients that try to walk paths or expand.
    let rcpts = [
        format!("${{run{{/bin/id}}}}@{GOOD}"),
        format!("../alice@{GOOD}"),
        format!("alice/../alice@{GOOD}"),
        format!("..@{GOOD}"),
        format!("bob@{VICTIM}/../{GOOD}"),
    ];
    for to in &rcpts {
        let body = message("bob@remote.test", to, "walk", "x");
        let r = smtp_send(w.smtp_port(), "bob@remote.test", &[to], &body);
        assert!(r.is_err(), "RCPT {to:?} accepted: {r:?}");
    }
    for (i, u) in logins.iter().enumerate() {
        catalogue_row(
            "hostile_mail",
            &format!("ML{:02}", i + 1),
            &format!("IMAP login as {u:?}"),
            "refused",
        );
    }
    for (i, to) in rcpts.iter().enumerate() {
        catalogue_row(
            "hostile_mail",
            &format!("MR{:02}", i + 1),
            &format!("RCPT TO {to:?}"),
            "refused at SMTP time",
        );
    }
    secret.assert_untouched("logins");
    assert_eq!(count(&vmd), 0);
    ran += logins.len() + rcpts.len();
    summary("mail", ran);
}
