//! The ACME v2 conversation (instant-acme over hyper + rustls, ring only).
//!
//! This module owns: the HTTPS client (system roots plus `[acme] ca_bundle`, connect and
//! request timeouts, and a record of the CA's Retry-After on error responses), the account
//! (one per directory URL, credentials stored 0600 under `<state>/acme/accounts/`), the
//! HTTP-01 flow (key authorisations written root-owned 0644 into `Layout::acme_dir`, removed
//! afterwards whatever happens), finalisation with a CSR, and ARI lookups (RFC 9773).
//!
//! It must not write under /srv, verify or install certificates (`store` does), or decide
//! when to order (`policy` does). Every call is bounded in time.

use std::fs;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, ExternalAccountKey, HttpClient, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::policy::AriWindow;
use super::state;
use crate::certs;
use crate::config::Config;

/// TCP connect timeout to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One HTTP request to the CA.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole order, from new-order to certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);
/// Where the system's roots are (Debian's ca-certificates).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

type RetrySlot = Arc<Mutex<Option<i64>>>;

/// A connected ACME account.
pub struct Client {
    rt: tokio::runtime::Runtime,
    account: Account,
    retry_after: RetrySlot,
    directory: String,
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

impl Client {
    /// Connects to `[acme] directory` and loads (or creates and stores) the account.
    pub fn connect(cfg: &Config) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the ACME runtime")?;
        let retry_after: RetrySlot = Arc::default();
        let directory = cfg.acme.directory.clone();
        let http = http_client(cfg, retry_after.clone())?;
        let account = rt
            .block_on(timed(REQUEST_TIMEOUT * 3, account(cfg, http)))
            .with_context(|| format!("ACME CA {directory}"))?;
        Ok(Self {
            rt,
            account,
            retry_after,
            directory,
        })
    }

    /// The CA's last Retry-After (unix seconds) on an error response, consumed.
    pub fn take_retry_after(&self) -> Option<i64> {
        self.retry_after
            .lock()
            .map(|mut s| s.take())
            .unwrap_or(None)
    }

    /// The directory URL this client talks to.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// Orders a certificate for `names`, answering HTTP-01 from `challenge_dir`, and returns
    /// the PEM chain (leaf first). `replaces` is the ARI identifier of the certificate this
    /// one replaces, when the CA offers ARI.
    pub fn order(
        &self,
        names: &[String],
        csr_der: &[u8],
        challenge_dir: &Path,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<String> {
        self.rt.block_on(timed(
            ORDER_TIMEOUT,
            order(&self.account, names, csr_der, challenge_dir, replaces),
        ))
    }

    /// The CA's ARI window for `leaf_der` and when to ask again (unix seconds); `Ok(None)`
    /// when the CA does not offer ARI.
    pub fn renewal_info(&self, leaf_der: &[u8], now: i64) -> Result<Option<(AriWindow, i64)>> {
        let Some(id) = cert_id(leaf_der) else {
            return Ok(None);
        };
        let fut = self.account.renewal_info(&id);
        let got = self.rt.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, fut)
                .await
                .map_err(|_| anyhow!("timed out"))
        })?;
        match got {
            Ok((info, retry)) => {
                let window = AriWindow {
                    start: info.suggested_window.start.unix_timestamp(),
                    end: info.suggested_window.end.unix_timestamp(),
                };
                let next = now
                    + i64::try_from(retry.as_secs())
                        .unwrap_or(i64::MAX / 4)
                        .clamp(3_600, 86_400);
                Ok(Some((window, next)))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(anyhow!(e).context("ARI lookup failed")),
        }
    }
}

/// The RFC 9773 certificate identifier (AKI keyIdentifier + serial), when the leaf has an AKI.
pub fn cert_id(leaf_der: &[u8]) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })?;
    Some(
        CertificateIdentifier::new(
            rustls_pki_types::Der::from_slice(aki),
            rustls_pki_types::Der::from_slice(cert.tbs_certificate.raw_serial()),
        )
        .into_owned(),
    )
}

async fn timed<T>(limit: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => bail!("gave up after {} s", limit.as_secs()),
    }
}

async fn account(cfg: &Config, http: Box<dyn HttpClient>) -> Result<Account> {
    let directory = cfg.acme.directory.clone();
    let path = state::account_file(cfg, &directory);
    match fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredAccount = serde_json::from_slice(&bytes)
                .with_context(|| format!("unreadable account file {}", path.display()))?;
            if stored.directory != directory {
                bail!(
                    "account file {} belongs to {}, not {directory}",
                    path.display(),
                    stored.directory
                );
            }
            return Account::builder_with_http(http)
                .from_credentials(stored.credentials)
                .await
                .context("failed to restore the ACME account");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
    let contact = cfg.acme.contact_uris();
    let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = if cfg.acme.eab_kid.is_empty() {
        None
    } else {
        Some(ExternalAccountKey::new(
            cfg.acme.eab_kid.clone(),
            &cfg.acme.eab_key()?,
        ))
    };
    let (account, credentials) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contact_refs,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            eab.as_ref(),
        )
        .await
        .context("failed to create the ACME account")?;
    let stored = StoredAccount {
        directory,
        credentials,
    };
    state::write_private(&path, &serde_json::to_vec_pretty(&stored)?)?;
    tracing::info!(account = account.id(), file = %path.display(), "created an ACME account");
    Ok(account)
}

/// Removes the challenge files it holds when dropped, on every path out of an order.
struct Tokens(Vec<PathBuf>);

impl Drop for Tokens {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Err(e) = fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), "failed to remove a challenge file: {e}");
            }
        }
    }
}

fn write_token(dir: &Path, token: &str, key_auth: &str) -> Result<PathBuf> {
    // A token is base64url (RFC 8555 §8.3); anything else could name a path.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("the CA sent a malformed challenge token");
    }
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let path = dir.join(token);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    f.write_all(key_auth.as_bytes())?;
    Ok(path)
}

async fn order(
    account: &Account,
    names: &[String],
    csr_der: &[u8],
    challenge_dir: &Path,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<String> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut new = NewOrder::new(&ids);
    if let Some(r) = replaces {
        new = new.replaces(r);
    }
    let mut order = account
        .new_order(&new)
        .await
        .context("the CA refused the order")?;
    let mut tokens = Tokens(Vec::new());
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.context("failed to fetch an authorization")?;
            let who = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("authorization for {who} is {other:?}"),
            }
            let mut ch = authz
                .challenge(ChallengeType::Http01)
                .with_context(|| format!("the CA offers no http-01 challenge for {who}"))?;
            let key_auth = ch.key_authorization();
            tokens
                .0
                .push(write_token(challenge_dir, &ch.token, key_auth.as_str())?);
            ch.set_ready()
                .await
                .with_context(|| format!("failed to start the challenge for {who}"))?;
        }
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(100))
        .backoff(1.5)
        .timeout(Duration::from_secs(90));
    let status = order
        .poll_ready(&retry)
        .await
        .context("the order did not become ready")?;
    if status != OrderStatus::Ready {
        let mut why = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(Ok(authz)) = authzs.next().await {
            let who = authz.identifier().to_string();
            for ch in &authz.challenges {
                if let Some(err) = &ch.error {
                    why.push(format!("{who}: {err}"));
                }
            }
        }
        bail!(
            "the challenge failed ({status:?}): {}",
            if why.is_empty() {
                "no details from the CA".to_string()
            } else {
                why.join("; ")
            }
        );
    }
    order
        .finalize_csr(csr_der)
        .await
        .context("the CA refused the CSR")?;
    let chain = order
        .poll_certificate(&retry)
        .await
        .context("the CA did not issue the certificate")?;
    drop(tokens);
    Ok(chain)
}

/// An HTTPS client that trusts the system roots plus `[acme] ca_bundle`, with timeouts, and
/// records Retry-After on error responses.
fn http_client(cfg: &Config, retry_after: RetrySlot) -> Result<Box<dyn HttpClient>> {
    let mut roots = rustls::RootCertStore::empty();
    let mut add = |path: &Path, required: bool| -> Result<()> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let pem = certs::parse_pem(&bytes).with_context(|| path.display().to_string())?;
        let (added, _) = roots.add_parsable_certificates(
            pem.certs
                .into_iter()
                .map(rustls_pki_types::CertificateDer::from),
        );
        if required && added == 0 {
            bail!("{} holds no usable certificate", path.display());
        }
        Ok(())
    };
    add(Path::new(SYSTEM_ROOTS), false)?;
    if !cfg.acme.ca_bundle.as_os_str().is_empty() {
        add(&cfg.acme.ca_bundle, true).context("[acme] ca_bundle")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Box::new(Recording {
        inner: Box::new(client),
        retry_after,
    }))
}

struct Recording {
    inner: Box<dyn HttpClient>,
    retry_after: RetrySlot,
}

impl HttpClient for Recording {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(r) => r?,
                Err(_) => return Err(instant_acme::Error::Str("request to the CA timed out")),
            };
            if rsp.parts.status.as_u16() >= 400
                && let Some(at) = rsp
                    .parts
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, crate::reconcile::now()))
                && let Ok(mut s) = slot.lock()
            {
                *s = Some(at);
            }
            Ok(rsp)
        })
    }
}

/// A Retry-After value (delay-seconds or IMF-fixdate) as an absolute unix time.
pub fn parse_retry_after(value: &str, now: i64) -> Option<i64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)));
    }
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = v.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, mon, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as i64
        + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (yy, mm) = if month <= 2 {
        (y - 1, month + 9)
    } else {
        (y, month - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120", 1000), Some(1120));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 0),
            Some(784_111_777)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", 5),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2028 12:00:00 GMT", 0),
            Some(1_835_438_400)
        );
        for bad in ["", "soon", "-5", "Sun, 06 Nov 1994 08:49:37 CET"] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn tokens_must_be_base64url() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", "a.b", "a b"] {
            assert!(write_token(dir.path(), bad, "k").is_err(), "{bad}");
        }
        let p = write_token(dir.path(), "Ab-_9", "Ab-_9.thumb").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "Ab-_9.thumb");
        drop(Tokens(vec![p.clone()]));
        assert!(!p.exists());
    }
}
