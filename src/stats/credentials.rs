//! The owner's stats credentials file, `config/stats-password`: a pure parser.
//!
//! Format: one `user:secret` per line. `secret` is either a bcrypt hash (`$2y$`, `$2b$` or
//! `$2a$`, as `htpasswd -B` or `dirhost stats password` writes) or a plaintext password.
//! Blank lines and lines starting with `#` are ignored; spaces and tabs around a line are
//! ignored (not inside it); CRLF line ends are fine.
//!
//! Anything else refuses the whole file (never half-understood): a user name outside
//! `[A-Za-z0-9._@-]{1,64}`, a repeated user, an empty password, a plaintext longer than 72
//! bytes (bcrypt ignores the rest) or with control characters, a secret that looks like a
//! hash of another scheme (`$apr1$`, `{SHA}`, `$6$`...) or a malformed bcrypt hash, invalid
//! UTF-8, more than [`MAX_USERS`] entries. Errors name the line, never its secret.

use std::fmt;

/// Most entries a file may hold.
pub const MAX_USERS: usize = 100;
/// Longest user name.
pub const MAX_USER: usize = 64;
/// bcrypt uses at most 72 bytes of a password.
pub const MAX_PLAIN: usize = 72;

/// One entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name (safe in an htpasswd line and a log message).
    pub user: String,
    /// The password or its hash.
    pub secret: Secret,
}

/// A password as the owner wrote it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A bcrypt hash, normalised to the `$2y$` prefix Apache understands (`$2b$` is the same
    /// algorithm).
    Bcrypt(String),
    /// A plaintext password: hashed with bcrypt before Apache sees it.
    Plain(String),
}

// Secrets never reach a log through Debug.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bcrypt(_) => f.write_str("Bcrypt(..)"),
            Self::Plain(p) => write!(f, "Plain({} bytes)", p.len()),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret {
            Secret::Bcrypt(_) => "bcrypt",
            Secret::Plain(_) => "plaintext",
        };
        write!(f, "Credential({}, {kind})", self.user)
    }
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredError {
    #[error("line {0}: not valid UTF-8")]
    NotUtf8(usize),
    #[error("line {0}: expected user:password")]
    NoColon(usize),
    #[error("line {0}: the user name must be 1-{MAX_USER} of A-Z a-z 0-9 . _ @ -")]
    BadUser(usize),
    #[error("line {line}: user {user} appears twice")]
    Duplicate { line: usize, user: String },
    #[error("line {0}: the password is empty")]
    EmptyPassword(usize),
    #[error(
        "line {0}: a plaintext password may be at most {MAX_PLAIN} bytes (bcrypt ignores the rest)"
    )]
    TooLong(usize),
    #[error("line {0}: the password contains a control character")]
    Control(usize),
    #[error(
        "line {0}: looks like a password hash dirhost does not accept: use a bcrypt hash ($2y$, from `htpasswd -nB user`) or the plaintext password"
    )]
    OtherHash(usize),
    #[error("line {0}: a malformed bcrypt hash")]
    BadBcrypt(usize),
    #[error("more than {MAX_USERS} users")]
    TooMany,
    #[error("no user:password line")]
    Empty,
}

/// Parses the file's bytes. At least one entry is required.
pub fn parse(bytes: &[u8]) -> Result<Vec<Credential>, CredError> {
    let mut out: Vec<Credential> = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let line = std::str::from_utf8(raw).map_err(|_| CredError::NotUtf8(n))?;
        let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, secret) = line.split_once(':').ok_or(CredError::NoColon(n))?;
        if !valid_user(user) {
            return Err(CredError::BadUser(n));
        }
        if out.iter().any(|c| c.user == user) {
            return Err(CredError::Duplicate {
                line: n,
                user: user.to_string(),
            });
        }
        let secret = parse_secret(secret, n)?;
        if out.len() == MAX_USERS {
            return Err(CredError::TooMany);
        }
        out.push(Credential {
            user: user.to_string(),
            secret,
        });
    }
    if out.is_empty() {
        return Err(CredError::Empty);
    }
    Ok(out)
}

/// A user name that is safe in an htpasswd file, a URL and a log line.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

fn parse_secret(s: &str, n: usize) -> Result<Secret, CredError> {
    if s.is_empty() {
        return Err(CredError::EmptyPassword(n));
    }
    if let Some(rest) = s.strip_prefix("$2") {
        return bcrypt(rest)
            .map(Secret::Bcrypt)
            .ok_or(CredError::BadBcrypt(n));
    }
    const OTHER: &[&str] = &[
        "$apr1$", "$1$", "$5$", "$6$", "$y$", "$7$", "{SHA}", "{SSHA}",
    ];
    if OTHER.iter().any(|p| s.starts_with(p)) {
        return Err(CredError::OtherHash(n));
    }
    check_plain(s).map_err(|e| e.at(n))?;
    Ok(Secret::Plain(s.to_string()))
}

/// Problems with a plaintext password, without a line number (the CLI checks a typed one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainError {
    Empty,
    TooLong,
    Control,
}

impl PlainError {
    fn at(self, n: usize) -> CredError {
        match self {
            Self::Empty => CredError::EmptyPassword(n),
            Self::TooLong => CredError::TooLong(n),
            Self::Control => CredError::Control(n),
        }
    }
}

impl fmt::Display for PlainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the password is empty",
            Self::TooLong => "the password is longer than 72 bytes (bcrypt ignores the rest)",
            Self::Control => "the password contains a control character",
        })
    }
}

/// A plaintext password dirhost accepts.
pub fn check_plain(s: &str) -> Result<(), PlainError> {
    if s.is_empty() {
        return Err(PlainError::Empty);
    }
    if s.len() > MAX_PLAIN {
        return Err(PlainError::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(PlainError::Control);
    }
    Ok(())
}

/// `rest` is a bcrypt hash after its `$2`: `y$NN$` + 53 characters of bcrypt's base64.
/// Returns the whole hash with a `$2y$` or `$2a$` prefix.
fn bcrypt(rest: &str) -> Option<String> {
    let b = rest.as_bytes();
    let variant = *b.first()?;
    if !matches!(variant, b'a' | b'b' | b'y') || b.get(1) != Some(&b'$') {
        return None;
    }
    let cost = rest.get(2..4)?;
    if !cost.bytes().all(|c| c.is_ascii_digit()) || b.get(4) != Some(&b'$') {
        return None;
    }
    let cost: u32 = cost.parse().ok()?;
    if !(4..=31).contains(&cost) {
        return None;
    }
    let body = rest.get(5..)?;
    if body.len() != 53
        || !body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/')
    {
        return None;
    }
    let prefix = if variant == b'a' { "$2a$" } else { "$2y$" };
    Some(format!("{prefix}{cost:02}${body}"))
}

/// The htpasswd line of a user whose secret is a hash.
pub fn htpasswd_line(user: &str, hash: &str) -> String {
    format!("{user}:{hash}\n")
}

/// Replaces (or adds) `user`'s entry in the file `text`, keeping every other line as it
/// was. For `dirhost stats password`.
pub fn set_user(text: &str, user: &str, hash: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        let t = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if t.split_once(':').is_some_and(|(u, _)| u == user) {
            if !done {
                out.push_str(&htpasswd_line(user, hash));
                done = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        out.push_str(&htpasswd_line(user, hash));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "$2y$05$SFXC/3qgXTDK1eoeMKOiJuX93pHthgZzGam9ZrMbzxlCu4v/mYgdq";

    fn users(text: &str) -> Vec<(String, Secret)> {
        parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|c| (c.user, c.secret))
            .collect()
    }

    #[test]
    fn plain_and_bcrypt_lines() {
        let text = format!("# stats users\nalice:s3cret pass\r\n\n  bob:{H}  \ncarol@x.org:p:w\n");
        assert_eq!(
            users(&text),
            vec![
                ("alice".into(), Secret::Plain("s3cret pass".into())),
                ("bob".into(), Secret::Bcrypt(H.into())),
                ("carol@x.org".into(), Secret::Plain("p:w".into())),
            ]
        );
        // $2b$ is the same algorithm as $2y$: normalised; $2a$ kept.
        let b = H.replacen("$2y$", "$2b$", 1);
        assert_eq!(
            users(&format!("u:{b}")),
            vec![("u".into(), Secret::Bcrypt(H.into()))]
        );
        let a = H.replacen("$2y$", "$2a$", 1);
        assert_eq!(
            users(&format!("u:{a}")),
            vec![("u".into(), Secret::Bcrypt(a.clone()))]
        );
    }

    #[test]
    fn refusals_name_the_line_and_never_the_secret() {
        let long = "x".repeat(73);
        let cases: Vec<(String, CredError)> = vec![
            ("".into(), CredError::Empty),
            ("# only a comment\n\n".into(), CredError::Empty),
            ("alice\n".into(), CredError::NoColon(1)),
            ("ok:pw\n:pw\n".into(), CredError::BadUser(2)),
            ("al ice:pw".into(), CredError::BadUser(1)),
            ("al/ice:pw".into(), CredError::BadUser(1)),
            (format!("{}:pw", "u".repeat(65)), CredError::BadUser(1)),
            ("bob:".into(), CredError::EmptyPassword(1)),
            (format!("bob:{long}"), CredError::TooLong(1)),
            ("bob:a\u{7}b".into(), CredError::Control(1)),
            ("bob:$apr1$abc$def".into(), CredError::OtherHash(1)),
            ("bob:{SHA}abc=".into(), CredError::OtherHash(1)),
            ("bob:$6$salt$hash".into(), CredError::OtherHash(1)),
            ("bob:$2y$10$short".into(), CredError::BadBcrypt(1)),
            (
                format!("bob:{}", H.replacen("$05$", "$03$", 1)),
                CredError::BadBcrypt(1),
            ),
            (
                format!("bob:{}", H.replacen("$2y$", "$2x$", 1)),
                CredError::BadBcrypt(1),
            ),
            (
                format!("bob:{}!", &H[..H.len() - 1]),
                CredError::BadBcrypt(1),
            ),
            (
                "bob:one\nbob:two".into(),
                CredError::Duplicate {
                    line: 2,
                    user: "bob".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let got = parse(text.as_bytes()).unwrap_err();
            assert_eq!(got, want, "{text:?}");
            let msg = got.to_string();
            for secret in ["pw", "one", "two", "abc", "salt"] {
                if text.contains(secret) && !matches!(got, CredError::Duplicate { .. }) {
                    assert!(!msg.contains(&format!(":{secret}")), "{msg}");
                }
            }
        }
        assert_eq!(
            parse(b"ok:pw\nbad:\xff\xfe").unwrap_err(),
            CredError::NotUtf8(2)
        );
        let many: String = (0..=MAX_USERS).map(|i| format!("u{i}:pw\n")).collect();
        assert_eq!(parse(many.as_bytes()).unwrap_err(), CredError::TooMany);
    }

    #[test]
    fn debug_hides_secrets() {
        let c = &parse(b"alice:hunter22").unwrap()[0];
        assert!(!format!("{c:?}").contains("hunter22"));
    }

    #[test]
    fn set_user_replaces_or_appends() {
        let text = "# mine\nalice:old\nbob:pw\n";
        assert_eq!(
            set_user(text, "alice", H),
            format!("# mine\nalice:{H}\nbob:pw\n")
        );
        assert_eq!(set_user(text, "carol", H), format!("{text}carol:{H}\n"));
        assert_eq!(set_user("", "carol", H), format!("carol:{H}\n"));
        // The result parses.
        assert_eq!(
            parse(set_user(text, "alice", H).as_bytes()).unwrap().len(),
            2
        );
    }

    /// Whatever bytes come in, parse returns (no panic) and everything it accepts is safe
    /// in an htpasswd line.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let alphabet = b"ab:$2y05./\n\r\t #{}\x00\xff\xc3\xa9AZ09@-_";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            if let Ok(creds) = parse(&bytes) {
                for c in creds {
                    assert!(valid_user(&c.user));
                    if let Secret::Plain(p) = &c.secret {
                        assert!(!p.contains('\n') && check_plain(p).is_ok());
                    }
                }
            }
        }
    }
}
