//! DKIM keys and the DNS records `dirhost mail dns` prints (DKIM, SPF, DMARC).
//!
//! Keys are RSA 2048, made with the `openssl` command (`openssl genpkey`): dirhost's crypto
//! stack is ring, which cannot generate RSA keys, and pulling in a second RSA
//! implementation just for key generation is not worth it. The key never touches /srv (a
//! customer could swap it there); it lives in `<state>/mail/exim/dkim/<domain>`,
//! root:Debian-exim 0640, and never appears in a log line.
//!
//! SPF and DMARC are `dns::records`' (`spf`, `dmarc`), so `dirhost mail dns` and `dirhost
//! dns export` always agree: Sympl's rules, no file no record, empty or `true` the defaults.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// Generates a new RSA 2048 private key (PKCS#8 PEM).
pub fn generate_key() -> Result<String> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .stdin(Stdio::null())
        .output()
        .context("failed to run openssl to generate a DKIM key (is openssl installed?)")?;
    ensure!(
        out.status.success(),
        "openssl genpkey failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let pem = String::from_utf8(out.stdout).context("openssl printed a key that is not text")?;
    ensure!(
        pem.contains("-----BEGIN PRIVATE KEY-----"),
        "openssl printed no private key"
    );
    Ok(pem)
}

/// Checks that `pem` is an RSA private key openssl can read (a key file edited or truncated
/// by hand is not used).
pub fn check_key(pem: &str) -> Result<()> {
    public_key_b64(pem).map(|_| ())
}

/// The public half of `pem` as base64 DER (SubjectPublicKeyInfo), the `p=` of the record.
pub fn public_key_b64(pem: &str) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run openssl (is it installed?)")?;
    {
        let mut stdin = child.stdin.take().context("openssl has no stdin")?;
        stdin
            .write_all(pem.as_bytes())
            .context("failed to pass the DKIM key to openssl")?;
    }
    let out = child
        .wait_with_output()
        .context("failed to run openssl pkey")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("the DKIM key is not a private key openssl can read");
    }
    Ok(data_encoding::BASE64.encode(&out.stdout))
}

/// The DKIM TXT record's value for a public key.
pub fn dkim_record(public_b64: &str) -> String {
    format!("v=DKIM1; k=rsa; p={public_b64}")
}

/// A TXT record in zone-file syntax, split into quoted strings of at most 255 bytes.
pub fn txt(name: &str, value: &str) -> String {
    let chunks: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c).replace('"', "\\\"")))
        .collect();
    format!("{name}. IN TXT {}", chunks.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records_are_split_into_strings() {
        let long = "a".repeat(300);
        let t = txt("sel._domainkey.example.com", &long);
        assert!(t.starts_with("sel._domainkey.example.com. IN TXT \""));
        assert_eq!(t.matches('"').count(), 4);
    }

    #[test]
    fn generates_a_usable_key() {
        if Command::new("openssl").arg("version").output().is_err() {
            return;
        }
        let k = generate_key().unwrap();
        let p = public_key_b64(&k).unwrap();
        assert!(p.len() > 300, "{p}");
        assert!(check_key("-----BEGIN PRIVATE KEY-----\nbroken\n").is_err());
    }
}
