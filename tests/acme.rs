//! HTTPS by itself: the real dirhost binary and library against Debian's Pebble (a real ACME
//! CA, with pebble-challtestsrv as its DNS), validating HTTP-01 against the sandbox's real
//! Apache. Nothing here touches a path outside the sandbox and Pebble temp dirs.

mod common;
#[path = "common/mail.rs"]
mod mailh;
#[path = "common/pebble.rs"]
mod pebble;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dirhost::acme::{self, Action, Options};
use dirhost::config::Config;
use dirhost::model;
use dirhost::sandbox::Sandbox;
use pebble::Pebble;

const DAY: i64 = 86_400;

fn now() -> i64 {
    dirhost::reconcile::now()
}

/// A sandbox with Apache running, a Pebble validating against it, and the config for both.
fn world(validity: Option<u64>) -> (Sandbox, Pebble, Config) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_test_writer()
        .try_init();
    let sb = sandbox();
    let pebble = Pebble::start(sb.http_port(), validity);
    let cfg = pebble.configure(&sb);
    // The shared configuration (ACME challenges on port 80 for every name) is live from the
    // first apply on, as on an installed server.
    assert!(apply(&sb, &[]).status.success());
    (sb, pebble, cfg)
}

fn only(domain: &str) -> Options {
    Options {
        only: Some(BTreeSet::from([domain.to_string()])),
        force: false,
    }
}

/// Runs one maintain pass for `domain` at `at`, waiting for the Apache reload it triggers.
fn pass(sb: &Sandbox, cfg: &Config, domain: &str, at: i64) -> acme::Outcome {
    let before = sb.apache_generation();
    let report = acme::maintain_with(cfg, sb.config_path(), at, &only(domain)).unwrap();
    let o = report.get(domain).unwrap().clone();
    if matches!(o.action, Action::Issued | Action::Renewed) {
        assert_eq!(report.reconcile_error, None);
        sb.wait_apache_generation(before + 1).unwrap();
    }
    o
}

fn current(sb: &Sandbox, domain: &str) -> Option<PathBuf> {
    std::fs::read_link(sb.srv().join(domain).join("config/ssl/current")).ok()
}

/// The serial (lower-case hex) of the certificate Apache serves for `host`.
fn served_serial(sb: &Sandbox, host: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} -servername {host} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial",
            sb.https_port()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

fn set_serial(sb: &Sandbox, domain: &str, set: &str) -> String {
    let path = sb
        .srv()
        .join(domain)
        .join(format!("config/ssl/sets/{set}/ssl.crt"));
    let pem = dirhost::certs::parse_pem(&std::fs::read(path).unwrap()).unwrap();
    dirhost::certs::cert_info(&pem.certs[0]).unwrap().serial_hex
}

fn state_json(cfg: &Config, domain: &str) -> serde_json::Value {
    let p = cfg.paths.state.join(format!("acme/domains/{domain}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn ssl_list(sb: &Sandbox) -> Vec<serde_json::Value> {
    let out = dirhost(sb, &["ssl", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [serde_json::Value], domain: &str) -> &'a serde_json::Value {
    rows.iter().find(|r| r["domain"] == domain).unwrap()
}

#[test]
fn mkdir_then_ssl_renew_gives_https_with_the_pebble_chain() {
    let (sb, pebble, cfg) = world(None);
    // A hook that records what it was told.
    let hooks = &cfg.acme.hooks_dir;
    std::fs::create_dir_all(hooks).unwrap();
    let record = sb.root().join("hook.out");
    std::fs::write(
        hooks.join("10-record"),
        format!(
            "#!/bin/sh\necho \"$1\" >> {0}\ncat >> {0}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        hooks.join("10-record"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    sb.add_site("tls.test", OWNER, "hello over tls").unwrap();
    assert!(apply(&sb, &[]).status.success());
    // Until the first certificate, the site is on port 80 only.
    assert_eq!(sb.http_get("tls.test", "/").unwrap().status, 200);

    let before = sb.apache_generation();
    let out = dirhost(&sb, &["ssl", "renew", "tls.test"]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        pebble.log()
    );
    assert!(
        stdout(&out).contains("tls.test: issued set 0"),
        "{}",
        stdout(&out)
    );
    sb.wait_apache_generation(before + 1).unwrap();

    // Sympl's layout, owned by the domain's owner, the key private.
    let set = sb.srv().join("tls.test/config/ssl/sets/0");
    for (file, mode) in [
        ("ssl.key", 0o600),
        ("ssl.crt", 0o644),
        ("ssl.bundle", 0o644),
        ("ssl.combined", 0o600),
    ] {
        let md = std::fs::metadata(set.join(file)).unwrap();
        assert_eq!((md.uid(), md.gid()), (OWNER, OWNER), "{file}");
        assert_eq!(md.mode() & 0o777, mode, "{file}");
    }
    assert_eq!(current(&sb, "tls.test"), Some(PathBuf::from("sets/0")));
    let combined = std::fs::read_to_string(set.join("ssl.combined")).unwrap();
    assert_eq!(combined.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(combined.contains("PRIVATE KEY"));

    // HTTPS, verified against Pebble's root, for the name and its www. alias.
    for host in ["tls.test", "www.tls.test"] {
        let (status, body) = https_get(sb.https_port(), host, "/", &pebble.roots());
        assert_eq!(
            (status, body.as_str()),
            (200, "hello over tls"),
            "{host}\n{}",
            sb.apache_error_log()
        );
    }
    // The challenge files are gone.
    let acme_dir = dirhost::render::Layout::new(&cfg).acme_dir;
    assert_eq!(std::fs::read_dir(&acme_dir).unwrap().count(), 0);
    // The hook got live-update and the domain.
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "live-update\ntls.test\n"
    );
    // The account is stored once, private.
    let accounts: Vec<_> = std::fs::read_dir(cfg.paths.state.join("acme/accounts"))
        .unwrap()
        .collect();
    assert_eq!(accounts.len(), 1);
    let md = accounts[0].as_ref().unwrap().metadata().unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);

    // `ssl list --json`: sets, expiry, next renewal, no error.
    let rows = ssl_list(&sb);
    let r = row(&rows, "tls.test");
    assert_eq!(r["current"], "0");
    assert_eq!(r["live"], "0");
    assert_eq!(r["sets"].as_array().unwrap().len(), 1);
    assert_eq!(r["sets"][0]["name"], "0");
    assert!(r["sets"][0]["problem"].is_null(), "{r}");
    let expires = r["expires"].as_i64().unwrap();
    let next = r["next_renewal"].as_i64().unwrap();
    let nb = r["sets"][0]["info"]["not_before"].as_i64().unwrap();
    assert_eq!(next, expires - (expires - nb) / 3);
    assert!(r["last_error"].is_null());
    assert_eq!(r["failures"], 0);

    // A second run changes nothing.
    let out = dirhost(&sb, &["ssl", "renew", "tls.test"]);
    assert!(
        stdout(&out).contains("tls.test: not due until"),
        "{}",
        stdout(&out)
    );
    assert!(!sb.srv().join("tls.test/config/ssl/sets/1").exists());
}

#[test]
fn renewal_inside_the_window_issues_set_1_and_outside_nothing_happens() {
    // 64-day certificates: the lifetime rule says renew with 21.3 days left.
    let (sb, pebble, cfg) = world(Some(64 * DAY as u64));
    sb.add_site("renew.test", OWNER, "renew me").unwrap();
    let t0 = now();
    let o = pass(&sb, &cfg, "renew.test", t0);
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    let expires = o.expires.unwrap();
    let renew_at = o.renew_at.unwrap();
    let lifetime = 64 * DAY;
    assert!((expires - renew_at - lifetime / 3).abs() < 5, "{o:?}");
    assert_eq!(
        served_serial(&sb, "renew.test"),
        set_serial(&sb, "renew.test", "0")
    );

    // Outside the window: a day later, and one minute before it opens.
    for at in [t0 + DAY, renew_at - 60] {
        let o = pass(&sb, &cfg, "renew.test", at);
        assert_eq!(o.action, Action::NotDue, "{o:?}");
        assert!(!sb.srv().join("renew.test/config/ssl/sets/1").exists());
    }
    assert_eq!(current(&sb, "renew.test"), Some(PathBuf::from("sets/0")));

    // Inside the window: set 1, current switches, Apache serves it.
    let o = pass(&sb, &cfg, "renew.test", renew_at + 60);
    assert_eq!(o.action, Action::Renewed, "{o:?}\n{}", pebble.log());
    assert_eq!(o.set.as_deref(), Some("1"));
    assert_eq!(current(&sb, "renew.test"), Some(PathBuf::from("sets/1")));
    assert_eq!(
        served_serial(&sb, "renew.test"),
        set_serial(&sb, "renew.test", "1")
    );
    assert_ne!(
        set_serial(&sb, "renew.test", "0"),
        set_serial(&sb, "renew.test", "1")
    );
    let (status, _) = https_get(sb.https_port(), "renew.test", "/", &pebble.roots());
    assert_eq!(status, 200);
    // And the new certificate is not due now.
    let o = pass(&sb, &cfg, "renew.test", now());
    assert_eq!(o.action, Action::NotDue, "{o:?}");
    assert!(!sb.srv().join("renew.test/config/ssl/sets/2").exists());
}

#[test]
fn a_failing_challenge_backs_off_and_the_old_certificate_stays() {
    let (sb, pebble, mut cfg) = world(Some(90 * DAY as u64));
    sb.add_site("fail.test", OWNER, "still here").unwrap();
    let t0 = now();
    let o = pass(&sb, &cfg, "fail.test", t0);
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    let old = set_serial(&sb, "fail.test", "0");

    // The names now point at 127.0.0.2, where nothing answers: the name check still passes
    // (the host claims that address), so the order goes out and the CA's challenge fails.
    cfg.acme.host_addresses = vec!["127.0.0.1".into(), "127.0.0.2".into()];
    pebble::write_config(&sb, &cfg);
    pebble.add_a("fail.test", "127.0.0.2");
    pebble.add_a("www.fail.test", "127.0.0.2");

    let due = o.renew_at.unwrap() + 10;
    let o = pass(&sb, &cfg, "fail.test", due);
    assert_eq!(o.action, Action::Failed, "{o:?}");
    let err = o.error.clone().unwrap();
    assert!(err.starts_with("fail.test: "), "{err}");
    assert!(err.contains("challenge"), "{err}");
    assert_eq!(
        o.next_attempt,
        Some(due + 60),
        "1 minute after the first failure"
    );
    let st = state_json(&cfg, "fail.test");
    assert_eq!(st["failures"], 1);
    assert_eq!(st["next_attempt"], due + 60);
    assert!(st["last_error"].as_str().unwrap().contains("challenge"));
    // Nothing was written, nothing switched, the old certificate is still served.
    assert!(!sb.srv().join("fail.test/config/ssl/sets/1").exists());
    assert_eq!(current(&sb, "fail.test"), Some(PathBuf::from("sets/0")));
    assert_eq!(served_serial(&sb, "fail.test"), old);
    let (status, body) = https_get(sb.https_port(), "fail.test", "/", &pebble.roots());
    assert_eq!((status, body.as_str()), (200, "still here"));

    // Within the backoff: no order at all.
    let o = pass(&sb, &cfg, "fail.test", due + 30);
    assert_eq!(o.action, Action::BackingOff, "{o:?}");
    assert_eq!(state_json(&cfg, "fail.test")["failures"], 1);
    // After it: one more attempt, then 10 minutes.
    let o = pass(&sb, &cfg, "fail.test", due + 61);
    assert_eq!(o.action, Action::Failed, "{o:?}");
    assert_eq!(o.next_attempt, Some(due + 61 + 600));
    assert_eq!(state_json(&cfg, "fail.test")["failures"], 2);

    // The state survives: the real binary (a new process) respects it too, and reports it.
    let rows = ssl_list(&sb);
    let r = row(&rows, "fail.test");
    assert_eq!(r["failures"], 2);
    assert_eq!(r["next_attempt"], due + 61 + 600);
    assert!(
        r["last_error"].as_str().unwrap().contains("challenge"),
        "{r}"
    );
    assert_eq!(r["live"], "0");

    // Fixed DNS + --force: renewed, and the failures are cleared.
    pebble.clear_a("fail.test");
    pebble.clear_a("www.fail.test");
    let before = sb.apache_generation();
    let out = dirhost(&sb, &["ssl", "renew", "fail.test", "--force"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    sb.wait_apache_generation(before + 1).unwrap();
    assert_eq!(current(&sb, "fail.test"), Some(PathBuf::from("sets/1")));
    assert_eq!(state_json(&cfg, "fail.test")["failures"], 0);
}

#[test]
fn names_that_do_not_point_here_are_left_out_and_reported() {
    let (sb, pebble, cfg) = world(None);
    sb.add_site("partial.test", OWNER, "partial").unwrap();
    pebble.add_a("www.partial.test", "192.0.2.10");
    let o = pass(&sb, &cfg, "partial.test", now());
    // The order went out for the apex only; www. is reported, not silently dropped.
    assert_eq!(o.ordered, ["partial.test"], "{o:?}\n{}", pebble.log());
    assert_eq!(o.left_out.len(), 1, "{o:?}");
    assert_eq!(o.left_out[0].0, "www.partial.test");
    assert!(o.left_out[0].1.contains("192.0.2.10"), "{o:?}");
    let st = state_json(&cfg, "partial.test");
    assert_eq!(st["left_out"][0][0], "www.partial.test", "{st}\n{o:?}");
    // Nothing points here at all: no order, a failure with the reason, backoff.
    sb.add_site("elsewhere.test", OWNER, "x").unwrap();
    pebble.add_a("elsewhere.test", "192.0.2.11");
    pebble.add_a("www.elsewhere.test", "192.0.2.11");
    let o = pass(&sb, &cfg, "elsewhere.test", now());
    assert_eq!(o.action, Action::Failed);
    assert!(o.ordered.is_empty());
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .contains("none of the site's names point at this host"),
        "{o:?}"
    );
    assert!(!sb.srv().join("elsewhere.test/config/ssl").exists());
}

#[test]
fn an_unreachable_ca_backs_off_and_the_old_certificate_stays() {
    let (sb, mut pebble, mut cfg) = world(Some(90 * DAY as u64));
    sb.add_site("down.test", OWNER, "served").unwrap();
    let o = pass(&sb, &cfg, "down.test", now());
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    let old = set_serial(&sb, "down.test", "0");

    pebble.stop_ca();
    let due = o.renew_at.unwrap() + 10;
    let o = pass(&sb, &cfg, "down.test", due);
    assert_eq!(o.action, Action::Failed, "{o:?}");
    assert!(
        o.error.as_deref().unwrap().starts_with("down.test: "),
        "{o:?}"
    );
    assert_eq!(o.next_attempt, Some(due + 60));
    assert_eq!(state_json(&cfg, "down.test")["failures"], 1);
    assert_eq!(current(&sb, "down.test"), Some(PathBuf::from("sets/0")));
    assert_eq!(served_serial(&sb, "down.test"), old);
    let (status, _) = https_get(sb.https_port(), "down.test", "/", &pebble.roots());
    assert_eq!(status, 200);

    // A wrong directory URL for a site without a certificate: failure recorded, the site
    // stays on port 80, and the real binary exits 1.
    cfg.acme.directory = "https://localhost:1/dir".into();
    pebble::write_config(&sb, &cfg);
    sb.add_site("nocert.test", OWNER, "plain").unwrap();
    assert!(apply(&sb, &[]).status.success());
    let out = dirhost(&sb, &["ssl", "renew", "nocert.test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("nocert.test: FAILED"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("localhost:1"), "{}", stdout(&out));
    assert_eq!(state_json(&cfg, "nocert.test")["failures"], 1);
    let out = dirhost(&sb, &["ssl", "renew", "nocert.test"]);
    assert!(
        stdout(&out).contains("backing off until"),
        "{}",
        stdout(&out)
    );
    assert_eq!(state_json(&cfg, "nocert.test")["failures"], 1);
    assert_eq!(sb.http_get("nocert.test", "/").unwrap().body, "plain");
}

#[test]
fn a_set_whose_key_does_not_match_is_never_made_current() {
    let (sb, pebble, cfg) = world(None);
    sb.add_site("key.test", OWNER, "right key").unwrap();
    let o = pass(&sb, &cfg, "key.test", now());
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());

    // The CA's real chain with a key that is not its own, through the same gate issuance uses.
    let dir = sb.srv().join("key.test/config/ssl/sets/0");
    let chain_pem = std::fs::read_to_string(dir.join("ssl.crt")).unwrap()
        + &std::fs::read_to_string(dir.join("ssl.bundle")).unwrap();
    let wrong = acme::keys::generate(dirhost::config::KeyType::EcdsaP256).unwrap();
    let material = acme::store::Material {
        key_pem: acme::keys::key_pem(&wrong),
        chain_pem,
    };
    let model = model::load(&cfg.paths.srv, now()).unwrap();
    let d = &model.domains["key.test"];
    let roots = acme::store::chain_roots(&cfg).unwrap();
    let err = acme::store::install(&cfg.paths.srv, d, &material, &d.all_names(), &roots, now())
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("does not belong"), "{text}");
    assert!(
        text.contains("sets/1 was kept on disk but not made current"),
        "{text}"
    );
    assert!(sb.srv().join("key.test/config/ssl/sets/1/ssl.key").exists());
    assert_eq!(current(&sb, "key.test"), Some(PathBuf::from("sets/0")));

    // `ssl select` refuses it as well; set 0 stays current and served.
    let out = dirhost(&sb, &["ssl", "select", "key.test", "1"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("does not belong"), "{}", stderr(&out));
    assert_eq!(current(&sb, "key.test"), Some(PathBuf::from("sets/0")));
    let (status, body) = https_get(sb.https_port(), "key.test", "/", &pebble.roots());
    assert_eq!((status, body.as_str()), (200, "right key"));
    // `ssl list` shows the broken set and why.
    let rows = ssl_list(&sb);
    let sets = row(&rows, "key.test")["sets"].as_array().unwrap().clone();
    assert_eq!(sets.len(), 2);
    assert!(
        sets[1]["problem"]
            .as_str()
            .unwrap()
            .contains("does not belong")
    );
    // A good set can be selected back and forth.
    let out = dirhost(&sb, &["ssl", "select", "key.test", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn selfsigned_and_manual_providers() {
    let (sb, _pebble, cfg) = world(None);
    sb.add_site("self.test", OWNER, "self").unwrap();
    put(
        &sb,
        "self.test",
        "config/ssl-provider",
        "selfsigned\n",
        OWNER,
    );
    sb.add_site("manual.test", OWNER, "manual").unwrap();
    put(&sb, "manual.test", "config/ssl-provider", "false\n", OWNER);
    let before = sb.apache_generation();
    let report = acme::maintain(&cfg, sb.config_path(), now()).unwrap();
    sb.wait_apache_generation(before + 1).unwrap();
    assert_eq!(report.get("self.test").unwrap().action, Action::Issued);
    assert_eq!(report.get("manual.test").unwrap().action, Action::Manual);
    assert!(!sb.srv().join("manual.test/config/ssl").exists());
    let key = sb.srv().join("self.test/config/ssl/sets/0/ssl.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    // Served over HTTPS with the self-signed certificate as its own trust anchor.
    let crt = sb.srv().join("self.test/config/ssl/sets/0/ssl.crt");
    let (status, body) = https_get(sb.https_port(), "self.test", "/", &crt);
    assert_eq!(
        (status, body.as_str()),
        (200, "self"),
        "{}",
        sb.apache_error_log()
    );
}

/// mkdir → valid HTTPS through the Maintainer (kicked as the daemon will), over 20 sites.
/// Every site ends up on valid HTTPS; prints the latencies, which BENCHMARKS.md quotes.
#[test]
fn mkdir_to_valid_https_latency_p50_over_20_sites() {
    let (sb, pebble, cfg) = world(None);
    let maintainer = acme::Maintainer::start(cfg.clone(), sb.config_path().to_path_buf()).unwrap();
    let mut times = Vec::new();
    for i in 0..20 {
        let domain = format!("bench{i}.test");
        let t0 = Instant::now();
        sb.add_site(&domain, OWNER, "bench").unwrap();
        maintainer.kick([domain.clone()]);
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let (status, _) = https_get_quiet(sb.https_port(), &domain, &pebble.roots());
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{domain}: no valid HTTPS after 60 s\n{}\n{}",
                sb.apache_error_log(),
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        times.push(t0.elapsed());
    }
    maintainer.stop();
    let mut sorted = times.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_millis();
    eprintln!(
        "mkdir -> valid HTTPS over {} sites: min {} ms, p50 {} ms, p90 {} ms, max {} ms",
        sorted.len(),
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() * 9 / 10 - 1]),
        ms(sorted[sorted.len() - 1])
    );
    // No timed assertion: the numbers belong in BENCHMARKS.md, the test checks that every
    // kicked site ends up on valid HTTPS.
    assert_eq!(times.len(), 20);
}

/// Like `https_get`, with a short timeout and no output on failure.
fn https_get_quiet(port: u16, host: &str, ca: &Path) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}/"))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        String::new(),
    )
}

/// `openssl`'s SHA-256 of the SubjectPublicKeyInfo of the certificate Apache serves for
/// `name` (DANE `3 1 1` data, computed as the DANE documentation does).
fn served_spki_sha256(sb: &Sandbox, name: &str) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{} -servername {name} </dev/null 2>/dev/null \
         | openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum",
        sb.https_port()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let hash = stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hash.len(), 64, "no certificate served for {name}");
    hash
}

/// `openssl`'s SHA-256 of the public key of the private key file `pem`.
fn key_spki_sha256(pem: &Path) -> String {
    let script = format!(
        "openssl pkey -in {} -pubout -outform DER | sha256sum",
        pem.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

/// What `dirhost dns export DOMAIN --format json` publishes: the TLSA data at
/// `_<https port>._tcp.<domain>`, and the CAA values.
fn exported(sb: &Sandbox, domain: &str) -> (BTreeSet<String>, Vec<String>) {
    let out = dirhost(sb, &["dns", "export", domain, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fqdn = format!("_{}._tcp.{domain}.", sb.https_port());
    let records: Vec<serde_json::Value> = doc["domains"][0]["zones"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|z| z["records"].as_array().unwrap().clone())
        .collect();
    let tlsa = records
        .iter()
        .filter(|r| r["type"] == "TLSA" && r["fqdn"] == fqdn.as_str())
        .map(|r| {
            assert!(r["rdata"].as_str().unwrap().starts_with("3 1 1 "), "{r}");
            r["value"]["data"].as_str().unwrap().to_string()
        })
        .collect();
    let caa = records
        .iter()
        .filter(|r| r["type"] == "CAA" && r["fqdn"] == format!("{domain}.").as_str())
        .filter(|r| r["value"]["tag"] == "issue")
        .map(|r| r["value"]["value"].as_str().unwrap().to_string())
        .collect();
    (tlsa, caa)
}

#[test]
fn tlsa_matches_the_served_key_before_and_after_renewals_and_keys_roll_over_safely() {
    let (sb, pebble, mut cfg) = world(Some(64 * DAY as u64));
    // Pebble has no public CAA identity: name one, so the CAA record (with accounturi) exists.
    cfg.dns.caa_issuer = "pebble.test".into();
    pebble::write_config(&sb, &cfg);
    let d = "dane.test";
    sb.add_site(d, OWNER, "dane").unwrap();
    let t0 = now();
    let o = pass(&sb, &cfg, d, t0);
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    let next_file = acme::rollover::next_key_file(&cfg, d);
    assert!(next_file.is_file(), "a next key is made ahead");
    let md = std::fs::metadata(&next_file).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);

    // Published (as the daemon does after each pass): the live key and the next key.
    acme::publish_dns(&cfg, None);
    let served0 = served_spki_sha256(&sb, d);
    let next0 = key_spki_sha256(&next_file);
    assert_ne!(served0, next0);
    let (tlsa, caa) = exported(&sb, d);
    assert_eq!(tlsa, BTreeSet::from([served0.clone(), next0.clone()]));
    // CAA names the CA and dirhost's own account there (RFC 8657).
    let account = dirhost::dns::inputs::account_uri(&cfg).unwrap().unwrap();
    assert!(account.starts_with("https://localhost:"), "{account}");
    assert_eq!(caa, [format!("pebble.test; accounturi={account}")]);

    // Renewal weeks later: the next key's record has been out far longer than a TTL, so the
    // renewal puts it live, and a new next key takes its place.
    let o = pass(&sb, &cfg, d, o.renew_at.unwrap() + 60);
    assert_eq!(o.action, Action::Renewed, "{o:?}\n{}", pebble.log());
    let served1 = served_spki_sha256(&sb, d);
    assert_eq!(served1, next0, "the key published ahead is the one served");
    let next1 = key_spki_sha256(&next_file);
    assert!(next1 != next0 && next1 != served1);
    acme::publish_dns(&cfg, None);
    let (tlsa, _) = exported(&sb, d);
    assert_eq!(tlsa, BTreeSet::from([served1.clone(), next1.clone()]));

    // A renewal now (forced): the new next key's record is only seconds old, less than one
    // TTL, so the live key is reused: a new certificate, the same key, DANE unbroken.
    let before = sb.apache_generation();
    let report = acme::maintain_with(
        &cfg,
        sb.config_path(),
        now(),
        &Options {
            only: Some(BTreeSet::from([d.to_string()])),
            force: true,
        },
    )
    .unwrap();
    assert_eq!(report.get(d).unwrap().action, Action::Renewed);
    sb.wait_apache_generation(before + 1).unwrap();
    assert_eq!(served_serial(&sb, d), set_serial(&sb, d, "2"));
    assert_eq!(served_spki_sha256(&sb, d), served1, "key reused");
    assert_eq!(key_spki_sha256(&next_file), next1, "next key kept");
    let (tlsa, _) = exported(&sb, d);
    assert_eq!(tlsa, BTreeSet::from([served1, next1]));
}

/// The serial (lower-case hex) of the certificate a server presents for `sni`.
fn presented_serial(port: u16, sni: &str, starttls: Option<&str>) -> String {
    let starttls = starttls.map_or(String::new(), |p| format!(" -starttls {p}"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {sni}{starttls} </dev/null \
             2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    stdout(&out)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// Waits until Exim (25 STARTTLS, 465, 587 STARTTLS) and Dovecot (993, 995) all present the
/// certificate with `serial` for `sni`.
fn wait_mail_serial(w: &mailh::MailWorld, sni: &str, serial: &str) {
    let m = w.mail().clone();
    let ports = [
        (m.smtp, Some("smtp")),
        (m.smtps, None),
        (m.submission, Some("smtp")),
        (m.imaps, None),
        (m.pop3s, None),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    for (port, starttls) in ports {
        loop {
            let got = presented_serial(port, sni, starttls);
            if got == serial {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port} presents {got:?} for {sni}, not {serial}\n{}",
                w.servers.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn exim_and_dovecot_present_the_new_certificate_after_a_renewal() {
    let w = mailh::mail_world();
    let pebble = Pebble::start(w.http_port(), Some(64 * DAY as u64));
    let cfg = pebble.configure(&w);
    const D: &str = "mailtls.test";
    w.add_site(D, OWNER, "web and mail").unwrap();
    std::fs::create_dir_all(w.srv().join(D).join("mailboxes/kim")).unwrap();
    chown_up(w.srv(), &w.srv().join(D).join("mailboxes/kim"), OWNER);
    w.apply(&[]);

    let o = pass(&w, &cfg, D, now());
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    let first = set_serial(&w, D, "0");
    for sni in [D, "www.mailtls.test"] {
        wait_mail_serial(&w, sni, &first);
    }
    // A name the domain does not have gets the host certificate.
    assert_ne!(presented_serial(w.mail().imaps, "other.test", None), first);

    // Renewal: Apache, Exim and Dovecot all move to the new set (no stale mail certificate).
    let o = pass(&w, &cfg, D, o.renew_at.unwrap() + 60);
    assert_eq!(o.action, Action::Renewed, "{o:?}\n{}", pebble.log());
    let second = set_serial(&w, D, "1");
    assert_ne!(first, second);
    assert_eq!(served_serial(&w, D), second);
    for sni in [D, "www.mailtls.test"] {
        wait_mail_serial(&w, sni, &second);
    }
}

#[test]
fn sympl_per_domain_provider_settings_are_validated_and_honoured_or_reported() {
    let (sb, pebble, cfg) = world(None);
    // rsa_key_size: an RSA key of that size; email: reported as ignored, never silently.
    sb.add_site("rsa.test", OWNER, "rsa").unwrap();
    put(
        &sb,
        "rsa.test",
        "config/ssl/letsencrypt/rsa_key_size",
        "3072\n",
        OWNER,
    );
    put(
        &sb,
        "rsa.test",
        "config/ssl/letsencrypt/email",
        "me@rsa.test\n",
        OWNER,
    );
    let o = pass(&sb, &cfg, "rsa.test", now());
    assert_eq!(o.action, Action::Issued, "{o:?}\n{}", pebble.log());
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("letsencrypt/email is ignored")),
        "{o:?}"
    );
    let text = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -noout -text -in {}",
            sb.srv()
                .join("rsa.test/config/ssl/sets/0/ssl.crt")
                .display()
        ))
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(
        text.contains("rsaEncryption") && text.contains("(3072 bit)"),
        "{text}"
    );
    let (status, _) = https_get(sb.https_port(), "rsa.test", "/", &pebble.roots());
    assert_eq!(status, 200);

    // A value dirhost does not make: no order, the reason, a backoff.
    sb.add_site("weak.test", OWNER, "weak").unwrap();
    put(
        &sb,
        "weak.test",
        "config/ssl/letsencrypt/rsa_key_size",
        "1024\n",
        OWNER,
    );
    let o = pass(&sb, &cfg, "weak.test", now());
    assert_eq!(o.action, Action::Failed, "{o:?}");
    assert!(o.ordered.is_empty());
    assert!(
        o.error.as_deref().unwrap().contains("rsa_key_size"),
        "{o:?}"
    );
    assert!(!sb.srv().join("weak.test/config/ssl/sets").exists());

    // A symlinked settings file is refused (read as the owner, never followed).
    sb.add_site("link.test", OWNER, "link").unwrap();
    put(&sb, "link.test", "config/ssl/letsencrypt/x", "", OWNER);
    std::os::unix::fs::symlink(
        "/etc/shadow",
        sb.srv()
            .join("link.test/config/ssl/letsencrypt/rsa_key_size"),
    )
    .unwrap();
    let o = pass(&sb, &cfg, "link.test", now());
    assert_eq!(o.action, Action::Failed, "{o:?}");
    assert!(
        o.error.as_deref().unwrap().contains("rsa_key_size"),
        "{o:?}"
    );

    // Self-signed: lifetime in days.
    sb.add_site("short.test", OWNER, "short").unwrap();
    put(
        &sb,
        "short.test",
        "config/ssl-provider",
        "selfsigned\n",
        OWNER,
    );
    put(
        &sb,
        "short.test",
        "config/ssl/selfsigned/lifetime",
        "30\n",
        OWNER,
    );
    let o = pass(&sb, &cfg, "short.test", now());
    assert_eq!(o.action, Action::Issued, "{o:?}");
    let pem = std::fs::read(sb.srv().join("short.test/config/ssl/sets/0/ssl.crt")).unwrap();
    let info =
        dirhost::certs::cert_info(&dirhost::certs::parse_pem(&pem).unwrap().certs[0]).unwrap();
    assert_eq!(info.not_after - info.not_before, 30 * DAY + 3_600);
}
