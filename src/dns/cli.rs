//! `dirhost dns ...`: the DNS subcommands (definitions and bodies; `crate::cli` only
//! dispatches here).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use super::{Export, format, state};
use crate::config::Config;

/// `dirhost dns ...`.
#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Print (or write) the DNS records of every domain: A/AAAA, MX, SRV, SPF, DKIM, DMARC,
    /// CAA and TLSA.
    ///
    /// Examples:
    ///   dirhost dns export --format bind
    ///   dirhost dns export example.com --format octodns --output /etc/octodns/zones
    ///   dirhost dns export --format json --hooks    # also run /etc/dirhost/dns-hooks.d
    Export(ExportArgs),
}

/// Output format of `dirhost dns export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OctoDNS YamlProvider zone files (`<zone>.yaml`).
    Octodns,
    /// BIND master files (`<zone>.zone`).
    Bind,
    /// JSON (`<zone>.json`; on stdout one document with every zone).
    Json,
}

/// Arguments of `dirhost dns export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Domains to export (default: all).
    pub domains: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "bind")]
    pub format: Format,
    /// Write one file per zone into DIR instead of printing.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Also run the DNS hooks ([dns] hooks_dir) for the zones whose records changed since
    /// the hooks last succeeded.
    #[arg(long)]
    pub hooks: bool,
}

/// Runs a `dirhost dns` command; returns the exit code.
pub fn run(cfg: &Config, cmd: DnsCommand) -> Result<u8> {
    match cmd {
        DnsCommand::Export(a) => export(cfg, &a),
    }
}

fn export(cfg: &Config, a: &ExportArgs) -> Result<u8> {
    let only = if a.domains.is_empty() {
        None
    } else {
        let mut set = std::collections::BTreeSet::new();
        for n in &a.domains {
            set.insert(
                crate::model::validate::domain_name(&n.to_lowercase())
                    .with_context(|| format!("{n:?} is not a domain name"))?,
            );
        }
        Some(set)
    };
    let now = crate::reconcile::now();
    let ex = super::build(cfg, only.as_ref(), now)?;
    report(&ex, &mut std::io::stderr().lock())?;
    let mut out = std::io::stdout().lock();
    match &a.output {
        Some(dir) => {
            for path in write_files(&ex, a.format, dir)? {
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        None => out.write_all(render_all(&ex, a.format)?.as_bytes())?,
    }
    let mut bad = !ex.failed.is_empty() || !ex.missing.is_empty();
    if a.hooks {
        let r = state::run_hooks_if_changed(cfg, &ex, now)?;
        let mut err = std::io::stderr().lock();
        if r.zones.is_empty() {
            writeln!(err, "hooks: no records changed")?;
        } else {
            writeln!(err, "hooks: records changed in {}", r.zones.join(" "))?;
        }
        for run in &r.runs {
            match &run.error {
                None => writeln!(err, "hook {} ran", run.name)?,
                Some(e) => writeln!(err, "hook {} failed: {e}", run.name)?,
            }
        }
        bad |= !r.ok();
    }
    Ok(u8::from(bad))
}

/// Writes what went wrong to `err`.
fn report(ex: &Export, err: &mut impl Write) -> Result<()> {
    for w in &ex.warnings {
        writeln!(err, "warning: {w}")?;
    }
    for d in &ex.domains {
        for w in &d.warnings {
            writeln!(err, "warning {}: {w}", d.domain)?;
        }
    }
    for (d, why) in &ex.failed {
        writeln!(err, "failed {d}: {why}")?;
    }
    for (d, why) in &ex.skipped {
        writeln!(err, "skipped {d}: {why}")?;
    }
    for d in &ex.missing {
        writeln!(err, "failed {d}: not a domain in /srv")?;
    }
    Ok(())
}

/// File name of a zone in `format`.
pub fn file_name(zone: &str, format: Format) -> String {
    match format {
        Format::Bind => format!("{zone}.zone"),
        Format::Octodns => format!("{zone}.yaml"),
        Format::Json => format!("{zone}.json"),
    }
}

/// One zone in `format`.
pub fn render_zone(zone: &super::Zone, format: Format) -> Result<String> {
    Ok(match format {
        Format::Bind => format::bind(zone),
        Format::Octodns => format::octodns(zone),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&format::json_zone(zone))?;
            s.push('\n');
            s
        }
    })
}

/// Everything in `format` as one text (what `export` prints without `--output`).
pub fn render_all(ex: &Export, format: Format) -> Result<String> {
    if format == Format::Json {
        let domains: Vec<serde_json::Value> = ex
            .domains
            .iter()
            .map(|d| {
                serde_json::json!({
                    "domain": d.domain,
                    "warnings": d.warnings,
                    "zones": d.zones.iter().map(format::json_zone).collect::<Vec<_>>(),
                })
            })
            .collect();
        let failed: Vec<serde_json::Value> = ex
            .failed
            .iter()
            .map(|(d, r)| serde_json::json!({"domain": d, "reason": r}))
            .chain(
                ex.missing
                    .iter()
                    .map(|d| serde_json::json!({"domain": d, "reason": "not a domain in /srv"})),
            )
            .collect();
        let doc = serde_json::json!({
            "version": format::JSON_VERSION,
            "domains": domains,
            "failed": failed,
            "warnings": ex.warnings,
        });
        let mut s = serde_json::to_string_pretty(&doc)?;
        s.push('\n');
        return Ok(s);
    }
    let mut out = String::new();
    for (i, z) in ex.zones().enumerate() {
        if i > 0 && format == Format::Bind {
            out.push('\n');
        }
        out.push_str(&render_zone(z, format)?);
    }
    Ok(out)
}

/// Writes one file per zone into `dir` (created if needed); returns the paths.
pub fn write_files(ex: &Export, format: Format, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for z in ex.zones() {
        let path = dir.join(file_name(&z.name, format));
        state::write_atomic(&path, render_zone(z, format)?.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
