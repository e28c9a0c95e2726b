//! Sympl's per-domain provider settings: `config/ssl/letsencrypt/` (and
//! `config/ssl/selfsigned/` for that provider), read through `safefs` as the domain's owner
//! and validated like every other customer value.
//!
//! Honoured:
//! * `rsa_key_size`: `2048`, `3072` or `4096` — the domain's certificates get an RSA key of
//!   that size instead of `[acme] key_type`. Any other value refuses the order with the
//!   reason (never a silently weaker or different key).
//! * `lifetime` (self-signed only, as in Sympl): days, 1 to 3650.
//!
//! Read and reported as ignored (a warning in `dirhost ssl list` and the log), with why:
//! * `endpoint`, `email`: dirhost holds one ACME account per CA (`[acme] directory`,
//!   `contact`) and publishes that account in every domain's CAA `accounturi`; a per-domain
//!   CA or account would make that record forbid the domain's own orders.
//! * `account_key`: account keys are root's (`<state>/acme/accounts/`, 0600), never a file
//!   a customer can write.
//! * `docroot`: HTTP-01 answers come from dirhost's own challenge directory for every name.
//! * `lifetime` with `letsencrypt`: the CA decides.
//!
//! What this module must not do: read anything but those files, or follow a symlink.

use std::path::PathBuf;

use crate::model::Domain;
use crate::model::validate::{Flag, SslProvider};
use crate::safefs;

use super::keys::KeySpec;

/// The settings found, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `rsa_key_size`.
    pub key: Option<KeySpec>,
    /// `lifetime` (self-signed), days.
    pub lifetime_days: Option<i64>,
    /// Files present but not honoured, each with why.
    pub ignored: Vec<String>,
}

/// The directory name under `config/ssl/` for `provider`.
fn dir_of(provider: &SslProvider) -> Option<&'static str> {
    match provider {
        SslProvider::Letsencrypt => Some("letsencrypt"),
        SslProvider::Selfsigned => Some("selfsigned"),
        _ => None,
    }
}

/// Parses `rsa_key_size`.
pub fn rsa_key_size(v: &str) -> Result<KeySpec, String> {
    match v.trim() {
        "2048" => Ok(KeySpec::Rsa(2048)),
        "3072" => Ok(KeySpec::Rsa(3072)),
        "4096" => Ok(KeySpec::Rsa(4096)),
        other => Err(format!(
            "{other:?} is not an RSA key size dirhost makes (2048, 3072 or 4096)"
        )),
    }
}

/// Parses `lifetime` (days).
pub fn lifetime(v: &str) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|d| (1..=3650).contains(d))
        .ok_or_else(|| format!("{:?} is not a number of days from 1 to 3650", v.trim()))
}

/// Reads `d`'s provider directory. `Err` names the file and why it is refused.
pub fn read(srv: &std::path::Path, d: &Domain) -> Result<Overrides, String> {
    let mut out = Overrides::default();
    let Some(dir) = dir_of(&d.ssl_provider) else {
        return Ok(out);
    };
    let base = PathBuf::from(&d.dir_name).join("config/ssl").join(dir);
    let read = |name: &str| -> Result<Option<String>, String> {
        let rel = base.join(name);
        let shown = format!("config/ssl/{dir}/{name}");
        let bytes = safefs::read(srv, &rel, d.owner(), safefs::MAX_VALUE_FILE)
            .map_err(|e| format!("{shown}: {e}"))?;
        match Flag::parse(bytes.as_deref()).map_err(|e| format!("{shown}: {e}"))? {
            Flag::Unset => Ok(None),
            Flag::Value(v) => Ok(Some(v)),
            Flag::True | Flag::False => Ok(Some(String::new())),
        }
    };
    if let Some(v) = read("rsa_key_size")? {
        out.key =
            Some(rsa_key_size(&v).map_err(|e| format!("config/ssl/{dir}/rsa_key_size: {e}"))?);
    }
    if let Some(v) = read("lifetime")? {
        if d.ssl_provider == SslProvider::Selfsigned {
            out.lifetime_days =
                Some(lifetime(&v).map_err(|e| format!("config/ssl/{dir}/lifetime: {e}"))?);
        } else {
            out.ignored.push(format!(
                "config/ssl/{dir}/lifetime is ignored: the CA decides a certificate's lifetime"
            ));
        }
    }
    for (name, why) in [
        (
            "endpoint",
            "dirhost uses one CA, [acme] directory, whose account the CAA records name",
        ),
        (
            "email",
            "dirhost uses one account per CA, with [acme] contact, which the CAA records name",
        ),
        (
            "account_key",
            "ACME account keys are root's, in dirhost's state directory",
        ),
        (
            "docroot",
            "dirhost answers HTTP-01 from its own challenge directory for every name",
        ),
    ] {
        if read(name)?.is_some() {
            out.ignored
                .push(format!("config/ssl/{dir}/{name} is ignored: {why}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_validated() {
        for (v, want) in [
            ("2048", Some(2048)),
            ("4096\n", Some(4096)),
            (" 3072 ", Some(3072)),
            ("1024", None),
            ("4096 bits", None),
            ("", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(rsa_key_size(v).ok(), want.map(KeySpec::Rsa), "{v:?}");
        }
        assert_eq!(lifetime("365\n"), Ok(365));
        for bad in ["0", "-1", "3651", "a year", ""] {
            assert!(lifetime(bad).is_err(), "{bad:?}");
        }
    }
}
