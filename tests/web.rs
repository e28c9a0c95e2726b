//! System tests: the real dirhost binary against a real, private Apache on loopback.
//! Nothing here touches a path outside the sandbox's temp root.

mod common;

use std::path::Path;

use common::*;

#[test]
fn new_site_is_served_for_its_name_www_and_a_symlinked_alias() {
    let sb = sandbox();
    sb.add_site("example.test", OWNER, "<h1>hello example</h1>")
        .unwrap();
    sb.add_site("other.test", OTHER, "other site").unwrap();
    std::os::unix::fs::symlink(sb.srv().join("example.test"), sb.srv().join("alias.test")).unwrap();
    std::os::unix::fs::lchown(sb.srv().join("alias.test"), Some(OWNER), Some(OWNER)).unwrap();

    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for host in [
        "example.test",
        "www.example.test",
        "alias.test",
        "www.alias.test",
    ] {
        let r = sb.http_get(host, "/").unwrap();
        assert_eq!(r.status, 200, "{host}: {r:?}\n{}", sb.apache_error_log());
        assert!(r.body.contains("hello example"), "{host}: {}", r.body);
    }
    let r = sb.http_get("other.test", "/").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("other site"));
    // Unknown names hit the default vhost: 404, not somebody's site.
    let r = sb.http_get("unknown.test", "/").unwrap();
    assert_eq!(r.status, 404, "{r:?}");

    // The vhost follows Debian's a2ensite layout.
    let apache = &sb.config().paths.apache;
    assert!(apache.join("sites-available/example.test.conf").is_file());
    assert_eq!(
        std::fs::read_link(apache.join("sites-enabled/example.test.conf")).unwrap(),
        Path::new("../sites-available/example.test.conf")
    );
    // A second apply changes nothing and does not reload.
    let out = apply(&sb, &[]);
    assert!(
        stdout(&out).contains("nothing to change"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("reloaded"));

    // `web list --json` reports the site with its aliases.
    let out = dirhost(&sb, &["web", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ex = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == "example.test")
        .unwrap();
    let aliases: Vec<&str> = ex["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        aliases,
        ["alias.test", "www.alias.test", "www.example.test"]
    );
}

#[test]
fn access_log_is_written_as_the_owner_and_never_through_a_symlink() {
    let sb = sandbox();
    sb.add_site("logs.test", OWNER, "x").unwrap();
    sb.add_site("victim.test", OTHER, "y").unwrap();
    // victim.test's owner plants a symlink where its access log goes, pointing at a file of
    // another user: the writer must refuse it, not append to the target.
    let secret = sb.root().join("secret");
    std::fs::write(&secret, "untouched\n").unwrap();
    put(&sb, "victim.test", "public/logs/placeholder", "", OTHER);
    std::os::unix::fs::symlink(&secret, sb.srv().join("victim.test/public/logs/access.log"))
        .unwrap();
    assert!(apply(&sb, &[]).status.success());
    for host in ["logs.test", "victim.test"] {
        assert_eq!(sb.http_get(host, "/").unwrap().status, 200);
    }
    let log = sb.srv().join("logs.test/public/logs/access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains("\"GET / HTTP/1.1\" 200") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    assert!(text.contains("\"GET / HTTP/1.1\" 200"), "{text}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), OWNER);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "untouched\n");
}

#[test]
fn mandatory_ssl_redirects_to_https_but_not_acme_challenges() {
    let sb = sandbox();
    sb.add_site("secure.test", OWNER, "secret page").unwrap();
    put(&sb, "secure.test", "config/mandatory-ssl", "", OWNER);
    assert!(apply(&sb, &[]).status.success());
    let r = sb.http_get("secure.test", "/some/page?x=1").unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    let want = format!("https://secure.test:{}/some/page?x=1", sb.https_port());
    assert_eq!(r.header("location"), Some(want.as_str()));
    // ACME HTTP-01 still answers on port 80, from dirhost's own challenge directory.
    let acme = sb.config().paths.state.join("acme-challenge");
    std::fs::write(acme.join("tok123"), "tok123.thumb").unwrap();
    let r = sb
        .http_get("secure.test", "/.well-known/acme-challenge/tok123")
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "tok123.thumb");
    // ... for unknown names too.
    let r = sb
        .http_get("not-hosted.test", "/.well-known/acme-challenge/tok123")
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_valid_certificate_set_gets_an_https_vhost_with_hsts() {
    let sb = sandbox();
    sb.add_site("tls.test", OWNER, "over tls").unwrap();
    put(&sb, "tls.test", "config/mandatory-ssl", "", OWNER);
    let (crt, key) = self_signed(sb.root(), &["tls.test", "www.tls.test"], 30);
    put(&sb, "tls.test", "config/ssl/sets/0/ssl.crt", &crt, OWNER);
    put(&sb, "tls.test", "config/ssl/sets/0/ssl.key", &key, OWNER);
    std::os::unix::fs::symlink("sets/0", sb.srv().join("tls.test/config/ssl/current")).unwrap();
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}", stdout(&out));
    let ca = sb.root().join("ca.pem");
    std::fs::write(&ca, &crt).unwrap();
    let (code, body) = https_get(sb.https_port(), "tls.test", "/", &ca);
    assert_eq!(code, 200, "{}", sb.apache_error_log());
    assert!(body.contains("over tls"));
    // Apache reads a root-owned copy, never the customer's files.
    let copy = sb.config().paths.state.join("ssl/tls.test/key.pem");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&copy).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let vhost = std::fs::read_to_string(
        sb.config()
            .paths
            .apache
            .join("sites-available/tls.test.conf"),
    )
    .unwrap();
    assert!(vhost.contains("Strict-Transport-Security"), "{vhost}");

    // A set whose key does not match its certificate is never used: the site keeps its
    // previous (working) certificate, and the problem is reported.
    let served = std::fs::read(&copy).unwrap();
    let (_, other_key) = self_signed(sb.root(), &["tls.test"], 30);
    put(&sb, "tls.test", "config/ssl/sets/1/ssl.crt", &crt, OWNER);
    put(
        &sb,
        "tls.test",
        "config/ssl/sets/1/ssl.key",
        &other_key,
        OWNER,
    );
    std::fs::remove_file(sb.srv().join("tls.test/config/ssl/current")).unwrap();
    std::os::unix::fs::symlink("sets/1", sb.srv().join("tls.test/config/ssl/current")).unwrap();
    let out = apply(&sb, &[]);
    assert!(stdout(&out).contains("not usable"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("using certificate set 0 instead"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(&copy).unwrap(), served);
    let (code, _) = https_get(sb.https_port(), "tls.test", "/", &ca);
    assert_eq!(code, 200, "apache must still serve the old set");
}

#[test]
fn hsts_opt_out() {
    let sb = sandbox();
    sb.add_site("nohsts.test", OWNER, "x").unwrap();
    put(&sb, "nohsts.test", "config/mandatory-ssl", "", OWNER);
    put(&sb, "nohsts.test", "config/no-hsts", "", OWNER);
    let (crt, key) = self_signed(sb.root(), &["nohsts.test", "www.nohsts.test"], 30);
    put(&sb, "nohsts.test", "config/ssl.crt", &crt, OWNER);
    put(&sb, "nohsts.test", "config/ssl.key", &key, OWNER);
    assert!(apply(&sb, &[]).status.success());
    let vhost = std::fs::read_to_string(
        sb.config()
            .paths
            .apache
            .join("sites-available/nohsts.test.conf"),
    )
    .unwrap();
    assert!(vhost.contains("SSLEngine on"), "legacy set used: {vhost}");
    assert!(!vhost.contains("Strict-Transport-Security"), "{vhost}");
}

#[test]
fn removing_htdocs_removes_the_site() {
    let sb = sandbox();
    sb.add_site("gone.test", OWNER, "soon gone").unwrap();
    sb.add_site("stays.test", OWNER, "stays").unwrap();
    assert!(apply(&sb, &[]).status.success());
    assert_eq!(sb.http_get("gone.test", "/").unwrap().status, 200);
    std::fs::remove_dir_all(sb.srv().join("gone.test/public/htdocs")).unwrap();
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(sb.http_get("gone.test", "/").unwrap().status, 404);
    assert_eq!(sb.http_get("stays.test", "/").unwrap().status, 200);
    let apache = &sb.config().paths.apache;
    assert!(!apache.join("sites-available/gone.test.conf").exists());
    assert!(std::fs::symlink_metadata(apache.join("sites-enabled/gone.test.conf")).is_err());
}

#[test]
fn hand_edited_vhost_survives_apply_and_is_reported_with_a_diff() {
    let sb = sandbox();
    sb.add_site("edited.test", OWNER, "original").unwrap();
    assert!(apply(&sb, &[]).status.success());
    let vhost = sb
        .config()
        .paths
        .apache
        .join("sites-available/edited.test.conf");
    let text = std::fs::read_to_string(&vhost).unwrap();
    let edited = text.replacen("<VirtualHost", "# my change\n<VirtualHost", 1);
    std::fs::write(&vhost, &edited).unwrap();
    // Make dirhost want something different: an alias appears.
    std::os::unix::fs::symlink(sb.srv().join("edited.test"), sb.srv().join("alias2.test")).unwrap();
    let out = apply(&sb, &[]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&vhost).unwrap(), edited);
    let so = stdout(&out);
    assert!(so.contains("edited by hand"), "{so}");
    let out = dirhost(&sb, &["apply", "--dry-run", "--diff"]);
    let so = stdout(&out);
    assert!(so.contains("+    ServerAlias alias2.test"), "{so}");
    assert!(so.contains("-# my change"), "{so}");
    // --force replaces it.
    let out = apply(&sb, &["--force"]);
    assert!(out.status.success());
    assert!(
        std::fs::read_to_string(&vhost)
            .unwrap()
            .contains("ServerAlias alias2.test")
    );
    assert_eq!(sb.http_get("alias2.test", "/").unwrap().status, 200);
}

#[test]
fn a_domain_with_an_injected_value_is_skipped_and_the_others_still_serve() {
    let sb = sandbox();
    sb.add_site("good.test", OWNER, "good").unwrap();
    sb.add_site("evil.test", OTHER, "evil").unwrap();
    put(
        &sb,
        "evil.test",
        "config/ip",
        "127.0.0.1:80>\n</VirtualHost>\nInclude /etc/shadow\n<VirtualHost *",
        OTHER,
    );
    let out = apply(&sb, &[]);
    assert_eq!(out.status.code(), Some(1), "a failed domain exits 1");
    let so = stdout(&out);
    assert!(so.contains("skipped evil.test: config/ip"), "{so}");
    assert_eq!(sb.http_get("good.test", "/").unwrap().status, 200);
    assert!(
        !sb.config()
            .paths
            .apache
            .join("sites-available/evil.test.conf")
            .exists()
    );
}

#[test]
fn domains_owned_by_system_users_are_skipped() {
    let sb = sandbox();
    sb.add_site("root.test", 0, "root").unwrap();
    sb.add_site("www-data.test", 33, "www").unwrap();
    sb.add_site("fine.test", OWNER, "fine").unwrap();
    let out = apply(&sb, &[]);
    let so = stdout(&out);
    assert!(so.contains("skipped root.test: owned by uid 0"), "{so}");
    assert!(
        so.contains("skipped www-data.test: owned by uid 33"),
        "{so}"
    );
    assert_eq!(sb.http_get("fine.test", "/").unwrap().status, 200);
    assert_eq!(sb.http_get("root.test", "/").unwrap().status, 404);
}

#[test]
fn a_template_override_that_breaks_apache_leaves_the_previous_config_live() {
    let sb = sandbox();
    sb.add_site("live.test", OWNER, "still live").unwrap();
    assert!(apply(&sb, &[]).status.success());
    let before = std::fs::read_to_string(
        sb.config()
            .paths
            .apache
            .join("sites-available/live.test.conf"),
    )
    .unwrap();
    // The admin overrides the shared template with something Apache rejects.
    let over = sb.config().paths.templates.join("apache");
    std::fs::create_dir_all(&over).unwrap();
    std::fs::write(over.join("dirhost.conf.tera"), "ThisIsNotADirective on\n").unwrap();
    sb.add_site("new.test", OWNER, "new").unwrap();
    let out = apply(&sb, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ThisIsNotADirective"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(
            sb.config()
                .paths
                .apache
                .join("sites-available/live.test.conf")
        )
        .unwrap(),
        before
    );
    assert!(
        !sb.config()
            .paths
            .apache
            .join("sites-available/new.test.conf")
            .exists()
    );
    assert_eq!(sb.http_get("live.test", "/").unwrap().status, 200);
    // Apache still passes its own test: nothing broken was left behind.
    let st = std::process::Command::new("apache2")
        .arg("-f")
        .arg(sb.root().join("httpd.conf"))
        .arg("-t")
        .output()
        .unwrap();
    assert!(st.status.success());
}

#[test]
fn a_domain_whose_config_apache_rejects_is_left_out_and_the_rest_go_live() {
    let sb = sandbox();
    for d in ["a.test", "b.test", "c.test", "d.test", "e.test"] {
        sb.add_site(d, OWNER, d).unwrap();
    }
    // An override that breaks exactly one domain (as a bad per-domain value would).
    let over = sb.config().paths.templates.join("apache");
    std::fs::create_dir_all(&over).unwrap();
    let builtin = dirhost::render::BUILTIN
        .iter()
        .find(|(n, _)| *n == "apache/site.conf.tera")
        .unwrap()
        .1;
    std::fs::write(
        over.join("site.conf.tera"),
        format!("{{% if domain == \"c.test\" %}}BrokenDirective{{% endif %}}\n{builtin}"),
    )
    .unwrap();
    let out = apply(&sb, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("left out c.test"), "{}", stdout(&out));
    for d in ["a.test", "b.test", "d.test", "e.test"] {
        assert_eq!(sb.http_get(d, "/").unwrap().status, 200, "{d}");
    }
    assert_eq!(sb.http_get("c.test", "/").unwrap().status, 404);
    assert!(
        !sb.config()
            .paths
            .apache
            .join("sites-available/c.test.conf")
            .exists()
    );
}

#[test]
fn dry_run_changes_nothing() {
    let sb = sandbox();
    sb.add_site("dry.test", OWNER, "x").unwrap();
    let out = dirhost(&sb, &["apply", "--dry-run"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("would write"), "{}", stdout(&out));
    assert!(
        !sb.config()
            .paths
            .apache
            .join("sites-available/dry.test.conf")
            .exists()
    );
}

#[test]
fn apply_named_domain_only_touches_that_domain() {
    let sb = sandbox();
    sb.add_site("one.test", OWNER, "1").unwrap();
    sb.add_site("two.test", OWNER, "2").unwrap();
    let out = apply(&sb, &["one.test"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let apache = &sb.config().paths.apache;
    assert!(apache.join("sites-available/one.test.conf").exists());
    assert!(!apache.join("sites-available/two.test.conf").exists());
}

#[test]
fn bad_config_file_exits_78() {
    let sb = sandbox();
    let bad = sb.root().join("bad.toml");
    std::fs::write(&bad, "[paths]\nsrv = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .arg("--config")
        .arg(&bad)
        .args(["apply"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
}

#[test]
fn scoped_apply_of_an_alias_updates_its_target() {
    let sb = sandbox();
    sb.add_site("target.test", OWNER, "target").unwrap();
    sb.add_site("bystander.test", OWNER, "b").unwrap();
    assert!(apply(&sb, &["target.test"]).status.success());
    std::os::unix::fs::symlink(sb.srv().join("target.test"), sb.srv().join("newalias.test"))
        .unwrap();
    // The daemon passes the dirty /srv entry's name: here the alias itself.
    let out = apply(&sb, &["newalias.test"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(sb.http_get("newalias.test", "/").unwrap().status, 200);
    // Scoped: the bystander was neither rendered nor pruned.
    assert!(
        !sb.config()
            .paths
            .apache
            .join("sites-available/bystander.test.conf")
            .exists()
    );
}

/// An IPv6-only server behind an IPv4 SNI proxy: the proxy (here 127.0.0.2) must send a
/// PROXY protocol header and Apache then sees the real client; everyone else (127.0.0.1)
/// connects directly as before.
#[test]
fn trusted_proxy_speaks_proxy_protocol_and_direct_clients_still_work() {
    use std::io::{Read, Write};
    let sb = sandbox();
    let mut cfg = sb.config().clone();
    cfg.web.trusted_proxies = vec!["127.0.0.2".into()];
    std::fs::write(sb.config_path(), cfg.to_toml().unwrap()).unwrap();
    sb.add_site("proxied.test", OWNER, "behind a proxy")
        .unwrap();
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // Direct client: unchanged.
    assert_eq!(sb.http_get("proxied.test", "/").unwrap().status, 200);

    // The proxy: from 127.0.0.2, with a PROXY v1 header naming the real client.
    let sock = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{}", sb.http_port()).parse().unwrap(),
        std::time::Duration::from_secs(5),
    );
    drop(sock);
    let s = socket2_connect_from("127.0.0.2", sb.http_port());
    let mut s = s;
    write!(
        s,
        "PROXY TCP4 203.0.113.9 127.0.0.1 40000 {}\r\nGET / HTTP/1.1\r\nHost: proxied.test\r\nConnection: close\r\n\r\n",
        sb.http_port()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // ... and the site's access log records the real client, not the proxy.
    let log = sb.srv().join("proxied.test/public/logs/access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("203.0.113.9") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "log: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Without the header, the proxy's connection is refused by Apache.
    let mut s = socket2_connect_from("127.0.0.2", sb.http_port());
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: proxied.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(!resp.contains("behind a proxy"), "{resp}");
}

/// A TCP connection to 127.0.0.1:port from a chosen loopback source address.
fn socket2_connect_from(src: &str, port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let addr = |ip: &str, port: u16| {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        }
    };
    let local = addr(src, 0);
    let remote = addr("127.0.0.1", port);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe {
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0
        );
    }
    let s = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s
}

/// GET over HTTPS to 127.0.0.1:`port` with `sni` as the name, certificate not verified (the
/// default vhost shows a certificate for another name): (status, body); status 0 when curl
/// failed.
fn https_get_insecure(port: u16, sni: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("{sni}:{port}:127.0.0.1"))
        .arg(format!("https://{sni}:{port}/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn unknown_names_get_the_default_vhost_on_a_specific_address_and_on_https() {
    let sb = sandbox();
    // A site bound to the address Apache listens on (config/ip): Apache would make it the
    // default for every unknown name arriving there.
    sb.add_site("bound.test", OWNER, "bound site").unwrap();
    put(&sb, "bound.test", "config/ip", "127.0.0.1\n", OWNER);
    // A site with HTTPS: without a default on the HTTPS port, an unknown name would get it.
    sb.add_site("tls.test", OTHER, "tls site").unwrap();
    let (crt, key) = self_signed(sb.root(), &["tls.test", "www.tls.test"], 30);
    put(&sb, "tls.test", "config/ssl/sets/0/ssl.crt", &crt, OTHER);
    put(&sb, "tls.test", "config/ssl/sets/0/ssl.key", &key, OTHER);
    std::os::unix::fs::symlink("sets/0", sb.srv().join("tls.test/config/ssl/current")).unwrap();
    let out = apply(&sb, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        sb.apache_error_log()
    );

    let r = sb.http_get("bound.test", "/").unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", sb.apache_error_log());
    assert!(r.body.contains("bound site"));
    let r = sb.http_get("unknown.test", "/").unwrap();
    assert_eq!(r.status, 404, "an unknown name got a site: {r:?}");
    assert!(!r.body.contains("bound site"));
    // ACME challenges still answer on the address's default.
    let token = sb.config().paths.state.join("acme-challenge/tok-123");
    std::fs::write(&token, "tok-123.thumb").unwrap();
    let r = sb
        .http_get("unknown.test", "/.well-known/acme-challenge/tok-123")
        .unwrap();
    assert_eq!((r.status, r.body.trim()), (200, "tok-123.thumb"), "{r:?}");

    let ca = sb.root().join("ca.pem");
    std::fs::write(&ca, &crt).unwrap();
    let (code, body) = https_get(sb.https_port(), "tls.test", "/", &ca);
    assert_eq!(code, 200, "{}", sb.apache_error_log());
    assert!(body.contains("tls site"));
    let (code, body) = https_get_insecure(sb.https_port(), "unknown.test");
    assert_eq!(code, 404, "an unknown name got a site over HTTPS: {body}");
    assert!(!body.contains("tls site"));

    // The default is defined once whatever the number of site files that carry it.
    sb.add_site("tls2.test", OTHER, "tls2 site").unwrap();
    let (crt2, key2) = self_signed(sb.root(), &["tls2.test"], 30);
    put(&sb, "tls2.test", "config/ssl.crt", &crt2, OTHER);
    put(&sb, "tls2.test", "config/ssl.key", &key2, OTHER);
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}", sb.apache_error_log());
    let (code, _) = https_get_insecure(sb.https_port(), "unknown.test");
    assert_eq!(code, 404);
    let (code, body) = https_get_insecure(sb.https_port(), "tls2.test");
    assert_eq!((code, body.contains("tls2 site")), (200, true), "{body}");
}

#[test]
fn directories_apply_creates_have_explicit_modes_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let sb = sandbox();
    sb.add_site("tls.test", OWNER, "x").unwrap();
    let (crt, key) = self_signed(sb.root(), &["tls.test"], 30);
    put(&sb, "tls.test", "config/ssl.crt", &crt, OWNER);
    put(&sb, "tls.test", "config/ssl.key", &key, OWNER);
    let ssl = sb.config().paths.state.join("ssl");
    let _ = std::fs::remove_dir_all(&ssl);
    // Apache (www-data) reads ACME challenges from here: it must stay 0755.
    let acme = sb.config().paths.state.join("acme-challenge");
    let _ = std::fs::remove_dir_all(&acme);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" --config \"$1\" apply")
        .arg(env!("CARGO_BIN_EXE_dirhost"))
        .arg(sb.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&ssl), 0o700);
    assert_eq!(mode(&ssl.join("tls.test")), 0o700);
    let key_copy = ssl.join("tls.test/key.pem");
    assert_eq!(mode(&key_copy), 0o600);
    assert_eq!(mode(&acme), 0o755);
}

#[test]
fn broken_certificate_sets_without_current_are_reported() {
    let sb = sandbox();
    sb.add_site("broken.test", OWNER, "x").unwrap();
    put(
        &sb,
        "broken.test",
        "config/ssl/sets/0/ssl.crt",
        "not a certificate\n",
        OWNER,
    );
    put(
        &sb,
        "broken.test",
        "config/ssl/sets/0/ssl.key",
        "not a key\n",
        OWNER,
    );
    let out = apply(&sb, &[]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("certificate set 0"), "{text}");
    // The site is still served over HTTP.
    assert_eq!(sb.http_get("broken.test", "/").unwrap().status, 200);
}
