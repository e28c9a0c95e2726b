//! A small headless-Chromium driver for system tests: the W3C WebDriver protocol spoken over
//! plain HTTP (std `TcpStream` + serde_json) to a private `chromedriver` that this module
//! starts on a free loopback port and kills (with the Chromium it started) on drop.
//!
//! Chromium runs with a fresh temporary profile, resolves every host name to 127.0.0.1
//! (`--host-resolver-rules`), so `https://example.test:PORT/` reaches the sandbox's Apache,
//! and trusts test certificates only when asked to, by pinning them:
//! `Browser::start_with(&[Browser::trust_cert_arg(&cert_pem)?])` adds
//! `--ignore-certificate-errors-spki-list=<base64 SHA-256 of the SubjectPublicKeyInfo>`.
//!
//! HTTP basic auth (WebDriver has no dialog for it): [`Browser::basic_auth`] sends an
//! `Authorization` header with every request through CDP `Network.setExtraHTTPHeaders`
//! (chromedriver's `goog/cdp/execute`), or put the credentials in the top-level URL
//! (`https://user:pass@host/`); both work with Debian's Chromium, see `tests/stats.rs`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// Debian's chromium: the real binary, not the `/usr/bin/chromium` launcher script (which
/// sources `/etc/chromium.d` and looks at `$HOME`). Falls back to the launcher.
const CHROMIUM: &[&str] = &["/usr/lib/chromium/chromium", "/usr/bin/chromium"];
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);

/// One Chromium session driven through a private chromedriver.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// The chromedriver log and Chromium's profile; removed on drop.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with the default flags.
    pub fn start() -> Result<Browser> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra Chromium command-line arguments
    /// (e.g. [`trust_cert_arg`](Self::trust_cert_arg)).
    pub fn start_with(extra_args: &[String]) -> Result<Browser> {
        let mut last = None;
        // The port is probed free, then handed to chromedriver: retry if somebody took it.
        for _ in 0..3 {
            match Self::try_start(extra_args) {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("chromedriver did not start")))
    }

    /// The Chromium argument that makes it trust the certificate `cert_pem` (first PEM block)
    /// by its public key, and nothing else it would otherwise reject.
    pub fn trust_cert_arg(cert_pem: &str) -> Result<String> {
        Ok(format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_sha256_base64(cert_pem)?
        ))
    }

    fn try_start(extra_args: &[String]) -> Result<Browser> {
        let dir = tempfile::Builder::new()
            .prefix("dirhost-browser.")
            .tempdir()
            .context("temp dir for the browser")?;
        let port = free_port()?;
        let log = dir.path().join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: on drop the whole group (chromedriver, Chromium and
            // its helpers) is signalled by that group's id, nothing else.
            .process_group(0)
            .spawn()
            .with_context(|| format!("failed to start {CHROMEDRIVER}"))?;
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            dir,
        };
        b.wait_ready()?;
        let profile = b.dir.path().join("profile");
        std::fs::create_dir(&profile).context("profile dir")?;
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1024",
            "--host-resolver-rules=MAP * 127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra_args.iter().cloned());
        let binary = CHROMIUM
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| anyhow!("no chromium binary in {CHROMIUM:?}"))?;
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "timeouts": {"pageLoad": 30000, "script": 30000, "implicit": 0},
                    "goog:chromeOptions": {"binary": binary, "args": args}
                }
            }
        });
        let v = b
            .call("POST", "/session", Some(&caps))
            .with_context(|| format!("new session\n{}", b.driver_log()))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {v}"))?
            .to_string();
        Ok(b)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.driver.try_wait()? {
                bail!("chromedriver exited ({st})\n{}", self.driver_log());
            }
            if let Ok(v) = self.call("GET", "/status", None)
                && v["ready"] == true
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("chromedriver not ready after {START_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// The tail of chromedriver's log, for error messages.
    pub fn driver_log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// The browser's temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Navigates to `url` and waits for the page load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "url", Some(&json!({ "url": url })))
            .with_context(|| format!("goto {url}"))?;
        Ok(())
    }

    /// Clears the first element matching `css` and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) -> Result<()> {
        let e = self.find(css)?;
        self.cmd("POST", &format!("element/{e}/clear"), Some(&json!({})))?;
        self.cmd(
            "POST",
            &format!("element/{e}/value"),
            Some(&json!({ "text": text })),
        )
        .with_context(|| format!("fill {css}"))?;
        Ok(())
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) -> Result<()> {
        let e = self.find(css)?;
        self.cmd("POST", &format!("element/{e}/click"), Some(&json!({})))
            .with_context(|| format!("click {css}"))?;
        Ok(())
    }

    /// Waits until an element matches `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("no element {css} after {timeout:?}")));
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Waits until the page's rendered text (`innerText`) contains `needle`.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(v) = self.execute(
                "return document.documentElement ? document.documentElement.innerText : '';",
            ) {
                last = v.as_str().unwrap_or_default().to_string();
                if last.contains(needle) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let cut: String = last.chars().take(2000).collect();
                bail!("text {needle:?} not on the page after {timeout:?}; the page says:\n{cut}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> Result<String> {
        let e = self.find(css)?;
        let v = self.cmd("GET", &format!("element/{e}/text"), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The current DOM, serialised.
    pub fn source(&self) -> Result<String> {
        let v = self.cmd("GET", "source", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub fn current_url(&self) -> Result<String> {
        let v = self.cmd("GET", "url", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Runs `js` as a function body (`return …` gives the value).
    pub fn execute(&self, js: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "execute/sync",
            Some(&json!({ "script": js, "args": [] })),
        )
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.cmd("GET", "screenshot", None)?;
        let b64 = v.as_str().ok_or_else(|| anyhow!("screenshot: {v}"))?;
        let png = data_encoding::BASE64
            .decode(b64.as_bytes())
            .context("screenshot is not base64")?;
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// Sends `Authorization: Basic …` with every request from now on (CDP
    /// `Network.setExtraHTTPHeaders`). An empty `user` stops sending it.
    pub fn basic_auth(&self, user: &str, password: &str) -> Result<()> {
        self.cdp("Network.enable", json!({}))?;
        let headers = if user.is_empty() {
            json!({})
        } else {
            let token = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
            json!({ "Authorization": format!("Basic {token}") })
        };
        self.cdp("Network.setExtraHTTPHeaders", json!({ "headers": headers }))?;
        Ok(())
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.cmd(
            "POST",
            "goog/cdp/execute",
            Some(&json!({ "cmd": cmd, "params": params })),
        )
        .with_context(|| format!("CDP {cmd}"))
    }

    fn find(&self, css: &str) -> Result<String> {
        let v = self
            .cmd(
                "POST",
                "element",
                Some(&json!({ "using": "css selector", "value": css })),
            )
            .with_context(|| format!("find {css}"))?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("find {css}: {v}"))
    }

    /// A command in this session; returns its `value`.
    fn cmd(&self, method: &str, rel: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/session/{}/{rel}", self.session);
        self.call(method, &path, body)
    }

    /// One WebDriver HTTP exchange; returns the response's `value`, or its error as Err.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, text) = http(self.port, method, path, body)?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: HTTP {status}, not JSON: {text}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status != 200 {
            bail!(
                "{method} {path}: HTTP {status}: {} {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        // The group we made at spawn: chromedriver's pid is its id.
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in `cert_pem`: what
/// Chromium's `--ignore-certificate-errors-spki-list` takes.
pub fn spki_sha256_base64(cert_pem: &str) -> Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| anyhow!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow!("bad certificate: {e}"))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Ok(data_encoding::BASE64.encode(digest.as_ref()))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("probe a free port")?;
    Ok(l.local_addr()?.port())
}

/// A minimal HTTP/1.1 client for chromedriver: one request per connection.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect to chromedriver on port {port}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if body.is_some() {
        req.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    s.write_all(req.as_bytes())?;
    s.write_all(payload.as_bytes())?;
    s.flush()?;
    // chromedriver keeps the connection open whatever `Connection: close` says: read the
    // head, then exactly Content-Length bytes (or the chunks, or up to EOF).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s
            .read(&mut buf)
            .with_context(|| format!("{method} {path}: reading chromedriver's answer"))?;
        if n == 0 {
            bail!("{method} {path}: connection closed before the HTTP head ended");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: bad status line: {head}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        while body.len() < len {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("{method} {path}: body truncated");
            }
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(len);
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        body = dechunk(&body)?;
    } else {
        s.read_to_end(&mut body)?;
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
