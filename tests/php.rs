//! PHP for every site, confined to its domain (issue 11): the real dirhost binary, the
//! sandbox's real Apache and a real private PHP-FPM master (`common/php.rs`). Nothing here
//! touches a path outside the sandbox's temp root, nor the system's PHP-FPM.

mod common;
#[path = "common/php.rs"]
mod php_fpm;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use common::*;
use dirhost::sandbox::Sandbox;
use php_fpm::PhpFpm;

/// A sandbox with Apache and a private PHP-FPM running.
fn world() -> (Sandbox, PhpFpm) {
    let mut sb = sandbox();
    let fpm = PhpFpm::start(&mut sb);
    (sb, fpm)
}

fn pool_file(sb: &Sandbox, domain: &str) -> PathBuf {
    sb.config().php.pool_dir.join(format!("{domain}.conf"))
}

/// Creates PHP's private directories (`php/tmp`, `php/sessions`) the way a real apply does
/// once `reconcile` calls `dirhost::php::prepare` before applying.
fn prepare(sb: &Sandbox) {
    let model = dirhost::model::load(sb.srv(), dirhost::reconcile::now()).unwrap();
    let warnings = dirhost::php::prepare(sb.config(), &model);
    assert!(warnings.is_empty(), "{warnings:?}");
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
}

fn get(sb: &Sandbox, host: &str, path: &str) -> dirhost::sandbox::HttpResponse {
    sb.http_get(host, path).unwrap()
}

const WHOAMI: &str = r#"<?php
printf("euid=%d egid=%d groups=%s\n", posix_geteuid(), posix_getegid(), implode(',', posix_getgroups()));
file_put_contents(__DIR__ . '/written.txt', "written by php\n");
$tmp = tempnam(sys_get_temp_dir(), 't');
echo "tmp=$tmp\n";
session_start();
$_SESSION['n'] = 1;
echo "session=" . session_save_path() . '/sess_' . session_id() . "\n";
session_write_close();
echo 'exec=' . (function_exists('exec') ? 'available' : 'disabled') . "\n";
echo 'user_ini=' . var_export(ini_get('user_ini.filename'), true) . "\n";
"#;

#[test]
fn a_php_page_runs_as_the_domain_owner_and_writes_files_as_the_owner() {
    let (sb, fpm) = world();
    sb.add_site("php.test", OWNER, "static").unwrap();
    put(&sb, "php.test", "public/htdocs/whoami.php", WHOAMI, OWNER);
    put(
        &sb,
        "php.test",
        "public/htdocs/app/index.php",
        "<?php echo 'index ' . 'php';",
        OWNER,
    );
    let out = php_fpm::apply(&sb, &[]);
    ok(&out);
    assert!(stdout(&out).contains("reloaded Php"), "{}", stdout(&out));
    prepare(&sb);
    let dir = sb.srv().join("php.test");
    for d in ["php/tmp", "php/sessions"] {
        let m = std::fs::metadata(dir.join(d)).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (OWNER, OWNER, 0o700),
            "{d}"
        );
    }
    // Idle pools cost no processes.
    assert!(fpm.workers().is_empty(), "{:?}", fpm.workers());

    let r = get(&sb, "php.test", "/whoami.php");
    assert_eq!(
        r.status,
        200,
        "{r:?}\n{}\n{}",
        sb.apache_error_log(),
        sb.php_fpm_log()
    );
    assert!(!r.body.contains("<?php"), "source served: {}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{r:?}"
    );
    assert!(
        r.body
            .contains(&format!("euid={OWNER} egid={OWNER} groups={OWNER}\n")),
        "{}",
        r.body
    );
    assert!(r.body.contains("exec=disabled"), "{}", r.body);
    assert!(r.body.contains("user_ini=''"), "{}", r.body);
    // Files the script wrote belong to the owner: in htdocs, in its temp dir, its session.
    let field = |name: &str| {
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {}", r.body))
            .to_string()
    };
    let tmp = PathBuf::from(field("tmp"));
    let session = PathBuf::from(field("session"));
    assert!(tmp.starts_with(dir.join("php/tmp")), "{}", tmp.display());
    assert!(
        session.starts_with(dir.join("php/sessions")),
        "{}",
        session.display()
    );
    for f in [dir.join("public/htdocs/written.txt"), tmp, session] {
        let m = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!((m.uid(), m.gid()), (OWNER, OWNER), "{}", f.display());
    }
    // The worker that served it runs as the owner, and is the domain's own pool.
    let workers = fpm.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].1, "php.test");
    let status = std::fs::read_to_string(format!("/proc/{}/status", workers[0].0)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids, [OWNER; 4], "{uid_line}");

    // index.php is a directory index.
    let r = get(&sb, "php.test", "/app/");
    assert_eq!((r.status, r.body.as_str()), (200, "index php"), "{r:?}");

    // Only Apache's user can use the socket.
    let sock = sb.root().join("run/php/dirhost-php.test.sock");
    let m = std::fs::symlink_metadata(&sock).unwrap();
    let www = nix::unistd::User::from_name("www-data").unwrap().unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o777),
        (www.uid.as_raw(), www.gid.as_raw(), 0o660)
    );

    // `web list --json` shows the PHP state.
    let out = dirhost(&sb, &["web", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == "php.test")
        .unwrap();
    assert_eq!(row["php"]["state"], "on", "{row}");
    assert_eq!(row["php"]["socket"], sock.display().to_string());

    // A second apply changes nothing and reloads nothing.
    let out = php_fpm::apply(&sb, &[]);
    assert!(
        stdout(&out).contains("nothing to change"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_script_cannot_read_another_domains_files() {
    let (sb, _fpm) = world();
    sb.add_site("a.test", OWNER, "a").unwrap();
    sb.add_site("b.test", OTHER, "b").unwrap();
    let secret = put(
        &sb,
        "b.test",
        "secret.txt",
        "B's database password\n",
        OTHER,
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    put(&sb, "b.test", "public.txt", "B's public words\n", OTHER);
    let b = sb.srv().join("b.test");
    let script = format!(
        r#"<?php
$errors = [];
set_error_handler(function ($no, $msg) use (&$errors) {{ $errors[] = $msg; return true; }});
foreach (['{b}/secret.txt', '{b}/public.txt'] as $f) {{
    $errors = [];
    $data = file_get_contents($f);
    echo basename($f), ': ', $data === false ? 'DENIED ' . implode(' | ', $errors) : 'READ ' . $data, "\n";
}}
"#,
        b = b.display()
    );
    put(&sb, "a.test", "public/htdocs/peek.php", &script, OWNER);
    ok(&php_fpm::apply(&sb, &[]));

    // Layer 1: open_basedir.
    let r = get(&sb, "a.test", "/peek.php");
    assert_eq!(r.status, 200, "{r:?}\n{}", sb.apache_error_log());
    for f in ["secret.txt", "public.txt"] {
        assert!(
            r.body
                .lines()
                .any(|l| l.starts_with(&format!("{f}: DENIED"))
                    && l.contains("open_basedir restriction")),
            "{}",
            r.body
        );
    }
    assert!(!r.body.contains("password"), "{}", r.body);

    // Layer 2: permissions. An admin hand-edits a.test's pool to drop open_basedir (dirhost
    // keeps the edit): B's world-readable file is now readable, its 0640 file still is not,
    // because the script runs as A.
    let pool = pool_file(&sb, "a.test");
    let text = std::fs::read_to_string(&pool).unwrap();
    let edited: String = text
        .lines()
        .filter(|l| !l.starts_with("php_admin_value[open_basedir]"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(edited, text);
    std::fs::write(&pool, &edited).unwrap();
    php_fpm::reload(&sb);
    let r = get(&sb, "a.test", "/peek.php");
    assert!(
        r.body.contains("public.txt: READ B's public words"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .lines()
            .any(|l| l.starts_with("secret.txt: DENIED") && l.contains("Permission denied")),
        "{}",
        r.body
    );
    assert!(!r.body.contains("password"), "{}", r.body);
    // ... and dirhost leaves the hand-edited pool alone, and says so.
    let out = php_fpm::apply(&sb, &[]);
    assert!(
        stdout(&out).contains(&format!("kept {}: edited by hand", pool.display())),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&pool).unwrap(), edited);
}

const INI_PROBE: &str = r#"<?php
foreach (['memory_limit', 'date.timezone', 'display_errors', 'upload_max_filesize'] as $k) {
    echo "$k=", ini_get($k), "\n";
}
echo 'raise=', var_export(ini_set('memory_limit', '1G'), true), "\n";
"#;

#[test]
fn config_php_ini_allowed_settings_apply_and_others_are_refused() {
    let (sb, _fpm) = world();
    sb.add_site("ini.test", OWNER, "x").unwrap();
    put(&sb, "ini.test", "public/htdocs/ini.php", INI_PROBE, OWNER);
    put(
        &sb,
        "ini.test",
        "config/php.ini",
        "; mine\n[PHP]\nmemory_limit = 256M\ndate.timezone = \"Europe/Berlin\"\ndisplay_errors = On\nupload_max_filesize = 20m\n",
        OWNER,
    );
    ok(&php_fpm::apply(&sb, &[]));
    let r = get(&sb, "ini.test", "/ini.php");
    assert_eq!(r.status, 200, "{r:?}\n{}", sb.php_fpm_log());
    for want in [
        "memory_limit=256M\n",
        "date.timezone=Europe/Berlin\n",
        "display_errors=1\n",
        "upload_max_filesize=20M\n",
        // A limit is php_admin_value: the script cannot raise it.
        "raise=false\n",
    ] {
        assert!(r.body.contains(want), "missing {want:?} in {}", r.body);
    }
    let pool = pool_file(&sb, "ini.test");
    let before = std::fs::read_to_string(&pool).unwrap();

    // A setting outside the allow-list refuses the file: reported, exit 1, nothing changes.
    put(
        &sb,
        "ini.test",
        "config/php.ini",
        "memory_limit = 512M\nallow_url_include = On\n",
        OWNER,
    );
    let out = php_fpm::apply(&sb, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "failed ini.test: config/php.ini line 2: \"allow_url_include\" cannot be set here"
        ),
        "{text}"
    );
    assert!(!text.contains("reloaded"), "{text}");
    assert_eq!(std::fs::read_to_string(&pool).unwrap(), before);
    let r = get(&sb, "ini.test", "/ini.php");
    assert!(r.body.contains("memory_limit=256M\n"), "{}", r.body);
    let out = dirhost(&sb, &["web", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == "ini.test")
        .unwrap();
    assert_eq!(row["php"]["state"], "refused", "{row}");
    assert!(
        row["php"]["reason"]
            .as_str()
            .unwrap()
            .contains("allow_url_include"),
        "{row}"
    );

    // A bad value is refused the same way.
    put(
        &sb,
        "ini.test",
        "config/php.ini",
        "memory_limit = -1\n",
        OWNER,
    );
    let out = php_fpm::apply(&sb, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("memory_limit: \"-1\" is not a size"),
        "{}",
        stdout(&out)
    );

    // Fixed: the new value goes live with one PHP-FPM reload and no Apache reload.
    put(
        &sb,
        "ini.test",
        "config/php.ini",
        "memory_limit = 512M\n",
        OWNER,
    );
    let out = php_fpm::apply(&sb, &[]);
    ok(&out);
    assert!(stdout(&out).contains("reloaded Php"), "{}", stdout(&out));
    assert!(
        !stdout(&out).contains("reloaded Apache"),
        "{}",
        stdout(&out)
    );
    let r = get(&sb, "ini.test", "/ini.php");
    assert!(r.body.contains("memory_limit=512M\n"), "{}", r.body);
}

#[test]
fn with_php_off_the_source_is_never_served() {
    let (sb, _fpm) = world();
    sb.add_site("off.test", OWNER, "static page").unwrap();
    let source = "<?php echo 'SECRET' . 'SOURCE'; // db password here\n";
    for f in ["info.php", "old.phtml", "x.php5", "UPPER.PHP"] {
        put(
            &sb,
            "off.test",
            &format!("public/htdocs/{f}"),
            source,
            OWNER,
        );
    }
    put(&sb, "off.test", "config/php", "false\n", OWNER);
    ok(&php_fpm::apply(&sb, &[]));
    assert!(!pool_file(&sb, "off.test").exists());
    for path in ["/info.php", "/old.phtml", "/x.php5", "/UPPER.PHP"] {
        let r = get(&sb, "off.test", path);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(
            !r.body.contains("SECRET") && !r.body.contains("<?php"),
            "{path}: {}",
            r.body
        );
    }
    assert_eq!(get(&sb, "off.test", "/").body, "static page");
    let out = dirhost(&sb, &["web", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["php"]["state"], "off", "{rows}");
    assert_eq!(rows[0]["php"]["reason"], "switched off by config/php");

    // Switched on: the same file runs; other PHP extensions are still refused.
    std::fs::remove_file(sb.srv().join("off.test/config/php")).unwrap();
    ok(&php_fpm::apply(&sb, &[]));
    let r = get(&sb, "off.test", "/info.php");
    assert_eq!((r.status, r.body.as_str()), (200, "SECRETSOURCE"), "{r:?}");
    for path in ["/old.phtml", "/x.php5", "/UPPER.PHP"] {
        let r = get(&sb, "off.test", path);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(!r.body.contains("SECRET"), "{path}: {}", r.body);
    }

    // A config/php that is neither on nor off is refused, not guessed.
    put(&sb, "off.test", "config/php", "8.1\n", OWNER);
    let out = php_fpm::apply(&sb, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("failed off.test: config/php says \"8.1\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_pool_that_fails_php_fpm_t_is_left_out_and_the_old_one_keeps_serving() {
    let (sb, _fpm) = world();
    sb.add_site("keep.test", OWNER, "x").unwrap();
    put(
        &sb,
        "keep.test",
        "public/htdocs/i.php",
        "<?php echo 'alive';",
        OWNER,
    );
    ok(&php_fpm::apply(&sb, &[]));
    let pool = pool_file(&sb, "keep.test");
    let good = std::fs::read_to_string(&pool).unwrap();
    assert_eq!(get(&sb, "keep.test", "/i.php").body, "alive");

    // An admin's pool template that php-fpm -t rejects: the domain is left out, its previous
    // pool restored, PHP-FPM not reloaded, and the site keeps working.
    let tpl = sb.config().paths.templates.join("php/pool.conf.tera");
    std::fs::create_dir_all(tpl.parent().unwrap()).unwrap();
    let builtin = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/php/pool.conf.tera"),
    )
    .unwrap();
    std::fs::write(&tpl, format!("{builtin}\nno_such_directive = 1\n")).unwrap();
    let out = php_fpm::apply(&sb, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("left out keep.test"), "{text}");
    assert!(!text.contains("reloaded Php"), "{text}");
    assert_eq!(std::fs::read_to_string(&pool).unwrap(), good);
    assert_eq!(get(&sb, "keep.test", "/i.php").body, "alive");
}

/// BENCHMARKS.md "PHP-FPM (issue 11)": 1,000 domains with PHP configured through the real
/// pipeline, idle: no worker process at all, and the master's memory; then the first request
/// to cold pools (PHP-FPM forks the pool's first process) against warm ones; then the
/// workers exit again once idle. 200 domains by default (CI); the benchmark runs it with
/// `DIRHOST_BENCH_DOMAINS=1000` and `--nocapture` to see the numbers.
#[test]
fn idle_pools_cost_no_processes() {
    let domains: usize = std::env::var("DIRHOST_BENCH_DOMAINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    const COLD: usize = 40;
    assert!(domains >= COLD);
    let (sb, fpm) = world();
    // Idle workers exit after 2 s instead of 10, so the test need not wait long.
    let mut cfg = sb.config().clone();
    cfg.php.idle_timeout_secs = 2;
    std::fs::write(sb.config_path(), cfg.to_toml().unwrap()).unwrap();
    let rss_empty = fpm.master_rss_kib();
    let t0 = std::time::Instant::now();
    for i in 0..domains {
        let d = format!("d{i:04}.test");
        sb.add_site(&d, OWNER + (i as u32 % 50), "x").unwrap();
        put(
            &sb,
            &d,
            "public/htdocs/i.php",
            "<?php echo 'pid ', getmypid();",
            OWNER + (i as u32 % 50),
        );
    }
    let created = t0.elapsed();
    let t1 = std::time::Instant::now();
    let out = php_fpm::apply(&sb, &[]);
    ok(&out);
    let applied = t1.elapsed();
    let pools = std::fs::read_dir(&sb.config().php.pool_dir)
        .unwrap()
        .count();
    assert_eq!(pools, domains);
    assert!(fpm.workers().is_empty(), "idle pools have processes");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", fpm.pid()))
        .unwrap()
        .count();
    let rss_idle = fpm.master_rss_kib();

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..COLD {
        let d = format!("d{:04}.test", i * (domains / COLD));
        for times in [&mut cold, &mut warm] {
            let t = std::time::Instant::now();
            let r = get(&sb, &d, "/i.php");
            times.push(t.elapsed());
            assert!(r.status == 200 && r.body.starts_with("pid "), "{d}: {r:?}");
        }
    }
    let workers = fpm.workers().len();
    let worker_rss: u64 = fpm
        .workers()
        .iter()
        .filter_map(|(pid, _)| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum();
    // Idle again: every worker exits after the idle timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fpm.workers().is_empty() {
        assert!(std::time::Instant::now() < deadline, "workers stayed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cold.sort();
    warm.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "PHP-FPM bench: {domains} domains (sites created in {:.1} s, first apply {:.1} s)\n\
         idle: {} worker processes; master VmRSS {} KiB with {domains} pools ({} KiB with none), {fds} open fds\n\
         cold pool first request over {COLD} domains: min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms\n\
         warm request (same pool, right after): p50 {:.1} ms, p90 {:.1} ms\n\
         after the requests: {workers} workers, {} KiB VmRSS each on average; all gone after the idle timeout",
        created.as_secs_f64(),
        applied.as_secs_f64(),
        0,
        rss_idle,
        rss_empty,
        ms(cold[0]),
        ms(cold[COLD / 2]),
        ms(cold[COLD * 9 / 10]),
        ms(cold[COLD - 1]),
        ms(warm[COLD / 2]),
        ms(warm[COLD * 9 / 10]),
        worker_rss / workers.max(1) as u64,
    );
}

#[test]
fn without_managed_php_the_source_is_not_served_either() {
    // `[php] enabled = false` (a server without php-fpm): no pools, and Apache refuses PHP
    // files since no PHP module is loaded in the sandbox's Apache.
    let sb = sandbox();
    let mut cfg = sb.config().clone();
    cfg.php.enabled = false;
    std::fs::write(sb.config_path(), cfg.to_toml().unwrap()).unwrap();
    sb.add_site("plain.test", OWNER, "static").unwrap();
    put(
        &sb,
        "plain.test",
        "public/htdocs/i.php",
        "<?php echo 'SECRET';",
        OWNER,
    );
    ok(&apply(&sb, &[]));
    assert!(!pool_file(&sb, "plain.test").exists());
    let r = get(&sb, "plain.test", "/i.php");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!r.body.contains("SECRET"));
    assert_eq!(get(&sb, "plain.test", "/").body, "static");
    let out = dirhost(&sb, &["web", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["php"]["state"], "off", "{rows}");
}
