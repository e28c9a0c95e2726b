//! A local ACME CA for `dirhost demo` and the tests: Debian's `pebble` with
//! `pebble-challtestsrv` as its DNS (every name resolves to 127.0.0.1 unless told otherwise),
//! validating HTTP-01 against the sandbox's Apache.
//!
//! What it owns: starting both on free loopback ports with a TLS certificate of their own
//! (made with the `openssl` command in the directory it is given), fetching Pebble's issuing
//! root (with `curl`), the `[acme]` settings that point dirhost at them, DNS answers for the
//! tests (`add_a`, `clear_a`), and stopping both when dropped. Nothing outside its directory
//! is touched, and [`LocalCa::start`] returns `None` (the demo then runs without HTTPS) when
//! `pebble` is not installed.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::Config;

/// The running CA.
pub struct LocalCa {
    dir: PathBuf,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    acme_port: u16,
    dns_port: u16,
    chall_port: u16,
}

/// How to start a [`LocalCa`].
pub struct Options<'a> {
    /// Lifetime of the certificates it issues, in seconds (Pebble's default, 5 years, when
    /// `None`).
    pub validity: Option<u64>,
    /// Picks each loopback port (free for TCP and UDP). The default asks the kernel; tests
    /// running many CAs at once use their own spread of ports.
    pub free_port: &'a dyn Fn() -> Result<u16>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            validity: None,
            free_port: &free_port,
        }
    }
}

fn installed(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free loopback port")?;
        let port = l.local_addr()?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both TCP and UDP")
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn wait_for(port: u16, child: &mut Child, what: &str, log: &Path) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(st)) = child.try_wait() {
            bail!("{what} exited ({st}):\n{}", log_text());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not listen on {port} within 20 s:\n{}",
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl LocalCa {
    /// Starts Pebble (validating HTTP-01 on `http_port`) in `<root>/pebble/`, or `None` when
    /// `pebble`, `pebble-challtestsrv` or `curl` is not installed.
    pub fn start(root: &Path, http_port: u16) -> Result<Option<Self>> {
        Self::start_in(&root.join("pebble"), http_port, &Options::default())
    }

    /// [`LocalCa::start`] with its files in `dir` and the given options.
    pub fn start_in(dir: &Path, http_port: u16, opts: &Options<'_>) -> Result<Option<Self>> {
        if !["pebble", "pebble-challtestsrv", "curl", "openssl"]
            .iter()
            .all(|b| installed(b))
        {
            return Ok(None);
        }
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let d = dir.as_path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "365",
            "-subj",
            "/CN=dirhost demo",
        ]);
        run(d, "openssl", &args)?;
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(d, "openssl", &args)?;
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )?;
        run(
            d,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "365",
                "-extfile",
                "ext.cnf",
            ],
        )?;
        let free_port = opts.free_port;
        let [acme_port, mgmt_port, dns_port, chall_port, tls_port] = [
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
        ];
        let mut conf = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": "cert.pem",
            "privateKey": "key.pem",
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = opts.validity {
            conf["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(d.join("pebble.json"), conf.to_string())?;
        let mut me = Self {
            dir: dir.clone(),
            pebble: None,
            challtestsrv: None,
            acme_port,
            dns_port,
            chall_port,
        };
        let log = |name: &str| -> Result<(Stdio, Stdio)> {
            let f = std::fs::File::create(d.join(name))?;
            Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
        };
        let (out, err) = log("challtestsrv.log")?;
        let chall = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .arg("-dns01")
            .arg(format!("127.0.0.1:{dns_port}"))
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .arg("-management")
            .arg(format!("127.0.0.1:{chall_port}"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("failed to start pebble-challtestsrv")?;
        let chall = me.challtestsrv.insert(chall);
        wait_for(
            chall_port,
            chall,
            "pebble-challtestsrv",
            &d.join("challtestsrv.log"),
        )?;
        let (out, err) = log("pebble.log")?;
        let pebble = Command::new("pebble")
            .args(["-config", "pebble.json", "-dnsserver"])
            .arg(format!("127.0.0.1:{dns_port}"))
            // No sleeps before validating, no nonces refused at random, no authorizations
            // reused: fast and the same on every run.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("failed to start pebble")?;
        let pebble = me.pebble.insert(pebble);
        for port in [acme_port, mgmt_port] {
            wait_for(port, pebble, "pebble", &d.join("pebble.log"))?;
        }
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(d.join("ca.pem"))
            .arg(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
            .output()
            .context("failed to run curl")?;
        if !out.status.success() {
            bail!(
                "fetching Pebble's root: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::write(me.roots(), &out.stdout)?;
        Ok(Some(me))
    }

    /// Pebble's issuing root: what a client must trust (`curl --cacert`).
    pub fn roots(&self) -> PathBuf {
        self.dir.join("roots.pem")
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.acme_port)
    }

    /// The CA of Pebble's own HTTPS listener (for `[acme] ca_bundle`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Pebble's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    fn chall_post(&self, path: &str, body: serde_json::Value) -> Result<()> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!("http://127.0.0.1:{}{path}", self.chall_port))
            .output()
            .context("failed to run curl")?;
        if !out.status.success() {
            bail!(
                "challtestsrv {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Makes the CA's DNS answer `host` with `ip` (an A record).
    pub fn add_a(&self, host: &str, ip: &str) -> Result<()> {
        self.chall_post(
            "/add-a",
            serde_json::json!({"host": format!("{host}."), "addresses": [ip]}),
        )
    }

    /// Removes what [`LocalCa::add_a`] set for `host`.
    pub fn clear_a(&self, host: &str) -> Result<()> {
        self.chall_post("/clear-a", serde_json::json!({"host": format!("{host}.")}))
    }

    /// Stops Pebble (the CA becomes unreachable); its DNS keeps answering.
    pub fn stop_ca(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `cfg` with `[acme]` pointing at this CA (its directory, its TLS root, its issuing
    /// root for the chain check, its DNS for the name check, 127.0.0.1 as this host).
    pub fn configure(&self, cfg: &mut Config, root: &Path) {
        cfg.acme.directory = self.directory();
        cfg.acme.ca_bundle = self.ca_bundle();
        cfg.acme.chain_roots = self.roots();
        cfg.acme.resolver = format!("127.0.0.1:{}", self.dns_port);
        cfg.acme.host_addresses = vec!["127.0.0.1".into()];
        cfg.acme.hooks_dir = root.join("etc/dirhost/ssl-hooks.d");
    }
}

impl Drop for LocalCa {
    fn drop(&mut self) {
        for c in [self.pebble.as_mut(), self.challtestsrv.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `dirhost demo`: starts the local CA when Pebble is installed and points the sandbox's
/// config at it. Problems are printed and the demo goes on without HTTPS.
pub fn demo_ca(sb: &mut crate::sandbox::Sandbox) -> Option<LocalCa> {
    match LocalCa::start(sb.root(), sb.http_port()) {
        Ok(Some(ca)) => {
            let mut cfg = sb.config().clone();
            ca.configure(&mut cfg, sb.root());
            match sb.set_config(cfg) {
                Ok(()) => Some(ca),
                Err(e) => {
                    eprintln!("dirhost demo: no HTTPS: {e:#}");
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("dirhost demo: no HTTPS, the local Pebble did not start: {e:#}");
            None
        }
    }
}

/// `dirhost demo`: certificates for every site now (forced: an earlier run's certificates
/// chain to that run's Pebble), and the lines to print about HTTPS.
pub fn demo_https(
    ca: Option<&LocalCa>,
    cfg: &Config,
    config_path: &Path,
    sample: &str,
    exe: &Path,
) -> String {
    let https = cfg.ports.https;
    let Some(ca) = ca else {
        return format!(
            "\nHTTPS: `apt install pebble curl` and run the demo again: every site then gets a \
             certificate from a local Pebble by itself (port {https} serves sites that have one).\n"
        );
    };
    let opts = super::Options {
        only: None,
        force: true,
    };
    let mut text = String::from("\nHTTPS from a local ACME CA (Debian's Pebble):\n");
    match super::maintain_with(cfg, config_path, crate::reconcile::now(), &opts) {
        Ok(report) => {
            for o in &report.domains {
                if let Some(e) = &o.error {
                    text.push_str(&format!("  {}: {e}\n", o.domain));
                }
            }
        }
        Err(e) => text.push_str(&format!("  certificates failed: {e:#}\n")),
    }
    let roots = ca.roots();
    text.push_str(&format!(
        "  curl --cacert {roots} --resolve {sample}:{https}:127.0.0.1 https://{sample}:{https}/\n\
         \x20 a new site is on HTTPS about a second after its mkdir, e.g. after the mkdir above:\n\
         \x20 curl --cacert {roots} --resolve mysite.test:{https}:127.0.0.1 https://mysite.test:{https}/\n\
         \x20 {exe} --config {cfg} ssl list\n",
        roots = roots.display(),
        exe = exe.display(),
        cfg = config_path.display(),
    ));
    text
}
