//! A real, private PHP-FPM for the system tests.
//!
//! [`PhpFpm::start`] points the sandbox's `[commands] php_test`/`php_reload` at the installed
//! `php-fpm<version>` with the sandbox's own `etc/php/fpm/php-fpm.conf`
//! (`Sandbox::use_php_fpm`) and runs that master in the foreground as
//! `php-fpm<version> -y <conf> -F`. Its pid file, log and sockets are inside the sandbox root;
//! it never reads /etc/php/*/fpm/php-fpm.conf or pool.d, and the system's php-fpm service is
//! never started, stopped or reloaded. Dropping the guard stops the master (SIGTERM, then
//! SIGKILL) by its pid, which stays the same across reloads (PHP-FPM re-executes itself).
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dirhost::sandbox::Sandbox;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The installed PHP-FPM binary (`/usr/sbin/php-fpm<newest version>`).
pub fn fpm_binary() -> PathBuf {
    let v = dirhost::php::default_version()
        .expect("no /usr/sbin/php-fpm<version>: install php-fpm (scripts/test.sh does)");
    PathBuf::from(format!("/usr/sbin/php-fpm{v}"))
}

/// A running private PHP-FPM master; stopped on drop.
pub struct PhpFpm {
    child: Child,
}

impl PhpFpm {
    /// Configures `sb` for its private PHP-FPM and starts it; waits until it is ready.
    pub fn start(sb: &mut Sandbox) -> Self {
        let bin = fpm_binary();
        sb.use_php_fpm(&bin).expect("configure php-fpm");
        let logs = sb.root().join("logs");
        let out = std::fs::File::create(logs.join("php-fpm.stdout")).unwrap();
        let err = std::fs::File::create(logs.join("php-fpm.stderr")).unwrap();
        let before = sb.php_fpm_generation();
        let mut cmd = Command::new(&bin);
        // One listening socket per pool: let the master open as many files as the hard
        // limit allows (a shell's soft limit is often 1024).
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                Ok(())
            });
        }
        let child = cmd
            .arg("-y")
            .arg(sb.php_fpm_conf())
            .arg("-F")
            .current_dir(sb.root())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn php-fpm");
        let mut fpm = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = fpm.child.try_wait() {
                panic!(
                    "php-fpm exited during startup ({status}):\n{}\n{}",
                    std::fs::read_to_string(logs.join("php-fpm.stderr")).unwrap_or_default(),
                    sb.php_fpm_log()
                );
            }
            let pid = std::fs::read_to_string(sb.php_fpm_pid_file()).unwrap_or_default();
            if sb.php_fpm_generation() > before && pid.trim() == fpm.child.id().to_string() {
                return fpm;
            }
            assert!(
                Instant::now() < deadline,
                "php-fpm did not start:\n{}",
                sb.php_fpm_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's worker processes right now: (pid, pool name) from /proc.
    pub fn workers(&self) -> Vec<(i32, String)> {
        let master = self.pid().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut f = rest.split_whitespace();
            let state = f.next().unwrap_or("");
            let ppid = f.next().unwrap_or("");
            if ppid != master || state == "Z" {
                continue;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let pool = cmd
                .trim()
                .strip_prefix("php-fpm: pool ")
                .unwrap_or(cmd.trim())
                .to_string();
            out.push((pid, pool));
        }
        out
    }

    /// Resident memory of the master in KiB (`VmRSS`).
    pub fn master_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dirhost apply ARGS`, then waits for the reloads it reports: Apache's and PHP-FPM's.
pub fn apply(sb: &Sandbox, args: &[&str]) -> Output {
    let apache = sb.apache_generation();
    let php = sb.php_fpm_generation();
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let out = crate::common::dirhost(sb, &all);
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("reloaded Apache") {
        sb.wait_apache_generation(apache + 1)
            .expect("apache reload");
    }
    if text.contains("reloaded Php") {
        sb.wait_php_fpm_generation(php + 1).expect("php-fpm reload");
    }
    out
}

/// Runs the sandbox's `[commands] php_reload` and waits until PHP-FPM has reloaded.
pub fn reload(sb: &Sandbox) {
    let before = sb.php_fpm_generation();
    let argv = &sb.config().commands.php_reload;
    let st = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
    assert!(st.success(), "{argv:?}");
    sb.wait_php_fpm_generation(before + 1).unwrap();
}
