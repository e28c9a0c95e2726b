//! Benchmarks of `dirhost watch` (issue 3). Run as root (sites are chowned to customers and
//! the private Apache drops to www-data):
//!
//! ```sh
//! sudo cargo bench --bench watch                 # everything; the numbers in BENCHMARKS.md
//! sudo cargo bench --bench watch -- latency      # one part: latency, reconcile, daemon
//! ```
//!
//! - **latency**: `dirhost watch` (the real binary) on a sandbox with its private Apache;
//!   100 times: `add_site` (mkdir -p, index.html, chown), then GET every 2 ms until 200.
//!   Reports p50/p99 of mkdir → HTTP 200.
//! - **reconcile**: the daemon's own work for one dirty domain, i.e. the
//!   `reconcile(Request { only: {one domain} })` call itself, in this process, with 1,000 and
//!   10,000 domains in /srv and Apache's test/reload commands set to `true`. Three cases:
//!   nothing changed, a flag file changed (one vhost rewritten), a new domain appeared. Each
//!   size twice: with the daemon's index of /srv (built by the full reconcile, updated with
//!   the dirty entry before each scoped one, as a batch does), and listing /srv.
//! - **daemon**: `dirhost watch` on 10,000 domains (commands `true`): time to READY, watches,
//!   RSS, mkdir → vhost enabled on disk, then 30 s idle: CPU time (utime+stime) and context
//!   switches of all its threads, which stay flat when nothing happens.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke test with tiny
//! sizes that checks outcomes only; without root it skips.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use dirhost::config::Config;
use dirhost::model::srvindex::Shared as SrvIndex;
use dirhost::reconcile::{self, Request};
use dirhost::sandbox::Sandbox;

const OWNER: u32 = 2001;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let parts: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let want = |p: &str| parts.is_empty() || parts.contains(&p);
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench watch: skipped (needs root: sites are chowned to customers)");
        return;
    }
    println!(
        "dirhost watch benchmarks ({} build, {} mode)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if full { "full" } else { "smoke" }
    );
    if want("latency") {
        latency(if full { 100 } else { 3 });
    }
    if want("reconcile") {
        let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[20] };
        for &n in sizes {
            for indexed in [true, false] {
                reconcile_one(n, if full { 20 } else { 2 }, indexed);
            }
        }
    }
    if want("daemon") {
        daemon(
            if full { 10_000 } else { 20 },
            Duration::from_secs(if full { 30 } else { 1 }),
        );
    }
}

// ---------------------------------------------------------------------------------------

/// `dirhost --config CFG -v watch`, stderr to `log`; killed on drop.
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Watch {
    fn start(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_dirhost"))
            .arg("--config")
            .arg(config)
            .args(["-v", "watch"])
            .env_remove("DIRHOST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start dirhost watch");
        Self { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the READY log line; returns how long it took from now.
    fn wait_ready(&self, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        while !self.log().contains("ready: watching") {
            assert!(t0.elapsed() < timeout, "not ready:\n{}", self.log());
            sleep(Duration::from_millis(10));
        }
        t0.elapsed()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------

fn latency(n: usize) {
    let mut sb = Sandbox::temp().expect("sandbox");
    sb.set_dirhost_binary(Path::new(env!("CARGO_BIN_EXE_dirhost")))
        .expect("binary");
    sb.start_apache().expect("apache");
    let w = Watch::start(sb.config_path(), sb.root().join("watch.log"));
    w.wait_ready(Duration::from_secs(60));
    let before = sb.apache_generation();
    let mut samples = Vec::new();
    for i in 0..n {
        let name = format!("lat{i:03}.test");
        let t0 = Instant::now();
        sb.add_site(&name, OWNER, "x").expect("add_site");
        loop {
            if sb.http_get(&name, "/").is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{name} not served:\n{}",
                w.log()
            );
            sleep(Duration::from_millis(2));
        }
        samples.push(t0.elapsed());
    }
    samples.sort();
    println!(
        "latency: mkdir -> HTTP 200 through Apache, {n} sites one after another: p50 {}, p99 {}, min {}, max {}; {} reloads",
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        sb.apache_generation() - before
    );
}

// ---------------------------------------------------------------------------------------

/// A sandbox whose Apache commands are `true`, with `n` domains `dN.test`.
fn world(n: usize) -> Sandbox {
    let sb = Sandbox::temp().expect("sandbox");
    let mut cfg = sb.config().clone();
    cfg.commands.apache_test = vec!["true".into()];
    cfg.commands.apache_reload = vec!["true".into()];
    cfg.commands.dirhost = PathBuf::from(env!("CARGO_BIN_EXE_dirhost"));
    fs::write(sb.config_path(), cfg.to_toml().expect("toml")).expect("config");
    for i in 0..n {
        make_site(sb.srv(), &format!("d{i}.test"));
    }
    sb
}

fn make_site(srv: &Path, name: &str) {
    let site = srv.join(name);
    let htdocs = site.join("public/htdocs");
    fs::create_dir_all(&htdocs).expect("mkdir");
    fs::write(htdocs.join("index.html"), name).expect("index");
    for p in [
        site.clone(),
        site.join("public"),
        htdocs.clone(),
        htdocs.join("index.html"),
    ] {
        chown(&p, Some(OWNER), Some(OWNER)).expect("chown");
    }
}

fn reconcile_one(n: usize, runs: usize, indexed: bool) {
    let sb = world(n);
    let cfg = Config::load(sb.config_path(), true).expect("config");
    let path = sb.config_path().to_path_buf();
    // As the daemon does: the full resync builds the index of /srv, and each batch updates
    // it from its dirty entries (inside the timed part, as in the daemon's batch) before
    // the scoped reconcile reads /srv's entries from it. Without the index (every other
    // caller): the scoped load lists /srv.
    let index = SrvIndex::default();
    let t0 = Instant::now();
    let req = Request {
        srv_index: indexed.then(|| index.clone()),
        ..Request::default()
    };
    let full = reconcile::reconcile(&cfg, &path, &req).expect("full");
    let full_took = t0.elapsed();
    assert!(full.failed_domains().is_empty());
    assert_eq!(index.entries().is_some(), indexed);

    let one = |d: &str| -> (Duration, usize) {
        let t0 = Instant::now();
        let used = indexed && index.update(sb.srv(), [d]);
        assert_eq!(used, indexed, "the index was dropped");
        let req = Request {
            only: Some(BTreeSet::from([d.to_string()])),
            srv_index: used.then(|| index.clone()),
            ..Request::default()
        };
        let r = reconcile::reconcile(&cfg, &path, &req).expect("reconcile");
        (t0.elapsed(), r.outcome.applied.len())
    };
    let target = format!("d{}.test", n / 2);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        (percentile(&v, 50.0), v[v.len() - 1])
    };

    let mut unchanged = Vec::new();
    for _ in 0..runs {
        let (t, changes) = one(&target);
        assert_eq!(changes, 0);
        unchanged.push(t);
    }
    let mut changed = Vec::new();
    let flag = sb.srv().join(&target).join("config/mandatory-ssl");
    fs::create_dir_all(flag.parent().expect("parent")).expect("config dir");
    chown(flag.parent().expect("parent"), Some(OWNER), Some(OWNER)).expect("chown");
    for i in 0..runs {
        if i % 2 == 0 {
            fs::write(&flag, "").expect("flag");
        } else {
            fs::remove_file(&flag).expect("flag");
        }
        let (t, changes) = one(&target);
        assert!(changes > 0);
        changed.push(t);
    }
    let mut new = Vec::new();
    for i in 0..runs {
        let name = format!("new{i}-{indexed}.test");
        make_site(sb.srv(), &name);
        let (t, changes) = one(&name);
        assert!(changes > 0);
        new.push(t);
    }
    let (u50, umax) = median(unchanged);
    let (c50, cmax) = median(changed);
    let (n50, nmax) = median(new);
    println!(
        "reconcile one dirty domain with {n} domains in /srv ({}; commands `true`, {runs} runs, median/max): \
         unchanged {}/{}, flag changed {}/{}, new domain {}/{}; (full reconcile of all {n}: {})",
        if indexed {
            "daemon's index of /srv"
        } else {
            "listing /srv"
        },
        ms(u50),
        ms(umax),
        ms(c50),
        ms(cmax),
        ms(n50),
        ms(nmax),
        ms(full_took)
    );
}

// ---------------------------------------------------------------------------------------

/// (utime + stime in clock ticks, context switches) summed over every thread of `pid`.
/// CPU ticks (utime + stime) and context switches of the whole process.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    per_thread(pid)
        .values()
        .fold((0, 0), |(t, s), (t1, s1)| (t + t1, s + s1))
}

/// Per thread (`tid name`): CPU ticks (utime + stime) and context switches.
fn per_thread(pid: u32) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let mut ticks = 0;
        let mut switches = 0;
        if let Ok(stat) = fs::read_to_string(dir.join("stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            // Fields after the comm: state is field 3, utime 14, stime 15.
            let f: Vec<&str> = rest.split_whitespace().collect();
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
        if let Ok(status) = fs::read_to_string(dir.join("status")) {
            for l in status.lines() {
                if l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
                {
                    switches += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        let name = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        out.insert(
            format!("{} {}", t.file_name().to_string_lossy(), name.trim()),
            (ticks, switches),
        );
    }
    out
}

fn status_kb(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `config/ssl-provider` = `false`: the certificate maintainer checks the site and has nothing
/// to do (no CA here; without it every site would fail its order and be retried on the
/// backoff schedule, 1, 10 and 100 min later, which is scheduled work, not idleness).
fn no_certificates(srv: &Path, name: &str) {
    let config = srv.join(name).join("config");
    fs::create_dir_all(&config).expect("mkdir config");
    fs::write(config.join("ssl-provider"), "false\n").expect("ssl-provider");
    for p in [config.clone(), config.join("ssl-provider")] {
        chown(&p, Some(OWNER), Some(OWNER)).expect("chown");
    }
}

fn daemon(n: usize, idle: Duration) {
    let t0 = Instant::now();
    let sb = world(n);
    for i in 0..n {
        no_certificates(sb.srv(), &format!("d{i}.test"));
    }
    println!("daemon: generated {n} domains in {}", ms(t0.elapsed()));
    let w = Watch::start(sb.config_path(), sb.root().join("watch.log"));
    let ready = w.wait_ready(Duration::from_secs(600));
    let log = w.log();
    let watching = log
        .lines()
        .find_map(|l| l.split("ready: watching ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let resync = log
        .lines()
        .find(|l| l.contains("full resync:"))
        .and_then(|l| l.split("took_ms=").nth(1))
        .unwrap_or("?")
        .to_string();
    let pid = w.pid();
    println!(
        "daemon: {n} domains: READY after {} (first full resync {resync} ms), {watching} watches, RSS {} KiB (peak {} KiB)",
        ms(ready),
        status_kb(pid, "VmRSS:"),
        status_kb(pid, "VmHWM:")
    );

    // mkdir → vhost enabled on disk, at this size (no Apache: commands are `true`).
    let enabled = sb.config().paths.apache.join("sites-enabled");
    let mut samples = Vec::new();
    for i in 0..5 {
        let name = format!("late{i}.test");
        let t0 = Instant::now();
        make_site(sb.srv(), &name);
        no_certificates(sb.srv(), &name);
        let link = enabled.join(format!("{name}.conf"));
        while fs::symlink_metadata(&link).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "{}", w.log());
            sleep(Duration::from_millis(1));
        }
        samples.push(t0.elapsed());
    }
    samples.sort();
    println!(
        "daemon: {n} domains: mkdir -> vhost enabled on disk (5 sites): median {}, max {}; RSS now {} KiB",
        ms(percentile(&samples, 50.0)),
        ms(samples[samples.len() - 1]),
        status_kb(pid, "VmRSS:")
    );

    // Two more start-up passes over every domain, each a resync of its own: the certificate
    // maintainer's (0-60 s after start) and the statistics catch-up check (60 s after
    // start). Wait for both, and for their memory to be given back.
    let t1 = Instant::now();
    let threads_before = per_thread(pid);
    for line in ["certificate pass done", "statistics: start-up check done"] {
        while !w.log().contains(line) {
            assert!(t1.elapsed() < Duration::from_secs(300), "{}", w.log());
            sleep(Duration::from_millis(100));
        }
    }
    println!(
        "daemon: {n} domains: start-up certificate pass and statistics check done after {}; RSS now {} KiB",
        ms(t1.elapsed()),
        status_kb(pid, "VmRSS:")
    );
    // The watcher thread should not wake for the passes' own reads (no IN_OPEN watched).
    for (thread, (t1, s1)) in per_thread(pid) {
        let (t0, s0) = threads_before.get(&thread).copied().unwrap_or((0, 0));
        println!(
            "daemon: start-up passes: thread {thread}: CPU +{} ticks, context switches +{}",
            t1 - t0,
            s1 - s0
        );
    }
    // Idle: let the last batch and its trailing events settle, then watch the counters.
    sleep(Duration::from_secs(2));
    let threads0 = per_thread(pid);
    let log0 = w.log().len();
    let (cpu0, sw0) = cpu_and_switches(pid);
    sleep(idle);
    let (cpu1, sw1) = cpu_and_switches(pid);
    // What the daemon said while idle (it should say nothing).
    for line in w.log().get(log0..).unwrap_or("").lines().take(20) {
        println!("daemon: idle: log: {line}");
    }
    // Which thread woke, if any did.
    for (thread, (t1, s1)) in per_thread(pid) {
        let (t0, s0) = threads0.get(&thread).copied().unwrap_or((0, 0));
        if (t1, s1) != (t0, s0) {
            println!(
                "daemon: idle: thread {thread}: CPU +{} ticks, context switches +{}",
                t1 - t0,
                s1 - s0
            );
        }
    }
    println!(
        "daemon: idle {}s with {n} domains: CPU {} -> {} ticks (+{}), context switches {} -> {} (+{}), threads {}",
        idle.as_secs(),
        cpu0,
        cpu1,
        cpu1 - cpu0,
        sw0,
        sw1,
        sw1 - sw0,
        fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
    );

    // A periodic resync when nothing changed (what runs every 10 min): SIGHUP asks for one.
    let before = w.log().matches("full resync:").count();
    let t0 = Instant::now();
    let pid_t = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    while w.log().matches("full resync:").count() == before {
        assert!(t0.elapsed() < Duration::from_secs(600), "{}", w.log());
        sleep(Duration::from_millis(10));
    }
    let took = w
        .log()
        .lines()
        .rfind(|l| l.contains("full resync:"))
        .and_then(|l| l.split("took_ms=").nth(1).map(str::to_string))
        .unwrap_or_default();
    println!(
        "daemon: {n} domains: no-op full resync (SIGHUP) {took} ms; RSS after it {} KiB",
        status_kb(pid, "VmRSS:")
    );
}
