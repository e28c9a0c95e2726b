//! The hostile-/srv catalogue (SECURITY.md), daemon and race part: `dirhost watch` (the real
//! binary) keeps running and keeps serving new good sites while a customer throws FIFOs,
//! huge files, odd names and symlink swaps at it; then symlinks are flipped between check
//! and use by a thread while the real pipeline (model, mail, PHP, full reconciles against the
//! sandbox's real Apache) runs over and over. Waits are polls with generous timeouts.

mod common;
mod hostile;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use dirhost::sandbox::Sandbox;
use hostile::*;

const WAIT: Duration = Duration::from_secs(20);

struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Watcher {
    fn start(sb: &Sandbox) -> Self {
        let log = sb.root().join("hostile-watch.log");
        let child = Command::new(env!("CARGO_BIN_EXE_dirhost"))
            .arg("--config")
            .arg(sb.config_path())
            .args(["-v", "watch"])
            .env_remove("DIRHOST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !w.log().contains("ready: watching") {
            assert!(Instant::now() < deadline, "not ready:\n{}", w.log());
            sleep(Duration::from_millis(50));
        }
        w
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_200(sb: &Sandbox, host: &str, w: &Watcher) {
    let deadline = Instant::now() + WAIT;
    loop {
        if sb.http_get(host, "/").is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} not served within {WAIT:?}:\n{}",
            w.log()
        );
        sleep(Duration::from_millis(50));
    }
}

type Step = (
    &'static str,
    &'static str,
    Box<dyn Fn(&Sandbox, &Path)>,
    &'static str,
);

/// Hostile changes made while the daemon runs: (id, attack, change, text in its log).
fn daemon_steps() -> Vec<Step> {
    vec![
        (
            "D01",
            "config/mandatory-ssl becomes a FIFO",
            Box::new(|_, d| fifo(&d.join("config/mandatory-ssl"), HOSTILE)),
            "not a regular file",
        ),
        (
            "D02",
            "config/ip becomes a 1 GB sparse file",
            Box::new(|_, d| {
                remove_tree(&d.join("config/mandatory-ssl"));
                sparse(&d.join("config/ip"), 1 << 30, HOSTILE)
            }),
            "larger than",
        ),
        (
            "D03",
            "config/ip becomes a symlink to the secret",
            Box::new(|sb, d| link(sb.root().join("secret"), &d.join("config/ip"), HOSTILE)),
            "refusing to follow it",
        ),
        (
            "D04",
            "config/ip gets an injected directive",
            Box::new(|_, d| {
                file(
                    &d.join("config/ip"),
                    b"127.0.0.1\n</VirtualHost>\nInclude /etc/shadow\n",
                    HOSTILE,
                    0o644,
                )
            }),
            "is not an IP address",
        ),
        (
            "D05",
            "a directory with a newline in its name appears in /srv",
            Box::new(|sb, _| mkdirs(&sb.srv().join("x\nready: watching.test"), HOSTILE)),
            "not a valid domain name",
        ),
        (
            "D06",
            "a non-UTF-8 directory appears in /srv",
            Box::new(|sb, _| mkdirs(&raw_name(sb.srv(), b"\xff\xfe.test"), HOSTILE)),
            "not UTF-8",
        ),
        (
            "D07",
            "a root-owned domain appears",
            Box::new(|sb, _| {
                let d = sb.srv().join("rooty.test/public/htdocs");
                std::fs::create_dir_all(&d).unwrap();
            }),
            "owned by uid 0",
        ),
        (
            "D08",
            "public/ becomes a symlink to /etc",
            Box::new(|_, d| {
                remove_tree(&d.join("config/ip"));
                remove_tree(&d.join("public"));
                link("/etc", &d.join("public"), HOSTILE)
            }),
            "refusing to follow it",
        ),
        (
            "D09",
            "config/ becomes a FIFO",
            Box::new(|_, d| {
                remove_tree(&d.join("public"));
                mkdirs(&d.join("public/htdocs"), HOSTILE);
                remove_tree(&d.join("config"));
                fifo(&d.join("config"), HOSTILE)
            }),
            "config/",
        ),
        (
            "D10",
            "htdocs nested 2,000 directories deep",
            Box::new(|_, d| {
                remove_tree(&d.join("config"));
                nested(&d.join("public/htdocs"), "n", 2000, HOSTILE)
            }),
            "",
        ),
        (
            "D11",
            "an alias symlink to another customer's domain, owned by the hostile customer",
            Box::new(|sb, _| {
                link(
                    sb.srv().join("victim.test"),
                    &sb.srv().join("grab.test"),
                    HOSTILE,
                )
            }),
            "alias symlink is owned by uid",
        ),
        (
            "D12",
            "a 255-byte directory name",
            Box::new(|sb, _| mkdirs(&sb.srv().join(format!("{}.test", "z".repeat(250))), HOSTILE)),
            "not a valid domain name",
        ),
        (
            "D13",
            "mailboxes/ becomes a symlink to the victim's mailboxes",
            Box::new(|sb, d| {
                link(
                    sb.srv().join("victim.test/mailboxes"),
                    &d.join("mailboxes"),
                    HOSTILE,
                )
            }),
            "",
        ),
        (
            "D14",
            "config/ssl/current flips to /etc/shadow",
            Box::new(|_, d| {
                mkdirs(&d.join("config/ssl/sets"), HOSTILE);
                link("/etc/shadow", &d.join("config/ssl/current"), HOSTILE)
            }),
            "config/ssl/current points at",
        ),
    ]
}

#[test]
fn hostile_daemon_keeps_running_and_races_never_leak() {
    let sb = sandbox();
    let secret = Sentinel::create(&sb.root().join("secret"), SECRET, 0, 0o600);
    sb.add_site("victim.test", OTHER, "victim site").unwrap();
    let private = Sentinel::create(
        &sb.srv().join("victim.test/private/data.txt"),
        VICTIM_PRIVATE,
        OTHER,
        0o600,
    );
    mkdirs(&sb.srv().join("victim.test/mailboxes/bob/Maildir"), OTHER);
    sb.add_site("hostile.test", HOSTILE, "hostile site")
        .unwrap();
    let hd = sb.srv().join("hostile.test");

    // --- The daemon.
    let mut watcher = Watcher::start(&sb);
    wait_200(&sb, "victim.test", &watcher);
    let mut ran = 0;
    for (i, (id, attack, change, logged)) in daemon_steps().into_iter().enumerate() {
        change(&sb, &hd);
        // Entries whose names are not domain names are not watched (the watcher only maps
        // events to valid names); the full rescan (at start, every resync_secs, on SIGHUP)
        // reports them. Ask for one.
        if ["D05", "D06", "D12"].contains(&id) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(watcher.child.id()).unwrap()),
                nix::sys::signal::Signal::SIGHUP,
            )
            .unwrap();
        }
        // A good site made after the hostile change is served: the daemon processed the
        // batch (or rescan) that contained the hostile change and carried on.
        let good = format!("good{i}.test");
        sb.add_site(&good, OWNER, "good").unwrap();
        wait_200(&sb, &good, &watcher);
        assert!(
            watcher.alive(),
            "{id} ({attack}): the daemon died:\n{}",
            watcher.log()
        );
        if !logged.is_empty() {
            let deadline = Instant::now() + WAIT;
            while !watcher.log().contains(logged) {
                assert!(
                    Instant::now() < deadline,
                    "{id} ({attack}): no {logged:?} in the log:\n{}",
                    watcher.log()
                );
                sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(sb.http_get("victim.test", "/").unwrap().status, 200, "{id}");
        secret.assert_untouched(id);
        private.assert_untouched(id);
        catalogue_row(
            "hostile_daemon",
            id,
            attack,
            &format!("daemon keeps running and serving new sites; logged \"{logged}\""),
        );
        ran += 1;
    }
    // A forged line never appears: the newline in D05's name is escaped in the log.
    assert!(
        !watcher
            .log()
            .lines()
            .any(|l| l.starts_with("ready: watching.test")),
        "a directory name forged a log line:\n{}",
        watcher.log()
    );
    assert!(!watcher.log().contains(SECRET));
    drop(watcher);

    // --- Races: a thread swaps files for symlinks (and back) between dirhost's check and
    // its use, while the pipeline runs again and again.
    for p in ["x\nready: watching.test", "rooty.test", "grab.test"] {
        remove_tree(&sb.srv().join(p));
    }
    remove_tree(&raw_name(sb.srv(), b"\xff\xfe.test"));
    remove_tree(&sb.srv().join(format!("{}.test", "z".repeat(250))));
    remove_tree(&hd);
    sb.add_site("hostile.test", HOSTILE, "hostile site")
        .unwrap();
    let (_, key) = cert_set(sb.root(), &hd, &["hostile.test"], HOSTILE, false);
    mkdirs(&hd.join("mailboxes/alice/Maildir"), HOSTILE);
    file(
        &hd.join("mailboxes/alice/password"),
        b"correct horse",
        HOSTILE,
        0o600,
    );
    file(&hd.join("config/ip"), b"127.0.0.1\n", HOSTILE, 0o644);

    // (place, regular content or directory, symlink target)
    let flips: Vec<(&str, Option<&[u8]>, PathBuf)> = vec![
        ("config/ip", Some(b"127.0.0.1\n"), secret.path.clone()),
        (
            "config/php.ini",
            Some(b"memory_limit = 256M\n"),
            secret.path.clone(),
        ),
        (
            "config/ssl/sets/1/ssl.key",
            Some(key.as_bytes()),
            private.path.clone(),
        ),
        (
            "mailboxes/alice/password",
            Some(b"correct horse"),
            secret.path.clone(),
        ),
        (
            "config/aliases",
            Some(b"info: alice\n"),
            private.path.clone(),
        ),
        (
            "config/ssl/current",
            None,
            sb.srv().join("victim.test/config"),
        ),
        (
            "mailboxes/alice/Maildir",
            None,
            sb.srv().join("victim.test/mailboxes/bob/Maildir"),
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let flipped = Arc::new(AtomicUsize::new(0));
    let flipper = {
        let stop = stop.clone();
        let flipped = flipped.clone();
        let hd = hd.clone();
        let flips: Vec<(String, Option<Vec<u8>>, PathBuf)> = flips
            .iter()
            .map(|(p, c, t)| (p.to_string(), c.map(<[u8]>::to_vec), t.clone()))
            .collect();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (place, content, target) in &flips {
                    let at = hd.join(place);
                    let tmp = at.with_extension("flip-tmp");
                    remove_tree(&tmp);
                    if n.is_multiple_of(2) {
                        link(target, &tmp, HOSTILE);
                    } else {
                        match content {
                            Some(c) => file(&tmp, c, HOSTILE, 0o600),
                            None if place.ends_with("current") => link("sets/1", &tmp, HOSTILE),
                            None => mkdirs(&tmp, HOSTILE),
                        }
                    }
                    // rename() replaces a file or symlink atomically; a directory in the way
                    // is removed first (the window in between is part of the race too).
                    if std::fs::rename(&tmp, &at).is_err() {
                        remove_tree(&at);
                        let _ = std::fs::rename(&tmp, &at);
                    }
                }
                n += 1;
                flipped.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let cfg = sb.config().clone();
    let srv = cfg.paths.srv.clone();
    let mut loads = 0;
    for _ in 0..1500 {
        let model = dirhost::model::load(&srv, dirhost::reconcile::now()).unwrap();
        let mail = dirhost::mail::load(&srv, &model, "host.test");
        let mut seen = format!("{model:?}{mail:?}");
        for d in model.domains.values() {
            seen.push_str(&format!("{:?}", dirhost::php::read(&cfg, &srv, d)));
        }
        assert!(!seen.contains(SECRET), "the secret reached the model");
        assert!(
            !seen.contains(VICTIM_PRIVATE),
            "the victim's file reached the model"
        );
        loads += 1;
    }
    let req = dirhost::reconcile::Request {
        only: None,
        force: false,
        dry_run: false,
        ..Default::default()
    };
    let mut reconciles = 0;
    for _ in 0..25 {
        // A failing reconcile (e.g. a domain skipped mid-flip) is fine; leaking is not.
        let r = dirhost::reconcile::reconcile(&cfg, sb.config_path(), &req);
        if let Ok(r) = &r {
            let text = format!("{r:?}");
            assert!(!text.contains(SECRET) && !text.contains(VICTIM_PRIVATE));
        }
        reconciles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(
        flipped.load(Ordering::Relaxed) > 10,
        "the flipper hardly ran"
    );
    secret.assert_untouched("races");
    private.assert_untouched("races");
    let mut hits = files_containing(sb.root(), SECRET, &[secret.ino]);
    hits.extend(files_containing(sb.root(), VICTIM_PRIVATE, &[private.ino]));
    assert!(hits.is_empty(), "leaked into {hits:?}");
    // The victim's Maildir never got anything through a flipped link, and nothing of the
    // hostile customer's was created in the victim's tree.
    for e in walkdir::WalkDir::new(sb.srv().join("victim.test"))
        .into_iter()
        .filter_map(Result::ok)
    {
        use std::os::unix::fs::MetadataExt;
        let m = e.metadata().unwrap();
        assert_ne!(
            m.uid(),
            HOSTILE,
            "{} made in the victim's tree",
            e.path().display()
        );
    }
    // After the storm: a clean tree applies and every site is served.
    remove_tree(&hd);
    sb.add_site("hostile.test", HOSTILE, "hostile site")
        .unwrap();
    let out = apply(&sb, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for host in ["victim.test", "hostile.test", "good0.test"] {
        assert_eq!(sb.http_get(host, "/").unwrap().status, 200, "{host}");
    }
    for (i, (place, _, target)) in flips.iter().enumerate() {
        catalogue_row(
            "hostile_daemon",
            &format!("R{:02}", i + 1),
            &format!(
                "race: {place} flipped between a regular entry and a symlink to {} while model/mail/PHP loads and full reconciles run",
                target.display()
            ),
            "never read or written through the link; nothing leaks; every site served afterwards",
        );
    }
    ran += flips.len();
    println!(
        "races: {loads} model/mail/php loads and {reconciles} reconciles while {} flip rounds ran",
        flipped.load(Ordering::Relaxed)
    );
    summary("daemon+races", ran);
}
