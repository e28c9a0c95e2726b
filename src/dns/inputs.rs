//! What the records are made from, read once per export.
//!
//! * [`facts`]: a domain's DNS files under `/srv/<domain>/` (`config/ttl`, `config/spf`,
//!   `config/dmarc`, `config/dkim`, and whether it has `mailboxes/`, `config/aliases` or
//!   `config/default_forward`), read through `safefs` as the domain's owner.
//! * [`host`]: the host's addresses, name servers, CAA identity and mail ports, from the
//!   config and the system.
//! * [`gather`]: data other modules own — the DKIM public keys (mail), the ACME account URL
//!   and next keys (acme), the SMTP certificate — collected into [`DnsInputs`]. Those are
//!   dirhost's own root-owned files, never under /srv.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::model::Domain;
use crate::model::validate::Flag;
use crate::safefs::{self, Kind};

use super::records::{self, DnsInputs, DomainFacts, HostFacts};

/// Reads domain `d`'s DNS files. `Err` (an unreadable or hostile file) leaves the domain
/// out of the export, reported; it is never half-understood.
pub fn facts(srv: &Path, d: &Domain, mail_hostname: &str) -> Result<DomainFacts, String> {
    let owner = d.owner();
    let base = PathBuf::from(&d.dir_name);
    let flag = |name: &str| -> Result<Flag, String> {
        let rel = base.join("config").join(name);
        let bytes = safefs::read(srv, &rel, owner, safefs::MAX_VALUE_FILE)
            .map_err(|e| format!("config/{name}: {e}"))?;
        Flag::parse(bytes.as_deref()).map_err(|e| format!("config/{name}: {e}"))
    };
    let kind = |rel: &str| -> Result<Option<Kind>, String> {
        safefs::stat(srv, &base.join(rel))
            .map(|s| s.map(|s| s.kind))
            .map_err(|e| format!("{rel}: {e}"))
    };
    let mailboxes = kind("mailboxes")? == Some(Kind::Dir);
    let receives_mail =
        mailboxes || kind("config/aliases")?.is_some() || kind("config/default_forward")?.is_some();
    Ok(DomainFacts {
        ttl: records::ttl(&flag("ttl")?),
        spf: flag("spf")?,
        dmarc: flag("dmarc")?,
        dkim_selector: crate::mail::validate::dkim_selector(&flag("dkim")?, mail_hostname),
        mailboxes,
        receives_mail,
        webmail_only: false, // set by the caller, which knows the model's vhosts
        warnings: Vec::new(),
    })
}

/// Is `a` an address other hosts could reach (not loopback, link-local or unspecified)?
pub fn public_candidate(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort_by_key(|a| (a.is_ipv6(), *a));
    v.dedup();
    v
}

/// The host's public addresses: `[dns] addresses`, else `[acme] host_addresses`, else the
/// interfaces' addresses that are not loopback or link-local. IPv4 first.
pub fn host_addresses(cfg: &Config) -> Vec<IpAddr> {
    let parse =
        |list: &[String]| -> Vec<IpAddr> { list.iter().filter_map(|a| a.parse().ok()).collect() };
    if !cfg.dns.addresses.is_empty() {
        return sorted(parse(&cfg.dns.addresses));
    }
    if !cfg.acme.host_addresses.is_empty() {
        return sorted(parse(&cfg.acme.host_addresses));
    }
    sorted(
        crate::doctor::local_addresses()
            .into_iter()
            .filter(|a| public_candidate(*a))
            .collect(),
    )
}

/// The host's facts for the records.
pub fn host(cfg: &Config) -> HostFacts {
    let hostname = cfg.hostname();
    let (nameservers, default_nameservers) = if cfg.dns.nameservers.is_empty() {
        (
            vec![format!("ns1.{hostname}"), format!("ns2.{hostname}")],
            true,
        )
    } else {
        (
            cfg.dns
                .nameservers
                .iter()
                .map(|n| n.trim_end_matches('.').to_string())
                .collect(),
            false,
        )
    };
    let caa_issuer = if cfg.dns.caa_issuer.is_empty() {
        records::caa_identity(&cfg.acme.directory).map(str::to_string)
    } else if cfg.dns.caa_issuer == "none" {
        None
    } else {
        Some(cfg.dns.caa_issuer.clone())
    };
    let mail_listen = cfg
        .mail
        .listen
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| public_candidate(*a))
        .collect();
    HostFacts {
        addresses: host_addresses(cfg),
        nameservers,
        default_nameservers,
        caa_issuer,
        mail_hostname: cfg.mail.hostname(cfg),
        mail_listen: sorted(mail_listen),
        https_port: cfg.ports.https,
        smtp_port: cfg.mail.smtp,
        smtps_port: cfg.mail.smtps,
        submission_port: cfg.mail.submission,
        imaps_port: cfg.mail.imaps,
        pop3s_port: cfg.mail.pop3s,
    }
}

/// Collects what other modules own. Problems are warnings (the record is left out), keyed
/// by domain (`""`: host-wide).
pub fn gather(
    cfg: &Config,
    domains: &BTreeMap<String, (Domain, DomainFacts)>,
) -> (DnsInputs, Vec<(String, String)>) {
    let mut warnings = Vec::new();
    let mut inputs = DnsInputs::default();

    // DKIM: the mail module keeps each domain's signing key in its state directory.
    let layout = crate::mail::MailLayout::new(cfg);
    for (name, (_, f)) in domains {
        let Some(sel) = &f.dkim_selector else {
            continue;
        };
        match dkim_spki(&layout.dkim_key(name)) {
            Ok(Some(spki)) => {
                inputs.dkim.insert(name.clone(), (sel.clone(), spki));
            }
            Ok(None) => {}
            Err(e) => warnings.push((name.clone(), format!("no DKIM record: {e}"))),
        }
    }

    // CAA accounturi: the ACME account dirhost holds at [acme] directory.
    match account_uri(cfg) {
        Ok(uri) => inputs.acme_account_uri = uri,
        Err(e) => warnings.push((String::new(), format!("CAA without accounturi: {e}"))),
    }

    // The next key of each web domain with a certificate (the ACME module keeps it ahead of
    // the renewal so that its TLSA record is out for a TTL before it goes live).
    for (name, (d, f)) in domains {
        if (d.web || f.webmail_only)
            && d.cert.is_some()
            && matches!(
                d.ssl_provider,
                crate::model::validate::SslProvider::Letsencrypt
                    | crate::model::validate::SslProvider::Selfsigned
            )
            && let Some(spki) = crate::acme::rollover::next_spki(cfg, name)
        {
            inputs.next_tls_keys.insert(name.clone(), spki);
        }
    }

    // TLSA for SMTP: Exim presents `[mail] certificate` to clients that send no SNI or the
    // MX name (its per-name certificates are keyed by the domain's own names only).
    if domains.values().any(|(_, f)| f.receives_mail) {
        match std::fs::read(&cfg.mail.certificate)
            .map_err(|e| e.to_string())
            .and_then(|b| records::leaf_spki(&String::from_utf8_lossy(&b)))
        {
            Ok(spki) => inputs.smtp_spki = Some(spki),
            Err(e) => tracing::warn!(
                path = %cfg.mail.certificate.display(),
                "no TLSA record for SMTP: the mail host certificate cannot be read: {e}"
            ),
        }
    }
    (inputs, warnings)
}

/// The public key of the DKIM key file at `path` (SubjectPublicKeyInfo DER); `None` when
/// there is no key yet.
fn dkim_spki(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let pem = match std::fs::read_to_string(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let b64 = crate::mail::dkim::public_key_b64(&pem).map_err(|e| format!("{e:#}"))?;
    data_encoding::BASE64
        .decode(b64.trim().as_bytes())
        .map(Some)
        .map_err(|e| format!("the DKIM public key is not base64: {e}"))
}

/// The URL of the ACME account stored for `[acme] directory` (its `credentials.id`), when
/// one has been created.
pub fn account_uri(cfg: &Config) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    struct Stored {
        directory: String,
        credentials: Credentials,
    }
    #[derive(serde::Deserialize)]
    struct Credentials {
        id: String,
    }
    let path = crate::acme::state::account_file(cfg, &cfg.acme.directory);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let stored: Stored = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: unreadable account file: {e}", path.display()))?;
    if stored.directory != cfg.acme.directory {
        return Err(format!(
            "{} belongs to {}, not {}",
            path.display(),
            stored.directory,
            cfg.acme.directory
        ));
    }
    if !records::account_uri_ok(&stored.credentials.id) {
        return Err(format!(
            "{}: the account URL {:?} cannot be published",
            path.display(),
            stored.credentials.id
        ));
    }
    Ok(Some(stored.credentials.id))
}
