//! DNS records for every domain (issue 10): `dirhost dns export` in OctoDNS, BIND and JSON
//! form, and hooks that run when the records change.
//!
//! What this module owns:
//! * [`records`]: the zones of a domain — A/AAAA for every name, MX and SRV when it has
//!   mail, SPF/DKIM/DMARC, CAA for the ACME CA, TLSA (DANE) for the live certificate and
//!   the next key — as a pure function of validated inputs.
//! * [`inputs`]: reading the domain's DNS files from /srv (through `safefs`, as the owner)
//!   and gathering what other modules own (DKIM keys, ACME account, SMTP certificate).
//! * [`format`]: BIND master files, OctoDNS YAML zones, JSON.
//! * [`state`]: SOA serials, the per-domain hash that decides when hooks run, the record of
//!   when each TLSA association was published ([`key_may_go_live`], the rule the ACME
//!   module must follow), and the hooks themselves.
//! * [`cli`]: the body of `dirhost dns export`.
//!
//! What it must not do: read /srv other than through `safefs` as the domain's owner, write
//! anything under /srv or any server's configuration, or let a customer's value into a
//! zone file unvalidated (TTL, SPF and DMARC are validated in [`records`]; names,
//! addresses and certificates by the model; the DKIM selector by the mail module).

pub mod cli;
pub mod format;
pub mod inputs;
pub mod records;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::config::Config;

pub use records::{DnsInputs, DomainZones, Zone};
pub use state::{
    HookReport, key_may_go_live, run_hooks_if_changed, tlsa_ever_published, tlsa_published_since,
};

/// The zones of one export, and what could not be exported.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// The domains asked for (`None`: all of /srv).
    pub only: Option<BTreeSet<String>>,
    /// Each exported domain's zones, by domain name.
    pub domains: Vec<DomainZones>,
    /// Domains whose DNS files could not be read, with why (nothing exported for them).
    pub failed: Vec<(String, String)>,
    /// /srv entries the model refused, with why.
    pub skipped: Vec<(String, String)>,
    /// Domains asked for that are not in /srv.
    pub missing: Vec<String>,
    /// Problems that concern every domain (e.g. the ACME account cannot be read).
    pub warnings: Vec<String>,
}

impl Export {
    /// Every zone, in domain order.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.domains.iter().flat_map(|d| d.zones.iter())
    }
}

/// Builds the zones of the domains in `only` (all when `None`) as of `now`, and gives them
/// their SOA serials (remembered in `<state>/dns/`; when that is impossible, e.g. without
/// write access, the serials are still set and a warning says so).
pub fn build(cfg: &Config, only: Option<&BTreeSet<String>>, now: i64) -> Result<Export> {
    let model = crate::model::load_scoped(&cfg.paths.srv, only, now)?;
    let mut export = Export {
        only: only.cloned(),
        skipped: model
            .skipped
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect(),
        ..Export::default()
    };
    if let Some(only) = only {
        export.missing = only
            .iter()
            .filter(|n| !model.domains.contains_key(*n) && model.skipped_reason(n).is_none())
            .cloned()
            .collect();
    }
    let mail_hostname = cfg.mail.hostname(cfg);
    let mut read: BTreeMap<String, (crate::model::Domain, records::DomainFacts)> = BTreeMap::new();
    let webmail_only = crate::model::vhost::webmail_only(cfg, &model);
    for (name, d) in &model.domains {
        match inputs::facts(&cfg.paths.srv, d, &mail_hostname) {
            Ok(mut f) => {
                f.webmail_only = webmail_only.contains(name);
                read.insert(name.clone(), (d.clone(), f));
            }
            Err(e) => {
                tracing::error!(domain = %name, "DNS: {e}");
                export.failed.push((name.clone(), e));
            }
        }
    }
    let (gathered, gather_warnings) = inputs::gather(cfg, &read);
    let host = inputs::host(cfg);
    for (domain, warning) in gather_warnings {
        match read.get_mut(&domain) {
            Some((_, f)) => f.warnings.push(warning),
            None => export.warnings.push(warning),
        }
    }
    if host.caa_issuer.is_none() && cfg.dns.caa_issuer != "none" {
        export.warnings.push(format!(
            "no CAA records: the CAA identity of {} is not known; set [dns] caa_issuer",
            cfg.acme.directory
        ));
    }
    let dir_names: BTreeMap<String, String> = read
        .iter()
        .map(|(n, (d, _))| (n.clone(), d.dir_name.clone()))
        .collect();
    for (d, f) in read.values() {
        export.domains.push(records::build(d, f, &host, &gathered));
    }
    if let Err(e) = state::assign_serials(cfg, &mut export.domains, &dir_names, now) {
        export.warnings.push(format!(
            "SOA serials are not remembered ({e:#}): a later export may reuse a serial"
        ));
    }
    Ok(export)
}
