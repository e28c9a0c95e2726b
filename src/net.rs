//! Address arithmetic for generated configs. Pure functions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

/// Every address range that is *not* in `trusted` (addresses or CIDRs), as a minimal list of
/// CIDRs over IPv4 and IPv6. Used for mod_remoteip's `RemoteIPProxyProtocolExceptions`: only
/// the trusted proxies may (and must) send a PROXY header. Empty `trusted` → empty result.
pub fn complement(trusted: &[String]) -> Result<Vec<String>> {
    if trusted.is_empty() {
        return Ok(Vec::new());
    }
    let mut v4: Vec<(u128, u8)> = Vec::new();
    let mut v6: Vec<(u128, u8)> = Vec::new();
    for t in trusted {
        let (addr, len) = parse(t).with_context(|| format!("{t:?} is not an address or CIDR"))?;
        match addr {
            IpAddr::V4(a) => v4.push((u128::from(u32::from(a)) & mask(32, len), len)),
            IpAddr::V6(a) => v6.push((u128::from(a) & mask(128, len), len)),
        }
    }
    let mut out = Vec::new();
    for (net, len) in complement_bits(&v4, 32) {
        let a = Ipv4Addr::from(u32::try_from(net).unwrap_or(0));
        out.push(format!("{a}/{len}"));
    }
    for (net, len) in complement_bits(&v6, 128) {
        out.push(format!("{}/{len}", Ipv6Addr::from(net)));
    }
    Ok(out)
}

fn parse(t: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = t.split_once('/').unwrap_or((t, ""));
    let ip: IpAddr = a.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() { max } else { l.parse().ok()? };
    (len <= max).then_some((ip, len))
}

fn mask(bits: u8, len: u8) -> u128 {
    let all: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

/// Complement of a set of prefixes within a `bits`-wide space, by walking the prefix tree.
fn complement_bits(nets: &[(u128, u8)], bits: u8) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    walk(0, 0, nets, bits, &mut out);
    out
}

fn walk(prefix: u128, len: u8, nets: &[(u128, u8)], bits: u8, out: &mut Vec<(u128, u8)>) {
    let inside = |(n, l): &(u128, u8)| *l >= len && (n & mask(bits, len)) == prefix;
    let covers = |(n, l): &(u128, u8)| *l <= len && (prefix & mask(bits, *l)) == *n;
    if nets.iter().any(covers) {
        return; // fully trusted
    }
    if !nets.iter().any(inside) && len > 0 {
        out.push((prefix, len)); // nothing trusted in here
        return;
    }
    // (A whole address family is emitted as its two halves: Apache's address parser
    // rejects a /0 mask.)
    let bit = 1u128 << (bits - len - 1);
    walk(prefix, len + 1, nets, bits, out);
    walk(prefix | bit, len + 1, nets, bits, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn complements() {
        assert!(complement(&[]).unwrap().is_empty());
        // Trusting all of IPv4 leaves all of IPv6 (as two halves: Apache rejects /0).
        assert_eq!(
            complement(&s(&["0.0.0.0/0"])).unwrap(),
            s(&["::/1", "8000::/1"])
        );
        // Half of IPv4.
        assert_eq!(
            complement(&s(&["128.0.0.0/1"])).unwrap(),
            s(&["0.0.0.0/1", "::/1", "8000::/1"])
        );
        let c = complement(&s(&["192.0.2.7"])).unwrap();
        assert_eq!(c.len(), 32 + 2, "{c:?}");
        assert!(c.contains(&"192.0.2.6/32".to_string()));
        assert!(c.contains(&"0.0.0.0/1".to_string()));
        assert!(!c.iter().any(|x| x == "192.0.2.7/32"));
        let c6 = complement(&s(&["2001:db8::1"])).unwrap();
        assert_eq!(c6.len(), 2 + 128);
        assert!(c6.contains(&"0.0.0.0/1".to_string()));
        assert!(c6.iter().all(|c| !c.ends_with("/0")));
        assert!(c6.contains(&"2001:db8::/128".to_string()));
        assert!(complement(&s(&["nonsense"])).is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(mask(32, 0), 0);
        assert_eq!(mask(32, 32), 0xffff_ffff);
        assert_eq!(mask(32, 24), 0xffff_ff00);
        assert_eq!(mask(128, 128), u128::MAX);
        assert_eq!(mask(128, 1), 1u128 << 127);
    }
}
