//! Certificate sets in Sympl's layout under `/srv/<domain>/config/ssl/`, written and read
//! only through `safefs`, acting as the domain's owner.
//!
//! This module owns: choosing the next set name (`sets/<N>`), writing a set (`ssl.key` 0600,
//! `ssl.crt` the leaf, `ssl.bundle` the chain, `ssl.combined` 0600), reading it back and
//! verifying what is on disk (`certs::verify_set`: key matches, dates, names; and
//! `certs::verify_chain` against the configured roots), and switching `config/ssl/current`
//! with `safefs::symlink_atomic` — only after that verification passed.
//!
//! It must not switch `current` to a set that did not verify (such a set stays on disk for the
//! admin to inspect, and the error says so), follow a symlink under /srv, or write as root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::certs::{self, CertInfo};
use crate::config::Config;
use crate::model::{Domain, validate};
use crate::safefs::{self, Kind};

/// A new certificate: the private key and the chain the CA returned (leaf first).
#[derive(Clone)]
pub struct Material {
    /// The private key, PEM.
    pub key_pem: String,
    /// Leaf then intermediates, PEM.
    pub chain_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("key_pem", &"<redacted>")
            .field("chain_pem", &self.chain_pem.len())
            .finish()
    }
}

/// Which chain check a new set must pass.
#[derive(Debug, Clone)]
pub enum ChainCheck {
    /// The chain must lead to one of these roots (DER).
    Roots(Vec<Vec<u8>>),
    /// No chain check (self-signed sets; `[acme] chain_roots = ""`).
    Skip,
}

/// What one set on disk holds, for `dirhost ssl list`.
#[derive(Debug, Clone, Serialize)]
pub struct SetSummary {
    /// The set's name (`sets/<name>`).
    pub name: String,
    /// The leaf's facts, when it could be read.
    pub info: Option<CertInfo>,
    /// Why Apache would not use it, if so.
    pub problem: Option<String>,
}

fn rel(d: &Domain, tail: &str) -> PathBuf {
    Path::new(&d.dir_name).join("config").join(tail)
}

/// The set `config/ssl/current` points at (`sets/<N>` → `N`), if any.
pub fn current(srv: &Path, d: &Domain) -> Result<Option<String>> {
    let link = safefs::read_link(srv, &rel(d, "ssl/current"))
        .with_context(|| format!("{}: failed to read config/ssl/current", d.name))?;
    Ok(link.and_then(|t| {
        let t = t.to_string_lossy().into_owned();
        let n = t.strip_prefix("sets/")?.to_string();
        validate::set_name(&n).then_some(n)
    }))
}

/// The names of the domain's sets (valid set names only), sorted numerically where numeric.
pub fn set_names(srv: &Path, d: &Domain) -> Result<Vec<String>> {
    let names = safefs::list_dir(srv, &rel(d, "ssl/sets"))
        .with_context(|| format!("{}: failed to list config/ssl/sets", d.name))?
        .unwrap_or_default();
    let mut out: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| validate::set_name(n))
        .collect();
    out.sort_by_key(|n| {
        (
            n.parse::<u64>().map_or(1, |_| 0),
            n.parse::<u64>().ok(),
            n.clone(),
        )
    });
    Ok(out)
}

/// The next set name: one more than the largest numeric set (0 when there is none).
pub fn next_set_name(existing: &[String]) -> String {
    existing
        .iter()
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m.saturating_add(1))
        .to_string()
}

/// Writes `material` as a new set `sets/<N>` and returns N. The set is not current yet.
pub fn write_set(srv: &Path, d: &Domain, material: &Material) -> Result<String> {
    let owner = d.owner();
    let name = next_set_name(&set_names(srv, d)?);
    let dir = rel(d, &format!("ssl/sets/{name}"));
    if safefs::stat(srv, &dir)
        .with_context(|| format!("{}: config/ssl/sets/{name}", d.name))?
        .is_some()
    {
        bail!("{}: config/ssl/sets/{name} appeared meanwhile", d.name);
    }
    safefs::mkdir_all(srv, &dir, owner, 0o755)
        .with_context(|| format!("{}: failed to create config/ssl/sets/{name}", d.name))?;
    let pem = certs::parse_pem(material.chain_pem.as_bytes())
        .with_context(|| format!("{}: the CA's certificate chain", d.name))?;
    let (leaf, chain) = pem
        .certs
        .split_first()
        .with_context(|| format!("{}: the CA returned no certificate", d.name))?;
    let crt = certs::to_pem_certs(std::slice::from_ref(leaf));
    let bundle = certs::to_pem_certs(chain);
    let key = material.key_pem.trim_end().to_string() + "\n";
    let combined = format!("{crt}{bundle}{key}");
    for (file, text, mode) in [
        ("ssl.key", key.as_str(), 0o600),
        ("ssl.crt", crt.as_str(), 0o644),
        ("ssl.bundle", bundle.as_str(), 0o644),
        ("ssl.combined", combined.as_str(), 0o600),
    ] {
        safefs::write_atomic(srv, &dir.join(file), text.as_bytes(), owner, mode).with_context(
            || format!("{}: failed to write config/ssl/sets/{name}/{file}", d.name),
        )?;
    }
    Ok(name)
}

/// Reads a set back from disk (as the owner): certificates from `ssl.crt` (or
/// `ssl.combined`) then `ssl.bundle`, the key from `ssl.key` (or `ssl.combined`).
pub fn read_set(srv: &Path, d: &Domain, set: &str) -> Result<certs::Pem> {
    let dir = rel(d, &format!("ssl/sets/{set}"));
    let read = |f: &str| -> Result<Option<certs::Pem>> {
        let bytes = safefs::read(srv, &dir.join(f), d.owner(), safefs::MAX_VALUE_FILE)
            .with_context(|| format!("{}: set {set}: {f}", d.name))?;
        bytes
            .map(|b| certs::parse_pem(&b))
            .transpose()
            .with_context(|| format!("{}: set {set}: {f}", d.name))
    };
    match safefs::stat(srv, &dir).with_context(|| format!("{}: set {set}", d.name))? {
        Some(st) if st.kind == Kind::Dir => {}
        _ => bail!("{}: certificate set {set} does not exist", d.name),
    }
    let combined = read("ssl.combined")?.unwrap_or_default();
    let keys = match read("ssl.key")? {
        Some(k) => k.keys,
        None => combined.keys.clone(),
    };
    let certs = match read("ssl.crt")? {
        Some(c) => c.certs,
        None => combined.certs,
    };
    let mut pem = certs::Pem { certs, keys };
    if let Some(b) = read("ssl.bundle")? {
        for c in b.certs {
            if !pem.certs.contains(&c) {
                pem.certs.push(c);
            }
        }
    }
    Ok(pem)
}

/// Verifies the set as it is on disk: key matches the leaf, valid at `now`, covers `names`,
/// and (unless skipped) the chain leads to one of the roots.
pub fn verify_on_disk(
    srv: &Path,
    d: &Domain,
    set: &str,
    names: &[String],
    chain: &ChainCheck,
    now: i64,
) -> Result<CertInfo> {
    let pem = read_set(srv, d, set)?;
    let info = certs::verify_set(&pem, names, now)
        .with_context(|| format!("{}: certificate set {set} failed verification", d.name))?;
    if let ChainCheck::Roots(roots) = chain {
        certs::verify_chain(&pem.certs, roots, now)
            .with_context(|| format!("{}: certificate set {set} failed verification", d.name))?;
    }
    Ok(info)
}

/// Points `config/ssl/current` at `sets/<set>` (atomically, as the owner).
pub fn make_current(srv: &Path, d: &Domain, set: &str) -> Result<()> {
    safefs::symlink_atomic(
        srv,
        &rel(d, "ssl/current"),
        Path::new(&format!("sets/{set}")),
        d.owner(),
    )
    .with_context(|| {
        format!(
            "{}: failed to switch config/ssl/current to sets/{set}",
            d.name
        )
    })
}

/// Writes `material` as a new set, verifies it on disk and only then makes it current.
/// A set that fails verification stays on disk, not current, and the error names it.
pub fn install(
    srv: &Path,
    d: &Domain,
    material: &Material,
    names: &[String],
    chain: &ChainCheck,
    now: i64,
) -> Result<(String, CertInfo)> {
    let set = write_set(srv, d, material)?;
    let info = match verify_on_disk(srv, d, &set, names, chain, now) {
        Ok(info) => info,
        Err(e) => {
            tracing::error!(domain = %d.name, set = %set, "new certificate set NOT made current: {e:#}");
            return Err(e.context(format!(
                "{}: config/ssl/sets/{set} was kept on disk but not made current",
                d.name
            )));
        }
    };
    make_current(srv, d, &set)?;
    Ok((set, info))
}

/// Every set of the domain with its facts and problems (checked against `names` at `now`).
pub fn summaries(srv: &Path, d: &Domain, names: &[String], now: i64) -> Vec<SetSummary> {
    let sets = match set_names(srv, d) {
        Ok(s) => s,
        Err(e) => {
            return vec![SetSummary {
                name: "sets".into(),
                info: None,
                problem: Some(format!("{e:#}")),
            }];
        }
    };
    sets.into_iter()
        .map(|name| {
            let pem = read_set(srv, d, &name);
            let info = pem
                .as_ref()
                .ok()
                .and_then(|p| p.certs.first())
                .and_then(|leaf| certs::cert_info(leaf).ok());
            let problem = match &pem {
                Err(e) => Some(format!("{e:#}")),
                Ok(p) => certs::verify_set(p, names, now)
                    .err()
                    .map(|e| e.to_string()),
            };
            SetSummary {
                name,
                info,
                problem,
            }
        })
        .collect()
}

/// The roots an issued chain must lead to, from `[acme] chain_roots` (skip when empty).
/// Certificates that are not usable as trust anchors are left out; a configured file that is
/// missing or holds no usable root is an error (never a silent skip).
pub fn chain_roots(cfg: &Config) -> Result<ChainCheck> {
    let path = &cfg.acme.chain_roots;
    if path.as_os_str().is_empty() {
        return Ok(ChainCheck::Skip);
    }
    let text = std::fs::read(path)
        .with_context(|| format!("[acme] chain_roots: failed to read {}", path.display()))?;
    let pem = certs::parse_pem(&text)
        .with_context(|| format!("[acme] chain_roots: {}", path.display()))?;
    let roots: Vec<Vec<u8>> = pem
        .certs
        .into_iter()
        .filter(|der| {
            let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
            webpki::anchor_from_trusted_cert(&cert).is_ok()
        })
        .collect();
    if roots.is_empty() {
        bail!(
            "[acme] chain_roots: {} holds no usable root certificate",
            path.display()
        );
    }
    Ok(ChainCheck::Roots(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_set_names() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(next_set_name(&v(&[])), "0");
        assert_eq!(next_set_name(&v(&["0"])), "1");
        assert_eq!(next_set_name(&v(&["0", "2"])), "3");
        assert_eq!(next_set_name(&v(&["10", "9", "manual"])), "11");
        assert_eq!(next_set_name(&v(&["2026-01-01"])), "0");
    }
}
