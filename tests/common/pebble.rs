//! A real ACME CA for the tests: Debian's `pebble` with `pebble-challtestsrv` as its DNS,
//! run by the same code as the demo's ([`dirhost::acme::localca::LocalCa`]).
//!
//! Each [`Pebble`] lives in its own temp dir, takes unique loopback ports (an atomic counter
//! spread by pid, each port probed free, so parallel test binaries rarely meet), and kills
//! both processes on drop. Pebble validates HTTP-01 against the sandbox's Apache: its
//! `httpPort` is the sandbox's http port, and the challtestsrv DNS answers every A query with
//! 127.0.0.1 (no AAAA) unless a test says otherwise ([`Pebble::add_a`]).
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};

use dirhost::acme::localca::{LocalCa, Options};
use dirhost::config::Config;
use dirhost::sandbox::Sandbox;

/// Next candidate port; spread by pid so parallel test binaries rarely meet.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn free_port() -> anyhow::Result<u16> {
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
            return Ok(p);
        }
    }
}

/// A running Pebble and challtestsrv.
pub struct Pebble {
    ca: LocalCa,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port`, issuing certificates valid for
    /// `validity` seconds (Pebble's default, 5 years, when `None`).
    pub fn start(http_port: u16, validity: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("pebble temp dir");
        let opts = Options {
            validity,
            free_port: &free_port,
        };
        let ca = LocalCa::start_in(dir.path(), http_port, &opts)
            .unwrap_or_else(|e| panic!("start pebble: {e:#}"))
            .expect("pebble, pebble-challtestsrv, curl and openssl (apt-get install pebble curl)");
        Self { ca, _dir: dir }
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        self.ca.directory()
    }

    /// The CA of Pebble's own HTTPS listener (for `[acme] ca_bundle`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.ca.ca_bundle()
    }

    /// Pebble's issuing root, fetched from the management port at start.
    pub fn roots(&self) -> PathBuf {
        self.ca.roots()
    }

    /// Pebble's own log, for failure messages.
    pub fn log(&self) -> String {
        self.ca.log()
    }

    /// Makes Pebble's DNS answer `host` with `ip` (A record).
    pub fn add_a(&self, host: &str, ip: &str) {
        self.ca.add_a(host, ip).unwrap();
    }

    /// Removes what [`Pebble::add_a`] set for `host`.
    pub fn clear_a(&self, host: &str) {
        self.ca.clear_a(host).unwrap();
    }

    /// Stops Pebble (the CA becomes unreachable); challtestsrv keeps running.
    pub fn stop_ca(&mut self) {
        self.ca.stop_ca();
    }

    /// The sandbox's config with `[acme]` pointing at this Pebble, written to the sandbox's
    /// config file (so the real binary uses it too) and returned.
    pub fn configure(&self, sb: &Sandbox) -> Config {
        let mut cfg = sb.config().clone();
        self.ca.configure(&mut cfg, sb.root());
        cfg.acme.contact = vec!["admin@dirhost.test".into()];
        write_config(sb, &cfg);
        cfg
    }
}

/// Writes `cfg` to the sandbox's config file.
pub fn write_config(sb: &Sandbox, cfg: &Config) {
    std::fs::write(sb.config_path(), cfg.to_toml().unwrap()).unwrap();
}
