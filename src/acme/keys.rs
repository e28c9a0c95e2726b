//! Private keys, CSRs and self-signed certificates, made with rcgen (ring backend).
//!
//! This module owns key generation for new certificate sets (a fresh key per certificate:
//! ECDSA P-256 by default; RSA 2048 through `openssl genpkey`, because ring cannot generate
//! RSA keys and dirhost uses no other crypto library), CSRs for ACME orders, and the
//! self-signed certificates of `config/ssl-provider = selfsigned`. It must not write files
//! or talk to the network.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};

use crate::config::KeyType;

/// Lifetime of a self-signed certificate (renewed like any other, a third before expiry).
pub const SELF_SIGNED_DAYS: i64 = 90;

/// A kind of key: `[acme] key_type`, or a domain's `rsa_key_size` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// ECDSA on P-256.
    EcdsaP256,
    /// RSA with this many bits.
    Rsa(u32),
}

impl From<KeyType> for KeySpec {
    fn from(t: KeyType) -> Self {
        match t {
            KeyType::EcdsaP256 => Self::EcdsaP256,
            KeyType::Rsa2048 => Self::Rsa(2048),
        }
    }
}

impl KeySpec {
    /// Is `key` of this kind (RSA sizes are not told apart)?
    pub fn matches(self, key: &KeyPair) -> bool {
        let rsa = key.algorithm() == &rcgen::PKCS_RSA_SHA256;
        matches!((self, rsa), (Self::Rsa(_), true) | (Self::EcdsaP256, false))
    }
}

/// A new private key of the configured type.
pub fn generate(key_type: KeyType) -> Result<KeyPair> {
    generate_spec(key_type.into())
}

/// A new private key of kind `spec`.
pub fn generate_spec(spec: KeySpec) -> Result<KeyPair> {
    match spec {
        KeySpec::EcdsaP256 => {
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("failed to generate a P-256 key")
        }
        KeySpec::Rsa(bits) => {
            let pem = openssl_rsa(bits)?;
            KeyPair::from_pem(&pem).context("failed to load the RSA key openssl generated")
        }
    }
}

fn openssl_rsa(bits: u32) -> Result<String> {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .stdin(Stdio::null())
        .output()
        .context("failed to run openssl (needed for [acme] key_type = \"rsa-2048\")")?;
    if !out.status.success() {
        bail!(
            "openssl genpkey failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("openssl printed a key that is not text")
}

/// A DER certificate signing request for `names` (empty subject, names as DNS SANs).
pub fn csr_der(key: &KeyPair, names: &[String]) -> Result<Vec<u8>> {
    let mut params = CertificateParams::new(names.to_vec()).context("bad names for the CSR")?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .context("failed to build the CSR")?;
    Ok(csr.der().to_vec())
}

/// A self-signed certificate for `names` valid from an hour before `now` for
/// [`SELF_SIGNED_DAYS`], as PEM.
pub fn self_signed(key: &KeyPair, names: &[String], now: i64) -> Result<String> {
    self_signed_days(key, names, now, SELF_SIGNED_DAYS)
}

/// [`self_signed`] for `days` days (a domain's `config/ssl/selfsigned/lifetime`).
pub fn self_signed_days(key: &KeyPair, names: &[String], now: i64, days: i64) -> Result<String> {
    let first = names.first().context("no names for the certificate")?;
    let mut params = CertificateParams::new(names.to_vec()).context("bad names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = |t: i64| Duration::from_secs(u64::try_from(t.max(0)).unwrap_or(0));
    params.not_before = epoch + secs(now - 3_600);
    params.not_after = epoch + secs(now + days * 86_400);
    let cert = params
        .self_signed(key)
        .context("failed to sign the certificate")?;
    Ok(cert.pem())
}

/// The key as PEM (PKCS#8).
pub fn key_pem(key: &KeyPair) -> String {
    key.serialize_pem()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    #[test]
    fn self_signed_set_verifies() {
        let now = 1_780_000_000;
        let key = generate(KeyType::EcdsaP256).unwrap();
        let names = vec!["a.test".to_string(), "www.a.test".to_string()];
        let crt = self_signed(&key, &names, now).unwrap();
        let pem = certs::parse_pem(format!("{crt}{}", key_pem(&key)).as_bytes()).unwrap();
        let info = certs::verify_set(&pem, &names, now).unwrap();
        assert!(info.self_signed);
        assert_eq!(
            info.not_after - info.not_before,
            SELF_SIGNED_DAYS * 86_400 + 3_600
        );
        assert_eq!(info.names, names);
        assert!(!csr_der(&key, &names).unwrap().is_empty());
    }

    #[test]
    fn rsa_keys_come_from_openssl() {
        let key = generate(KeyType::Rsa2048).unwrap();
        let names = vec!["r.test".to_string()];
        let crt = self_signed(&key, &names, 1_780_000_000).unwrap();
        let pem = certs::parse_pem(format!("{crt}{}", key_pem(&key)).as_bytes()).unwrap();
        certs::verify_set(&pem, &names, 1_780_000_000).unwrap();
    }
}
