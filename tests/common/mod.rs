//! Shared test support: a sandbox with its private Apache, and the real dirhost binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dirhost::sandbox::Sandbox;

/// The uid/gid that owns test domains (no passwd entry needed).
pub const OWNER: u32 = 2001;
/// A second customer.
pub const OTHER: u32 = 2002;

/// A sandbox whose Apache runs and whose config points the log writer at this build.
pub fn sandbox() -> Sandbox {
    let mut sb = Sandbox::temp().expect("sandbox");
    sb.set_dirhost_binary(Path::new(env!("CARGO_BIN_EXE_dirhost")))
        .expect("set binary");
    sb.start_apache().expect("start apache");
    sb
}

/// Runs `dirhost --config <sandbox config> ARGS`.
pub fn dirhost(sb: &Sandbox, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dirhost"))
        .arg("--config")
        .arg(sb.config_path())
        .args(args)
        .output()
        .expect("run dirhost")
}

/// Runs `dirhost apply ARGS`, waits for Apache to finish the reload it triggered (if any),
/// and returns the output.
pub fn apply(sb: &Sandbox, args: &[&str]) -> Output {
    let before = sb.apache_generation();
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let out = dirhost(sb, &all);
    if String::from_utf8_lossy(&out.stdout).contains("reloaded Apache") {
        sb.wait_apache_generation(before + 1)
            .expect("apache reload");
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `rel` under the domain dir as `uid`, creating parents.
pub fn put(sb: &Sandbox, domain: &str, rel: &str, contents: &str, uid: u32) -> PathBuf {
    let path = sb.srv().join(domain).join(rel);
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    chown_up(sb.srv(), dir, uid);
    std::fs::write(&path, contents).unwrap();
    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
    path
}

/// chowns every directory from `dir` up to (not including) `stop`.
pub fn chown_up(stop: &Path, dir: &Path, uid: u32) {
    let mut d = dir.to_path_buf();
    while d.starts_with(stop) && d != stop {
        std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
        d.pop();
    }
}

/// A self-signed certificate (and key) for `names`, made with the openssl CLI.
pub fn self_signed(dir: &Path, names: &[&str], days: u32) -> (String, String) {
    let key = dir.join("k.pem");
    let crt = dir.join("c.pem");
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args([
            "-days",
            &days.to_string(),
            "-subj",
            &format!("/CN={}", names[0]),
        ])
        .args(["-addext", &format!("subjectAltName={san}")])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = (
        std::fs::read_to_string(&crt).unwrap(),
        std::fs::read_to_string(&key).unwrap(),
    );
    std::fs::remove_file(key).unwrap();
    std::fs::remove_file(crt).unwrap();
    out
}

/// GET over HTTPS with curl (SNI for `host`, pinned to 127.0.0.1), trusting `ca`.
/// Returns (status, body).
pub fn https_get(port: u16, host: &str, path: &str, ca: &Path) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
