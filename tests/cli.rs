//! CLI tests: the real binary against sandbox trees, including the error paths.

mod common;

use common::*;

#[test]
fn check_finds_each_problem_in_a_broken_tree_and_names_the_fix() {
    let sb = sandbox();
    sb.add_site("fine.test", OWNER, "ok").unwrap();
    sb.add_site("rooted.test", 0, "x").unwrap();
    sb.add_site("Upper.test", OWNER, "x").unwrap();
    sb.add_site("injected.test", OWNER, "x").unwrap();
    put(
        &sb,
        "injected.test",
        "config/ip",
        "1.2.3.4\"\nInclude /etc/shadow",
        OWNER,
    );
    sb.add_site("edited.test", OWNER, "x").unwrap();
    assert!(apply(&sb, &["edited.test", "fine.test"]).status.success());
    let vhost = sb
        .config()
        .paths
        .apache
        .join("sites-available/edited.test.conf");
    let text = std::fs::read_to_string(&vhost).unwrap();
    std::fs::write(&vhost, format!("# local tweak\n{text}")).unwrap();
    std::os::unix::fs::symlink(sb.srv().join("edited.test"), sb.srv().join("newname.test"))
        .unwrap();

    let out = dirhost(&sb, &["check", "--no-dns", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |domain: &str, needle: &str| {
        findings
            .iter()
            .find(|f| f["domain"] == domain && f["message"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no finding for {domain} with {needle:?}: {findings:#?}"))
    };
    let f = find("rooted.test", "owned by uid 0");
    assert_eq!(f["severity"], "error");
    assert!(f["fix"].as_str().unwrap().contains("chown"));
    let f = find("Upper.test", "lower-case");
    assert!(f["fix"].as_str().unwrap().contains("rename"));
    find("injected.test", "config/ip");
    let f = find("edited.test", "edited by hand");
    assert!(f["fix"].as_str().unwrap().contains("--diff"));
    for f in &findings {
        assert!(
            f["severity"] == "ok" || !f["fix"].as_str().unwrap().is_empty(),
            "every problem names its fix: {f}"
        );
    }

    // Human output goes to stdout with the fix on the next line.
    let out = dirhost(&sb, &["check", "--no-dns"]);
    let so = stdout(&out);
    assert!(
        so.contains("error [domain] rooted.test: skipped: owned by uid 0"),
        "{so}"
    );
    assert!(so.contains("    fix: chown"), "{so}");
}

#[test]
fn check_passes_on_a_healthy_sandbox() {
    let sb = sandbox();
    sb.add_site("healthy.test", OWNER, "ok").unwrap();
    // A certificate, or check rightly says HTTPS is not served yet.
    let (crt, key) = self_signed(sb.root(), &["healthy.test", "www.healthy.test"], 30);
    put(&sb, "healthy.test", "config/ssl.crt", &crt, OWNER);
    put(&sb, "healthy.test", "config/ssl.key", &key, OWNER);
    assert!(apply(&sb, &[]).status.success());
    let out = dirhost(&sb, &["check", "--no-dns"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("all checks passed"));
    let out = dirhost(&sb, &["check", "--no-dns", "--all"]);
    let so = stdout(&out);
    assert!(so.contains("ok [ports] http port"), "{so}");
    assert!(
        so.contains("ok [certificates] healthy.test: certificate set legacy valid until")
            || so.contains("ok [certificates] healthy.test: certificate set"),
        "{so}"
    );
    assert!(
        !so.contains('\x1b'),
        "no colour when stdout is not a terminal: {so}"
    );
}

#[test]
fn usage_errors_exit_2_and_bad_domain_arguments_are_explained() {
    let sb = sandbox();
    sb.add_site("example.com", OWNER, "x").unwrap();
    sb.add_site("sys.test", 33, "x").unwrap();
    let out = dirhost(&sb, &["apply", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "usage errors go to stderr");
    let out = dirhost(&sb, &[]);
    assert_eq!(out.status.code(), Some(2), "no subcommand");

    // An invalid name: exit 2, whatever the command.
    for args in [
        &["apply", "not a domain"][..],
        &["check", "not a domain"],
        &["site", "show", "Bad_Name!"],
        &["site", "add", "a..b.test", "--owner", "2001"],
        &["dns", "export", "not a domain"],
    ] {
        let out = dirhost(&sb, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not a valid domain name"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // An unknown domain, with the closest existing one: exit 2, wherever a domain is named.
    for args in [
        &["apply", "example.org"][..],
        &["check", "example.org"],
        &["site", "show", "example.org"],
        &["site", "remove", "example.org"],
        &["ssl", "renew", "example.org"],
        &["ssl", "select", "example.org", "0"],
        &["mail", "list", "example.org"],
        &["mail", "dns", "example.org"],
        &["mail", "remove", "bob@example.org"],
        &["mail", "encrypt-passwords", "example.org"],
    ] {
        let out = dirhost(&sb, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no such domain example.org (did you mean example.com?)"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: errors go to stderr");
    }
    // A mailbox, with the closest existing one.
    put(
        &sb,
        "example.com",
        "mailboxes/brian/password",
        "a long password\n",
        OWNER,
    );
    for args in [
        &["mail", "passwd", "brain@example.com", "--password-stdin"][..],
        &["mail", "remove", "brain@example.com"],
    ] {
        let out = dirhost(&sb, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("no such mailbox brain@example.com (did you mean brian@example.com?)"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        sb.srv()
            .join("example.com/mailboxes/brian/password")
            .exists()
    );

    // dns export still exports the others and reports the missing one (exit 1).
    let out = dirhost(&sb, &["dns", "export", "example.com", "example.org"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("$ORIGIN example.com."),
        "{}",
        stdout(&out)
    );
    // apply of a domain that just left /srv takes its configuration down.
    assert!(apply(&sb, &["example.com"]).status.success());
    let vhost = sb
        .config()
        .paths
        .apache
        .join("sites-available/example.com.conf");
    assert!(vhost.exists());
    std::fs::rename(sb.srv().join("example.com"), sb.root().join("gone")).unwrap();
    let out = apply(&sb, &["example.com"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!vhost.exists(), "{}", stdout(&out));
    std::fs::rename(sb.root().join("gone"), sb.srv().join("example.com")).unwrap();

    let out = dirhost(&sb, &["site", "show", "totally-unrelated.test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no such domain totally-unrelated.test in "),
        "{}",
        stderr(&out)
    );

    // A domain the model refuses: exit 1 and why.
    for args in [
        &["site", "show", "sys.test"][..],
        &["mail", "add", "bob@sys.test", "--password-stdin"],
        &["ssl", "renew", "sys.test"],
    ] {
        let out = dirhost(&sb, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "sys.test is owned by uid 33: domains must be owned by a user with uid >= 1000"
            ),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // apply reports it and exits 1 (some domain failed).
    let out = dirhost(&sb, &["apply", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("skipped sys.test: owned by uid 33"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bad_config_file_exits_78_and_names_the_problem() {
    let sb = sandbox();
    let bin = env!("CARGO_BIN_EXE_dirhost");
    let run = |path: &std::path::Path| {
        std::process::Command::new(bin)
            .arg("--config")
            .arg(path)
            .args(["site", "list"])
            .output()
            .unwrap()
    };
    let out = run(std::path::Path::new("/nonexistent/dirhost.toml"));
    assert_eq!(
        out.status.code(),
        Some(78),
        "an explicit missing config file is an error"
    );
    assert!(
        stderr(&out).contains("/nonexistent/dirhost.toml"),
        "{}",
        stderr(&out)
    );

    let text = std::fs::read_to_string(sb.config_path()).unwrap();
    let bad = sb.root().join("bad.toml");
    // A typo in a key: never silently the default (which is the live /srv).
    std::fs::write(
        &bad,
        text.replacen("[paths]", "[paths]\nsrvv = \"/srv\"", 1),
    )
    .unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("srvv"), "{}", stderr(&out));
    std::fs::write(&bad, "[paths\nsrv = 1\n").unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
    std::fs::write(&bad, "[watch]\nmax_watches = -1\n").unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn site_add_show_list_remove_round_trip() {
    let sb = sandbox();
    // A skeleton, like Sympl's skel.d.
    let skel = &sb.config().paths.skel;
    std::fs::create_dir_all(skel.join("public/htdocs")).unwrap();
    std::fs::write(
        skel.join("public/htdocs/index.html"),
        "welcome to your new site",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", skel.join("public/htdocs/leak")).unwrap();

    // Root must say who owns it; a system user is refused.
    let out = dirhost(&sb, &["site", "add", "new.test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--owner"), "{}", stderr(&out));
    let out = dirhost(&sb, &["site", "add", "new.test", "--owner", "www-data"]);
    assert!(stderr(&out).contains("uid 33"), "{}", stderr(&out));

    let out = dirhost(&sb, &["site", "add", "new.test", "--owner", "nosuchuser"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));

    let before = sb.apache_generation();
    let out = dirhost(
        &sb,
        &["site", "add", "new.test", "--owner", &OWNER.to_string()],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    sb.wait_apache_generation(before + 1).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(sb.srv().join("new.test/public/htdocs/index.html")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (OWNER, OWNER));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = sb.http_get("new.test", "/").unwrap();
        if r.status == 200 {
            assert!(r.body.contains("welcome to your new site"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        std::fs::symlink_metadata(sb.srv().join("new.test/public/htdocs/leak")).is_err(),
        "symlinks in the skeleton are not copied"
    );

    let out = dirhost(&sb, &["site", "show", "new.test", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["domain"], "new.test");
    assert_eq!(v["web"], true);
    assert_eq!(v["uid"], OWNER);
    assert_eq!(v["gid"], OWNER);
    assert_eq!(v["mandatory_ssl"], false);
    assert_eq!(v["aliases"], serde_json::json!(["www.new.test"]));
    assert_eq!(v["ips"], serde_json::json!([]));
    assert_eq!(v["certificate_set"], serde_json::Value::Null);
    assert!(v["directory"].as_str().unwrap().ends_with("/srv/new.test"));
    let out = dirhost(&sb, &["site", "show", "new.test"]);
    assert!(
        stdout(&out).contains("domain:        new.test"),
        "{}",
        stdout(&out)
    );

    let out = dirhost(&sb, &["site", "show", "nwe.test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no such domain nwe.test (did you mean new.test?)"),
        "{}",
        stderr(&out)
    );

    sb.add_site("sys.test", 33, "x").unwrap();
    let out = dirhost(&sb, &["site", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["domain"] == "new.test")
    );
    assert!(
        v["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "sys.test" && s["reason"].as_str().unwrap().contains("uid 33"))
    );
    let out = dirhost(&sb, &["site", "show", "sys.test"]);
    assert!(stderr(&out).contains("uid 33"), "{}", stderr(&out));

    let before = sb.apache_generation();
    let out = dirhost(&sb, &["site", "remove", "new.test"]);
    assert!(out.status.success(), "{}", stderr(&out));
    sb.wait_apache_generation(before + 1).unwrap();
    assert_eq!(sb.http_get("new.test", "/").unwrap().status, 404);
    // Archived, not deleted.
    let archive = sb.srv().join(".dirhost-archive");
    let kept: Vec<_> = std::fs::read_dir(&archive).unwrap().collect();
    assert_eq!(kept.len(), 1);
}

/// The keys of a JSON object, sorted.
fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[test]
fn every_list_has_json_with_the_documented_field_names() {
    let sb = sandbox();
    sb.add_site("json.test", OWNER, "x").unwrap();
    put(&sb, "json.test", "config/mandatory-ssl", "", OWNER);
    let (crt, key) = self_signed(sb.root(), &["json.test", "www.json.test"], 30);
    put(&sb, "json.test", "config/ssl.crt", &crt, OWNER);
    put(&sb, "json.test", "config/ssl.key", &key, OWNER);
    assert!(apply(&sb, &[]).status.success());
    let out = dirhost(&sb, &["mail", "add", "bob@json.test", "--password-stdin"]);
    // (stdin is null: no password given, so this fails before creating anything)
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    put(
        &sb,
        "json.test",
        "mailboxes/bob/password",
        "a long password\n",
        OWNER,
    );

    // site list: {"domains": [SITE…], "skipped": [{"name", "reason"}]}
    let v = json(&dirhost(&sb, &["site", "list", "--json"]));
    assert_eq!(keys(&v), ["domains", "skipped"]);
    let site = &v["domains"][0];
    let site_fields = [
        "aliases",
        "certificate_expires",
        "certificate_set",
        "directory",
        "domain",
        "gid",
        "ips",
        "mandatory_ssl",
        "uid",
        "warnings",
        "web",
    ];
    assert_eq!(keys(site), site_fields);
    assert_eq!(site["domain"], "json.test");
    assert_eq!(site["certificate_set"], "legacy");
    assert!(site["certificate_expires"].as_i64().unwrap() > 0);
    // site show: one SITE, the same fields.
    let v = json(&dirhost(&sb, &["site", "show", "json.test", "--json"]));
    assert_eq!(keys(&v), site_fields);
    assert_eq!(v["mandatory_ssl"], true);

    // web list: [{"domain", "aliases", "ips", "mandatory_ssl", "hsts", "ssl_provider",
    // "certificate_set", "certificate_expires", "warnings", "php"}]
    let v = json(&dirhost(&sb, &["web", "list", "--json"]));
    assert_eq!(
        keys(&v[0]),
        [
            "aliases",
            "certificate_expires",
            "certificate_set",
            "domain",
            "hsts",
            "ips",
            "mandatory_ssl",
            "php",
            "ssl_provider",
            "warnings"
        ]
    );
    assert_eq!(v[0]["hsts"], true);

    // ssl list
    let v = json(&dirhost(&sb, &["ssl", "list", "--json"]));
    for k in [
        "domain",
        "provider",
        "names",
        "live",
        "expires",
        "next_renewal",
        "sets",
        "failures",
        "last_error",
    ] {
        assert!(v[0].get(k).is_some(), "ssl list --json lacks {k}: {v}");
    }
    assert_eq!(v[0]["live"], "legacy");

    // mail list
    let v = json(&dirhost(&sb, &["mail", "list", "json.test", "--json"]));
    assert_eq!(
        keys(&v[0]),
        ["address", "forward", "login", "quota", "vacation"]
    );
    assert_eq!(v[0]["address"], "bob@json.test");
    assert_eq!(v[0]["login"], "enabled");

    // dns export
    let v = json(&dirhost(&sb, &["dns", "export", "--format", "json"]));
    assert_eq!(v["version"], 1);
    assert_eq!(v["domains"][0]["domain"], "json.test");

    // check: [{"severity", "check", "domain", "message", "fix"}]
    let out = dirhost(&sb, &["check", "--no-dns", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for f in v.as_array().unwrap() {
        assert_eq!(keys(f), ["check", "domain", "fix", "message", "severity"]);
        assert!(["ok", "warning", "error"].contains(&f["severity"].as_str().unwrap()));
    }
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions() {
    let bin = env!("CARGO_BIN_EXE_dirhost");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _dirhost"), "{bash}");
    for word in ["apply", "check", "site", "ssl", "mail", "dns", "--dry-run"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef dirhost"), "{zsh}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c dirhost"), "{fish}");
    assert!(fish.contains("-l json"), "{fish}");
    // No config file is needed for these (a bad one is not even read).
    let out = std::process::Command::new(bin)
        .args(["--config", "/nonexistent.toml", "completions", "fish"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let dir = tempfile::tempdir().unwrap();
    run(&["manpages", "--dir", dir.path().to_str().unwrap()]);
    let main = std::fs::read_to_string(dir.path().join("dirhost.1")).unwrap();
    assert!(
        main.starts_with(".ie") || main.contains(".TH dirhost 1"),
        "{main}"
    );
    assert!(main.contains(".SH \"EXIT STATUS\""));
    assert!(main.contains("78"));
    for page in [
        "dirhost-apply.1",
        "dirhost-check.1",
        "dirhost-site-add.1",
        "dirhost-mail-add.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
    let check = std::fs::read_to_string(dir.path().join("dirhost-check.1")).unwrap();
    assert!(check.contains("json"), "{check}");
    // Every visible command has help text with an example.
    let help = run(&["site", "add", "--help"]);
    assert!(help.contains("Examples:"), "{help}");
    // man renders them (groff is there wherever man is).
    if std::path::Path::new("/usr/bin/man").exists() {
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(dir.path().join("dirhost.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(stdout(&out).contains("EXIT STATUS"), "{}", stderr(&out));
    }
}

#[test]
fn watch_serves_a_new_site_and_stops_on_sigterm() {
    let sb = sandbox();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .arg("--config")
        .arg(sb.config_path())
        .arg("watch")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sb.add_site("watched.test", OWNER, "watched").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = sb.http_get("watched.test", "/").unwrap();
        if r.status == 200 && r.body.contains("watched") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn demo_once_sets_up_a_sandbox_and_says_what_to_try() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .args(["demo", "--once", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let so = stdout(&out);
    assert!(so.contains("dirhost demo is running in"), "{so}");
    assert!(so.contains("curl -H 'Host: example.test'"), "{so}");
    assert!(demo.join("srv/example.test/public/htdocs").is_dir());
    // A second run reuses it; a non-empty directory that is not a sandbox is refused.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious"), "x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .args(["demo", "--once", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));
}

/// Runs `dirhost --config <sandbox config> ARGS` on a pseudo-terminal (util-linux `script`),
/// with `env` added; returns what the terminal showed (stdout and stderr together).
fn on_terminal(sb: &dirhost::sandbox::Sandbox, args: &str, env: &[(&str, &str)]) -> String {
    let cmdline = format!(
        "{} --config {} {args}",
        env!("CARGO_BIN_EXE_dirhost"),
        sb.config_path().display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &cmdline, "/dev/null"])
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("script (util-linux)");
    stdout(&out)
}

#[test]
fn colour_and_progress_only_on_a_terminal_and_never_with_no_color() {
    let sb = sandbox();
    sb.add_site("rooted.test", 0, "x").unwrap();
    sb.add_site("manual.test", OWNER, "x").unwrap();
    put(&sb, "manual.test", "config/ssl-provider", "false", OWNER);

    let tty = on_terminal(&sb, "check --no-dns", &[]);
    assert!(
        tty.contains("\x1b[31merror\x1b[0m [domain] rooted.test"),
        "{tty:?}"
    );
    let plain = on_terminal(&sb, "check --no-dns", &[("NO_COLOR", "1")]);
    assert!(plain.contains("error [domain] rooted.test"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "NO_COLOR: {plain:?}");
    let piped = dirhost(&sb, &["check", "--no-dns"]);
    assert!(!stdout(&piped).contains('\x1b'));

    // Certificate orders show progress on stderr, on a terminal only, and not with -q.
    let tty = on_terminal(&sb, "ssl renew manual.test", &[]);
    assert!(tty.contains("ordering certificates"), "{tty:?}");
    assert!(tty.contains("manual.test: manual"), "{tty:?}");
    let quiet = on_terminal(&sb, "-q ssl renew manual.test", &[]);
    assert!(!quiet.contains("ordering certificates"), "{quiet:?}");
    let piped = dirhost(&sb, &["ssl", "renew", "manual.test"]);
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(!stderr(&piped).contains("ordering"), "{}", stderr(&piped));
    assert!(
        stdout(&piped).contains("manual.test: manual"),
        "{}",
        stdout(&piped)
    );
}
