//! Web statistics (issue 6) against the real private Apache, and the headless-Chromium
//! driver's own self-test (`tests/common/browser.rs`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::Browser;
use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// A site over HTTPS with a self-signed set; returns the certificate PEM.
fn https_site(sb: &dirhost::sandbox::Sandbox, domain: &str, uid: u32, body: &str) -> String {
    sb.add_site(domain, uid, body).unwrap();
    let www = format!("www.{domain}");
    let (crt, key) = self_signed(sb.root(), &[domain, &www], 30);
    put(sb, domain, "config/ssl/sets/0/ssl.crt", &crt, uid);
    put(sb, domain, "config/ssl/sets/0/ssl.key", &key, uid);
    std::os::unix::fs::symlink("sets/0", sb.srv().join(domain).join("config/ssl/current")).unwrap();
    crt
}

/// The driver itself: HTTPS trusted by SPKI pin, forms, clicks, script, text, source,
/// screenshots, and both ways of doing HTTP basic auth (Apache's own .htaccess auth).
#[test]
fn browser_driver_self_test() {
    let sb = sandbox();
    let crt = https_site(
        &sb,
        "browser.test",
        OWNER,
        r#"<!doctype html><html><head><title>self test</title></head><body>
<h1 id="h">driver page</h1>
<input id="name" value="old"><button id="go" onclick="document.getElementById('out').textContent = 'hello ' + document.getElementById('name').value">go</button>
<p id="out"></p>
<script>setTimeout(function(){var d=document.createElement('div');d.id='late';d.textContent='arrived late';document.body.appendChild(d);}, 300);</script>
</body></html>"#,
    );
    let hash = std::process::Command::new("htpasswd")
        .args(["-nbB", "alice", "s3cret pass"])
        .output()
        .unwrap();
    assert!(hash.status.success());
    put(
        &sb,
        "browser.test",
        "public/private.htpasswd",
        &String::from_utf8_lossy(&hash.stdout),
        OWNER,
    );
    let pw_file = sb.srv().join("browser.test/public/private.htpasswd");
    std::fs::set_permissions(
        &pw_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    put(
        &sb,
        "browser.test",
        "public/htdocs/private/.htaccess",
        &format!(
            "AuthType Basic\nAuthName \"self test\"\nAuthUserFile \"{}\"\nRequire valid-user\n",
            pw_file.display()
        ),
        OWNER,
    );
    put(
        &sb,
        "browser.test",
        "public/htdocs/private/index.html",
        "<html><body><p id=\"secret\">behind basic auth</p></body></html>",
        OWNER,
    );
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    let b = Browser::start_with(&[Browser::trust_cert_arg(&crt).unwrap()]).unwrap();
    let base = format!("https://browser.test:{}", sb.https_port());
    b.goto(&format!("{base}/")).unwrap();
    assert_eq!(b.current_url().unwrap(), format!("{base}/"));
    assert_eq!(b.text("#h").unwrap(), "driver page");
    b.fill("#name", "world").unwrap();
    b.click("#go").unwrap();
    b.wait_for_text("hello world", WAIT).unwrap();
    assert_eq!(b.text("#out").unwrap(), "hello world");
    b.wait_for("#late", WAIT).unwrap();
    assert!(b.source().unwrap().contains("arrived late"));
    assert_eq!(b.execute("return document.title;").unwrap(), "self test");
    assert_eq!(b.execute("return 6 * 7;").unwrap(), 42);
    assert!(b.wait_for("#never", Duration::from_millis(300)).is_err());
    assert!(b.text("#never").is_err());
    let shot = b.dir().join("page.png");
    b.screenshot(&shot).unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    // Plain HTTP works too (same resolver rule).
    b.goto(&format!("http://browser.test:{}/", sb.http_port()))
        .unwrap();
    assert_eq!(b.text("#h").unwrap(), "driver page");

    // Basic auth: without credentials Apache's 401 page, never the content.
    b.goto(&format!("{base}/private/")).unwrap();
    assert!(!b.source().unwrap().contains("behind basic auth"));
    // Credentials in the top-level URL.
    let with_creds = format!(
        "https://alice:s3cret%20pass@browser.test:{}/private/",
        sb.https_port()
    );
    b.goto(&with_creds).unwrap();
    assert_eq!(b.text("#secret").unwrap(), "behind basic auth");

    // A header through CDP, in a fresh browser (no cached credentials).
    drop(b);
    let b = Browser::start_with(&[Browser::trust_cert_arg(&crt).unwrap()]).unwrap();
    b.basic_auth("alice", "wrong").unwrap();
    b.goto(&format!("{base}/private/")).unwrap();
    assert!(!b.source().unwrap().contains("behind basic auth"));
    b.basic_auth("alice", "s3cret pass").unwrap();
    b.goto(&format!("{base}/private/")).unwrap();
    assert_eq!(b.text("#secret").unwrap(), "behind basic auth");

    // Without the pin, a self-signed certificate is refused.
    drop(b);
    let b = Browser::start().unwrap();
    let _ = b.goto(&format!("{base}/"));
    assert!(
        !b.source().unwrap().contains("driver page"),
        "an unpinned self-signed certificate must not be accepted"
    );
}
