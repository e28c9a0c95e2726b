//! Mail test support: a sandbox with its private Exim and Dovecot on loopback ports, mail
//! domains and mailboxes made as their owner, and small SMTP/IMAP clients.
//!
//! Nothing here touches a path outside the sandbox's temp root, except the one line that
//! `dirhost::mail::sandbox::TrustedConfig` adds to /etc/exim4/trusted_configs while the
//! servers run (removed again when they stop, also on panic).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dirhost::mail::sandbox::MailServers;
use dirhost::sandbox::Sandbox;

use crate::common::{dirhost, stderr, stdout};

/// A sandbox whose Exim and Dovecot run. Fields drop in order: servers first, then the
/// sandbox (which removes the tree).
pub struct MailWorld {
    pub servers: MailServers,
    pub sb: Sandbox,
}

impl std::ops::Deref for MailWorld {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

/// Starts a sandbox (with Apache), renders the mail configuration, starts Exim and Dovecot.
pub fn mail_world() -> MailWorld {
    mail_world_with(|_| {})
}

/// Like [`mail_world`], with a chance to change the config first (e.g. a smarthost).
pub fn mail_world_with(edit: impl FnOnce(&mut dirhost::config::Config)) -> MailWorld {
    let mut sb = crate::common::sandbox();
    let mut cfg = sb.config().clone();
    edit(&mut cfg);
    sb.set_config(cfg).unwrap();
    // The real config tests from the first apply on.
    sb.use_mail_servers().unwrap();
    let out = dirhost(&sb, &["apply"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let servers = match MailServers::start(&mut sb) {
        Ok(s) => s,
        Err(e) => panic!("mail servers did not start: {e:#}"),
    };
    MailWorld { servers, sb }
}

impl MailWorld {
    /// `dirhost apply ARGS`, asserting success, waiting until the servers it reloaded answer.
    pub fn apply(&self, args: &[&str]) -> Output {
        let before = self.sb.apache_generation();
        let mut all = vec!["apply"];
        all.extend_from_slice(args);
        let out = dirhost(&self.sb, &all);
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "dirhost apply {args:?}:\n{text}\n{}\n{}",
            stderr(&out),
            self.servers.logs()
        );
        if text.contains("reloaded Apache") {
            self.sb.wait_apache_generation(before + 1).unwrap();
        }
        if text.contains("reloaded Exim") || text.contains("reloaded Dovecot") {
            self.wait_ready();
        }
        out
    }

    /// Waits until Exim answers SMTP with its banner and Dovecot accepts IMAPS.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let smtp_ok = TcpStream::connect(("127.0.0.1", self.smtp_port()))
                .ok()
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line).ok()?;
                    line.starts_with("220").then_some(())
                })
                .is_some();
            let imap_ok = TcpStream::connect(("127.0.0.1", self.mail().imaps)).is_ok();
            if smtp_ok && imap_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "servers not ready:\n{}",
                self.servers.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mail(&self) -> &dirhost::config::Mail {
        &self.sb.config().mail
    }

    pub fn smtp_port(&self) -> u16 {
        self.mail().smtp
    }

    /// The host certificate (a CA file for curl and swaks).
    pub fn host_ca(&self) -> PathBuf {
        self.mail().certificate.clone()
    }

    /// `mailboxes/<local>/Maildir` of `domain`.
    pub fn maildir(&self, domain: &str, local: &str) -> PathBuf {
        self.sb
            .srv()
            .join(domain)
            .join("mailboxes")
            .join(local)
            .join("Maildir")
    }
}

/// Makes /srv/<name> owned by `uid` with an empty `mailboxes/`.
pub fn add_mail_domain(sb: &Sandbox, name: &str, uid: u32) -> PathBuf {
    let d = sb.srv().join(name);
    for dir in [d.clone(), d.join("mailboxes"), d.join("config")] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown(&dir, Some(uid), Some(uid)).unwrap();
    }
    d
}

/// Makes `mailboxes/<local>/` (0755) with a `password` file (0600) holding `password`
/// verbatim, all owned by `uid`.
pub fn add_mailbox(sb: &Sandbox, domain: &str, local: &str, password: Option<&str>, uid: u32) {
    let m = sb.srv().join(domain).join("mailboxes").join(local);
    std::fs::create_dir_all(&m).unwrap();
    std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&m, Some(uid), Some(uid)).unwrap();
    if let Some(p) = password {
        write_owned(&m.join("password"), p, uid, 0o600);
    }
}

/// Writes a file owned by `uid` with `mode`.
pub fn write_owned(path: &Path, contents: &str, uid: u32, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
}

/// Number of messages in a Maildir's `new/` and `cur/`.
pub fn count(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
        .map(|rd| rd.filter_map(Result::ok).count())
        .sum()
}

/// Waits until `maildir` holds at least `n` messages; returns how many it holds.
pub fn wait_count(maildir: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let c = count(maildir);
        if c >= n || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The messages (full text) in a Maildir.
pub fn messages(maildir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(maildir.join(d)) {
            for e in rd.flatten() {
                out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// A plain SMTP conversation on 127.0.0.1:`port` (no TLS): EHLO, MAIL, RCPT..., DATA,
/// QUIT. `Ok(queue line)` on acceptance, `Err(the first failing reply)` otherwise.
pub fn smtp_send(port: u16, from: &str, to: &[&str], body: &str) -> Result<String, String> {
    let mut c = SmtpConn::connect(port)?;
    let r = c.send(from, to, body);
    let _ = c.cmd("QUIT");
    r
}

/// A plain SMTP connection, for several messages.
pub struct SmtpConn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl SmtpConn {
    /// Connects (retrying while the port is closed for up to 5 s, e.g. during an Exim
    /// reload) and says EHLO.
    pub fn connect(port: u16) -> Result<Self, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(5);
        let s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("connect: {e}")),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = Self {
            r: BufReader::new(s),
            w,
        };
        let banner = c.reply()?;
        if !banner.starts_with("220") {
            return Err(banner);
        }
        let ehlo = c.cmd("EHLO client.test")?;
        if !ehlo.starts_with("250") {
            return Err(ehlo);
        }
        Ok(c)
    }

    fn reply(&mut self) -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("connection closed after {all:?}"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }

    /// Sends a command line, returns the reply.
    pub fn cmd(&mut self, line: &str) -> Result<String, String> {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        self.reply()
    }

    /// One message.
    pub fn send(&mut self, from: &str, to: &[&str], body: &str) -> Result<String, String> {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"))?;
        if !r.starts_with("250") {
            let _ = self.cmd("RSET");
            return Err(r);
        }
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"))?;
            if !r.starts_with("250") {
                let _ = self.cmd("RSET");
                return Err(r);
            }
        }
        let r = self.cmd("DATA")?;
        if !r.starts_with("354") {
            return Err(r);
        }
        let mut data = String::new();
        for line in body.lines() {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.w
            .write_all(data.as_bytes())
            .map_err(|e| e.to_string())?;
        let r = self.reply()?;
        if r.starts_with("250") { Ok(r) } else { Err(r) }
    }
}

/// A message with the usual headers.
pub fn message(from: &str, to: &str, subject: &str, body: &str) -> String {
    format!(
        "From: <{from}>\nTo: <{to}>\nSubject: {subject}\nMessage-ID: <{}.{}@client.test>\n\n{body}\n",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ (body.len() as u128)
    )
}

/// Runs swaks with `args` against 127.0.0.1; returns (success, full transcript).
pub fn swaks(args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--timeout",
            "20",
            "--helo",
            "client.test",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run swaks");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `curl imaps://` as `user`: the text of message 1 of INBOX, or curl's exit code.
pub fn imap_fetch(port: u16, host: &str, ca: &Path, user: &str, pass: &str) -> Result<String, i32> {
    curl(&[
        &format!("imaps://{host}:{port}/INBOX;UID=1"),
        "--resolve",
        &format!("{host}:{port}:127.0.0.1"),
        "--cacert",
        &ca.display().to_string(),
        "--user",
        &format!("{user}:{pass}"),
    ])
}

/// A fresh loopback source address for each IMAP/POP3 client: Dovecot's auth penalty
/// (which grows per source address with each failed login) must not slow the next test.
fn source_address() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + std::process::id() * 7;
    format!(
        "127.{}.{}.{}",
        1 + (n >> 16) % 250,
        (n >> 8) % 256,
        2 + n % 250
    )
}

/// `curl ARGS` (10 s limit) from a fresh loopback address: stdout, or the exit code.
pub fn curl(args: &[&str]) -> Result<String, i32> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--interface", &source_address()])
        .args(args)
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

/// Whether `user`/`pass` logs in over IMAPS (curl's `EXAMINE INBOX`). curl's exit 67 is a
/// refused login; other failures (a connection cut while Dovecot reloads) are retried.
pub fn imap_login_ok(w: &MailWorld, user: &str, pass: &str) -> bool {
    let port = w.mail().imaps;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = curl(&[
            &format!("imaps://localhost:{port}/"),
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "--cacert",
            &w.host_ca().display().to_string(),
            "--user",
            &format!("{user}:{pass}"),
            "-X",
            "EXAMINE INBOX",
        ]);
        match r {
            Ok(_) => return true,
            Err(67) => return false,
            Err(code) if Instant::now() > deadline => {
                panic!("curl exit {code} for {user}\n{}", w.servers.logs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A tiny SMTP server that stores every message it receives (the "remote" side for mail
/// Exim relays out, e.g. to check DKIM signatures).
pub struct SmtpSink {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub fn start() -> Self {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || {
                    let _ = sink_session(conn, &store);
                });
            }
        });
        Self { port, messages }
    }

    /// Waits for `n` messages; returns them.
    pub fn wait(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages.lock().unwrap().clone();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sink_session(conn: TcpStream, store: &Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 sink.test ESMTP\r\n")?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go\r\n")?;
            let mut msg = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" || l == ".\n" {
                    break;
                }
                let l = l.strip_prefix('.').map(str::to_string).unwrap_or(l);
                msg.push_str(&l);
            }
            store.lock().unwrap().push(msg);
            w.write_all(b"250 stored\r\n")?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}

/// Reads everything from a reader (helper for child outputs).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// A minimal IMAPS client (rustls), enough to log in, select INBOX and see
/// how many messages it holds: the "IMAP-visible" side of the latency benchmark.
pub struct Imap {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    tag: u32,
}

impl Imap {
    /// Connects without verifying the certificate (the tests that check certificates use
    /// curl and openssl; this client only measures).
    pub fn connect(port: u16, host: &str) -> Imap {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut me = Imap {
            tls: rustls::StreamOwned::new(conn, sock),
            tag: 0,
        };
        let greeting = me.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        me
    }

    fn line(&mut self) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = self.tls.read(&mut b).unwrap();
            assert!(n == 1, "IMAP connection closed");
            out.push(b[0]);
            if b[0] == b'\n' {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
    }

    /// Runs a command; returns the untagged lines and the tagged status line.
    pub fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.tls
            .write_all(format!("{tag} {c}\r\n").as_bytes())
            .unwrap();
        self.tls.flush().unwrap();
        let mut untagged = Vec::new();
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return (untagged, l);
            }
            untagged.push(l);
        }
    }

    pub fn login(&mut self, user: &str, pass: &str) {
        let (_, st) = self.cmd(&format!("LOGIN \"{user}\" \"{pass}\""));
        assert!(st.contains("OK"), "{st}");
        let (_, st) = self.cmd("SELECT INBOX");
        assert!(st.contains("OK"), "{st}");
    }

    /// The message count after a NOOP (the `* N EXISTS` Dovecot reports).
    pub fn exists(&mut self) -> Option<usize> {
        let (lines, _) = self.cmd("NOOP");
        lines.iter().rev().find_map(|l| {
            l.strip_prefix("* ")?
                .strip_suffix(" EXISTS\r\n")?
                .parse()
                .ok()
        })
    }
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
