//! The hostile-/srv catalogue (SECURITY.md), command-line and DNS part, plus "secrets never in
//! logs, keys and hashes with tight modes": the real dirhost binary (`mail`, `site`, `ssl`,
//! `dns export`, `web list`, `check`, `apply`) run as root against a sandbox whose /srv holds
//! a hostile domain beside a good and a victim domain, with the sandbox's real Apache.

mod common;
mod hostile;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use dirhost::sandbox::Sandbox;
use hostile::*;

const H: &str = "hostile.test";
const GOOD: &str = "good.test";
const VICTIM: &str = "victim.test";

fn run(sb: &Sandbox, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .arg("--config")
        .arg(sb.config_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

struct Ctx<'a> {
    sb: &'a Sandbox,
    secret: PathBuf,
}

impl Ctx<'_> {
    fn h(&self) -> PathBuf {
        self.sb.srv().join(H)
    }
    fn victim_maildir(&self) -> PathBuf {
        self.sb.srv().join(VICTIM).join("mailboxes/bob/Maildir")
    }
}

type Setup = Box<dyn Fn(&Ctx)>;
type Check = Box<dyn Fn(&Ctx, &str)>;

struct Case {
    id: &'static str,
    attack: &'static str,
    setup: Setup,
    args: Vec<String>,
    stdin: &'static str,
    /// Exit status 0 expected?
    ok: bool,
    /// Text expected in stdout + stderr.
    says: &'static str,
    check: Check,
}

#[allow(clippy::too_many_arguments)] // one row of the table
fn c(
    id: &'static str,
    attack: &'static str,
    setup: impl Fn(&Ctx) + 'static,
    args: &[&str],
    stdin: &'static str,
    ok: bool,
    says: &'static str,
    check: impl Fn(&Ctx, &str) + 'static,
) -> Case {
    Case {
        id,
        attack,
        setup: Box::new(setup),
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin,
        ok,
        says,
        check: Box::new(check),
    }
}

fn nothing(_: &Ctx) {}
fn no_check(_: &Ctx, _: &str) {}

fn catalogue() -> Vec<Case> {
    vec![
        c(
            "X01",
            "mail add with a local part walking up",
            nothing,
            &["mail", "add", "../x@hostile.test", "--password-stdin"],
            "pw pw pw pw 1",
            false,
            "not a valid mailbox name",
            |x, _| assert!(!x.sb.srv().join("x").exists()),
        ),
        c(
            "X02",
            "mail add with a domain walking up",
            nothing,
            &["mail", "add", "x@../victim.test", "--password-stdin"],
            "pw pw pw pw 1",
            false,
            "",
            |x, _| assert!(!x.sb.srv().join(VICTIM).join("mailboxes/x").exists()),
        ),
        c(
            "X03",
            "mail add with a domain with a slash",
            nothing,
            &[
                "mail",
                "add",
                "x@hostile.test/../victim.test",
                "--password-stdin",
            ],
            "pw pw pw pw 1",
            false,
            "",
            |x, _| assert!(!x.sb.srv().join(VICTIM).join("mailboxes/x").exists()),
        ),
        c(
            "X04",
            "mail add with a newline in the name",
            nothing,
            &["mail", "add", "x\ny@hostile.test", "--password-stdin"],
            "pw pw pw pw 1",
            false,
            "",
            no_check,
        ),
        c(
            "X05",
            "mail add of a mailbox named ..",
            nothing,
            &["mail", "add", "..@hostile.test", "--password-stdin"],
            "pw pw pw pw 1",
            false,
            "",
            no_check,
        ),
        c(
            "X06",
            "mail add when mailboxes/ is a symlink to the victim's",
            |x| {
                remove_tree(&x.h().join("mailboxes"));
                link(
                    x.sb.srv().join(VICTIM).join("mailboxes"),
                    &x.h().join("mailboxes"),
                    HOSTILE,
                )
            },
            &["mail", "add", "new@hostile.test", "--password-stdin"],
            "pw pw pw pw 1",
            false,
            "symbolic link",
            |x, _| {
                assert!(!x.sb.srv().join(VICTIM).join("mailboxes/new").exists());
                remove_tree(&x.h().join("mailboxes"));
                mkdirs(&x.h().join("mailboxes"), HOSTILE)
            },
        ),
        c(
            "X07",
            "mail passwd when the password file is a symlink to the secret",
            |x| {
                mkdirs(&x.h().join("mailboxes/eve"), HOSTILE);
                link(&x.secret, &x.h().join("mailboxes/eve/password"), HOSTILE)
            },
            &["mail", "passwd", "eve@hostile.test", "--password-stdin"],
            "a new long password 7",
            true,
            "",
            |x, _| {
                let p = x.h().join("mailboxes/eve/password");
                let m = std::fs::symlink_metadata(&p).unwrap();
                assert!(m.is_file(), "symlink replaced by a file");
                assert_eq!(m.uid(), HOSTILE);
                assert_eq!(m.mode() & 0o777, 0o600, "password file mode");
            },
        ),
        c(
            "X08",
            "mail passwd when the mailbox is a symlink to the victim's mailbox",
            |x| {
                link(
                    x.sb.srv().join(VICTIM).join("mailboxes/bob"),
                    &x.h().join("mailboxes/bob"),
                    HOSTILE,
                )
            },
            &["mail", "passwd", "bob@hostile.test", "--password-stdin"],
            "a new long password 7",
            false,
            "mailboxes/bob is not a directory",
            |x, _| {
                // The victim's own reconcile may have hashed its plaintext (as the victim):
                // either way it must still be the victim's password, not the attacker's.
                let now =
                    std::fs::read_to_string(x.sb.srv().join(VICTIM).join("mailboxes/bob/password"))
                        .unwrap();
                let original = "victim's password 123";
                let hash = now.trim_end().trim_start_matches("{CRYPT}");
                assert!(
                    now == original
                        || dirhost::mail::password::verify_sha512(
                            &dirhost::mail::password::Secret::new(original.into()),
                            hash
                        ),
                    "the victim's password changed: {now:?}"
                )
            },
        ),
        c(
            "X09",
            "mail remove --purge when Maildir is a symlink to the victim's Maildir",
            |x| {
                mkdirs(&x.h().join("mailboxes/thief"), HOSTILE);
                link(
                    x.victim_maildir(),
                    &x.h().join("mailboxes/thief/Maildir"),
                    HOSTILE,
                )
            },
            &["mail", "remove", "thief@hostile.test", "--purge"],
            "",
            true,
            "",
            |x, _| {
                assert!(
                    x.victim_maildir().join("cur/victim-mail").is_file(),
                    "the victim's mail was purged"
                )
            },
        ),
        c(
            "X10",
            "mail remove --purge when the mailbox is a symlink to the victim's mailbox",
            |x| {
                link(
                    x.sb.srv().join(VICTIM).join("mailboxes/bob"),
                    &x.h().join("mailboxes/bob"),
                    HOSTILE,
                )
            },
            &["mail", "remove", "bob@hostile.test", "--purge"],
            "",
            false,
            "",
            |x, _| {
                assert!(x.victim_maildir().join("cur/victim-mail").is_file());
                remove_tree(&x.h().join("mailboxes/bob"))
            },
        ),
        c(
            "X11",
            "mail remove (archive) when Maildir/cur is a symlink to the victim's",
            |x| {
                mkdirs(&x.h().join("mailboxes/arch/Maildir"), HOSTILE);
                link(
                    x.victim_maildir().join("cur"),
                    &x.h().join("mailboxes/arch/Maildir/cur"),
                    HOSTILE,
                )
            },
            &["mail", "remove", "arch@hostile.test"],
            "",
            true,
            "",
            |x, _| assert!(x.victim_maildir().join("cur/victim-mail").is_file()),
        ),
        c(
            "X12",
            "mail encrypt-passwords when a password file is a symlink to the secret",
            |x| {
                mkdirs(&x.h().join("mailboxes/enc"), HOSTILE);
                link(&x.secret, &x.h().join("mailboxes/enc/password"), HOSTILE)
            },
            &["mail", "encrypt-passwords"],
            "",
            true,
            "",
            no_check,
        ),
        c(
            "X13",
            "mail encrypt-passwords when a password file is a hard link to the secret",
            |x| {
                mkdirs(&x.h().join("mailboxes/enc2"), HOSTILE);
                std::fs::hard_link(&x.secret, x.h().join("mailboxes/enc2/password")).unwrap()
            },
            &["mail", "encrypt-passwords"],
            "",
            true,
            "",
            |x, _| remove_tree(&x.h().join("mailboxes/enc2")),
        ),
        c(
            "X14",
            "mail encrypt-passwords when a password file is a FIFO",
            |x| {
                mkdirs(&x.h().join("mailboxes/enc3"), HOSTILE);
                fifo(&x.h().join("mailboxes/enc3/password"), HOSTILE)
            },
            &["mail", "encrypt-passwords"],
            "",
            true,
            "",
            no_check,
        ),
        c(
            "X15",
            "mail list with hostile mailbox names",
            |x| {
                mkdirs(&x.h().join("mailboxes/a\nb"), HOSTILE);
                mkdirs(&raw_name(&x.h().join("mailboxes"), b"\xff"), HOSTILE)
            },
            &["mail", "list", "--json"],
            "",
            true,
            "",
            |x, out| {
                let json = out.split("\n---stderr---\n").next().unwrap();
                serde_json::from_str::<serde_json::Value>(json).expect("valid JSON");
                remove_tree(&x.h().join("mailboxes/a\nb"));
                remove_tree(&raw_name(&x.h().join("mailboxes"), b"\xff"))
            },
        ),
        c(
            "X16",
            "ssl select with a set walking up to the victim",
            nothing,
            &["ssl", "select", H, "../../../victim.test/config/ssl/sets/1"],
            "",
            false,
            "",
            no_check,
        ),
        c(
            "X17",
            "ssl select with an absolute set path",
            nothing,
            &["ssl", "select", H, "/etc"],
            "",
            false,
            "",
            no_check,
        ),
        c(
            "X18",
            "ssl select of the victim's domain through an alias the hostile customer made",
            |x| {
                link(
                    x.sb.srv().join(VICTIM),
                    &x.sb.srv().join("grab.test"),
                    HOSTILE,
                )
            },
            &["ssl", "select", "grab.test", "1"],
            "",
            false,
            "",
            |x, _| {
                assert_eq!(
                    std::fs::read_link(x.sb.srv().join(VICTIM).join("config/ssl/current")).unwrap(),
                    Path::new("sets/1")
                );
                remove_tree(&x.sb.srv().join("grab.test"))
            },
        ),
        c(
            "X19",
            "ssl select when config/ssl/current is a directory",
            |x| {
                mkdirs(&x.h().join("config/ssl/sets/1"), HOSTILE);
                mkdirs(&x.h().join("config/ssl/current"), HOSTILE)
            },
            &["ssl", "select", H, "1"],
            "",
            false,
            "",
            |x, _| remove_tree(&x.h().join("config/ssl")),
        ),
        c(
            "X20",
            "site remove with a path",
            nothing,
            &["site", "remove", "../victim.test"],
            "",
            false,
            "",
            |x, _| assert!(x.sb.srv().join(VICTIM).is_dir()),
        ),
        c(
            "X21",
            "site remove of an alias symlink to the victim removes the link, not the victim",
            |x| {
                link(
                    x.sb.srv().join(VICTIM),
                    &x.sb.srv().join("alias-of-victim.test"),
                    0,
                )
            },
            &["site", "remove", "alias-of-victim.test"],
            "",
            true,
            "",
            |x, _| {
                assert!(x.sb.srv().join(VICTIM).join("private/data.txt").is_file());
                remove_tree(&x.sb.srv().join("alias-of-victim.test"))
            },
        ),
        c(
            "X22",
            "site show of a name with a newline",
            nothing,
            &["site", "show", "a\nb.test"],
            "",
            false,
            "",
            no_check,
        ),
        c(
            "X23",
            "apply with a domain argument that walks up",
            nothing,
            &["apply", "../../etc"],
            "",
            false,
            "",
            no_check,
        ),
        c(
            "X24",
            "apply with a non-domain argument with an injected directive",
            nothing,
            &["apply", "x.test\nInclude /etc/shadow"],
            "",
            false,
            "",
            no_check,
        ),
        c(
            "X25",
            "web list --json with a control-character directory name",
            |x| mkdirs(&x.sb.srv().join("ctl\x1b[2J.test"), HOSTILE),
            &["web", "list", "--json"],
            "",
            true,
            "",
            |x, out| {
                let json = out.split("\n---stderr---\n").next().unwrap();
                serde_json::from_str::<serde_json::Value>(json).expect("valid JSON");
                remove_tree(&x.sb.srv().join("ctl\x1b[2J.test"))
            },
        ),
        c(
            "X26",
            "check (doctor) with FIFOs, a 1 GB file and symlinks in the hostile domain",
            |x| {
                fifo(&x.h().join("config/mandatory-ssl"), HOSTILE);
                sparse(&x.h().join("config/ip"), 1 << 30, HOSTILE);
                link(&x.secret, &x.h().join("config/ssl-provider"), HOSTILE)
            },
            &["check"],
            "",
            false,
            "hostile.test",
            |x, _| {
                for p in ["config/mandatory-ssl", "config/ip", "config/ssl-provider"] {
                    remove_tree(&x.h().join(p))
                }
            },
        ),
        c(
            "X27",
            "web list with FIFOs in the hostile domain does not block",
            |x| {
                fifo(&x.h().join("config/ip"), HOSTILE);
                fifo(&x.h().join("config/ssl/current"), HOSTILE)
            },
            &["web", "list"],
            "",
            true,
            "",
            |x, _| {
                remove_tree(&x.h().join("config/ip"));
                remove_tree(&x.h().join("config/ssl"))
            },
        ),
        c(
            "X28",
            "dns export with record injection in config/spf",
            |x| {
                file(
                    &x.h().join("config/spf"),
                    b"v=spf1 -all\"\nevil 300 IN A 6.6.6.6\n",
                    HOSTILE,
                    0o644,
                )
            },
            &["dns", "export", "--format", "bind"],
            "",
            true,
            "",
            |x, out| {
                assert!(
                    !out.lines()
                        .any(|l| l.contains("6.6.6.6") && !l.starts_with("warning")),
                    "injected record exported:\n{out}"
                );
                remove_tree(&x.h().join("config/spf"))
            },
        ),
        c(
            "X29",
            "dns export with quotes and backslashes in config/dmarc",
            |x| {
                file(
                    &x.h().join("config/dmarc"),
                    b"v=DMARC1; p=none\" \\\"; rua=x\n",
                    HOSTILE,
                    0o644,
                )
            },
            &["dns", "export", "--format", "bind"],
            "",
            true,
            "",
            |x, out| {
                assert!(
                    !out.lines()
                        .any(|l| l.contains("rua=x") && !l.starts_with("warning")),
                    "{out}"
                );
                assert!(out.contains("config/dmarc is ignored"));
                remove_tree(&x.h().join("config/dmarc"))
            },
        ),
        c(
            "X30",
            "dns export with a huge and negative config/ttl",
            |x| {
                file(
                    &x.h().join("config/ttl"),
                    b"-99999999999999999999999999\n",
                    HOSTILE,
                    0o644,
                )
            },
            &["dns", "export", "--format", "json"],
            "",
            true,
            "",
            |x, out| {
                assert!(
                    !out.lines()
                        .any(|l| l.contains("99999999") && !l.starts_with("warning")),
                    "{out}"
                );
                remove_tree(&x.h().join("config/ttl"))
            },
        ),
        c(
            "X31",
            "dns export when config/spf is a symlink to the secret",
            |x| link(&x.secret, &x.h().join("config/spf"), HOSTILE),
            &["dns", "export", "--format", "bind"],
            "",
            false,
            "failed hostile.test: config/spf",
            |x, out| {
                assert!(
                    out.contains("$ORIGIN good.test."),
                    "the good zone is still exported"
                );
                remove_tree(&x.h().join("config/spf"))
            },
        ),
        c(
            "X32",
            "dns export when config/dkim is a FIFO",
            |x| fifo(&x.h().join("config/dkim"), HOSTILE),
            &["dns", "export", "--format", "octodns"],
            "",
            false,
            "not a regular file",
            |x, _| remove_tree(&x.h().join("config/dkim")),
        ),
        c(
            "X33",
            "dns export --output into a directory that is a symlink (admin's choice: followed), zone names are validated",
            |x| mkdirs(&x.sb.root().join("zones"), 0),
            &["dns", "export", "--format", "bind", "--output"],
            "",
            true,
            "",
            |x, _| {
                for e in std::fs::read_dir(x.sb.root().join("zones")).unwrap() {
                    let n = e.unwrap().file_name();
                    let n = n.to_str().unwrap();
                    assert!(!n.contains(['/', '\n']) && !n.starts_with('.'), "{n:?}");
                }
            },
        ),
    ]
}

fn secret_scan(sb: &Sandbox, secret: &Sentinel, private: &Sentinel, label: &str, out: &str) {
    secret.assert_untouched(label);
    private.assert_untouched(label);
    for (needle, ino) in [(SECRET, secret.ino), (VICTIM_PRIVATE, private.ino)] {
        let hits = files_containing(sb.root(), needle, &[ino]);
        assert!(hits.is_empty(), "{label}: leaked into {hits:?}");
        assert!(!out.contains(needle), "{label}: leaked into the output");
    }
}

#[test]
fn hostile_cli_catalogue_and_secrets_never_in_logs() {
    let sb = sandbox();
    let secret = Sentinel::create(&sb.root().join("secret"), SECRET, 0, 0o600);
    sb.add_site(GOOD, OWNER, "good site").unwrap();
    sb.add_site(VICTIM, OTHER, "victim site").unwrap();
    sb.add_site(H, HOSTILE, "hostile site").unwrap();
    mkdirs(&sb.srv().join(H).join("mailboxes"), HOSTILE);
    mkdirs(&sb.srv().join(H).join("config"), HOSTILE);
    let private = Sentinel::create(
        &sb.srv().join(VICTIM).join("private/data.txt"),
        VICTIM_PRIVATE,
        OTHER,
        0o600,
    );
    let v = sb.srv().join(VICTIM);
    for s in ["new", "cur", "tmp"] {
        mkdirs(&v.join("mailboxes/bob/Maildir").join(s), OTHER);
    }
    file(
        &v.join("mailboxes/bob/Maildir/cur/victim-mail"),
        b"Subject: mine\n\nx\n",
        OTHER,
        0o600,
    );
    file(
        &v.join("mailboxes/bob/password"),
        b"victim's password 123",
        OTHER,
        0o600,
    );
    cert_set(sb.root(), &v, &[VICTIM], OTHER, true);
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let x = Ctx {
        sb: &sb,
        secret: secret.path.clone(),
    };

    let cases = catalogue();
    let mut ran = 0;
    for case in &cases {
        (case.setup)(&x);
        let mut args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let zones = sb.root().join("zones").display().to_string();
        if args.last() == Some(&"--output") {
            args.push(&zones);
        }
        let o = run(&sb, &args, case.stdin);
        let text = format!("{}\n---stderr---\n{}", stdout(&o), stderr(&o));
        assert_eq!(
            o.status.success(),
            case.ok,
            "{} ({}): {args:?}\n{text}",
            case.id,
            case.attack
        );
        assert!(
            text.contains(case.says),
            "{} ({}): wanted {:?}:\n{text}",
            case.id,
            case.attack,
            case.says
        );
        (case.check)(&x, &text);
        secret_scan(&sb, &secret, &private, case.id, &text);
        for host in [GOOD, VICTIM] {
            assert_eq!(
                sb.http_get(host, "/").unwrap().status,
                200,
                "{}: {host}",
                case.id
            );
        }
        catalogue_row(
            "hostile_cli",
            case.id,
            case.attack,
            &format!(
                "`dirhost {}` exits {}{}",
                case.args.join(" "),
                if case.ok { "0" } else { "non-zero" },
                if case.says.is_empty() {
                    String::new()
                } else {
                    format!(", says \"{}\"", case.says)
                }
            ),
        );
        ran += 1;
    }

    // --- Secrets never in logs; keys and hashes with tight modes and owners.
    let pw = "Pl4intext-Sentinel-Password-93kq";
    let mut log = String::new();
    let mut record = |o: &Output| {
        log.push_str(&stdout(o));
        log.push_str(&stderr(o));
    };
    mkdirs(&sb.srv().join(GOOD).join("mailboxes"), OWNER);
    mkdirs(&sb.srv().join(GOOD).join("config"), OWNER);
    file(&sb.srv().join(GOOD).join("config/dkim"), b"", OWNER, 0o644);
    let o = run(
        &sb,
        &["-vvv", "mail", "add", "carol@good.test", "--password-stdin"],
        &format!("{pw}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    record(&o);
    // A plaintext password written by hand, then hashed by the nightly job.
    file(
        &sb.srv().join(GOOD).join("mailboxes/dave/password"),
        pw.as_bytes(),
        OWNER,
        0o644,
    );
    let o = run(&sb, &["-vvv", "mail", "encrypt-passwords"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    record(&o);
    let o = run(&sb, &["-vvv", "apply"], "");
    record(&o);
    let o = run(
        &sb,
        &[
            "-vvv",
            "mail",
            "passwd",
            "carol@good.test",
            "--password-stdin",
        ],
        &format!("{pw}-2\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    record(&o);
    for args in [
        vec!["-vvv", "mail", "list", "--json"],
        vec!["-vvv", "mail", "dns", GOOD],
        vec!["-vvv", "web", "list", "--json"],
        vec!["-vvv", "dns", "export", "--format", "json"],
        vec!["-vvv", "check"],
    ] {
        record(&run(&sb, &args, ""));
    }
    wait_apply_settled(&sb);
    assert!(!log.contains(pw), "the plaintext password is in the logs");
    assert!(!log.contains("PRIVATE KEY"), "key material in the logs");
    // Hashes: the password files are hashes now, the owner's, 0600.
    for mbox in ["carol", "dave"] {
        let p = sb
            .srv()
            .join(GOOD)
            .join("mailboxes")
            .join(mbox)
            .join("password");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (OWNER, 0o600),
            "{}",
            p.display()
        );
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(
            t.starts_with("$6$") || t.starts_with("{CRYPT}$6$"),
            "{mbox}: {t}"
        );
        assert!(!t.contains(pw));
    }
    // The DKIM private key: not in any log; only in its 0640 root-owned file (and no other
    // file outside the state dir's dkim/ holds key material of it).
    let cfg = sb.config();
    let layout = dirhost::mail::MailLayout::new(cfg);
    let dkim = layout.dkim_key(GOOD);
    let m = std::fs::metadata(&dkim).unwrap_or_else(|e| panic!("{}: {e}", dkim.display()));
    assert_eq!(m.uid(), 0, "DKIM key owner");
    assert_eq!(
        m.mode() & 0o077,
        m.mode() & 0o040,
        "DKIM key is group-readable at most"
    );
    assert_eq!(m.mode() & 0o007, 0, "DKIM key world access");
    let key_text = std::fs::read_to_string(&dkim).unwrap();
    let key_line = key_text.lines().nth(2).unwrap();
    assert!(!log.contains(key_line), "DKIM key material in the logs");
    let holders = files_containing(sb.root(), key_line, &[m.ino()]);
    assert!(holders.is_empty(), "DKIM key copied to {holders:?}");
    // Every private key and passwd-file dirhost wrote under its state dir: no world access,
    // root-owned.
    for e in walkdir::WalkDir::new(&cfg.paths.state)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() {
            continue;
        }
        let body = std::fs::read(e.path()).unwrap_or_default();
        let secretish = body.windows(11).any(|w| w == b"PRIVATE KEY")
            || e.path().components().any(|c| c.as_os_str() == "passwd");
        if secretish {
            let m = e.metadata().unwrap();
            assert_eq!(
                m.mode() & 0o007,
                0,
                "{} is world-accessible",
                e.path().display()
            );
            assert_eq!(m.uid(), 0, "{} not root's", e.path().display());
        }
    }
    secret_scan(&sb, &secret, &private, "secrets", &log);
    for (id, what, outcome) in [
        (
            "S01",
            "plaintext password given to mail add/passwd, written by hand then hashed by encrypt-passwords, all commands at -vvv",
            "the plaintext appears in no output",
        ),
        (
            "S02",
            "password files after add/passwd/encrypt-passwords",
            "SHA-512-crypt hashes, the owner's, 0600",
        ),
        (
            "S03",
            "DKIM private key generated for config/dkim",
            "root-owned, no world access, in no log, copied nowhere else",
        ),
        (
            "S04",
            "every private key and passwd-file under the state dir",
            "root-owned, no world access",
        ),
    ] {
        catalogue_row("hostile_cli", id, what, outcome);
    }
    ran += 4;
    summary("cli+dns+secrets", ran);
}

/// Nothing to wait for besides the last apply's reload (already awaited by `apply`); kept as
/// a hook so the log scan runs after every command above has exited.
fn wait_apply_settled(_sb: &Sandbox) {}
