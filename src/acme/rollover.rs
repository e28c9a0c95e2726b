//! DANE-safe key rollover (README, "DNS": the key rollover rule).
//!
//! A renewal must not put a new key live before a TLSA record for it has been published for
//! at least one TTL. So dirhost keeps a **next key** per domain, generated ahead (as soon as
//! the domain has a certificate, weeks before the renewal) in
//! `<state>/acme/next-keys/<domain>.pem` (root's, 0600); the DNS export publishes its TLSA
//! record beside the live one (`DnsInputs::next_tls_keys`), and the DNS state records when it
//! was first published. At renewal ([`choose`]):
//!
//! * the next key goes live when [`crate::dns::key_may_go_live`] says its record has been out
//!   for a TTL (or dirhost never published TLSA for the domain: no DANE to break); a new next
//!   key is then generated ([`ensure_next`]);
//! * otherwise the renewal **reuses the current key**. We reuse rather than wait: waiting
//!   would let a certificate run out whenever the DNS pipeline is stuck (a failing hook, a
//!   provider outage), while one more certificate on the same key costs DANE `3 1 1` nothing.
//!
//! This module must not write under /srv or talk to the network; it only chooses keys and
//! keeps the next one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rcgen::{KeyPair, PublicKeyData};

use super::keys::KeySpec;
use super::{keys, state};
use crate::config::Config;
use crate::model::Domain;

/// Which key a new certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The next key, whose TLSA record has been published long enough.
    Next,
    /// The live certificate's key again (the next key's record is not out for a TTL yet).
    Reuse,
    /// A new key (no DANE published for the domain, or nothing live to keep).
    Fresh,
}

/// `<state>/acme/next-keys/<domain>.pem`.
pub fn next_key_file(cfg: &Config, domain: &str) -> PathBuf {
    state::acme_dir(cfg)
        .join("next-keys")
        .join(format!("{domain}.pem"))
}

/// The domain's next key, if there is a usable one (an unreadable file is logged and
/// treated as absent: a new one replaces it).
pub fn load_next(cfg: &Config, domain: &str) -> Option<KeyPair> {
    let path = next_key_file(cfg, domain);
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(domain, path = %path.display(), "cannot read the next key: {e}");
            return None;
        }
    };
    KeyPair::from_pem(&pem)
        .map_err(|e| tracing::error!(domain, path = %path.display(), "unusable next key: {e}"))
        .ok()
}

/// The SubjectPublicKeyInfo (DER) of the domain's next key, for its TLSA record.
pub fn next_spki(cfg: &Config, domain: &str) -> Option<Vec<u8>> {
    load_next(cfg, domain).map(|k| k.subject_public_key_info())
}

/// Makes sure the domain has a next key other than `live_spki` (the key of the certificate
/// that is live now). Returns true when a new one was generated.
pub fn ensure_next(
    cfg: &Config,
    domain: &str,
    spec: KeySpec,
    live_spki: Option<&[u8]>,
) -> Result<bool> {
    // A next key of another kind (the admin changed `key_type`, the owner `rsa_key_size`)
    // is replaced; the switch then happens at the renewal after its record was published.
    if let Some(k) = load_next(cfg, domain)
        && live_spki != Some(k.subject_public_key_info().as_slice())
        && spec.matches(&k)
    {
        return Ok(false);
    }
    let key = keys::generate_spec(spec)?;
    state::write_private(&next_key_file(cfg, domain), keys::key_pem(&key).as_bytes())
        .with_context(|| format!("{domain}: failed to store the next key"))?;
    tracing::info!(
        domain,
        "generated the next key (its TLSA record is published ahead)"
    );
    Ok(true)
}

/// The key for a new certificate of `d` at `now` (see the module docs).
pub fn choose(cfg: &Config, d: &Domain, spec: KeySpec, now: i64) -> Result<(KeyPair, Choice)> {
    let next = match load_next(cfg, &d.name) {
        Some(k) if crate::dns::key_may_go_live(cfg, &d.name, &k.subject_public_key_info(), now) => {
            return Ok((k, Choice::Next));
        }
        other => other,
    };
    if !crate::dns::tlsa_ever_published(cfg, &d.name) {
        return Ok((keys::generate_spec(spec)?, Choice::Fresh));
    }
    match &d.cert {
        Some(c) => {
            let k = KeyPair::from_pem(&c.key_pem).with_context(|| {
                format!(
                    "{}: the next key's TLSA record has not been published for one TTL yet, and \
                     the live key of set {} cannot be reused",
                    d.name, c.name
                )
            })?;
            Ok((k, Choice::Reuse))
        }
        // Nothing live: no TLSA record can be matched now anyway.
        None => match next {
            Some(k) => Ok((k, Choice::Next)),
            None => Ok((keys::generate_spec(spec)?, Choice::Fresh)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(root: &std::path::Path) -> Config {
        crate::sandbox::sandbox_config(root, 80, 443, PathBuf::from("/bin/false"))
    }

    #[test]
    fn the_next_key_is_made_once_and_replaced_when_it_went_live_or_changed_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cfg(tmp.path());
        let d = "next.test";
        assert!(load_next(&cfg, d).is_none());
        assert!(ensure_next(&cfg, d, KeySpec::EcdsaP256, None).unwrap());
        let file = next_key_file(&cfg, d);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = next_spki(&cfg, d).unwrap();
        // Kept while it is not the live key.
        assert!(!ensure_next(&cfg, d, KeySpec::EcdsaP256, Some(b"other")).unwrap());
        assert_eq!(next_spki(&cfg, d).unwrap(), first);
        // It went live: a new next key.
        assert!(ensure_next(&cfg, d, KeySpec::EcdsaP256, Some(&first)).unwrap());
        let second = next_spki(&cfg, d).unwrap();
        assert_ne!(second, first);
        // Another kind asked for (rsa_key_size): replaced by an RSA key.
        assert!(ensure_next(&cfg, d, KeySpec::Rsa(2048), None).unwrap());
        assert!(KeySpec::Rsa(2048).matches(&load_next(&cfg, d).unwrap()));
        assert!(!ensure_next(&cfg, d, KeySpec::Rsa(2048), None).unwrap());
        // A broken file is replaced, never a crash.
        std::fs::write(&file, "not a key").unwrap();
        assert!(load_next(&cfg, d).is_none());
        assert!(ensure_next(&cfg, d, KeySpec::EcdsaP256, None).unwrap());
    }
}
