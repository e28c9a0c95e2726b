//! System tests for mail (issue 5): the real dirhost binary, a real Exim and a real Dovecot
//! on loopback ports inside a sandbox. Nothing here touches a path outside the sandbox's temp
//! root, except one line in /etc/exim4/trusted_configs while the servers run.

mod common;
#[path = "common/mail.rs"]
mod mailh;

use std::time::{Duration, Instant};

use common::*;
use mailh::*;

const D: &str = "example.test";
const PW: &str = "s3cret-Passw0rd";

#[test]
fn smtp_to_a_new_mailbox_is_read_back_over_imaps() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    w.apply(&[]);
    // The mailbox needs no reconcile to receive mail.
    add_mailbox(&w, D, "brian", None, OWNER);
    let body = message(
        "bob@remote.test",
        "brian@example.test",
        "hello brian",
        "first",
    );
    smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["brian@example.test"],
        &body,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", w.servers.logs()));
    let md = w.maildir(D, "brian");
    assert_eq!(
        wait_count(&md, 1, Duration::from_secs(10)),
        1,
        "{}",
        w.servers.logs()
    );
    // Delivered as the domain's owner, never root.
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::read_dir(md.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(f.metadata().unwrap().uid(), OWNER);

    // A password makes the login work (after the reconcile the daemon would run).
    write_owned(
        &w.srv().join(D).join("mailboxes/brian/password"),
        PW,
        OWNER,
        0o600,
    );
    w.apply(&[D]);
    let text = imap_fetch(
        w.mail().imaps,
        "localhost",
        &w.host_ca(),
        "brian@example.test",
        PW,
    )
    .unwrap_or_else(|e| panic!("curl exit {e}\n{}", w.servers.logs()));
    assert!(text.contains("Subject: hello brian"), "{text}");
    // Wrong password refused.
    assert!(!imap_login_ok(&w, "brian@example.test", "wrong-password"));
    // IPv6 listeners too (loopback only in the sandbox).
    if w.mail().listen.iter().any(|a| a == "::1") {
        use std::io::BufRead;
        let s = std::net::TcpStream::connect(("::1", w.smtp_port())).unwrap();
        let mut banner = String::new();
        std::io::BufReader::new(s).read_line(&mut banner).unwrap();
        assert!(banner.starts_with("220"), "{banner}");
        for port in [w.mail().imaps, w.mail().pop3s, w.mail().submission] {
            assert!(
                std::net::TcpStream::connect(("::1", port)).is_ok(),
                "[::1]:{port}"
            );
        }
    }
    // Unknown mailbox refused at RCPT time.
    let e = smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["nobody@example.test"],
        &body,
    );
    assert!(e.as_ref().is_err_and(|e| e.starts_with("550")), "{e:?}");
}

/// `doveadm pw -s SCHEME -p PW` without the `{SCHEME}` prefix.
fn doveadm_hash(scheme: &str, pw: &str) -> String {
    let out = std::process::Command::new("doveadm")
        .args(["pw", "-s", scheme, "-p", pw])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = String::from_utf8(out.stdout).unwrap();
    t.trim().split_once('}').unwrap().1.to_string()
}

fn openssl_hash(kind: &str, pw: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["passwd", kind, pw])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn every_accepted_hash_format_logs_in_and_a_malformed_file_disables_only_its_mailbox() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    let bcrypt = doveadm_hash("BLF-CRYPT", "pw-bcrypt-1");
    let cases: Vec<(&str, String, &str)> = vec![
        ("plain", "pw-plain-1\n".into(), "pw-plain-1"),
        ("md5", openssl_hash("-1", "pw-md5-1"), "pw-md5-1"),
        ("sha256", openssl_hash("-5", "pw-sha256-1"), "pw-sha256-1"),
        ("sha512", openssl_hash("-6", "pw-sha512-1"), "pw-sha512-1"),
        (
            "crypt",
            format!("{{CRYPT}}{}\n", openssl_hash("-6", "pw-crypt-1")),
            "pw-crypt-1",
        ),
        ("bcrypty", bcrypt.clone(), "pw-bcrypt-1"),
        ("bcryptb", bcrypt.replacen("$2y$", "$2b$", 1), "pw-bcrypt-1"),
        (
            "argon2id",
            doveadm_hash("ARGON2ID", "pw-argon2id-1"),
            "pw-argon2id-1",
        ),
        (
            "argon2i",
            doveadm_hash("ARGON2I", "pw-argon2i-1"),
            "pw-argon2i-1",
        ),
    ];
    for (local, file, _) in &cases {
        add_mailbox(&w, D, local, Some(file), OWNER);
    }
    // Malformed: a truncated hash (never taken as a plaintext password), two lines, empty.
    add_mailbox(&w, D, "broken", Some("$6$saltsalt$truncated"), OWNER);
    add_mailbox(&w, D, "twolines", Some("one\ntwo\n"), OWNER);
    add_mailbox(&w, D, "empty", Some(""), OWNER);
    let out = w.apply(&[]);
    let log = stderr(&out);
    assert!(
        log.contains("broken") && log.contains("login disabled") && log.contains("not well formed"),
        "{log}"
    );
    assert!(
        !log.contains("truncated"),
        "a password reached the log: {log}"
    );
    for (local, _, pw) in &cases {
        let user = format!("{local}@{D}");
        assert!(imap_login_ok(&w, &user, pw), "{user}\n{}", w.servers.logs());
        assert!(!imap_login_ok(&w, &user, "not-the-password"), "{user}");
    }
    assert!(!imap_login_ok(
        &w,
        "broken@example.test",
        "$6$saltsalt$truncated"
    ));
    assert!(!imap_login_ok(&w, "twolines@example.test", "one"));
    // The broken mailbox still receives mail; only its login is off.
    let body = message(
        "bob@remote.test",
        "broken@example.test",
        "still delivered",
        "x",
    );
    smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["broken@example.test"],
        &body,
    )
    .unwrap();
    assert_eq!(
        wait_count(&w.maildir(D, "broken"), 1, Duration::from_secs(10)),
        1
    );
    let list = dirhost(&w, &["mail", "list", D, "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let broken = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "broken@example.test")
        .unwrap();
    assert!(
        broken["login"].as_str().unwrap().starts_with("disabled"),
        "{rows}"
    );

    // Sympl's nightly job: plaintext becomes {CRYPT}$6$..., and the login keeps working.
    let out = dirhost(&w, &["mail", "encrypt-passwords", D]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = std::fs::read_to_string(w.srv().join(D).join("mailboxes/plain/password")).unwrap();
    assert!(stored.starts_with("{CRYPT}$6$"), "{stored}");
    assert!(imap_login_ok(&w, "plain@example.test", "pw-plain-1"));
    // ... unless the domain keeps plaintext.
    write_owned(
        &w.srv()
            .join(D)
            .join("config/mailbox-dont-encrypt-passwords"),
        "",
        OWNER,
        0o644,
    );
    add_mailbox(&w, D, "keepplain", Some("pw-keep-1"), OWNER);
    dirhost(&w, &["mail", "encrypt-passwords", D]);
    let stored =
        std::fs::read_to_string(w.srv().join(D).join("mailboxes/keepplain/password")).unwrap();
    assert_eq!(stored, "pw-keep-1");

    // A password change takes effect with the next reconcile.
    write_owned(
        &w.srv().join(D).join("mailboxes/sha512/password"),
        "pw-changed-2",
        OWNER,
        0o600,
    );
    w.apply(&[D]);
    assert!(imap_login_ok(&w, "sha512@example.test", "pw-changed-2"));
    assert!(!imap_login_ok(&w, "sha512@example.test", "pw-sha512-1"));
}

#[test]
fn bad_mailbox_names_and_symlinks_never_get_mail_or_logins() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    add_mail_domain(&w, "other.test", OTHER);
    add_mailbox(&w, "other.test", "victim", Some(PW), OTHER);
    let victim_md = w.maildir("other.test", "victim");
    for d in ["", "new", "cur", "tmp"] {
        let p = victim_md.join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&p, Some(OTHER), Some(OTHER)).unwrap();
    }
    // example.test's owner points a Maildir, and a whole mailbox, at the other customer's.
    add_mailbox(&w, D, "thief", Some(PW), OWNER);
    let link = w.srv().join(D).join("mailboxes/thief/Maildir");
    std::os::unix::fs::symlink(&victim_md, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(OWNER), Some(OWNER)).unwrap();
    let mlink = w.srv().join(D).join("mailboxes/evil");
    std::os::unix::fs::symlink(w.srv().join("other.test/mailboxes/victim"), &mlink).unwrap();
    std::os::unix::fs::lchown(&mlink, Some(OWNER), Some(OWNER)).unwrap();
    // Names that are not local parts.
    add_mailbox(&w, D, "a..b", Some(PW), OWNER);
    add_mailbox(&w, D, "Upper", Some(PW), OWNER);
    w.apply(&[]);

    for rcpt in [
        "thief@example.test",
        "evil@example.test",
        "a..b@example.test",
    ] {
        let body = message("bob@remote.test", rcpt, "steal", "x");
        let r = smtp_send(w.smtp_port(), "bob@remote.test", &[rcpt], &body);
        assert!(
            r.as_ref().is_err_and(|e| e.starts_with("550")),
            "{rcpt}: {r:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&victim_md), 0, "delivered through a symlink");
    for user in [
        "evil@example.test",
        "a..b@example.test",
        "upper@example.test",
    ] {
        assert!(!imap_login_ok(&w, user, PW), "{user}");
    }
    // Login names cannot walk paths.
    for user in [
        "victim@..",
        "victim@other.test/../other.test",
        "../victim@other.test",
    ] {
        assert!(!imap_login_ok(&w, user, PW), "{user}");
    }
    assert!(imap_login_ok(&w, "victim@other.test", PW));
    // The CLI refuses such names outright.
    for bad in [
        "..@example.test",
        "../x@example.test",
        ".hidden@example.test",
        "a@b@example.test",
    ] {
        let out = dirhost(&w, &["mail", "add", bad, "--password-stdin"]);
        assert!(!out.status.success(), "{bad} accepted");
    }
    assert!(!w.srv().join(D).join("mailboxes/.hidden").exists());
    let out = dirhost(&w, &["mail", "list", D]);
    let text = stdout(&out);
    assert!(
        text.contains("a..b@example.test") && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn forward_vacation_aliases_default_forward_suffixes_postmaster_and_alias_domains() {
    let w = mail_world_with(|c| c.mail.postmaster = "admin@example.test".into());
    add_mail_domain(&w, D, OWNER);
    for local in ["carol", "dave", "erin", "frank", "admin"] {
        add_mailbox(&w, D, local, Some(PW), OWNER);
    }
    let mb = w.srv().join(D).join("mailboxes");
    write_owned(
        &mb.join("carol/forward"),
        "dave@example.test\n",
        OWNER,
        0o644,
    );
    // A forward file is read as the owner: a link to a file only root can read is ignored.
    add_mailbox(&w, D, "linked", Some(PW), OWNER);
    let secret = w.root().join("root-only-forward");
    std::fs::write(&secret, "dave@example.test\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let fwd = mb.join("linked/forward");
    std::os::unix::fs::symlink(&secret, &fwd).unwrap();
    std::os::unix::fs::lchown(&fwd, Some(OWNER), Some(OWNER)).unwrap();
    write_owned(
        &mb.join("erin/vacation"),
        "I am away until Monday.\n",
        OWNER,
        0o644,
    );
    write_owned(
        &w.srv().join(D).join("config/aliases"),
        "sales: dave, frank@example.test\nbad: |/bin/sh -c evil\n",
        OWNER,
        0o644,
    );
    add_mail_domain(&w, "catchall.test", OWNER);
    add_mailbox(&w, "catchall.test", "inbox", Some(PW), OWNER);
    write_owned(
        &w.srv().join("catchall.test/config/default_forward"),
        "inbox@catchall.test\n",
        OWNER,
        0o644,
    );
    let alias = w.srv().join("alias.test");
    std::os::unix::fs::symlink(w.srv().join(D), &alias).unwrap();
    std::os::unix::fs::lchown(&alias, Some(OWNER), Some(OWNER)).unwrap();
    w.apply(&[]);
    let port = w.smtp_port();
    let send = |from: &str, to: &str, subject: &str, extra: &str| {
        let body = format!("{extra}{}", message(from, to, subject, "body"));
        smtp_send(port, from, &[to], &body)
            .unwrap_or_else(|e| panic!("{to}: {e}\n{}", w.servers.logs()))
    };
    let t = Duration::from_secs(10);

    // forward: carol's mail goes to dave, not to carol.
    send("bob@remote.test", "carol@example.test", "for carol", "");
    assert_eq!(
        wait_count(&w.maildir(D, "dave"), 1, t),
        1,
        "{}",
        w.servers.logs()
    );
    assert_eq!(count(&w.maildir(D, "carol")), 0);
    send(
        "bob@remote.test",
        "linked@example.test",
        "not forwarded",
        "",
    );
    assert_eq!(
        wait_count(&w.maildir(D, "linked"), 1, t),
        1,
        "{}",
        w.servers.logs()
    );
    assert_eq!(count(&w.maildir(D, "dave")), 1);
    // +suffix addressing.
    send("bob@remote.test", "dave+news@example.test", "suffix", "");
    assert_eq!(wait_count(&w.maildir(D, "dave"), 2, t), 2);
    // config/aliases: sales -> dave and frank; the pipe line is refused.
    send("bob@remote.test", "sales@example.test", "sales", "");
    assert_eq!(wait_count(&w.maildir(D, "dave"), 3, t), 3);
    assert_eq!(wait_count(&w.maildir(D, "frank"), 1, t), 1);
    let r = smtp_send(
        port,
        "bob@remote.test",
        &["bad@example.test"],
        "Subject: x\n\nx\n",
    );
    assert!(r.is_err(), "{r:?}");
    // config/default_forward: anything else at catchall.test.
    send("bob@remote.test", "whatever@catchall.test", "catch", "");
    assert_eq!(
        wait_count(&w.maildir("catchall.test", "inbox"), 1, t),
        1,
        "{}",
        w.servers.logs()
    );
    // postmaster of a domain without such a mailbox (nor a default forward).
    send("bob@remote.test", "postmaster@example.test", "pm", "");
    assert_eq!(
        wait_count(&w.maildir(D, "admin"), 1, t),
        1,
        "{}",
        w.servers.logs()
    );
    // An alias domain (symlink in /srv) gets the same mail.
    send("bob@remote.test", "dave@alias.test", "via alias", "");
    assert_eq!(
        wait_count(&w.maildir(D, "dave"), 4, t),
        4,
        "{}",
        w.servers.logs()
    );
    assert!(imap_login_ok(&w, "dave@alias.test", PW));

    // vacation: frank (a local sender) writes twice and gets one autoreply.
    send("frank@example.test", "erin@example.test", "question 1", "");
    assert_eq!(wait_count(&w.maildir(D, "erin"), 1, t), 1);
    assert_eq!(
        wait_count(&w.maildir(D, "frank"), 2, t),
        2,
        "{}",
        w.servers.logs()
    );
    send("frank@example.test", "erin@example.test", "question 2", "");
    assert_eq!(wait_count(&w.maildir(D, "erin"), 2, t), 2);
    // Never to lists, bulk or automatic mail.
    send(
        "dave@example.test",
        "erin@example.test",
        "newsletter",
        "Precedence: bulk\n",
    );
    send(
        "dave@example.test",
        "erin@example.test",
        "list",
        "List-Id: <l.example.test>\n",
    );
    send(
        "dave@example.test",
        "erin@example.test",
        "auto",
        "Auto-Submitted: auto-generated\n",
    );
    assert_eq!(wait_count(&w.maildir(D, "erin"), 5, t), 5);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&w.maildir(D, "frank")),
        2,
        "a second autoreply to frank: {:?}\n{}",
        messages(&w.maildir(D, "frank"))
            .iter()
            .map(|m| m
                .lines()
                .filter(|l| l.starts_with("Subject"))
                .collect::<Vec<_>>()
                .join(" "))
            .collect::<Vec<_>>(),
        w.servers.logs()
    );
    let replies: Vec<String> = messages(&w.maildir(D, "frank"))
        .into_iter()
        .filter(|m| m.contains("AutoReply"))
        .collect();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].contains("I am away until Monday."),
        "{}",
        replies[0]
    );
    assert!(
        replies[0].contains("Auto-Submitted: auto-replied"),
        "{}",
        replies[0]
    );
    assert_eq!(count(&w.maildir(D, "dave")), 4, "dave got an autoreply");
}

#[test]
fn submission_needs_auth_and_auth_needs_tls() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    add_mailbox(&w, D, "alice", Some(PW), OWNER);
    add_mailbox(&w, D, "bob", Some(PW), OWNER);
    w.apply(&[]);
    let ca = w.host_ca().display().to_string();
    let subm = w.mail().submission.to_string();
    let smtps = w.mail().smtps.to_string();
    // No AUTH: refused.
    let (ok, t) = swaks(&[
        "--port",
        &subm,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
    ]);
    assert!(!ok && t.contains("authentication required"), "{t}");
    // AUTH over plain text: not offered, and refused when tried.
    let (ok, t) = swaks(&[
        "--port",
        &subm,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        PW,
    ]);
    assert!(!ok, "{t}");
    assert!(!t.contains("250-AUTH"), "AUTH advertised without TLS: {t}");
    // AUTH over STARTTLS: accepted and delivered; wrong password refused.
    let (ok, t) = swaks(&[
        "--port",
        &subm,
        "--tls",
        "--tls-ca-path",
        &ca,
        "--tls-verify",
        "--tls-sni",
        "localhost",
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        PW,
    ]);
    assert!(ok, "{t}\n{}", w.servers.logs());
    assert_eq!(
        wait_count(&w.maildir(D, "bob"), 1, Duration::from_secs(10)),
        1
    );
    let (ok, t) = swaks(&[
        "--port",
        &subm,
        "--tls",
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        "wrong",
    ]);
    assert!(!ok && t.contains("535"), "{t}");
    // Port 465: TLS on connect, AUTH.
    let (ok, t) = swaks(&[
        "--port",
        &smtps,
        "--tls-on-connect",
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        PW,
    ]);
    assert!(ok, "{t}");
    // Port 25: STARTTLS offered.
    let (ok, t) = swaks(&[
        "--port",
        &w.smtp_port().to_string(),
        "--tls",
        "--from",
        "x@remote.test",
        "--to",
        "bob@example.test",
    ]);
    assert!(ok && t.contains("STARTTLS"), "{t}");
    assert_eq!(
        wait_count(&w.maildir(D, "bob"), 3, Duration::from_secs(10)),
        3
    );
}

#[test]
fn dkim_signature_verifies_against_the_published_record() {
    let sink = SmtpSink::start();
    let sink_port = sink.port;
    let w = mail_world_with(|c| c.mail.smarthost = format!("127.0.0.1:{sink_port}"));
    add_mail_domain(&w, D, OWNER);
    add_mailbox(&w, D, "alice", Some(PW), OWNER);
    write_owned(&w.srv().join(D).join("config/dkim"), "sel1\n", OWNER, 0o644);
    w.apply(&[]);
    // The key is the state dir's, readable by Exim only.
    let key = w.config().paths.state.join("mail/exim/dkim/example.test");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    let exim_gid = nix::unistd::Group::from_name("Debian-exim")
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(meta.gid(), exim_gid.as_raw());

    let (ok, t) = swaks(&[
        "--port",
        &w.mail().submission.to_string(),
        "--tls",
        "--from",
        "alice@example.test",
        "--to",
        "someone@remote.test",
        "--header",
        "Subject: signed",
        "--body",
        "Hello DKIM\n",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        PW,
    ]);
    assert!(ok, "{t}");
    let got = sink.wait(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "{}", w.servers.logs());
    let msg = &got[0];
    assert!(
        msg.contains("DKIM-Signature:") && msg.contains("s=sel1"),
        "{msg}"
    );

    // Empty config/spf and config/dmarc: Sympl's defaults (no file: no record, as in
    // `dirhost dns export`).
    write_owned(&w.srv().join(D).join("config/spf"), "", OWNER, 0o644);
    write_owned(&w.srv().join(D).join("config/dmarc"), "", OWNER, 0o644);
    let out = dirhost(&w, &["mail", "dns", D]);
    let dns = stdout(&out);
    assert!(out.status.success(), "{dns}{}", stderr(&out));
    assert!(
        dns.contains("v=spf1 +a +mx ?all") && dns.contains("_dmarc.example.test"),
        "{dns}"
    );
    let line = dns
        .lines()
        .find(|l| l.starts_with("sel1._domainkey.example.test."))
        .unwrap();
    let record: String = line
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("msg.eml"),
        msg.replace("\r\n", "\n").replace('\n', "\r\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("record.txt"), &record).unwrap();
    let script = "import dkim,sys\n\
        rec=open(sys.argv[2],'rb').read()\n\
        def dns(name, timeout=5):\n\
        \x20   assert name==b'sel1._domainkey.example.test.', name\n\
        \x20   return rec\n\
        ok=dkim.verify(open(sys.argv[1],'rb').read(), dnsfunc=dns)\n\
        sys.exit(0 if ok else 1)\n";
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("msg.eml"))
        .arg(dir.path().join("record.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "DKIM did not verify: {out:?}\n{msg}");
}

#[test]
fn mail_cli_adds_changes_lists_and_removes_mailboxes() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    w.apply(&[]);
    let run = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
            .arg("--config")
            .arg(w.config_path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &["mail", "add", "Gina@Example.test", "--password-stdin"],
        "gina-pass-1\n",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!stderr(&out).contains("gina-pass-1"));
    let pwfile = w.srv().join(D).join("mailboxes/gina/password");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&pwfile).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (OWNER, 0o600));
    assert!(
        std::fs::read_to_string(&pwfile)
            .unwrap()
            .starts_with("{CRYPT}$6$")
    );
    assert!(
        imap_login_ok(&w, "gina@example.test", "gina-pass-1"),
        "{}",
        w.servers.logs()
    );
    let out = run(
        &["mail", "add", "gina@example.test", "--password-stdin"],
        "x-other-pass\n",
    );
    assert!(!out.status.success(), "added twice");
    let out = run(&["mail", "passwd", "gina@example.test"], "gina-pass-2\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(imap_login_ok(&w, "gina@example.test", "gina-pass-2"));
    assert!(!imap_login_ok(&w, "gina@example.test", "gina-pass-1"));
    let out = run(&["mail", "passwd", "gina@example.test"], "short\n");
    assert!(!out.status.success());
    let out = run(
        &["mail", "add", "hal@nowhere.test", "--password-stdin"],
        "hal-pass-123\n",
    );
    assert!(!out.status.success());
    run(&["mail", "add", "ivan@example.test"], "ivan-pass-123\n");
    let out = dirhost(&w, &["mail", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addrs: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["gina@example.test", "ivan@example.test"]);

    let body = message("bob@remote.test", "gina@example.test", "keep me", "x");
    smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["gina@example.test"],
        &body,
    )
    .unwrap();
    assert_eq!(
        wait_count(&w.maildir(D, "gina"), 1, Duration::from_secs(10)),
        1
    );
    let out = dirhost(&w, &["mail", "remove", "gina@example.test"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mb = w.srv().join(D).join("mailboxes");
    let archive = std::fs::read_dir(&mb)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".gina.removed-")
        })
        .expect("archive kept");
    assert_eq!(count(&archive.path().join("Maildir")), 1);
    assert!(!imap_login_ok(&w, "gina@example.test", "gina-pass-2"));
    let r = smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["gina@example.test"],
        &body,
    );
    assert!(r.is_err(), "{r:?}");
    let out = dirhost(&w, &["mail", "remove", "ivan@example.test", "--purge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!mb.join("ivan").exists());
    assert!(std::fs::read_dir(&mb).unwrap().count() == 1);
}

#[test]
fn a_thousand_messages_to_fifty_mailboxes_while_reconciles_run() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    let n_boxes = 50;
    for i in 0..n_boxes {
        add_mailbox(&w, D, &format!("user{i}"), Some(PW), OWNER);
    }
    w.apply(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Reconciles with real changes (a password and a new mailbox each round) meanwhile.
    let reconciler = {
        let stop = stop.clone();
        let cfg = w.config_path().to_path_buf();
        let srv = w.srv().to_path_buf();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && rounds < 200 {
                let m = srv.join(D).join(format!("mailboxes/extra{rounds}"));
                std::fs::create_dir_all(&m).unwrap();
                std::os::unix::fs::chown(&m, Some(OWNER), Some(OWNER)).unwrap();
                write_owned(&m.join("password"), &format!("pw-{rounds}"), OWNER, 0o600);
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
                    .arg("--config")
                    .arg(&cfg)
                    .args(["apply"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                rounds += 1;
            }
            rounds
        })
    };
    let port = w.smtp_port();
    let senders: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = SmtpConn::connect(port).unwrap();
                for i in 0..100 {
                    let k = t * 100 + i;
                    let to = format!("user{}@example.test", k % n_boxes);
                    let body = message("load@remote.test", &to, &format!("load {k}"), "x");
                    let mut tries = 0;
                    loop {
                        match c.send("load@remote.test", &[&to], &body) {
                            Ok(_) => break,
                            Err(e) if tries < 5 => {
                                tries += 1;
                                let _ = e;
                                c = SmtpConn::connect(port).unwrap();
                            }
                            Err(e) => panic!("{to}: {e}"),
                        }
                    }
                }
                let _ = c.cmd("QUIT");
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = reconciler.join().unwrap();
    assert!(rounds >= 1, "no reconcile ran during the load");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let total = loop {
        let total: usize = (0..n_boxes)
            .map(|i| count(&w.maildir(D, &format!("user{i}"))))
            .sum();
        if total >= 1000 || std::time::Instant::now() > deadline {
            break total;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(total, 1000, "{}", w.servers.logs());
    for i in 0..n_boxes {
        assert_eq!(count(&w.maildir(D, &format!("user{i}"))), 20, "user{i}");
    }
}

/// The subject of the certificate a server presents for `sni` (`openssl s_client`).
fn presented_subject(port: u16, sni: &str, starttls: Option<&str>) -> String {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-servername".into(),
        sni.into(),
    ];
    if let Some(proto) = starttls {
        args.extend(["-starttls".into(), proto.into()]);
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl {} </dev/null 2>/dev/null | openssl x509 -noout -subject",
            args.join(" ")
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// [`presented_subject`] until it contains `want` (at most 10 s, then the last one seen):
/// Dovecot's reload is a signal, so the first connection after `apply` may still meet the
/// previous configuration.
fn wait_presented(port: u16, sni: &str, starttls: Option<&str>, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = presented_subject(port, sni, starttls);
        if s.contains(want) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tls_certificates_by_sni_pop3s_and_quotas() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    add_mailbox(&w, D, "kim", Some(PW), OWNER);
    add_mailbox(&w, D, "small", Some(PW), OWNER);
    write_owned(
        &w.srv().join(D).join("mailboxes/small/quota"),
        "2k\n",
        OWNER,
        0o644,
    );
    let (crt, key) = self_signed(w.root(), &[D, "www.example.test"], 30);
    put(&w, D, "config/ssl/sets/0/ssl.crt", &crt, OWNER);
    put(&w, D, "config/ssl/sets/0/ssl.key", &key, OWNER);
    std::os::unix::fs::symlink("sets/0", w.srv().join(D).join("config/ssl/current")).unwrap();
    w.apply(&[]);
    let m = w.mail().clone();
    // The domain's own certificate for its names, the host's otherwise: IMAPS, POP3S,
    // SMTPS and STARTTLS on 25 and 587.
    for (port, starttls) in [
        (m.imaps, None),
        (m.pop3s, None),
        (m.smtps, None),
        (m.smtp, Some("smtp")),
        (m.submission, Some("smtp")),
    ] {
        let s = wait_presented(port, D, starttls, "CN = example.test");
        assert!(
            s.contains("CN = example.test"),
            "{port}: {s}\n{}",
            w.servers.logs()
        );
        let s = presented_subject(port, "www.example.test", starttls);
        assert!(s.contains("CN = example.test"), "{port}: {s}");
        let s = presented_subject(port, "unknown.test", starttls);
        assert!(s.contains("CN = mail.dirhost.test"), "{port}: {s}");
    }
    // The domain certificate verifies for a client that only trusts it.
    let ca = w.root().join("domain-ca.pem");
    std::fs::write(&ca, &crt).unwrap();
    let body = message("bob@remote.test", "kim@example.test", "over pop3s", "x");
    smtp_send(m.smtp, "bob@remote.test", &["kim@example.test"], &body).unwrap();
    assert_eq!(
        wait_count(&w.maildir(D, "kim"), 1, Duration::from_secs(10)),
        1
    );
    let list = curl(&[
        &format!("pop3s://{D}:{}/", m.pop3s),
        "--resolve",
        &format!("{D}:{}:127.0.0.1", m.pop3s),
        "--cacert",
        &ca.display().to_string(),
        "--user",
        &format!("kim@{D}:{PW}"),
    ])
    .unwrap_or_else(|e| panic!("pop3s: curl exit {e}\n{}", w.servers.logs()));
    assert!(list.starts_with("1 "), "{list}");
    let text = imap_fetch(m.imaps, D, &ca, "kim@example.test", PW).unwrap();
    assert!(text.contains("over pop3s"), "{text}");

    // Quota (mailbox `quota`, Sympl's units): a big message waits, a small one arrives.
    let big = message(
        "bob@remote.test",
        "small@example.test",
        "big",
        &"x".repeat(5000),
    );
    smtp_send(m.smtp, "bob@remote.test", &["small@example.test"], &big).unwrap();
    let small = message("bob@remote.test", "small@example.test", "small", "y");
    smtp_send(m.smtp, "bob@remote.test", &["small@example.test"], &small).unwrap();
    assert_eq!(
        wait_count(&w.maildir(D, "small"), 1, Duration::from_secs(10)),
        1
    );
    std::thread::sleep(Duration::from_secs(1));
    let got = messages(&w.maildir(D, "small"));
    assert_eq!(got.len(), 1, "{}", w.servers.logs());
    assert!(
        got[0].contains("Subject: small"),
        "{}\n{}",
        std::fs::read_to_string(
            w.config()
                .paths
                .state
                .join("mail/exim/domains/example.test")
        )
        .unwrap_or_default(),
        w.servers.logs()
    );
    let log = std::fs::read_to_string(w.root().join("logs/exim/mainlog")).unwrap();
    assert!(log.contains("quota exceeded"), "{log}");
}

#[test]
fn trusted_configs_line_is_removed_again_even_on_panic() {
    use dirhost::mail::sandbox::{TRUSTED_CONFIGS, TrustedConfig};
    let before = std::fs::read(TRUSTED_CONFIGS).ok();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("exim4.conf");
    {
        let _t = TrustedConfig::add(&conf).unwrap();
        let text = std::fs::read_to_string(TRUSTED_CONFIGS).unwrap();
        assert!(text.lines().any(|l| l == conf.to_str().unwrap()), "{text}");
    }
    let r = std::panic::catch_unwind(|| {
        let _t = TrustedConfig::add(&conf).unwrap();
        panic!("test panics while the line is listed");
    });
    assert!(r.is_err());
    let after = std::fs::read(TRUSTED_CONFIGS).ok();
    // Other tests may hold lines of their own meanwhile; ours must be gone.
    let ours = |t: &Option<Vec<u8>>| {
        t.as_ref().is_some_and(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .any(|l| l == conf.to_str().unwrap())
        })
    };
    assert!(!ours(&after));
    if let (None, Some(now)) = (&before, &after) {
        // Only acceptable while another sandbox's line is in it.
        assert!(!String::from_utf8_lossy(now).trim().is_empty());
    }
}

/// BENCHMARKS.md "Mail": SMTP accept → IMAP-visible latency and accepted messages/s.
/// In the normal run it is a small functional test (every message must arrive); the full
/// benchmark: `DIRHOST_BENCH_FULL=1 cargo test --release --test mail -- --nocapture bench_mail`
#[test]
fn bench_mail() {
    let full = std::env::var_os("DIRHOST_BENCH_FULL").is_some();
    let (n, per_sender) = if full { (200, 100) } else { (20, 10) };
    let total = 10 * per_sender;
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    for i in 0..50 {
        add_mailbox(&w, D, &format!("user{i}"), Some(PW), OWNER);
    }
    w.apply(&[]);
    let port = w.smtp_port();

    // Latency: one message at a time, timed from the 250 after DATA to the moment an
    // IMAP client that is already logged in sees it (NOOP polled every 2 ms).
    let mut imap = Imap::connect(w.mail().imaps, "localhost");
    imap.login("user0@example.test", PW);
    let mut smtp = SmtpConn::connect(port).unwrap();
    let mut have = imap.exists().unwrap_or(0);
    let mut lat = Vec::new();
    for i in 0..n {
        let body = message(
            "bench@remote.test",
            "user0@example.test",
            &format!("lat {i}"),
            "x",
        );
        smtp.send("bench@remote.test", &["user0@example.test"], &body)
            .unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let now = imap.exists().unwrap_or(have);
            if now > have {
                have = now;
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "message {i} never showed up"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "latency SMTP 250 -> IMAP visible over {n} messages: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );

    // Throughput: 1,000 messages over 10 concurrent connections to 50 mailboxes.
    let before: usize = (0..50)
        .map(|i| count(&w.maildir(D, &format!("user{i}"))))
        .sum();
    let t0 = std::time::Instant::now();
    let senders: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = SmtpConn::connect(port).unwrap();
                for i in 0..per_sender {
                    let to = format!("user{}@example.test", (t * per_sender + i) % 50);
                    let body = message("bench@remote.test", &to, "tp", "x");
                    c.send("bench@remote.test", &[&to], &body).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let accepted = t0.elapsed();
    loop {
        let now: usize = (0..50)
            .map(|i| count(&w.maildir(D, &format!("user{i}"))))
            .sum();
        if now >= before + total {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(10));
    }
    let delivered = t0.elapsed();
    println!(
        "{total} messages, 10 connections: accepted in {:.2} s ({:.0} msg/s), all in Maildirs after {:.2} s ({:.0} msg/s)",
        accepted.as_secs_f64(),
        total as f64 / accepted.as_secs_f64(),
        delivered.as_secs_f64(),
        total as f64 / delivered.as_secs_f64()
    );
}
