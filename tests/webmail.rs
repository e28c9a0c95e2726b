//! Webmail (issue 12): Debian's Roundcube at https://<domain>/webmail/, served by the
//! sandbox's real Apache through a real private PHP-FPM (`common/php.rs`), logging in to the
//! sandbox's real Dovecot and sending through its real Exim (`common/mail.rs`). Nothing here
//! touches a path outside the sandbox's temp root (Debian's /etc/roundcube is only read).

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/mail.rs"]
mod mail;
#[path = "common/php.rs"]
mod php_fpm;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use browser::Browser;
use common::*;
use mail::{MailWorld, add_mail_domain, add_mailbox, mail_world_with};
use php_fpm::PhpFpm;

/// The domain whose webmail the tests use, and a second one.
const D: &str = "mail-a.test";
const E: &str = "mail-b.test";
/// The sandbox's `[web] hostname`.
const HOST: &str = "dirhost.test";

/// A mail world (Apache, Exim, Dovecot) plus PHP-FPM, with webmail on, two mail domains
/// with a self-signed certificate each and one mailbox each. Drop order: PHP-FPM, then the
/// mail servers, then the sandbox.
struct World {
    fpm: PhpFpm,
    w: MailWorld,
    ca: PathBuf,
    /// The certificate of D (PEM), for the browser to trust.
    cert_d: String,
}

impl std::ops::Deref for World {
    type Target = MailWorld;
    fn deref(&self) -> &MailWorld {
        &self.w
    }
}

fn world() -> World {
    let mut w = mail_world_with(|cfg| cfg.webmail.enabled = true);
    let fpm = PhpFpm::start(&mut w.sb);
    let ca = w.root().join("webmail-ca.pem");
    let mut bundle = String::new();
    let mut cert_d = String::new();
    // D and E have mailboxes; the host's own name (HOST) is a site without any.
    for (domain, uid) in [(D, OWNER), (E, OTHER), (HOST, OWNER)] {
        w.add_site(domain, uid, &format!("site of {domain}"))
            .unwrap();
        if domain != HOST {
            add_mail_domain(&w, domain, uid);
        }
        let (crt, key) = self_signed(w.root(), &[domain, &format!("www.{domain}")], 30);
        put(&w, domain, "config/ssl/sets/0/ssl.crt", &crt, uid);
        put(&w, domain, "config/ssl/sets/0/ssl.key", &key, uid);
        std::os::unix::fs::symlink("sets/0", w.srv().join(domain).join("config/ssl/current"))
            .unwrap();
        if domain == D {
            cert_d = crt.clone();
        }
        bundle.push_str(&crt);
    }
    std::fs::write(&ca, bundle).unwrap();
    add_mailbox(&w, D, "alice", Some("alice-secret"), OWNER);
    add_mailbox(&w, D, "bob", Some("bob-secret"), OWNER);
    add_mailbox(&w, E, "carol", Some("carol-secret"), OTHER);
    let world = World { fpm, w, ca, cert_d };
    world.apply();
    world
}

impl World {
    /// `dirhost apply`, waiting for every reload it did (Apache, PHP-FPM, Exim, Dovecot).
    fn apply(&self) -> std::process::Output {
        let php = self.sb.php_fpm_generation();
        let out = self.w.apply(&[]);
        if stdout(&out).contains("reloaded Php") {
            self.sb.wait_php_fpm_generation(php + 1).unwrap();
        }
        out
    }

    /// curl against the sandbox's HTTPS port for `host` (trusting the test certificates).
    fn https(&self, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
        let port = self.https_port();
        curl_full(
            &[
                "--cacert",
                &self.ca.display().to_string(),
                "--resolve",
                &format!("{host}:{port}:127.0.0.1"),
                &format!("https://{host}:{port}{path}"),
            ],
            extra,
        )
    }

    fn logs(&self) -> String {
        let webmail = self.sb.config().webmail.log_dir.clone();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- apache ---\n{}\n--- php-fpm ---\n{}\n--- roundcube errors ---\n{}\n{}",
            tail(&self.sb.apache_error_log()),
            tail(&self.sb.php_fpm_log()),
            tail(&read(&webmail.join("errors.log"))),
            self.servers.logs()
        )
    }
}

fn tail(s: &str) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(30)..].join("\n")
}

/// `curl -sS ARGS EXTRA`: (status, headers, body).
fn curl_full(args: &[&str], extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "-o", "-"])
        .args(extra)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    // With -L, each response's header block comes first: the last one is the answer.
    let (mut head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    while body.starts_with("HTTP/") {
        (head, body) = body.split_once("\r\n\r\n").unwrap_or((body, ""));
    }
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A Roundcube login over HTTP (curl with a cookie jar): Ok(the mailbox page) or Err(the
/// login page it came back to).
fn http_login(w: &World, host: &str, user: &str, pass: &str) -> Result<String, String> {
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().display().to_string();
    let cookies = ["-c", jar.as_str(), "-b", jar.as_str()];
    let (status, _, page) = w.https(host, "/webmail/", &cookies);
    assert_eq!(status, 200, "{page}\n{}", w.logs());
    let token = page
        .split("name=\"_token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no _token in the login page:\n{page}"))
        .to_string();
    let mut args: Vec<&str> = cookies.to_vec();
    let form = [
        format!("_token={token}"),
        "_task=login".into(),
        "_action=login".into(),
        "_timezone=UTC".into(),
        format!("_user={user}"),
        format!("_pass={pass}"),
    ];
    for f in &form {
        args.extend(["--data-urlencode", f.as_str()]);
    }
    args.push("-L");
    let (status, _, page) = w.https(host, "/webmail/?_task=login", &args);
    assert!(
        status == 200 || status == 401,
        "{status}\n{page}\n{}",
        w.logs()
    );
    if page.contains("rcmloginuser") || !page.contains("_task=mail") {
        Err(page)
    } else {
        Ok(page)
    }
}

#[test]
fn webmail_is_https_only_per_domain_and_refuses_bad_logins() {
    let w = world();
    // Plain HTTP redirects to HTTPS, for /webmail and everything below it.
    for path in ["/webmail/", "/webmail", "/webmail/?_task=mail"] {
        let r = w.sb.http_get(D, path).unwrap();
        assert_eq!(r.status, 301, "{path}: {r:?}");
        let want = format!("https://{D}:{}{path}", w.https_port());
        assert_eq!(r.header("location"), Some(want.as_str()), "{path}");
    }
    // The site itself still answers on HTTP.
    assert_eq!(w.sb.http_get(D, "/").unwrap().body, format!("site of {D}"));

    // HTTPS serves Roundcube's login page, run by the webmail's own pool. (Timings are
    // printed for BENCHMARKS.md, never asserted.)
    let t = std::time::Instant::now();
    let (status, head, page) = w.https(D, "/webmail/", &[]);
    let cold = t.elapsed();
    let t = std::time::Instant::now();
    w.https(D, "/webmail/", &[]);
    eprintln!(
        "webmail timing: login page, cold pool {cold:?}, warm {:?}",
        t.elapsed()
    );
    assert_eq!(status, 200, "{head}{page}\n{}", w.logs());
    assert!(page.contains("rcmloginuser"), "{page}");
    assert!(!page.contains("<?php"));
    // It ran in the webmail's own pool, as its own user (2999 in the sandbox), not in the
    // domain's pool or as its owner.
    let workers = w.fpm.workers();
    assert!(
        workers.iter().any(|(_, pool)| pool == "dirhost-webmail"),
        "{workers:?}"
    );
    for (pid, pool) in &workers {
        assert_ne!(pool, D, "{workers:?}");
        if pool == "dirhost-webmail" {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert_eq!(uid.split_whitespace().nth(1), Some("2999"), "{uid}");
        }
    }
    // No other PHP file is run or served, and Roundcube's internals stay hidden.
    for path in [
        "/webmail/program/include/iniset.php",
        "/webmail/plugins/jqueryui/jqueryui.php",
        "/webmail/config/config.inc.php",
    ] {
        let (status, _, body) = w.https(D, path, &[]);
        assert!(status == 403 || status == 404, "{path}: {status} {body}");
    }

    // Right password in, wrong password out; the failure is logged for fail2ban.
    let t = std::time::Instant::now();
    http_login(&w, D, "alice", "alice-secret").unwrap_or_else(|p| panic!("{p}\n{}", w.logs()));
    eprintln!(
        "webmail timing: log in and see the inbox (3 requests) {:?}",
        t.elapsed()
    );
    http_login(&w, D, &format!("bob@{D}"), "bob-secret").unwrap();
    assert!(http_login(&w, D, "alice", "wrong").is_err());
    let errors = std::fs::read_to_string(w.sb.config().webmail.log_dir.join("errors.log"))
        .unwrap_or_default();
    // (The line fail2ban's stock roundcube-auth filter matches.)
    assert!(
        errors.contains(&format!(
            "IMAP Error: Login failed for alice@{D} against 127.0.0.1 from 127.0.0.1."
        )),
        "{errors}"
    );
    let logins = std::fs::read_to_string(w.sb.config().webmail.log_dir.join("userlogins.log"))
        .unwrap_or_default();
    assert!(
        logins.contains(&format!("Successful login for alice@{D}"))
            && logins.contains("Failed login for alice from 127.0.0.1"),
        "{logins}"
    );

    // Another domain's mailbox cannot log in through this domain's webmail, even with its
    // right password; through its own domain it can.
    assert!(http_login(&w, D, &format!("carol@{E}"), "carol-secret").is_err());
    assert!(http_login(&w, D, "carol", "carol-secret").is_err());
    http_login(&w, E, &format!("carol@{E}"), "carol-secret").unwrap();
    // The host's own name serves webmail for every domain's full addresses.
    assert_eq!(w.config().web.hostname, HOST);
    http_login(&w, HOST, &format!("carol@{E}"), "carol-secret").unwrap();
    http_login(&w, HOST, &format!("alice@{D}"), "alice-secret").unwrap();
    assert!(http_login(&w, HOST, "alice", "alice-secret").is_err());

    // The state: des_key made once, root:<pool group> 0640, and the database the pool's.
    let state = w.sb.config().paths.state.join("webmail");
    let key = state.join("des_key");
    let m = std::fs::metadata(&key).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 2999, 0o640));
    let k1 = std::fs::read_to_string(&key).unwrap();
    assert_eq!(k1.trim().len(), 24);
    let db = state.join("db/roundcube.sqlite");
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 2999);
    // Debian's package config is never written (nor read by the pool: it cannot).
    let cfg_dir = &w.sb.config().webmail.config_dir;
    assert!(cfg_dir.join("config.inc.php").is_file());
    w.apply();
    assert_eq!(std::fs::read_to_string(&key).unwrap(), k1, "des_key kept");

    // Roundcube's config is sealed: a hand edit is kept (and live), reported, and only
    // `--force` puts dirhost's version back.
    let conf = cfg_dir.join("config.inc.php");
    let original = std::fs::read_to_string(&conf).unwrap();
    let edited = original.replace(
        "'product_name'] = 'Webmail'",
        "'product_name'] = 'Hand made'",
    );
    assert_ne!(edited, original);
    std::fs::write(&conf, &edited).unwrap();
    let out = w.apply();
    let said = stdout(&out) + &stderr(&out);
    assert!(
        said.contains("edited by hand") && said.contains("config.inc.php"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    assert!(w.https(D, "/webmail/", &[]).2.contains("Hand made"));
    w.w.apply(&["--force"]);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), original);

    // config/webmail = false: /webmail/ is the site's own path again (404 here).
    put(&w, D, "config/webmail", "false\n", OWNER);
    w.apply();
    let (status, _, _) = w.https(D, "/webmail/", &[]);
    assert_eq!(status, 404);
    assert_eq!(w.sb.http_get(D, "/webmail/").unwrap().status, 404);
    // The other domain keeps its webmail.
    assert_eq!(w.https(E, "/webmail/", &[]).0, 200);
    // Switched back on by a scoped apply of just that domain (the daemon's path): the shared
    // Roundcube files render the same, only the vhost changes.
    std::fs::remove_file(w.srv().join(D).join("config/webmail")).unwrap();
    let out = w.w.apply(&[D]);
    let said = stdout(&out);
    assert!(
        !said.contains("config.inc.php") && said.contains(&format!("sites-available/{D}.conf")),
        "{said}"
    );
    assert_eq!(w.https(D, "/webmail/", &[]).0, 200);

    // Roundcube never needed anything outside what its pool may read.
    let fpm_log = w.sb.php_fpm_log()
        + &std::fs::read_to_string(w.sb.config().webmail.log_dir.join("errors.log"))
            .unwrap_or_default();
    assert!(
        !fpm_log.contains("open_basedir restriction"),
        "{}",
        tail(&fpm_log)
    );
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_browser_reads_mail_sent_over_smtp_and_sends_mail_to_another_mailbox() {
    let w = world();
    // A message for alice, over SMTP to the real Exim.
    let subject = "Hello from SMTP";
    mail::smtp_send(
        w.smtp_port(),
        "sender@elsewhere.test",
        &[&format!("alice@{D}")],
        &mail::message(
            "sender@elsewhere.test",
            &format!("alice@{D}"),
            subject,
            "Read me in the browser.",
        ),
    )
    .unwrap();
    assert_eq!(
        mail::wait_count(&w.maildir(D, "alice"), 1, WAIT),
        1,
        "{}",
        w.logs()
    );

    let b = Browser::start_with(&[
        Browser::trust_cert_arg(&w.cert_d).unwrap(),
        "--window-size=1400,1000".into(),
    ])
    .unwrap();
    let base = format!("https://{D}:{}/webmail/", w.https_port());
    let shot = |name: &str| {
        let _ = b.screenshot(&w.root().join(format!("{name}.png")));
    };
    let fail = |what: &str, e: anyhow::Error| -> ! {
        shot("failure");
        panic!(
            "{what}: {e:#}\nurl: {:?}\n{}\n--- chromedriver ---\n{}",
            b.current_url(),
            w.logs(),
            tail(&b.driver_log())
        )
    };

    // Plain HTTP is sent to HTTPS, in the browser too.
    b.goto(&format!("http://{D}:{}/webmail/", w.http_port()))
        .unwrap_or_else(|e| fail("goto http", e));
    b.wait_for("#rcmloginuser", WAIT)
        .unwrap_or_else(|e| fail("login form", e));
    assert!(
        b.current_url().unwrap().starts_with(&base),
        "{:?}",
        b.current_url()
    );

    // A wrong password is refused: the login form comes back with an error.
    b.fill("#rcmloginuser", "alice").unwrap();
    b.fill("#rcmloginpwd", "not-her-password").unwrap();
    b.click("#rcmloginsubmit").unwrap();
    b.wait_for_text("Login failed", WAIT)
        .unwrap_or_else(|e| fail("wrong password refused", e));
    b.wait_for("#rcmloginuser", WAIT).unwrap();

    // Another domain's mailbox, with its right password, cannot log in here.
    b.fill("#rcmloginuser", &format!("carol@{E}")).unwrap();
    b.fill("#rcmloginpwd", "carol-secret").unwrap();
    b.click("#rcmloginsubmit").unwrap();
    b.wait_for_text("Login failed", WAIT)
        .unwrap_or_else(|e| fail("another domain's login refused", e));
    b.wait_for("#rcmloginuser", WAIT).unwrap();

    // The right one: the message sent over SMTP is in the inbox.
    b.fill("#rcmloginuser", "alice").unwrap();
    b.fill("#rcmloginpwd", "alice-secret").unwrap();
    b.click("#rcmloginsubmit").unwrap();
    b.wait_for_text(subject, WAIT)
        .unwrap_or_else(|e| fail("message in the inbox", e));
    shot("inbox");

    // Compose one to bob and send it through the real Exim (SMTP AUTH as alice).
    b.goto(&format!("{base}?_task=mail&_action=compose"))
        .unwrap_or_else(|e| fail("compose", e));
    b.wait_for("#compose-subject", WAIT)
        .unwrap_or_else(|e| fail("compose form", e));
    let sent_subject = "Sent from the webmail";
    b.fill("#compose_to .recipient-input input", &format!("bob@{D}, "))
        .unwrap_or_else(|e| fail("recipient", e));
    b.fill("#compose-subject", sent_subject).unwrap();
    b.fill("#composebody", "Typed in Chromium, delivered by Exim.")
        .unwrap();
    shot("compose");
    b.click("button.btn.btn-primary.send")
        .unwrap_or_else(|e| fail("send", e));
    let bob = w.maildir(D, "bob");
    if mail::wait_count(&bob, 1, WAIT) != 1 {
        fail("bob's Maildir", anyhow::anyhow!("no message arrived"));
    }
    let msg = &mail::messages(&bob)[0];
    assert!(msg.contains(&format!("Subject: {sent_subject}")), "{msg}");
    assert!(msg.contains(&format!("From: alice@{D}")), "{msg}");
    assert!(
        msg.contains("Typed in Chromium, delivered by Exim."),
        "{msg}"
    );
    // Exim took it from an authenticated client.
    let mainlog = std::fs::read_to_string(w.root().join("logs/exim/mainlog")).unwrap();
    assert!(
        mainlog.contains(&format!("A=dovecot_plain:alice@{D}"))
            || mainlog.contains(&format!("A=dovecot_login:alice@{D}")),
        "{mainlog}"
    );
}
