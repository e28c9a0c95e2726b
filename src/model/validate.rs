//! Validation of every customer-written value before it can reach a template.
//!
//! Each function takes raw text from /srv and returns either a typed value whose textual form
//! is known to be safe inside an Apache, Exim or Dovecot config (no whitespace, quotes,
//! newlines, `<`, `#`, `%`, `$`...), or an error that names what was wrong. Pure functions:
//! no I/O here.

use std::net::IpAddr;

use thiserror::Error;

/// Why a value from /srv was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    /// A domain or alias name that is not a valid DNS name.
    #[error("{0:?} is not a valid domain name: {1}")]
    DomainName(String, &'static str),
    /// An entry of `config/ip` that is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Ip(String),
    /// A value that is not UTF-8 text.
    #[error("value is not UTF-8 text")]
    NotUtf8,
}

/// Validates a domain name and returns its ASCII (punycode) form.
///
/// Accepts lower-case ASCII names made of letters, digits, `-` and `_` (Sympl's set; `_` for
/// names such as `_dmarc.example.com`), at least two labels, and internationalised names, which
/// are converted to punycode. Refuses upper case (a directory `Example.com` would be a second,
/// different directory to Exim's `dsearch` than `example.com`), trailing dots, and anything else.
pub fn domain_name(raw: &str) -> Result<String, Invalid> {
    let bad = |why| Err(Invalid::DomainName(raw.to_string(), why));
    if raw.is_empty() {
        return bad("empty");
    }
    if raw.chars().any(|c| c.is_uppercase()) {
        return bad("must be lower-case");
    }
    let ascii = if raw.is_ascii() {
        raw.to_string()
    } else {
        match idna::domain_to_ascii_strict(raw) {
            Ok(a) => a,
            Err(_) => return bad("not a valid internationalised name"),
        }
    };
    if ascii.len() > 253 {
        return bad("longer than 253 characters");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return bad("needs at least two labels");
    }
    for label in &labels {
        if label.is_empty() {
            return bad("empty label");
        }
        if label.len() > 63 {
            return bad("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return bad("only a-z, 0-9, '-' and '_' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("label starts or ends with '-'");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("top-level label is numeric");
    }
    Ok(ascii)
}

/// A customer-chosen name (a /srv entry, a mailbox, a link target) made safe to print in a
/// report or log line: control characters (newlines, terminal escapes, NUL...) and the
/// backslash are escaped as Rust does (`\n`, `\u{1b}`), everything else is kept, so
/// `bücher.de` stays readable. A name with a newline cannot forge a second report line.
pub fn printable(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `config/ip`: whitespace-separated IPv4/IPv6 addresses, duplicates dropped, order
/// kept. Any entry that is not an address refuses the whole file: a half-understood address
/// list would bind the site to the wrong addresses, and such entries are how directives get
/// smuggled in.
pub fn ip_list(text: &str) -> Result<Vec<IpAddr>, Invalid> {
    let mut out: Vec<IpAddr> = Vec::new();
    for tok in text.split_ascii_whitespace() {
        let ip: IpAddr = tok.parse().map_err(|_| Invalid::Ip(tok.to_string()))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    // Any byte that is not ASCII whitespace must have been part of a token; a stray control
    // character (e.g. NUL or CR between addresses) is refused too.
    if text
        .bytes()
        .any(|b| b.is_ascii_control() && !b.is_ascii_whitespace())
    {
        return Err(Invalid::Ip(text.escape_debug().to_string()));
    }
    Ok(out)
}

/// Parses an address or CIDR range (`192.0.2.1`, `2001:db8::/32`), as used by
/// `[web] trusted_proxies`. Returns it in canonical text form.
pub fn parse_cidr(text: &str) -> Result<String, Invalid> {
    let err = || Invalid::Ip(text.to_string());
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| err())?;
    match len {
        None => Ok(ip.to_string()),
        Some(l) => {
            let n: u8 = l.parse().map_err(|_| err())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if n > max {
                return Err(err());
            }
            Ok(format!("{ip}/{n}"))
        }
    }
}

/// A Sympl flag/value file, read with `get_param`'s rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// The file does not exist.
    Unset,
    /// Empty, or `true`/`yes` in any case.
    True,
    /// `false`/`no` in any case.
    False,
    /// Anything else, verbatim.
    Value(String),
}

impl Flag {
    /// Applies Sympl's rules to a file's bytes (`None`: no file).
    pub fn parse(bytes: Option<&[u8]>) -> Result<Self, Invalid> {
        let Some(bytes) = bytes else {
            return Ok(Self::Unset);
        };
        let text = std::str::from_utf8(bytes).map_err(|_| Invalid::NotUtf8)?;
        let t = text.trim();
        Ok(
            if t.is_empty() || t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("yes") {
                Self::True
            } else if t.eq_ignore_ascii_case("false") || t.eq_ignore_ascii_case("no") {
                Self::False
            } else {
                Self::Value(text.to_string())
            },
        )
    }

    /// A switch: on when the file exists and does not say false (Ruby truthiness in Sympl).
    pub fn is_on(&self) -> bool {
        matches!(self, Self::True | Self::Value(_))
    }
}

/// How a domain's certificates are obtained (`config/ssl-provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SslProvider {
    /// Let's Encrypt or another ACME CA (the default).
    Letsencrypt,
    /// A self-signed certificate.
    Selfsigned,
    /// Nothing is generated; only sets the admin put there are used.
    Manual,
}

/// Interprets `config/ssl-provider`. Sympl strips everything but `[A-Za-z0-9_]`, so
/// `../../evil` names no provider; unknown names mean "generate nothing", and are reported
/// by the caller through the returned flag.
pub fn ssl_provider(flag: &Flag) -> (SslProvider, Option<String>) {
    match flag {
        Flag::Unset | Flag::True => (SslProvider::Letsencrypt, None),
        Flag::False => (SslProvider::Manual, None),
        Flag::Value(v) => {
            let clean: String = v
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
                .to_ascii_lowercase();
            match clean.as_str() {
                "letsencrypt" => (SslProvider::Letsencrypt, None),
                "selfsigned" => (SslProvider::Selfsigned, None),
                _ => (
                    SslProvider::Manual,
                    Some(format!(
                        "unknown ssl-provider {:?}: no certificates will be generated",
                        v.trim()
                    )),
                ),
            }
        }
    }
}

/// A certificate set name (`config/ssl/sets/<name>`): Sympl's `^[a-z0-9_:-]+$`.
pub fn set_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names() {
        let ok = [
            ("example.com", "example.com"),
            ("a-b.co.uk", "a-b.co.uk"),
            ("_dmarc.example.com", "_dmarc.example.com"),
            ("www.example.com", "www.example.com"),
            ("bücher.de", "xn--bcher-kva.de"),
            ("xn--bcher-kva.de", "xn--bcher-kva.de"),
            ("1.example.com", "1.example.com"),
        ];
        for (raw, want) in ok {
            assert_eq!(domain_name(raw).as_deref(), Ok(want), "{raw}");
        }
        let bad = [
            "",
            "localhost",
            "Example.com",
            "example.com.",
            ".example.com",
            "exa mple.com",
            "example..com",
            "-a.com",
            "a-.com",
            "../etc",
            "example.com\nInclude /etc/shadow",
            "exa\"mple.com",
            "exa<mple.com",
            "1.2.3.4",
            "a.b/c.com",
            "%{x}.com",
        ];
        for raw in bad {
            assert!(domain_name(raw).is_err(), "accepted {raw:?}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(domain_name(&long_label).is_err());
    }

    #[test]
    fn printable_names() {
        for (raw, want) in [
            ("example.com", "example.com"),
            ("bücher.de", "bücher.de"),
            ("a\nskipped b: x", "a\\nskipped b: x"),
            ("esc\x1b[31m", "esc\\u{1b}[31m"),
            ("back\\slash", "back\\\\slash"),
            ("nul\0", "nul\\0"),
        ] {
            assert_eq!(printable(raw), want, "{raw:?}");
            assert!(!printable(raw).contains(|c: char| c.is_control()));
        }
    }

    #[test]
    fn ip_lists() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let cases: &[(&str, Option<Vec<IpAddr>>)] = &[
            ("", Some(vec![])),
            ("192.0.2.1\n", Some(vec![v4])),
            ("192.0.2.1 2001:db8::1", Some(vec![v4, v6])),
            (
                "  192.0.2.1\n\n2001:db8::1\n192.0.2.1\n",
                Some(vec![v4, v6]),
            ),
            ("192.0.2.1\nInclude /etc/shadow", None),
            ("192.0.2.1:80", None),
            ("[2001:db8::1]", None),
            ("192.0.2.1>\n<VirtualHost", None),
            ("192.0.2.1\0", None),
            ("192.0.2.1\r\n", Some(vec![v4])), // CRLF from a Windows editor
            ("fe80::1%eth0", None),
            ("999.0.0.1", None),
        ];
        for (text, want) in cases {
            assert_eq!(ip_list(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("192.0.2.0/24").unwrap(), "192.0.2.0/24");
        assert_eq!(parse_cidr("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse_cidr("::1").unwrap(), "::1");
        for bad in ["192.0.2.0/33", "x", "1.2.3.4/", "::/129", "1.2.3.4 5.6.7.8"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_follow_sympl_get_param() {
        let cases: &[(Option<&[u8]>, Flag)] = &[
            (None, Flag::Unset),
            (Some(b""), Flag::True),
            (Some(b"\n"), Flag::True),
            (Some(b"true"), Flag::True),
            (Some(b"True\n"), Flag::True),
            (Some(b" YES "), Flag::True),
            (Some(b"false"), Flag::False),
            (Some(b"FaLsE\n"), Flag::False),
            (Some(b"no"), Flag::False),
            (
                Some(b"this value\nthat_value\n"),
                Flag::Value("this value\nthat_value\n".into()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(&Flag::parse(*bytes).unwrap(), want, "{bytes:?}");
        }
        assert!(Flag::parse(Some(b"\xff\xfe")).is_err());
        assert!(Flag::True.is_on());
        assert!(Flag::Value("x".into()).is_on());
        assert!(!Flag::False.is_on());
        assert!(!Flag::Unset.is_on());
    }

    #[test]
    fn ssl_providers() {
        let v = |s: &str| Flag::Value(s.into());
        assert_eq!(ssl_provider(&Flag::Unset).0, SslProvider::Letsencrypt);
        assert_eq!(ssl_provider(&Flag::False).0, SslProvider::Manual);
        assert_eq!(ssl_provider(&v("selfsigned\n")).0, SslProvider::Selfsigned);
        assert_eq!(ssl_provider(&v("LetsEncrypt")).0, SslProvider::Letsencrypt);
        let (p, warn) = ssl_provider(&v("../../../evil"));
        assert_eq!(p, SslProvider::Manual);
        assert!(warn.is_some());
    }

    #[test]
    fn set_names() {
        for ok in ["0", "12", "2026-01-01", "a_b:c"] {
            assert!(set_name(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", "A", "x y", "0\n"] {
            assert!(!set_name(bad), "{bad:?}");
        }
    }
}
