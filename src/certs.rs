//! Certificate material that customers (`/srv/<domain>/config/ssl/...`) or the ACME CA gave us.
//!
//! This module owns parsing and checking it: PEM parsing, facts about a leaf certificate,
//! private-key/certificate matching, host-name coverage, the checks a set must pass before
//! Apache may load it, chain validation, and re-encoding as normalized PEM.
//!
//! Everything here is a pure function over bytes. It must not touch files, the network or the
//! clock: callers read the files (and bound their size), pass `now`, and write the results. All
//! input is treated as hostile; failures are [`CertError`] values with messages a customer can
//! act on, never panics.
//!
//! Crypto is *ring* only: directly for private keys, and through `rustls-webpki` (ring
//! backend) for chain validation. `x509-parser` (no crypto features) reads certificate fields.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Parsed PEM material from one or more files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pem {
    /// DER certificates, in file order.
    pub certs: Vec<Vec<u8>>,
    /// DER private keys, in file order.
    pub keys: Vec<KeyDer>,
}

/// A DER private key, tagged with the PEM block type it came from.
///
/// `Debug` prints only the kind and length, never the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyDer {
    /// PKCS#8 `PrivateKeyInfo` ("PRIVATE KEY").
    Pkcs8(Vec<u8>),
    /// PKCS#1 `RSAPrivateKey` ("RSA PRIVATE KEY").
    Rsa(Vec<u8>),
    /// SEC1 `ECPrivateKey` ("EC PRIVATE KEY").
    Sec1(Vec<u8>),
}

impl KeyDer {
    fn der(&self) -> &[u8] {
        match self {
            KeyDer::Pkcs8(d) | KeyDer::Rsa(d) | KeyDer::Sec1(d) => d,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            KeyDer::Pkcs8(_) => "PRIVATE KEY",
            KeyDer::Rsa(_) => "RSA PRIVATE KEY",
            KeyDer::Sec1(_) => "EC PRIVATE KEY",
        }
    }
}

impl fmt::Debug for KeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            KeyDer::Pkcs8(_) => "Pkcs8",
            KeyDer::Rsa(_) => "Rsa",
            KeyDer::Sec1(_) => "Sec1",
        };
        write!(f, "{kind}(<{} bytes redacted>)", self.der().len())
    }
}

/// Facts about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity (inclusive), unix seconds.
    pub not_after: i64,
    /// DNS subjectAltNames, lower-case, deduplicated, in certificate order. Only when the
    /// certificate has no subjectAltName extension at all, the subject's common names are used.
    /// Entries that are not plausible DNS names (characters other than `a-z 0-9 - . _ *`) are
    /// dropped.
    pub names: Vec<String>,
    /// Issuer distinguished name as text (`CN=..., O=...`); control characters are escaped.
    pub issuer: String,
    /// Issuer and subject names are identical.
    pub self_signed: bool,
    /// Serial number as lower-case hex without separators or sign byte (like `openssl x509
    /// -serial`, in lower case).
    pub serial_hex: String,
}

/// Why certificate material was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM text could not be read (bad framing or base64).
    #[error("could not read the PEM data: {0}")]
    Pem(String),
    /// No certificate was given.
    #[error(
        "no certificate found: add the site's certificate as a -----BEGIN CERTIFICATE----- block"
    )]
    NoCertificate,
    /// No private key was given.
    #[error(
        "no private key found: add the certificate's unencrypted private key as a \
         -----BEGIN PRIVATE KEY----- block"
    )]
    NoKey,
    /// More than one private key was given.
    #[error(
        "found {0} private keys: keep exactly one, the key that belongs to the site's certificate"
    )]
    TooManyKeys(usize),
    /// The private key does not belong to the leaf certificate.
    #[error(
        "the private key does not belong to the first certificate: put the site's own \
         certificate first (then its chain) and use the key it was issued for"
    )]
    KeyMismatch,
    /// The leaf certificate's validity has not started yet.
    #[error(
        "the certificate is not valid yet: it becomes valid at {} (check the server clock or wait)",
        utc(.not_before)
    )]
    NotYetValid {
        /// Start of validity, unix seconds.
        not_before: i64,
    },
    /// The leaf certificate has expired.
    #[error("the certificate expired at {}: renew it", utc(.not_after))]
    Expired {
        /// End of validity, unix seconds.
        not_after: i64,
    },
    /// A host name the site serves is not covered by the certificate.
    #[error(
        "the certificate does not cover {0:?}: get a certificate that lists it as a subjectAltName"
    )]
    NameNotCovered(String),
    /// A certificate could not be parsed.
    #[error("a certificate could not be parsed ({0}): check that the file holds valid X.509 PEM")]
    BadCertificate(String),
    /// The private key could not be loaded, or is of a kind we do not support.
    #[error("the private key cannot be used: {0}")]
    UnsupportedKey(String),
    /// The chain does not lead to a trusted root.
    #[error("the certificate chain is not valid: {0}")]
    Chain(String),
}

// ---------------------------------------------------------------------------------------------
// PEM

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Returns the label of a `-----BEGIN LABEL-----`/`-----END LABEL-----` line (already trimmed).
fn boundary<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let label = line.strip_prefix(prefix)?.strip_suffix(DASHES)?;
    let printable = label.iter().all(|b| (0x20..0x7f).contains(b));
    (printable && !label.is_empty()).then_some(label)
}

/// Human-safe rendering of a (hostile) PEM label for error messages.
fn show_label(label: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(label)
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if label.len() > 40 {
        format!("{text}...")
    } else {
        text
    }
}

/// Parses all PEM blocks in `text`; ignores text between blocks; CERTIFICATE and the three key
/// kinds are collected, other block types ignored. Malformed base64 in a block → Err.
///
/// Also rejected: a BEGIN line without its END line (or with a different label), a stray END
/// line, an empty block, and encrypted private keys (`ENCRYPTED PRIVATE KEY`, or a traditional
/// key with a `Proc-Type` header), which are reported as [`CertError::UnsupportedKey`] with the
/// command that removes the passphrase. Blocks of other types are only checked for framing.
pub fn parse_pem(text: &[u8]) -> Result<Pem, CertError> {
    let mut pem = Pem::default();
    let mut lines = text.split(|&b| b == b'\n').enumerate();
    while let Some((index, raw)) = lines.next() {
        let line = raw.trim_ascii();
        if line.starts_with(END) {
            return Err(CertError::Pem(format!(
                "line {}: END line without a BEGIN line",
                index + 1
            )));
        }
        if !line.starts_with(BEGIN) {
            continue; // text between blocks
        }
        let begin_line = index + 1;
        let label = boundary(line, BEGIN)
            .ok_or_else(|| CertError::Pem(format!("line {begin_line}: malformed BEGIN line")))?;
        let mut body = Vec::new();
        let mut has_header = false;
        let mut closed = false;
        for (index, raw) in lines.by_ref() {
            let line = raw.trim_ascii();
            if line.starts_with(END) {
                if boundary(line, END) != Some(label) {
                    return Err(CertError::Pem(format!(
                        "line {}: the block \"{}\" begun on line {begin_line} is not closed \
                         by a matching END line",
                        index + 1,
                        show_label(label)
                    )));
                }
                closed = true;
                break;
            }
            if line.starts_with(BEGIN) {
                return Err(CertError::Pem(format!(
                    "line {}: BEGIN line inside the block begun on line {begin_line}",
                    index + 1
                )));
            }
            if line.contains(&b':') {
                has_header = true; // RFC 1421 header, e.g. "Proc-Type: 4,ENCRYPTED"
                continue;
            }
            body.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        }
        if !closed {
            return Err(CertError::Pem(format!(
                "line {begin_line}: the block \"{}\" has no END line",
                show_label(label)
            )));
        }
        // `None` stands for a certificate, `Some(kind)` for a key of that kind.
        let key_kind: Option<fn(Vec<u8>) -> KeyDer> = match label {
            b"CERTIFICATE" => None,
            b"PRIVATE KEY" => Some(KeyDer::Pkcs8),
            b"RSA PRIVATE KEY" => Some(KeyDer::Rsa),
            b"EC PRIVATE KEY" => Some(KeyDer::Sec1),
            b"ENCRYPTED PRIVATE KEY" => return Err(encrypted_key()),
            _ => continue,
        };
        if has_header {
            return Err(if key_kind.is_none() {
                CertError::Pem(format!(
                    "line {begin_line}: unexpected header lines in a CERTIFICATE block"
                ))
            } else {
                encrypted_key()
            });
        }
        let der = data_encoding::BASE64.decode(&body).map_err(|e| {
            CertError::Pem(format!(
                "line {begin_line}: the \"{}\" block is not valid base64 ({e})",
                show_label(label)
            ))
        })?;
        if der.is_empty() {
            return Err(CertError::Pem(format!(
                "line {begin_line}: the \"{}\" block is empty",
                show_label(label)
            )));
        }
        match key_kind {
            None => pem.certs.push(der),
            Some(kind) => pem.keys.push(kind(der)),
        }
    }
    Ok(pem)
}

fn encrypted_key() -> CertError {
    CertError::UnsupportedKey(
        "the key is encrypted with a passphrase; remove it with \
         `openssl pkey -in key.pem -out plain.pem`"
            .into(),
    )
}

fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    let b64 = data_encoding::BASE64.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 output is ASCII, so splitting at any byte offset is a char boundary.
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// Re-encodes DER certificates as PEM text (64-column base64, one block each, in order).
pub fn to_pem_certs(certs: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in certs {
        pem_block(&mut out, "CERTIFICATE", der);
    }
    out
}

/// Re-encodes a DER private key as PEM text, with the label of its kind.
pub fn to_pem_key(key: &KeyDer) -> String {
    let mut out = String::new();
    pem_block(&mut out, key.label(), key.der());
    out
}

// ---------------------------------------------------------------------------------------------
// Certificates

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::BadCertificate(
            "unexpected data after the certificate".into(),
        )),
        Err(e) => Err(CertError::BadCertificate(e.to_string())),
    }
}

/// Lower-cases `name` and keeps it only if it looks like a DNS name (or wildcard pattern).
fn dns_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
    ok.then(|| name.to_ascii_lowercase())
}

fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Hex of the serial's DER content bytes, without the sign byte DER adds to positive numbers.
fn serial_hex(raw: &[u8]) -> String {
    let raw = match raw {
        [0, next, ..] if *next >= 0x80 => &raw[1..],
        _ => raw,
    };
    data_encoding::HEXLOWER.encode(raw)
}

fn info_of(cert: &X509Certificate<'_>) -> Result<CertInfo, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::BadCertificate(format!("subjectAltName: {e}")))?;
    let candidates: Vec<&str> = match &san {
        Some(ext) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect(),
        None => cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .collect(),
    };
    // A set keeps deduplication linear: a hostile certificate may list very many names.
    let mut seen = HashSet::new();
    let names: Vec<String> = candidates
        .into_iter()
        .filter_map(dns_name)
        .filter(|n| seen.insert(n.clone()))
        .collect();
    let validity = cert.validity();
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        names,
        issuer: escape_controls(&cert.issuer().to_string()),
        self_signed: cert.issuer().as_raw() == cert.subject().as_raw(),
        serial_hex: serial_hex(cert.raw_serial()),
    })
}

/// Facts about a (leaf) certificate given as DER.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, CertError> {
    info_of(&parse_cert(der)?)
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A public key in a form that can be compared across encodings.
#[derive(Debug, PartialEq, Eq)]
enum PublicId {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    /// DER of the curve's OBJECT IDENTIFIER (tag and length included).
    fn oid_der(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

/// The certificate's public key, or `None` for algorithms we cannot hold a key for.
fn cert_public_id(cert: &X509Certificate<'_>) -> Option<PublicId> {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Some(PublicId::Rsa {
                n: strip_zeros(rsa.modulus),
                e: strip_zeros(rsa.exponent),
            }),
            _ => None,
        }
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        let curve = if curve == OID_EC_P256 {
            Curve::P256
        } else if curve == OID_NIST_EC_P384 {
            Curve::P384
        } else {
            return None;
        };
        Some(PublicId::Ec {
            curve,
            point: spki.subject_public_key.data.to_vec(),
        })
    } else if *alg == OID_SIG_ED25519 {
        Some(PublicId::Ed25519(spki.subject_public_key.data.to_vec()))
    } else {
        None
    }
}

const SUPPORTED: &str = "use RSA (2048 to 4096 bits), ECDSA P-256/P-384 or Ed25519";

fn rejected(kind: &str, e: &ring::error::KeyRejected) -> CertError {
    let why = match e.to_string().as_str() {
        "TooSmall" => format!("the {kind} key is too small; {SUPPORTED}"),
        "TooLarge" => format!("the {kind} key is too large; {SUPPORTED}"),
        "InconsistentComponents" => format!("the {kind} key is corrupt (its parts do not match)"),
        "PublicKeyIsMissing" => format!(
            "the {kind} key lacks its public part; convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in key.pem -out new.pem`"
        ),
        "PrivateModulusLenNotMultipleOf512Bits" => {
            format!("the {kind} key has an unusual size; {SUPPORTED}")
        }
        other => format!("the {kind} key is malformed or not supported ({other}); {SUPPORTED}"),
    };
    CertError::UnsupportedKey(why)
}

fn rsa_id(kp: &RsaKeyPair) -> PublicId {
    let c = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
    PublicId::Rsa {
        n: strip_zeros(&c.n),
        e: strip_zeros(&c.e),
    }
}

fn ec_id(curve: Curve, pkcs8: &[u8]) -> Result<PublicId, ring::error::KeyRejected> {
    let kp = EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8, &SystemRandom::new())?;
    Ok(PublicId::Ec {
        curve,
        point: kp.public_key().as_ref().to_vec(),
    })
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Wraps a SEC1 `ECPrivateKey` into a PKCS#8 `PrivateKeyInfo` for the given curve.
fn sec1_to_pkcs8(curve: Curve, sec1: &[u8]) -> Vec<u8> {
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let mut alg = EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(curve.oid_der());
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend(der_tlv(0x30, &alg));
    body.extend(der_tlv(0x04, sec1));
    der_tlv(0x30, &body)
}

/// Loads the private key with ring (which also checks that it is internally consistent) and
/// returns its public half.
fn key_public_id(key: &KeyDer) -> Result<PublicId, CertError> {
    match key {
        KeyDer::Rsa(der) => RsaKeyPair::from_der(der)
            .map(|kp| rsa_id(&kp))
            .map_err(|e| rejected("RSA", &e)),
        KeyDer::Sec1(der) => {
            let mut first_err = None;
            for curve in [Curve::P256, Curve::P384] {
                match ec_id(curve, &sec1_to_pkcs8(curve, der)) {
                    Ok(id) => return Ok(id),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            Err(CertError::UnsupportedKey(format!(
                "the EC key could not be loaded ({}); only P-256 and P-384 are supported. If \
                 it is one of those, convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem -out new.pem`",
                first_err.map(|e| e.to_string()).unwrap_or_default()
            )))
        }
        KeyDer::Pkcs8(der) => {
            // Each loader rejects other algorithms with "WrongAlgorithm", so an error from
            // exactly one loader comes from the one for the key's actual algorithm. Errors from
            // several loaders mean the PKCS#8 structure itself is broken.
            type Loader<'a> = &'a dyn Fn() -> Result<PublicId, ring::error::KeyRejected>;
            let attempts: [(&str, Loader<'_>); 4] = [
                ("Ed25519", &|| {
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                        .map(|kp| PublicId::Ed25519(kp.public_key().as_ref().to_vec()))
                }),
                ("ECDSA P-256", &|| ec_id(Curve::P256, der)),
                ("ECDSA P-384", &|| ec_id(Curve::P384, der)),
                ("RSA", &|| RsaKeyPair::from_pkcs8(der).map(|kp| rsa_id(&kp))),
            ];
            let mut failures = Vec::new();
            for (kind, load) in attempts {
                match load() {
                    Ok(id) => return Ok(id),
                    Err(e) if e.to_string() == "WrongAlgorithm" => {}
                    Err(e) => failures.push((kind, e)),
                }
            }
            Err(match failures.as_slice() {
                [] => CertError::UnsupportedKey(format!(
                    "the key's algorithm is not supported; {SUPPORTED}"
                )),
                [(kind, e)] => rejected(kind, e),
                [(_, e), ..] => CertError::UnsupportedKey(format!(
                    "the key is not a valid PKCS#8 private key ({e})"
                )),
            })
        }
    }
}

/// True when the private key belongs to the certificate (compare the public key derived from
/// the key with the cert's SubjectPublicKeyInfo).
///
/// Supports RSA 2048–4096 bits (PKCS#8 and PKCS#1), ECDSA P-256/P-384 (PKCS#8 and SEC1 with the
/// public key embedded, as OpenSSL writes them) and Ed25519 (PKCS#8). A key that cannot be
/// loaded is [`CertError::UnsupportedKey`]; a certificate that cannot be parsed is
/// [`CertError::BadCertificate`]; a supported key for a certificate of another algorithm is
/// `Ok(false)`.
pub fn key_matches(cert_der: &[u8], key: &KeyDer) -> Result<bool, CertError> {
    let cert = parse_cert(cert_der)?;
    let key_id = key_public_id(key)?;
    Ok(cert_public_id(&cert).is_some_and(|cert_id| cert_id == key_id))
}

// ---------------------------------------------------------------------------------------------
// Names

/// Does `name` (e.g. "www.example.com") match one of the certificate names (exact, or a
/// single-label wildcard "*.example.com")?
///
/// Comparison is ASCII case-insensitive and ignores one trailing dot; callers pass IDNs as
/// A-labels (`xn--...`). A wildcard covers exactly one non-empty label, only as the whole
/// left-most label, and only above at least two labels (`*.com` covers nothing).
pub fn covers(cert_names: &[String], name: &str) -> bool {
    let Some(name) = dns_name(name) else {
        return false;
    };
    cert_names
        .iter()
        .filter_map(|pattern| dns_name(pattern))
        .any(|pattern| name_matches(&pattern, &name))
}

fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    if suffix.contains('*') || !suffix.contains('.') || suffix.split('.').any(str::is_empty) {
        return false;
    }
    match name.split_once('.') {
        Some((first, rest)) => !first.is_empty() && !first.contains('*') && rest == suffix,
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The checks a set must pass before Apache may use it: there is at least one cert and exactly
/// one key; the key matches the first cert (the leaf); now is within [not_before, not_after];
/// every name in `required` is covered. Returns the leaf's info. `now` is unix seconds.
///
/// Every certificate in the set (not only the leaf) must parse, so that a broken chain
/// certificate cannot stop Apache from starting. The chain itself is not validated here.
pub fn verify_set(pem: &Pem, required: &[String], now: i64) -> Result<CertInfo, CertError> {
    let (leaf_der, chain) = pem.certs.split_first().ok_or(CertError::NoCertificate)?;
    let leaf = parse_cert(leaf_der)?;
    for (i, der) in chain.iter().enumerate() {
        parse_cert(der).map_err(|e| match e {
            CertError::BadCertificate(why) => {
                CertError::BadCertificate(format!("certificate #{}: {why}", i + 2))
            }
            other => other,
        })?;
    }
    let key = match pem.keys.as_slice() {
        [] => return Err(CertError::NoKey),
        [key] => key,
        keys => return Err(CertError::TooManyKeys(keys.len())),
    };
    let key_id = key_public_id(key)?;
    if cert_public_id(&leaf).is_none_or(|cert_id| cert_id != key_id) {
        return Err(CertError::KeyMismatch);
    }
    let info = info_of(&leaf)?;
    if now < info.not_before {
        return Err(CertError::NotYetValid {
            not_before: info.not_before,
        });
    }
    if now > info.not_after {
        return Err(CertError::Expired {
            not_after: info.not_after,
        });
    }
    if let Some(missing) = required.iter().find(|n| !covers(&info.names, n)) {
        return Err(CertError::NameNotCovered(missing.clone()));
    }
    Ok(info)
}

fn chain_error(e: &webpki::Error) -> CertError {
    use webpki::Error as E;
    let why = match e {
        E::UnknownIssuer => {
            "it does not lead to a trusted root (an intermediate certificate is missing, \
             or it was issued by another CA)"
        }
        E::CertExpired { .. } => "a certificate in the chain has expired",
        E::CertNotValidYet { .. } => "a certificate in the chain is not valid yet",
        E::CaUsedAsEndEntity => "the first certificate is a CA certificate, not a site's",
        E::EndEntityUsedAsCa => "a site certificate is used as an issuer",
        E::InvalidSignatureForPublicKey => "a signature in the chain does not verify",
        E::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for TLS servers (its extendedKeyUsage lacks serverAuth)"
        }
        other => return CertError::Chain(format!("{other:?}")),
    };
    CertError::Chain(why.to_string())
}

/// Chain check: each cert in `chain_der` (leaf first) is signed by the next one, and the last is
/// signed by (or is) one of `roots_der`.
///
/// Full RFC 5280 path validation for a TLS server certificate (validity of every certificate at
/// `now`, CA basic constraints, path length, name constraints, key usage, serverAuth EKU when
/// present) is done by `rustls-webpki` with ring. The path it finds must use the given
/// intermediates in the given order; only a trailing copy of the root may go unused.
pub fn verify_chain(
    chain_der: &[Vec<u8>],
    roots_der: &[Vec<u8>],
    now: i64,
) -> Result<(), CertError> {
    let (leaf, rest) = chain_der.split_first().ok_or(CertError::NoCertificate)?;
    if roots_der.is_empty() {
        return Err(CertError::Chain(
            "no trusted root certificates were given".into(),
        ));
    }
    let root_ders: Vec<CertificateDer<'_>> = roots_der
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .enumerate()
        .map(|(i, der)| {
            webpki::anchor_from_trusted_cert(der).map_err(|e| {
                CertError::Chain(format!("root certificate #{} is not usable ({e:?})", i + 1))
            })
        })
        .collect::<Result<Vec<TrustAnchor<'_>>, _>>()?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| CertError::BadCertificate(format!("first certificate: {e:?}")))?;
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs =
        u64::try_from(now).map_err(|_| CertError::Chain("the given time is before 1970".into()))?;
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(secs)),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| chain_error(&e))?;

    let used: Vec<CertificateDer<'_>> = path.intermediate_certificates().map(|c| c.der()).collect();
    let in_order = used.len() <= rest.len()
        && used
            .iter()
            .zip(rest)
            .all(|(u, given)| u.as_ref() == given.as_slice());
    let leftover = rest.get(used.len()..).unwrap_or_default();
    let leftover_ok = match leftover {
        [] => true,
        [root] => {
            let root = CertificateDer::from(root.as_slice());
            webpki::anchor_from_trusted_cert(&root).is_ok_and(|a| a == *path.anchor())
        }
        _ => false,
    };
    if in_order && leftover_ok {
        Ok(())
    } else {
        Err(CertError::Chain(
            "the certificates are not in order: each must be followed by the one that signed \
             it (site certificate first)"
                .into(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Time formatting for messages

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
fn utc(secs: &i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::SystemTime;

    /// Runs the `openssl` CLI in `dir`; panics with its stderr on failure.
    fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI is needed to generate test fixtures");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Generated PEM texts (and some DER forms made by openssl itself), shared by all tests.
    struct Fx {
        /// P-256, CN=example.com, SAN example.com + WWW.Example.COM.
        ec_crt: String,
        ec_key: String,
        ec_key_sec1: String,
        ec_key_der: Vec<u8>,
        ec_crt_der: Vec<u8>,
        ec_other_key: String,
        rsa_crt: String,
        rsa_key: String,
        rsa_key_pkcs1: String,
        rsa_other_key: String,
        ed_crt: String,
        ed_key: String,
        p384_crt: String,
        p384_key: String,
        p384_key_sec1: String,
        rsa1024_key: String,
        p521_key: String,
        ec_key_encrypted: String,
        rsa_key_encrypted_traditional: String,
        wild_crt: String,
        wild_key: String,
        nosan_crt: String,
        /// (openssl -set_serial argument, certificate, `openssl x509 -serial` output)
        serials: Vec<(&'static str, String, String)>,
        root_crt: String,
        inter_crt: String,
        leaf_crt: String,
        leaf_key: String,
        other_root_crt: String,
        /// When the fixtures were made (unix seconds).
        made_at: i64,
    }

    fn fx() -> &'static Fx {
        static FX: OnceLock<Fx> = OnceLock::new();
        FX.get_or_init(make_fixtures)
    }

    fn make_fixtures() -> Fx {
        let made_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // One openssl invocation; arguments are split on whitespace (none contains a space).
        let sh = |cmd: &str| openssl(d, &cmd.split_whitespace().collect::<Vec<_>>());
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();

        let p256 = "-newkey ec -pkeyopt ec_paramgen_curve:P-256";
        let p384 = "-newkey ec -pkeyopt ec_paramgen_curve:P-384";
        let san = "-addext subjectAltName=DNS:example.com,DNS:WWW.Example.COM";
        let ca = "-addext basicConstraints=critical,CA:TRUE \
                  -addext keyUsage=critical,keyCertSign,cRLSign";
        let self_signed = [
            ("ec", p256, "/CN=example.com", san),
            ("ec_other", p256, "/CN=example.com", san),
            ("rsa", "-newkey rsa:2048", "/CN=example.com", san),
            ("rsa_other", "-newkey rsa:2048", "/CN=example.com", san),
            ("ed", "-newkey ed25519", "/CN=example.com", san),
            ("p384", p384, "/CN=example.com", san),
            (
                "wild",
                p256,
                "/CN=*.example.com",
                "-addext subjectAltName=DNS:*.example.com",
            ),
            ("nosan", p256, "/O=Org/CN=Plain.Example.ORG", ""),
            // Two roots with the same name but different keys.
            ("root", "-newkey rsa:2048", "/CN=TestRoot", ca),
            ("other_root", "-newkey rsa:2048", "/CN=TestRoot", ca),
        ];
        for (stem, newkey, subj, ext) in self_signed {
            sh(&format!(
                "req -x509 {newkey} -nodes -keyout {stem}.key -out {stem}.crt -days 30 \
                 -subj {subj} {ext}"
            ));
        }
        sh("pkey -in ec.key -traditional -out ec.sec1");
        sh("pkey -in p384.key -traditional -out p384.sec1");
        sh("pkey -in rsa.key -traditional -out rsa.pkcs1");
        sh("pkcs8 -topk8 -nocrypt -in ec.key -outform DER -out ec.key.der");
        sh("x509 -in ec.crt -outform DER -out ec.crt.der");
        sh("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key");
        sh("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out p521.key");
        sh("pkey -in ec.key -aes256 -passout pass:x -out ec.enc");
        sh("rsa -in rsa.key -traditional -aes256 -passout pass:x -out rsa.enc");

        let mut serials = Vec::new();
        for serial in ["1", "0x80aa", "0x0123456789abcdef"] {
            sh(&format!(
                "req -x509 -key ec.key -out s.crt -days 30 -subj /CN=x -set_serial {serial}"
            ));
            let printed = String::from_utf8(sh("x509 -in s.crt -noout -serial")).unwrap();
            serials.push((serial, read("s.crt"), printed.trim().to_string()));
        }

        // root (RSA) -> intermediate (P-256) -> leaf (P-256, serverAuth).
        write(
            "inter.ext",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        write(
            "leaf.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:example.com,DNS:www.example.com\n",
        );
        for (stem, subj, issuer) in [
            ("inter", "/CN=TestIntermediate", "root"),
            ("leaf", "/CN=example.com", "inter"),
        ] {
            sh(&format!(
                "req -new {p256} -nodes -keyout {stem}.key -out {stem}.csr -subj {subj}"
            ));
            sh(&format!(
                "x509 -req -in {stem}.csr -CA {issuer}.crt -CAkey {issuer}.key -set_serial 7 \
                 -days 30 -extfile {stem}.ext -out {stem}.crt"
            ));
        }

        Fx {
            ec_crt: read("ec.crt"),
            ec_key: read("ec.key"),
            ec_key_sec1: read("ec.sec1"),
            ec_key_der: std::fs::read(d.join("ec.key.der")).unwrap(),
            ec_crt_der: std::fs::read(d.join("ec.crt.der")).unwrap(),
            ec_other_key: read("ec_other.key"),
            rsa_crt: read("rsa.crt"),
            rsa_key: read("rsa.key"),
            rsa_key_pkcs1: read("rsa.pkcs1"),
            rsa_other_key: read("rsa_other.key"),
            ed_crt: read("ed.crt"),
            ed_key: read("ed.key"),
            p384_crt: read("p384.crt"),
            p384_key: read("p384.key"),
            p384_key_sec1: read("p384.sec1"),
            rsa1024_key: read("rsa1024.key"),
            p521_key: read("p521.key"),
            ec_key_encrypted: read("ec.enc"),
            rsa_key_encrypted_traditional: read("rsa.enc"),
            wild_crt: read("wild.crt"),
            wild_key: read("wild.key"),
            nosan_crt: read("nosan.crt"),
            serials,
            root_crt: read("root.crt"),
            inter_crt: read("inter.crt"),
            leaf_crt: read("leaf.crt"),
            leaf_key: read("leaf.key"),
            other_root_crt: read("other_root.crt"),
            made_at,
        }
    }

    fn pem(texts: &[&str]) -> Pem {
        parse_pem(texts.concat().as_bytes()).unwrap()
    }

    fn cert(text: &str) -> Vec<u8> {
        let mut p = pem(&[text]);
        assert_eq!(p.certs.len(), 1);
        p.certs.remove(0)
    }

    fn key(text: &str) -> KeyDer {
        let mut p = pem(&[text]);
        assert_eq!(p.keys.len(), 1);
        p.keys.remove(0)
    }

    fn err_kind(e: &CertError) -> String {
        // The variant name, without its payload.
        let dbg = format!("{e:?}");
        dbg.split(['(', ' ']).next().unwrap().to_string()
    }

    #[test]
    fn parse_combined_file_with_garbage_between_blocks() {
        let f = fx();
        let text = format!(
            "Bag Attributes\n    localKeyID: 01 02\nsubject=/CN=example.com\n{}\nsome notes -- here\n{}\r\n{}trailing text without newline",
            f.ec_crt,
            f.inter_crt.replace('\n', "\r\n"),
            f.ec_key
        );
        let p = parse_pem(text.as_bytes()).unwrap();
        assert_eq!(p.certs.len(), 2);
        assert_eq!(
            p.certs[0], f.ec_crt_der,
            "DER must equal openssl's own DER output"
        );
        assert_eq!(p.certs[1], cert(&f.inter_crt));
        assert_eq!(p.keys, vec![KeyDer::Pkcs8(f.ec_key_der.clone())]);
    }

    #[test]
    fn parse_pem_accepts() {
        let f = fx();
        let cases: &[(&str, String, usize, Option<&str>)] = &[
            ("empty input", String::new(), 0, None),
            ("text only", "hello\n-- not pem --\n".into(), 0, None),
            (
                "unknown block types are ignored, even with bad base64",
                "-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n".into(),
                0,
                None,
            ),
            ("PKCS#8 key", f.ec_key.clone(), 0, Some("Pkcs8")),
            ("SEC1 key", f.ec_key_sec1.clone(), 0, Some("Sec1")),
            ("PKCS#1 key", f.rsa_key_pkcs1.clone(), 0, Some("Rsa")),
            (
                "EC PARAMETERS block before a SEC1 key (openssl ecparam -genkey)",
                format!(
                    "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
                    f.ec_key_sec1
                ),
                0,
                Some("Sec1"),
            ),
            (
                "indented block",
                format!("  {}", f.ec_crt.replace('\n', "\n  ")),
                1,
                None,
            ),
        ];
        for (what, text, certs, key) in cases {
            let p = parse_pem(text.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(p.certs.len(), *certs, "{what}");
            let kinds: Vec<String> = p
                .keys
                .iter()
                .map(|k| format!("{k:?}").split('(').next().unwrap().to_string())
                .collect();
            assert_eq!(
                kinds,
                key.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "{what}"
            );
        }
    }

    #[test]
    fn parse_pem_rejects() {
        let f = fx();
        let cases: &[(&str, String, &str)] = &[
            (
                "bad base64",
                "-----BEGIN CERTIFICATE-----\nMIIB!!notbase64\n-----END CERTIFICATE-----\n".into(),
                "Pem",
            ),
            (
                "bad base64 in a key",
                "-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n".into(),
                "Pem",
            ),
            (
                "missing END",
                f.ec_crt.replace("-----END CERTIFICATE-----", ""),
                "Pem",
            ),
            (
                "mismatched END",
                f.ec_crt.replace("END CERTIFICATE", "END PRIVATE KEY"),
                "Pem",
            ),
            (
                "stray END",
                format!("-----END CERTIFICATE-----\n{}", f.ec_crt),
                "Pem",
            ),
            (
                "nested BEGIN",
                f.ec_crt
                    .replacen('\n', "\n-----BEGIN CERTIFICATE-----\n", 1),
                "Pem",
            ),
            (
                "empty block",
                "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
                "Pem",
            ),
            (
                "malformed BEGIN",
                "-----BEGIN CERTIFICATE--\n".into(),
                "Pem",
            ),
            (
                "PKCS#8 encrypted key",
                f.ec_key_encrypted.clone(),
                "UnsupportedKey",
            ),
            (
                "traditional encrypted key",
                f.rsa_key_encrypted_traditional.clone(),
                "UnsupportedKey",
            ),
        ];
        for (what, text, want) in cases {
            match parse_pem(text.as_bytes()) {
                Ok(p) => panic!("{what}: accepted: {p:?}"),
                Err(e) => assert_eq!(err_kind(&e), *want, "{what}: {e}"),
            }
        }
        assert!(
            f.rsa_key_encrypted_traditional.contains("Proc-Type"),
            "fixture must be a traditional encrypted key"
        );
    }

    #[test]
    fn to_pem_matches_openssl_output() {
        let f = fx();
        for text in [&f.ec_crt, &f.inter_crt, &f.rsa_crt] {
            assert_eq!(to_pem_certs(&[cert(text)]), **text);
        }
        assert_eq!(
            to_pem_certs(&[cert(&f.leaf_crt), cert(&f.inter_crt)]),
            format!("{}{}", f.leaf_crt, f.inter_crt)
        );
        assert_eq!(to_pem_certs(&[]), "");
        for text in [
            &f.ec_key,
            &f.ec_key_sec1,
            &f.rsa_key_pkcs1,
            &f.rsa_key,
            &f.ed_key,
        ] {
            assert_eq!(to_pem_key(&key(text)), **text);
        }
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = key(&fx().ec_key);
        let len = k.der().len();
        let p = Pem {
            certs: vec![],
            keys: vec![k, KeyDer::Rsa(vec![7; 3]), KeyDer::Sec1(vec![])],
        };
        assert_eq!(
            format!("{p:?}"),
            format!(
                "Pem {{ certs: [], keys: [Pkcs8(<{len} bytes redacted>), \
                 Rsa(<3 bytes redacted>), Sec1(<0 bytes redacted>)] }}"
            )
        );
    }

    #[test]
    fn key_matches_table() {
        let f = fx();
        let cases: &[(&str, &str, &str, bool)] = &[
            ("EC PKCS#8", &f.ec_crt, &f.ec_key, true),
            ("EC SEC1", &f.ec_crt, &f.ec_key_sec1, true),
            ("EC other key", &f.ec_crt, &f.ec_other_key, false),
            ("P-384 PKCS#8", &f.p384_crt, &f.p384_key, true),
            ("P-384 SEC1", &f.p384_crt, &f.p384_key_sec1, true),
            ("P-256 key, P-384 cert", &f.p384_crt, &f.ec_key, false),
            (
                "P-256 SEC1 key, P-384 cert",
                &f.p384_crt,
                &f.ec_key_sec1,
                false,
            ),
            ("RSA PKCS#8", &f.rsa_crt, &f.rsa_key, true),
            ("RSA PKCS#1", &f.rsa_crt, &f.rsa_key_pkcs1, true),
            ("RSA other key", &f.rsa_crt, &f.rsa_other_key, false),
            ("RSA key, EC cert", &f.ec_crt, &f.rsa_key_pkcs1, false),
            ("EC key, RSA cert", &f.rsa_crt, &f.ec_key, false),
            ("Ed25519", &f.ed_crt, &f.ed_key, true),
            ("Ed25519 key, EC cert", &f.ec_crt, &f.ed_key, false),
            ("EC key, Ed25519 cert", &f.ed_crt, &f.ec_key, false),
            ("leaf and its key", &f.leaf_crt, &f.leaf_key, true),
        ];
        for (what, crt, k, want) in cases {
            let got = key_matches(&cert(crt), &key(k));
            assert_eq!(got.ok(), Some(*want), "{what}");
        }
    }

    #[test]
    fn key_matches_errors() {
        let f = fx();
        let ec = cert(&f.ec_crt);
        let mut corrupt = key(&f.rsa_key_pkcs1).der().to_vec();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0x55;
        let cases: Vec<(&str, Vec<u8>, KeyDer, &str, &str)> = vec![
            (
                "RSA 1024",
                ec.clone(),
                key(&f.rsa1024_key),
                "UnsupportedKey",
                "too small",
            ),
            (
                "P-521",
                ec.clone(),
                key(&f.p521_key),
                "UnsupportedKey",
                "not supported",
            ),
            (
                "garbage PKCS#8",
                ec.clone(),
                KeyDer::Pkcs8(vec![1, 2, 3]),
                "UnsupportedKey",
                "PKCS#8",
            ),
            (
                "garbage SEC1",
                ec.clone(),
                KeyDer::Sec1(vec![0x30, 0]),
                "UnsupportedKey",
                "P-256",
            ),
            (
                "corrupt PKCS#1",
                ec.clone(),
                KeyDer::Rsa(corrupt),
                "UnsupportedKey",
                "RSA",
            ),
            (
                "garbage cert",
                vec![0x30, 0x03, 1, 2, 3],
                key(&f.ec_key),
                "BadCertificate",
                "",
            ),
            (
                "trailing bytes after cert",
                [ec.as_slice(), &[0]].concat(),
                key(&f.ec_key),
                "BadCertificate",
                "after",
            ),
        ];
        for (what, crt, k, want, text) in cases {
            match key_matches(&crt, &k) {
                Ok(m) => panic!("{what}: Ok({m})"),
                Err(e) => {
                    eprintln!("{what}: {e}");
                    assert_eq!(err_kind(&e), want, "{what}: {e}");
                    assert!(e.to_string().contains(text), "{what}: {e}");
                }
            }
        }
    }

    #[test]
    fn cert_info_fields() {
        let f = fx();
        let ec = cert_info(&cert(&f.ec_crt)).unwrap();
        assert_eq!(ec.names, ["example.com", "www.example.com"]);
        assert_eq!(ec.issuer, "CN=example.com");
        assert!(ec.self_signed);
        assert_eq!(ec.not_after - ec.not_before, 30 * 86_400);
        assert!(
            (ec.not_before - f.made_at).abs() < 600,
            "{ec:?} vs {}",
            f.made_at
        );

        let nosan = cert_info(&cert(&f.nosan_crt)).unwrap();
        assert_eq!(
            nosan.names,
            ["plain.example.org"],
            "CN fallback, lower-cased"
        );
        assert_eq!(nosan.issuer, "O=Org, CN=Plain.Example.ORG");

        let wild = cert_info(&cert(&f.wild_crt)).unwrap();
        assert_eq!(wild.names, ["*.example.com"]);

        let leaf = cert_info(&cert(&f.leaf_crt)).unwrap();
        assert_eq!(leaf.issuer, "CN=TestIntermediate");
        assert!(!leaf.self_signed);
        assert_eq!(leaf.serial_hex, "07");

        for (arg, crt, printed) in &f.serials {
            let info = cert_info(&cert(crt)).unwrap();
            let want = printed
                .strip_prefix("serial=")
                .unwrap()
                .to_ascii_lowercase();
            assert_eq!(info.serial_hex, want, "-set_serial {arg}");
        }
        let json = serde_json::to_value(&ec).unwrap();
        assert_eq!(json["names"][1], "www.example.com");

        assert_eq!(err_kind(&cert_info(b"").unwrap_err()), "BadCertificate");
    }

    #[test]
    fn covers_table() {
        let names: Vec<String> = [
            "example.com",
            "*.example.com",
            "WWW.Other.ORG",
            "*.com",
            "x.*.net",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cases = [
            ("example.com", true),
            ("EXAMPLE.com.", true),
            ("www.example.com", true),
            ("a-b.example.com", true),
            ("a.b.example.com", false),
            (".example.com", false),
            ("*.example.com", true),
            ("www.other.org", true),
            ("other.org", false),
            ("foo.com", false),
            ("x.y.net", false),
            ("notexample.com", false),
            ("", false),
            ("exämple.com", false),
        ];
        for (name, want) in cases {
            assert_eq!(covers(&names, name), want, "{name}");
        }
        assert!(!covers(&[], "example.com"));
    }

    #[test]
    fn verify_set_table() {
        let f = fx();
        let ec = cert_info(&cert(&f.ec_crt)).unwrap();
        let (nb, na) = (ec.not_before, ec.not_after);
        let now = nb + 60;
        let (crt, k) = (f.ec_crt.as_str(), f.ec_key.as_str());
        let (wild, wild_k) = (f.wild_crt.as_str(), f.wild_key.as_str());
        let both: &[&str] = &["example.com", "www.example.com"];
        let junk_cert = "-----BEGIN CERTIFICATE-----\nAQIDBA==\n-----END CERTIFICATE-----\n";
        // `want` is Ok or the error's Debug text (only the variant for BadCertificate and
        // UnsupportedKey, whose texts come from the parsers).
        let check = |what: &str, texts: &[&str], required: &[&str], now: i64, want: &str| {
            let required: Vec<String> = required.iter().map(|s| s.to_string()).collect();
            let got = match verify_set(&pem(texts), &required, now) {
                Ok(_) => "Ok".to_string(),
                Err(e @ (CertError::BadCertificate(_) | CertError::UnsupportedKey(_))) => {
                    err_kind(&e)
                }
                Err(e) => format!("{e:?}"),
            };
            assert_eq!(got, want, "{what}");
        };
        check("ok", &[crt, k], both, now, "Ok");
        check("key first", &[k, crt], both, now, "Ok");
        check("SEC1 key", &[crt, &f.ec_key_sec1], both, now, "Ok");
        check(
            "RSA PKCS#1",
            &[&f.rsa_crt, &f.rsa_key_pkcs1],
            both,
            now,
            "Ok",
        );
        check("RSA PKCS#8", &[&f.rsa_crt, &f.rsa_key], both, now, "Ok");
        check("no names required", &[crt, k], &[], now, "Ok");
        check("at not_before", &[crt, k], both, nb, "Ok");
        check("at not_after", &[crt, k], both, na, "Ok");
        let full = [&*f.leaf_crt, &f.inter_crt, &f.root_crt, &f.leaf_key];
        check("leaf + chain + key", &full, both, now, "Ok");
        check("no cert", &[k], both, now, "NoCertificate");
        check("no key", &[crt], both, now, "NoKey");
        let two_keys = [crt, k, &f.ec_key_sec1];
        check("two keys", &two_keys, both, now, "TooManyKeys(2)");
        check(
            "mismatch",
            &[crt, &f.ec_other_key],
            both,
            now,
            "KeyMismatch",
        );
        check(
            "RSA key, EC cert",
            &[crt, &f.rsa_key],
            both,
            now,
            "KeyMismatch",
        );
        let swapped = [&*f.inter_crt, &f.leaf_crt, &f.leaf_key];
        check("chain before leaf", &swapped, both, now, "KeyMismatch");
        let expired = format!("Expired {{ not_after: {na} }}");
        check("expired", &[crt, k], both, na + 1, &expired);
        check("far future", &[crt, k], both, i64::MAX, &expired);
        let early = format!("NotYetValid {{ not_before: {nb} }}");
        check("not yet valid", &[crt, k], both, nb - 1, &early);
        check("far past", &[crt, k], both, i64::MIN, &early);
        let mail = ["example.com", "mail.example.com"];
        let not_mail = "NameNotCovered(\"mail.example.com\")";
        check("name not covered", &[crt, k], &mail, now, not_mail);
        let one_label = ["a.example.com", "WWW.example.com"];
        check(
            "wildcard, one label",
            &[wild, wild_k],
            &one_label,
            now,
            "Ok",
        );
        let two = "NameNotCovered(\"a.b.example.com\")";
        check(
            "wildcard, two labels",
            &[wild, wild_k],
            &["a.b.example.com"],
            now,
            two,
        );
        let apex = "NameNotCovered(\"example.com\")";
        check(
            "wildcard, apex",
            &[wild, wild_k],
            &["example.com"],
            now,
            apex,
        );
        let junk = [crt, junk_cert, k];
        check("unparseable chain cert", &junk, both, now, "BadCertificate");
        check(
            "unsupported key",
            &[crt, &f.rsa1024_key],
            both,
            now,
            "UnsupportedKey",
        );

        let info = verify_set(&pem(&[crt, k]), &["example.com".into()], now).unwrap();
        assert_eq!(info, ec);
    }

    #[test]
    fn verify_chain_table() {
        let f = fx();
        let (leaf, inter) = (cert(&f.leaf_crt), cert(&f.inter_crt));
        let (root, other) = (cert(&f.root_crt), cert(&f.other_root_crt));
        let now = cert_info(&leaf).unwrap().not_before + 60;
        let check = |what: &str, chain: &[&Vec<u8>], roots: &[&Vec<u8>], now: i64, want: &str| {
            let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
            let roots: Vec<Vec<u8>> = roots.iter().map(|c| c.to_vec()).collect();
            let got = match verify_chain(&chain, &roots, now) {
                Ok(()) => "Ok".to_string(),
                Err(e) => {
                    eprintln!("{what}: {e}");
                    err_kind(&e)
                }
            };
            assert_eq!(got, want, "{what}");
        };
        let junk = vec![1, 2, 3];
        check("leaf + intermediate", &[&leaf, &inter], &[&root], now, "Ok");
        check(
            "root at the end",
            &[&leaf, &inter, &root],
            &[&root],
            now,
            "Ok",
        );
        check(
            "several roots",
            &[&leaf, &inter],
            &[&other, &root],
            now,
            "Ok",
        );
        check(
            "wrong CA (same name)",
            &[&leaf, &inter],
            &[&other],
            now,
            "Chain",
        );
        let wrong_root = [&leaf, &inter, &other];
        check(
            "wrong root appended",
            &wrong_root,
            &[&root, &other],
            now,
            "Chain",
        );
        check("missing intermediate", &[&leaf], &[&root], now, "Chain");
        check(
            "out of order",
            &[&leaf, &root, &inter],
            &[&root],
            now,
            "Chain",
        );
        check(
            "duplicate",
            &[&leaf, &inter, &inter],
            &[&root],
            now,
            "Chain",
        );
        check("CA as leaf", &[&inter], &[&root], now, "Chain");
        let later = now + 400 * 86_400;
        check("expired", &[&leaf, &inter], &[&root], later, "Chain");
        check("before 1970", &[&leaf, &inter], &[&root], -1, "Chain");
        check("no roots", &[&leaf, &inter], &[], now, "Chain");
        check("empty chain", &[], &[&root], now, "NoCertificate");
        check("garbage leaf", &[&junk], &[&root], now, "BadCertificate");
        check("garbage root", &[&leaf, &inter], &[&junk], now, "Chain");
    }

    #[test]
    fn error_messages_are_actionable() {
        assert_eq!(
            CertError::Expired {
                not_after: 1_700_000_000
            }
            .to_string(),
            "the certificate expired at 2023-11-14 22:13:20 UTC: renew it"
        );
        let nb = CertError::NotYetValid {
            not_before: 951_782_400,
        }
        .to_string();
        assert!(nb.contains("2000-02-29 00:00:00 UTC"), "{nb}");
        assert_eq!(utc(&0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(&-1), "1969-12-31 23:59:59 UTC");
        // Extremes must not overflow.
        let _ = (utc(&i64::MAX), utc(&i64::MIN));
        assert!(
            CertError::TooManyKeys(3)
                .to_string()
                .contains("exactly one")
        );
    }
}
