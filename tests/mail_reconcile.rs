//! System tests of what every reconcile does for mail (issue 5's wiring in `reconcile`),
//! with the real dirhost binary and a real Exim and Dovecot on loopback ports:
//! plaintext passwords are hashed in /srv as the owner, mail state that no domain needs any
//! more is removed (never a DKIM key, never a hand-edited file), and the state directories
//! are repaired. Nothing here touches a path outside the sandbox's temp root, except one
//! line in /etc/exim4/trusted_configs while the servers run.

mod common;
#[path = "common/mail.rs"]
mod mailh;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use dirhost::mail::MailLayout;
use mailh::*;

const D: &str = "example.test";

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn apply_hashes_plaintext_passwords_as_the_owner_and_the_login_keeps_working() {
    let w = mail_world();
    add_mail_domain(&w, D, OWNER);
    add_mailbox(&w, D, "brian", Some("pw-plain-brian\n"), OWNER);
    let pwfile = w.srv().join(D).join("mailboxes/brian/password");
    w.apply(&[]);

    // The file in /srv now holds a SHA-512-crypt hash, still the owner's and private.
    let stored = read(&pwfile);
    assert!(stored.starts_with("{CRYPT}$6$"), "{stored}");
    let meta = std::fs::metadata(&pwfile).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (OWNER, OWNER, 0o600)
    );
    // Dovecot's passwd-file carries that same hash (no second render with another salt).
    let layout = MailLayout::new(w.config());
    let passwd = read(&layout.passwd_dir.join(D));
    let hash = stored.trim().strip_prefix("{CRYPT}").unwrap();
    assert!(
        passwd.contains(&format!("brian@{D}:{{SHA512-CRYPT}}{hash}:")),
        "{passwd}"
    );
    // The login works over IMAPS with the plaintext, and nothing is left to change.
    assert!(imap_login_ok(&w, "brian@example.test", "pw-plain-brian"));
    assert!(!imap_login_ok(&w, "brian@example.test", "wrong"));
    let out = w.apply(&[]);
    assert!(
        stdout(&out).contains("nothing to change"),
        "{}",
        stdout(&out)
    );

    // A scoped apply (what the daemon runs for a dirty domain) hashes too.
    add_mailbox(&w, D, "carol", Some("pw-plain-carol"), OWNER);
    w.apply(&[D]);
    let stored = read(&w.srv().join(D).join("mailboxes/carol/password"));
    assert!(stored.starts_with("{CRYPT}$6$"), "{stored}");
    assert!(imap_login_ok(&w, "carol@example.test", "pw-plain-carol"));

    // config/mailbox-dont-encrypt-passwords keeps plaintext, and it still logs in.
    write_owned(
        &w.srv()
            .join(D)
            .join("config/mailbox-dont-encrypt-passwords"),
        "",
        OWNER,
        0o644,
    );
    add_mailbox(&w, D, "dave", Some("pw-plain-dave"), OWNER);
    w.apply(&[]);
    assert_eq!(
        read(&w.srv().join(D).join("mailboxes/dave/password")),
        "pw-plain-dave"
    );
    assert!(imap_login_ok(&w, "dave@example.test", "pw-plain-dave"));
}

#[test]
fn mail_state_of_gone_domains_aliases_and_mailboxes_is_removed_but_dkim_keys_stay() {
    // Loopback must not relay here: a name Exim no longer treats as local is then refused
    // at RCPT time, which is what shows that its state file is really gone.
    let w = mail_world_with(|cfg| cfg.mail.relay_from = vec!["192.0.2.0/24".into()]);
    let layout = MailLayout::new(w.config());
    for d in [D, "other.test"] {
        add_mail_domain(&w, d, OWNER);
        add_mailbox(&w, d, "brian", Some("pw-brian-1"), OWNER);
        write_owned(&w.srv().join(d).join("config/dkim"), "", OWNER, 0o644);
    }
    std::os::unix::fs::symlink(D, w.srv().join("alias.test")).unwrap();
    std::os::unix::fs::lchown(w.srv().join("alias.test"), Some(OWNER), Some(OWNER)).unwrap();
    w.apply(&[]);
    let files = |d: &str| {
        vec![
            layout.domains_dir.join(d),
            layout.passwd_dir.join(d),
            layout.dovecot_domains.join(format!("{d}.conf")),
        ]
    };
    for p in files(D).into_iter().chain(files("other.test")).chain([
        layout.domains_dir.join("alias.test"),
        layout.passwd_dir.join("alias.test"),
    ]) {
        assert!(p.is_file(), "{} missing after the first apply", p.display());
    }
    let body = message("bob@remote.test", "brian@alias.test", "via alias", "x");
    smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["brian@alias.test"],
        &body,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", w.servers.logs()));

    // The alias goes (a scoped apply of the alias name, as the daemon runs it): its files
    // go, the domain's stay, and Exim no longer takes mail for it.
    std::fs::remove_file(w.srv().join("alias.test")).unwrap();
    w.apply(&["alias.test"]);
    assert!(!layout.domains_dir.join("alias.test").exists());
    assert!(!layout.passwd_dir.join("alias.test").exists());
    assert!(files(D).iter().all(|p| p.is_file()));
    let e = smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["brian@alias.test"],
        &body,
    );
    assert!(
        e.as_ref().is_err_and(|e| e.starts_with("550")),
        "mail for a removed alias was accepted: {e:?}"
    );

    // A hand-edited Dovecot snippet is never removed.
    let edited = layout.dovecot_domains.join("other.test.conf");
    let text = format!("# mine\n{}", read(&edited));
    std::fs::write(&edited, text).unwrap();

    // other.test stops having mail; example.test disappears altogether (full apply).
    std::fs::remove_dir_all(w.srv().join("other.test/mailboxes")).unwrap();
    std::fs::remove_file(w.srv().join("other.test/config/dkim")).unwrap();
    std::fs::remove_dir_all(w.srv().join(D)).unwrap();
    let out = w.apply(&[]);
    for p in files(D)
        .into_iter()
        .chain(files("other.test").into_iter().take(2))
    {
        assert!(!p.exists(), "{} survived:\n{}", p.display(), stdout(&out));
    }
    assert!(edited.is_file(), "a hand-edited file was removed");
    // DKIM keys are never removed (DNS may still publish them).
    for d in [D, "other.test"] {
        assert!(layout.dkim_key(d).is_file(), "DKIM key of {d} removed");
    }
    let e = smtp_send(
        w.smtp_port(),
        "bob@remote.test",
        &["brian@example.test"],
        &message("bob@remote.test", "brian@example.test", "gone", "x"),
    );
    assert!(
        e.as_ref().is_err_and(|e| e.starts_with("550")),
        "mail for a removed domain was accepted: {e:?}"
    );
    // Nothing left to do.
    let out = w.apply(&[]);
    assert!(
        stdout(&out).contains("nothing to change"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn apply_repairs_the_mail_state_directories() {
    let w = mail_world();
    let layout = MailLayout::new(w.config());
    std::fs::set_permissions(&layout.exim_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(&layout.passwd_dir).unwrap();
    w.apply(&[]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&layout.exim_dir), 0o2750);
    assert!(layout.passwd_dir.is_dir());
    assert_eq!(mode(&layout.passwd_dir), 0o2750);
}
