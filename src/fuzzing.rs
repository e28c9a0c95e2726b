//! Fuzz entry points: every parser of a customer-written file, behind one function per
//! target, each asserting the properties the rest of dirhost relies on (not just "does not
//! panic"): an accepted value is made only of characters that are inert in the Apache, Exim,
//! Dovecot, PHP-FPM and zone files it reaches, parsing is stable, and errors never echo a
//! control character (a forged log line) or a password.
//!
//! Used by the cargo-fuzz targets in `fuzz/` and by `tests/hostile_fuzz.rs`, which replays
//! the committed corpus and a bounded random-input loop through the same functions on the
//! stable toolchain. A failed property panics, which is what both harnesses detect.

use crate::dns::{format as dns_format, records};
use crate::mail::{password, validate as mail_validate};
use crate::model::validate::{self, Flag};
use crate::php::ini;

/// Every fuzz target, by name (the `fuzz/fuzz_targets/<name>.rs` files and the corpus
/// directories `fuzz/corpus/<name>/`).
pub const TARGETS: &[&str] = &[
    "flag",
    "ip_list",
    "cidr",
    "domain_name",
    "ssl_provider",
    "set_name",
    "aliases",
    "local_part",
    "address",
    "quota",
    "forward",
    "password",
    "php_ini",
    "dns_spf",
    "dns_dmarc",
    "dns_ttl",
    "dkim_selector",
    "printable",
    "stats_credentials",
];

/// Runs target `name` on `data`. Panics on a violated property; unknown names panic too.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "flag" => flag(data),
        "ip_list" => ip_list(data),
        "cidr" => cidr(data),
        "domain_name" => domain_name(data),
        "ssl_provider" => ssl_provider(data),
        "set_name" => set_name(data),
        "aliases" => aliases(data),
        "local_part" => local_part(data),
        "address" => address(data),
        "quota" => quota(data),
        "forward" => forward(data),
        "password" => password_file(data),
        "php_ini" => php_ini(data),
        "dns_spf" => dns_spf(data),
        "dns_dmarc" => dns_dmarc(data),
        "dns_ttl" => dns_ttl(data),
        "dkim_selector" => dkim_selector(data),
        "printable" => printable(data),
        "stats_credentials" => stats_credentials(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// No control characters: an error or warning that contains one can forge a log line.
fn no_controls(what: &str, s: &str) {
    assert!(
        !s.chars()
            .any(|c| c == '\n' || c == '\r' || c == '\0' || c == '\x1b'),
        "{what} carries a raw control character: {s:?}"
    );
}

/// Characters that are inert in every config file dirhost writes.
fn inert(what: &str, s: &str, extra: &[u8]) {
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || extra.contains(&b)),
        "{what} lets through {s:?}"
    );
}

fn flag_of(data: &[u8]) -> Option<Flag> {
    Flag::parse(Some(data)).ok()
}

pub fn flag(data: &[u8]) {
    match Flag::parse(Some(data)) {
        Ok(Flag::Value(v)) => assert_eq!(v.as_bytes(), data, "a value is kept verbatim"),
        Ok(Flag::Unset) => panic!("a file that exists is never Unset"),
        Ok(_) => {}
        Err(e) => {
            assert!(std::str::from_utf8(data).is_err());
            no_controls("flag error", &e.to_string());
        }
    }
}

pub fn ip_list(data: &[u8]) {
    let Some(t) = text(data) else { return };
    match validate::ip_list(t) {
        Ok(ips) => {
            for ip in &ips {
                inert("ip", &ip.to_string(), b":");
            }
            let again: Vec<String> = ips.iter().map(ToString::to_string).collect();
            assert_eq!(validate::ip_list(&again.join(" ")).ok(), Some(ips));
        }
        Err(e) => no_controls("ip error", &e.to_string()),
    }
}

pub fn cidr(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(c) = validate::parse_cidr(t) {
        inert("cidr", &c, b":/");
        assert_eq!(validate::parse_cidr(&c).as_deref(), Ok(c.as_str()));
    }
}

pub fn domain_name(data: &[u8]) {
    let Some(t) = text(data) else { return };
    match validate::domain_name(t) {
        Ok(a) => {
            inert("domain name", &a, b"");
            assert!(a.len() <= 253 && !a.starts_with('.') && !a.contains(".."));
            assert!(a.split('.').all(|l| !l.is_empty() && l.len() <= 63));
            assert_eq!(
                validate::domain_name(&a).as_deref(),
                Ok(a.as_str()),
                "stable"
            );
        }
        Err(e) => no_controls("domain name error", &e.to_string()),
    }
}

pub fn ssl_provider(data: &[u8]) {
    let Some(f) = flag_of(data) else { return };
    let (_, warning) = validate::ssl_provider(&f);
    if let Some(w) = warning {
        no_controls("ssl-provider warning", &w);
    }
}

pub fn set_name(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if validate::set_name(t) {
        inert("set name", t, b":");
        assert!(t != "." && t != "..");
    }
}

pub fn aliases(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let (aliases, problems) = mail_validate::aliases(t);
    for a in &aliases {
        assert_eq!(
            mail_validate::local_part(&a.local).as_deref(),
            Ok(a.local.as_str())
        );
        assert!(!a.targets.is_empty());
        for target in &a.targets {
            inert("alias target", target, b"@+=");
            assert!(!target.starts_with(['|', '/', ':']));
        }
    }
    for p in &problems {
        no_controls("aliases problem", p);
    }
}

pub fn local_part(data: &[u8]) {
    let Some(t) = text(data) else { return };
    match mail_validate::local_part(t) {
        Ok(l) => {
            inert("local part", &l, b"");
            assert!(!l.starts_with('.') && !l.contains("..") && l.len() <= 64);
        }
        Err(e) => no_controls("local part error", &e.to_string()),
    }
}

pub fn address(data: &[u8]) {
    let Some(t) = text(data) else { return };
    match mail_validate::address(t) {
        Ok((l, _domain)) => inert("address local part", &l, b""),
        Err(e) => no_controls("address error", &e),
    }
}

pub fn quota(data: &[u8]) {
    let Some(t) = text(data) else { return };
    match mail_validate::quota(t) {
        Ok(n) => assert!(n <= 1_000_000_000_000_000_000),
        Err(e) => no_controls("quota error", &e.to_string()),
    }
}

pub fn forward(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if mail_validate::forward_file(t).is_ok() {
        assert!(!t.contains('\0') && !t.trim().is_empty());
    }
}

pub fn password_file(data: &[u8]) {
    match password::parse(data) {
        Ok(password::Stored::Hash { .. }) => {
            let stored = password::parse(data).ok();
            let field = stored.and_then(|s| s.dovecot_field()).unwrap_or_default();
            // One passwd-file field: no separator, no line break, no white space.
            assert!(
                !field.contains([':', '\n', '\r', ' ', '\t', '\0']),
                "passwd-file field {field:?}"
            );
        }
        Ok(password::Stored::Plain(secret)) => {
            // Debug never shows it.
            assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        }
        Err(e) => {
            no_controls("password error", &e.to_string());
            // Errors never carry the file's text: every variant is a fixed message, except
            // the name of an unknown {SCHEME}, which is letters, digits and '-' only.
            if let password::Malformed::Scheme(s) = &e {
                let inner = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'));
                assert!(
                    inner
                        .is_some_and(|i| i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
                    "password error echoes more than a scheme name: {s:?}"
                );
            }
        }
    }
}

/// `config/stats-password`: every accepted user and hash is inert in an htpasswd line (no
/// separator, no line break), a plaintext secret never shows through Debug, and errors never
/// carry a control character or the file's secrets.
pub fn stats_credentials(data: &[u8]) {
    use crate::stats::credentials::{self, Secret};
    match credentials::parse(data) {
        Ok(creds) => {
            assert!(!creds.is_empty(), "an accepted file has a user");
            for c in &creds {
                inert("stats user", &c.user, b"@+");
                assert!(!c.user.is_empty());
                if let Secret::Bcrypt(h) = &c.secret {
                    assert!(h.starts_with("$2y$"), "bcrypt normalised: {h:?}");
                    assert!(
                        !h.contains([':', '\n', '\r', ' ', '\t', '\0']),
                        "htpasswd field {h:?}"
                    );
                    let line = credentials::htpasswd_line(&c.user, h);
                    assert_eq!(line.matches('\n').count(), 1, "one htpasswd line: {line:?}");
                }
                // Debug shows the user and the kind, never the secret.
                let kind = match c.secret {
                    Secret::Bcrypt(_) => "bcrypt",
                    Secret::Plain(_) => "plaintext",
                };
                assert_eq!(format!("{c:?}"), format!("Credential({}, {kind})", c.user));
            }
            // Stable: the same bytes parse to the same entries.
            assert_eq!(credentials::parse(data).ok(), Some(creds));
        }
        Err(e) => {
            no_controls("stats credentials error", &e.to_string());
            // Errors carry line numbers only, and for a duplicate the (validated) user name:
            // never a password, by construction of `CredError`.
            if let credentials::CredError::Duplicate { user, .. } = &e {
                inert("stats duplicate user", user, b"@");
            }
        }
    }
}

pub fn php_ini(data: &[u8]) {
    match ini::parse(data) {
        Ok(settings) => {
            let allowed = ini::allowed_keys();
            for s in &settings {
                assert!(allowed.contains(&s.key.as_str()), "key {:?}", s.key);
                inert("php.ini value", &s.value, b"/+");
            }
        }
        Err(e) => no_controls("php.ini error", &e.to_string()),
    }
}

fn txt_ok(what: &str, record: &str) {
    assert!(
        record
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
        "{what} {record:?}"
    );
    let quoted = dns_format::txt_strings(record);
    assert!(!quoted.contains(['\n', '\r']), "{what} quoted {quoted:?}");
}

pub fn dns_spf(data: &[u8]) {
    let Some(f) = flag_of(data) else { return };
    match records::spf(&f) {
        Ok(Some(r)) => txt_ok("spf", &r),
        Ok(None) => {}
        Err(e) => no_controls("spf error", &e),
    }
}

pub fn dns_dmarc(data: &[u8]) {
    let Some(f) = flag_of(data) else { return };
    match records::dmarc(&f) {
        Ok(Some(r)) => txt_ok("dmarc", &r),
        Ok(None) => {}
        Err(e) => no_controls("dmarc error", &e),
    }
}

pub fn dns_ttl(data: &[u8]) {
    let Some(f) = flag_of(data) else { return };
    let ttl = records::ttl(&f);
    assert!((60..=86400).contains(&ttl), "ttl {ttl}");
}

pub fn dkim_selector(data: &[u8]) {
    let Some(f) = flag_of(data) else { return };
    if let Some(sel) = mail_validate::dkim_selector(&f, "host.example.com") {
        inert("dkim selector", &sel, b"");
        assert!(!sel.starts_with('.') && !sel.ends_with('.') && !sel.contains(".."));
        assert!(
            sel.split('.').all(|l| !l.is_empty() && l.len() <= 63),
            "selector label too long: {sel:?}"
        );
        assert_eq!(mail_validate::selector(&sel).as_deref(), Ok(sel.as_str()));
    }
}

pub fn printable(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let p = validate::printable(&s);
    assert!(!p.chars().any(char::is_control), "{p:?}");
    if !s
        .chars()
        .any(|c| c.is_control() || matches!(c, '\\' | '\u{2028}' | '\u{2029}'))
    {
        assert_eq!(p, s);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_target_runs_on_empty_and_simple_input() {
        for t in super::TARGETS {
            for input in [&b""[..], b"a", b"example.com", b"\n", b"\xff"] {
                super::run(t, input);
            }
        }
    }
}
