//! Pure parsers for the customer-written mail files: mailbox names (local parts), quotas,
//! `config/aliases`, `config/default_forward` and the DKIM selector.
//!
//! Each function takes raw text from /srv and returns a typed value whose textual form is
//! safe inside Exim's lsearch files and Dovecot's passwd-files (no whitespace, colons,
//! quotes, `$`, newlines...), or an error that says what was wrong. No I/O here.

use thiserror::Error;

/// Longest local part RFC 5321 allows.
pub const MAX_LOCAL_PART: usize = 64;

/// Why a mail value from /srv was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MailInvalid {
    /// A mailbox directory name that cannot be a local part.
    #[error("{0:?} is not a valid mailbox name: {1}")]
    LocalPart(String, &'static str),
    /// A quota that is not a size.
    #[error("{0:?} is not a quota (examples: 500M, 1Gi, 0 for none)")]
    Quota(String),
    /// A DKIM selector that is not a DNS label sequence.
    #[error("{0:?} is not a DKIM selector")]
    Selector(String),
}

/// Validates a mailbox directory name as the local part it stands for.
///
/// Accepted: lower-case `a-z`, digits, `.`, `-` and `_`, at most 64 characters, not
/// starting or ending with `.`, no `..`. That is Sympl's rule (no leading dot, none of
/// `@ % ! / |`) made strict: Exim lower-cases local parts before it looks for the
/// directory, so an upper-case directory could never receive mail, and `+` is the suffix
/// separator (`alice+news@`).
pub fn local_part(raw: &str) -> Result<String, MailInvalid> {
    let bad = |why| Err(MailInvalid::LocalPart(raw.to_string(), why));
    if raw.is_empty() {
        return bad("empty");
    }
    if raw.len() > MAX_LOCAL_PART {
        return bad("longer than 64 characters");
    }
    if raw.starts_with('.') {
        return bad("starts with '.'");
    }
    if raw.ends_with('.') {
        return bad("ends with '.'");
    }
    if raw.contains("..") {
        return bad("contains '..'");
    }
    if raw.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("must be lower-case (mail addresses are matched in lower case)");
    }
    if raw.contains('+') {
        return bad("'+' separates an address suffix (alice+news@): not allowed in a mailbox name");
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return bad("only a-z, 0-9, '.', '-' and '_' are allowed");
    }
    Ok(raw.to_string())
}

/// Splits `user@domain` as typed on the command line into a validated local part and the
/// raw domain (validated by the caller with the model's domain rules).
pub fn address(raw: &str) -> Result<(String, String), String> {
    let lower = raw.trim().to_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return Err(format!("{raw:?} is not an address (expected USER@DOMAIN)"));
    };
    let local = local_part(local).map_err(|e| e.to_string())?;
    Ok((local, domain.to_string()))
}

/// Parses a quota as Sympl does (`parse_quota`): a number with an optional unit. `k M G T`
/// are powers of 10, `ki Mi Gi Ti Pi` powers of 2; a trailing `B` is allowed; `0` means
/// no quota. Returns bytes.
pub fn quota(raw: &str) -> Result<u64, MailInvalid> {
    let err = || MailInvalid::Quota(raw.trim().to_string());
    let t = raw.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(err());
    }
    let mult: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        "t" | "T" => 1e12,
        "ki" | "Ki" | "KI" => 1024.0,
        "mi" | "Mi" | "MI" => 1024.0 * 1024.0,
        "gi" | "Gi" | "GI" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "Ti" | "TI" => 1024f64.powi(4),
        "pi" | "Pi" | "PI" => 1024f64.powi(5),
        _ => return Err(err()),
    };
    let n: f64 = num.parse().map_err(|_| err())?;
    let bytes = (n * mult).round();
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(err());
    }
    // In range (checked above), so the conversion is exact enough and cannot overflow.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// One accepted line of `config/aliases`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alias {
    /// The local part that is redirected.
    pub local: String,
    /// Where it goes: `user@domain`, or a bare local part on the same domain.
    pub targets: Vec<String>,
}

/// Parses `config/aliases` (Exim lsearch format, as Sympl reads it): `local: addr, addr`
/// (the colon is optional), `#` comments, continuation lines starting with white space.
/// Returns the aliases and one message per refused line; a refused line never takes the
/// others with it.
///
/// Targets must be plain addresses: pipes (`|cmd`), files (`/path`) and `:include:` are
/// refused (dirhost does not run customer commands from Exim).
pub fn aliases(text: &str) -> (Vec<Alias>, Vec<String>) {
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with('#') || trimmed.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t'])
            && let Some((_, last)) = logical.last_mut()
        {
            last.push(' ');
            last.push_str(trimmed.trim());
            continue;
        }
        logical.push((i + 1, trimmed.to_string()));
    }
    let mut out: Vec<Alias> = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in logical {
        match alias_line(&line) {
            Ok(a) if out.iter().any(|o| o.local == a.local) => {
                problems.push(format!(
                    "config/aliases line {n}: {:?} is listed twice; the first one counts",
                    a.local
                ));
            }
            Ok(a) => out.push(a),
            Err(e) => problems.push(format!("config/aliases line {n}: {e}: line ignored")),
        }
    }
    (out, problems)
}

fn alias_line(line: &str) -> Result<Alias, String> {
    let line = line.trim();
    let end = line
        .find(|c: char| c == ':' || c.is_whitespace())
        .ok_or("no target")?;
    let (key, rest) = line.split_at(end);
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let key = key.to_lowercase();
    let local = local_part(&key).map_err(|e| e.to_string())?;
    let mut targets = Vec::new();
    for t in rest.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
        targets.push(target(t)?);
    }
    if targets.is_empty() {
        return Err("no target".into());
    }
    Ok(Alias { local, targets })
}

/// A forwarding target: `user@domain` or a bare local part. Lower-cased.
fn target(raw: &str) -> Result<String, String> {
    let t = raw.trim().to_lowercase();
    let (local, domain) = match t.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (t.as_str(), None),
    };
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_PART
        && !local.starts_with('.')
        && local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-+=".contains(&b));
    if !local_ok {
        return Err(format!("{raw:?} is not an address"));
    }
    match domain {
        // The domain as Exim matches it: an internationalised one in punycode (the raw
        // UTF-8 form would never route).
        Some(d) => {
            let ascii = crate::model::validate::domain_name(d)
                .map_err(|_| format!("{raw:?} is not an address"))?;
            Ok(format!("{local}@{ascii}"))
        }
        None => Ok(t),
    }
}

/// Checks `config/default_forward` (an Exim forward or filter file). Exim reads dirhost's
/// copy with pipes, files, includes and every filter command that reaches outside the
/// message refused; here we only make sure it is text Exim can read.
pub fn forward_file(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if text.trim().is_empty() {
        return Err("is empty".into());
    }
    Ok(())
}

/// Sympl's DKIM selector rule (`config/dkim`): `false`/`no` disables signing; empty (or
/// `true`/`yes`) uses the first label of the host name (`default` for `localhost` or a
/// host without a usable label); otherwise the first `[a-z0-9-]+(\.[a-z0-9-]+)*` in the
/// file.
pub fn dkim_selector(flag: &crate::model::validate::Flag, hostname: &str) -> Option<String> {
    use crate::model::validate::Flag;
    match flag {
        Flag::Unset | Flag::False => None,
        Flag::True => Some(host_selector(hostname)),
        Flag::Value(v) => Some(first_selector(v).unwrap_or_else(|| host_selector(hostname))),
    }
}

fn host_selector(hostname: &str) -> String {
    let first = hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let ok = !first.is_empty()
        && first != "localhost"
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { first } else { "default".into() }
}

fn first_selector(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let bytes = lower.as_bytes();
    let is_label = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let start = bytes.iter().position(|b| is_label(*b))?;
    let mut end = start;
    loop {
        while end < bytes.len() && is_label(bytes[end]) {
            end += 1;
        }
        // A dot continues the selector only when a label follows it.
        if end + 1 < bytes.len() && bytes[end] == b'.' && is_label(bytes[end + 1]) {
            end += 1;
            continue;
        }
        break;
    }
    let sel = &lower[start..end];
    // Each label is a DNS label (`<selector>._domainkey.<domain>`): at most 63 characters.
    (sel.len() <= 63 * 4 && sel.split('.').all(|l| l.len() <= 63)).then(|| sel.to_string())
}

/// Validates an explicit selector (e.g. from the command line).
pub fn selector(raw: &str) -> Result<String, MailInvalid> {
    match first_selector(raw) {
        Some(s) if s == raw => Ok(s),
        _ => Err(MailInvalid::Selector(raw.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::Flag;

    #[test]
    fn selector_labels_fit_dns() {
        let long = "l".repeat(64);
        assert!(selector(&long).is_err());
        assert_eq!(selector(&"l".repeat(63)).as_deref(), Ok(&*"l".repeat(63)));
        let flag = crate::model::validate::Flag::Value(long);
        assert_eq!(
            dkim_selector(&flag, "mail.example.com").as_deref(),
            Some("mail")
        );
    }

    #[test]
    fn idn_alias_targets_are_punycode() {
        let (a, problems) = aliases("info: bob@bücher.de\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(a[0].targets, ["bob@xn--bcher-kva.de"]);
    }

    #[test]
    fn local_parts() {
        for ok in ["alice", "a", "bob.smith", "x-y_z", "0", "info2"] {
            assert_eq!(local_part(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "", "..", ".", ".hidden", "a..b", "end.", "a/b", "a@b", "a%b", "a!b", "a|b", "Alice",
            "a b", "a+b", "a:b", "a\nb", "a\0b", "é", "a$b",
        ] {
            assert!(local_part(bad).is_err(), "{bad:?}");
        }
        assert!(local_part(&"a".repeat(65)).is_err());
        assert!(local_part(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            address(" Alice@Example.COM "),
            Ok(("alice".into(), "example.com".into()))
        );
        assert!(address("nodomain").is_err());
        assert!(address("../x@example.com").is_err());
        assert!(address("..@example.com").is_err());
    }

    #[test]
    fn quotas_follow_sympl_units() {
        for (raw, want) in [
            ("0", 0),
            ("100", 100),
            ("500M", 500_000_000),
            ("500MB", 500_000_000),
            ("1Gi", 1 << 30),
            ("1.5k", 1500),
            (" 2 Mi\n", 2 << 20),
            ("1T", 1_000_000_000_000),
        ] {
            assert_eq!(quota(raw), Ok(want), "{raw:?}");
        }
        for bad in ["", "M", "-1", "1X", "1.2.3", "lots", "1e9", ".5M", "1 000"] {
            assert!(quota(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn aliases_keep_good_lines() {
        let text = "# sales team\nsales: bob@example.com, carol\nINFO  alice\n\
                    support: bob,\n  dave@other.org\nbad: |/bin/sh\nx/y: bob\n\
                    sales: eve\nempty:\nfile: /etc/passwd\n";
        let (got, problems) = aliases(text);
        assert_eq!(
            got,
            vec![
                Alias {
                    local: "sales".into(),
                    targets: vec!["bob@example.com".into(), "carol".into()]
                },
                Alias {
                    local: "info".into(),
                    targets: vec!["alice".into()]
                },
                Alias {
                    local: "support".into(),
                    targets: vec!["bob".into(), "dave@other.org".into()]
                },
            ]
        );
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("line 6")),
            "{problems:?}"
        );
    }

    #[test]
    fn selectors_follow_sympl() {
        let host = "mail.example.com";
        assert_eq!(dkim_selector(&Flag::Unset, host), None);
        assert_eq!(dkim_selector(&Flag::False, host), None);
        assert_eq!(dkim_selector(&Flag::True, host).as_deref(), Some("mail"));
        assert_eq!(
            dkim_selector(&Flag::True, "localhost").as_deref(),
            Some("default")
        );
        assert_eq!(
            dkim_selector(&Flag::Value("foo\n".into()), host).as_deref(),
            Some("foo")
        );
        assert_eq!(
            dkim_selector(&Flag::Value("  2024.sel-1 rest".into()), host).as_deref(),
            Some("2024.sel-1")
        );
        assert_eq!(
            dkim_selector(&Flag::Value("!!!".into()), host).as_deref(),
            Some("mail")
        );
        assert!(selector("a.b").is_ok() && selector("a b").is_err());
    }
}
