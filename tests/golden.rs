//! Golden-file tests of what dirhost renders and plans, end to end.
//!
//! Each case is a tree under `tests/fixtures/<case>/`: `srv/` (the domains) and, optionally,
//! `etc/` (what is already on disk under the sandbox's `etc/`, such as a hand-edited vhost).
//! `tests/fixtures/README.md` describes the conventions. A case
//!
//! 1. copies its tree into a fresh [`Sandbox`], chowns every domain to a customer (git keeps
//!    no owners) and makes what git should not hold: certificates (generated with `openssl`,
//!    so they never expire in the repository), FIFOs and symlinks that point out of the tree;
//! 2. plans through the library, exactly as `dirhost apply --dry-run` does
//!    (`model::load` → `render` → `plan`, via `reconcile::reconcile_model`): `plan.txt`;
//! 3. runs the real binary, `dirhost apply`, with the sandbox's config tests (Apache's is the
//!    real `apache2 -t`) and every reload set to `true` (no server runs): `apply.txt`, the
//!    listing of everything under the sandbox's `etc/` (but dirhost's own) and `state/`
//!    (`tree.txt`), and every config file the apply wrote (`files/<path>`; private files such
//!    as certificate copies only by mode, in the tree);
//! 4. checks what no golden can: the binary did exactly what the library planned, every
//!    written config carries an intact checksum seal, Apache accepts the result, no Apache
//!    directive but the document root, `<Directory>` and `ScriptAlias` names a path under
//!    /srv, private files are root's and not world-readable, and a second apply changes
//!    nothing.
//!
//! Goldens are plain files in `tests/fixtures/<case>/expected/`, with the sandbox root
//! redacted to `<ROOT>` and checksums (checked in step 4) to `<md5>`. To accept a change:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --test golden
//! git diff tests/fixtures
//! ```
//!
//! Runs as root (chown, and Apache's test drops to www-data), like the other system tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use dirhost::checksum::{self, Seal};
use dirhost::config::Config;
use dirhost::model::Model;
use dirhost::plan::Action;
use dirhost::reconcile::{self, Report, Request};
use dirhost::render::FileKind;
use dirhost::sandbox::Sandbox;

use common::{OTHER, OWNER, self_signed};

/// Every fixture case; `fixtures_and_cases_match` keeps this list and the directories in step.
const CASES: &[&str] = &[
    "plain",
    "aliases",
    "ipv6",
    "mandatory-ssl",
    "cert-set",
    "hand-edited",
    "idn",
    "skipped",
    "webmail-only",
];

/// Lines of a fixture file under `etc/` that start with this are a hand edit: they are left
/// out when the `<SEAL>` placeholder is computed, so the seal no longer matches.
const HAND_EDIT: &str = "+HAND ";
/// A fixture file under `etc/` ending with this line gets the seal dirhost would have written.
const SEAL_PLACEHOLDER: &str = "# Checksum MD5 <SEAL>";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0")
}

/// One fixture case in its own sandbox.
struct Case {
    name: &'static str,
    dir: PathBuf,
    sb: Sandbox,
    cfg: Config,
    root: String,
    checked: BTreeSet<PathBuf>,
    failures: Vec<String>,
}

/// What the standard run of a case found, for case-specific assertions.
struct Run {
    model: Model,
    report: Report,
    apply: Output,
}

/// The library's view of one `dirhost apply --dry-run`.
struct Planned {
    model: Model,
    report: Report,
    /// How each desired file is protected, by path.
    kinds: BTreeMap<PathBuf, FileKind>,
}

impl Case {
    /// Lays out the case's fixture in a fresh sandbox. Every entry under `srv/` belongs to
    /// [`OWNER`] until the case says otherwise ([`Case::own`]).
    fn new(name: &'static str) -> Self {
        static UMASK: Once = Once::new();
        // The goldens list the modes of the directories dirhost creates, which its mkdir
        // leaves to the umask: use Debian's default whatever the caller's is.
        UMASK.call_once(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        });
        let dir = fixtures().join(name);
        assert!(dir.join("srv").is_dir(), "{} has no srv/", dir.display());
        let sb = Sandbox::temp().expect("sandbox");
        let root = sb.root().to_str().expect("UTF-8 sandbox root").to_string();
        copy_tree(&dir.join("srv"), sb.srv(), &|t| t.to_string());
        for entry in walk(sb.srv()) {
            lchown(&entry, Some(OWNER), Some(OWNER)).unwrap();
        }
        if dir.join("etc").is_dir() {
            copy_tree(&dir.join("etc"), &sb.root().join("etc"), &|t| {
                materialise(&t.replace("<ROOT>", &root))
            });
        }
        // The sandbox's own config (every path inside it, its config tests), with production
        // ports in the generated files, every reload `true` (nothing is served) and the
        // packaged log writer path. Edited as TOML so that the commands of services added
        // later are covered too.
        let mut table: toml::Table = toml::from_str(&sb.config().to_toml().unwrap()).unwrap();
        let commands = table["commands"].as_table_mut().unwrap();
        for (name, argv) in commands.iter_mut() {
            if name.ends_with("_reload") {
                *argv = toml::Value::Array(vec!["true".into()]);
            }
        }
        commands.insert("dirhost".into(), "/usr/bin/dirhost".into());
        // What the sandbox picks at random or from the machine (free ports, whether ::1
        // exists) is set to dirhost's defaults, so that no golden depends on it.
        let defaults: toml::Table = toml::from_str(&Config::default().to_toml().unwrap()).unwrap();
        for (section, keys) in &defaults {
            let (Some(keys), Some(ours)) = (
                keys.as_table(),
                table.get_mut(section).and_then(toml::Value::as_table_mut),
            ) else {
                continue;
            };
            for (key, value) in keys {
                let port = value.is_integer() && ["ports", "mail"].contains(&section.as_str());
                if port || (section == "mail" && key == "listen") {
                    ours.insert(key.clone(), value.clone());
                }
            }
        }
        fs::write(sb.config_path(), toml::to_string(&table).unwrap()).unwrap();
        let cfg = Config::load(sb.config_path(), true).unwrap();
        Self {
            name,
            dir,
            sb,
            cfg,
            root,
            checked: BTreeSet::new(),
            failures: Vec::new(),
        }
    }

    /// Sets `[section] key = value` in the case's config file (and its loaded copy).
    fn set_config(&mut self, section: &str, key: &str, value: toml::Value) {
        let mut table: toml::Table =
            toml::from_str(&fs::read_to_string(self.sb.config_path()).unwrap()).unwrap();
        table[section]
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value);
        fs::write(self.sb.config_path(), toml::to_string(&table).unwrap()).unwrap();
        self.cfg = Config::load(self.sb.config_path(), true).unwrap();
    }

    fn srv(&self, rel: &str) -> PathBuf {
        self.sb.srv().join(rel)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.sb.root().join(rel)
    }

    /// chowns `srv/<rel>` and everything below it, symlinks themselves included.
    fn own(&self, rel: &str, uid: u32, gid: u32) {
        let top = self.srv(rel);
        lchown(&top, Some(uid), Some(gid)).unwrap();
        if fs::symlink_metadata(&top).unwrap().is_dir() {
            for entry in walk(&top) {
                lchown(&entry, Some(uid), Some(gid)).unwrap();
            }
        }
    }

    /// A symlink at `srv/<rel>`, owned by `uid`.
    fn symlink(&self, rel: &str, target: &str, uid: u32) {
        let path = self.srv(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, &path).unwrap();
        lchown(&path, Some(uid), Some(uid)).unwrap();
    }

    /// A file at `srv/<rel>` (parents created), owned by `uid`.
    fn put(&self, rel: &str, contents: &str, uid: u32) {
        let path = self.srv(rel);
        let parent = path.parent().unwrap();
        fs::create_dir_all(parent).unwrap();
        common::chown_up(self.sb.srv(), parent, uid);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        lchown(&path, Some(uid), Some(uid)).unwrap();
    }

    /// A fresh self-signed certificate for `names`, valid for `days`, as `ssl.crt` and
    /// `ssl.key` in `srv/<dir>`. Returns the certificate.
    fn cert(&self, dir: &str, names: &[&str], days: u32) -> String {
        let (crt, key) = self_signed(self.sb.root(), names, days);
        self.put(&format!("{dir}/ssl.crt"), &crt, OWNER);
        self.put(&format!("{dir}/ssl.key"), &key, OWNER);
        crt
    }

    /// `dirhost --config <the case's config> ARGS` (the binary this test run built).
    fn dirhost(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dirhost"))
            .arg("--config")
            .arg(self.sb.config_path())
            .args(args)
            .output()
            .expect("run dirhost")
    }

    /// The plan of `dirhost apply --dry-run`, through the library.
    fn plan(&self, force: bool) -> Planned {
        let model = dirhost::model::load(&self.cfg.paths.srv, reconcile::now()).unwrap();
        let req = Request {
            dry_run: true,
            force,
            ..Request::default()
        };
        let report =
            reconcile::reconcile_model(&model, &self.cfg, self.sb.config_path(), &req).unwrap();
        let tera = dirhost::render::templates(&self.cfg.paths.templates).unwrap();
        let desired =
            dirhost::render::render(&model, &self.cfg, self.sb.config_path(), &tera).unwrap();
        let kinds = desired
            .files
            .into_iter()
            .map(|f| (f.path, f.kind))
            .collect();
        Planned {
            model,
            report,
            kinds,
        }
    }

    /// The sandbox root as `<ROOT>`, checksum values as `<md5>` (whatever the comment
    /// character of the file format).
    fn redact(&self, text: &str) -> String {
        let text = text.replace(&self.root, "<ROOT>");
        // Checksums, and the hash of a certificate chain (made fresh by every run) that
        // Dovecot's per-domain file names.
        let text = redact_hex(&text, "Checksum MD5 ", 32, "<md5>");
        redact_hex(&text, "SHA-256 of the chain ", 64, "<sha256>")
    }

    /// Compares `actual` with `expected/<rel>` (or writes it, with `UPDATE_GOLDEN=1`).
    fn golden(&mut self, rel: &str, actual: &str) {
        let path = self.dir.join("expected").join(rel);
        self.checked.insert(path.clone());
        if updating() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if fs::read_to_string(&path).ok().as_deref() != Some(actual) {
                fs::write(&path, actual).unwrap();
                eprintln!("updated {}", path.display());
            }
            return;
        }
        let Ok(expected) = fs::read_to_string(&path) else {
            self.failures.push(format!(
                "{}: missing golden {rel} (run `UPDATE_GOLDEN=1 cargo test --test golden`); actual:\n{actual}",
                self.name
            ));
            return;
        };
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, actual)
                .unified_diff()
                .context_radius(3)
                .header(&format!("expected/{rel}"), "actual")
                .to_string();
            self.failures.push(format!(
                "{}: {rel} differs from its golden (- expected, + actual; \
                 `UPDATE_GOLDEN=1 cargo test --test golden` accepts it):\n{diff}",
                self.name
            ));
        }
    }

    /// Redacted stdout of a dirhost run, followed by its exit code.
    fn output_text(&self, out: &Output) -> String {
        format!(
            "{}exit: {}\n",
            self.redact(&String::from_utf8_lossy(&out.stdout)),
            out.status.code().map_or("signal".into(), |c| c.to_string())
        )
    }

    /// Everything dirhost may write: the sandbox's `etc/` (but `etc/dirhost`, its own
    /// config) and `state/`.
    fn outputs(&self) -> Vec<PathBuf> {
        let own = self.path("etc/dirhost");
        ["etc", "state"]
            .iter()
            .flat_map(|top| walk(&self.path(top)))
            .filter(|p| !p.starts_with(&own))
            .collect()
    }

    /// Every entry of [`Case::outputs`]: type, mode, owner, link target (contents are
    /// compared separately).
    fn tree(&self) -> String {
        let mut out = String::new();
        {
            for path in self.outputs() {
                let rel = path.strip_prefix(self.sb.root()).unwrap().display();
                let meta = fs::symlink_metadata(&path).unwrap();
                let mode = meta.mode() & 0o7777;
                let owner = format!("{}:{}", user_name(meta.uid()), group_name(meta.gid()));
                let line = if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    format!("link {rel} -> {}", target.display())
                } else if meta.is_dir() {
                    format!("dir  {rel} {mode:04o} {owner}")
                } else {
                    format!("file {rel} {mode:04o} {owner}")
                };
                out.push_str(&self.redact(&line));
                out.push('\n');
            }
        }
        out
    }

    /// Contents of every file of [`Case::outputs`], for comparing two states.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        self.outputs()
            .into_iter()
            .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
            .map(|p| {
                let bytes = fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// The standard run (see the module doc), with the goldens `plan.txt`, `apply.txt`,
    /// `tree.txt` and `files/…` for the config files written.
    fn run(&mut self) -> Run {
        let Planned {
            model,
            report,
            kinds,
        } = self.plan(false);
        self.golden("plan.txt", &self.plan_text(&model, &report));

        let apply = self.dirhost(&["apply"]);
        let stderr = String::from_utf8_lossy(&apply.stderr).into_owned();
        self.golden("apply.txt", &self.output_text(&apply));
        let tree = self.tree();
        self.golden("tree.txt", &tree);

        // The binary did exactly what the library planned.
        assert!(
            !String::from_utf8_lossy(&apply.stdout).contains("left out"),
            "{}: apache's test refused part of the config:\n{stderr}",
            self.name
        );
        for c in &report.plan.changes {
            match &c.action {
                Action::Write { contents, mode } => {
                    let on_disk = fs::read_to_string(&c.path).unwrap_or_else(|e| {
                        panic!(
                            "{}: {} not written: {e}\n{stderr}",
                            self.name,
                            c.path.display()
                        )
                    });
                    assert_eq!(&on_disk, contents, "{}", c.path.display());
                    let meta = fs::metadata(&c.path).unwrap();
                    assert_eq!(meta.mode() & 0o7777, *mode, "{}", c.path.display());
                    assert_eq!(meta.uid(), 0, "{}", c.path.display());
                }
                Action::Link { target } => {
                    assert_eq!(&fs::read_link(&c.path).unwrap(), target);
                }
                Action::Remove => assert!(fs::symlink_metadata(&c.path).is_err()),
            }
        }

        // Every config file written carries an intact seal, and Apache's keep it away from
        // /srv; private files (certificate copies...) are nobody else's.
        let apache_dir = self.path("etc/apache2");
        for c in &report.plan.changes {
            let Action::Write { contents, mode } = &c.action else {
                continue;
            };
            if kinds.get(&c.path) == Some(&FileKind::Private) {
                assert_eq!(*mode & 0o007, 0, "{} is world-readable", c.path.display());
                continue;
            }
            assert_eq!(
                checksum::inspect(contents.as_bytes()),
                Seal::Intact,
                "{}",
                c.path.display()
            );
            if c.path.starts_with(&apache_dir) {
                self.check_srv_references(&c.path, contents);
            }
            // Shared files are the same in every case: their golden is in `plain`'s.
            if c.domain.is_some() || self.name == "plain" {
                let rel = c.path.strip_prefix(self.sb.root()).unwrap().display();
                self.golden(&format!("files/{rel}"), &self.redact(contents));
            }
        }

        // Apache accepts what is live now.
        let test = Command::new(&self.cfg.commands.apache_test[0])
            .args(&self.cfg.commands.apache_test[1..])
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "{}: apache2 -t refused the result:\n{}",
            self.name,
            String::from_utf8_lossy(&test.stderr)
        );

        // A second apply has nothing to do and touches nothing.
        let before = self.snapshot();
        let again = self.dirhost(&["apply"]);
        let so = String::from_utf8_lossy(&again.stdout);
        assert!(
            so.contains("nothing to change"),
            "{}: second apply:\n{so}",
            self.name
        );
        assert!(!so.contains("did "), "{}: second apply:\n{so}", self.name);
        assert_eq!(again.status.code(), apply.status.code(), "{so}");
        assert_eq!(
            self.tree(),
            tree,
            "{}: second apply changed the tree",
            self.name
        );
        assert!(
            self.snapshot() == before,
            "{}: second apply changed a file",
            self.name
        );

        Run {
            model,
            report,
            apply,
        }
    }

    /// Apache itself must never open a file under /srv as root: only the document root, its
    /// `<Directory>` blocks and the CGI `ScriptAlias` (served by the workers) may name one;
    /// certificates come from the root-owned copies in the state dir.
    fn check_srv_references(&self, path: &Path, contents: &str) {
        let srv = self.sb.srv().to_str().unwrap();
        let ssl = self.path("state/ssl");
        for line in contents.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let directive = line.split_whitespace().next().unwrap_or("");
            if line.contains(srv) {
                assert!(
                    ["DocumentRoot", "<Directory", "ScriptAlias"].contains(&directive),
                    "{}: {line:?} names a path under srv/",
                    path.display()
                );
            }
            if directive.starts_with("SSLCertificate") {
                let file = line.split_whitespace().nth(1).unwrap().trim_matches('"');
                assert!(
                    Path::new(file).starts_with(&ssl),
                    "{}: {line:?}",
                    path.display()
                );
            }
        }
    }

    /// The model and the plan as text.
    fn plan_text(&self, model: &Model, r: &Report) -> String {
        let mut out = String::from("# model\n");
        for d in model.domains.values() {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(" ")
                }
            };
            let ips: Vec<String> = d.ips.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "domain {} (dir {}, owner {}:{})\n  web: {}\n  aliases: {}\n  ips: {}\n  \
                 mandatory-ssl: {}, hsts: {}, ssl-provider: {:?}\n  certificate: {}\n",
                d.name,
                d.dir_name,
                d.uid,
                d.gid,
                d.web,
                list(&d.aliases),
                list(&ips),
                d.mandatory_ssl,
                d.hsts,
                d.ssl_provider,
                d.cert
                    .as_ref()
                    .map_or("-".to_string(), |c| format!("set {}", c.name)),
            ));
            for w in &d.warnings {
                out.push_str(&format!("  warning: {w}\n"));
            }
        }
        for s in &model.skipped {
            out.push_str(&format!("skipped {}: {}\n", s.name, s.reason));
        }
        out.push_str("# plan (dirhost apply --dry-run)\n");
        for c in &r.plan.changes {
            let whose = c.domain.as_deref().unwrap_or("shared");
            out.push_str(&match &c.action {
                Action::Write { mode, .. } => {
                    format!("write {} {mode:04o} ({whose})\n", c.path.display())
                }
                Action::Link { target } => format!(
                    "link {} -> {} ({whose})\n",
                    c.path.display(),
                    target.display()
                ),
                Action::Remove => format!("remove {} ({whose})\n", c.path.display()),
            });
        }
        for n in &r.plan.notices {
            out.push_str(&format!(
                "kept {}: {}{}\n",
                n.path.display(),
                n.message,
                if n.wanted.is_some() {
                    " [with what dirhost would write]"
                } else {
                    ""
                }
            ));
        }
        for (d, e) in &r.render_failed {
            out.push_str(&format!("failed {d}: {e}\n"));
        }
        out.push_str(&format!("failed domains: {:?}\n", r.failed_domains()));
        self.redact(&out)
    }

    /// Fails with every golden mismatch of the case; a golden nobody compared is stale
    /// (removed with `UPDATE_GOLDEN=1`).
    fn finish(mut self) {
        let expected = self.dir.join("expected");
        if expected.is_dir() {
            for path in walk(&expected) {
                if !path.is_file() || self.checked.contains(&path) {
                    continue;
                }
                if updating() {
                    fs::remove_file(&path).unwrap();
                    eprintln!("removed stale {}", path.display());
                } else {
                    self.failures.push(format!(
                        "{}: stale golden {} (nothing produces it any more; \
                         UPDATE_GOLDEN=1 removes it)",
                        self.name,
                        path.display()
                    ));
                }
            }
        }
        assert!(
            self.failures.is_empty(),
            "{} golden mismatch(es):\n\n{}",
            self.failures.len(),
            self.failures.join("\n\n")
        );
    }
}

/// Every `len` hex digits right after `prefix` in `text`, replaced by `with`.
fn redact_hex(text: &str, prefix: &str, len: usize, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        out.push_str(&rest[..i + prefix.len()]);
        let hex = after.len() >= len && after.as_bytes()[..len].iter().all(u8::is_ascii_hexdigit);
        if hex {
            out.push_str(with);
            rest = &after[len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A system user's name (ids differ between machines, names do not); customers' by number.
fn user_name(uid: u32) -> String {
    let user = (uid < 1000).then(|| nix::unistd::User::from_uid(uid.into()));
    match user {
        Some(Ok(Some(u))) => u.name,
        _ => uid.to_string(),
    }
}

/// A system group's name; customers' by number.
fn group_name(gid: u32) -> String {
    let group = (gid < 1000).then(|| nix::unistd::Group::from_gid(gid.into()));
    match group {
        Some(Ok(Some(g))) => g.name,
        _ => gid.to_string(),
    }
}

/// Every path below `top` (not `top` itself), sorted, without following symlinks.
fn walk(top: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(top)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect()
}

/// Copies `from` into `to` (merging with what is there): directories 0755, files 0644 with
/// their text passed through `edit`, symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path, edit: &dyn Fn(&str) -> String) {
    fs::create_dir_all(to).unwrap();
    for src in walk(from) {
        let dst = to.join(src.strip_prefix(from).unwrap());
        let meta = fs::symlink_metadata(&src).unwrap();
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if meta.is_dir() {
            fs::create_dir_all(&dst).unwrap();
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            fs::write(&dst, edit(&fs::read_to_string(&src).unwrap())).unwrap();
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Resolves the placeholders of a fixture file under `etc/` (see tests/fixtures/README.md):
/// a last line `# Checksum MD5 <SEAL>` becomes the seal of the lines before it, leaving out
/// the `+HAND ` lines, which are then kept without that prefix (a generated file edited by
/// hand afterwards).
fn materialise(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some((last, body)) = lines.split_last() else {
        return text.to_string();
    };
    if last.trim_end() != SEAL_PLACEHOLDER {
        assert!(
            !text.contains(HAND_EDIT),
            "{HAND_EDIT:?} lines need a final {SEAL_PLACEHOLDER:?}"
        );
        return text.to_string();
    }
    let generated: String = body
        .iter()
        .filter(|l| !l.starts_with(HAND_EDIT))
        .copied()
        .collect();
    let sealed = checksum::seal(&generated);
    let seal_line = sealed.lines().last().unwrap();
    let mut out: String = body
        .iter()
        .map(|l| l.strip_prefix(HAND_EDIT).unwrap_or(l))
        .collect();
    out.push_str(seal_line);
    out.push('\n');
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vhost(case: &Case, domain: &str) -> String {
    read(&case.path(&format!("etc/apache2/sites-available/{domain}.conf")))
}

#[test]
fn fixtures_and_cases_match() {
    let mut dirs: Vec<String> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        // Fixtures of other test files (tests/dns.rs).
        .filter(|n| n != "dns")
        .collect();
    dirs.sort();
    let mut cases: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    cases.sort();
    assert_eq!(
        dirs, cases,
        "every fixture needs a test, every test a fixture"
    );
}

#[test]
fn materialise_seals_and_applies_hand_edits() {
    let generated = "a\nb\n";
    let sealed = checksum::seal(generated);
    assert_eq!(materialise(&format!("a\nb\n{SEAL_PLACEHOLDER}\n")), sealed);
    let edited = materialise(&format!("a\n{HAND_EDIT}mine\nb\n{SEAL_PLACEHOLDER}\n"));
    assert_eq!(edited, sealed.replacen("a\n", "a\nmine\n", 1));
    assert_eq!(checksum::inspect(edited.as_bytes()), Seal::Edited);
    assert_eq!(materialise("plain\n"), "plain\n");
}

#[test]
fn plain() {
    let mut case = Case::new("plain");
    let run = case.run();
    assert!(run.apply.status.success());
    let d = &run.model.domains["example.test"];
    assert_eq!(d.aliases, ["www.example.test"]);
    case.finish();
}

#[test]
fn aliases() {
    let mut case = Case::new("aliases");
    // other.test and www.other.test belong to a second customer; the admin (root) made an
    // alias for it; the symlink alias.test belongs to example.test's owner.
    for d in ["other.test", "www.other.test"] {
        case.own(d, OTHER, OTHER);
    }
    case.own("admin-alias.test", 0, 0);
    let run = case.run();
    assert!(run.apply.status.success());
    let names = |d: &str| run.model.domains[d].aliases.clone();
    assert_eq!(
        names("example.test"),
        ["alias.test", "www.alias.test", "www.example.test"]
    );
    // www.other.test exists in its own right: it is not other.test's alias.
    assert_eq!(
        names("other.test"),
        ["admin-alias.test", "www.admin-alias.test"]
    );
    assert!(names("www.other.test").is_empty());
    assert!(!vhost(&case, "other.test").contains("ServerAlias www.other.test"));
    case.finish();
}

#[test]
fn ipv6() {
    let mut case = Case::new("ipv6");
    let run = case.run();
    assert!(run.apply.status.success());
    assert!(vhost(&case, "dual.test").contains("<VirtualHost 192.0.2.10:80 [2001:db8::10]:80>"));
    // Duplicates are dropped.
    assert!(vhost(&case, "v6only.test").contains("<VirtualHost [2001:db8::20]:80>\n"));
    case.finish();
}

#[test]
fn mandatory_ssl() {
    let mut case = Case::new("mandatory-ssl");
    let names = |d: &str| [d.to_string(), format!("www.{d}")];
    let n = names("secure.test");
    case.cert("secure.test/config/ssl/sets/0", &[&n[0], &n[1]], 30);
    case.symlink("secure.test/config/ssl/current", "sets/0", OWNER);
    let n = names("nohsts.test");
    case.cert("nohsts.test/config", &[&n[0], &n[1]], 30);
    let n = names("hstsfalse.test");
    case.cert("hstsfalse.test/config/ssl/sets/0", &[&n[0], &n[1]], 30);
    case.symlink("hstsfalse.test/config/ssl/current", "sets/0", OWNER);
    let run = case.run();
    assert!(run.apply.status.success());
    let hsts = "Strict-Transport-Security";
    assert!(vhost(&case, "secure.test").contains(hsts));
    for d in ["nohsts.test", "hstsfalse.test"] {
        let v = vhost(&case, d);
        assert!(v.contains("SSLEngine on") && !v.contains(hsts), "{d}:\n{v}");
    }
    // No certificate yet: only the redirect (and the ACME exception), nothing served on 80.
    let v = vhost(&case, "nocert.test");
    assert!(
        !v.contains("SSLEngine") && !v.contains("DocumentRoot"),
        "{v}"
    );
    assert!(v.contains("R=301"), "{v}");
    case.finish();
}

#[test]
fn cert_set() {
    let mut case = Case::new("cert-set");
    let both = |d: &'static str| -> Vec<String> { vec![d.into(), format!("www.{d}")] };
    let cert = |case: &Case, dir: &str, names: &[String], days| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        case.cert(dir, &names, days)
    };
    // set.test: sets/0 with `current` (the link is in the fixture).
    let set = cert(&case, "set.test/config/ssl/sets/0", &both("set.test"), 30);
    // legacy.test: Symbiosis' config/ssl.crt + ssl.key.
    let legacy = cert(&case, "legacy.test/config", &both("legacy.test"), 30);
    // fallback.test: `current` -> sets/1, whose key belongs to another certificate: set 0,
    // the valid one, is used instead, with a warning.
    let fallback = cert(
        &case,
        "fallback.test/config/ssl/sets/0",
        &both("fallback.test"),
        30,
    );
    let (_, other_key) = self_signed(case.sb.root(), &["fallback.test"], 30);
    case.put("fallback.test/config/ssl/sets/1/ssl.crt", &fallback, OWNER);
    case.put("fallback.test/config/ssl/sets/1/ssl.key", &other_key, OWNER);
    // newest.test: two valid sets and no `current`: the one that expires last.
    cert(
        &case,
        "newest.test/config/ssl/sets/0",
        &both("newest.test"),
        30,
    );
    let newest = cert(
        &case,
        "newest.test/config/ssl/sets/1",
        &both("newest.test"),
        90,
    );
    // wrongname.test: its only set covers another name: no HTTPS vhost, a warning.
    cert(
        &case,
        "wrongname.test/config/ssl/sets/0",
        &both("other.test"),
        30,
    );
    case.symlink("wrongname.test/config/ssl/current", "sets/0", OWNER);

    let run = case.run();
    assert!(run.apply.status.success());
    let set_of = |d: &str| run.model.domains[d].cert.as_ref().map(|c| c.name.clone());
    assert_eq!(set_of("set.test").as_deref(), Some("0"));
    assert_eq!(set_of("legacy.test").as_deref(), Some("legacy"));
    assert_eq!(set_of("fallback.test").as_deref(), Some("0"));
    assert_eq!(set_of("newest.test").as_deref(), Some("1"));
    assert_eq!(set_of("wrongname.test"), None);
    // Apache reads verified, root-owned copies of exactly the chosen set.
    for (d, crt) in [
        ("set.test", &set),
        ("legacy.test", &legacy),
        ("fallback.test", &fallback),
        ("newest.test", &newest),
    ] {
        let chain = read(&case.path(&format!("state/ssl/{d}/chain.pem")));
        assert_eq!(chain.trim(), crt.trim(), "{d}");
        assert!(vhost(&case, d).contains("SSLEngine on"), "{d}");
    }
    assert!(!vhost(&case, "wrongname.test").contains("SSLEngine"));
    case.finish();
}

#[test]
fn hand_edited() {
    // The fixture's etc/ holds what an earlier apply left, since changed by people:
    // edited.test.conf was edited by hand (and /srv/alias2.test appeared since, so dirhost
    // now wants something else), handmade.test.conf was written from scratch, and the
    // admin removed disabled.test's sites-enabled link.
    let mut case = Case::new("hand-edited");
    let edited = case.path("etc/apache2/sites-available/edited.test.conf");
    let handmade = case.path("etc/apache2/sites-available/handmade.test.conf");
    let disabled_link = case.path("etc/apache2/sites-enabled/disabled.test.conf");
    assert_eq!(checksum::inspect(read(&edited).as_bytes()), Seal::Edited);
    assert_eq!(
        checksum::inspect(read(&handmade).as_bytes()),
        Seal::Unmanaged
    );
    let (edited_before, handmade_before) = (read(&edited), read(&handmade));

    let diff = case.dirhost(&["apply", "--dry-run", "--diff"]);
    let diff_text = case.output_text(&diff);
    case.golden("diff.txt", &diff_text);
    assert!(
        diff_text.contains("+    ServerAlias alias2.test"),
        "{diff_text}"
    );

    let run = case.run();
    assert!(run.apply.status.success());
    // Kept and reported, byte for byte.
    assert_eq!(read(&edited), edited_before);
    assert_eq!(read(&handmade), handmade_before);
    assert!(fs::symlink_metadata(&disabled_link).is_err());
    let notices: Vec<&Path> = run
        .report
        .plan
        .notices
        .iter()
        .map(|n| n.path.as_path())
        .collect();
    assert_eq!(
        notices,
        [
            edited.as_path(),
            handmade.as_path(),
            disabled_link.as_path()
        ]
    );

    // --force: dirhost's versions replace both files and the site is enabled again.
    let forced = case.plan(true).report;
    let wanted: Vec<(PathBuf, String)> = forced
        .plan
        .changes
        .iter()
        .filter_map(|c| match &c.action {
            Action::Write { contents, .. } => Some((c.path.clone(), contents.clone())),
            _ => None,
        })
        .collect();
    let paths: Vec<&Path> = wanted.iter().map(|(p, _)| p.as_path()).collect();
    assert_eq!(paths, [edited.as_path(), handmade.as_path()]);
    let out = case.dirhost(&["apply", "--force"]);
    let force_text = case.output_text(&out);
    case.golden("force.txt", &force_text);
    assert!(out.status.success(), "{force_text}");
    for (path, contents) in wanted {
        assert_eq!(read(&path), contents);
        assert_eq!(checksum::inspect(contents.as_bytes()), Seal::Intact);
    }
    assert!(vhost(&case, "edited.test").contains("ServerAlias alias2.test"));
    assert_eq!(
        fs::read_link(&disabled_link).unwrap(),
        Path::new("../sites-available/disabled.test.conf")
    );
    case.finish();
}

#[test]
fn idn() {
    let mut case = Case::new("idn");
    let run = case.run();
    assert!(run.apply.status.success());
    let d = &run.model.domains["xn--bcher-kva.test"];
    assert_eq!(d.dir_name, "bücher.test");
    let v = vhost(&case, "xn--bcher-kva.test");
    assert!(v.contains("ServerName xn--bcher-kva.test\n"), "{v}");
    // The directory keeps its Unicode name in paths.
    assert!(v.contains("/srv/bücher.test/public/htdocs\""), "{v}");
    case.finish();
}

#[test]
fn skipped() {
    let mut case = Case::new("skipped");
    case.own("evil.test", OTHER, OTHER);
    case.own("root.test", 0, 0);
    case.own("gid.test", OWNER, 33);
    // Another customer's link pointing at good.test.
    case.own("stolen.test", OTHER, OTHER);
    // A FIFO where a flag file should be: refused without blocking.
    let fifo = case.srv("fifo.test/config/mandatory-ssl");
    fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    case.own("fifo.test", OWNER, OWNER);
    // Symlinks out of the tree (made here, not kept in git): never followed.
    case.symlink("symlink-ip.test/config/ip", "/etc/shadow", OWNER);
    case.own("symlink-ip.test", OWNER, OWNER);
    case.symlink("linked-htdocs.test/public/htdocs", "/etc", OWNER);

    let run = case.run();
    assert_eq!(run.apply.status.code(), Some(1), "a refused domain exits 1");
    assert_eq!(
        run.model.domains.keys().collect::<Vec<_>>(),
        ["good.test", "linked-htdocs.test"]
    );
    let sites: Vec<String> = fs::read_dir(case.path("etc/apache2/sites-available"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(sites, ["good.test.conf"]);
    assert!(!vhost(&case, "good.test").contains("shadow"));
    case.finish();
}

/// Sympl's www. rule when the directory of a Unicode domain's `www.` form exists in its own
/// right: `www.bücher.test` is its own site, so `bücher.test` must not claim
/// `www.xn--bcher-kva.test` as well (two vhosts would answer to one name).
#[test]
fn idn_www_directory_in_its_own_right() {
    let case = Case::new("idn");
    case.put("www.bücher.test/public/htdocs/index.html", "www\n", OWNER);
    let out = case.dirhost(&["apply"]);
    assert!(out.status.success());
    let v = vhost(&case, "xn--bcher-kva.test");
    assert!(!v.contains("ServerAlias www.xn--bcher-kva.test"), "{v}");
}

#[test]
fn webmail_only() {
    let mut case = Case::new("webmail-only");
    case.set_config("webmail", "enabled", true.into());
    // mailonly.test: mailboxes, no htdocs, a certificate: the webmail-only vhost with HTTPS.
    case.cert(
        "mailonly.test/config/ssl/sets/0",
        &["mailonly.test", "www.mailonly.test"],
        30,
    );
    case.symlink("mailonly.test/config/ssl/current", "sets/0", OWNER);
    case.cert(
        "dirhost.test/config",
        &["dirhost.test", "www.dirhost.test"],
        30,
    );
    // empty.test: an empty mailboxes/ (git keeps no empty directory): no vhost.
    fs::create_dir_all(case.srv("empty.test/mailboxes")).unwrap();
    case.own("empty.test", OWNER, OWNER);
    let run = case.run();
    assert!(run.apply.status.success());
    use dirhost::model::VhostKind;
    let kind = |d: &str| run.model.with_services(&case.cfg).vhost_kind(&case.cfg, d);
    assert_eq!(kind("mailonly.test"), Some(VhostKind::WebmailOnly));
    assert_eq!(kind("nocert.test"), Some(VhostKind::WebmailOnly));
    // The host's own name needs no mailboxes: its webmail is for every domain.
    assert_eq!(kind("dirhost.test"), Some(VhostKind::WebmailOnly));
    assert_eq!(kind("site.test"), Some(VhostKind::Site));
    assert_eq!(kind("off.test"), None);
    assert_eq!(kind("empty.test"), None);

    let v = vhost(&case, "mailonly.test");
    // Nothing of the domain's directory is named, let alone served; no PHP pool of its own.
    assert!(!v.contains("/srv/"), "{v}");
    assert!(
        v.contains("SSLEngine on") && v.contains("Alias /webmail/"),
        "{v}"
    );
    assert!(
        v.contains("SetEnv DIRHOST_WEBMAIL_DOMAIN mailonly.test"),
        "{v}"
    );
    assert!(!case.path("etc/php/fpm/pool.d/mailonly.test.conf").exists());
    // No certificate yet: port 80 only (challenges and the redirect), no webmail in clear.
    let v = vhost(&case, "nocert.test");
    assert!(
        !v.contains("SSLEngine") && !v.contains("Alias /webmail/"),
        "{v}"
    );
    assert!(v.contains("acme-challenge"), "{v}");
    assert!(vhost(&case, "dirhost.test").contains("SetEnv DIRHOST_WEBMAIL_ANY_DOMAIN yes"));
    // A site with mailboxes keeps its normal vhost, with /webmail/ in it.
    let v = vhost(&case, "site.test");
    assert!(
        v.contains("public/htdocs") && v.contains("Alias /webmail/"),
        "{v}"
    );
    for d in ["off.test", "empty.test"] {
        assert!(
            !case
                .path(&format!("etc/apache2/sites-available/{d}.conf"))
                .exists()
        );
    }
    case.finish();
}
