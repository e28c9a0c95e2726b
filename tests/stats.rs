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

// ---------------------------------------------------------------------------------------
// Issue 6: statistics.

/// GET over HTTPS with curl, optionally with basic auth; returns (status, body, headers).
fn get(
    sb: &dirhost::sandbox::Sandbox,
    host: &str,
    path: &str,
    ca: &std::path::Path,
    auth: Option<(&str, &str)>,
) -> (u16, String, String) {
    let port = sb.https_port();
    let head = sb.root().join(format!("head-{}", std::process::id()));
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .arg("-D")
        .arg(&head)
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"));
    if let Some((u, p)) = auth {
        cmd.arg("-u").arg(format!("{u}:{p}"));
    }
    let out = cmd
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    (code.trim().parse().unwrap_or(0), body.to_string(), headers)
}

/// A site over HTTPS (self-signed set) with a CA file for curl; returns (cert PEM, CA path).
fn tls_site(
    sb: &dirhost::sandbox::Sandbox,
    domain: &str,
    uid: u32,
) -> (String, std::path::PathBuf) {
    let crt = https_site(sb, domain, uid, &format!("<h1>{domain}</h1>"));
    let ca = sb.root().join(format!("{domain}.ca.pem"));
    std::fs::write(&ca, &crt).unwrap();
    (crt, ca)
}

/// `dirhost ARGS` with `input` on stdin.
fn dirhost_in(sb: &dirhost::sandbox::Sandbox, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .arg("--config")
        .arg(sb.config_path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // The command may have reloaded Apache: wait until the reload has finished.
    if stdout(&out).contains("reloaded") {
        std::thread::sleep(Duration::from_millis(300));
    }
    out
}

/// `dirhost stats enable DOMAIN --user USER` with the password on stdin; must succeed.
fn enable(sb: &dirhost::sandbox::Sandbox, domain: &str, user: &str, pw: &str) {
    let before = sb.apache_generation();
    let out = dirhost_in(
        sb,
        &["stats", "enable", domain, "--user", user],
        &format!("{pw}\n"),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    if stdout(&out).contains("reloaded") {
        sb.wait_apache_generation(before + 1).unwrap();
    }
}

/// A deterministic combined log: `n` requests from `m` visitors (one per /24, so the
/// anonymised addresses stay distinct) on 20 Nov 2026, with one IPv6 visitor among them.
fn make_log(n: usize, m: usize, day: u32) -> (String, Vec<String>) {
    let ips: Vec<String> = (0..m)
        .map(|v| {
            if v == 0 {
                "2001:db8:1234:5678:9abc:def0:1234:5678".to_string()
            } else {
                format!("198.51.{}.{}", v, 100 + v)
            }
        })
        .collect();
    let mut text = String::new();
    for i in 0..n {
        let ip = &ips[i % m];
        text.push_str(&format!(
            "{ip} - - [{day:02}/Nov/2026:{:02}:{:02}:{:02} +0000] \"GET /page{}.html HTTP/1.1\" 200 {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\"\n",
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 7,
            1000 + i
        ));
    }
    (text, ips)
}

/// Apache's log time (`26/Nov/2026:10:00:00 +0000`) for now plus `ahead` seconds.
fn apache_time(ahead: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + ahead;
    let (days, secs) = ((t / 86400) as i64, t % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let names = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        names[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `var json_data={...}` from a GoAccess report page.
fn report_json(html: &str) -> serde_json::Value {
    let start = html
        .find("var json_data=")
        .expect("json_data in the report")
        + 14;
    let mut de =
        serde_json::Deserializer::from_str(&html[start..]).into_iter::<serde_json::Value>();
    de.next().unwrap().unwrap()
}

fn list_row(sb: &dirhost::sandbox::Sandbox, domain: &str) -> serde_json::Value {
    let out = dirhost(sb, &["stats", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == domain)
        .cloned()
        .unwrap_or_else(|| panic!("{domain} not in {rows}"))
}

#[test]
fn stats_are_off_by_default_and_need_a_password_over_https() {
    let sb = sandbox();
    let (_, ca) = tls_site(&sb, "stats.test", OWNER);
    assert!(apply(&sb, &[]).status.success());

    // Off: /stats/ is nobody's business.
    assert_eq!(get(&sb, "stats.test", "/stats/", &ca, None).0, 404);
    assert_eq!(sb.http_get("stats.test", "/stats/").unwrap().status, 404);
    assert_eq!(list_row(&sb, "stats.test")["state"], "off");

    // Asked for, but no password: still off, and apply and check say why.
    put(&sb, "stats.test", "config/stats", "", OWNER);
    let out = apply(&sb, &[]);
    assert!(
        stdout(&out).contains("config/stats-password is missing"),
        "{}",
        stdout(&out)
    );
    let out = dirhost(&sb, &["check", "--no-dns", "--json"]);
    assert!(
        stdout(&out).contains("config/stats-password is missing"),
        "{}",
        stdout(&out)
    );
    assert_eq!(get(&sb, "stats.test", "/stats/", &ca, None).0, 404);
    assert_eq!(list_row(&sb, "stats.test")["state"], "no-password");

    // On.
    enable(&sb, "stats.test", "alice", "s3cret pass");
    let row = list_row(&sb, "stats.test");
    assert_eq!(row["state"], "on", "{row}");
    assert_eq!(row["users"], serde_json::json!(["alice"]));
    // The owner's file holds a bcrypt hash, never the password.
    let file = std::fs::read_to_string(sb.srv().join("stats.test/config/stats-password")).unwrap();
    assert!(
        file.starts_with("alice:$2y$") && !file.contains("s3cret"),
        "{file}"
    );

    let (code, body, _) = get(&sb, "stats.test", "/stats/", &ca, None);
    assert_eq!(code, 401, "{body}\n{}", sb.apache_error_log());
    assert!(!body.contains("json_data"));
    let (code, body, _) = get(&sb, "stats.test", "/stats/", &ca, Some(("alice", "wrong")));
    assert_eq!(code, 401);
    assert!(!body.contains("json_data"));
    let (code, _, _) = get(
        &sb,
        "stats.test",
        "/stats/",
        &ca,
        Some(("bob", "s3cret pass")),
    );
    assert_eq!(code, 401);
    let (code, body, headers) = get(
        &sb,
        "stats.test",
        "/stats/",
        &ca,
        Some(("alice", "s3cret pass")),
    );
    assert_eq!(code, 200, "{body}\n{}", sb.apache_error_log());
    assert!(
        body.contains("Statistics for stats.test"),
        "{}",
        &body[..body.len().min(500)]
    );
    let h = headers.to_ascii_lowercase();
    assert!(h.contains("cache-control: no-store"), "{headers}");
    assert!(h.contains("x-robots-tag: noindex"), "{headers}");
    // /stats without the slash ends up in the same place (after auth).
    let (code, _, _) = get(
        &sb,
        "stats.test",
        "/stats",
        &ca,
        Some(("alice", "s3cret pass")),
    );
    assert!(code == 200 || code == 301, "{code}");

    // Plain HTTP only redirects to HTTPS, never serves the report or asks for the password.
    let r = sb.http_get("stats.test", "/stats/").unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    let want = format!("https://stats.test:{}/stats/", sb.https_port());
    assert_eq!(r.header("location"), Some(want.as_str()));
    assert!(!r.body.contains("json_data"));

    // The served files: outside htdocs, root's, readable by Apache's group only.
    let web = sb.config().paths.state.join("stats/web/stats.test");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(web.join("htpasswd")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o640));
    assert!(!sb.srv().join("stats.test/public/htdocs/stats").exists());

    // Off again: 404, and the report and the auth file are gone.
    let out = dirhost_in(&sb, &["stats", "disable", "stats.test"], "");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(
            &sb,
            "stats.test",
            "/stats/",
            &ca,
            Some(("alice", "s3cret pass"))
        )
        .0,
        404
    );
    assert!(!web.exists(), "{} still there", web.display());
    assert_eq!(list_row(&sb, "stats.test")["state"], "off");
}

#[test]
fn report_numbers_match_a_known_log_incrementally_without_full_addresses() {
    let sb = sandbox();
    let (_, ca) = tls_site(&sb, "count.test", OWNER);
    // A plaintext password written by hand works too.
    put(&sb, "count.test", "config/stats", "", OWNER);
    put(
        &sb,
        "count.test",
        "config/stats-password",
        "carol:plain words 42\n",
        OWNER,
    );
    let (log, ips) = make_log(120, 8, 20);
    put(&sb, "count.test", "public/logs/access.log", &log, OWNER);
    assert!(apply(&sb, &[]).status.success());
    let htpasswd = sb
        .config()
        .paths
        .state
        .join("stats/web/count.test/htpasswd");
    let first = std::fs::read_to_string(&htpasswd).unwrap();
    assert!(first.starts_with("carol:$2y$"), "{first}");
    // Hashing a plaintext password is stable: a second apply keeps the same hash.
    assert!(apply(&sb, &[]).status.success());
    assert_eq!(std::fs::read_to_string(&htpasswd).unwrap(), first);

    let out = dirhost(&sb, &["stats", "generate", "count.test"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("120 requests, 8 visitors"),
        "{}",
        stdout(&out)
    );
    let last = &list_row(&sb, "count.test")["last"];
    assert_eq!(
        (
            last["total_requests"].as_u64(),
            last["unique_visitors"].as_u64()
        ),
        (Some(120), Some(8))
    );

    // Incremental: a new day's lines are added, old ones are not counted twice.
    let (more, _) = make_log(30, 3, 21);
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(sb.srv().join("count.test/public/logs/access.log"))
        .unwrap()
        .write_all(more.as_bytes())
        .unwrap();
    let out = dirhost(&sb, &["stats", "generate"]);
    assert!(
        stdout(&out).contains("150 requests, 11 visitors"),
        "{}",
        stdout(&out)
    );
    let out = dirhost(&sb, &["stats", "generate", "count.test"]);
    assert!(
        stdout(&out).contains("150 requests, 11 visitors"),
        "{}",
        stdout(&out)
    );

    // GoAccess ran as the owner: its database is the owner's.
    use std::os::unix::fs::MetadataExt;
    let db = sb.config().paths.state.join("stats/db/count.test");
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), OWNER);
    for f in std::fs::read_dir(&db).unwrap() {
        assert_eq!(f.unwrap().metadata().unwrap().uid(), OWNER);
    }

    // The served report says the same, and holds no visitor's full address.
    let (code, html, _) = get(
        &sb,
        "count.test",
        "/stats/",
        &ca,
        Some(("carol", "plain words 42")),
    );
    assert_eq!(code, 200, "{}", sb.apache_error_log());
    let data = report_json(&html);
    assert_eq!(data["general"]["total_requests"], 150);
    assert_eq!(data["general"]["unique_visitors"], 11);
    let days: Vec<&str> = data["visitors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["data"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["20261121", "20261120"]);
    for ip in &ips {
        assert!(!html.contains(ip.as_str()), "{ip} in the report");
    }
    assert!(
        html.contains("198.51.3.0"),
        "anonymised addresses are shown"
    );
    let summary = std::fs::read_to_string(
        sb.config()
            .paths
            .state
            .join("stats/web/count.test/summary.json"),
    )
    .unwrap();
    for ip in &ips {
        assert!(!summary.contains(ip.as_str()));
    }

    // Only whole lines are fed: a line the writer is still appending waits for its end.
    // (The requests above are in ssl_access.log too: one run takes them in first.)
    let logs = sb.srv().join("count.test/public/logs");
    let requests = || -> u64 {
        let out = dirhost(&sb, &["stats", "generate", "count.test"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        text.split("count.test: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {text:?}"))
    };
    let before = requests();
    let (line, _) = make_log(1, 1, 22);
    let (head, tail) = line.split_at(line.len() / 2);
    let append = |text: &str| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(logs.join("access.log"))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap()
    };
    append(head);
    assert_eq!(requests(), before, "half a line is not a request yet");
    append(tail);
    assert_eq!(requests(), before + 1, "the completed line counts once");

    // Rotation: access.log becomes access.log.1 (read on from where it was, not again) and
    // a new access.log starts. GoAccess itself skips piped lines older than the newest it
    // has seen, and the requests above were logged with the real clock: these are newer.
    std::fs::rename(logs.join("access.log"), logs.join("access.log.1")).unwrap();
    let fresh: String = (0..5)
        .map(|i| {
            format!(
                "198.51.9.{i} - - [{}] \"GET /new{i}.html HTTP/1.1\" 200 10 \"-\" \"Mozilla/5.0\"\n",
                apache_time(3600 + i)
            )
        })
        .collect();
    put(&sb, "count.test", "public/logs/access.log", &fresh, OWNER);
    assert_eq!(requests(), before + 6);
    assert_eq!(
        requests(),
        before + 6,
        "a run with nothing new adds nothing"
    );
}

#[test]
fn one_domains_credentials_do_not_open_another_domains_stats() {
    let sb = sandbox();
    let (_, ca_a) = tls_site(&sb, "alpha.test", OWNER);
    let (_, ca_b) = tls_site(&sb, "beta.test", OTHER);
    assert!(apply(&sb, &[]).status.success());
    enable(&sb, "alpha.test", "alice", "alpha password");
    enable(&sb, "beta.test", "bob", "beta password");
    assert_eq!(
        get(
            &sb,
            "alpha.test",
            "/stats/",
            &ca_a,
            Some(("alice", "alpha password"))
        )
        .0,
        200
    );
    assert_eq!(
        get(
            &sb,
            "beta.test",
            "/stats/",
            &ca_b,
            Some(("bob", "beta password"))
        )
        .0,
        200
    );
    assert_eq!(
        get(
            &sb,
            "beta.test",
            "/stats/",
            &ca_b,
            Some(("alice", "alpha password"))
        )
        .0,
        401
    );
    assert_eq!(
        get(
            &sb,
            "alpha.test",
            "/stats/",
            &ca_a,
            Some(("bob", "beta password"))
        )
        .0,
        401
    );
    // Even the same user name with the other domain's password.
    put(
        &sb,
        "beta.test",
        "config/stats-password",
        "alice:beta own\n",
        OTHER,
    );
    assert!(apply(&sb, &[]).status.success());
    assert_eq!(
        get(
            &sb,
            "beta.test",
            "/stats/",
            &ca_b,
            Some(("alice", "alpha password"))
        )
        .0,
        401
    );
    assert_eq!(
        get(
            &sb,
            "beta.test",
            "/stats/",
            &ca_b,
            Some(("alice", "beta own"))
        )
        .0,
        200
    );
    // A changed plaintext password replaces the old one.
    put(
        &sb,
        "beta.test",
        "config/stats-password",
        "alice:beta new\n",
        OTHER,
    );
    assert!(apply(&sb, &[]).status.success());
    let beta = |u: &str, p: &str| get(&sb, "beta.test", "/stats/", &ca_b, Some((u, p))).0;
    assert_eq!(beta("alice", "beta own"), 401);
    assert_eq!(beta("alice", "beta new"), 200);
    // beta's owner cannot borrow alpha's password file through a symlink: refused, and
    // beta's statistics are off (not served with somebody else's users).
    let pw = sb.srv().join("beta.test/config/stats-password");
    std::fs::remove_file(&pw).unwrap();
    std::os::unix::fs::symlink(sb.srv().join("alpha.test/config/stats-password"), &pw).unwrap();
    std::os::unix::fs::lchown(&pw, Some(OTHER), Some(OTHER)).unwrap();
    let out = apply(&sb, &[]);
    assert!(stdout(&out).contains("symbolic link"), "{}", stdout(&out));
    let row = list_row(&sb, "beta.test");
    assert_eq!(row["state"], "no-password", "{row}");
    assert_eq!(beta("alice", "alpha password"), 404);
}

/// SECURITY: a customer who points public/logs (or a log file) at another customer's logs
/// gets an error, not the other customer's visitors in their report.
#[test]
fn a_symlink_to_another_domains_logs_is_refused() {
    let sb = sandbox();
    let (_, _) = tls_site(&sb, "victim.test", OTHER);
    let (_, ca) = tls_site(&sb, "attacker.test", OWNER);
    let (log, ips) = make_log(40, 4, 20);
    put(&sb, "victim.test", "public/logs/access.log", &log, OTHER);
    assert!(apply(&sb, &[]).status.success());
    enable(&sb, "attacker.test", "mallory", "mallory pw");

    // The whole directory.
    let logs = sb.srv().join("attacker.test/public/logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::os::unix::fs::symlink(sb.srv().join("victim.test/public/logs"), &logs).unwrap();
    std::os::unix::fs::lchown(&logs, Some(OWNER), Some(OWNER)).unwrap();
    let out = dirhost(&sb, &["stats", "generate", "attacker.test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("symbolic link"), "{}", stdout(&out));

    // One file.
    std::fs::remove_file(&logs).unwrap();
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(OWNER), Some(OWNER)).unwrap();
    let link = logs.join("access.log");
    std::os::unix::fs::symlink(sb.srv().join("victim.test/public/logs/access.log"), &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(OWNER), Some(OWNER)).unwrap();
    let out = dirhost(&sb, &["stats", "generate", "attacker.test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("symbolic link"), "{}", stdout(&out));

    let (code, html, _) = get(
        &sb,
        "attacker.test",
        "/stats/",
        &ca,
        Some(("mallory", "mallory pw")),
    );
    assert_eq!(code, 200);
    for ip in &ips {
        let anon = ip
            .rsplit_once('.')
            .map(|(a, _)| format!("{a}.0"))
            .unwrap_or_default();
        assert!(
            !html.contains(ip.as_str()) && (anon.is_empty() || !html.contains(&anon)),
            "victim's visitor {ip} in the attacker's report"
        );
    }
    let data = if html.contains("var json_data=") {
        report_json(&html)["general"]["total_requests"]
            .as_u64()
            .unwrap_or(0)
    } else {
        0
    };
    assert!(data < 40, "the victim's log was counted: {data}");
}

/// People look at this page in a browser: Chromium logs in and the report renders.
#[test]
fn browser_logs_in_and_the_report_renders() {
    let sb = sandbox();
    let (crt, _) = tls_site(&sb, "view.test", OWNER);
    let (log, _) = make_log(60, 5, 20);
    put(&sb, "view.test", "public/logs/access.log", &log, OWNER);
    assert!(apply(&sb, &[]).status.success());
    enable(&sb, "view.test", "alice", "see the stats");

    let b = Browser::start_with(&[Browser::trust_cert_arg(&crt).unwrap()]).unwrap();
    let port = sb.https_port();
    // Without credentials: Apache's 401 page, no report.
    b.goto(&format!("https://view.test:{port}/stats/")).unwrap();
    assert!(!b.source().unwrap().contains("json_data"));

    b.goto(&format!(
        "https://alice:see%20the%20stats@view.test:{port}/stats/"
    ))
    .unwrap();
    // GoAccess's script renders the overview cards from its embedded data.
    b.wait_for(".wrap-general .grid-module", WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", b.driver_log()));
    b.wait_for_text("Total Requests", WAIT).unwrap();
    let general = b.text(".wrap-general").unwrap();
    assert!(general.contains("60"), "{general}");
    assert_eq!(
        b.execute("return window.json_data.general.unique_visitors;")
            .unwrap(),
        5
    );
    let shot = sb.root().join("stats-report.png");
    b.screenshot(&shot).unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    // To look at it: STATS_SCREENSHOT_DIR=/tmp cargo test --test stats browser_
    if let Some(dir) = std::env::var_os("STATS_SCREENSHOT_DIR") {
        std::fs::copy(&shot, std::path::Path::new(&dir).join("stats-report.png")).unwrap();
    }
}

/// `dirhost watch` as a child, SIGTERMed (by its pid) on drop.
struct Watch(std::process::Child, std::path::PathBuf);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// Polls `f` until it is true (generous timeout; not a timing assertion).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon switches statistics on and off as the owner edits config/, and shows a
/// placeholder (behind the password) until the first report.
#[test]
fn the_daemon_follows_config_stats() {
    let sb = sandbox();
    let (_, ca) = tls_site(&sb, "daemon.test", OWNER);
    assert!(apply(&sb, &[]).status.success());
    let log = sb.root().join("watch.log");
    let w = Watch(
        std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
            .arg("--config")
            .arg(sb.config_path())
            .args(["-v", "watch"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log.clone(),
    );
    let text = || std::fs::read_to_string(&w.1).unwrap_or_default();
    eventually("the daemon is ready", || text().contains("ready: watching"));
    assert!(text().contains("statistics: daily run at"), "{}", text());

    put(
        &sb,
        "daemon.test",
        "config/stats-password",
        "dora:daemon pass\n",
        OWNER,
    );
    put(&sb, "daemon.test", "config/stats", "yes\n", OWNER);
    eventually("/stats/ asks for the password", || {
        get(&sb, "daemon.test", "/stats/", &ca, None).0 == 401
    });
    let (code, body, _) = get(
        &sb,
        "daemon.test",
        "/stats/",
        &ca,
        Some(("dora", "daemon pass")),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("No statistics yet"), "{body}");

    std::fs::remove_file(sb.srv().join("daemon.test/config/stats")).unwrap();
    eventually("/stats/ is gone", || {
        get(
            &sb,
            "daemon.test",
            "/stats/",
            &ca,
            Some(("dora", "daemon pass")),
        )
        .0 == 404
    });
    let web = sb.config().paths.state.join("stats/web/daemon.test");
    eventually("the auth file is removed", || !web.exists());
    drop(w);
}
