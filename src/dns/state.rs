//! What dirhost remembers between exports, under `<state>/dns/` (root's, never under /srv):
//!
//! * `domains/<domain>.json`: per zone the content hash and SOA serial; the hash of the
//!   records last handed to the hooks, those zones, and since when each TLSA association has
//!   been published (the ACME key-rollover rule reads this, see [`key_may_go_live`]).
//! * `zones/{bind,octodns,json}/`: the zones as last handed to the hooks (one file per zone;
//!   `<zone>.zone`, `<zone>.yaml`, `<zone>.json`), so a hook can sync from a stable place.
//! * `lock`: serialises the CLI and the daemon.
//!
//! Hooks: every executable in `[dns] hooks_dir` whose name matches `^[A-Za-z0-9_-]+$` runs,
//! in name order, with the argument `dns-update`, the changed zones on stdin (one per line),
//! and `DIRHOST_DNS_ZONES` naming the `zones/` directory. A hook that fails or runs longer
//! than [`HOOK_TIMEOUT`] is reported and the change is offered again next time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Export;
use super::format;
use super::records::{DomainZones, Zone, spki_sha256_hex};
use crate::config::Config;

/// How long one hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// One domain's remembered state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainState {
    /// The domain's directory name in /srv (to tell a removed domain from a skipped one).
    pub dir_name: String,
    /// Zone → content hash and serial.
    pub zones: BTreeMap<String, ZoneState>,
    /// Hash of the records the hooks last accepted.
    pub published_hash: Option<String>,
    /// The zones handed to the hooks then.
    pub published_zones: Vec<String>,
    /// TLSA association data (hex) → when it was first published (unix seconds).
    pub tlsa_published: BTreeMap<String, i64>,
    /// The zones' TTL then.
    pub ttl: u32,
}

/// One zone's content hash and serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneState {
    /// SHA-256 of the zone without its serial.
    pub hash: String,
    /// The serial given to that content.
    pub serial: u32,
}

/// `<state>/dns`.
pub fn dns_dir(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("dns")
}

fn domain_file(dir: &Path, domain: &str) -> PathBuf {
    dir.join("domains").join(format!("{domain}.json"))
}

fn load(dir: &Path, domain: &str) -> DomainState {
    let path = domain_file(dir, domain);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(path = %path.display(), "unreadable DNS state, starting afresh: {e}");
            DomainState::default()
        }),
        Err(_) => DomainState::default(),
    }
}

fn save(dir: &Path, domain: &str, st: &DomainState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(st)?;
    write_atomic(&domain_file(dir, domain), &bytes)
}

/// Writes `bytes` to `path` atomically (mode 0644), creating parents (0755).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .with_context(|| format!("{} has no parent", path.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .with_context(|| format!("failed to create {}", parent.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(parent)
        .with_context(|| format!("failed to create a temp file in {}", parent.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(())
}

/// Holds `<state>/dns/lock` (released on drop).
fn lock(dir: &Path) -> Result<crate::lockfile::FileLock> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    crate::lockfile::exclusive(&dir.join("lock"), 0o644)
}

/// SHA-256 (hex) of a zone's content, serial excluded.
pub fn zone_hash(zone: &Zone) -> String {
    let mut z = zone.clone();
    z.serial = 0;
    let d = ring::digest::digest(&ring::digest::SHA256, format::bind(&z).as_bytes());
    data_encoding::HEXLOWER.encode(d.as_ref())
}

/// SHA-256 (hex) of all of a domain's zones, serials excluded.
pub fn domain_hash(dz: &DomainZones) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for z in &dz.zones {
        ctx.update(z.name.as_bytes());
        ctx.update(b"\0");
        ctx.update(zone_hash(z).as_bytes());
        ctx.update(b"\n");
    }
    data_encoding::HEXLOWER.encode(ctx.finish().as_ref())
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYYMMDD00` of `now` (UTC).
pub fn date_serial(now: i64) -> u32 {
    let (y, m, d) = civil_from_days(now.div_euclid(86_400));
    let v = y.clamp(1970, 4200) * 1_000_000 + i64::from(m) * 10_000 + i64::from(d) * 100;
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The serial for changed content: the date form, or one more than before when that is not
/// larger (more than 99 changes a day, or a clock set back).
pub fn next_serial(previous: Option<u32>, now: i64) -> u32 {
    let date = date_serial(now);
    match previous {
        Some(p) if p >= date => p.wrapping_add(1).max(1),
        _ => date,
    }
}

/// Gives every zone its serial: unchanged content keeps its serial, changed content gets a
/// larger one. The new serials are remembered; when that fails (say the state directory is
/// not writable) the serials are still set and the error is returned.
pub fn assign_serials(
    cfg: &Config,
    domains: &mut [DomainZones],
    dir_names: &BTreeMap<String, String>,
    now: i64,
) -> Result<()> {
    let dir = dns_dir(cfg);
    let guard = lock(&dir);
    let mut result = guard
        .as_ref()
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e:#}"));
    for dz in domains.iter_mut() {
        let mut st = load(&dir, &dz.domain);
        let before = st.clone();
        for z in &mut dz.zones {
            let hash = zone_hash(z);
            let serial = match st.zones.get(&z.name) {
                Some(zs) if zs.hash == hash => zs.serial,
                prev => next_serial(prev.map(|p| p.serial), now),
            };
            z.serial = serial;
            st.zones.insert(z.name.clone(), ZoneState { hash, serial });
        }
        if let Some(d) = dir_names.get(&dz.domain) {
            st.dir_name = d.clone();
        }
        if st != before
            && guard.is_ok()
            && let Err(e) = save(&dir, &dz.domain, &st)
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    result
}

/// When the TLSA association for the key `spki_der` was first handed to the DNS hooks for
/// `domain`; `None` if it never was.
pub fn tlsa_published_since(cfg: &Config, domain: &str, spki_der: &[u8]) -> Option<i64> {
    load(&dns_dir(cfg), domain)
        .tlsa_published
        .get(&spki_sha256_hex(spki_der))
        .copied()
}

/// Has dirhost ever published a TLSA record for `domain` (that is still in its records)?
/// When not, no key change can break DANE for it.
pub fn tlsa_ever_published(cfg: &Config, domain: &str) -> bool {
    !load(&dns_dir(cfg), domain).tlsa_published.is_empty()
}

/// The rollover rule (README, "DNS"): may a certificate with the key `spki_der` go live for
/// `domain` at `now`? Yes when dirhost has published no TLSA record for the domain (no DANE
/// to break), or when that key's TLSA record has been published for at least one TTL.
/// Otherwise the ACME module must reuse the current key.
pub fn key_may_go_live(cfg: &Config, domain: &str, spki_der: &[u8], now: i64) -> bool {
    let st = load(&dns_dir(cfg), domain);
    if st.tlsa_published.is_empty() {
        return true;
    }
    st.tlsa_published
        .get(&spki_sha256_hex(spki_der))
        .is_some_and(|since| since.saturating_add(i64::from(st.ttl.max(1))) <= now)
}

pub use crate::hooks::HookRun;

/// What [`run_hooks_if_changed`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HookReport {
    /// Domains whose records changed (or that were removed from /srv).
    pub domains: Vec<String>,
    /// The zones handed to the hooks.
    pub zones: Vec<String>,
    /// Each hook's outcome.
    pub runs: Vec<HookRun>,
}

impl HookReport {
    /// Did every hook succeed?
    pub fn ok(&self) -> bool {
        self.runs.iter().all(|r| r.error.is_none())
    }
}

fn zone_files(zones_dir: &Path, zone: &str) -> [PathBuf; 3] {
    [
        zones_dir.join("bind").join(format!("{zone}.zone")),
        zones_dir.join("octodns").join(format!("{zone}.yaml")),
        zones_dir.join("json").join(format!("{zone}.json")),
    ]
}

fn write_zone_files(zones_dir: &Path, z: &Zone) -> Result<()> {
    let [b, o, j] = zone_files(zones_dir, &z.name);
    write_atomic(&b, format::bind(z).as_bytes())?;
    write_atomic(&o, format::octodns(z).as_bytes())?;
    let mut json = serde_json::to_string_pretty(&format::json_zone(z))?;
    json.push('\n');
    write_atomic(&j, json.as_bytes())
}

fn remove_zone_files(zones_dir: &Path, zone: &str) {
    for p in zone_files(zones_dir, zone) {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), "failed to remove an old zone file: {e}");
        }
    }
}

/// Runs the DNS hooks when the records of a domain changed since they last ran
/// successfully (per-domain hash in `<state>/dns/domains/`).
///
/// The changed zones are first written to `<state>/dns/zones/`; the hooks get them on
/// stdin. A full export (not scoped to some domains) also notices domains whose directory
/// left /srv: their zone files are removed and their zones handed to the hooks. Only when
/// every hook succeeded is the change remembered (and the TLSA associations it contains
/// recorded as published at `now`); otherwise it is offered again next time.
pub fn run_hooks_if_changed(cfg: &Config, export: &Export, now: i64) -> Result<HookReport> {
    let dir = dns_dir(cfg);
    let _guard = lock(&dir)?;
    let zones_dir = dir.join("zones");
    let mut report = HookReport::default();
    let mut changed: Vec<(&DomainZones, DomainState, String)> = Vec::new();
    for dz in &export.domains {
        let st = load(&dir, &dz.domain);
        let hash = domain_hash(dz);
        if st.published_hash.as_deref() == Some(hash.as_str()) {
            continue;
        }
        changed.push((dz, st, hash));
    }
    let mut removed: Vec<(String, DomainState)> = Vec::new();
    if export.only.is_none() {
        let present: BTreeSet<&str> = export
            .domains
            .iter()
            .map(|d| d.domain.as_str())
            .chain(export.failed.iter().map(|(d, _)| d.as_str()))
            .chain(export.skipped.iter().map(|(d, _)| d.as_str()))
            .collect();
        for name in list_domains(&dir) {
            if present.contains(name.as_str()) {
                continue;
            }
            let st = load(&dir, &name);
            let entry = if st.dir_name.is_empty() {
                name.clone()
            } else {
                st.dir_name.clone()
            };
            let gone = matches!(
                std::fs::symlink_metadata(cfg.paths.srv.join(&entry)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            );
            if gone {
                removed.push((name, st));
            }
        }
    }
    if changed.is_empty() && removed.is_empty() {
        return Ok(report);
    }
    let mut zones: BTreeSet<String> = BTreeSet::new();
    for (dz, st, _) in &changed {
        let now_zones: BTreeSet<&str> = dz.zones.iter().map(|z| z.name.as_str()).collect();
        for z in &dz.zones {
            write_zone_files(&zones_dir, z)?;
            zones.insert(z.name.clone());
        }
        for old in &st.published_zones {
            if !now_zones.contains(old.as_str()) {
                remove_zone_files(&zones_dir, old);
                zones.insert(old.clone());
            }
        }
        report.domains.push(dz.domain.clone());
    }
    for (name, st) in &removed {
        for old in &st.published_zones {
            remove_zone_files(&zones_dir, old);
            zones.insert(old.clone());
        }
        report.domains.push(name.clone());
    }
    report.zones = zones.into_iter().collect();
    report.runs = run_hooks(&cfg.dns.hooks_dir, &report.zones, &zones_dir);
    if !report.ok() {
        return Ok(report);
    }
    for (dz, mut st, hash) in changed {
        st.published_hash = Some(hash);
        st.published_zones = dz.zones.iter().map(|z| z.name.clone()).collect();
        let live: BTreeSet<String> = dz.zones.iter().flat_map(Zone::tlsa_data).collect();
        st.tlsa_published.retain(|k, _| live.contains(k));
        for k in live {
            st.tlsa_published.entry(k).or_insert(now);
        }
        st.ttl = dz.zones.first().map_or(0, |z| z.ttl);
        save(&dir, &dz.domain, &st)?;
    }
    for (name, _) in removed {
        let p = domain_file(&dir, &name);
        std::fs::remove_file(&p).with_context(|| format!("failed to remove {}", p.display()))?;
    }
    Ok(report)
}

fn list_domains(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir.join("domains")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| crate::model::validate::domain_name(n).is_ok_and(|a| a == *n))
        .collect();
    out.sort();
    out
}

/// Runs every hook in `dir` with `zones` on stdin (the shared runner, [`crate::hooks`]).
/// A missing directory means no hooks.
pub fn run_hooks(dir: &Path, zones: &[String], zones_dir: &Path) -> Vec<HookRun> {
    crate::hooks::Hooks {
        dir,
        arg: "dns-update",
        env: &[("DIRHOST_DNS_ZONES", zones_dir)],
        timeout: HOOK_TIMEOUT,
        what: "DNS",
    }
    .run(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_dates_and_always_grow() {
        // 2024-02-29 12:00 UTC
        let t = 1_709_208_000;
        assert_eq!(date_serial(t), 2024022900);
        assert_eq!(date_serial(0), 1970010100);
        assert_eq!(next_serial(None, t), 2024022900);
        assert_eq!(next_serial(Some(2024022805), t), 2024022900);
        assert_eq!(next_serial(Some(2024022900), t), 2024022901);
        // The clock went back: still larger than before.
        assert_eq!(next_serial(Some(2030010100), t), 2030010101);
    }

    #[test]
    fn hooks_get_the_zones_and_failures_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        let script = |name: &str, body: &str, mode: u32| {
            let p = hooks.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        script(
            "10-record",
            &format!(
                "#!/bin/sh\necho \"$1 $DIRHOST_DNS_ZONES\" > {o}\ncat >> {o}\n",
                o = out.display()
            ),
            0o755,
        );
        script("20-fail", "#!/bin/sh\necho boom >&2\nexit 3\n", 0o755);
        script("30-not-executable", "#!/bin/sh\nexit 1\n", 0o644);
        script("bad.name", "#!/bin/sh\nexit 1\n", 0o755);
        let zones = vec!["a.test".to_string(), "b.test".to_string()];
        let runs = run_hooks(&hooks, &zones, Path::new("/z"));
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].error, None);
        assert!(
            runs[1].error.as_deref().unwrap().contains("boom"),
            "{runs:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "dns-update /z\na.test\nb.test\n"
        );
        assert!(run_hooks(&dir.path().join("missing"), &zones, Path::new("/z")).is_empty());
    }
}
