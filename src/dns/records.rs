//! The records of each zone, as pure functions of the model, the facts read for the domain,
//! the host's facts and [`DnsInputs`]: no I/O here.
//!
//! Every customer value that reaches a record is validated here (TTL, SPF, DMARC) or was
//! validated by the model (names, addresses, certificates) or the mail module (DKIM
//! selector). Record data is kept unescaped; the formatters escape it for their syntax.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::model::Domain;
use crate::model::validate::{Flag, SslProvider};

/// Sympl's default TTL (`config/ttl` absent or without a number).
pub const DEFAULT_TTL: u32 = 300;
/// Smallest TTL `config/ttl` may ask for.
pub const MIN_TTL: u32 = 60;
/// Largest TTL `config/ttl` may ask for.
pub const MAX_TTL: u32 = 86_400;
/// Sympl's default SPF record (`config/spf` empty or `true`).
pub const DEFAULT_SPF: &str = "v=spf1 +a +mx ?all";
/// Sympl's default DMARC record (`config/dmarc` empty or `true`).
pub const DEFAULT_DMARC: &str = "v=DMARC1; p=quarantine; sp=none";
/// Preference of the single MX record (Sympl's).
pub const MX_PREFERENCE: u16 = 15;
/// Longest SPF or DMARC text accepted from a customer (bytes).
pub const MAX_POLICY_LEN: usize = 1024;

/// Record types dirhost publishes, in the order they appear within one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Name server (BIND output only, at the apex).
    #[serde(rename = "NS")]
    Ns,
    /// Mail exchanger.
    #[serde(rename = "MX")]
    Mx,
    /// Text (SPF, DKIM, DMARC).
    #[serde(rename = "TXT")]
    Txt,
    /// Service location (RFC 6186 / 8314 mail client settings).
    #[serde(rename = "SRV")]
    Srv,
    /// Certification authority authorization (RFC 8659, 8657).
    #[serde(rename = "CAA")]
    Caa,
    /// DANE (RFC 6698, 7671, 7672).
    #[serde(rename = "TLSA")]
    Tlsa,
}

impl RType {
    /// The type's mnemonic.
    pub fn as_str(self) -> &'static str {
        match self {
            RType::A => "A",
            RType::Aaaa => "AAAA",
            RType::Ns => "NS",
            RType::Mx => "MX",
            RType::Txt => "TXT",
            RType::Srv => "SRV",
            RType::Caa => "CAA",
            RType::Tlsa => "TLSA",
        }
    }
}

/// One record's data. Host names are absolute and written without the trailing dot
/// (`.` alone is the root, for "no service" SRV records). Text is unescaped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Name server host.
    Ns(String),
    /// Mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// Host name.
        exchange: String,
    },
    /// One text value (split into 255-byte strings by the formatters).
    Txt(String),
    /// Service location.
    Srv {
        /// Lower is preferred.
        priority: u16,
        /// Load share among equal priorities.
        weight: u16,
        /// TCP port (0 with target `.`: service not offered).
        port: u16,
        /// Host name, or `.`.
        target: String,
    },
    /// CA authorization.
    Caa {
        /// 0, or 128 for "critical".
        flags: u8,
        /// `issue`, `issuewild`, `iodef`.
        tag: String,
        /// The property value (unquoted).
        value: String,
    },
    /// DANE association.
    Tlsa {
        /// 3: DANE-EE.
        usage: u8,
        /// 1: SubjectPublicKeyInfo.
        selector: u8,
        /// 1: SHA-256.
        matching_type: u8,
        /// Lower-case hex.
        data: String,
    },
}

impl RData {
    /// The record's type.
    pub fn rtype(&self) -> RType {
        match self {
            RData::A(_) => RType::A,
            RData::Aaaa(_) => RType::Aaaa,
            RData::Ns(_) => RType::Ns,
            RData::Mx { .. } => RType::Mx,
            RData::Txt(_) => RType::Txt,
            RData::Srv { .. } => RType::Srv,
            RData::Caa { .. } => RType::Caa,
            RData::Tlsa { .. } => RType::Tlsa,
        }
    }
}

/// All records of one type at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RRset {
    /// Relative to the zone; empty for the apex.
    pub name: String,
    /// The type.
    pub rtype: RType,
    /// The data, sorted and without duplicates.
    pub values: Vec<RData>,
}

/// One zone: a domain, or an alias of it that is not inside the domain's own zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The apex (ASCII, no trailing dot).
    pub name: String,
    /// The /srv domain whose records these are.
    pub domain: String,
    /// TTL of every record (`config/ttl`).
    pub ttl: u32,
    /// SOA serial (assigned by `state`; 0 until then).
    pub serial: u32,
    /// Name servers for the BIND output's NS records and SOA.
    pub nameservers: Vec<String>,
    /// Record sets, in output order: names in natural order (the apex first), then type.
    pub rrsets: Vec<RRset>,
}

impl Zone {
    /// The absolute name (no trailing dot) of a relative `name`.
    pub fn fqdn(&self, name: &str) -> String {
        if name.is_empty() {
            self.name.clone()
        } else {
            format!("{name}.{}", self.name)
        }
    }

    /// Every TLSA association data (hex) in the zone.
    pub fn tlsa_data(&self) -> BTreeSet<String> {
        self.rrsets
            .iter()
            .flat_map(|s| s.values.iter())
            .filter_map(|v| match v {
                RData::Tlsa { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The zones of one /srv domain, and what was left out with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainZones {
    /// The /srv domain.
    pub domain: String,
    /// Its zone first, then alias zones by name.
    pub zones: Vec<Zone>,
    /// Values that were ignored or records that could not be made, in words an admin can
    /// act on.
    pub warnings: Vec<String>,
}

/// Data other modules own, gathered once per export (see `inputs::gather`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsInputs {
    /// Domain → (DKIM selector, SubjectPublicKeyInfo DER of its signing key).
    pub dkim: BTreeMap<String, (String, Vec<u8>)>,
    /// The ACME account's URL at `[acme] directory` (CAA `accounturi`), once one exists.
    pub acme_account_uri: Option<String>,
    /// Domain → SubjectPublicKeyInfo DER of the key its next certificate will use (a key
    /// rollover in progress): published as a second TLSA record ahead of the renewal.
    pub next_tls_keys: BTreeMap<String, Vec<u8>>,
    /// SubjectPublicKeyInfo DER of the certificate Exim presents on the SMTP port to a
    /// client that sends no SNI or the MX name (today: `[mail] certificate`).
    pub smtp_spki: Option<Vec<u8>>,
}

/// Facts about the host, from the config and the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Public addresses of the host, IPv4 first, sorted.
    pub addresses: Vec<IpAddr>,
    /// Name servers (absolute, no trailing dot).
    pub nameservers: Vec<String>,
    /// The name servers are the defaults (`ns1.`/`ns2.<hostname>`), not configured.
    pub default_nameservers: bool,
    /// The CA's CAA identity, when known.
    pub caa_issuer: Option<String>,
    /// The host's mail name: the SRV target when a domain's own name has no certificate.
    pub mail_hostname: String,
    /// `[mail] listen` addresses that are not loopback; empty: mail listens everywhere.
    pub mail_listen: Vec<IpAddr>,
    /// HTTPS port (TLSA `_<port>._tcp`).
    pub https_port: u16,
    /// SMTP port (TLSA `_<port>._tcp.mx`).
    pub smtp_port: u16,
    /// Submission over implicit TLS (RFC 8314).
    pub smtps_port: u16,
    /// Submission with STARTTLS.
    pub submission_port: u16,
    /// IMAP over TLS.
    pub imaps_port: u16,
    /// POP3 over TLS.
    pub pop3s_port: u16,
}

/// What `config/` and `mailboxes/` say about one domain's DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFacts {
    /// `config/ttl`, clamped.
    pub ttl: u32,
    /// `config/spf`.
    pub spf: Flag,
    /// `config/dmarc`.
    pub dmarc: Flag,
    /// DKIM selector when `config/dkim` switches signing on.
    pub dkim_selector: Option<String>,
    /// `mailboxes/` is a directory: people log in, so clients get SRV records.
    pub mailboxes: bool,
    /// Exim accepts mail for the domain (mailboxes, `config/aliases` or
    /// `config/default_forward`): it gets an MX.
    pub receives_mail: bool,
    /// A webmail-only HTTPS vhost (a mail-only domain's `/webmail/`): its certificate gets
    /// a TLSA record as a site's does.
    pub webmail_only: bool,
    /// Problems found while reading, reported with the domain's warnings.
    pub warnings: Vec<String>,
}

impl Default for DomainFacts {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            spf: Flag::Unset,
            dmarc: Flag::Unset,
            dkim_selector: None,
            mailboxes: false,
            receives_mail: false,
            webmail_only: false,
            warnings: Vec::new(),
        }
    }
}

/// Sympl's TTL rule: the first run of digits in the file, clamped to 60..=86400; 300 when
/// the file is absent, a flag, or has no digits.
pub fn ttl(flag: &Flag) -> u32 {
    let Flag::Value(text) = flag else {
        return DEFAULT_TTL;
    };
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.is_empty() {
        return DEFAULT_TTL;
    }
    // More digits than fit are "huge": clamped like any other large number.
    let n: u64 = digits.parse().unwrap_or(u64::MAX);
    n.clamp(u64::from(MIN_TTL), u64::from(MAX_TTL)) as u32
}

/// Text a customer may put into a TXT record: printable ASCII without `"` or `\` (neither
/// occurs in SPF or DMARC; refusing them keeps every zone syntax simple), bounded.
fn printable(line: &str) -> bool {
    !line.is_empty()
        && line.len() <= MAX_POLICY_LEN
        && line
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The first line, without surrounding whitespace (Sympl: `split($/).first.strip`).
fn first_line(text: &str) -> &str {
    text.split(['\n', '\r']).next().unwrap_or_default().trim()
}

/// The SPF record of `config/spf`: absent or `false` → none; empty or `true` → Sympl's
/// default; else the first line, stripped, which must be printable ASCII starting with
/// `v=spf1`. `Err` says why a value was ignored.
pub fn spf(flag: &Flag) -> Result<Option<String>, String> {
    match flag {
        Flag::Unset | Flag::False => Ok(None),
        Flag::True => Ok(Some(DEFAULT_SPF.to_string())),
        Flag::Value(v) => {
            let line = first_line(v);
            if !printable(line) {
                return Err(format!(
                    "config/spf is ignored: its first line must be printable ASCII text (no quotes or backslashes) of at most {MAX_POLICY_LEN} characters"
                ));
            }
            let lower = line.to_ascii_lowercase();
            if lower != "v=spf1" && !lower.starts_with("v=spf1 ") {
                return Err(format!(
                    "config/spf is ignored: {line:?} is not an SPF record (it must start with \"v=spf1 \")"
                ));
            }
            Ok(Some(line.to_string()))
        }
    }
}

/// The DMARC record of `config/dmarc`: absent or `false` → none; empty or `true` → the
/// default; else the first line, stripped, when it matches Sympl's
/// `^v=DMARC\d(;\s+\S+=[^;]+)+` and is printable ASCII. `Err` says why a value was ignored.
pub fn dmarc(flag: &Flag) -> Result<Option<String>, String> {
    match flag {
        Flag::Unset | Flag::False => Ok(None),
        Flag::True => Ok(Some(DEFAULT_DMARC.to_string())),
        Flag::Value(v) => {
            let line = first_line(v);
            if printable(line) && dmarc_shape(line) {
                Ok(Some(line.to_string()))
            } else {
                Err(format!(
                    "config/dmarc is ignored: {line:?} is not a DMARC record like \"v=DMARC1; p=none\""
                ))
            }
        }
    }
}

/// `^v=DMARC\d(;\s+\S+=[^;]+)+`, as Ruby's `=~` applies it (a match of the prefix
/// suffices). The first `;` group decides: `;`, whitespace, a non-space run containing `=`
/// after its first character, then at least one character other than `;`.
fn dmarc_shape(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("v=DMARC") else {
        return false;
    };
    let mut chars = rest.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_digit()) {
        return false;
    }
    let Some(rest) = chars.as_str().strip_prefix(';') else {
        return false;
    };
    let body = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    if body.len() == rest.len() {
        return false; // \s+ needs at least one
    }
    let group = body.split(';').next().unwrap_or_default();
    let token_end = group
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(group.len());
    let token = &group[..token_end];
    // \S+= : some '=' at index >= 1 within the token, followed by [^;]+ (the rest of the
    // group after that '=' is non-empty).
    token
        .char_indices()
        .skip(1)
        .any(|(i, c)| c == '=' && group.len() > i + 1)
}

/// Lower-case hex SHA-256 of a DER SubjectPublicKeyInfo: TLSA `3 1 1` data.
pub fn spki_sha256_hex(spki_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
    data_encoding::HEXLOWER.encode(d.as_ref())
}

/// The SubjectPublicKeyInfo DER of the first certificate in `chain_pem`.
pub fn leaf_spki(chain_pem: &str) -> Result<Vec<u8>, String> {
    let pem = crate::certs::parse_pem(chain_pem.as_bytes()).map_err(|e| e.to_string())?;
    let der = pem.certs.first().ok_or("no certificate")?;
    spki_of_cert(der)
}

/// The SubjectPublicKeyInfo DER of a DER certificate.
pub fn spki_of_cert(der: &[u8]) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    Ok(cert.public_key().raw.to_vec())
}

/// Is `spki_der` an RSA key (the only kind `k=rsa` DKIM records can carry)?
fn is_rsa_spki(spki_der: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;
    matches!(
        SubjectPublicKeyInfo::from_der(spki_der),
        Ok(([], spki)) if spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
    )
}

/// `name` relative to `apex`, when it is the apex ("") or below it.
fn relative(name: &str, apex: &str) -> Option<String> {
    if name == apex {
        Some(String::new())
    } else {
        name.strip_suffix(apex)
            .and_then(|p| p.strip_suffix('.'))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
    }
}

/// The zones a domain's names fall into: the domain, then every alias that is not below a
/// zone already chosen (aliases considered shortest first).
pub fn zone_apexes(d: &Domain) -> Vec<String> {
    let mut aliases: Vec<&String> = d.aliases.iter().collect();
    aliases.sort_by_key(|a| (a.split('.').count(), a.as_str()));
    let mut apexes = vec![d.name.clone()];
    for a in aliases {
        if !apexes.iter().any(|z| relative(a, z).is_some()) {
            apexes.push(a.clone());
        }
    }
    apexes
}

/// A zone under construction: (relative name, type) → values.
#[derive(Default)]
struct Builder {
    sets: BTreeMap<(String, RType), BTreeSet<RData>>,
}

impl Builder {
    fn add(&mut self, name: &str, data: RData) {
        self.sets
            .entry((name.to_string(), data.rtype()))
            .or_default()
            .insert(data);
    }

    fn addresses(&mut self, name: &str, addrs: &[IpAddr]) {
        for a in addrs {
            match a {
                IpAddr::V4(v4) => self.add(name, RData::A(*v4)),
                IpAddr::V6(v6) => self.add(name, RData::Aaaa(*v6)),
            }
        }
    }

    fn has_address(&self, name: &str) -> bool {
        self.sets.contains_key(&(name.to_string(), RType::A))
            || self.sets.contains_key(&(name.to_string(), RType::Aaaa))
    }

    fn finish(self) -> Vec<RRset> {
        let mut out: Vec<RRset> = self
            .sets
            .into_iter()
            .map(|((name, rtype), values)| RRset {
                name,
                rtype,
                values: values.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| natural_cmp(&a.name, &b.name).then_with(|| a.rtype.cmp(&b.rtype)));
        out
    }
}

/// Python natsort's default order (what OctoDNS's YAML loader enforces): digit runs compare
/// as numbers, other runs as strings.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Part<'a> {
        Num(u128, &'a str),
        Text(&'a str),
    }
    fn parts(s: &str) -> Vec<Part<'_>> {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        if bytes.first().is_some_and(u8::is_ascii_digit) {
            out.push(Part::Text(""));
        }
        let mut i = 0;
        while i < bytes.len() {
            let digit = bytes[i].is_ascii_digit();
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() == digit {
                i += 1;
            }
            let run = &s[start..i];
            out.push(if digit {
                Part::Num(run.parse().unwrap_or(u128::MAX), run)
            } else {
                Part::Text(run)
            });
        }
        out
    }
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

/// Builds the zones of domain `d`.
pub fn build(d: &Domain, f: &DomainFacts, host: &HostFacts, inputs: &DnsInputs) -> DomainZones {
    let mut warnings = f.warnings.clone();
    let addrs: Vec<IpAddr> = if d.ips.is_empty() {
        host.addresses.clone()
    } else {
        d.ips.clone()
    };
    if addrs.is_empty() {
        warnings.push(
            "no address to publish: set [dns] addresses (the host's public addresses) or config/ip"
                .into(),
        );
    }
    let mail_addrs: Vec<IpAddr> = if host.mail_listen.is_empty() {
        addrs.clone()
    } else {
        host.mail_listen.clone()
    };

    // TLSA for HTTPS: the live certificate's key, and the next key during a rollover.
    let mut web_tlsa: Vec<String> = Vec::new();
    if let (true, Some(cert)) = (d.web || f.webmail_only, &d.cert) {
        match leaf_spki(&cert.chain_pem) {
            Ok(spki) => web_tlsa.push(spki_sha256_hex(&spki)),
            Err(e) => warnings.push(format!(
                "no TLSA record: certificate set {}: {e}",
                cert.name
            )),
        }
        if let Some(next) = inputs.next_tls_keys.get(&d.name) {
            let h = spki_sha256_hex(next);
            if !web_tlsa.contains(&h) {
                web_tlsa.push(h);
            }
        }
    }
    let smtp_tlsa = inputs.smtp_spki.as_deref().map(spki_sha256_hex);
    if f.receives_mail && smtp_tlsa.is_none() {
        warnings.push(
            "no TLSA record for SMTP: the mail host certificate ([mail] certificate) could not be read"
                .into(),
        );
    }

    let spf = spf(&f.spf).unwrap_or_else(|w| {
        warnings.push(w);
        None
    });
    let dmarc = dmarc(&f.dmarc).unwrap_or_else(|w| {
        warnings.push(w);
        None
    });
    let dkim = match (&f.dkim_selector, inputs.dkim.get(&d.name)) {
        (Some(_), Some((sel, spki))) if is_rsa_spki(spki) => Some((
            sel.clone(),
            format!("v=DKIM1; k=rsa; p={}", data_encoding::BASE64.encode(spki)),
        )),
        (Some(_), Some(_)) => {
            warnings.push("no DKIM record: the signing key is not an RSA key".into());
            None
        }
        (Some(sel), None) => {
            warnings.push(format!(
                "no DKIM record for selector {sel}: there is no signing key yet (`dirhost apply` makes one for a domain with mail)"
            ));
            None
        }
        (None, _) => None,
    };
    let caa = match (&host.caa_issuer, d.ssl_provider) {
        (Some(issuer), SslProvider::Letsencrypt) => Some(match &inputs.acme_account_uri {
            Some(uri) => format!("{issuer}; accounturi={uri}"),
            None => issuer.clone(),
        }),
        _ => None,
    };

    let apexes = zone_apexes(d);
    let names = d.all_names();
    let mut zones = Vec::new();
    for apex in &apexes {
        let mut b = Builder::default();
        // Every name of the site that falls in this zone (and in no deeper zone).
        for name in &names {
            let home = apexes
                .iter()
                .filter(|z| relative(name, z).is_some())
                .max_by_key(|z| z.len());
            if home != Some(apex) {
                continue;
            }
            let Some(rel) = relative(name, apex) else {
                continue;
            };
            b.addresses(&rel, &addrs);
            let covered = d
                .cert
                .as_ref()
                .is_some_and(|c| crate::certs::covers(&c.info.names, name));
            if covered {
                let tlsa_name = prefixed(&format!("_{}._tcp", host.https_port), &rel);
                for h in &web_tlsa {
                    b.add(&tlsa_name, tlsa(h));
                }
            }
        }
        if let Some(value) = &caa {
            b.add(
                "",
                RData::Caa {
                    flags: 0,
                    tag: "issue".into(),
                    value: value.clone(),
                },
            );
            // dirhost never orders wildcard certificates (HTTP-01 cannot validate them).
            b.add(
                "",
                RData::Caa {
                    flags: 0,
                    tag: "issuewild".into(),
                    value: ";".into(),
                },
            );
        }
        if f.receives_mail {
            let mx = format!("mx.{apex}");
            b.add(
                "",
                RData::Mx {
                    preference: MX_PREFERENCE,
                    exchange: mx.clone(),
                },
            );
            b.addresses("mx", &mail_addrs);
            if let Some(h) = &smtp_tlsa {
                b.add(&format!("_{}._tcp.mx", host.smtp_port), tlsa(h));
            }
        }
        if f.mailboxes {
            // Clients connect to a name whose certificate they can check: the zone's own
            // name when the domain's certificate covers it and mail listens there.
            let cert_ok = d
                .cert
                .as_ref()
                .is_some_and(|c| crate::certs::covers(&c.info.names, apex));
            let reachable =
                host.mail_listen.is_empty() || addrs.iter().all(|a| host.mail_listen.contains(a));
            let target = if cert_ok && reachable {
                apex.clone()
            } else {
                host.mail_hostname.clone()
            };
            for (service, port) in [
                ("_submissions._tcp", host.smtps_port),
                ("_submission._tcp", host.submission_port),
                ("_imaps._tcp", host.imaps_port),
                ("_pop3s._tcp", host.pop3s_port),
            ] {
                b.add(
                    service,
                    RData::Srv {
                        priority: 0,
                        weight: 1,
                        port,
                        target: target.clone(),
                    },
                );
            }
            // RFC 6186 §3.4: cleartext IMAP and POP3 are not offered.
            for service in ["_imap._tcp", "_pop3._tcp"] {
                b.add(
                    service,
                    RData::Srv {
                        priority: 0,
                        weight: 0,
                        port: 0,
                        target: ".".into(),
                    },
                );
            }
        }
        if let Some(s) = &spf {
            b.add("", RData::Txt(s.clone()));
        }
        if let Some(s) = &dmarc {
            b.add("_dmarc", RData::Txt(s.clone()));
        }
        if let Some((sel, text)) = &dkim {
            b.add(&format!("{sel}._domainkey"), RData::Txt(text.clone()));
        }
        // Name servers inside the zone need addresses for the zone to load.
        for ns in &host.nameservers {
            if let Some(rel) = relative(ns, apex)
                && !b.has_address(&rel)
            {
                if host.default_nameservers {
                    b.addresses(&rel, &host.addresses);
                } else {
                    warnings.push(format!(
                        "zone {apex}: name server {ns} is inside the zone but has no address records"
                    ));
                }
            }
        }
        zones.push(Zone {
            name: apex.clone(),
            domain: d.name.clone(),
            ttl: f.ttl,
            serial: 0,
            nameservers: host.nameservers.clone(),
            rrsets: b.finish(),
        });
    }
    DomainZones {
        domain: d.name.clone(),
        zones,
        warnings,
    }
}

fn prefixed(prefix: &str, rel: &str) -> String {
    if rel.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{rel}")
    }
}

fn tlsa(hex: &str) -> RData {
    RData::Tlsa {
        usage: 3,
        selector: 1,
        matching_type: 1,
        data: hex.to_string(),
    }
}

/// The CAA identity of well-known ACME CAs, by the host of their directory URL.
pub fn caa_identity(directory_url: &str) -> Option<&'static str> {
    let host = directory_url
        .strip_prefix("https://")
        .or_else(|| directory_url.strip_prefix("http://"))?
        .split(['/', ':'])
        .next()?
        .to_ascii_lowercase();
    Some(match host.as_str() {
        "acme-v02.api.letsencrypt.org" | "acme-staging-v02.api.letsencrypt.org" => {
            "letsencrypt.org"
        }
        "acme.zerossl.com" => "sectigo.com",
        "dv.acme-v02.api.pki.goog" | "dv.acme-v02.test-api.pki.goog" => "pki.goog",
        "api.buypass.com" | "api.test4.buypass.no" => "buypass.com",
        "acme.ssl.com" => "ssl.com",
        _ => return None,
    })
}

/// Is `uri` safe inside a CAA value (RFC 8657 `accounturi`)? Printable ASCII without
/// spaces, quotes, backslashes or `;`.
pub fn account_uri_ok(uri: &str) -> bool {
    uri.starts_with("https://")
        && uri.len() <= 512
        && uri
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"\\;".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Flag {
        Flag::Value(s.into())
    }

    #[test]
    fn ttl_follows_sympl() {
        assert_eq!(ttl(&Flag::Unset), 300);
        assert_eq!(ttl(&Flag::True), 300);
        assert_eq!(ttl(&v("5")), 60);
        assert_eq!(ttl(&v("12345\n")), 12345);
        assert_eq!(ttl(&v("ttl: 3600 seconds")), 3600);
        assert_eq!(ttl(&v("99999999999999999999999999999")), 86_400);
        assert_eq!(ttl(&v("100000")), 86_400);
        assert_eq!(ttl(&v("none")), 300);
    }

    #[test]
    fn spf_follows_sympl_and_refuses_smuggling() {
        assert_eq!(spf(&Flag::Unset), Ok(None));
        assert_eq!(spf(&Flag::False), Ok(None));
        assert_eq!(spf(&Flag::True), Ok(Some(DEFAULT_SPF.into())));
        assert_eq!(
            spf(&v("  v=spf1 mx a:mail.example.org -all \r\nsecond line\n")),
            Ok(Some("v=spf1 mx a:mail.example.org -all".into()))
        );
        for bad in [
            "v=spf1 \"quoted\" -all",
            "v=spf1 -all\\",
            "v=spf1 -all\u{7}",
            "v=spf1 -all\u{0}",
            "v=spf1 ünïcode -all",
            "hello world",
            "v=spf10 -all",
        ] {
            assert!(spf(&v(bad)).is_err(), "{bad:?}");
        }
        assert!(spf(&v(&format!("v=spf1 {}", "a".repeat(2000)))).is_err());
    }

    #[test]
    fn dmarc_follows_sympl() {
        assert_eq!(dmarc(&Flag::Unset), Ok(None));
        assert_eq!(dmarc(&Flag::True), Ok(Some(DEFAULT_DMARC.into())));
        for ok in [
            "v=DMARC1; p=reject",
            "v=DMARC1; p=reject; rua=mailto:postmaster@example.com",
            "v=DMARC1;  p=none; sp=none; pct=0",
        ] {
            assert_eq!(dmarc(&v(ok)), Ok(Some(ok.into())), "{ok}");
        }
        assert_eq!(
            dmarc(&v("v=DMARC1; p=none\nignored")),
            Ok(Some("v=DMARC1; p=none".into()))
        );
        for bad in [
            "nonsense",
            "v=DMARC1",
            "v=DMARC1;p=none",
            "v=DMARC; p=none",
            "v=DMARC1; =none",
            "v=DMARC1; p=",
            "v=DMARC1; p=;",
            "v=dmarc1; p=none",
            "v=DMARC1; p=\"none\u{1}\"",
        ] {
            assert!(dmarc(&v(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn natural_order_matches_natsort() {
        let mut names = vec![
            "www",
            "_submission._tcp",
            "_443._tcp",
            "",
            "_25._tcp.mx",
            "mx",
            "_443._tcp.www",
            "_dmarc",
            "a10",
            "a9",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "",
                "_25._tcp.mx",
                "_443._tcp",
                "_443._tcp.www",
                "_dmarc",
                "_submission._tcp",
                "a9",
                "a10",
                "mx",
                "www"
            ]
        );
    }

    #[test]
    fn caa_identities() {
        assert_eq!(
            caa_identity(crate::config::LETSENCRYPT_PRODUCTION),
            Some("letsencrypt.org")
        );
        assert_eq!(
            caa_identity("https://acme-staging-v02.api.letsencrypt.org/directory"),
            Some("letsencrypt.org")
        );
        assert_eq!(caa_identity("https://localhost:14000/dir"), None);
        assert!(account_uri_ok(
            "https://acme-v02.api.letsencrypt.org/acme/acct/123"
        ));
        for bad in [
            "http://x/acct/1",
            "https://x/a b",
            "https://x/a\"",
            "https://x/;a",
        ] {
            assert!(!account_uri_ok(bad), "{bad}");
        }
    }

    const SHOP_CRT: &str = include_str!("../../tests/fixtures/dns/keys/shop.crt");
    const SIX_CRT: &str = include_str!("../../tests/fixtures/dns/keys/six.crt");

    fn shop(cert: bool) -> Domain {
        let pem = crate::certs::parse_pem(SHOP_CRT.as_bytes()).unwrap();
        Domain {
            aliases: vec![
                "blog.shop.test".into(),
                "shop-alias.test".into(),
                "www.blog.shop.test".into(),
                "www.shop-alias.test".into(),
                "www.shop.test".into(),
            ],
            cert: cert.then(|| crate::model::CertSet {
                name: "0".into(),
                chain_pem: SHOP_CRT.into(),
                key_pem: String::new(),
                info: crate::certs::cert_info(&pem.certs[0]).unwrap(),
                uncovered: Vec::new(),
            }),
            ..Domain::for_test("shop.test", "/srv/shop.test", 2001, 2001)
        }
    }

    fn host(addrs: &[&str]) -> HostFacts {
        HostFacts {
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            nameservers: vec!["ns1.host.test".into()],
            default_nameservers: true,
            caa_issuer: Some("letsencrypt.org".into()),
            mail_hostname: "host.test".into(),
            mail_listen: Vec::new(),
            https_port: 443,
            smtp_port: 25,
            smtps_port: 465,
            submission_port: 587,
            imaps_port: 993,
            pop3s_port: 995,
        }
    }

    fn values<'a>(z: &'a Zone, name: &str, t: RType) -> Vec<&'a RData> {
        z.rrsets
            .iter()
            .filter(|s| s.name == name && s.rtype == t)
            .flat_map(|s| s.values.iter())
            .collect()
    }

    #[test]
    fn zones_are_the_domain_and_aliases_outside_it() {
        assert_eq!(zone_apexes(&shop(false)), ["shop.test", "shop-alias.test"]);
    }

    #[test]
    fn the_next_key_is_published_beside_the_current_one() {
        let d = shop(true);
        let next = leaf_spki(SIX_CRT).unwrap();
        let inputs = DnsInputs {
            next_tls_keys: [("shop.test".to_string(), next.clone())].into(),
            ..DnsInputs::default()
        };
        let out = build(&d, &DomainFacts::default(), &host(&["192.0.2.1"]), &inputs);
        let z = &out.zones[0];
        let tlsa = values(z, "_443._tcp.www", RType::Tlsa);
        assert_eq!(tlsa.len(), 2, "{tlsa:?}");
        assert!(tlsa.contains(&&RData::Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: spki_sha256_hex(&next),
        }));
        // No certificate: no TLSA at all, even with a next key.
        let out = build(
            &shop(false),
            &DomainFacts::default(),
            &host(&["192.0.2.1"]),
            &inputs,
        );
        assert!(out.zones.iter().all(|z| z.tlsa_data().is_empty()));
    }

    #[test]
    fn https_tlsa_needs_an_https_vhost() {
        // (web, webmail-only vhost) → TLSA for HTTPS.
        for (web, webmail_only, want) in [
            (true, false, true),
            (false, true, true),
            (false, false, false),
        ] {
            let d = Domain { web, ..shop(true) };
            let f = DomainFacts {
                webmail_only,
                ..DomainFacts::default()
            };
            let out = build(&d, &f, &host(&["192.0.2.1"]), &DnsInputs::default());
            let z = &out.zones[0];
            assert_eq!(
                !values(z, "_443._tcp", RType::Tlsa).is_empty(),
                want,
                "web={web} webmail_only={webmail_only}"
            );
        }
    }

    #[test]
    fn addresses_providers_and_mail_targets() {
        let mail = DomainFacts {
            mailboxes: true,
            receives_mail: true,
            ..DomainFacts::default()
        };
        // IPv6-only host: AAAA only.
        let out = build(
            &shop(true),
            &mail,
            &host(&["2001:db8::1"]),
            &DnsInputs::default(),
        );
        let z = &out.zones[0];
        assert!(values(z, "", RType::A).is_empty());
        assert_eq!(values(z, "mx", RType::Aaaa).len(), 1);
        assert!(
            out.warnings
                .iter()
                .any(|w| w.contains("no TLSA record for SMTP"))
        );
        // The zone's own name carries the certificate: clients are sent there.
        assert!(matches!(
            values(z, "_imaps._tcp", RType::Srv)[0],
            RData::Srv { target, port: 993, .. } if target == "shop.test"
        ));
        // Mail listens elsewhere: the host's name instead.
        let mut h = host(&["192.0.2.1"]);
        h.mail_listen = vec!["192.0.2.99".parse().unwrap()];
        let out = build(&shop(true), &mail, &h, &DnsInputs::default());
        let z = &out.zones[0];
        assert!(matches!(
            values(z, "_submissions._tcp", RType::Srv)[0],
            RData::Srv { target, port: 465, .. } if target == "host.test"
        ));
        assert_eq!(
            values(z, "mx", RType::A),
            [&RData::A("192.0.2.99".parse().unwrap())]
        );
        // A customer who buys certificates elsewhere gets no CAA that would block them.
        let mut d = shop(true);
        d.ssl_provider = SslProvider::Manual;
        let out = build(&d, &mail, &h, &DnsInputs::default());
        assert!(values(&out.zones[0], "", RType::Caa).is_empty());
        // config/ip wins over the host's addresses; no address at all is reported.
        d.ips = vec!["198.51.100.7".parse().unwrap()];
        let out = build(&d, &DomainFacts::default(), &h, &DnsInputs::default());
        assert_eq!(
            values(&out.zones[0], "www", RType::A),
            [&RData::A("198.51.100.7".parse().unwrap())]
        );
        let out = build(
            &shop(false),
            &DomainFacts::default(),
            &host(&[]),
            &DnsInputs::default(),
        );
        assert!(out.warnings.iter().any(|w| w.contains("no address")));
    }

    #[test]
    fn default_name_servers_inside_the_zone_get_addresses() {
        let mut h = host(&["192.0.2.1"]);
        h.nameservers = vec!["ns1.shop.test".into()];
        let out = build(
            &shop(false),
            &DomainFacts::default(),
            &h,
            &DnsInputs::default(),
        );
        assert_eq!(values(&out.zones[0], "ns1", RType::A).len(), 1);
        h.default_nameservers = false;
        let out = build(
            &shop(false),
            &DomainFacts::default(),
            &h,
            &DnsInputs::default(),
        );
        assert!(values(&out.zones[0], "ns1", RType::A).is_empty());
        assert!(out.warnings.iter().any(|w| w.contains("ns1.shop.test")));
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative("example.com", "example.com").as_deref(), Some(""));
        assert_eq!(
            relative("www.example.com", "example.com").as_deref(),
            Some("www")
        );
        assert_eq!(relative("notexample.com", "example.com"), None);
        assert_eq!(relative("example.net", "example.com"), None);
    }
}
