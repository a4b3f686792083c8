//! Owns CIDR matching and finding the client address behind trusted proxies in
//! `X-Forwarded-For`: only addresses appended by trusted hops are believed.

use std::net::IpAddr;

use super::is_port;

/// An address range such as `10.0.0.0/8` or `2001:db8::/32` (or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a CIDR: {why} (use forms like 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)")]
pub struct CidrError {
    text: String,
    why: &'static str,
}

impl Cidr {
    /// Parses `addr/prefix` or a single address.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let err = |why| CidrError {
            text: text.to_string(),
            why,
        };
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let mut prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("the prefix length is out of range"))?,
        };
        // An IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 range it maps.
        let mut addr = addr;
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                if prefix < 96 {
                    return Err(err("an IPv4-mapped range needs a prefix of at least 96"));
                }
                addr = IpAddr::V4(v4);
                prefix -= 96;
            }
        }
        let c = Cidr { addr, prefix };
        if c.mask(addr) != addr {
            return Err(err("host bits are set below the prefix"));
        }
        Ok(c)
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.mask(ip) == self.addr
    }

    fn mask(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                IpAddr::V4((bits & m).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                IpAddr::V6((bits & m).into())
            }
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The client address behind `peer`, a trusted proxy, read from the
/// `X-Forwarded-For` values (in header order). Walks from the right: every
/// address in `trusted` is another proxy, the first one that is not is the
/// client. With `max_hops` > 0 at most that many proxies (the peer included)
/// are walked past, and the next address is the client whoever it is. An
/// entry that is not an address stops the walk at the last address reached.
pub fn client_from_forwarded_for<'a>(
    peer: IpAddr,
    values: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[Cidr],
    max_hops: u32,
) -> IpAddr {
    let mut client = peer;
    let mut hops = 1u32;
    for value in values.rev() {
        for entry in value.rsplit(|&b| b == b',') {
            if max_hops > 0 && hops >= max_hops {
                return parse_entry(entry).unwrap_or(client);
            }
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !trusted.iter().any(|c| c.contains(ip)) {
                return client;
            }
            hops += 1;
        }
    }
    client
}

/// One `X-Forwarded-For` element: an address, optionally `[v6]`, `v4:port` or `[v6]:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']')?;
        if !(tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| is_port(p.as_bytes())))
        {
            return None;
        }
        return inner.parse().ok();
    }
    let (a, port) = s.rsplit_once(':')?;
    if !is_port(port.as_bytes()) {
        return None;
    }
    a.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}
