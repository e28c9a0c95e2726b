//! A real ACME CA for the tests: Debian's `pebble` with `pebble-challtestsrv` as its DNS.
//!
//! Each [`Pebble`] lives in its own temp dir with its own TLS certificate (made with the
//! openssl CLI), takes unique loopback ports (an atomic counter, each port probed free),
//! waits for every port with backoff, and kills both processes on drop. Pebble validates
//! HTTP-01 against the sandbox's Apache: its `httpPort` is the sandbox's http port, and the
//! challtestsrv DNS answers every A query with 127.0.0.1 (no AAAA).
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use dirhost::config::Config;
use dirhost::sandbox::Sandbox;

/// Next candidate port; spread by pid so parallel test binaries rarely meet.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn free_port() -> u16 {
    let _ = NEXT_PORT.compare_exchange(
        0,
        20_000 + (std::process::id() % 400) as u16 * 50,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let p = if p > 60_000 { 20_000 + p % 40_000 } else { p };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
            && std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        {
            return p;
        }
    }
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut delay = Duration::from_millis(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running Pebble and challtestsrv.
pub struct Pebble {
    dir: tempfile::TempDir,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    /// The ACME port (directory at `https://localhost:<port>/dir`).
    pub acme_port: u16,
    /// Pebble's management port (`/roots/0`).
    pub mgmt_port: u16,
    /// challtestsrv's DNS port.
    pub dns_port: u16,
    /// challtestsrv's management port.
    pub chall_port: u16,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port`, issuing certificates valid for
    /// `validity` seconds (Pebble's default, 5 years, when `None`).
    pub fn start(http_port: u16, validity: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("pebble temp dir");
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=test minica",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "req.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
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
                "30",
                "-extfile",
                "ext.cnf",
            ],
        );
        let (acme_port, mgmt_port, dns_port, chall_port, tls_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
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
        if let Some(v) = validity {
            conf["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(d.join("pebble.json"), conf.to_string()).unwrap();

        let chall_log = d.join("challtestsrv.log");
        let mut chall = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .arg("-dns01")
            .arg(format!("127.0.0.1:{dns_port}"))
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .arg("-management")
            .arg(format!("127.0.0.1:{chall_port}"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&chall_log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&chall_log)
                    .unwrap(),
            ))
            .spawn()
            .expect("start pebble-challtestsrv (apt-get install pebble)");
        wait_for_port(chall_port, &mut chall, "pebble-challtestsrv", &chall_log);

        let log = d.join("pebble.log");
        let mut pebble = Command::new("pebble")
            .arg("-config")
            .arg("pebble.json")
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start pebble (apt-get install pebble)");
        wait_for_port(acme_port, &mut pebble, "pebble", &log);
        wait_for_port(mgmt_port, &mut pebble, "pebble", &log);
        let me = Self {
            dir,
            pebble: Some(pebble),
            challtestsrv: Some(chall),
            acme_port,
            mgmt_port,
            dns_port,
            chall_port,
        };
        me.fetch_roots();
        me
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.acme_port)
    }

    /// The CA of Pebble's own HTTPS listener (for `[acme] ca_bundle`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Pebble's issuing root, fetched from the management port at start.
    pub fn roots(&self) -> PathBuf {
        self.dir.path().join("roots.pem")
    }

    /// Pebble's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    fn fetch_roots(&self) {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(self.ca_bundle())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "fetching Pebble's root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(self.roots(), &out.stdout).unwrap();
    }

    fn chall_post(&self, path: &str, body: serde_json::Value) {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!("http://127.0.0.1:{}{path}", self.chall_port))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "challtestsrv {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes Pebble's DNS answer `host` with `ip` (A record).
    pub fn add_a(&self, host: &str, ip: &str) {
        self.chall_post(
            "/add-a",
            serde_json::json!({"host": format!("{host}."), "addresses": [ip]}),
        );
    }

    /// Removes what [`Pebble::add_a`] set for `host`.
    pub fn clear_a(&self, host: &str) {
        self.chall_post("/clear-a", serde_json::json!({"host": format!("{host}.")}));
    }

    /// Stops Pebble (the CA becomes unreachable); challtestsrv keeps running.
    pub fn stop_ca(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The sandbox's config with `[acme]` pointing at this Pebble, written to the sandbox's
    /// config file (so the real binary uses it too) and returned.
    pub fn configure(&self, sb: &Sandbox) -> Config {
        let mut cfg = sb.config().clone();
        cfg.acme.directory = self.directory();
        cfg.acme.ca_bundle = self.ca_bundle();
        cfg.acme.chain_roots = self.roots();
        cfg.acme.resolver = format!("127.0.0.1:{}", self.dns_port);
        cfg.acme.host_addresses = vec!["127.0.0.1".into()];
        cfg.acme.contact = vec!["admin@dirhost.test".into()];
        cfg.acme.hooks_dir = sb.root().join("etc/dirhost/ssl-hooks.d");
        write_config(sb, &cfg);
        cfg
    }
}

/// Writes `cfg` to the sandbox's config file.
pub fn write_config(sb: &Sandbox, cfg: &Config) {
    std::fs::write(sb.config_path(), cfg.to_toml().unwrap()).unwrap();
}

impl Drop for Pebble {
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
