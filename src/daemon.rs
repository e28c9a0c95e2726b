//! `dirhost watch`: keeps the servers in step with /srv until told to stop.
//!
//! What it owns: the process side of the watcher. One loop on one thread: a full resync at
//! start, then events from `watch` are batched and each batch is ONE call to
//! [`reconcile::reconcile`] scoped to the dirty domains (so at most one reload per service
//! per batch). A full resync also runs periodically (`[watch] resync_secs`, ±10 %), after an
//! inotify queue overflow, on SIGHUP, and every few seconds while the inotify watch limit
//! keeps some directories unwatched. Failures are retried with backoff (1 s, 2 s, 4 s … 5 min)
//! and never stop the loop. It also speaks the process protocol a Debian admin expects:
//! `READY=1`, `WATCHDOG=1` and `STOPPING=1` to systemd (sd_notify, when `$NOTIFY_SOCKET` is
//! set), SIGTERM/SIGINT finish the current batch and return, SIGHUP re-reads the config file
//! (a broken one is reported and the old one kept).
//!
//! Certificates and DNS publication run beside it, in the [`acme::Maintainer`] thread: it
//! starts after the first full resync (so the ACME challenge directory is live), is kicked
//! with the domains of every batch as the batch starts (and with the domains a full resync
//! changed), so a new site gets its certificate at once rather than at the twice-daily pass;
//! it is restarted with the new configuration on SIGHUP and stopped (after the domain in
//! progress) on SIGTERM/SIGINT. The loop never waits for it, except to stop it.
//!
//! What it must not do: render, plan, write or reload anything itself (that is
//! `reconcile`'s), read /srv other than through `watch` (and the index of /srv's `lstat`
//! of a batch's dirty entries, `model::srvindex`), or poll. Between events it sleeps in
//! one blocking receive whose timeout is the next deadline (a batch, a retry, a resync, a
//! watchdog ping): an idle daemon does not wake up otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};
use notify::EventKind;

use crate::acme;
use crate::config::{self, Config};
use crate::model::srvindex::Shared as SrvIndexCell;
use crate::reconcile::{self, Report, Request};
use crate::watch::{Batch, Tree};

/// A continuous stream of events is still reconciled at least this often.
const MAX_BATCH_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between retries of a failing domain or resync.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long SIGTERM waits for the certificate maintainer's order in progress (the unit's
/// `TimeoutStopSec` is 2 min).
const MAINTAINER_STOP: Duration = Duration::from_secs(60);
/// While the watch limit leaves directories unwatched, full scans run this often (or every
/// four times as long as the last full scan took, if that is longer).
const FALLBACK_SCAN: Duration = Duration::from_secs(5);

/// What wakes the loop.
enum Msg {
    /// From the watcher's thread (`kernelwatch`) (access events are already dropped there).
    Fs(notify::Result<notify::Event>),
    /// From the signal thread.
    Signal(Signal),
}

/// Runs the watcher until SIGTERM or SIGINT (`dirhost watch`, `dirhost demo`). Returns
/// `Ok(())` after a signal; reconcile failures are logged and retried, never returned.
pub fn run_until_signal(cfg: &Config, config_path: &Path) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    forward_signals(tx.clone())?;
    let _stats = crate::stats::schedule::start(cfg); // daily statistics, own thread
    let result = Daemon::new(cfg.clone(), config_path, tx).run(&rx);
    *FORWARD.lock().unwrap_or_else(PoisonError::into_inner) = None;
    result
}

// ---------------------------------------------------------------------------------------
// Signals: blocked in this thread (and so in every thread started after it, the watcher's
// included) and received by one thread with sigwait(2), which forwards them to the loop. No
// code runs in signal context. Children do not inherit the mask: std resets it before exec.

/// Where the signal thread sends what it receives (the running loop, if any).
static FORWARD: Mutex<Option<Sender<Msg>>> = Mutex::new(None);
/// The signal thread, started once per process.
static SIGNAL_THREAD: OnceLock<std::result::Result<(), String>> = OnceLock::new();

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

fn forward_signals(tx: Sender<Msg>) -> Result<()> {
    let set = handled_signals();
    set.thread_block()
        .context("failed to block SIGTERM, SIGINT and SIGHUP")?;
    *FORWARD.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    let started = SIGNAL_THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("dirhost-signals".into())
            .spawn(move || {
                loop {
                    if let Ok(sig) = set.wait() {
                        let fwd = FORWARD.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(tx) = fwd.as_ref() {
                            let _ = tx.send(Msg::Signal(sig));
                        }
                    }
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    started
        .clone()
        .map_err(|e| anyhow::anyhow!("failed to start the signal thread: {e}"))
}

// ---------------------------------------------------------------------------------------
// sd_notify(3), without libsystemd: one datagram per state change to $NOTIFY_SOCKET (a path,
// or an abstract socket name written with a leading '@').

struct SdNotify {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl SdNotify {
    fn from_env() -> Option<Self> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let raw = std::env::var_os("NOTIFY_SOCKET")?;
        let addr = match raw.as_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(Path::new(&raw)),
        };
        let addr = addr
            .map_err(|e| tracing::warn!("NOTIFY_SOCKET {raw:?} is not usable: {e}"))
            .ok()?;
        let sock = UnixDatagram::unbound()
            .map_err(|e| tracing::warn!("cannot create the sd_notify socket: {e}"))
            .ok()?;
        Some(Self { sock, addr })
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::debug!("sd_notify {state:?}: {e}");
        }
    }
}

/// Half of `$WATCHDOG_USEC`, when the watchdog is meant for this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

// ---------------------------------------------------------------------------------------
// Retries.

/// The wait before retry number `attempt` (1-based): 1 s, 2 s, 4 s … capped at 5 min.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

#[derive(Debug)]
struct Retry {
    attempts: u32,
    /// `None` while the retry is in flight.
    next: Option<Instant>,
    reason: String,
}

/// Domains whose last reconcile failed, and when to try each again.
#[derive(Debug, Default)]
pub struct Retries {
    domains: BTreeMap<String, Retry>,
}

/// What [`Retries::failed`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Failed {
    /// Failures in a row, this one included.
    pub attempts: u32,
    /// Until the next try.
    pub delay: Duration,
    /// The reason differs from the previous failure's (worth a warning, not just debug).
    pub new_reason: bool,
}

impl Retries {
    /// Records a failure of `domain` at `now`.
    pub fn failed(&mut self, domain: &str, reason: &str, now: Instant) -> Failed {
        let r = self.domains.entry(domain.to_string()).or_insert(Retry {
            attempts: 0,
            next: None,
            reason: String::new(),
        });
        r.attempts += 1;
        let delay = backoff(r.attempts);
        r.next = Some(now + delay);
        let new_reason = r.reason != reason;
        if new_reason {
            r.reason = reason.to_string();
        }
        Failed {
            attempts: r.attempts,
            delay,
            new_reason,
        }
    }

    /// Records a success; true if `domain` had been failing.
    pub fn succeeded(&mut self, domain: &str) -> bool {
        self.domains.remove(domain).is_some()
    }

    /// The domains due for a retry at `now` (each is then in flight until its result is
    /// recorded).
    pub fn take_due(&mut self, now: Instant) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (d, r) in &mut self.domains {
            if r.next.is_some_and(|t| t <= now) {
                r.next = None;
                out.insert(d.clone());
            }
        }
        out
    }

    /// When the next retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.domains.values().filter_map(|r| r.next).min()
    }

    /// Every domain that is failing.
    pub fn domains(&self) -> impl Iterator<Item = &String> {
        self.domains.keys()
    }
}

/// Why each domain in `report` failed, by ASCII name (the same domains as
/// [`Report::failed_domains`]).
fn failure_reasons(report: &Report) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in &report.skipped {
        if let Ok(ascii) = crate::model::validate::domain_name(&s.name) {
            out.insert(ascii, format!("skipped: {}", s.reason));
        }
    }
    for (d, e) in &report.render_failed {
        out.insert(d.clone(), format!("templates failed: {e}"));
    }
    for (d, e) in &report.outcome.culprits {
        out.insert(
            d.clone(),
            format!("refused by the config test, previous configuration kept: {e}"),
        );
    }
    out
}

/// `base` ± 10 %, different in every process (so a fleet does not resync in step).
fn jittered(base: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // 53 random bits → [0, 1).
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.9 + 0.2 * unit)
}

// ---------------------------------------------------------------------------------------
// The loop.

struct Daemon {
    cfg: Config,
    config_path: PathBuf,
    tx: Sender<Msg>,
    tree: Tree,
    batch: Batch<String>,
    retries: Retries,
    /// The next scheduled full resync (periodic, requested, or a retry of a failed one).
    resync_at: Instant,
    /// Failed full resyncs in a row.
    full_failures: u32,
    /// How long the last full resync took, and when it ended.
    last_full: (Duration, Instant),
    sd: Option<SdNotify>,
    /// Watchdog ping interval and the next ping.
    watchdog: Option<(Duration, Instant)>,
    /// Certificates and DNS publication, off the hot path (`None` until the first full
    /// resync, or if its thread could not start).
    maintainer: Option<acme::Maintainer>,
    /// /srv's entries, built by each full resync and updated from each batch's dirty
    /// entries, so a batch's scoped load does not list /srv (`model::srvindex`). Dropped on
    /// overflow, inotify errors, SIGHUP and any doubt; used only while /srv is watched.
    srv_index: SrvIndexCell,
}

/// Starts dirhost's inotify watcher (`kernelwatch`), sending every non-access event to the loop. Without
/// inotify (say `fs.inotify.max_user_instances` is exhausted) the tree says it is limited
/// and the loop scans periodically instead.
fn make_tree(cfg: &Config, tx: &Sender<Msg>) -> Tree {
    let tx = tx.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        // Every open and read of a watched directory is an event; none of them matters.
        if let Ok(ev) = &res
            && matches!(ev.kind, EventKind::Access(_))
        {
            return;
        }
        let _ = tx.send(Msg::Fs(res));
    };
    match crate::kernelwatch::Watcher::new(handler) {
        Ok(w) => Tree::new(&cfg.paths.srv, Box::new(w), cfg.watch.max_watches),
        Err(e) => Tree::without_inotify(&cfg.paths.srv, e.to_string()),
    }
}

/// Batches at least this big are followed by [`release_memory`].
const BIG_BATCH: usize = 100;

use crate::model::release_memory;

fn new_batch(cfg: &Config) -> Batch<String> {
    Batch::new(
        Duration::from_millis(cfg.watch.debounce_ms),
        MAX_BATCH_DELAY,
    )
}

impl Daemon {
    fn new(cfg: Config, config_path: &Path, tx: Sender<Msg>) -> Self {
        let now = Instant::now();
        let sd = SdNotify::from_env();
        let watchdog = sd
            .as_ref()
            .and(watchdog_interval())
            .map(|every| (every, now + every));
        Self {
            tree: make_tree(&cfg, &tx),
            batch: new_batch(&cfg),
            retries: Retries::default(),
            resync_at: now,
            full_failures: 0,
            last_full: (Duration::ZERO, now),
            sd,
            watchdog,
            maintainer: None,
            srv_index: SrvIndexCell::default(),
            config_path: config_path.to_path_buf(),
            cfg,
            tx,
        }
    }

    fn notify(&self, state: &str) {
        if let Some(sd) = &self.sd {
            sd.send(state);
        }
    }

    fn ping_watchdog(&mut self, now: Instant) {
        if let Some((every, _)) = self.watchdog {
            self.notify("WATCHDOG=1");
            self.watchdog = Some((every, now + every));
        }
    }

    fn run(&mut self, rx: &Receiver<Msg>) -> Result<()> {
        tracing::info!(
            "dirhost watch: {} (config {})",
            self.cfg.paths.srv.display(),
            self.config_path.display()
        );
        self.full_resync();
        self.start_maintainer();
        self.notify("READY=1");
        tracing::info!(
            "ready: watching {} directories under {}",
            self.tree.watch_count(),
            self.cfg.paths.srv.display()
        );
        loop {
            let timeout = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(Msg::Fs(Ok(ev))) => self.on_event(&ev),
                Ok(Msg::Fs(Err(e))) => {
                    tracing::warn!("inotify: {e}; rescanning {}", self.cfg.paths.srv.display());
                    self.srv_index.clear();
                    self.request_resync();
                }
                Ok(Msg::Signal(Signal::SIGHUP)) => self.reload_config(),
                Ok(Msg::Signal(sig)) => {
                    self.notify("STOPPING=1");
                    if !self.batch.is_empty() {
                        tracing::info!(
                            "{} changed domain(s) not reconciled yet; the next start's full resync covers them",
                            self.batch.len()
                        );
                    }
                    tracing::info!("{sig}: stopping");
                    if let Some(m) = self.maintainer.take()
                        && !m.stop_within(MAINTAINER_STOP)
                    {
                        tracing::warn!(
                            "the certificate maintainer is still in an order after {MAINTAINER_STOP:?}; \
                             exiting anyway (the attempt is counted, its backoff applies)"
                        );
                    }
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("the event channel closed"),
            }
            self.due_work(Instant::now());
        }
    }

    /// The earliest thing the loop has to do without being woken by an event.
    fn next_deadline(&self) -> Instant {
        [
            Some(self.next_resync()),
            self.batch.due(),
            self.retries.next_due(),
            self.watchdog.map(|(_, at)| at),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| self.next_resync())
    }

    fn next_resync(&self) -> Instant {
        if self.tree.limited() && self.full_failures == 0 {
            let (took, ended) = self.last_full;
            self.resync_at.min(ended + FALLBACK_SCAN.max(took * 4))
        } else {
            self.resync_at
        }
    }

    /// A full resync soon (after the debounce window, so a storm of events settles first).
    fn request_resync(&mut self) {
        let at = Instant::now() + Duration::from_millis(self.cfg.watch.debounce_ms);
        self.resync_at = self.resync_at.min(at);
    }

    fn on_event(&mut self, ev: &notify::Event) {
        tracing::trace!("{ev:?}");
        let now = Instant::now();
        let noted = self.tree.note(ev);
        if noted.rescan {
            tracing::info!("events were lost or /srv itself changed: full resync");
            self.srv_index.clear();
            self.request_resync();
        }
        for entry in noted.entries {
            self.batch.add(entry, now);
        }
    }

    fn due_work(&mut self, now: Instant) {
        if self.watchdog.is_some_and(|(_, at)| at <= now) {
            self.ping_watchdog(now);
        }
        if self.next_resync() <= now {
            self.full_resync();
            return;
        }
        let entries = self.batch.take(now);
        let retry = self.retries.take_due(now);
        if entries.is_some() || !retry.is_empty() {
            self.reconcile_batch(entries.unwrap_or_default(), retry);
        }
    }

    /// Re-watches everything and reconciles every domain.
    fn full_resync(&mut self) {
        let start = Instant::now();
        self.ping_watchdog(start);
        // Whatever was pending is covered; watches first, so that a change made while the
        // reconcile reads /srv produces an event.
        self.batch.clear();
        if let Err(e) = self.tree.refresh_all() {
            tracing::error!("{e:#}");
        }
        // The index of /srv is rebuilt from this resync's listing, when /srv is watched
        // (else its entries' changes would go unseen).
        self.srv_index.clear();
        let req = Request {
            srv_index: self.tree.watches_srv().then(|| self.srv_index.clone()),
            ..Request::default()
        };
        let result = reconcile::reconcile(&self.cfg, &self.config_path, &req);
        let end = Instant::now();
        self.last_full = (end - start, end);
        match result {
            Ok(report) => {
                self.full_failures = 0;
                self.record(&report, None, end);
                // A domain a full resync changed (say found by a fallback scan) gets its
                // certificate as soon as one made by an event would.
                let changed: BTreeSet<String> = report
                    .outcome
                    .applied
                    .iter()
                    .filter_map(|c| c.domain.clone())
                    .collect();
                self.kick(changed);
                self.resync_at = end + jittered(Duration::from_secs(self.cfg.watch.resync_secs));
                let (changes, failing) =
                    (report.outcome.applied.len(), self.retries.domains().count());
                let took_ms = (end - start).as_millis() as u64;
                // While the watch limit forces a scan every few seconds, quiet ones are debug.
                if self.tree.limited() && changes == 0 {
                    tracing::debug!(
                        took_ms,
                        "full resync: no changes, {failing} domain(s) failing"
                    );
                } else {
                    tracing::info!(
                        srv_index = self.srv_index.entries(),
                        took_ms,
                        "full resync: {changes} changes, {failing} domain(s) failing"
                    );
                }
                self.notify(&format!(
                    "STATUS=watching {} directories; {} domain(s) failing",
                    self.tree.watch_count(),
                    self.retries.domains().count()
                ));
            }
            Err(e) => {
                self.full_failures += 1;
                let delay = backoff(self.full_failures);
                self.resync_at = end + delay;
                tracing::error!(
                    "full resync failed (attempt {}), retrying in {delay:?}: {e:#}",
                    self.full_failures
                );
                self.notify(&format!("STATUS=full resync failing: {e:#}"));
            }
        }
        release_memory();
        self.ping_watchdog(Instant::now());
    }

    /// Reconciles the domains of these dirty /srv entries, plus domains due for a retry, in
    /// one call.
    fn reconcile_batch(&mut self, entries: BTreeSet<String>, retry: BTreeSet<String>) {
        let mut domains = self.tree.resolve(&entries);
        for entry in &entries {
            self.tree.refresh(entry);
        }
        domains.extend(retry);
        // The dirty entries are looked at again in the index (whatever their events said;
        // even those that dirty no domain: a symlink with a bad name is still looked at by
        // a load), so the scoped load takes /srv's entries from it rather than listing /srv.
        let indexed = self.tree.watches_srv()
            && self
                .srv_index
                .update(&self.cfg.paths.srv, entries.iter().map(String::as_str));
        if !indexed {
            self.srv_index.clear();
        }
        if domains.is_empty() {
            return;
        }
        let span = tracing::info_span!("batch", domains = domains.len());
        let _enter = span.enter();
        let start = Instant::now();
        self.ping_watchdog(start);
        // The certificate maintainer looks at these domains now, in parallel with the
        // reconcile below: HTTP-01 answers come from the shared configuration, which needs
        // no vhost of the site, so the order overlaps the config test and reload (a domain
        // the model refuses is reported by the maintainer and never ordered).
        self.kick(domains.clone());
        let req = Request {
            only: Some(domains.clone()),
            srv_index: indexed.then(|| self.srv_index.clone()),
            ..Request::default()
        };
        let result = reconcile::reconcile(&self.cfg, &self.config_path, &req);
        let end = Instant::now();
        match result {
            Ok(report) => {
                self.record(&report, Some(&domains), end);
                tracing::debug!(
                    took_ms = (end - start).as_millis() as u64,
                    srv_index = indexed,
                    "reconciled {} domain(s): {} changes",
                    domains.len(),
                    report.outcome.applied.len()
                );
            }
            Err(e) => {
                let reason = format!("{e:#}");
                let mut delay = Duration::ZERO;
                for d in &domains {
                    delay = delay.max(self.retries.failed(d, &reason, end).delay);
                }
                tracing::error!(
                    "reconcile of {} domain(s) failed, retrying in {delay:?}: {reason}",
                    domains.len()
                );
            }
        }
        if domains.len() >= BIG_BATCH {
            release_memory();
        }
        self.ping_watchdog(Instant::now());
    }

    /// Logs what a reconcile did, per domain, and updates the retries. `scope`: the domains
    /// asked for (`None`: all).
    fn record(&mut self, report: &Report, scope: Option<&BTreeSet<String>>, now: Instant) {
        let in_scope = |d: &String| scope.is_none_or(|s| s.contains(d));
        let reasons = failure_reasons(report);
        for (d, why) in reasons.iter().filter(|(d, _)| in_scope(d)) {
            let f = self.retries.failed(d, why, now);
            let _s = tracing::info_span!("domain", domain = %d).entered();
            if f.new_reason {
                tracing::warn!("{why}; retrying in {:?}", f.delay);
            } else {
                tracing::debug!(
                    attempts = f.attempts,
                    "still failing, retrying in {:?}: {why}",
                    f.delay
                );
            }
        }
        let recovered: Vec<String> = match scope {
            Some(s) => s
                .iter()
                .filter(|d| !reasons.contains_key(*d))
                .cloned()
                .collect(),
            None => self
                .retries
                .domains()
                .filter(|d| !reasons.contains_key(*d))
                .cloned()
                .collect(),
        };
        for d in recovered {
            if self.retries.succeeded(&d) {
                let _s = tracing::info_span!("domain", domain = %d).entered();
                tracing::info!("reconciled after earlier failures");
            }
        }
        let mut changes: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for c in &report.outcome.applied {
            *changes.entry(c.domain.as_deref()).or_default() += 1;
        }
        for (d, n) in changes {
            match d {
                Some(d) => {
                    let _s = tracing::info_span!("domain", domain = %d).entered();
                    tracing::info!("{n} change(s) live");
                }
                None => tracing::info!("{n} shared change(s) live"),
            }
        }
        if !report.outcome.reloaded.is_empty() {
            tracing::info!("reloaded {:?}", report.outcome.reloaded);
        }
    }

    /// Starts the certificate maintainer with the current configuration.
    fn start_maintainer(&mut self) {
        match acme::Maintainer::start(self.cfg.clone(), self.config_path.clone()) {
            Ok(m) => self.maintainer = Some(m),
            Err(e) => {
                tracing::error!("{e:#}; certificates are only renewed by `dirhost ssl renew`")
            }
        }
    }

    /// Asks the certificate maintainer to look at `domains` now.
    fn kick(&self, domains: BTreeSet<String>) {
        if let Some(m) = &self.maintainer
            && !domains.is_empty()
        {
            tracing::debug!("certificates: looking at {} domain(s)", domains.len());
            m.kick(domains);
        }
    }

    /// SIGHUP: re-read the config file; keep the old one if the new one is unusable. Then a
    /// full resync either way.
    fn reload_config(&mut self) {
        let explicit = self.config_path != Path::new(config::DEFAULT_CONFIG_PATH);
        // Templates are compiled again too (an admin may have changed a built-in override's
        // directory, which the cache's change check does not see).
        crate::render::clear_template_cache();
        match Config::load(&self.config_path, explicit) {
            Ok(new) => {
                if new.paths.srv != self.cfg.paths.srv
                    || new.watch.max_watches != self.cfg.watch.max_watches
                {
                    // Dropping the old watcher closes its inotify instance and thread.
                    self.tree = make_tree(&new, &self.tx);
                }
                self.batch = new_batch(&new);
                self.cfg = new;
                tracing::warn!(
                    "SIGHUP: reloaded {}; full resync",
                    self.config_path.display()
                );
                // The certificate maintainer starts again with the new configuration. The
                // old one finishes the domain in progress in the background, so the watcher
                // never waits for a CA.
                if let Some(old) = self.maintainer.take() {
                    let _ = std::thread::Builder::new()
                        .name("dirhost-acme-stop".into())
                        .spawn(move || old.stop());
                }
                self.start_maintainer();
            }
            Err(e) => tracing::error!("SIGHUP: {e:#}; keeping the previous configuration"),
        }
        self.srv_index.clear();
        self.resync_at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn retries_back_off_per_domain_and_clear_on_success() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Retries::default();
        assert_eq!(r.next_due(), None);
        let f = r.failed("a.test", "reload failed", t0);
        assert_eq!(
            f,
            Failed {
                attempts: 1,
                delay: s(1),
                new_reason: true
            }
        );
        r.failed("b.test", "bad ip", t0);
        assert_eq!(r.next_due(), Some(t0 + s(1)));
        assert!(r.take_due(t0).is_empty());
        let due = r.take_due(t0 + s(1));
        assert_eq!(due, BTreeSet::from(["a.test".into(), "b.test".into()]));
        // In flight: not due again until a result is recorded.
        assert!(r.take_due(t0 + s(100)).is_empty());
        assert_eq!(r.next_due(), None);
        // a fails again the same way (quietly, twice as long); b is fixed.
        let f = r.failed("a.test", "reload failed", t0 + s(1));
        assert_eq!((f.attempts, f.delay, f.new_reason), (2, s(2), false));
        assert!(r.succeeded("b.test"));
        assert!(!r.succeeded("c.test"));
        assert_eq!(r.domains().collect::<Vec<_>>(), ["a.test"]);
        assert_eq!(r.next_due(), Some(t0 + s(3)));
        // A different reason is worth a warning again.
        assert!(r.failed("a.test", "other", t0 + s(3)).new_reason);
    }

    #[test]
    fn failure_reasons_name_every_failed_domain() {
        let mut report = Report::default();
        report.skipped.push(crate::model::Skipped {
            name: "b\u{fc}cher.test".into(),
            reason: "owned by uid 0".into(),
        });
        report.skipped.push(crate::model::Skipped {
            name: "Not A Domain".into(),
            reason: "bad name".into(),
        });
        report.render_failed.insert("r.test".into(), "boom".into());
        report
            .outcome
            .culprits
            .insert("c.test".into(), "AH00526".into());
        let r = failure_reasons(&report);
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            ["c.test", "r.test", "xn--bcher-kva.test"]
        );
        assert!(r["xn--bcher-kva.test"].contains("owned by uid 0"));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(600);
        for _ in 0..100 {
            let j = jittered(base);
            assert!(
                j >= Duration::from_secs(540) && j <= Duration::from_secs(660),
                "{j:?}"
            );
        }
    }

    #[test]
    fn sd_notify_speaks_datagrams_to_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sd = SdNotify {
            sock: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
        };
        sd.send("READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
