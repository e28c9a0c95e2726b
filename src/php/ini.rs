//! The owner's `config/php.ini`: a short allow-list of PHP settings with validated values.
//!
//! Owns the parser and the allow-list ([`ALLOWED`]): which keys an owner may set, the range
//! or form each value must have, and whether dirhost renders it as `php_admin_value` (a
//! limit that scripts, `ini_set()` and `.user.ini` cannot change) or `php_value` (a
//! preference the site's own code may still change at run time).
//!
//! Must not: pass anything through. A line that is not a comment, a blank, a `[PHP]` header
//! or `key = value` with an allowed key and a valid value refuses the whole file, with the
//! line number and the reason. Values come back in a canonical form that is safe inside a
//! PHP-FPM pool file (no whitespace, quotes, `;`, `=`, brackets or control characters).
//! Pure functions: no I/O here.

use std::collections::BTreeMap;

use serde::Serialize;

/// How a value is checked and canonicalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A byte size as PHP writes it (`128M`, `2G`, `65536`), within bytes `min..=max`.
    Size { min: u64, max: u64 },
    /// A whole number within `min..=max`.
    Int { min: u64, max: u64 },
    /// On or off (`on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0`).
    Bool,
    /// An IANA time zone name such as `Europe/Berlin` or `UTC`.
    TimeZone,
}

/// One allowed setting.
#[derive(Debug, Clone, Copy)]
struct Rule {
    key: &'static str,
    form: Form,
    /// `php_admin_value`: scripts cannot raise it.
    admin: bool,
}

const K: u64 = 1024;
const M: u64 = 1024 * K;
const G: u64 = 1024 * M;

/// Every key an owner may set, with its form and bounds.
const ALLOWED: &[Rule] = &[
    Rule {
        key: "memory_limit",
        form: Form::Size {
            min: 16 * M,
            max: 2 * G,
        },
        admin: true,
    },
    Rule {
        key: "upload_max_filesize",
        form: Form::Size { min: K, max: 2 * G },
        admin: true,
    },
    Rule {
        key: "post_max_size",
        form: Form::Size { min: K, max: 2 * G },
        admin: true,
    },
    Rule {
        key: "max_execution_time",
        form: Form::Int { min: 1, max: 3600 },
        admin: true,
    },
    Rule {
        key: "max_input_time",
        form: Form::Int { min: 1, max: 3600 },
        admin: true,
    },
    Rule {
        key: "max_input_vars",
        form: Form::Int {
            min: 100,
            max: 100_000,
        },
        admin: true,
    },
    Rule {
        key: "max_file_uploads",
        form: Form::Int { min: 1, max: 1000 },
        admin: true,
    },
    Rule {
        key: "session.gc_maxlifetime",
        form: Form::Int {
            min: 60,
            max: 30 * 24 * 3600,
        },
        admin: true,
    },
    Rule {
        key: "display_errors",
        form: Form::Bool,
        admin: false,
    },
    Rule {
        key: "log_errors",
        form: Form::Bool,
        admin: false,
    },
    Rule {
        key: "short_open_tag",
        form: Form::Bool,
        admin: false,
    },
    Rule {
        key: "date.timezone",
        form: Form::TimeZone,
        admin: false,
    },
];

/// The keys an owner may set, for messages and documentation.
pub fn allowed_keys() -> Vec<&'static str> {
    ALLOWED.iter().map(|r| r.key).collect()
}

/// One accepted setting, ready for a pool file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The PHP directive, e.g. `memory_limit`.
    pub key: String,
    /// Canonical value, e.g. `256M`, `on`, `Europe/Berlin`.
    pub value: String,
    /// Rendered as `php_admin_value` (true) or `php_value` (false).
    pub admin: bool,
}

/// Why a `config/php.ini` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config/php.ini line {line}: {reason}")]
pub struct Refused {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong, in words the owner can act on.
    pub reason: String,
}

/// Parses `config/php.ini`. `Ok`: the settings in key order. `Err`: the first problem; none
/// of the file applies.
pub fn parse(bytes: &[u8]) -> Result<Vec<Setting>, Refused> {
    let text = std::str::from_utf8(bytes).map_err(|_| Refused {
        line: 0,
        reason: "not UTF-8 text".into(),
    })?;
    let mut out: BTreeMap<&str, Setting> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let refuse = |reason: String| Refused { line, reason };
        let l = raw.trim();
        if l.is_empty() || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') {
            if l.eq_ignore_ascii_case("[php]") {
                continue;
            }
            return Err(refuse(format!(
                "section {l:?}: only settings (and an optional [PHP] header) are read here"
            )));
        }
        let Some((key, value)) = l.split_once('=') else {
            return Err(refuse(format!("{l:?} is not `setting = value`")));
        };
        let key = key.trim();
        let Some(rule) = ALLOWED.iter().find(|r| r.key == key) else {
            return Err(refuse(format!(
                "{key:?} cannot be set here; allowed: {}",
                allowed_keys().join(", ")
            )));
        };
        let value = unquote(value).map_err(refuse)?;
        let value = check(rule.form, value).map_err(|e| refuse(format!("{key}: {e}")))?;
        if out.contains_key(rule.key) {
            return Err(refuse(format!("{key} is set twice")));
        }
        out.insert(
            rule.key,
            Setting {
                key: rule.key.to_string(),
                value,
                admin: rule.admin,
            },
        );
    }
    Ok(out.into_values().collect())
}

/// The value part of `key = value`: trimmed, one pair of double quotes removed, a trailing
/// `; comment` after an unquoted value dropped.
fn unquote(v: &str) -> Result<&str, String> {
    let v = v.trim();
    if let Some(rest) = v.strip_prefix('"') {
        let Some(end) = rest.find('"') else {
            return Err("unterminated quote".into());
        };
        let after = rest[end + 1..].trim();
        if !(after.is_empty() || after.starts_with(';')) {
            return Err(format!("unexpected {after:?} after the quoted value"));
        }
        return Ok(&rest[..end]);
    }
    Ok(v.split_once(';').map_or(v, |(a, _)| a).trim())
}

fn check(form: Form, v: &str) -> Result<String, String> {
    match form {
        Form::Size { min, max } => {
            let (digits, unit) = match v.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], Some(c.to_ascii_uppercase())),
                _ => (v, None),
            };
            let mult = match unit {
                None => 1,
                Some('K') => K,
                Some('M') => M,
                Some('G') => G,
                Some(_) => return Err(format!("{v:?} is not a size like 128M (units K, M, G)")),
            };
            let n = number(digits).ok_or_else(|| format!("{v:?} is not a size like 128M"))?;
            let bytes = n
                .checked_mul(mult)
                .ok_or_else(|| format!("{v:?} is too large"))?;
            if !(min..=max).contains(&bytes) {
                return Err(format!(
                    "{v} is out of range ({} to {})",
                    human(min),
                    human(max)
                ));
            }
            Ok(unit.map_or_else(|| n.to_string(), |u| format!("{n}{u}")))
        }
        Form::Int { min, max } => {
            let n = number(v).ok_or_else(|| format!("{v:?} is not a whole number"))?;
            if !(min..=max).contains(&n) {
                return Err(format!("{n} is out of range ({min} to {max})"));
            }
            Ok(n.to_string())
        }
        Form::Bool => match v.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok("on".into()),
            "off" | "false" | "no" | "0" | "" => Ok("off".into()),
            _ => Err(format!("{v:?} is not on or off")),
        },
        Form::TimeZone => {
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
                && v.split('/')
                    .all(|part| part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()));
            if ok {
                Ok(v.to_string())
            } else {
                Err(format!("{v:?} is not a time zone name like Europe/London"))
            }
        }
    }
}

/// Plain decimal digits (1 to 12 of them), no sign.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn human(bytes: u64) -> String {
    for (unit, size) in [("G", G), ("M", M), ("K", K)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<(String, String, bool), String> {
        match parse(text.as_bytes()) {
            Ok(v) if v.len() == 1 => Ok((v[0].key.clone(), v[0].value.clone(), v[0].admin)),
            Ok(v) => Err(format!("{} settings", v.len())),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn accepts_allowed_settings_in_canonical_form() {
        for (text, key, value, admin) in [
            ("memory_limit = 256M", "memory_limit", "256M", true),
            ("memory_limit=256m", "memory_limit", "256M", true),
            ("memory_limit = \"1G\"", "memory_limit", "1G", true),
            (
                "memory_limit = 134217728",
                "memory_limit",
                "134217728",
                true,
            ),
            (
                "  memory_limit = 64M ; comment",
                "memory_limit",
                "64M",
                true,
            ),
            (
                "upload_max_filesize = 20M",
                "upload_max_filesize",
                "20M",
                true,
            ),
            ("post_max_size = 2G", "post_max_size", "2G", true),
            (
                "max_execution_time = 120",
                "max_execution_time",
                "120",
                true,
            ),
            ("max_input_time = 60", "max_input_time", "60", true),
            ("max_input_vars = 5000", "max_input_vars", "5000", true),
            ("max_file_uploads = 50", "max_file_uploads", "50", true),
            (
                "session.gc_maxlifetime = 86400",
                "session.gc_maxlifetime",
                "86400",
                true,
            ),
            ("display_errors = On", "display_errors", "on", false),
            ("display_errors = 0", "display_errors", "off", false),
            ("log_errors = yes", "log_errors", "on", false),
            ("short_open_tag = Off", "short_open_tag", "off", false),
            (
                "date.timezone = Europe/Berlin",
                "date.timezone",
                "Europe/Berlin",
                false,
            ),
            (
                "date.timezone = \"America/Argentina/Buenos_Aires\"",
                "date.timezone",
                "America/Argentina/Buenos_Aires",
                false,
            ),
            (
                "date.timezone = Etc/GMT+5",
                "date.timezone",
                "Etc/GMT+5",
                false,
            ),
            ("date.timezone = UTC", "date.timezone", "UTC", false),
        ] {
            assert_eq!(
                one(text),
                Ok((key.to_string(), value.to_string(), admin)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_anything_else() {
        for (text, why) in [
            ("allow_url_include = On", "cannot be set here"),
            ("open_basedir = /", "cannot be set here"),
            ("disable_functions =", "cannot be set here"),
            ("auto_prepend_file = /tmp/x.php", "cannot be set here"),
            ("Memory_Limit = 64M", "cannot be set here"),
            ("memory_limit = -1", "not a size"),
            ("memory_limit = 8M", "out of range"),
            ("memory_limit = 3G", "out of range"),
            ("memory_limit = 99999999999999999999", "not a size"),
            ("memory_limit = 128T", "units"),
            ("memory_limit = 128 M", "not a size"),
            ("memory_limit = 128M\"", "not a size"),
            ("memory_limit = \"128M", "unterminated quote"),
            ("memory_limit = \"128M\" x", "after the quoted value"),
            ("max_execution_time = 0", "out of range"),
            ("max_execution_time = 1e3", "not a whole number"),
            ("max_execution_time = +5", "not a whole number"),
            ("display_errors = stderr", "not on or off"),
            ("date.timezone = ../../etc/passwd", "time zone"),
            ("date.timezone = Europe/Ber lin", "time zone"),
            ("date.timezone = \"Europe/Berlin\nx\"", "unterminated"),
            ("date.timezone = Europe/${HOME}", "time zone"),
            ("date.timezone = /Europe", "time zone"),
            ("[HOST=example.com]", "section"),
            ("memory_limit", "is not `setting = value`"),
            ("memory_limit = 64M\nmemory_limit = 128M", "set twice"),
            ("# memory_limit = 64M", "cannot be set here"),
        ] {
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.starts_with("config/php.ini line "), "{e}");
        }
        assert!(parse(b"\xff").unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn whole_files() {
        let text = "; my settings\n[PHP]\n\nmemory_limit = 256M\ndate.timezone = UTC\n";
        let s = parse(text.as_bytes()).unwrap();
        let keys: Vec<&str> = s.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["date.timezone", "memory_limit"]);
        assert_eq!(parse(b"").unwrap(), Vec::new());
        let e = parse(b"memory_limit = 256M\n\nexpose_php = On\n").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn canonical_values_are_safe_in_a_pool_file() {
        for r in ALLOWED {
            assert!(
                r.key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'),
                "{}",
                r.key
            );
        }
        // Every accepted value is made of characters that need no quoting in an ini file.
        for text in [
            "memory_limit = \"512m\"",
            "date.timezone = Etc/GMT-14",
            "display_errors = TRUE",
        ] {
            for s in parse(text.as_bytes()).unwrap() {
                assert!(
                    s.value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b)),
                    "{s:?}"
                );
            }
        }
    }
}
