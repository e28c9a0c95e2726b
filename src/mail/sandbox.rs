//! A sandbox's private Exim and Dovecot, on loopback ports: for the system tests and
//! `dirhost demo`.
//!
//! [`lay_out`] prepares the parts of a [`Sandbox`] root that mail needs (Exim's spool and
//! log directories owned by Debian-exim, a self-signed host certificate, Dovecot's own
//! `dovecot.conf` that includes the `local.conf` dirhost renders, the mail state
//! directories); [`MailServers::start`] runs Exim and `dovecot -F -c
//! <root>/etc/dovecot/dovecot.conf` and points the sandbox's `[commands] exim_*` and
//! `dovecot_*` at them.
//!
//! Exim runs in a private mount namespace (`unshare --mount`) in which the sandbox's
//! `etc/exim4` is bind-mounted on `/etc/exim4`: it then reads the rendered `exim4.conf` at
//! its default path, exactly as on a real server. The alternative, `exim4 -C <file>`, keeps
//! root privileges only for files listed in `/etc/exim4/trusted_configs` and only for root
//! and Exim's own user: the autoreply of a vacation message, submitted by Exim running as
//! the domain's owner, would lose them and fail. When no namespace can be made, Exim runs
//! with `-C` and [`TrustedConfig`] adds exactly one line (the sandbox's config path) to
//! `/etc/exim4/trusted_configs` under an `flock` on `/etc/exim4`, and removes exactly that
//! line when dropped (also when a test panics), deleting the file again if nothing else is
//! left in it.
//!
//! What it must not do: touch anything outside the sandbox root other than that one line,
//! bind anything but loopback addresses, or signal a process it did not start.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::config::{Config, Mail};
use crate::sandbox::Sandbox;

/// Debian's list of configuration files Exim trusts with `-C` as root.
pub const TRUSTED_CONFIGS: &str = "/etc/exim4/trusted_configs";
/// The Exim binary.
pub const EXIM_BIN: &str = "exim4";
/// The Dovecot binary.
pub const DOVECOT_BIN: &str = "dovecot";

const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The `[mail]` table of a sandbox rooted at `root`: the given loopback ports, everything
/// else inside the root.
pub fn config(root: &Path, ports: [u16; 5]) -> Mail {
    let mut listen = vec!["127.0.0.1".to_string()];
    if std::net::TcpListener::bind(("::1", 0)).is_ok() {
        listen.push("::1".into());
    }
    Mail {
        smtp: ports[0],
        smtps: ports[1],
        submission: ports[2],
        imaps: ports[3],
        pop3s: ports[4],
        listen,
        hostname: "mail.dirhost.test".into(),
        certificate: root.join("etc/ssl/mail-host.crt"),
        key: root.join("etc/ssl/mail-host.key"),
        exim_spool: root.join("spool/exim"),
        exim_log: root.join("logs/exim/%slog").display().to_string(),
        dovecot_run: root.join("run/dovecot"),
        postmaster: "postmaster@mail.dirhost.test".into(),
        ..Mail::default()
    }
}

/// `<root>/etc/dovecot/dovecot.conf`: the sandbox Dovecot's own config file.
pub fn dovecot_conf(root: &Path) -> PathBuf {
    root.join("etc/dovecot/dovecot.conf")
}

/// `<root>/etc/exim4/exim4.conf`: rendered by dirhost (`[paths] exim`).
pub fn exim_conf(root: &Path) -> PathBuf {
    root.join("etc/exim4/exim4.conf")
}

fn exim_pid(root: &Path) -> PathBuf {
    root.join("run/exim.pid")
}

/// Prepares the mail parts of a sandbox root (see the module docs). As root, directories
/// Exim writes are given to its user; as another user, the servers cannot run anyway and
/// only the files are laid out.
pub fn lay_out(root: &Path, cfg: &Config) -> Result<()> {
    let as_root = nix::unistd::geteuid().is_root();
    let exim = if as_root {
        nix::unistd::User::from_name(&cfg.mail.exim_user)
            .ok()
            .flatten()
    } else {
        None
    };
    for dir in ["spool/exim", "logs/exim", "etc/ssl", "run/dovecot-state"] {
        let p = root.join(dir);
        fs::create_dir_all(&p).with_context(|| format!("failed to create {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to chmod {}", p.display()))?;
    }
    if let Some(u) = &exim {
        for dir in ["spool/exim", "logs/exim"] {
            let p = root.join(dir);
            chown(&p, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .with_context(|| format!("failed to chown {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o750))
                .with_context(|| format!("failed to chmod {}", p.display()))?;
        }
    }
    if !cfg.mail.certificate.exists() || !cfg.mail.key.exists() {
        host_certificate(
            &cfg.mail.certificate,
            &cfg.mail.key,
            &cfg.mail.hostname(cfg),
        )?;
    }
    if let Some(u) = &exim {
        chown(&cfg.mail.key, Some(0), Some(u.gid.as_raw()))
            .with_context(|| format!("failed to chown {}", cfg.mail.key.display()))?;
    }
    fs::set_permissions(&cfg.mail.key, fs::Permissions::from_mode(0o640))
        .with_context(|| format!("failed to chmod {}", cfg.mail.key.display()))?;
    write(&dovecot_conf(root), &dovecot_conf_text(root, cfg), 0o644)?;
    if as_root {
        super::ensure_dirs(cfg)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to chmod {}", path.display()))
}

/// A self-signed host certificate (EC P-256) for `name` and `localhost`.
fn host_certificate(crt: &Path, key: &Path, name: &str) -> Result<()> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "3650", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name},DNS:localhost"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(crt)
        .stdin(Stdio::null())
        .output()
        .context("failed to run openssl for the sandbox's mail host certificate")?;
    ensure!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::set_permissions(crt, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("failed to chmod {}", crt.display()))
}

fn dovecot_conf_text(root: &Path, cfg: &Config) -> String {
    let r = root.display();
    let name: String = format!("{r}")
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(char::from)
        .collect();
    let instance = &name[name.len().saturating_sub(24)..];
    format!(
        "# Written by dirhost::mail::sandbox: the private Dovecot of the sandbox at {r}, started as\n\
         # `dovecot -F -c {conf}`. Runtime files, state and logs stay inside the sandbox;\n\
         # everything else comes from the local.conf dirhost renders (as on Debian, where\n\
         # /etc/dovecot/dovecot.conf includes local.conf).\n\
         base_dir = {run}\n\
         state_dir = {r}/run/dovecot-state\n\
         instance_name = dirhost-{instance}\n\
         log_path = {r}/logs/dovecot.log\n\
         default_login_user = dovenull\n\
         default_internal_user = dovecot\n\
         !include_try {local}\n",
        conf = dovecot_conf(root).display(),
        run = cfg.mail.dovecot_run.display(),
        local = cfg.paths.dovecot.join("local.conf").display(),
    )
}

/// Points a sandbox config's `[commands] exim_*` and `dovecot_*` at the private servers.
/// Reloading a server that is not running is a no-op that succeeds.
pub fn use_servers(root: &Path, cfg: &mut Config) {
    let s = |v: &str| v.to_string();
    let conf = exim_conf(root).display().to_string();
    let pid = exim_pid(root).display().to_string();
    let dconf = dovecot_conf(root).display().to_string();
    let dpid = cfg
        .mail
        .dovecot_run
        .join("master.pid")
        .display()
        .to_string();
    let c = &mut cfg.commands;
    c.exim_test = vec![s(EXIM_BIN), s("-C"), conf, s("-bV")];
    c.exim_reload = vec![
        s("sh"),
        s("-c"),
        format!("[ -s '{pid}' ] || exit 0; kill -HUP \"$(cat '{pid}')\""),
    ];
    c.dovecot_test = vec![s("doveconf"), s("-n"), s("-c"), dconf.clone()];
    c.dovecot_reload = vec![
        s("sh"),
        s("-c"),
        format!("[ -s '{dpid}' ] || exit 0; exec {DOVECOT_BIN} -c '{dconf}' reload"),
    ];
}

/// One line in `/etc/exim4/trusted_configs`, removed again on drop.
#[derive(Debug)]
pub struct TrustedConfig {
    line: String,
}

impl TrustedConfig {
    /// Adds `config` (an absolute path without newlines) to the trusted list.
    pub fn add(config: &Path) -> Result<Self> {
        let line = config
            .to_str()
            .filter(|l| l.starts_with('/') && !l.contains(['\n', '\r']))
            .with_context(|| format!("{} cannot be listed in {TRUSTED_CONFIGS}", config.display()))?
            .to_string();
        with_trusted_lock(|| {
            let mut text = match fs::read_to_string(TRUSTED_CONFIGS) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).context("failed to read the trusted configs list"),
            };
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            text.push('\n');
            write_trusted(&text)
        })?;
        Ok(Self { line })
    }
}

impl Drop for TrustedConfig {
    fn drop(&mut self) {
        let line = self.line.clone();
        let result = with_trusted_lock(|| {
            let text = match fs::read_to_string(TRUSTED_CONFIGS) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e).context("failed to read the trusted configs list"),
            };
            let mut removed = false;
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    if !removed && *l == line {
                        removed = true;
                        false
                    } else {
                        true
                    }
                })
                .collect();
            if kept.iter().all(|l| l.trim().is_empty()) {
                return fs::remove_file(TRUSTED_CONFIGS)
                    .context("failed to remove the trusted configs list");
            }
            let mut out = kept.join("\n");
            out.push('\n');
            write_trusted(&out)
        });
        if let Err(e) = result {
            tracing::error!("could not remove {line} from {TRUSTED_CONFIGS}: {e:#}");
        }
    }
}

/// Runs `f` holding an exclusive `flock` on the directory of the trusted list (no lock file
/// of our own is created).
fn with_trusted_lock<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = Path::new(TRUSTED_CONFIGS)
        .parent()
        .context("trusted configs list without a directory")?;
    let d = fs::File::open(dir).with_context(|| format!("failed to open {}", dir.display()))?;
    let _lock = nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("failed to lock {}", dir.display()))?;
    f()
}

fn write_trusted(text: &str) -> Result<()> {
    // Root-owned, not writable by others: Exim ignores the list otherwise.
    crate::apply::write_atomic(Path::new(TRUSTED_CONFIGS), text.as_bytes(), 0o644)
}

/// A sandbox's running Exim and Dovecot. Dropping it stops both (and only them).
#[derive(Debug)]
pub struct MailServers {
    root: PathBuf,
    exim: Option<Child>,
    dovecot: Option<Child>,
    _trusted: Option<TrustedConfig>,
}

impl MailServers {
    /// Starts Exim and Dovecot for `sb`, whose mail configuration must already be rendered
    /// (run a reconcile first), and switches the sandbox's exim/dovecot commands to them.
    pub fn start(sb: &mut Sandbox) -> Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the sandbox's Exim and Dovecot need root (Exim delivers as each domain's owner)"
        );
        let root = sb.root().to_path_buf();
        sb.use_mail_servers()?;
        let cfg = sb.config().clone();
        let conf = exim_conf(&root);
        ensure!(
            conf.exists(),
            "{} does not exist: reconcile before starting the mail servers",
            conf.display()
        );
        let logs = root.join("logs");
        let _ = fs::remove_file(exim_pid(&root));
        // Preferred: a private mount namespace in which the sandbox's etc/exim4 *is*
        // /etc/exim4, so Exim runs with its default config path and no -C at all (with -C,
        // an Exim started by a domain owner, as the autoreply transport does, would drop its
        // privileges whatever trusted_configs says). Fallback: -C plus trusted_configs.
        let namespaced = private_mounts_work();
        let mut cmd = if namespaced {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(format!(
                    "mount --bind \"$1\" /etc/exim4 && exec {EXIM_BIN} -bdf -q2s -oP \"$2\""
                ))
                .arg("sh")
                .arg(root.join("etc/exim4"))
                .arg(exim_pid(&root));
            c
        } else {
            tracing::warn!(
                "no private mount namespace: running Exim with -C and trusted_configs (vacation autoreplies cannot be sent)"
            );
            let mut c = Command::new(EXIM_BIN);
            c.arg("-C")
                .arg(&conf)
                .args(["-bdf", "-q2s", "-oP"])
                .arg(exim_pid(&root));
            c
        };
        let trusted = if namespaced {
            None
        } else {
            Some(TrustedConfig::add(&conf)?)
        };
        let mut me = Self {
            root: root.clone(),
            exim: None,
            dovecot: None,
            _trusted: trusted,
        };
        let exim = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(logs.join("exim.stdout"))?)
            .stderr(fs::File::create(logs.join("exim.stderr"))?)
            .spawn()
            .context("failed to run exim4 (is exim4-daemon-heavy installed?)")?;
        me.exim = Some(exim);
        me.wait_port(cfg.mail.smtp, "exim", |m| m.exim.as_mut())?;
        let dovecot = Command::new(DOVECOT_BIN)
            .arg("-F")
            .arg("-c")
            .arg(dovecot_conf(&root))
            .stdin(Stdio::null())
            .stdout(fs::File::create(logs.join("dovecot.stdout"))?)
            .stderr(fs::File::create(logs.join("dovecot.stderr"))?)
            .spawn()
            .context("failed to run dovecot (is dovecot-imapd installed?)")?;
        me.dovecot = Some(dovecot);
        me.wait_port(cfg.mail.imaps, "dovecot", |m| m.dovecot.as_mut())?;
        me.wait_file(&cfg.mail.dovecot_run.join(super::AUTH_SOCKET))?;
        Ok(me)
    }

    fn wait_port(
        &mut self,
        port: u16,
        what: &str,
        child: impl Fn(&mut Self) -> Option<&mut Child>,
    ) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = child(self)
                && let Some(status) = c.try_wait()?
            {
                bail!("{what} exited during startup ({status}):\n{}", self.logs());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} did not accept on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            sleep(POLL);
        }
    }

    fn wait_file(&self, path: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !path.exists() {
            if Instant::now() > deadline {
                bail!("{} did not appear:\n{}", path.display(), self.logs());
            }
            sleep(POLL);
        }
        Ok(())
    }

    /// The tails of Exim's and Dovecot's logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in [
            "logs/exim/mainlog",
            "logs/exim/paniclog",
            "logs/exim/rejectlog",
            "logs/exim.stderr",
            "logs/dovecot.log",
            "logs/dovecot.stderr",
        ] {
            let text = fs::read_to_string(self.root.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("--- {f} ---\n{tail}\n"));
        }
        out
    }

    /// Stops both servers (SIGTERM, then SIGKILL after a timeout).
    pub fn stop(&mut self) {
        for child in [self.exim.take(), self.dovecot.take()]
            .into_iter()
            .flatten()
        {
            stop_child(child);
        }
        let _ = fs::remove_file(exim_pid(&self.root));
    }
}

impl Drop for MailServers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this process may make a private mount namespace (`unshare --mount`).
fn private_mounts_work() -> bool {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn stop_child(mut child: Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    if let Ok(raw) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The demo mailbox's password (printed by `dirhost demo`).
pub const DEMO_PASSWORD: &str = "demo-password";

/// Mail for `dirhost demo`: gives `domain` (owned by `uid`) the mailbox `brian` if it has
/// none, renders the mail configuration, starts the sandbox's Exim and Dovecot and returns
/// them with the lines to print. `None` when not root (Exim could not deliver).
pub fn demo(sb: &mut Sandbox, domain: &str, uid: u32) -> Result<Option<(MailServers, String)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    stop_leftovers(sb.root());
    let mbox = sb.srv().join(domain).join("mailboxes/brian");
    if !mbox.exists() {
        fs::create_dir_all(&mbox)
            .with_context(|| format!("failed to create {}", mbox.display()))?;
        let hash = super::password::sha512_crypt(&super::password::Secret::new(
            DEMO_PASSWORD.to_string(),
        ))?;
        fs::write(mbox.join("password"), format!("{{CRYPT}}{hash}\n"))?;
        fs::set_permissions(mbox.join("password"), fs::Permissions::from_mode(0o600))?;
        for p in [
            mbox.parent()
                .context("mailbox without parent")?
                .to_path_buf(),
            mbox.clone(),
            mbox.join("password"),
        ] {
            chown(&p, Some(uid), Some(uid))
                .with_context(|| format!("failed to chown {}", p.display()))?;
        }
    }
    sb.use_mail_servers()?;
    let cfg = sb.config().clone();
    crate::reconcile::reconcile(
        &cfg,
        sb.config_path(),
        &crate::reconcile::Request::default(),
    )?;
    let servers = MailServers::start(sb)?;
    let m = &cfg.mail;
    let srv = sb.srv().display();
    let text = format!(
        "\nMail: Exim on 127.0.0.1:{smtp} (SMTP), :{smtps} (SMTPS) and :{subm} (submission); Dovecot on :{imaps} (IMAPS) and :{pop3s} (POP3S)\n\
         \x20 swaks --server 127.0.0.1:{smtp} --from you@example.net --to brian@{domain} --header 'Subject: hello'\n\
         \x20 curl -k --user 'brian@{domain}:{DEMO_PASSWORD}' imaps://127.0.0.1:{imaps}/INBOX -X 'STATUS INBOX (MESSAGES)'\n\
         \x20 curl -k --user 'brian@{domain}:{DEMO_PASSWORD}' 'imaps://127.0.0.1:{imaps}/INBOX;UID=1'\n\
         \x20 swaks --server 127.0.0.1:{subm} -tls --auth PLAIN --auth-user brian@{domain} --auth-password {DEMO_PASSWORD} --from brian@{domain} --to brian@{domain}\n\
         \x20 mkdir {srv}/{domain}/mailboxes/alice && chown {uid}:{uid} {srv}/{domain}/mailboxes/alice   (mail to alice@{domain} works at once)\n\
         \x20 dirhost --config {cfgpath} mail list\n",
        smtp = m.smtp,
        smtps = m.smtps,
        subm = m.submission,
        imaps = m.imaps,
        pop3s = m.pop3s,
        cfgpath = sb.config_path().display(),
    );
    Ok(Some((servers, text)))
}

/// Stops an Exim or Dovecot left running by an earlier demo in the same root (their pid
/// files are inside it; a pid is signalled only when its command line names the sandbox).
fn stop_leftovers(root: &Path) {
    let dovecot_pid = root.join("run/dovecot/master.pid");
    for (pidfile, needle) in [(exim_pid(root), "exim4"), (dovecot_pid, "dovecot")] {
        let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let root_s = root.display().to_string();
        if cmdline.contains(needle) && cmdline.contains(&root_s) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            sleep(Duration::from_millis(500));
        }
        let _ = fs::remove_file(&pidfile);
    }
}
