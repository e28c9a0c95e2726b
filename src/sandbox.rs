//! A self-contained dirhost world under one directory, with a private loopback Apache.
//!
//! Used by the integration tests (`tests/*.rs`) and by `dirhost demo`. A [`Sandbox`] owns
//! one root directory and lays out, inside it, everything dirhost reads and writes: the
//! `srv/` tree of domains, dirhost's `state/`, the `etc/` trees for Apache, Exim, Dovecot and
//! dirhost itself (including `etc/dirhost/dirhost.toml`, the [`Config`] that points every
//! path inside the root), plus `run/`, `logs/` and the `httpd.conf` of its own Apache.
//!
//! That Apache is the system `apache2` binary started as
//! `apache2 -f <root>/httpd.conf -DFOREGROUND`, listening on two free ports on 127.0.0.1
//! only. Its `httpd.conf` names only paths inside the root, plus read-only system files (the
//! module `.so` files and `/etc/mime.types`).
//!
//! What it must not do: touch anything outside its root. It never reads or writes
//! `/etc/apache2` (or any other live config), never starts, stops or reloads a system
//! service, and never binds a public address. Stopping Apache only ever signals processes
//! whose command line names this sandbox's own `httpd.conf`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::config::{Acme, Commands, Config, Paths, Php, Ports, Web};

/// The Apache binary. Called directly: `apache2ctl` sources `/etc/apache2/envvars` and
/// assumes the Debian layout.
const APACHE_BIN: &str = "apache2";
/// Where Debian's apache2 package installs its loadable modules.
const MODULE_DIR: &str = "/usr/lib/apache2/modules";
/// The modules the sandbox's Apache loads (when not built in and when present), in load
/// order: `proxy` before `proxy_fcgi`, `socache_shmcb` before `ssl`.
const MODULES: &[&str] = &[
    "mpm_event",
    "authz_core",
    "authz_host",
    "authz_user",
    "authn_core",
    "authn_file",
    "auth_basic",
    "access_compat",
    "mime",
    "dir",
    "alias",
    "rewrite",
    "headers",
    "socache_shmcb",
    "ssl",
    "cgid",
    "remoteip",
    "env",
    "setenvif",
    "proxy",
    "proxy_fcgi",
];
/// `[web] hostname` of every sandbox.
const HOSTNAME: &str = "dirhost.test";
/// `[php] pool_dir` of every sandbox, relative to its root.
const PHP_POOL_DIR: &str = "etc/php/fpm/pool.d";
/// The private PHP-FPM master's own config, relative to the root (see [`php_fpm_conf`]).
const PHP_FPM_CONF: &str = "etc/php/fpm/php-fpm.conf";
/// What PHP-FPM logs each time it has (re)loaded its configuration.
const PHP_LOADED_LINE: &str = "ready to handle connections";
/// Marks a directory as a sandbox root, so [`Sandbox::at`] can tell its own tree from a
/// directory it must not write into.
const MARKER: &str = ".dirhost-sandbox";
/// The Apache log line that ends every (re)load of the configuration (AH00489). Logged at
/// notice level, which Apache writes whatever the `LogLevel`.
const LOADED_LINE: &str = "resuming normal operations";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Ports handed out to sandboxes of this process, so parallel tests never get the same one
/// between our probe and Apache's bind.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// One sandbox root and, once started, its Apache.
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    config: Config,
    config_path: PathBuf,
    srv: PathBuf,
    apache: Option<Child>,
    /// Dropped after `Drop::drop` has stopped Apache, which removes the tree.
    _tmp: Option<TempDir>,
}

impl Sandbox {
    /// Lay out a sandbox in a fresh temp dir (removed on drop). For tests.
    pub fn temp() -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("dirhost-sandbox.")
            .tempdir()
            .context("failed to create the sandbox temp dir")?;
        let root = tmp
            .path()
            .canonicalize()
            .with_context(|| format!("failed to resolve {}", tmp.path().display()))?;
        Self::lay_out(root, Some(tmp), None)
    }

    /// Lay out (or reuse) a sandbox in `dir` (kept on drop). For `dirhost demo`.
    ///
    /// `dir` must be missing, empty, or a sandbox made earlier. When reusing, the `srv/` tree
    /// and everything else under the root is kept, the config and `httpd.conf` are rewritten
    /// (keeping the old ports if they are still free), and an Apache left over from an
    /// earlier run of this sandbox is stopped.
    pub fn at(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let root = dir
            .canonicalize()
            .with_context(|| format!("failed to resolve {}", dir.display()))?;
        let reused = root.join(MARKER).exists();
        if !reused {
            let mut entries = fs::read_dir(&root)
                .with_context(|| format!("failed to list {}", root.display()))?;
            ensure!(
                entries.next().is_none(),
                "{} is neither empty nor a dirhost sandbox (no {MARKER} file); refusing to write into it",
                root.display()
            );
        }
        let old_ports = if reused {
            // An Apache left by an earlier run (say the demo was killed) holds the ports.
            stop_apache_processes(&root.join("httpd.conf"));
            Config::load(&root.join("etc/dirhost/dirhost.toml"), true)
                .ok()
                .map(|c| (c.ports.http, c.ports.https))
        } else {
            None
        };
        Self::lay_out(root, None, old_ports)
    }

    /// The sandbox root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config written to [`Sandbox::config_path`].
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `<root>/etc/dirhost/dirhost.toml`, already written.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `<root>/srv`, the tree of domains.
    pub fn srv(&self) -> &Path {
        &self.srv
    }

    /// The plain HTTP port Apache listens on (127.0.0.1).
    pub fn http_port(&self) -> u16 {
        self.config.ports.http
    }

    /// The HTTPS port Apache listens on (127.0.0.1).
    pub fn https_port(&self) -> u16 {
        self.config.ports.https
    }

    /// `<root>/httpd.conf`, the sandbox Apache's server config.
    pub fn httpd_conf(&self) -> PathBuf {
        self.root.join("httpd.conf")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("run/httpd.pid")
    }

    fn error_log_path(&self) -> PathBuf {
        self.root.join("logs/error.log")
    }

    fn lay_out(root: PathBuf, tmp: Option<TempDir>, old_ports: Option<(u16, u16)>) -> Result<Self> {
        let root_str = root
            .to_str()
            .with_context(|| format!("sandbox root {} is not UTF-8", root.display()))?;
        ensure!(
            root.is_absolute(),
            "sandbox root {root_str} is not absolute"
        );
        // Paths go into httpd.conf inside double quotes, one directive per line.
        ensure!(
            !root_str.contains(['"', '\\', '\n', '\r']),
            "sandbox root {root_str:?} contains a quote, backslash or newline"
        );
        if nix::unistd::geteuid().is_root() {
            check_www_data_can_reach(&root)?;
        }

        for dir in [
            "",
            "srv",
            "state",
            "etc",
            "etc/apache2",
            "etc/apache2/sites-available",
            "etc/apache2/sites-enabled",
            "etc/apache2/conf-available",
            "etc/apache2/conf-enabled",
            "etc/exim4",
            "etc/dovecot",
            "etc/dirhost",
            "etc/dirhost/templates",
            "etc/php",
            "etc/php/fpm",
            PHP_POOL_DIR,
            "run",
            "run/php",
            "logs",
            "htdocs",
        ] {
            let path = root.join(dir);
            fs::create_dir_all(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
            // TempDir makes the root 0700 and the umask may strip bits: Apache's workers
            // run as www-data and must traverse down to every site's htdocs.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("failed to chmod {}", path.display()))?;
        }
        write_file(
            &root.join(MARKER),
            "This directory is a dirhost sandbox (dirhost::sandbox); `dirhost demo --dir` may reuse it.\n",
        )?;

        let (http, https) = match old_ports {
            Some((h, s)) if h != s && claim_if_free(h) && claim_if_free(s) => (h, s),
            _ => free_port_pair()?,
        };
        let mut config = sandbox_config(&root, http, https, find_dirhost_binary());
        // Mail: five more loopback ports (smtp, smtps, submission, imaps, pop3s).
        let mail_ports = free_ports::<5>()?;
        config.mail = crate::mail::sandbox::config(&root, mail_ports);
        let config_path = root.join("etc/dirhost/dirhost.toml");
        write_config(&config, &config_path)?;

        let modules = modules_to_load()?;
        let as_root = nix::unistd::geteuid().is_root();
        write_file(
            &root.join("httpd.conf"),
            &httpd_conf(&root, http, https, as_root, &modules),
        )?;
        write_file(&root.join(PHP_FPM_CONF), &php_fpm_conf(&root))?;
        crate::mail::sandbox::lay_out(&root, &config)?;

        Ok(Self {
            srv: root.join("srv"),
            config,
            config_path,
            root,
            apache: None,
            _tmp: tmp,
        })
    }

    /// Points `[commands] dirhost` (the binary Apache runs as its piped access-log writer) at
    /// `bin` and rewrites the config file. Integration tests pass
    /// `env!("CARGO_BIN_EXE_dirhost")`; by default the sandbox guesses (see
    /// [`find_dirhost_binary`]).
    pub fn set_dirhost_binary(&mut self, bin: &Path) -> Result<()> {
        ensure!(
            bin.is_absolute(),
            "{} is not an absolute path",
            bin.display()
        );
        let mut config = self.config.clone();
        config.commands.dirhost = bin.to_path_buf();
        write_config(&config, &self.config_path)?;
        self.config = config;
        Ok(())
    }

    /// Start the private Apache (`apache2 -f <root>/httpd.conf -DFOREGROUND`), wait until
    /// the http port accepts, error with Apache's stderr/error_log if it dies.
    ///
    /// Does nothing if this sandbox's Apache is already running.
    pub fn start_apache(&mut self) -> Result<()> {
        if let Some(child) = &mut self.apache {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
            self.apache = None;
        }
        // `apache2 -k graceful` starts a detached daemon when none is running; it would hold
        // our ports and our pidfile.
        self.stop_stray_apache();
        let _ = fs::remove_file(self.pid_file());

        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_and_wait() {
                Ok(child) => {
                    self.apache = Some(child);
                    return Ok(());
                }
                // Another process briefly held one of our ports (we cannot reserve a port
                // for Apache between probing it and Apache binding it): try again.
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn_and_wait(&self) -> Result<Child> {
        let logs = self.root.join("logs");
        let stdout = fs::File::create(logs.join("apache.stdout"))?;
        let stderr_path = logs.join("apache.stderr");
        let stderr = fs::File::create(&stderr_path)?;
        let conf = self.httpd_conf();
        // Apache writes its pidfile and accepts connections a moment before it logs that it
        // has finished loading; a reload sent in that window would be counted as the start.
        let generation = self.apache_generation();
        let mut child = Command::new(APACHE_BIN)
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to run {APACHE_BIN} (is apache2 installed?)"))?;

        let describe = |what: String| {
            let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
            anyhow::anyhow!(
                "{what}\n--- apache2 stderr ---\n{}\n--- {} ---\n{}",
                stderr.trim_end(),
                self.error_log_path().display(),
                tail(&self.apache_error_log(), 40)
            )
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(describe(format!(
                    "apache2 exited during startup ({status})"
                )));
            }
            // The pidfile is written after the listeners are bound; checking that it names
            // our child also rules out another process answering on the port.
            let ours = read_pid(&self.pid_file()) == i32::try_from(child.id()).ok();
            if ours
                && self.apache_generation() > generation
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(child);
            }
            if Instant::now() > deadline {
                stop_child(&mut child);
                return Err(describe(format!(
                    "apache2 did not accept on {addr} within {START_TIMEOUT:?}"
                )));
            }
            sleep(POLL);
        }
    }

    /// SIGTERM, wait (bounded), SIGKILL fallback; also called by Drop.
    ///
    /// Also stops any other Apache running this sandbox's httpd.conf, such as the detached
    /// one the reload command (`apache2 -k graceful`) starts when none is running, or
    /// workers a SIGKILLed master left behind.
    pub fn stop_apache(&mut self) {
        if let Some(mut child) = self.apache.take() {
            stop_child(&mut child);
        }
        self.stop_stray_apache();
    }

    fn stop_stray_apache(&self) {
        stop_apache_processes(&self.httpd_conf());
    }

    /// Contents of the server-level error log, for test failure messages.
    pub fn apache_error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// How many times Apache has finished loading its configuration: grows by one on each
    /// start and each completed graceful reload (it counts the "resuming normal operations"
    /// lines of the error log, which a reused [`Sandbox::at`] dir keeps from earlier runs).
    pub fn apache_generation(&self) -> usize {
        self.apache_error_log()
            .lines()
            .filter(|l| l.contains(LOADED_LINE))
            .count()
    }

    /// Waits until [`Sandbox::apache_generation`] reaches `generation`. A reload
    /// (`apache2 -k graceful`) only sends a signal and returns before Apache has re-read its
    /// configuration, so take the generation before the reload and wait for it plus one.
    pub fn wait_apache_generation(&self, generation: usize) -> Result<()> {
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.apache_generation() < generation {
            if Instant::now() > deadline {
                bail!(
                    "Apache did not reach config generation {generation} within {RELOAD_TIMEOUT:?}\n--- error.log ---\n{}",
                    tail(&self.apache_error_log(), 40)
                );
            }
            sleep(POLL);
        }
        Ok(())
    }

    /// [`http_get`] against this sandbox's HTTP port.
    pub fn http_get(&self, host: &str, path: &str) -> Result<HttpResponse> {
        http_get(self.http_port(), host, path)
    }

    /// `<root>/etc/php/fpm/php-fpm.conf`: the config of a private PHP-FPM master for this
    /// sandbox. It includes the pools dirhost writes to `[php] pool_dir` (inside the root)
    /// and keeps its pid, log and sockets inside the root.
    pub fn php_fpm_conf(&self) -> PathBuf {
        self.root.join(PHP_FPM_CONF)
    }

    /// `<root>/run/php-fpm.pid`, written by the private PHP-FPM master.
    pub fn php_fpm_pid_file(&self) -> PathBuf {
        self.root.join("run/php-fpm.pid")
    }

    /// `<root>/logs/php-fpm.log`, the private PHP-FPM master's log.
    pub fn php_fpm_log_path(&self) -> PathBuf {
        self.root.join("logs/php-fpm.log")
    }

    /// Contents of the PHP-FPM log, for test failure messages.
    pub fn php_fpm_log(&self) -> String {
        fs::read_to_string(self.php_fpm_log_path()).unwrap_or_default()
    }

    /// How many times the private PHP-FPM master has finished loading its configuration
    /// (start or reload): the "ready to handle connections" lines of its log.
    pub fn php_fpm_generation(&self) -> usize {
        self.php_fpm_log()
            .lines()
            .filter(|l| l.contains(PHP_LOADED_LINE))
            .count()
    }

    /// Waits until [`Sandbox::php_fpm_generation`] reaches `generation` (a reload is a
    /// signal: the master re-reads its configuration after the command returned).
    pub fn wait_php_fpm_generation(&self, generation: usize) -> Result<()> {
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.php_fpm_generation() < generation {
            if Instant::now() > deadline {
                bail!(
                    "PHP-FPM did not reach config generation {generation} within {RELOAD_TIMEOUT:?}\n--- php-fpm.log ---\n{}",
                    tail(&self.php_fpm_log(), 40)
                );
            }
            sleep(POLL);
        }
        Ok(())
    }

    /// Points `[commands] php_test` and `php_reload` at a private PHP-FPM master run from
    /// `bin` (e.g. `/usr/sbin/php-fpm8.2`) with [`Sandbox::php_fpm_conf`], and rewrites the
    /// config: the test is `bin -t -y <conf>`, the reload a USR2 (PHP-FPM's graceful reload)
    /// to the pid in [`Sandbox::php_fpm_pid_file`]. Starting the master is the caller's
    /// business (`bin -y <conf> -F`); nothing here touches the system's PHP-FPM.
    pub fn use_php_fpm(&mut self, bin: &Path) -> Result<()> {
        ensure!(
            bin.is_absolute(),
            "{} is not an absolute path",
            bin.display()
        );
        let conf = self.php_fpm_conf().display().to_string();
        let pid = self.php_fpm_pid_file().display().to_string();
        let mut config = self.config.clone();
        config.commands.php_test = vec![bin.display().to_string(), "-t".into(), "-y".into(), conf];
        config.commands.php_reload = vec!["pkill".into(), "-USR2".into(), "-F".into(), pid];
        write_config(&config, &self.config_path)?;
        self.config = config;
        Ok(())
    }

    /// Replaces the sandbox's config (and rewrites the file), e.g. for a test that needs a
    /// different `[mail] smarthost`. Paths should stay inside the root.
    pub fn set_config(&mut self, config: Config) -> Result<()> {
        write_config(&config, &self.config_path)?;
        self.config = config;
        Ok(())
    }

    /// Points `[commands] exim_*` and `dovecot_*` at this sandbox's private Exim and
    /// Dovecot (see `mail::sandbox`) and rewrites the config. `mail::sandbox::MailServers`
    /// calls it when it starts them; until then the commands are no-ops.
    pub fn use_mail_servers(&mut self) -> Result<()> {
        let mut config = self.config.clone();
        crate::mail::sandbox::use_servers(&self.root, &mut config);
        write_config(&config, &self.config_path)?;
        self.config = config;
        Ok(())
    }

    /// Create /srv/<name> owned by uid:gid (numeric; no passwd entry needed) with
    /// `public/htdocs/index.html` containing `body`, everything owned by uid:gid, dirs 0755,
    /// files 0644. The gid is the same number as the uid.
    pub fn add_site(&self, name: &str, uid: u32, body: &str) -> Result<PathBuf> {
        // Any name a test may want to throw at dirhost, except ones that leave srv/.
        ensure!(
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']),
            "site name {name:?} would not be a directory directly under srv/"
        );
        let site = self.srv.join(name);
        let htdocs = site.join("public/htdocs");
        fs::create_dir_all(&htdocs)
            .with_context(|| format!("failed to create {}", htdocs.display()))?;
        let index = htdocs.join("index.html");
        write_file(&index, body)?;
        for (path, mode) in [
            (&site, 0o755),
            (&site.join("public"), 0o755),
            (&htdocs, 0o755),
            (&index, 0o644),
        ] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("failed to chmod {}", path.display()))?;
            chown(path, Some(uid), Some(uid))
                .with_context(|| format!("failed to chown {} to {uid}:{uid}", path.display()))?;
        }
        Ok(site)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_apache();
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), decoded as UTF-8 with replacement characters.
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Minimal HTTP/1.1 GET over a raw TcpStream to 127.0.0.1:port with the given Host header,
/// `Connection: close`, 10 s timeouts; no redirects followed.
pub fn http_get(port: u16, host: &str, path: &str) -> Result<HttpResponse> {
    ensure!(
        !host.contains(|c: char| c.is_ascii_control() || c == ' '),
        "bad Host {host:?}"
    );
    ensure!(
        path.starts_with('/') && !path.contains(|c: char| c.is_ascii_control() || c == ' '),
        "bad request path {path:?}"
    );
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let what = || format!("GET http://{host}{path} via {addr}");
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("{}: connect failed", what()))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dirhost-sandbox\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("{}: send failed", what()))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset after a complete response is fine; parse_response checks completeness.
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(e).with_context(|| format!("{}: no response", what())),
        }
    }
    parse_response(&raw).with_context(|| format!("{}: bad response", what()))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/"),
        "bad status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let decoded;
    if chunked {
        decoded = dechunk(body)?;
        body = &decoded;
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .with_context(|| format!("bad Content-Length {len:?}"))?;
        ensure!(
            body.len() >= len,
            "body truncated: {} of {len} bytes",
            body.len()
        );
        body = &body[..len];
    }
    response.body = String::from_utf8_lossy(body).into_owned();
    Ok(response)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunked body truncated")?;
        let size_line = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size, "chunked body truncated");
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Writes `config` to `path` and checks that it loads back: fail here rather than in the
/// first dirhost command if it does not validate.
fn write_config(config: &Config, path: &Path) -> Result<()> {
    let toml = config.to_toml()?;
    write_file(
        path,
        &format!(
            "# Written by dirhost::sandbox. Every path points inside the sandbox, and the\n\
             # commands drive its private Apache (see httpd.conf beside etc/).\n{toml}"
        ),
    )?;
    let back = Config::load(path, true).context("the sandbox config does not load back")?;
    ensure!(&back == config, "the sandbox config does not round-trip");
    Ok(())
}

/// The dirhost binary for `[commands] dirhost`: this executable when it is dirhost (the
/// `dirhost demo` case); for a test binary in `target/<profile>/deps/`, the
/// `target/<profile>/dirhost` cargo builds beside it; else the packaged `/usr/bin/dirhost`.
pub fn find_dirhost_binary() -> PathBuf {
    let installed = PathBuf::from("/usr/bin/dirhost");
    let Ok(exe) = std::env::current_exe() else {
        return installed;
    };
    if exe.file_name().is_some_and(|n| n == "dirhost") {
        return exe;
    }
    match exe.parent() {
        Some(deps) if deps.file_name().is_some_and(|n| n == "deps") => deps
            .parent()
            .map(|profile| profile.join("dirhost"))
            .filter(|bin| bin.is_file())
            .unwrap_or(installed),
        _ => installed,
    }
}

/// The config a sandbox rooted at `root` writes to `etc/dirhost/dirhost.toml`: every path
/// dirhost writes is under `root`. Benchmarks and tests that need a config without a running
/// sandbox start from this (never from `Config::default()`, which is the live system).
pub fn sandbox_config(root: &Path, http: u16, https: u16, dirhost: PathBuf) -> Config {
    let conf = root.join("httpd.conf").to_string_lossy().into_owned();
    let s = |v: &str| v.to_string();
    Config {
        paths: Paths {
            srv: root.join("srv"),
            state: root.join("state"),
            apache: root.join("etc/apache2"),
            exim: root.join("etc/exim4"),
            dovecot: root.join("etc/dovecot"),
            templates: root.join("etc/dirhost/templates"),
            skel: root.join("etc/dirhost/skel"),
        },
        commands: Commands {
            // `-k graceful` first checks the config, then signals the pid in our PidFile
            // (this works with -DFOREGROUND). If no Apache is running it starts a detached
            // one, which Sandbox::stop_apache also stops.
            apache_test: vec![s(APACHE_BIN), s("-f"), conf.clone(), s("-t")],
            apache_reload: vec![s(APACHE_BIN), s("-f"), conf, s("-k"), s("graceful")],
            // Mail lands in a later issue: the sandbox will then run its own exim (-C, listed
            // in /etc/exim4/trusted_configs) and dovecot (-c). Until then these are no-ops.
            exim_test: vec![s("true")],
            exim_reload: vec![s("true")],
            dovecot_test: vec![s("true")],
            dovecot_reload: vec![s("true")],
            // PHP-FPM: the sandbox runs no PHP-FPM until a test starts one.
            php_test: vec![s("true")],
            php_reload: vec![s("true")],
            dirhost,
        },
        ports: Ports { http, https },
        web: Web {
            trusted_proxies: Vec::new(),
            hostname: s(HOSTNAME),
            cgi: false,
        },
        // Let's Encrypt's directory stays (CAA in the DNS goldens names it), but nothing is
        // ordered: sandbox names do not resolve here, and the name check comes first. Hooks
        // are the sandbox's own, never the host's /etc/dirhost/ssl-hooks.d.
        acme: Acme {
            hooks_dir: root.join("etc/dirhost/ssl-hooks.d"),
            ..Default::default()
        },
        watch: Default::default(),
        // Replaced by mail::sandbox::config once the mail ports are chosen.
        mail: Default::default(),
        php: Php {
            // Always on, whether or not PHP-FPM is installed, so every sandbox renders the
            // same files; pools stay inside the root (see Sandbox::use_php_fpm).
            enabled: true,
            pool_dir: root.join(PHP_POOL_DIR),
            socket_dir: root.join("run/php"),
            ..Php::default()
        },
        // DNS hooks stay inside the sandbox.
        dns: crate::config::Dns {
            hooks_dir: root.join("etc/dirhost/dns-hooks.d"),
            ..Default::default()
        },
        // Webmail is off until a test turns it on (tests/webmail.rs); its files stay inside
        // the root, and its pool runs as a numeric user with no passwd entry.
        webmail: crate::webmail::Settings {
            enabled: false,
            config_dir: root.join("etc/dirhost/roundcube"),
            log_dir: root.join("logs/webmail"),
            user: s("2999"),
            group: s("2999"),
            ..Default::default()
        },
        // Reports and auth files live under the state dir; goaccess/htpasswd are read-only.
        stats: Default::default(),
    }
}

/// `(name, path of the .so)` for each of [`MODULES`] that is not compiled into apache2 and
/// whose `.so` exists.
fn modules_to_load() -> Result<Vec<(&'static str, PathBuf)>> {
    let built_in = built_in_modules()?;
    Ok(MODULES
        .iter()
        .filter(|m| !built_in.contains(&format!("mod_{m}.c")))
        .map(|m| (*m, Path::new(MODULE_DIR).join(format!("mod_{m}.so"))))
        .filter(|(_, so)| so.exists())
        .collect())
}

/// The `mod_*.c` names `apache2 -l` lists (asked once per process). `LoadModule` on one of
/// them fails with "built-in and can't be loaded".
fn built_in_modules() -> Result<&'static BTreeSet<String>> {
    static BUILT_IN: OnceLock<BTreeSet<String>> = OnceLock::new();
    if let Some(set) = BUILT_IN.get() {
        return Ok(set);
    }
    let out = Command::new(APACHE_BIN)
        .arg("-l")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{APACHE_BIN} -l` (is apache2 installed?)"))?;
    ensure!(
        out.status.success(),
        "`{APACHE_BIN} -l` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let set = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".c"))
        .map(str::to_string)
        .collect();
    Ok(BUILT_IN.get_or_init(|| set))
}

/// The sandbox Apache's server config. Every directive is here for a reason given beside
/// it; most replace a default that would point at the system's Apache.
fn httpd_conf(
    root: &Path,
    http: u16,
    https: u16,
    as_root: bool,
    modules: &[(&str, PathBuf)],
) -> String {
    let r = root.display();
    let mut c = format!(
        r#"# Written by dirhost::sandbox. The private Apache of the sandbox at {r},
# started as `apache2 -f {r}/httpd.conf -DFOREGROUND`. It must never read /etc/apache2:
# every path here is absolute and inside the sandbox, apart from read-only system files
# (module .so files, /etc/mime.types). Rewritten whenever the sandbox is laid out.

# Relative paths in any included file resolve inside the sandbox, not /etc/apache2.
ServerRoot "{r}"
# Runtime files (the cgid socket, shared memory) go here instead of /var/run/apache2.
DefaultRuntimeDir "{r}/run"
# `apache2 -f {r}/httpd.conf -k graceful` (dirhost's reload command in the sandbox)
# signals the pid in this file; Sandbox::stop_apache also uses it to find a detached Apache.
PidFile "{r}/run/httpd.pid"
# Lock files beside the pidfile: the default dir is shared with the system Apache.
Mutex "file:{r}/run" default
# Server-level errors, read by Sandbox::apache_error_log() for test failure messages.
ErrorLog "{r}/logs/error.log"
# Enough to see why something failed without logging every request. Notice-level lines
# ("resuming normal operations", counted by Sandbox::apache_generation) are always logged.
LogLevel warn
# Content types for static files; read-only system file.
TypesConfig /etc/mime.types
# Avoids the AH00558 "could not reliably determine the server's name" warning (and a DNS lookup).
ServerName localhost
# Loopback only, on ports picked free for this sandbox: never the public 80/443.
Listen 127.0.0.1:{http}
Listen 127.0.0.1:{https}
"#
    );
    if as_root {
        c.push_str(
            "# Started as root (like the system Apache), so workers drop to www-data, as in\n\
             # production: file permissions under srv/ are tested for real.\n\
             User www-data\nGroup www-data\n",
        );
    } else {
        c.push_str("# Not started as root: no User/Group, the workers run as the current user.\n");
    }
    c.push_str(
        "\n# Modules a dirhost site may use. Modules compiled into apache2 (`apache2 -l`) and\n\
         # modules whose .so is missing are left out; LoadModule would fail on them.\n",
    );
    for (name, so) in modules {
        c.push_str(&format!("LoadModule {name}_module {}\n", so.display()));
    }
    c.push_str(&format!(
        r#"
# The main server (no vhost matched) serves an empty dir inside the sandbox instead of
# the compiled-in /var/www/html.
DocumentRoot "{r}/htdocs"
# Debian's apache2.conf defaults: nothing on disk is served unless a vhost grants it
# (Debian grants /var/www, never /srv), and .ht* files never are. Generated sites must
# grant their own htdocs, exactly as on a real server.
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
AccessFileName .htaccess
<FilesMatch "^\.ht">
    Require all denied
</FilesMatch>

# An access log for vhosts that do not set their own (Debian's other-vhosts-access-log).
LogFormat "%v:%p %h %l %u %t \"%r\" %>s %O \"%{{Referer}}i\" \"%{{User-Agent}}i\"" vhost_combined
CustomLog "{r}/logs/access.log" vhost_combined

<IfModule ssl_module>
    # Silences AH01873 and keeps the TLS session cache in the sandbox.
    SSLSessionCache "shmcb:{r}/run/ssl_scache(512000)"
</IfModule>

# What dirhost writes, under the sandbox's etc/apache2 (the config's [paths] apache).
IncludeOptional "{r}/etc/apache2/conf-enabled/*.conf"
IncludeOptional "{r}/etc/apache2/sites-enabled/*.conf"
"#
    ));
    c
}

/// The private PHP-FPM master's config: everything inside `root`. The `sandbox` pool stands
/// in for Debian's `www.conf` (PHP-FPM refuses a config without any pool); it starts no
/// process, since nothing connects to its socket.
fn php_fpm_conf(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"; Written by dirhost::sandbox: the private PHP-FPM master of the sandbox at {r},
; started as `php-fpm<version> -y {r}/{PHP_FPM_CONF} -F`. Its pid, log and sockets stay
; inside the sandbox; it includes the pools dirhost writes to {r}/{PHP_POOL_DIR}.
[global]
pid = {r}/run/php-fpm.pid
error_log = {r}/logs/php-fpm.log
daemonize = no
; No rlimit_files: the master keeps the open-files limit it was started with (one listening
; socket per pool).
include = {r}/{PHP_POOL_DIR}/*.conf

[sandbox]
user = nobody
group = nogroup
listen = {r}/run/php/sandbox.sock
listen.mode = 0600
pm = ondemand
pm.max_children = 1
"#
    )
}

/// Refuses a root that Apache's workers (www-data) could not reach: every ancestor must be
/// searchable by them. (The root and the dirs below it are made 0755 by the layout.)
fn check_www_data_can_reach(root: &Path) -> Result<()> {
    let Ok(Some(www)) = nix::unistd::User::from_name("www-data") else {
        return Ok(());
    };
    let (uid, gid) = (www.uid.as_raw(), www.gid.as_raw());
    for dir in root.ancestors().skip(1) {
        let meta =
            fs::metadata(dir).with_context(|| format!("failed to stat {}", dir.display()))?;
        let mode = meta.mode();
        let searchable = mode & 0o001 != 0
            || (meta.uid() == uid && mode & 0o100 != 0)
            || (meta.gid() == gid && mode & 0o010 != 0);
        ensure!(
            searchable,
            "Apache's workers (www-data) cannot enter {} (mode {:o}), so they could not serve \
             the sandbox at {}; use a directory they can reach, e.g. under /tmp or /var/tmp",
            dir.display(),
            mode & 0o7777,
            root.display()
        );
    }
    Ok(())
}

/// Two distinct free loopback ports, not handed out before in this process.
fn free_port_pair() -> Result<(u16, u16)> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Keep every probe listener open until both ports are chosen, so the OS cannot give
    // the same port twice.
    let mut probes = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..100 {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("failed to bind a probe socket on 127.0.0.1")?;
        let port = probe.local_addr()?.port();
        probes.push(probe);
        if !handed_out.contains(&port) && !ports.contains(&port) {
            ports.push(port);
            if let [http, https] = ports[..] {
                handed_out.insert(http);
                handed_out.insert(https);
                return Ok((http, https));
            }
        }
    }
    bail!("found no two unused loopback ports")
}

/// `N` distinct free loopback ports, not handed out before in this process.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut probes = Vec::new();
    let mut ports = [0u16; N];
    let mut found = 0;
    for _ in 0..(100 + N) {
        if found == N {
            break;
        }
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("failed to bind a probe socket on 127.0.0.1")?;
        let port = probe.local_addr()?.port();
        probes.push(probe);
        if !handed_out.contains(&port) && !ports[..found].contains(&port) {
            ports[found] = port;
            found += 1;
        }
    }
    ensure!(found == N, "found no {N} unused loopback ports");
    handed_out.extend(ports);
    Ok(ports)
}

/// Claims `port` for this process if nobody else in it has it and it can be bound now.
fn claim_if_free(port: u16) -> bool {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if handed_out.contains(&port) || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    handed_out.insert(port);
    true
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("failed to chmod {}", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_pid(pid_file: &Path) -> Option<i32> {
    fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Stops every `apache2` process whose command line names `conf` (a sandbox's httpd.conf):
/// SIGTERM to each master (a process whose parent is not one of them), SIGKILL to all that
/// remain after [`STOP_TIMEOUT`]. Found through /proc rather than the pidfile, because a
/// detached Apache (started by `-k graceful` when none runs) binds its ports before it
/// writes the pidfile, and workers outlive a SIGKILLed master.
fn stop_apache_processes(conf: &Path) {
    let mut signalled = BTreeSet::new();
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let procs = apache_processes(conf);
        if procs.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for (pid, _) in procs {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            return;
        }
        let pids: BTreeSet<i32> = procs.iter().map(|(pid, _)| *pid).collect();
        for (pid, ppid) in procs {
            // Rescanned each round: a daemonising Apache forks before its parent exits.
            if !pids.contains(&ppid) && signalled.insert(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        sleep(POLL);
    }
}

/// `/proc/<pid>/stat`: (comm, state, ppid). The comm field may contain spaces and
/// parentheses, so split at the last ')'.
fn proc_stat(pid: i32) -> Option<(String, char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut rest = tail.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Live `apache2` processes with `conf` as an argument: (pid, ppid). Zombies do not count:
/// a detached Apache's parent is PID 1, which may never reap it (it does not in containers
/// whose init is not a real init).
fn apache_processes(conf: &Path) -> Vec<(i32, i32)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let conf = conf.as_os_str().as_encoded_bytes();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| match proc_stat(pid)? {
            (comm, state, ppid) if comm == "apache2" && !matches!(state, 'Z' | 'X') => {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == conf)
                    .then_some((pid, ppid))
            }
            _ => None,
        })
        .collect()
}

/// SIGTERM (Apache stops its workers and exits), wait up to [`STOP_TIMEOUT`], then SIGKILL.
fn stop_child(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let Ok(raw) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let pid = Pid::from_raw(raw);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        sleep(POLL);
    }
    // Its workers, if it leaves any, are stopped by Sandbox::stop_stray_apache.
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_is_closed(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
    }

    fn run(argv: &[String]) -> std::process::Output {
        Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
    }

    /// A uid add_site can chown to: an unnamed one as root, our own otherwise.
    fn site_uid() -> u32 {
        let euid = nix::unistd::geteuid();
        if euid.is_root() { 4321 } else { euid.as_raw() }
    }

    #[test]
    fn lays_out_a_tree_that_apache_accepts() {
        let sb = Sandbox::temp().unwrap();
        let root = sb.root().to_path_buf();
        for dir in [
            "srv",
            "state",
            "etc/apache2/sites-available",
            "etc/apache2/sites-enabled",
            "etc/apache2/conf-available",
            "etc/apache2/conf-enabled",
            "etc/exim4",
            "etc/dovecot",
            "etc/dirhost/templates",
            PHP_POOL_DIR,
            "run",
            "run/php",
            "logs",
        ] {
            assert!(root.join(dir).is_dir(), "{dir} missing");
        }
        let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);

        assert_eq!(sb.config_path(), root.join("etc/dirhost/dirhost.toml"));
        let loaded = Config::load(sb.config_path(), true).unwrap();
        assert_eq!(&loaded, sb.config());
        let p = &loaded.paths;
        for path in [
            &p.srv,
            &p.state,
            &p.apache,
            &p.exim,
            &p.dovecot,
            &p.templates,
        ] {
            assert!(
                path.starts_with(&root),
                "{} outside the sandbox",
                path.display()
            );
        }
        assert_eq!(sb.srv(), root.join("srv"));
        assert_eq!(loaded.web.hostname, "dirhost.test");
        assert_ne!(sb.http_port(), sb.https_port());

        // Apache never reads outside the sandbox, apart from read-only system files.
        let conf = fs::read_to_string(sb.httpd_conf()).unwrap();
        let directives = conf.lines().filter(|l| !l.trim_start().starts_with('#'));
        for word in directives.flat_map(str::split_whitespace) {
            let word = word.trim_matches('"');
            let path = word.split_once(':').map_or(word, |(_, p)| p);
            if path.starts_with('/') && path != "/>" {
                assert!(
                    path.starts_with(root.to_str().unwrap())
                        || path.starts_with(MODULE_DIR)
                        || path == "/etc/mime.types",
                    "httpd.conf names {path}"
                );
            }
        }
        assert!(conf.contains("LoadModule mpm_event_module"), "{conf}");
        assert!(
            !conf.contains("log_config_module"),
            "built-in module loaded"
        );
        let out = run(&loaded.commands.apache_test);
        assert!(
            out.status.success(),
            "apache2 -t failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn set_dirhost_binary_rewrites_the_config() {
        let mut sb = Sandbox::temp().unwrap();
        assert!(sb.config().commands.dirhost.is_absolute());
        sb.set_dirhost_binary(Path::new("/opt/x/dirhost")).unwrap();
        let loaded = Config::load(sb.config_path(), true).unwrap();
        assert_eq!(loaded.commands.dirhost, Path::new("/opt/x/dirhost"));
        assert_eq!(&loaded, sb.config());
        assert!(sb.set_dirhost_binary(Path::new("relative")).is_err());
    }

    #[test]
    fn serves_http_and_stops_on_drop() {
        let mut sb = Sandbox::temp().unwrap();
        let (http, root) = (sb.http_port(), sb.root().to_path_buf());
        sb.start_apache().unwrap();
        sb.start_apache().unwrap(); // already running: no-op
        let resp = http_get(http, "unknown.test", "/").unwrap();
        assert!(
            matches!(resp.status, 403 | 404),
            "{resp:?}\n{}",
            sb.apache_error_log()
        );
        assert!(resp.header("SERVER").is_some_and(|s| s.contains("Apache")));
        assert_eq!(sb.apache_generation(), 1);
        drop(sb);
        assert!(port_is_closed(http), "Apache still listening after drop");
        assert!(!root.exists(), "temp root not removed");
    }

    #[test]
    fn serves_a_site_and_reloads_gracefully() {
        let mut sb = Sandbox::temp().unwrap();
        let site = sb.add_site("example.test", site_uid(), "hello\n").unwrap();
        let htdocs = site.join("public/htdocs");
        let meta = fs::metadata(htdocs.join("index.html")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (site_uid(), site_uid(), 0o644)
        );
        assert_eq!(fs::metadata(&site).unwrap().mode() & 0o777, 0o755);
        assert!(sb.add_site("../evil", 0, "").is_err());

        sb.start_apache().unwrap();
        assert_eq!(sb.http_get("example.test", "/").unwrap().status, 403);

        let vhost = format!(
            "<VirtualHost *:{}>\n  ServerName example.test\n  DocumentRoot {}\n  \
             <Directory {}>\n    Require all granted\n  </Directory>\n</VirtualHost>\n",
            sb.http_port(),
            htdocs.display(),
            htdocs.display()
        );
        let enabled = sb
            .root()
            .join("etc/apache2/sites-enabled/example.test.conf");
        fs::write(&enabled, vhost).unwrap();
        let generation = sb.apache_generation();
        let out = run(&sb.config().commands.apache_reload);
        assert!(out.status.success(), "{out:?}");
        sb.wait_apache_generation(generation + 1).unwrap();
        // Right after the reload every new connection must see the new config.
        for _ in 0..20 {
            let resp = sb.http_get("example.test", "/").unwrap();
            assert_eq!(
                (resp.status, resp.body.as_str()),
                (200, "hello\n"),
                "{}",
                sb.apache_error_log()
            );
        }
        assert_eq!(
            sb.http_get("example.test", "/index.html")
                .unwrap()
                .header("content-type"),
            Some("text/html")
        );

        // A broken config: the reload refuses it and the running Apache keeps serving.
        fs::write(&enabled, "NoSuchDirective on\n").unwrap();
        let out = run(&sb.config().commands.apache_reload);
        assert!(!out.status.success());
        assert_eq!(sb.http_get("example.test", "/").unwrap().status, 200);
    }

    #[test]
    fn stops_an_apache_the_reload_command_detached() {
        let sb = Sandbox::temp().unwrap();
        let http = sb.http_port();
        // Reloading while no Apache runs makes apache2 start a detached daemon.
        let out = run(&sb.config().commands.apache_reload);
        assert!(out.status.success(), "{out:?}");
        let deadline = Instant::now() + START_TIMEOUT;
        while port_is_closed(http) && Instant::now() < deadline {
            sleep(POLL);
        }
        assert!(!port_is_closed(http), "no detached Apache started");
        drop(sb);
        assert!(port_is_closed(http), "detached Apache survived the sandbox");
    }

    #[test]
    fn at_reuses_its_own_dir_and_refuses_others() {
        let parent = tempfile::tempdir().unwrap();
        fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.path().join("demo");
        let first = Sandbox::at(&dir).unwrap();
        let ports = (first.http_port(), first.https_port());
        first.add_site("kept.test", site_uid(), "kept").unwrap();
        drop(first);
        assert!(dir.join("srv/kept.test/public/htdocs/index.html").exists());
        // The ports are handed out in this process already, so reuse picks new ones.
        let mut again = Sandbox::at(&dir).unwrap();
        assert!(again.srv().join("kept.test").is_dir());
        assert_ne!((again.http_port(), again.https_port()), ports);
        again.start_apache().unwrap();
        let http = again.http_port();
        drop(again);
        assert!(port_is_closed(http));
        assert!(dir.join("httpd.conf").exists(), "at() must keep its dir");

        let foreign = parent.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("precious"), "x").unwrap();
        let err = Sandbox::at(&foreign).unwrap_err();
        assert!(format!("{err:#}").contains("refusing"), "{err:#}");
        assert_eq!(fs::read_dir(&foreign).unwrap().count(), 1);
    }

    #[test]
    fn start_failure_reports_apache_errors() {
        let mut sb = Sandbox::temp().unwrap();
        fs::write(
            sb.root().join("etc/apache2/conf-enabled/broken.conf"),
            "NoSuchDirective on\n",
        )
        .unwrap();
        let err = format!("{:#}", sb.start_apache().unwrap_err());
        assert!(err.contains("NoSuchDirective"), "{err}");
    }

    #[test]
    fn parses_responses() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello extra",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "hello");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("x-missing"), None);

        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "abcdef"));

        let r = parse_response(b"HTTP/1.0 301 Moved\r\nLocation: /x\r\n\r\n").unwrap();
        assert_eq!((r.status, r.header("LOCATION")), (301, Some("/x")));

        for bad in [
            &b"garbage"[..],
            b"SMTP 220 hi\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ] {
            assert!(parse_response(bad).is_err(), "{bad:?}");
        }
        assert!(http_get(1, "a b", "/").is_err());
        assert!(http_get(1, "a", "no-slash").is_err());
    }
}
