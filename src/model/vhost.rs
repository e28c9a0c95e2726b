//! Which domains get an Apache vhost, and which kind: a site (`public/htdocs`), or a
//! webmail-only vhost for a domain that has mailboxes (or is the host's own name) but no
//! website (issue 12: "webmail for every domain that has mailboxes").
//!
//! "Has an Apache vhost" (render, the ACME maintainer, TLSA for HTTPS) is
//! [`Model::vhost_kind`]; "has htdocs" (PHP pools, statistics) stays `Domain::web`. The
//! decision itself is [`decide`], a pure function of facts the model phase read.

use std::collections::BTreeSet;

use serde::Serialize;

use super::Model;
use crate::config::Config;

/// What kind of vhost a domain gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VhostKind {
    /// A website: `public/htdocs` (with `/webmail/` when the domain has mailboxes).
    Site,
    /// No website, only `/webmail/` (`templates/apache/webmail-site.conf.tera`): port 80
    /// answers ACME challenges and redirects to HTTPS, HTTPS serves Roundcube and 404s the
    /// rest. No PHP pool and no statistics of the domain's own.
    WebmailOnly,
}

/// What the mail side knows of a domain's mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mailboxes {
    /// At least one mailbox (`mailboxes/<local>/`).
    Some,
    /// None (no `mailboxes/`, or an empty one).
    None,
    /// Its mail files were refused: unknown (whatever was generated stays as it was).
    Unknown,
}

/// The vhost a domain gets.
///
/// * `web`: `public/htdocs` is a real directory → always a site.
/// * `webmail`: the domain's webmail switch (`webmail::wanted`); `None` when webmail is not
///   enabled on this server.
/// * `host`: the domain is the host's own name (`[web] hostname`), whose webmail is for
///   every domain's users: it needs no mailboxes of its own.
/// * `mailboxes`: what the mail model found.
///
/// A refused `config/webmail` (`Some(Err)`) still says `WebmailOnly`: render then reports
/// the refusal and the domain's files stay as they were, rather than being removed over a
/// typo.
pub fn decide(
    web: bool,
    webmail: Option<&Result<bool, String>>,
    host: bool,
    mailboxes: Mailboxes,
) -> Option<VhostKind> {
    if web {
        return Some(VhostKind::Site);
    }
    match webmail? {
        Err(_) => Some(VhostKind::WebmailOnly),
        Ok(false) => None,
        Ok(true) if host || mailboxes == Mailboxes::Some => Some(VhostKind::WebmailOnly),
        Ok(true) => None,
    }
}

impl Model {
    /// The vhost `name` gets ([`decide`] on the facts of the model phase). Without the
    /// service facts ([`Model::load_services`]) only sites are known.
    pub fn vhost_kind(&self, cfg: &Config, name: &str) -> Option<VhostKind> {
        let d = self.domains.get(name)?;
        let Some(services) = &self.services else {
            return d.web.then_some(VhostKind::Site);
        };
        let mailboxes = match services.mail.domains.get(name) {
            Some(m) if !m.mailboxes.is_empty() => Mailboxes::Some,
            _ if services.mail.failed.contains_key(name) => Mailboxes::Unknown,
            _ => Mailboxes::None,
        };
        decide(
            d.web,
            services.webmail.get(name),
            name == cfg.hostname(),
            mailboxes,
        )
    }

    /// Whether `name` has an Apache vhost of either kind.
    pub fn serves_http(&self, cfg: &Config, name: &str) -> bool {
        self.vhost_kind(cfg, name).is_some()
    }
}

/// The domains of `model` (loaded without its service facts, as the ACME maintainer and
/// `dirhost ssl list` do) that get a webmail-only vhost. Reads, through `safefs` as each
/// owner, the webmail switch and the mail files of the domains without `public/htdocs`
/// only: sites cost nothing here.
pub fn webmail_only(cfg: &Config, model: &Model) -> BTreeSet<String> {
    if !crate::webmail::enabled(cfg) || model.domains.values().all(|d| d.web) {
        return BTreeSet::new();
    }
    // Only the domains without a website, and only their facts: not a copy of every site
    // (with its certificate material) to throw most of it away.
    let keep = |name: &String| model.domains.get(name).is_some_and(|d| !d.web);
    let mut m = Model {
        domains: model
            .domains
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect(),
        skipped: Vec::new(),
        services: None,
        config_files: model
            .config_files
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
        symlink_aliases: model
            .symlink_aliases
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect(),
    };
    m.load_services(cfg);
    m.domains
        .keys()
        .filter(|n| m.vhost_kind(cfg, n) == Some(VhostKind::WebmailOnly))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_domains_get_which_vhost() {
        use Mailboxes as M;
        use VhostKind::*;
        let on: Result<bool, String> = Ok(true);
        let off: Result<bool, String> = Ok(false);
        let bad: Result<bool, String> = Err("config/webmail says \"maybe\"".into());
        #[rustfmt::skip]
        type Case<'a> = (bool, Option<&'a Result<bool, String>>, bool, Mailboxes, Option<VhostKind>);
        let cases: &[Case] = &[
            // A site is a site, whatever its mail and webmail say.
            (true, None, false, M::None, Some(Site)),
            (true, Some(&off), false, M::Some, Some(Site)),
            (true, Some(&on), false, M::Some, Some(Site)),
            (true, Some(&bad), true, M::Unknown, Some(Site)),
            // Mail-only with mailboxes and webmail wanted: webmail only.
            (false, Some(&on), false, M::Some, Some(WebmailOnly)),
            // Webmail off (server-wide, or config/webmail = false): nothing.
            (false, None, false, M::Some, None),
            (false, None, true, M::Some, None),
            (false, Some(&off), false, M::Some, None),
            (false, Some(&off), true, M::None, None),
            // The last mailbox gone (an empty mailboxes/): nothing...
            (false, Some(&on), false, M::None, None),
            // ...except at the host's own name, whose webmail is for everyone.
            (false, Some(&on), true, M::None, Some(WebmailOnly)),
            // Mail files refused: left as it was (no new vhost; plan keeps an old one).
            (false, Some(&on), false, M::Unknown, None),
            // A refused config/webmail: render reports it, the old files stay.
            (false, Some(&bad), false, M::Some, Some(WebmailOnly)),
            // No mailboxes, no htdocs, not the host: a plain directory.
            (false, Some(&on), false, M::None, None),
        ];
        for (i, (web, webmail, host, mailboxes, want)) in cases.iter().enumerate() {
            assert_eq!(
                decide(*web, *webmail, *host, *mailboxes),
                *want,
                "case {i}: web={web} webmail={webmail:?} host={host} mailboxes={mailboxes:?}"
            );
        }
    }
}
