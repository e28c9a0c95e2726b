#!/usr/bin/env python3
"""Turns the rows the hostile tests append (DIRHOST_HOSTILE_CATALOGUE=<file>) into the
Markdown tables of SECURITY.md. Usage:

    rm -f /tmp/cat.tsv
    for t in hostile_web hostile_mail hostile_daemon hostile_cli hostile_stats; do
        DIRHOST_HOSTILE_CATALOGUE=/tmp/cat.tsv cargo test --test $t
    done
    python3 tests/hostile/catalogue.py /tmp/cat.tsv > /tmp/tables.md
"""
import re
import sys

SECTIONS = [
    ("W", "Web: flag and value files, directories on the way, FIFOs/devices, huge files, hard links, `config/ip` injection"),
    ("P", "PHP: `config/php`, `config/php.ini` injection and allow-list, PHP code reading outside its domain, `php/` directories"),
    ("N", "Names and owners of /srv entries"),
    ("A", "Alias symlinks in /srv"),
    ("C", "Certificates: `config/ssl/current`, sets, legacy files"),
    ("L", "Access logs: `public/logs`"),
    ("H", "htdocs, `.htaccess`, `.well-known`, cgi-bin, deep trees"),
    ("M", "Mail: mailboxes, Maildir, password files, aliases, forward/filter/vacation, quotas, DKIM selector, owners"),
    ("ML", "Mail: login names that walk paths (Dovecot)"),
    ("MR", "Mail: recipients that walk paths or expand (Exim)"),
    ("D", "The daemon (`dirhost watch`) under hostile changes"),
    ("R", "Races: symlinks swapped between check and use"),
    ("X", "Command line and DNS export"),
    ("S", "Secrets: never in logs; keys and hashes with tight modes"),
    ("ST", "Stats: `config/stats`, `config/stats-password`, logs fed to GoAccess, its database, `dirhost stats`"),
]

rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    test, ident, attack, outcome = line.rstrip("\n").split("\t")
    prefix = re.match(r"[A-Z]+", ident).group(0)
    if prefix == "M" and ident.startswith(("ML", "MR")):
        prefix = ident[:2]
    rows.setdefault(prefix, []).append((ident, attack, outcome, test))

def cell(s):
    s = re.sub(r"/tmp/dirhost-sandbox\.[A-Za-z0-9]+", "<root>", s)
    return s.replace("|", "\\|").replace("`", "'")

total = 0
for prefix, title in SECTIONS:
    items = rows.get(prefix, [])
    if not items:
        continue
    print(f"### {title}\n")
    print("| id | attack | expected outcome | test |")
    print("|---|---|---|---|")
    for ident, attack, outcome, test in items:
        print(f"| {ident} | {cell(attack)} | {cell(outcome)} | `tests/{test}.rs` |")
        total += 1
    print()
print(f"<!-- {total} cases -->")
