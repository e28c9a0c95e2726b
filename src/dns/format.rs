//! The three output formats of `dirhost dns export`, as pure functions of a [`Zone`].
//!
//! * BIND: an RFC 1035 master file with `$ORIGIN`, `$TTL`, SOA and NS records; loads with
//!   `named-checkzone`. TXT data is split into strings of at most 255 bytes; `"` and `\` are
//!   escaped, and any byte outside printable ASCII becomes `\DDD`.
//! * OctoDNS: the `YamlProvider` zone file (`<zone>.yaml`): names in natural order (what its
//!   loader enforces), `;` in TXT values escaped as `\;`, no SOA/NS (the provider owns them).
//! * JSON: a stable, documented structure (README, "DNS"); `version` changes only when a
//!   field changes meaning or disappears.

use serde_json::{Value, json};

use super::records::{RData, RType, Zone};

/// SOA timers: refresh, retry, expire (seconds). The negative-cache TTL is the zone's TTL.
pub const SOA_TIMERS: (u32, u32, u32) = (3600, 600, 1_209_600);

/// Version of the JSON structure.
pub const JSON_VERSION: u32 = 1;

/// The absolute name with its trailing dot (`.` stays `.`).
fn dotted(name: &str) -> String {
    if name == "." || name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A character-string for a master file: quoted, `"` and `\` escaped, other bytes outside
/// printable ASCII as `\DDD`.
fn quoted(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03}")),
        }
    }
    s.push('"');
    s
}

/// TXT data as one or more character-strings of at most 255 bytes each.
pub fn txt_strings(text: &str) -> String {
    text.as_bytes()
        .chunks(255)
        .map(quoted)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The presentation form of one record's data (master-file syntax).
pub fn rdata(d: &RData) -> String {
    match d {
        RData::A(a) => a.to_string(),
        RData::Aaaa(a) => a.to_string(),
        RData::Ns(n) => dotted(n),
        RData::Mx {
            preference,
            exchange,
        } => format!("{preference} {}", dotted(exchange)),
        RData::Txt(t) => txt_strings(t),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => format!("{priority} {weight} {port} {}", dotted(target)),
        RData::Caa { flags, tag, value } => format!("{flags} {tag} {}", quoted(value.as_bytes())),
        RData::Tlsa {
            usage,
            selector,
            matching_type,
            data,
        } => format!("{usage} {selector} {matching_type} {data}"),
    }
}

/// A BIND master file for `zone`.
pub fn bind(zone: &Zone) -> String {
    let origin = dotted(&zone.name);
    let mname = zone
        .nameservers
        .first()
        .map(|n| dotted(n))
        .unwrap_or_else(|| origin.clone());
    let (refresh, retry, expire) = SOA_TIMERS;
    let mut rows: Vec<(String, &str, String)> = Vec::new();
    for ns in &zone.nameservers {
        rows.push(("@".into(), "NS", dotted(ns)));
    }
    for set in &zone.rrsets {
        let name = if set.name.is_empty() {
            "@".to_string()
        } else {
            set.name.clone()
        };
        for v in &set.values {
            rows.push((name.clone(), set.rtype.as_str(), rdata(v)));
        }
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(1).max(1);
    let mut out = format!(
        "; zone {zone_name} (domain {domain}), made by `dirhost dns export`\n\
         $ORIGIN {origin}\n$TTL {ttl}\n\
         {at:<width$} IN SOA {mname} hostmaster.{origin} (\n\
         {pad:<width$}        {serial} ; serial\n\
         {pad:<width$}        {refresh} ; refresh\n\
         {pad:<width$}        {retry} ; retry\n\
         {pad:<width$}        {expire} ; expire\n\
         {pad:<width$}        {ttl} ) ; negative-cache TTL\n",
        zone_name = zone.name,
        domain = zone.domain,
        ttl = zone.ttl,
        at = "@",
        pad = "",
        serial = zone.serial,
    );
    for (name, rtype, data) in rows {
        out.push_str(&format!("{name:<width$} IN {rtype:<5} {data}\n"));
    }
    out
}

/// A YAML double-quoted scalar.
fn yq(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// OctoDNS's internal TXT form: `;` escaped as `\;`.
fn octodns_txt(text: &str) -> String {
    text.replace('\\', "\\\\").replace(';', "\\;")
}

/// One value of an OctoDNS record: the lines after `- ` (keys in sorted order).
fn octodns_value(d: &RData) -> Vec<String> {
    match d {
        RData::A(a) => vec![yq(&a.to_string())],
        RData::Aaaa(a) => vec![yq(&a.to_string())],
        RData::Ns(n) => vec![yq(&dotted(n))],
        RData::Txt(t) => vec![yq(&octodns_txt(t))],
        RData::Mx {
            preference,
            exchange,
        } => vec![
            format!("exchange: {}", yq(&dotted(exchange))),
            format!("preference: {preference}"),
        ],
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => vec![
            format!("port: {port}"),
            format!("priority: {priority}"),
            format!("target: {}", yq(&dotted(target))),
            format!("weight: {weight}"),
        ],
        RData::Caa { flags, tag, value } => vec![
            format!("flags: {flags}"),
            format!("tag: {}", yq(tag)),
            format!("value: {}", yq(value)),
        ],
        RData::Tlsa {
            usage,
            selector,
            matching_type,
            data,
        } => vec![
            format!("certificate_association_data: {}", yq(data)),
            format!("certificate_usage: {usage}"),
            format!("matching_type: {matching_type}"),
            format!("selector: {selector}"),
        ],
    }
}

/// An OctoDNS `YamlProvider` zone file for `zone` (file name `<zone>.yaml`).
pub fn octodns(zone: &Zone) -> String {
    let mut out = format!(
        "---\n# zone {} (domain {}), made by `dirhost dns export`\n",
        zone.name, zone.domain
    );
    let mut i = 0;
    while i < zone.rrsets.len() {
        let name = &zone.rrsets[i].name;
        out.push_str(&format!("{}:\n", yq(name)));
        while i < zone.rrsets.len() && zone.rrsets[i].name == *name {
            let set = &zone.rrsets[i];
            out.push_str(&format!(
                "- ttl: {}\n  type: {}\n  values:\n",
                zone.ttl,
                set.rtype.as_str()
            ));
            for v in &set.values {
                for (j, line) in octodns_value(v).into_iter().enumerate() {
                    let lead = if j == 0 { "  - " } else { "    " };
                    out.push_str(&format!("{lead}{line}\n"));
                }
            }
            i += 1;
        }
    }
    out
}

/// One record's typed value in the JSON structure.
fn json_value(d: &RData) -> Value {
    match d {
        RData::A(a) => json!({ "address": a.to_string() }),
        RData::Aaaa(a) => json!({ "address": a.to_string() }),
        RData::Ns(n) => json!({ "host": dotted(n) }),
        RData::Txt(t) => json!({ "text": t }),
        RData::Mx {
            preference,
            exchange,
        } => json!({ "preference": preference, "exchange": dotted(exchange) }),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            json!({ "priority": priority, "weight": weight, "port": port, "target": dotted(target) })
        }
        RData::Caa { flags, tag, value } => json!({ "flags": flags, "tag": tag, "value": value }),
        RData::Tlsa {
            usage,
            selector,
            matching_type,
            data,
        } => json!({
            "usage": usage, "selector": selector, "matching_type": matching_type, "data": data
        }),
    }
}

/// The JSON object of one zone.
pub fn json_zone(zone: &Zone) -> Value {
    let mut records = Vec::new();
    for ns in &zone.nameservers {
        let d = RData::Ns(ns.clone());
        records.push(json_record(zone, "", RType::Ns, &d));
    }
    for set in &zone.rrsets {
        for v in &set.values {
            records.push(json_record(zone, &set.name, set.rtype, v));
        }
    }
    json!({
        "zone": zone.name,
        "domain": zone.domain,
        "ttl": zone.ttl,
        "serial": zone.serial,
        "nameservers": zone.nameservers.iter().map(|n| dotted(n)).collect::<Vec<_>>(),
        "records": records,
    })
}

fn json_record(zone: &Zone, name: &str, rtype: RType, d: &RData) -> Value {
    json!({
        "name": if name.is_empty() { "@" } else { name },
        "fqdn": dotted(&zone.fqdn(name)),
        "type": rtype.as_str(),
        "ttl": zone.ttl,
        "rdata": rdata(d),
        "value": json_value(d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_is_split_and_escaped() {
        assert_eq!(txt_strings("v=spf1 -all"), "\"v=spf1 -all\"");
        assert_eq!(txt_strings("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(txt_strings("x\ny"), "\"x\\010y\"");
        let long = "a".repeat(300);
        let t = txt_strings(&long);
        assert_eq!(t, format!("\"{}\" \"{}\"", "a".repeat(255), "a".repeat(45)));
        // The split counts data bytes, not escaped ones.
        let quotes = "\"".repeat(256);
        let t = txt_strings(&quotes);
        assert_eq!(t.matches(' ').count(), 1);
        assert_eq!(t, format!("\"{}\" \"\\\"\"", "\\\"".repeat(255)));
    }

    #[test]
    fn octodns_escapes_semicolons_and_quotes() {
        assert_eq!(
            yq(&octodns_txt("v=DMARC1; p=none")),
            "\"v=DMARC1\\\\; p=none\""
        );
        assert_eq!(yq("a\"b\n"), "\"a\\\"b\\x0a\"");
    }
}
