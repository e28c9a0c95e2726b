//! Benchmark of `dirhost apply` over a generated /srv of many domains (issue 2).
//!
//! ```sh
//! sudo cargo bench --bench apply                              # 1,000 and 10,000 domains, 5 runs
//! sudo cargo bench --bench apply -- --domains 10000 --runs 3 --keep
//! ```
//!
//! For each size it generates a tree of N domains in a temp dir, then times the real binary
//! (`target/release/dirhost` under `cargo bench`, or `--bin`), `dirhost --config <cfg> apply`:
//!
//! - **cold**: empty `etc/apache2` and state dir, so every file and link is written;
//! - **no-op**: again on the result, nothing to change;
//! - **one new domain**: one domain appeared since the last apply (what the daemon does).
//!
//! Apache's own config test and reload are excluded (`[commands] apache_test` and
//! `apache_reload` are `["true"]`). Wall time is measured around the child, peak RSS is the
//! child's `ru_maxrss` from `wait4`, CPU time its user + system time. Each scenario runs
//! `--runs` times (default 5, 3 above 1,000 domains); the table gives the median, min and
//! max. The load average is printed too: the machine is shared, and wall time (fsync waits
//! above all) suffers from other load. Results are recorded in BENCHMARKS.md.
//!
//! The mix: owners uid/gid 2000 + i % 50; 10 % of the domains have a symlinked alias, 10 %
//! `config/mandatory-ssl` with a certificate set (`sets/0` + `current`, self-signed, made once
//! with `openssl` and cached for the run), 5 % `config/ip` (IPv4, IPv6 or both). Every domain
//! has `public/htdocs/index.html`.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke test: 20 domains,
//! one run of each scenario, with the debug binary, checking outcomes only.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Issue 2's targets at 10,000 domains.
const NOOP_TARGET: Duration = Duration::from_secs(1);
const COLD_TARGET: Duration = Duration::from_secs(5);

struct Opts {
    full: bool,
    domains: Vec<usize>,
    runs: usize,
    dir: Option<PathBuf>,
    keep: bool,
    bin: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench --bench apply -- [--domains N[,N...]] [--runs R] [--dir DIR] [--keep] [--bin PATH]"
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        full: false,
        domains: Vec::new(),
        runs: 0,
        dir: None,
        keep: false,
        bin: PathBuf::from(env!("CARGO_BIN_EXE_dirhost")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bench" => o.full = true,
            "--domains" => {
                o.domains = value()
                    .split(',')
                    .map(|n| n.replace('_', "").parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--runs" => o.runs = value().parse().unwrap_or_else(|_| usage()),
            "--dir" => o.dir = Some(PathBuf::from(value())),
            "--keep" => o.keep = true,
            "--bin" => o.bin = PathBuf::from(value()),
            _ => usage(),
        }
    }
    if o.domains.is_empty() {
        o.domains = if o.full {
            vec![1_000, 10_000]
        } else {
            vec![20]
        };
    }
    if o.runs == 0 && !o.full {
        o.runs = 1;
    }
    o
}

/// One measured run of the binary.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    /// User + system CPU time of the child (less sensitive than wall time to other load).
    cpu: Duration,
    /// Peak resident set size, KiB.
    rss_kib: u64,
    /// Changes it reported (`did …` lines).
    changes: usize,
}

/// A generated tree and its config.
struct World {
    root: PathBuf,
    config: PathBuf,
    domains: usize,
}

fn main() {
    let o = parse_args();
    let root_user = nix::unistd::geteuid().is_root();
    if o.full && !root_user {
        eprintln!("the benchmark chowns domains to many users: run it as root");
        std::process::exit(2);
    }
    let base = match &o.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("dirhost-bench.")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("dirhost-bench.").tempdir(),
    }
    .expect("temp dir");
    let certs = CertCache::new(base.path());
    if o.full {
        print_machine(&o);
    }
    let mut rows = Vec::new();
    for &n in &o.domains {
        let world = generate(&base.path().join(format!("n{n}")), n, &certs, root_user);
        rows.extend(measure(&o, &world));
    }
    if o.full {
        print_table(&rows);
        println!("\nload average at the end: {}", loadavg());
    }
    if o.keep {
        let kept = base.keep();
        eprintln!("kept {}", kept.display());
    }
}

fn print_machine(o: &Opts) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {nproc} CPUs ({cpu}), {:.1} GiB RAM; binary {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        o.bin.display()
    );
    println!("load average at the start: {}", loadavg());
}

/// /proc/loadavg's 1, 5 and 15 minute averages: wall times mean little on a busy machine.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Self-signed certificates by domain, made with the openssl CLI from one shared key (the
/// bench measures dirhost, not key generation), cached across sizes.
struct CertCache {
    dir: PathBuf,
    key: String,
    made: Mutex<BTreeMap<String, String>>,
}

impl CertCache {
    fn new(base: &Path) -> Self {
        let dir = base.join("certs");
        fs::create_dir_all(&dir).unwrap();
        let key_path = dir.join("key.pem");
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .arg("-out")
            .arg(&key_path));
        Self {
            key: fs::read_to_string(&key_path).unwrap(),
            dir,
            made: Mutex::new(BTreeMap::new()),
        }
    }

    fn get(&self, domain: &str) -> String {
        if let Some(c) = self.made.lock().unwrap().get(domain) {
            return c.clone();
        }
        let out = Command::new("openssl")
            .args(["req", "-x509", "-key"])
            .arg(self.dir.join("key.pem"))
            .args(["-days", "365", "-subj", &format!("/CN={domain}")])
            .args([
                "-addext",
                &format!("subjectAltName=DNS:{domain},DNS:www.{domain}"),
            ])
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = String::from_utf8(out.stdout).unwrap();
        self.made
            .lock()
            .unwrap()
            .insert(domain.to_string(), pem.clone());
        pem
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn domain(i: usize) -> String {
    format!("d{i:05}.bench.test")
}

/// Writes the tree of `n` domains and the config under `root`.
fn generate(root: &Path, n: usize, certs: &CertCache, chown: bool) -> World {
    let t = Instant::now();
    let srv = root.join("srv");
    for d in ["srv", "state", "etc/apache2", "run"] {
        mkdir(&root.join(d));
    }
    // Certificates first, on every CPU: openssl dominates generation.
    let with_cert: Vec<String> = (0..n).filter(|i| i % 10 == 2).map(domain).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for chunk in with_cert.chunks(with_cert.len().div_ceil(threads).max(1)) {
            s.spawn(|| chunk.iter().for_each(|d| drop(certs.get(d))));
        }
    });
    let own_uid = nix::unistd::geteuid().as_raw();
    for i in 0..n {
        let name = domain(i);
        let id = if chown {
            2000 + (i % 50) as u32
        } else {
            own_uid
        };
        let dir = srv.join(&name);
        let mut made = vec![dir.clone()];
        let htdocs = dir.join("public/htdocs");
        mkdir(&htdocs);
        made.push(dir.join("public"));
        made.push(htdocs.clone());
        made.push(file(
            &htdocs.join("index.html"),
            &format!("<h1>{name}</h1>\n"),
        ));
        let config = dir.join("config");
        if i % 10 == 2 || i % 20 == 5 {
            mkdir(&config);
            made.push(config.clone());
        }
        if i % 10 == 1 {
            let alias = srv.join(format!("a{i:05}.bench.test"));
            symlink(&name, &alias).unwrap();
            made.push(alias);
        }
        if i % 10 == 2 {
            made.push(file(&config.join("mandatory-ssl"), ""));
            let set = config.join("ssl/sets/0");
            mkdir(&set);
            made.push(config.join("ssl"));
            made.push(config.join("ssl/sets"));
            made.push(set.clone());
            made.push(file(&set.join("ssl.crt"), &certs.get(&name)));
            made.push(file(&set.join("ssl.key"), &certs.key));
            let current = config.join("ssl/current");
            symlink("sets/0", &current).unwrap();
            made.push(current);
        }
        if i % 20 == 5 {
            let ip = match i % 3 {
                0 => format!("192.0.2.{}\n", i % 250 + 1),
                1 => format!("2001:db8::{i:x}\n"),
                _ => format!("192.0.2.{} 2001:db8::{i:x}\n", i % 250 + 1),
            };
            made.push(file(&config.join("ip"), &ip));
        }
        if chown {
            for p in made {
                lchown(&p, Some(id), Some(id)).unwrap();
            }
        }
    }
    let config = root.join("dirhost.toml");
    // Every path under `root` (the sandbox's rooted config: never the live /etc), every
    // service's test and reload excluded.
    let mut cfg = dirhost::sandbox::sandbox_config(root, 8080, 8443, "/usr/bin/dirhost".into());
    let t_ = |_: &Vec<String>| vec!["true".to_string()];
    let c = &mut cfg.commands;
    c.apache_test = t_(&c.apache_test);
    c.apache_reload = t_(&c.apache_reload);
    c.exim_test = t_(&c.exim_test);
    c.exim_reload = t_(&c.exim_reload);
    c.dovecot_test = t_(&c.dovecot_test);
    c.dovecot_reload = t_(&c.dovecot_reload);
    c.php_test = t_(&c.php_test);
    c.php_reload = t_(&c.php_reload);
    cfg.web.hostname = "bench.test".into();
    for dir in [
        &cfg.paths.exim,
        &cfg.paths.dovecot,
        &cfg.php.pool_dir,
        &cfg.php.socket_dir,
    ] {
        assert!(
            dir.starts_with(root),
            "{} escapes the bench root",
            dir.display()
        );
    }
    fs::write(&config, cfg.to_toml().unwrap()).unwrap();
    eprintln!(
        "generated {n} domains in {} ({:.1} s)",
        root.display(),
        t.elapsed().as_secs_f64()
    );
    // What every cold run starts from: dirhost's output directories as they are now.
    let pristine = root.join("pristine");
    mkdir(&pristine);
    for d in OUTPUTS {
        run(Command::new("cp")
            .arg("-a")
            .arg(root.join(d))
            .arg(&pristine));
    }
    World {
        root: root.to_path_buf(),
        config,
        domains: n,
    }
}

/// The directories under the bench root that dirhost writes into (every output path of the
/// config is below one of them; `generate` checks the services' directories).
const OUTPUTS: [&str; 3] = ["etc", "state", "run"];

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn file(p: &Path, contents: &str) -> PathBuf {
    fs::write(p, contents).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    p.to_path_buf()
}

/// Runs `dirhost --config <cfg> apply` and measures it. Panics unless it exits 0 and its
/// stdout contains `expect`.
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also returns its rusage"
)]
fn apply(o: &Opts, w: &World, expect: &str) -> Sample {
    let out_path = w.root.join("apply.stdout");
    let err_path = w.root.join("apply.stderr");
    let start = Instant::now();
    let child = Command::new(&o.bin)
        .arg("--config")
        .arg(&w.config)
        .arg("apply")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run dirhost");
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers; std's Child is never waited on.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let stdout = fs::read_to_string(&out_path).unwrap();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(
        ok && stdout.contains(expect),
        "dirhost apply (status {status:#x}) did not say {expect:?}:\n{}\n{}",
        tail(&stdout),
        tail(&fs::read_to_string(&err_path).unwrap_or_default())
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Sample {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
        changes: stdout.lines().filter(|l| l.starts_with("did ")).count(),
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Puts dirhost's output directories back as they were before the first apply, so the next
/// apply is cold. The old output is moved aside, not deleted: ext4 allocates inodes more
/// slowly right after mass deletes, which a real first apply does not suffer. Then `sync`,
/// so the run does not pay for earlier writes (the generated tree, the previous run).
fn reset(w: &World) {
    let trash = w.root.join("trash");
    mkdir(&trash);
    let n = fs::read_dir(&trash).unwrap().count();
    for d in OUTPUTS {
        fs::rename(w.root.join(d), trash.join(format!("{n}-{d}"))).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(w.root.join("pristine").join(d))
            .arg(&w.root));
    }
    nix::unistd::sync();
}

struct Row {
    domains: usize,
    scenario: &'static str,
    samples: Vec<Sample>,
    target: Option<Duration>,
}

/// `--runs`, else 5 (3 above 1,000 domains, where a cold run takes minutes).
fn runs(o: &Opts, domains: usize) -> usize {
    match o.runs {
        0 if domains > 1_000 => 3,
        0 => 5,
        n => n,
    }
}

fn measure(o: &Opts, w: &World) -> Vec<Row> {
    let runs = runs(o, w.domains);
    let mut cold = Vec::new();
    for _ in 0..runs {
        reset(w);
        cold.push(apply(o, w, "reloaded"));
    }
    let sites = fs::read_dir(w.root.join("etc/apache2/sites-available"))
        .unwrap()
        .count();
    assert_eq!(sites, w.domains, "one vhost per domain");
    // Every cold run really started from scratch.
    assert!(
        cold.iter()
            .all(|s| s.changes == cold[0].changes && s.changes > 2 * w.domains),
        "cold runs made different numbers of changes: {:?}",
        cold.iter().map(|s| s.changes).collect::<Vec<_>>()
    );
    let mut noop = Vec::new();
    for _ in 0..runs {
        noop.push(apply(o, w, "nothing to change"));
    }
    let mut one = Vec::new();
    for k in 0..runs {
        let dir = w.root.join(format!("srv/new{k}.bench.test"));
        let htdocs = dir.join("public/htdocs");
        mkdir(&htdocs);
        let index = file(&htdocs.join("index.html"), "new\n");
        if nix::unistd::geteuid().is_root() {
            for p in [&dir, &dir.join("public"), &htdocs, &index] {
                lchown(p, Some(2999), Some(2999)).unwrap();
            }
        }
        one.push(apply(o, w, "reloaded"));
    }
    let at_target = w.domains >= 10_000;
    vec![
        Row {
            domains: w.domains,
            scenario: "cold (writes everything)",
            samples: cold,
            target: at_target.then_some(COLD_TARGET),
        },
        Row {
            domains: w.domains,
            scenario: "no-op",
            samples: noop,
            target: at_target.then_some(NOOP_TARGET),
        },
        Row {
            domains: w.domains,
            scenario: "one new domain",
            samples: one,
            target: None,
        },
    ]
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| domains | scenario | runs | wall median | wall min | wall max | CPU median | peak RSS median | peak RSS max | target |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let walls: Vec<Duration> = r.samples.iter().map(|s| s.wall).collect();
        let rss: Vec<u64> = r.samples.iter().map(|s| s.rss_kib).collect();
        let cpu: Vec<Duration> = r.samples.iter().map(|s| s.cpu).collect();
        let med = median(walls.clone());
        let target = match r.target {
            Some(t) if med < t => format!("< {} s: met", t.as_secs()),
            Some(t) => format!("< {} s: **NOT met**", t.as_secs()),
            None => "-".into(),
        };
        println!(
            "| {} | {} | {} | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.1} MiB | {:.1} MiB | {} |",
            r.domains,
            r.scenario,
            r.samples.len(),
            med.as_secs_f64(),
            walls.iter().min().unwrap().as_secs_f64(),
            walls.iter().max().unwrap().as_secs_f64(),
            median(cpu).as_secs_f64(),
            median(rss.clone()) as f64 / 1024.0,
            *rss.iter().max().unwrap() as f64 / 1024.0,
            target
        );
    }
}
