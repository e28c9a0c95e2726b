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
    assert!(apply(&sb, &[]).status.success());
    let out = dirhost(&sb, &["check", "--no-dns"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("all checks passed"));
    let out = dirhost(&sb, &["check", "--no-dns", "--all"]);
    assert!(
        stdout(&out).contains("ok [ports] http port"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn usage_errors_exit_2_and_bad_domain_arguments_are_explained() {
    let sb = sandbox();
    let out = dirhost(&sb, &["apply", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = dirhost(&sb, &["apply", "not a domain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"not a domain\" is not a domain name"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .args(["--config", "/nonexistent/dirhost.toml", "apply"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "an explicit missing config file is an error"
    );
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
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--owner"), "{}", stderr(&out));
    let out = dirhost(&sb, &["site", "add", "new.test", "--owner", "www-data"]);
    assert!(stderr(&out).contains("uid 33"), "{}", stderr(&out));

    let out = dirhost(&sb, &["site", "add", "new.test", "--owner", "nosuchuser"]);
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
    assert_eq!(v["name"], "new.test");
    assert_eq!(v["web"], true);

    let out = dirhost(&sb, &["site", "show", "nwe.test"]);
    assert_eq!(out.status.code(), Some(1));
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
