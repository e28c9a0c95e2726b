//! Which of a site's names point at this host, checked before anything is ordered.
//!
//! This module owns the name check: resolve each name's A and AAAA records (through the
//! system resolver, or through `[acme] resolver` with a minimal DNS-over-UDP client) and
//! compare them with this host's addresses (`[acme] host_addresses`, else the local
//! interfaces without loopback and link-local). A name counts as pointing here only when
//! it resolves and *every* address is ours: the CA may validate over any of them.
//!
//! It must not write anything or decide what to order; it only reports, with a reason for
//! every name left out, so nothing is dropped silently.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::config::Config;

const DNS_TIMEOUT: Duration = Duration::from_secs(3);
const DNS_TRIES: usize = 2;

/// The outcome of the name check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameCheck {
    /// Names whose every address is this host's, in the order given.
    pub here: Vec<String>,
    /// Names left out, with why.
    pub elsewhere: Vec<(String, String)>,
}

/// Checks `names` against this host's addresses, as configured in `cfg`.
pub fn check_names(cfg: &Config, names: &[String]) -> Result<NameCheck> {
    let ours = host_addresses(cfg)?;
    let server = server(cfg)?;
    let mut out = NameCheck::default();
    for name in names {
        match lookup(server, name) {
            Ok(addrs) => match classify(&addrs, &ours) {
                None => out.here.push(name.clone()),
                Some(why) => out.elsewhere.push((name.clone(), why)),
            },
            Err(e) => out
                .elsewhere
                .push((name.clone(), format!("DNS lookup failed: {e:#}"))),
        }
    }
    Ok(out)
}

/// Why `addrs` does not point at `ours`; `None` when it does.
pub fn classify(addrs: &[IpAddr], ours: &BTreeSet<IpAddr>) -> Option<String> {
    if addrs.is_empty() {
        return Some("has no A or AAAA record".into());
    }
    let foreign: Vec<String> = addrs
        .iter()
        .filter(|a| !ours.contains(&canonical(**a)))
        .map(ToString::to_string)
        .collect();
    if foreign.is_empty() {
        None
    } else {
        Some(format!(
            "resolves to {} which {} not this host's",
            foreign.join(", "),
            if foreign.len() == 1 { "is" } else { "are" }
        ))
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn server(cfg: &Config) -> Result<Option<SocketAddr>> {
    if cfg.acme.resolver.is_empty() {
        return Ok(None);
    }
    cfg.acme
        .resolver
        .parse()
        .map(Some)
        .with_context(|| format!("[acme] resolver {:?}", cfg.acme.resolver))
}

/// This host's addresses: `[acme] host_addresses`, else the interfaces' global ones.
pub fn host_addresses(cfg: &Config) -> Result<BTreeSet<IpAddr>> {
    if !cfg.acme.host_addresses.is_empty() {
        return cfg
            .acme
            .host_addresses
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map(canonical)
                    .with_context(|| format!("[acme] host_addresses: {a:?}"))
            })
            .collect();
    }
    Ok(interface_addresses()?
        .into_iter()
        .filter(|a| is_global_candidate(*a))
        .map(canonical)
        .collect())
}

fn is_global_candidate(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Every address on a local interface (getifaddrs).
fn interface_addresses() -> Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs failed");
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family tells its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A and AAAA addresses of `name`, via `server` or the system resolver. A name that does
/// not exist resolves to nothing (not an error).
pub fn lookup(server: Option<SocketAddr>, name: &str) -> Result<Vec<IpAddr>> {
    let Some(server) = server else {
        return Ok(match (name, 0u16).to_socket_addrs() {
            Ok(addrs) => {
                let set: BTreeSet<IpAddr> = addrs.map(|a| a.ip()).collect();
                set.into_iter().collect()
            }
            // getaddrinfo's "no such name" comes back as an io::Error without a kind.
            Err(_) => Vec::new(),
        });
    };
    let mut out = query(server, name, QTYPE_A)?;
    out.extend(query(server, name, QTYPE_AAAA)?);
    Ok(out)
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;

fn query(server: SocketAddr, name: &str, qtype: u16) -> Result<Vec<IpAddr>> {
    let mut id = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("no randomness for the DNS query id"))?;
    let id = u16::from_be_bytes(id);
    let packet = encode_query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).context("failed to open a UDP socket")?;
    sock.set_read_timeout(Some(DNS_TIMEOUT))?;
    sock.connect(server)
        .with_context(|| format!("failed to reach DNS server {server}"))?;
    let mut buf = [0u8; 1500];
    let mut last_err = None;
    for _ in 0..DNS_TRIES {
        sock.send(&packet)
            .with_context(|| format!("failed to send to DNS server {server}"))?;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => match parse_response(&buf[..n], id, qtype) {
                    Ok(Some(addrs)) => return Ok(addrs),
                    Ok(None) => continue, // not our answer: keep listening
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
    }
    Err(anyhow::anyhow!(
        "no answer from DNS server {server} for {name}: {}",
        last_err.map_or_else(|| "timeout".to_string(), |e| e.to_string())
    ))
}

/// A standard recursive query for `name` (RFC 1035 §4.1).
fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut p = Vec::with_capacity(name.len() + 18);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    let name = name.strip_suffix('.').unwrap_or(name);
    ensure!(
        !name.is_empty() && name.len() <= 253,
        "{name:?} is not a DNS name"
    );
    for label in name.split('.') {
        ensure!(
            !label.is_empty() && label.len() <= 63,
            "{name:?} is not a DNS name"
        );
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(p)
}

fn u16_at(b: &[u8], i: usize) -> Result<u16> {
    match b.get(i..i + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => bail!("truncated DNS response"),
    }
}

/// Skips a (possibly compressed) name starting at `i`; returns the index after it.
fn skip_name(b: &[u8], mut i: usize) -> Result<usize> {
    for _ in 0..128 {
        let len = *b.get(i).context("truncated DNS response")?;
        match len {
            0 => return Ok(i + 1),
            l if l & 0xc0 == 0xc0 => return Ok(i + 2),
            l => i += 1 + usize::from(l),
        }
    }
    bail!("malformed name in DNS response")
}

/// `Ok(None)`: a packet that is not the answer to our query. NXDOMAIN is an empty answer.
fn parse_response(b: &[u8], id: u16, qtype: u16) -> Result<Option<Vec<IpAddr>>> {
    if b.len() < 12 || u16_at(b, 0)? != id || b[2] & 0x80 == 0 {
        return Ok(None);
    }
    let rcode = b[3] & 0x0f;
    match rcode {
        0 => {}
        3 => return Ok(Some(Vec::new())), // NXDOMAIN
        2 => bail!("the DNS server failed (SERVFAIL)"),
        5 => bail!("the DNS server refused the query"),
        r => bail!("DNS error code {r}"),
    }
    let qd = u16_at(b, 4)?;
    let an = u16_at(b, 6)?;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let rtype = u16_at(b, i)?;
        let rdlen = usize::from(u16_at(b, i + 8)?);
        let data = b
            .get(i + 10..i + 10 + rdlen)
            .context("truncated DNS response")?;
        match (rtype, data.len()) {
            (QTYPE_A, 4) if qtype == QTYPE_A => {
                out.push(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                )));
            }
            (QTYPE_AAAA, 16) if qtype == QTYPE_AAAA => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(a)));
            }
            _ => {} // CNAMEs and others: their targets' records follow in the answer
        }
        i += 10 + rdlen;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classify_table() {
        let ours: BTreeSet<IpAddr> = [ip("192.0.2.1"), ip("2001:db8::1")].into();
        let cases: &[(&[&str], bool)] = &[
            (&["192.0.2.1"], true),
            (&["192.0.2.1", "2001:db8::1"], true),
            (&["::ffff:192.0.2.1"], true),
            (&["192.0.2.1", "2001:db8::2"], false),
            (&["198.51.100.7"], false),
            (&[], false),
        ];
        for (addrs, here) in cases {
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
            let got = classify(&addrs, &ours);
            assert_eq!(got.is_none(), *here, "{addrs:?}: {got:?}");
        }
        assert!(
            classify(&[ip("198.51.100.7")], &ours)
                .unwrap()
                .contains("198.51.100.7")
        );
    }

    #[test]
    fn query_and_response_round_trip() {
        let q = encode_query(0x1234, "www.Example.test.", QTYPE_A).unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert!(q.windows(8).any(|w| w == b"\x07Example"));
        assert!(encode_query(1, "a..b", QTYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), QTYPE_A).is_err());

        // A response: header, the question echoed, a CNAME and an A record (compressed names).
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 2; // ANCOUNT
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
        assert_eq!(
            parse_response(&r, 0x1234, QTYPE_A).unwrap(),
            Some(vec![ip("127.0.0.1")])
        );
        assert_eq!(parse_response(&r, 0x9999, QTYPE_A).unwrap(), None);
        let mut nx = q.clone();
        nx[2] = 0x81;
        nx[3] = 0x83;
        assert_eq!(parse_response(&nx, 0x1234, QTYPE_A).unwrap(), Some(vec![]));
        let mut bad = r.clone();
        bad.truncate(r.len() - 3);
        assert!(parse_response(&bad, 0x1234, QTYPE_A).is_err());
    }

    #[test]
    fn interfaces_include_loopback_but_candidates_do_not() {
        let all = interface_addresses().unwrap();
        assert!(all.contains(&ip("127.0.0.1")), "{all:?}");
        assert!(!is_global_candidate(ip("127.0.0.1")));
        assert!(!is_global_candidate(ip("fe80::1")));
        assert!(is_global_candidate(ip("192.0.2.1")));
    }
}
