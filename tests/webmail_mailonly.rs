//! Webmail for a domain that has mailboxes but no website (issue 12: "for every domain that
//! has mailboxes"): the webmail-only vhost (`templates/apache/webmail-site.conf.tera`),
//! against the real servers: the sandbox's Apache, a private PHP-FPM running Roundcube, the
//! private Exim and Dovecot, Debian's Pebble as the ACME CA (HTTP-01 answered through the
//! mail-only vhost) and a headless Chromium. Nothing here touches a path outside the
//! sandbox's and Pebble's temp roots.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/mail.rs"]
mod mail;
#[path = "common/pebble.rs"]
mod pebble;
#[path = "common/php.rs"]
mod php_fpm;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use dirhost::acme::{self, Action};
use dirhost::sandbox::Sandbox;
use mail::{add_mail_domain, add_mailbox, mail_world_with};
use pebble::Pebble;
use php_fpm::PhpFpm;

/// The mail-only domain (mailboxes, no public/htdocs).
const D: &str = "mailonly.test";

const WAIT: Duration = Duration::from_secs(30);

fn tail(s: &str) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(30)..].join("\n")
}

/// curl `https://<host>:<port><path>` trusting `ca`, without following redirects:
/// (status, headers, body).
fn https(sb: &Sandbox, ca: &Path, host: &str, path: &str) -> (u16, String, String) {
    let port = sb.https_port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "-o", "-", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {host}{path}: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn vhost(sb: &Sandbox, domain: &str) -> Option<String> {
    let p = sb
        .config()
        .paths
        .apache
        .join(format!("sites-available/{domain}.conf"));
    std::fs::read_to_string(p).ok()
}

fn enabled(sb: &Sandbox, domain: &str) -> bool {
    let p = sb
        .config()
        .paths
        .apache
        .join(format!("sites-enabled/{domain}.conf"));
    std::fs::symlink_metadata(p).is_ok()
}

/// Waits (bounded) until `path` contains `needle`; returns what it holds.
fn wait_contains(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_mail_only_domain_gets_a_certificate_and_its_own_webmail() {
    // Apache, Exim and Dovecot, PHP-FPM for Roundcube, and Pebble validating against Apache.
    let mut w = mail_world_with(|cfg| cfg.webmail.enabled = true);
    let _fpm = PhpFpm::start(&mut w.sb);
    let pebble = Pebble::start(w.http_port(), None);
    let cfg = pebble.configure(&w.sb);
    let logs = |w: &mail::MailWorld| {
        format!(
            "--- apache ---\n{}\n--- php-fpm ---\n{}\n--- roundcube ---\n{}\n{}",
            tail(&w.sb.apache_error_log()),
            tail(&w.sb.php_fpm_log()),
            tail(
                &std::fs::read_to_string(cfg.webmail.log_dir.join("errors.log"))
                    .unwrap_or_default()
            ),
            w.servers.logs()
        )
    };
    let apply = |w: &mail::MailWorld| {
        let php = w.sb.php_fpm_generation();
        let out = w.apply(&[]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        if stdout(&out).contains("reloaded Php") {
            w.sb.wait_php_fpm_generation(php + 1).unwrap();
        }
        out
    };

    // The mail-only domain: a mailbox made with mkdir, a password, no public/htdocs. And
    // one whose webmail is off.
    add_mail_domain(&w, D, OWNER);
    add_mailbox(&w, D, "brian", Some("brian-secret"), OWNER);
    add_mail_domain(&w, "off.test", OTHER);
    add_mailbox(&w, "off.test", "otto", Some("otto-secret"), OTHER);
    put(&w, "off.test", "config/webmail", "false\n", OTHER);
    apply(&w);
    assert!(!w.srv().join(D).join("public/htdocs").exists());
    let v = vhost(&w, D).expect("a vhost for the mail-only domain");
    assert!(v.contains("webmail-site.conf.tera"), "{v}");
    assert!(!v.contains("SSLEngine"), "no certificate yet:\n{v}");
    assert_eq!(vhost(&w, "off.test"), None, "config/webmail = false");
    // No PHP pool of the domain's own.
    assert!(!cfg.php.pool_dir.join(format!("{D}.conf")).exists());

    // Before the certificate: port 80 already sends visitors to the webmail over HTTPS.
    let r = w.sb.http_get(D, "/").unwrap();
    assert_eq!(r.status, 302, "{r:?}");
    let to_webmail = format!("https://{D}:{}/webmail/", w.https_port());
    assert_eq!(r.header("location"), Some(to_webmail.as_str()));

    // The ACME maintainer orders the mail-only domain's certificate from the real Pebble;
    // the webmail-off domain has no vhost, so nothing is ordered for it.
    let t0 = dirhost::reconcile::now();
    let before = w.sb.apache_generation();
    let report = acme::maintain_with(
        &cfg,
        w.sb.config_path(),
        t0,
        &acme::Options {
            only: Some(BTreeSet::from([D.to_string(), "off.test".to_string()])),
            force: false,
        },
    )
    .unwrap();
    let o = report.get(D).unwrap();
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    assert_eq!(report.reconcile_error, None);
    let off = report.get("off.test").unwrap();
    assert_eq!(off.action, Action::Skipped, "{off:?}");
    w.sb.wait_apache_generation(before + 1).unwrap();
    // Pebble's HTTP-01 request was answered by the mail-only vhost: Apache logged it under
    // that vhost's name (the log writer files it in the domain's own access log), 200.
    let access = w.srv().join(D).join("public/logs/access.log");
    let log = wait_contains(&access, "/.well-known/acme-challenge/");
    let line = log
        .lines()
        .find(|l| l.contains("GET /.well-known/acme-challenge/"))
        .unwrap_or_else(|| panic!("no challenge request in {D}'s access log:\n{log}"));
    assert!(line.contains("\" 200 "), "{line}");
    // And the certificate set is live: the vhost now has HTTPS.
    let v = vhost(&w, D).unwrap();
    assert!(
        v.contains("SSLEngine on") && v.contains("Alias /webmail/"),
        "{v}"
    );
    let leaf = std::fs::read_to_string(w.srv().join(D).join("config/ssl/sets/0/ssl.crt")).unwrap();
    // `dirhost ssl list` shows it like a site's.
    let list = dirhost(&w, &["ssl", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == D)
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(row["live"], "0", "{row}");

    // HTTPS, verified against Pebble's root: Roundcube's login page through the real Apache
    // and the webmail pool, for the name and its www. alias.
    let roots = pebble.roots();
    for host in [D.to_string(), format!("www.{D}")] {
        let (status, head, page) = https(&w, &roots, &host, "/webmail/");
        assert_eq!(status, 200, "{host}: {head}{page}\n{}", logs(&w));
        assert!(page.contains("rcmloginuser"), "{page}");
    }
    // / goes to the webmail; anything else is 404.
    let (status, head, _) = https(&w, &roots, D, "/");
    assert_eq!(status, 302, "{head}");
    assert_eq!(
        header(&head, "location"),
        Some(to_webmail.as_str()),
        "{head}"
    );
    for path in [
        "/anything-else",
        "/index.html",
        "/webmailx",
        "/.well-known/acme-challenge/x",
    ] {
        assert_eq!(https(&w, &roots, D, path).0, 404, "{path}");
    }
    // Plain HTTP: to the webmail over HTTPS (a /webmail path keeps its path).
    let r = w.sb.http_get(D, "/").unwrap();
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some(to_webmail.as_str()))
    );
    let r = w.sb.http_get(D, "/webmail/?_task=mail").unwrap();
    let want = format!("https://{D}:{}/webmail/?_task=mail", w.https_port());
    assert_eq!((r.status, r.header("location")), (301, Some(want.as_str())));

    // A file the customer (or an attacker with their account) puts under public/ but not
    // in htdocs is never served, over either protocol.
    put(&w, D, "public/evil.html", "EVIL CONTENT", OWNER);
    put(
        &w,
        D,
        "public/evil.php",
        "<?php echo 'EVIL' . 'RAN';",
        OWNER,
    );
    for path in [
        "/evil.html",
        "/public/evil.html",
        "/evil.php",
        "/logs/access.log",
        "/webmail/../evil.html",
    ] {
        let (status, _, body) = https(&w, &roots, D, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("EVIL"), "{path}: {body}");
        let r = w.sb.http_get(D, path).unwrap();
        assert!(matches!(r.status, 301 | 302 | 404), "{path}: {r:?}");
        assert!(!r.body.contains("EVIL"), "{path}: {r:?}");
    }
    // An apply with the stray files changes nothing (public/ without htdocs is no site).
    let out = apply(&w);
    assert!(
        stdout(&out).contains("nothing to change"),
        "{}",
        stdout(&out)
    );

    // The real browser: log in as brian@<domain> at the mail-only domain's own /webmail/ and
    // see a message that came in over SMTP in the inbox.
    let subject = "For the mail-only domain";
    mail::smtp_send(
        w.smtp_port(),
        "sender@elsewhere.test",
        &[&format!("brian@{D}")],
        &mail::message(
            "sender@elsewhere.test",
            &format!("brian@{D}"),
            subject,
            "Read me in the webmail of a domain without a website.",
        ),
    )
    .unwrap();
    assert_eq!(
        mail::wait_count(&w.maildir(D, "brian"), 1, WAIT),
        1,
        "{}",
        logs(&w)
    );
    let b = Browser::start_with(&[Browser::trust_cert_arg(&leaf).unwrap()]).unwrap();
    let fail = |what: &str, e: anyhow::Error| -> ! {
        let _ = b.screenshot(&w.root().join("failure.png"));
        panic!(
            "{what}: {e:#}\nurl: {:?}\n{}\n--- chromedriver ---\n{}",
            b.current_url(),
            logs(&w),
            tail(&b.driver_log())
        )
    };
    // From the bare domain over plain HTTP: redirected to the HTTPS login form.
    b.goto(&format!("http://{D}:{}/", w.http_port()))
        .unwrap_or_else(|e| fail("goto", e));
    b.wait_for("#rcmloginuser", WAIT)
        .unwrap_or_else(|e| fail("login form", e));
    assert!(
        b.current_url().unwrap().starts_with(&to_webmail),
        "{:?}",
        b.current_url()
    );
    b.fill("#rcmloginuser", &format!("brian@{D}")).unwrap();
    b.fill("#rcmloginpwd", "brian-secret").unwrap();
    b.click("#rcmloginsubmit").unwrap();
    b.wait_for_text(subject, WAIT)
        .unwrap_or_else(|e| fail("the message in the inbox", e));
}

/// A sandbox with webmail on (no server but Apache is needed to decide which vhost exists
/// and to serve port 80).
fn webmail_sandbox() -> Sandbox {
    let mut sb = sandbox();
    let mut cfg = sb.config().clone();
    cfg.webmail.enabled = true;
    sb.set_config(cfg).unwrap();
    sb
}

fn apply_ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = apply(sb, args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    stdout(&out)
}

#[test]
fn the_vhost_follows_mailboxes_htdocs_and_the_switch() {
    let sb = webmail_sandbox();
    // Webmail off for a mail-only domain: no vhost at all.
    add_mail_domain(&sb, "off.test", OWNER);
    add_mailbox(&sb, "off.test", "otto", None, OWNER);
    put(&sb, "off.test", "config/webmail", "false\n", OWNER);
    // A mail-only domain with webmail.
    add_mail_domain(&sb, D, OWNER);
    add_mailbox(&sb, D, "brian", None, OWNER);
    apply_ok(&sb, &[]);
    assert_eq!(vhost(&sb, "off.test"), None);
    assert!(!enabled(&sb, "off.test"));
    assert!(vhost(&sb, D).unwrap().contains("webmail-site.conf.tera"));
    assert!(enabled(&sb, D));
    assert_eq!(sb.http_get(D, "/").unwrap().status, 302);

    // The domain gets a website: the same file becomes a normal site's vhost.
    let htdocs = sb.srv().join(D).join("public/htdocs");
    put(&sb, D, "public/htdocs/index.html", "now a website", OWNER);
    apply_ok(&sb, &[]);
    let v = vhost(&sb, D).unwrap();
    assert!(
        v.contains("site.conf.tera") && v.contains("public/htdocs"),
        "{v}"
    );
    assert!(enabled(&sb, D));
    assert_eq!(sb.http_get(D, "/").unwrap().body, "now a website");
    // And back (htdocs removed while the mailbox stays): webmail only again.
    std::fs::remove_dir_all(&htdocs).unwrap();
    apply_ok(&sb, &[D]);
    assert!(vhost(&sb, D).unwrap().contains("webmail-site.conf.tera"));
    assert_eq!(sb.http_get(D, "/").unwrap().status, 302);

    // config/webmail = false on it: its vhost and link go, like a removed site's.
    put(&sb, D, "config/webmail", "false\n", OWNER);
    apply_ok(&sb, &[]);
    assert_eq!(vhost(&sb, D), None);
    assert!(!enabled(&sb, D));
    std::fs::remove_file(sb.srv().join(D).join("config/webmail")).unwrap();
    apply_ok(&sb, &[]);
    assert!(vhost(&sb, D).is_some() && enabled(&sb, D));

    // Its last mailbox removed (mailboxes/ stays, empty): the vhost and link go, in a
    // scoped apply (the daemon's path) as in a full one. Its mail settings stay.
    std::fs::remove_dir_all(sb.srv().join(D).join("mailboxes/brian")).unwrap();
    let said = apply_ok(&sb, &[D]);
    assert!(
        said.contains(&format!("sites-available/{D}.conf")),
        "{said}"
    );
    assert_eq!(vhost(&sb, D), None);
    assert!(!enabled(&sb, D));
    // Apache no longer knows the name: the shared default answers 404.
    assert_eq!(sb.http_get(D, "/").unwrap().status, 404);
    // Nothing left to do.
    assert!(apply_ok(&sb, &[]).contains("nothing to change"));

    // A hand-edited webmail-only vhost is kept when its domain stops wanting it.
    add_mailbox(&sb, D, "brian", None, OWNER);
    apply_ok(&sb, &[]);
    let path = sb
        .config()
        .paths
        .apache
        .join(format!("sites-available/{D}.conf"));
    let edited = format!("# mine\n{}", std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, &edited).unwrap();
    std::fs::remove_dir_all(sb.srv().join(D).join("mailboxes/brian")).unwrap();
    let said = apply_ok(&sb, &[]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited, "{said}");
}
