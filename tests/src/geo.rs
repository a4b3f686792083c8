//! Writes small MaxMind DB (`.mmdb`) files for tests: a GeoIP2-style country
//! database from a list of `(CIDR, ISO code)` pairs, or any records with
//! [`write_db`].
//!
//! The file follows the MaxMind DB format 2.0: a binary search tree over the
//! 128 bits of an IPv6 address, 16 zero bytes, a data section, the marker
//! `\xAB\xCD\xEFMaxMind.com` and a metadata map. IPv4 networks are stored at
//! `::a.b.c.d` (the first 96 bits zero), which is where readers look up IPv4
//! addresses in an IPv6 database, and again at `::ffff:a.b.c.d` so that
//! IPv4-mapped IPv6 addresses find them too, as in MaxMind's own files.
//! When networks nest, the longest prefix wins, whatever the order given;
//! of two entries for the same network, the later wins. Records are 24 bits
//! (28 or 32 only when the file is too large for 24), identical records are
//! stored once, and the metadata is that of a GeoLite2 database
//! (`binary_format_major_version` 2, `ip_version` 6, `languages` `["en"]`,
//! a description, `build_epoch` now, `node_count`, `record_size`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

/// A value in the MaxMind DB data section.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A map with UTF-8 string keys (type 7), written in the given order.
    Map(Vec<(String, Value)>),
    /// A UTF-8 string (type 2).
    Str(String),
    /// An unsigned 16-bit integer (type 5).
    U16(u16),
    /// An unsigned 32-bit integer (type 6).
    U32(u32),
    /// An unsigned 64-bit integer (type 9).
    U64(u64),
    /// An array (type 11).
    Array(Vec<Value>),
    /// A boolean (type 14).
    Bool(bool),
}

impl Value {
    /// A map from `(key, value)` pairs.
    pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// A UTF-8 string value.
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    /// The GeoIP2 country record `{ "country": { "iso_code": iso } }`.
    pub fn country(iso: &str) -> Value {
        Value::map([("country", Value::map([("iso_code", Value::str(iso))]))])
    }
}

/// Writes a GeoIP2-style country database to `path`: each network in
/// `entries` (a CIDR such as `"10.1.0.0/16"` or `"2001:db8::/32"`) maps to the
/// record `{ "country": { "iso_code": <code> } }`. The code is written as
/// given, so tests can also store malformed codes.
pub fn write_country_db(path: &Path, entries: &[(&str, &str)]) -> anyhow::Result<()> {
    let records: Vec<(&str, Value)> = entries
        .iter()
        .map(|&(cidr, iso)| (cidr, Value::country(iso)))
        .collect();
    write_db(path, "GeoLite2-Country", &records)
}

/// Writes a MaxMind DB to `path` with `database_type` in its metadata and
/// each network of `entries` (CIDR, record) mapped to its record.
pub fn write_db(path: &Path, database_type: &str, entries: &[(&str, Value)]) -> anyhow::Result<()> {
    let bytes = build_db(database_type, entries)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A search tree record: nothing, another node, or data at an offset in the
/// data section.
#[derive(Debug, Clone, Copy)]
enum Rec {
    /// No data for this network.
    Empty,
    /// The node with this number.
    Node(u32),
    /// The record at this offset in the data section.
    Data(u32),
}

/// The bytes of a MaxMind DB with `database_type` and `entries`.
pub fn build_db(database_type: &str, entries: &[(&str, Value)]) -> anyhow::Result<Vec<u8>> {
    // Each network as (the 128 address bits, prefix length) in the IPv6 tree.
    let mut networks: Vec<(u128, u32, &Value)> = Vec::with_capacity(entries.len() * 2);
    for (cidr, value) in entries {
        let (addr, len) = parse_cidr(cidr)?;
        match addr {
            IpAddr::V4(v4) => {
                let bits = u128::from(u32::from(v4));
                networks.push((bits, len + 96, value));
                networks.push((bits | 0xffff_u128 << 32, len + 96, value));
            }
            IpAddr::V6(v6) => networks.push((u128::from(v6), len, value)),
        }
    }
    // Shorter prefixes first, so a longer one inserted later splits them.
    networks.sort_by_key(|&(_, len, _)| len);

    let mut data = Vec::new();
    let mut offsets: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    for (bits, len, value) in networks {
        let mut encoded = Vec::new();
        encode(value, &mut encoded)?;
        let offset = match offsets.get(&encoded) {
            Some(&offset) => offset,
            None => {
                let offset = u32::try_from(data.len()).context("data section too large")?;
                data.extend_from_slice(&encoded);
                offsets.insert(encoded, offset);
                offset
            }
        };
        insert(&mut nodes, bits, len, offset);
    }

    let node_count = u32::try_from(nodes.len()).context("too many nodes")?;
    let max_record = u64::from(node_count) + 16 + data.len() as u64;
    let record_size: u16 = match max_record {
        0..0x100_0000 => 24,
        0x100_0000..0x1000_0000 => 28,
        0x1000_0000..0x1_0000_0000 => 32,
        _ => bail!("database too large"),
    };

    let mut out = Vec::with_capacity(nodes.len() * usize::from(record_size) / 4 + data.len() + 256);
    for [left, right] in &nodes {
        let (l, r) = (record(*left, node_count), record(*right, node_count));
        match record_size {
            24 => {
                out.extend_from_slice(&l.to_be_bytes()[1..]);
                out.extend_from_slice(&r.to_be_bytes()[1..]);
            }
            28 => {
                out.extend_from_slice(&l.to_be_bytes()[1..]);
                out.push(((l >> 24) as u8) << 4 | (r >> 24) as u8);
                out.extend_from_slice(&r.to_be_bytes()[1..]);
            }
            _ => {
                out.extend_from_slice(&l.to_be_bytes());
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");

    let build_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let metadata = Value::map([
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(build_epoch)),
        ("database_type", Value::str(database_type)),
        (
            "description",
            Value::map([("en", Value::str("Corridor test database"))]),
        ),
        ("ip_version", Value::U16(6)),
        ("languages", Value::Array(vec![Value::str("en")])),
        ("node_count", Value::U32(node_count)),
        ("record_size", Value::U16(record_size)),
    ]);
    encode(&metadata, &mut out)?;
    Ok(out)
}

/// Parses `"addr/len"`, rejecting set host bits (a likely typo in a test).
fn parse_cidr(cidr: &str) -> anyhow::Result<(IpAddr, u32)> {
    let (addr, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr:?}: not addr/len"))?;
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("{cidr:?}: bad address"))?;
    let len: u32 = len
        .parse()
        .with_context(|| format!("{cidr:?}: bad prefix length"))?;
    let (bits, width) = match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    if len > width {
        bail!("{cidr:?}: prefix length over {width}");
    }
    if len < width && bits & (u128::MAX >> (128 - width + len)) != 0 {
        bail!("{cidr:?}: host bits set");
    }
    Ok((addr, len))
}

/// Points the network `bits`/`len` at `offset`, splitting any shorter
/// network's data record on the way down.
fn insert(nodes: &mut Vec<[Rec; 2]>, bits: u128, len: u32, offset: u32) {
    if len == 0 {
        nodes[0] = [Rec::Data(offset); 2];
        return;
    }
    let mut node = 0;
    for depth in 0..len {
        let side = usize::from(bits >> (127 - depth) & 1 == 1);
        if depth + 1 == len {
            nodes[node][side] = Rec::Data(offset);
            return;
        }
        node = match nodes[node][side] {
            Rec::Node(next) => next as usize,
            fill @ (Rec::Empty | Rec::Data(_)) => {
                let next = nodes.len();
                nodes.push([fill; 2]);
                nodes[node][side] = Rec::Node(next as u32);
                next
            }
        };
    }
}

/// The number stored for `rec` in a tree of `node_count` nodes.
fn record(rec: Rec, node_count: u32) -> u32 {
    match rec {
        Rec::Empty => node_count,
        Rec::Node(n) => n,
        Rec::Data(offset) => node_count + 16 + offset,
    }
}

/// Appends `value` in the MaxMind DB data encoding.
fn encode(value: &Value, out: &mut Vec<u8>) -> anyhow::Result<()> {
    match value {
        Value::Map(entries) => {
            control(7, entries.len(), out)?;
            for (key, value) in entries {
                control(2, key.len(), out)?;
                out.extend_from_slice(key.as_bytes());
                encode(value, out)?;
            }
        }
        Value::Str(s) => {
            control(2, s.len(), out)?;
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(n) => uint(5, u64::from(*n), out)?,
        Value::U32(n) => uint(6, u64::from(*n), out)?,
        Value::U64(n) => uint(9, *n, out)?,
        Value::Array(items) => {
            control(11, items.len(), out)?;
            for item in items {
                encode(item, out)?;
            }
        }
        Value::Bool(b) => control(14, usize::from(*b), out)?,
    }
    Ok(())
}

/// Appends an unsigned integer of type `kind` in as few bytes as it needs.
fn uint(kind: u8, n: u64, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let bytes = n.to_be_bytes();
    let skip = (n.leading_zeros() / 8) as usize;
    control(kind, bytes.len() - skip, out)?;
    out.extend_from_slice(&bytes[skip..]);
    Ok(())
}

/// Appends a control byte for type `kind` and payload `size` (types over 7
/// as extended types), then any size bytes.
fn control(kind: u8, size: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let (size_bits, extra): (u8, &[u8]) = match size {
        0..29 => (size as u8, &[]),
        29..285 => (29, &[(size - 29) as u8]),
        285..65_821 => (30, &((size - 285) as u16).to_be_bytes()),
        65_821..16_843_037 => (31, &((size - 65_821) as u32).to_be_bytes()[1..]),
        _ => bail!("value too large: {size}"),
    };
    if kind <= 7 {
        out.push(kind << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.1/24",
            "2001:db8::/129",
            "2001:db8::1/32",
            "x/8",
            "10.0.0.0/x",
        ] {
            let err = build_db("t", &[(bad, Value::country("DE"))]);
            assert!(err.is_err(), "{bad} accepted");
        }
        for good in ["0.0.0.0/0", "10.0.0.1/32", "::/0", "2001:db8::/32"] {
            build_db("t", &[(good, Value::country("DE"))]).unwrap();
        }
    }

    #[test]
    fn encodes_the_data_types() {
        let mut out = Vec::new();
        encode(&Value::country("DE"), &mut out).unwrap();
        assert_eq!(out, b"\xe1\x47country\xe1\x48iso_code\x42DE");
        for (value, bytes) in [
            (Value::U16(0), &b"\xa0"[..]),
            (Value::U16(2), b"\xa1\x02"),
            (Value::U32(0x1_0000), b"\xc3\x01\x00\x00"),
            (
                Value::U64(0x0102_0304_0506),
                b"\x06\x02\x01\x02\x03\x04\x05\x06",
            ),
            (Value::Array(vec![Value::str("en")]), b"\x01\x04\x42en"),
            (Value::Bool(true), b"\x01\x07"),
            (
                Value::Str("a".repeat(29)),
                &[&b"\x5d\x00"[..], &[b'a'; 29]].concat(),
            ),
            (
                Value::Str("a".repeat(300)),
                &[&b"\x5e\x00\x0f"[..], &[b'a'; 300]].concat(),
            ),
        ] {
            out.clear();
            encode(&value, &mut out).unwrap();
            assert_eq!(out, bytes, "{value:?}");
        }
    }

    #[test]
    fn longest_prefix_wins_in_any_order() {
        // A /24 inside a /16, in either order: the /16's record is split.
        for entries in [
            [("10.1.0.0/16", "DE"), ("10.1.2.0/24", "FR")],
            [("10.1.2.0/24", "FR"), ("10.1.0.0/16", "DE")],
        ] {
            let entries: Vec<_> = entries
                .iter()
                .map(|&(c, i)| (c, Value::country(i)))
                .collect();
            let db = build_db("t", &entries).unwrap();
            // Nodes at depths 0..=80 are shared by ::/96 and ::ffff:0:0/96;
            // each copy then has nodes at depths 81..=119 down to the /24.
            let nodes = 81 + 2 * 39;
            let tree = &db[..nodes * 6];
            assert_eq!(&db[nodes * 6..nodes * 6 + 16], &[0; 16]);
            // The /16's DE record (22 bytes) is at offset 0, FR after it.
            let data_ptr = |off: u32| (nodes as u32 + 16 + off).to_be_bytes()[1..].to_vec();
            let count = |ptr: Vec<u8>| tree.chunks(3).filter(|c| *c == ptr.as_slice()).count();
            // Per copy: FR once, at the /24; DE on the other side of each of
            // the 8 nodes between the /16 and the /24.
            assert_eq!(count(data_ptr(22)), 2);
            assert_eq!(count(data_ptr(0)), 2 * 8);
        }
    }
}
