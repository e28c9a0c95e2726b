//! `dirhost check` against a fixture tree built to have every problem the doctor knows,
//! besides the skipped domains and hand-edited files of tests/cli.rs: a service that is not
//! installed, a web port and the mail ports with nothing listening, too few inotify watches,
//! names that do not point here (Pebble's DNS server as the resolver), a failed certificate
//! order, a certificate about to expire, and a site with no certificate yet. Each finding
//! names its fix, and check exits 1.

mod common;
#[path = "common/pebble.rs"]
mod pebble;

use common::*;

#[test]
fn check_finds_every_kind_of_problem_and_names_each_fix() {
    let sb = sandbox();
    let dns = pebble::Pebble::start(sb.http_port(), None);
    let mut cfg = dns.configure(&sb);
    sb.add_site("here.test", OWNER, "ok").unwrap();
    sb.add_site("away.test", OWNER, "x").unwrap();
    dns.add_a("away.test", "192.0.2.7");
    dns.add_a("www.away.test", "192.0.2.7");
    sb.add_site("expiring.test", OWNER, "x").unwrap();
    let (crt, key) = self_signed(sb.root(), &["expiring.test", "www.expiring.test"], 3);
    put(&sb, "expiring.test", "config/ssl.crt", &crt, OWNER);
    put(&sb, "expiring.test", "config/ssl.key", &key, OWNER);
    put(
        &sb,
        "here.test",
        "mailboxes/bob/password",
        "a long password\n",
        OWNER,
    );
    assert!(apply(&sb, &[]).status.success());

    // A failed order: away.test's names point elsewhere.
    let out = dirhost(&sb, &["ssl", "renew", "away.test"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The servers' side: Exim's test program missing, HTTPS moved to a port where nothing
    // listens, and a watch limit far below what 3 domains need.
    cfg.commands.exim_test = vec!["/nonexistent/exim4".into(), "-bV".into()];
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = unused.local_addr().unwrap().port();
    drop(unused);
    cfg.ports.https = closed;
    cfg.watch.max_watches = Some(3);
    pebble::write_config(&sb, &cfg);

    let out = dirhost(&sb, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |check: &str, domain: Option<&str>, needle: &str| {
        findings
            .iter()
            .find(|f| {
                f["check"] == check
                    && domain.is_none_or(|d| f["domain"] == d)
                    && f["message"].as_str().unwrap().contains(needle)
            })
            .unwrap_or_else(|| panic!("no {check} finding with {needle:?}: {findings:#?}"))
            .clone()
    };
    let fix = |f: &serde_json::Value| f["fix"].as_str().unwrap().to_string();

    let f = find("services", None, "`/nonexistent/exim4`");
    assert_eq!(f["severity"], "error");
    assert!(
        fix(&f).contains("apt-get install exim4-daemon-heavy"),
        "{f}"
    );
    let f = find("ports", None, &format!("https port {closed}"));
    assert_eq!(f["severity"], "error");
    assert!(fix(&f).contains("start Apache"), "{f}");
    find("ports", None, "http port"); // the sandbox's Apache answers on http
    let f = find("services", None, "nothing answers on SMTP (Exim)");
    assert!(fix(&f).contains("systemctl start exim4"), "{f}");
    find("services", None, "nothing answers on IMAPS (Dovecot)");
    let f = find("inotify", None, "[watch] max_watches is 3");
    assert_eq!(f["severity"], "error");
    assert!(fix(&f).contains("max_watches"), "{f}");

    let f = find("dns", Some("away.test"), "away.test");
    assert_eq!(f["severity"], "warning");
    assert!(f["message"].as_str().unwrap().contains("192.0.2.7"), "{f}");
    assert!(
        fix(&f).contains("point the A/AAAA records of away.test"),
        "{f}"
    );
    let f = find("dns", Some("here.test"), "here.test resolves to this host");
    assert_eq!(f["severity"], "ok");

    let f = find(
        "certificates",
        Some("away.test"),
        "the last certificate order failed",
    );
    assert_eq!(f["severity"], "error");
    assert!(
        fix(&f).contains("dirhost ssl renew away.test --force"),
        "{f}"
    );
    let f = find("certificates", Some("expiring.test"), "expires");
    assert_eq!(f["severity"], "error");
    assert!(fix(&f).contains("dirhost ssl renew expiring.test"), "{f}");
    let f = find("certificates", Some("here.test"), "no certificate yet");
    assert!(fix(&f).contains("dirhost ssl renew here.test"), "{f}");

    for f in &findings {
        assert!(
            f["severity"] == "ok" || !fix(f).is_empty(),
            "every problem names its fix: {f}"
        );
    }

    // One domain: only its findings (and the host's).
    let out = dirhost(&sb, &["check", "here.test", "--json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.iter()
            .all(|f| f["domain"].is_null() || f["domain"] == "here.test"),
        "{v:#?}"
    );
}
