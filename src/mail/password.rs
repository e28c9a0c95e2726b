//! Mailbox passwords: parsing `mailboxes/<local>/password`, recognising the hash formats
//! Dovecot can verify, and making SHA-512-crypt hashes.
//!
//! Accepted: an optional `{CRYPT}` prefix (any case) followed by `$1$` (MD5-crypt), `$5$`
//! (SHA-256-crypt), `$6$` (SHA-512-crypt), `$2a$`/`$2b$`/`$2y$` (bcrypt), `$argon2i$` or
//! `$argon2id$`; or a plaintext password. Anything that starts like one of those hashes but
//! is not well formed is *malformed*, never taken as a plaintext password (a truncated hash
//! must not become the password). Malformed also: empty, several lines, control characters,
//! not UTF-8, another `{SCHEME}` prefix, longer than [`MAX_PASSWORD_FILE`].
//!
//! Secrets never reach a log line or an error message: [`Secret`]'s `Debug` is redacted and
//! every error names the problem, not the text.

use std::fmt;

use anyhow::{Context, Result};

/// Largest password file accepted (bytes).
pub const MAX_PASSWORD_FILE: u64 = 4096;

/// A plaintext password. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A crypt(3)-style scheme Dovecot verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// `$1$`.
    Md5Crypt,
    /// `$5$`.
    Sha256Crypt,
    /// `$6$`.
    Sha512Crypt,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// `$argon2i$`.
    Argon2i,
    /// `$argon2id$`.
    Argon2id,
}

impl Scheme {
    /// Dovecot's name for it, used as the `{SCHEME}` prefix in the passwd-file.
    pub fn dovecot(self) -> &'static str {
        match self {
            Self::Md5Crypt => "MD5-CRYPT",
            Self::Sha256Crypt => "SHA256-CRYPT",
            Self::Sha512Crypt => "SHA512-CRYPT",
            Self::Bcrypt => "BLF-CRYPT",
            Self::Argon2i => "ARGON2I",
            Self::Argon2id => "ARGON2ID",
        }
    }
}

/// What a password file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A hash Dovecot can verify (without any `{CRYPT}` prefix).
    Hash {
        /// Its scheme.
        scheme: Scheme,
        /// The hash string, e.g. `$6$salt$...`.
        hash: String,
    },
    /// A plaintext password.
    Plain(Secret),
}

impl Stored {
    /// The passwd-file field: `{SCHEME}hash`. Plaintext must be hashed first.
    pub fn dovecot_field(&self) -> Option<String> {
        match self {
            Self::Hash { scheme, hash } => Some(format!("{{{}}}{hash}", scheme.dovecot())),
            Self::Plain(_) => None,
        }
    }
}

/// Why a password file cannot be used. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Empty (or only white space).
    #[error("the password file is empty")]
    Empty,
    /// More than one line.
    #[error("the password file has more than one line")]
    MultiLine,
    /// Not UTF-8 text.
    #[error("the password file is not UTF-8 text")]
    NotUtf8,
    /// Contains control characters.
    #[error("the password file contains control characters")]
    Control,
    /// Too long.
    #[error("the password file is longer than {MAX_PASSWORD_FILE} bytes")]
    TooLong,
    /// A `{SCHEME}` other than `{CRYPT}`.
    #[error("unsupported scheme prefix {0} (only {{CRYPT}} is accepted)")]
    Scheme(String),
    /// Looks like a hash of a known scheme but is not well formed.
    #[error("looks like a {0} hash but is not well formed")]
    BadHash(&'static str),
    /// `{CRYPT}` followed by something that is no supported hash.
    #[error("{{CRYPT}} is followed by no supported hash ($1$, $5$, $6$, $2b$/$2y$, $argon2id$)")]
    UnknownCrypt,
}

/// Parses a password file's bytes. One trailing newline (`\n` or `\r\n`) is ignored.
pub fn parse(bytes: &[u8]) -> Result<Stored, Malformed> {
    if bytes.len() as u64 > MAX_PASSWORD_FILE {
        return Err(Malformed::TooLong);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::NotUtf8)?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.contains(['\n', '\r']) {
        return Err(Malformed::MultiLine);
    }
    if text.chars().any(char::is_control) {
        return Err(Malformed::Control);
    }
    if text.trim().is_empty() {
        return Err(Malformed::Empty);
    }
    let (prefixed, rest) = match text.strip_prefix('{') {
        Some(after) => match after.split_once('}') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("crypt") => (true, rest),
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                return Err(Malformed::Scheme(format!("{{{scheme}}}")));
            }
            _ => (false, text),
        },
        None => (false, text),
    };
    match classify(rest)? {
        Some(scheme) => Ok(Stored::Hash {
            scheme,
            hash: rest.to_string(),
        }),
        None if prefixed => Err(Malformed::UnknownCrypt),
        None => Ok(Stored::Plain(Secret(text.to_string()))),
    }
}

const CRYPT64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn all_crypt64(s: &str) -> bool {
    s.bytes().all(|b| CRYPT64.contains(&b))
}

fn all_b64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `Ok(Some)`: a well-formed hash; `Ok(None)`: not hash-like (plaintext); `Err`: starts like a
/// known hash but is broken.
fn classify(s: &str) -> Result<Option<Scheme>, Malformed> {
    if let Some(rest) = s.strip_prefix("$1$") {
        let ok = matches!(rest.split_once('$'), Some((salt, hash))
            if salt.len() <= 8 && all_crypt64(salt) && hash.len() == 22 && all_crypt64(hash));
        return ok
            .then_some(Some(Scheme::Md5Crypt))
            .ok_or(Malformed::BadHash("MD5-crypt"));
    }
    for (prefix, len, scheme, name) in [
        ("$5$", 43, Scheme::Sha256Crypt, "SHA-256-crypt"),
        ("$6$", 86, Scheme::Sha512Crypt, "SHA-512-crypt"),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let rest = match rest.strip_prefix("rounds=") {
                Some(r) => match r.split_once('$') {
                    Some((n, after))
                        if n.parse::<u32>()
                            .is_ok_and(|n| (1000..=999_999_999).contains(&n)) =>
                    {
                        after
                    }
                    _ => return Err(Malformed::BadHash(name)),
                },
                None => rest,
            };
            let ok = matches!(rest.split_once('$'), Some((salt, hash))
                if salt.len() <= 16 && !salt.is_empty() && all_crypt64(salt)
                    && hash.len() == len && all_crypt64(hash));
            return ok.then_some(Some(scheme)).ok_or(Malformed::BadHash(name));
        }
    }
    for p in ["$2a$", "$2b$", "$2y$"] {
        if let Some(rest) = s.strip_prefix(p) {
            let ok = matches!(rest.split_once('$'), Some((cost, tail))
                if cost.len() == 2 && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
                    && tail.len() == 53 && all_crypt64(tail));
            return ok
                .then_some(Some(Scheme::Bcrypt))
                .ok_or(Malformed::BadHash("bcrypt"));
        }
    }
    for (p, scheme) in [
        ("$argon2id$", Scheme::Argon2id),
        ("$argon2i$", Scheme::Argon2i),
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            let parts: Vec<&str> = rest.split('$').collect();
            let params_ok = |p: &str| {
                let kv: Vec<&str> = p.split(',').collect();
                kv.len() == 3
                    && ["m=", "t=", "p="].iter().zip(&kv).all(|(k, v)| {
                        v.strip_prefix(k)
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    })
            };
            let ok = match parts.as_slice() {
                [v, params, salt, hash] => {
                    v.strip_prefix("v=")
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
                        && params_ok(params)
                        && all_b64(salt)
                        && all_b64(hash)
                }
                [params, salt, hash] => params_ok(params) && all_b64(salt) && all_b64(hash),
                _ => false,
            };
            return ok
                .then_some(Some(scheme))
                .ok_or(Malformed::BadHash("Argon2"));
        }
    }
    if s.starts_with("$2") || s.starts_with("$argon2") {
        return Err(Malformed::BadHash("crypt"));
    }
    Ok(None)
}

/// A fresh SHA-512-crypt hash (`$6$<16 salt chars>$<86 chars>`, 5000 rounds, as glibc's
/// default and Sympl's `crypt_password`).
pub fn sha512_crypt(password: &Secret) -> Result<String> {
    let rng = ring::rand::SystemRandom::new();
    let mut raw = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut raw)
        .map_err(|_| anyhow::anyhow!("no random numbers for a password salt"))?;
    let salt: String = raw
        .iter()
        .map(|b| char::from(CRYPT64[usize::from(*b) % CRYPT64.len()]))
        .collect();
    sha512_with_salt(password, &salt, None)
}

fn sha512_with_salt(password: &Secret, salt: &str, rounds: Option<u32>) -> Result<String> {
    let n = rounds.unwrap_or(5000);
    let params = sha_crypt::Sha512Params::new(n as usize)
        .map_err(|e| anyhow::anyhow!("bad SHA-512-crypt rounds {n}: {e:?}"))?;
    let hash = sha_crypt::sha512_crypt_b64(password.expose().as_bytes(), salt.as_bytes(), &params)
        .map_err(|e| anyhow::anyhow!("SHA-512-crypt failed: {e:?}"))
        .context("failed to hash a password")?;
    Ok(match rounds {
        Some(r) => format!("$6$rounds={r}${salt}${hash}"),
        None => format!("$6${salt}${hash}"),
    })
}

/// Whether `password` matches the SHA-512-crypt `hash` (other schemes: `false`).
pub fn verify_sha512(password: &Secret, hash: &str) -> bool {
    let Some(rest) = hash.strip_prefix("$6$") else {
        return false;
    };
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => match r
            .split_once('$')
            .and_then(|(n, a)| Some((n.parse().ok()?, a)))
        {
            Some((n, after)) => (Some(n), after),
            None => return false,
        },
        None => (None, rest),
    };
    let Some((salt, _)) = rest.split_once('$') else {
        return false;
    };
    match sha512_with_salt(password, salt, rounds) {
        // Not secret-dependent timing worth hiding (the hash is ours), but compare fully.
        Ok(again) => {
            again.len() == hash.len()
                && again
                    .bytes()
                    .zip(hash.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }
        Err(_) => false,
    }
}

/// Checks a password typed on the command line before it is stored.
pub fn check_new(password: &str) -> Result<Secret> {
    let p = password
        .strip_suffix("\r\n")
        .or_else(|| password.strip_suffix('\n'))
        .unwrap_or(password);
    anyhow::ensure!(!p.is_empty(), "the password is empty");
    anyhow::ensure!(
        !p.chars().any(char::is_control),
        "the password contains control characters (or more than one line)"
    );
    anyhow::ensure!(
        p.chars().count() >= 8,
        "the password is shorter than 8 characters"
    );
    anyhow::ensure!(
        p.len() as u64 <= MAX_PASSWORD_FILE / 2,
        "the password is too long"
    );
    let s = Secret(p.to_string());
    anyhow::ensure!(
        matches!(parse(p.as_bytes()), Ok(Stored::Plain(_))),
        "the password looks like a password hash; type the password itself"
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt foo`.
    const SHA512: &str = "$6$saltsalt$Jv6SqkiPFOQnGqKahOnGY51ChXzWzziq8eFqy/vxBYbZHFIirMkOAW8pQzy8xB.kPhS02cevoES8uYosUddER.";

    #[test]
    fn recognises_every_accepted_format() {
        let cases = [
            (SHA512, Scheme::Sha512Crypt),
            ("$1$saltsalt$dO7qccEKgT3tTR4VzckcV.", Scheme::Md5Crypt),
            (
                "$5$saltstring$cr2CvCFIKoWzPbNE/zwPZlK4pWt7ZmE.Khxbgywiq0A",
                Scheme::Sha256Crypt,
            ),
            (
                "$6$rounds=10000$saltsalt$Jv6SqkiPFOQnGqKahOnGY51ChXzWzziq8eFqy/vxBYbZHFIirMkOAW8pQzy8xB.kPhS02cevoES8uYosUddER.",
                Scheme::Sha512Crypt,
            ),
            (
                "$2y$05$DdrldNb1KQXoNpU3uj1ggOIoXyCBDN3S1sjjfLkuSO8s2ZZKMZiy6",
                Scheme::Bcrypt,
            ),
            (
                "$2b$12$DdrldNb1KQXoNpU3uj1ggOIoXyCBDN3S1sjjfLkuSO8s2ZZKMZiy6",
                Scheme::Bcrypt,
            ),
            (
                "$argon2id$v=19$m=65536,t=3,p=1$wAHwir9RffoluA4ZoPSQ4A$/TQKphXo1oAKW0snmMb7QSB8AIZE6OjUu2NLLQYYpaI",
                Scheme::Argon2id,
            ),
            (
                "$argon2i$v=19$m=65536,t=3,p=1$wAHwir9RffoluA4ZoPSQ4A$/TQKphXo1oAKW0snmMb7QSB8AIZE6OjUu2NLLQYYpaI",
                Scheme::Argon2i,
            ),
        ];
        for (hash, scheme) in cases {
            for text in [
                hash.to_string(),
                format!("{{CRYPT}}{hash}\n"),
                format!("{{crypt}}{hash}\r\n"),
            ] {
                assert_eq!(
                    parse(text.as_bytes()),
                    Ok(Stored::Hash {
                        scheme,
                        hash: hash.into()
                    }),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn plaintext_and_malformed() {
        for plain in [
            "foo",
            "correct horse battery staple",
            "ábë",
            "$notahash",
            "{x",
        ] {
            assert_eq!(
                parse(plain.as_bytes()),
                Ok(Stored::Plain(Secret(plain.into()))),
                "{plain}"
            );
        }
        let bad: Vec<(&[u8], Malformed)> = vec![
            (b"", Malformed::Empty),
            (b"\n", Malformed::Empty),
            (b"   ", Malformed::Empty),
            (b"one\ntwo", Malformed::MultiLine),
            (b"one\n\n", Malformed::MultiLine),
            (b"a\tb", Malformed::Control),
            (b"\xff\xfe", Malformed::NotUtf8),
            (b"$6$salt$short", Malformed::BadHash("SHA-512-crypt")),
            (b"{CRYPT}$1$x", Malformed::BadHash("MD5-crypt")),
            (b"$2y$05$tooshort", Malformed::BadHash("bcrypt")),
            (b"$argon2id$v=19$m=1$x$y", Malformed::BadHash("Argon2")),
            (b"{CRYPT}plaintext", Malformed::UnknownCrypt),
            (
                b"{SHA512-CRYPT}$6$x",
                Malformed::Scheme("{SHA512-CRYPT}".into()),
            ),
        ];
        for (bytes, want) in bad {
            assert_eq!(parse(bytes), Err(want), "{bytes:?}");
        }
        assert_eq!(parse(&[b'a'; 5000]), Err(Malformed::TooLong));
        // Errors never carry the text.
        let e = parse(b"secret\nsecret2").unwrap_err().to_string();
        assert!(!e.contains("secret2"));
        assert_eq!(format!("{:?}", Secret("pw".into())), "Secret(<redacted>)");
    }

    #[test]
    fn sha512_round_trip_and_known_vector() {
        let foo = Secret("foo".into());
        assert_eq!(sha512_with_salt(&foo, "saltsalt", None).unwrap(), SHA512);
        assert!(verify_sha512(&foo, SHA512));
        let fresh = sha512_crypt(&foo).unwrap();
        assert!(matches!(
            parse(fresh.as_bytes()),
            Ok(Stored::Hash {
                scheme: Scheme::Sha512Crypt,
                ..
            })
        ));
        assert!(verify_sha512(&foo, &fresh));
        assert!(!verify_sha512(&Secret("bar".into()), &fresh));
        assert!(!verify_sha512(&foo, "$1$saltsalt$dO7qccEKgT3tTR4VzckcV."));
        assert_ne!(fresh, sha512_crypt(&foo).unwrap(), "salts must differ");
        // The known glibc vector for "Hello world!" with rounds=10000.
        let hw = Secret("Hello world!".into());
        assert!(verify_sha512(
            &hw,
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
        ));
    }

    #[test]
    fn new_passwords() {
        assert!(check_new("longenough\n").is_ok());
        assert!(check_new("short").is_err());
        assert!(check_new("two\nlines-here").is_err());
        assert!(check_new("").is_err());
        assert!(check_new(SHA512).is_err());
    }
}
