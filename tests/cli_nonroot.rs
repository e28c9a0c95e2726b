//! The real binary run by a customer (an unprivileged uid, no supplementary groups) against a
//! sandbox: their own domains work, other owners' are refused with a clear message, nothing
//! is reloaded (the daemon does that), and root-only commands say so.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use common::*;
use dirhost::sandbox::Sandbox;

/// Runs `dirhost --config <sandbox config> ARGS` as `uid:uid` without supplementary groups,
/// with `stdin` on standard input.
fn as_user(sb: &Sandbox, uid: u32, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirhost"));
    cmd.arg("--config")
        .arg(sb.config_path())
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).map_err(std::io::Error::from)?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run dirhost as a user");
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        // (A command that does not read its input may have exited already.)
        let _ = i.write_all(stdin.as_bytes());
    }
    child.wait_with_output().unwrap()
}

fn fingerprint(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (
                e.path().display().to_string(),
                m.size() ^ m.mtime_nsec() as u64,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_customer_runs_commands_for_their_own_domains_only() {
    let sb = sandbox();
    // The sandbox's temp root is 0700; a customer must be able to reach /srv and the config.
    std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.add_site("mine.test", OWNER, "mine").unwrap();
    sb.add_site("theirs.test", OTHER, "theirs").unwrap();
    std::os::unix::fs::symlink(sb.srv().join("theirs.test"), sb.srv().join("alias.test")).unwrap();
    std::os::unix::fs::lchown(sb.srv().join("alias.test"), Some(OTHER), Some(OTHER)).unwrap();
    assert!(apply(&sb, &[]).status.success());
    let apache = sb.config().paths.apache.clone();
    let before = (fingerprint(&apache), sb.apache_generation());

    // Reading works, for what the user can read.
    let out = as_user(&sb, OWNER, &["site", "list", "--json"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["domain"] == "mine.test")
    );
    let out = as_user(&sb, OWNER, &["site", "show", "mine.test", "--json"], "");
    assert!(out.status.success(), "{}", stderr(&out));

    // Someone else's domain: refused with who owns it, exit 1, nothing written.
    for args in [
        &["site", "show", "theirs.test"][..],
        &["site", "remove", "theirs.test"],
        &["apply", "theirs.test"],
        &["check", "theirs.test"],
        &["mail", "add", "bob@theirs.test", "--password-stdin"],
        &["mail", "list", "theirs.test"],
        &["dns", "export", "theirs.test"],
        // An alias of someone else's domain is theirs too.
        &["site", "show", "alias.test"],
    ] {
        let out = as_user(&sb, OWNER, args, "a long password\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains("belongs to uid 2002, not to you (uid 2001)"),
            "{args:?}: {e}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!sb.srv().join("theirs.test/mailboxes").exists());
    // Unknown names still get a suggestion.
    let out = as_user(&sb, OWNER, &["site", "show", "mnie.test"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean mine.test?"),
        "{}",
        stderr(&out)
    );

    // Their own domain: the change is made in /srv as them; nothing is reloaded.
    let out = as_user(
        &sb,
        OWNER,
        &["mail", "add", "bob@mine.test", "--password-stdin"],
        "a long password\n",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("the dirhost daemon applies the change"),
        "{}",
        stderr(&out)
    );
    let pw = sb.srv().join("mine.test/mailboxes/bob/password");
    let meta = std::fs::metadata(&pw).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (OWNER, OWNER));
    assert!(
        !std::fs::read_to_string(&pw)
            .unwrap()
            .contains("a long password")
    );

    // Lists show the caller's own domains only, not another customer's mailboxes.
    let carol = sb.srv().join("theirs.test/mailboxes/carol");
    std::fs::create_dir_all(&carol).unwrap();
    for p in [carol.parent().unwrap(), carol.as_path()] {
        std::os::unix::fs::chown(p, Some(OTHER), Some(OTHER)).unwrap();
    }
    let out = as_user(&sb, OWNER, &["mail", "list", "--json"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addresses: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["bob@mine.test"], "{}", stdout(&out));
    let out = as_user(&sb, OTHER, &["mail", "list", "--json"], "");
    assert!(stdout(&out).contains("carol@theirs.test") && !stdout(&out).contains("bob@"));
    let out = as_user(&sb, OWNER, &["ssl", "list", "--json"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let domains: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["domain"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(domains, ["mine.test"], "{}", stdout(&out));

    let out = as_user(&sb, OWNER, &["apply"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the dirhost daemon applies the change"),
        "{}",
        stderr(&out)
    );
    let out = as_user(&sb, OWNER, &["apply", "--dry-run", "mine.test"], "");
    assert!(out.status.code().is_some(), "{}", stderr(&out));

    // /srv itself is root's: adding or removing a domain names the command to ask for.
    let out = as_user(&sb, OWNER, &["site", "add", "new.test"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "only root can: ask the admin to run `dirhost site add new.test --owner 2001`"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!sb.srv().join("new.test").exists());
    let out = as_user(
        &sb,
        OWNER,
        &["site", "add", "new.test", "--owner", "2002"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only root can add a domain for someone else"),
        "{}",
        stderr(&out)
    );
    let out = as_user(&sb, OWNER, &["site", "remove", "mine.test"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ask the admin to run `dirhost site remove mine.test`"),
        "{}",
        stderr(&out)
    );
    assert!(sb.srv().join("mine.test/public/htdocs").is_dir());

    // Root-only commands say so.
    for (args, what) in [
        (&["ssl", "renew"][..], "ordering certificates needs root"),
        (
            &["ssl", "select", "mine.test", "0"],
            "switching certificate sets needs root",
        ),
        (&["watch"], "needs root"),
        (&["demo", "--once"], "needs root"),
    ] {
        let out = as_user(&sb, OWNER, args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(what), "{args:?}: {}", stderr(&out));
    }

    // check covers their own domains only.
    let out = as_user(&sb, OWNER, &["check", "--no-dns", "--json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    assert!(
        !v.as_array()
            .unwrap()
            .iter()
            .any(|f| f["domain"] == "theirs.test"),
        "{v:#}"
    );

    // A user who owns no domain is told so, rather than acting on everyone's.
    for args in [
        &["check", "--no-dns"][..],
        &["mail", "encrypt-passwords"],
        &["apply"],
    ] {
        let out = as_user(&sb, 2003, args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("you (uid 2003) own no domain"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // Nothing the customer ran touched Apache's configuration or reloaded it.
    assert_eq!((fingerprint(&apache), sb.apache_generation()), before);
}
