//! Tests of the GeoIP reader against databases written by the test support
//! crate's writer, included here by path (the proxy crate cannot depend on
//! `corridor-tests`), so both crates use the one writer.

use std::net::IpAddr;
use std::path::Path;

use super::*;

#[path = "../../../tests/src/geo.rs"]
mod writer;

use writer::{write_country_db, write_db, Value};

/// The code `db` gives for `ip`, as a string.
fn lookup(db: &GeoDb, ip: &str) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    db.country(ip)
        .map(|code| String::from_utf8(code.to_vec()).unwrap())
}

/// Asserts each `(ip, code)` of `cases` against `db`.
fn assert_lookups(db: &GeoDb, cases: &[(&str, Option<&str>)]) {
    for &(ip, want) in cases {
        assert_eq!(lookup(db, ip).as_deref(), want, "{ip}");
    }
}

/// A database at `dir/name` with `entries`, opened.
fn country_db(dir: &Path, name: &str, entries: &[(&str, &str)]) -> GeoDb {
    let path = dir.join(name);
    write_country_db(&path, entries).unwrap();
    GeoDb::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `entries` to a new file in `dir` and renames it over `path`, as a
/// database updater does.
fn replace(path: &Path, write: impl FnOnce(&Path)) {
    let tmp = path.with_extension("tmp");
    write(&tmp);
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn looks_up_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let db = country_db(
        dir.path(),
        "c.mmdb",
        &[
            ("10.1.0.0/16", "DE"),
            ("192.0.2.7/32", "us"),
            ("2001:db8::/32", "FR"),
        ],
    );
    assert_lookups(
        &db,
        &[
            ("10.1.0.0", Some("DE")),
            ("10.1.2.3", Some("DE")),
            ("10.1.255.255", Some("DE")),
            ("10.0.255.255", None),
            ("10.2.0.0", None),
            ("11.1.2.3", None),
            ("0.0.0.0", None),
            ("255.255.255.255", None),
            // Stored lower case, returned upper case.
            ("192.0.2.7", Some("US")),
            ("192.0.2.6", None),
            ("192.0.2.8", None),
            ("2001:db8::", Some("FR")),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some("FR")),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db9::", None),
            ("::", None),
            ("::1", None),
            // An IPv4-mapped address is the IPv4 address.
            ("::ffff:10.1.2.3", Some("DE")),
            ("::ffff:10.2.0.0", None),
        ],
    );
    let meta = db.reader.metadata();
    assert_eq!(meta.database_type, "GeoLite2-Country");
    assert_eq!((meta.ip_version, meta.record_size), (6, 24));
}

#[test]
fn ipv4_mapped_addresses_use_the_ipv4_tree() {
    // The IPv6 entry inside ::ffff:0:0/96 is never used for mapped
    // addresses: they are looked up as IPv4.
    let dir = tempfile::tempdir().unwrap();
    let db = country_db(
        dir.path(),
        "m.mmdb",
        &[("10.0.0.0/8", "DE"), ("::ffff:10.1.0.0/112", "FR")],
    );
    assert_lookups(
        &db,
        &[
            ("10.1.2.3", Some("DE")),
            ("::ffff:10.1.2.3", Some("DE")),
            ("::ffff:10.2.0.0", Some("DE")),
            ("::ffff:11.0.0.0", None),
        ],
    );
}

#[test]
fn longest_prefix_wins() {
    let dir = tempfile::tempdir().unwrap();
    let outer_first = [
        ("10.1.0.0/16", "DE"),
        ("10.1.2.0/24", "FR"),
        ("10.1.2.128/25", "NL"),
        ("2001:db8::/32", "DE"),
        ("2001:db8:1::/48", "FR"),
    ];
    let mut inner_first = outer_first;
    inner_first.reverse();
    for (name, entries) in [("a.mmdb", outer_first), ("b.mmdb", inner_first)] {
        let db = country_db(dir.path(), name, &entries);
        assert_lookups(
            &db,
            &[
                ("10.1.1.255", Some("DE")),
                ("10.1.2.0", Some("FR")),
                ("10.1.2.127", Some("FR")),
                ("10.1.2.128", Some("NL")),
                ("10.1.2.255", Some("NL")),
                ("10.1.3.0", Some("DE")),
                ("10.1.0.0", Some("DE")),
                ("2001:db8::1", Some("DE")),
                ("2001:db8:1::1", Some("FR")),
                ("2001:db8:1:ffff::", Some("FR")),
                ("2001:db8:2::", Some("DE")),
            ],
        );
    }
}

#[test]
fn falls_back_to_registered_country_and_rejects_bad_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.mmdb");
    let iso = |code: &str| Value::map([("iso_code", Value::str(code))]);
    let names = Value::map([
        ("en", Value::str("Germany")),
        ("de", Value::str("Deutschland")),
    ]);
    write_db(
        &path,
        "GeoIP2-Country",
        &[
            // Only the registered country.
            (
                "10.0.1.0/24",
                Value::map([("registered_country", iso("JP"))]),
            ),
            // A country without a code, and a registered one.
            (
                "10.0.2.0/24",
                Value::map([
                    ("country", Value::map([("names", names.clone())])),
                    ("registered_country", iso("JP")),
                ]),
            ),
            // Both: the country wins.
            (
                "10.0.3.0/24",
                Value::map([("country", iso("GB")), ("registered_country", iso("JP"))]),
            ),
            // A full record: other fields are skipped.
            (
                "10.0.4.0/24",
                Value::map([
                    (
                        "continent",
                        Value::map([
                            ("code", Value::str("EU")),
                            ("geoname_id", Value::U32(6_255_148)),
                        ]),
                    ),
                    (
                        "country",
                        Value::map([
                            ("geoname_id", Value::U32(2_921_044)),
                            ("is_in_european_union", Value::Bool(true)),
                            ("iso_code", Value::str("DE")),
                            ("names", names),
                        ]),
                    ),
                    ("traits", Value::map([("is_anycast", Value::Bool(false))])),
                ]),
            ),
            // No code anywhere, malformed codes, and a record that is not a map.
            ("10.0.5.0/24", Value::map([("city", iso("XX"))])),
            ("10.0.6.0/24", Value::country("D")),
            ("10.0.7.0/24", Value::country("DEU")),
            ("10.0.8.0/24", Value::country("1A")),
            ("10.0.9.0/24", Value::country("")),
            ("10.0.10.0/24", Value::str("DE")),
            ("10.0.11.0/24", Value::map([("country", Value::str("DE"))])),
        ],
    )
    .unwrap();
    let db = GeoDb::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_lookups(
        &db,
        &[
            ("10.0.1.1", Some("JP")),
            ("10.0.2.1", Some("JP")),
            ("10.0.3.1", Some("GB")),
            ("10.0.4.1", Some("DE")),
            ("10.0.5.1", None),
            ("10.0.6.1", None),
            ("10.0.7.1", None),
            ("10.0.8.1", None),
            ("10.0.9.1", None),
            ("10.0.10.1", None),
            ("10.0.11.1", None),
        ],
    );
}

#[test]
fn bad_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.mmdb");
    write_country_db(&good, &[("10.0.0.0/8", "DE"), ("2001:db8::/32", "FR")]).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // The tree's first record points past the data section: the metadata is
    // fine, so only a check of the whole file finds it.
    let mut bad_tree = bytes.clone();
    bad_tree[..3].copy_from_slice(&[0xff; 3]);
    // A node count larger than the file.
    let marker = bytes
        .windows(14)
        .position(|w| w == b"\xAB\xCD\xEFMaxMind.com")
        .unwrap();
    let meta = &bytes[marker..];
    let at = meta.windows(10).position(|w| w == b"node_count").unwrap() + 10;
    let mut bad_count = bytes.clone();
    bad_count[marker + at + 1] = 0x7f;

    let cases: [(&str, Option<Vec<u8>>); 7] = [
        ("missing.mmdb", None),
        ("empty.mmdb", Some(Vec::new())),
        ("garbage.mmdb", Some(b"not a database at all".repeat(100))),
        ("truncated.mmdb", Some(bytes[..bytes.len() - 20].to_vec())),
        ("no-metadata.mmdb", Some(bytes[..marker].to_vec())),
        ("bad-tree.mmdb", Some(bad_tree)),
        ("bad-count.mmdb", Some(bad_count)),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let err = GeoDb::open(&path).map(|db| format!("{db:?}")).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(GeoSource::open(&path).is_err(), "{name}");
    }
    // A directory is not a file either.
    let err = GeoDb::open(dir.path()).unwrap_err();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    // And the good file is good.
    GeoDb::open(&good).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn source_reloads_on_change_and_keeps_the_old_db_when_the_new_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let db_with =
        |code: &'static str| move |p: &Path| write_country_db(p, &[("10.0.0.0/8", code)]).unwrap();
    let corrupt = |p: &Path| std::fs::write(p, b"corrupt").unwrap();

    db_with("DE")(&path);
    let source = GeoSource::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(source.path(), path);
    assert_eq!(source.country(ip), Some(*b"DE"));
    assert_eq!(source.check(), Ok(false));
    let first = source.current().as_ref().map(|db| db.stamp()).unwrap();
    assert_eq!(first.1, std::fs::metadata(&path).unwrap().len());

    // A new file of the same size and modification time renamed over the
    // old one: only the inode tells them apart.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    replace(&path, |p| {
        db_with("FR")(p);
        let file = std::fs::File::options().write(true).open(p).unwrap();
        file.set_modified(mtime).unwrap();
    });
    assert_eq!(
        source.current().as_ref().map(|db| db.stamp()),
        Some((Some(mtime), std::fs::metadata(&path).unwrap().len()))
    );
    assert_eq!(source.country(ip), Some(*b"DE"), "before the check");
    assert_eq!(source.check(), Ok(true));
    assert_eq!(source.country(ip), Some(*b"FR"));
    assert_eq!(source.check(), Ok(false));

    // A corrupt file: reported once, the old database stays.
    let held = source.current().as_ref().map(Arc::clone).unwrap();
    replace(&path, corrupt);
    let err = source.check().unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(source.country(ip), Some(*b"FR"));
    assert_eq!(source.check(), Ok(false));
    assert!(Arc::ptr_eq(&held, source.current().as_ref().unwrap()));

    // A different corrupt file is reported again.
    replace(&path, |p| std::fs::write(p, b"corrupt, again").unwrap());
    assert!(source.check().is_err());
    assert_eq!(source.check(), Ok(false));

    // A missing file likewise.
    std::fs::remove_file(&path).unwrap();
    let err = source.check().unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(source.check(), Ok(false));
    assert_eq!(source.country(ip), Some(*b"FR"));

    // A good file again.
    replace(&path, db_with("NL"));
    assert_eq!(source.check(), Ok(true));
    assert_eq!(source.country(ip), Some(*b"NL"));
    assert_eq!(
        source.current().as_ref().map(|db| db.country(ip)),
        Some(Some(*b"NL"))
    );
    // The guard taken before still sees FR until it is dropped.
    assert_eq!(held.country(ip), Some(*b"FR"));
    assert_eq!(source.check(), Ok(false));

    // Missing again after a good file: reported again.
    std::fs::remove_file(&path).unwrap();
    assert!(source.check().is_err());
    assert_eq!(source.country(ip), Some(*b"NL"));
}

#[test]
fn source_reloads_a_file_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    write_country_db(&path, &[("2001:db8::/32", "DE")]).unwrap();
    let source = GeoSource::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(source.country(ip), Some(*b"DE"));
    // Same inode, different size.
    write_country_db(&path, &[("2001:db8::/32", "FR"), ("10.0.0.0/8", "DE")]).unwrap();
    assert_eq!(source.check(), Ok(true));
    assert_eq!(source.country(ip), Some(*b"FR"));
}

#[test]
fn damaged_files_never_panic() {
    // Flip bytes of a valid file at random (deterministically) and cut it
    // short: parsing either fails or gives a database whose lookups answer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.mmdb");
    let entries = [
        ("10.0.0.0/8", "DE"),
        ("10.1.2.0/24", "FR"),
        ("2001:db8::/32", "NL"),
    ];
    write_country_db(&path, &entries).unwrap();
    let good = GeoDb::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&path).unwrap();
    let ips: Vec<IpAddr> = [
        "10.1.2.3",
        "10.9.9.9",
        "2001:db8::1",
        "::ffff:10.1.2.3",
        "1.1.1.1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut opened, mut refused) = (0, 0);
    for round in 0..3000 {
        let mut damaged = bytes.clone();
        if round % 10 == 0 {
            damaged.truncate(next() as usize % bytes.len());
        } else {
            for _ in 0..1 + next() % 3 {
                let at = next() as usize % damaged.len();
                damaged[at] = next() as u8;
            }
        }
        match GeoDb::parse(&path, damaged, good.stamp) {
            Ok(db) => {
                opened += 1;
                for ip in &ips {
                    let _ = db.country(*ip);
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e.contains(&path.display().to_string()), "{e}");
            }
        }
    }
    // Both outcomes happened (some flips hit bytes no check can see, such
    // as string contents).
    assert!(
        opened > 0 && refused > 0,
        "{opened} opened, {refused} refused"
    );
}

#[test]
fn cached_answers_match_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = country_db(
        dir.path(),
        "cache.mmdb",
        &[
            ("10.0.0.0/9", "DE"),
            ("10.128.0.0/9", "FR"),
            ("192.0.2.0/24", "US"),
        ],
    );
    // Enough addresses that many share a slot; every one asked twice (the
    // second answer comes from the cache when the slot still holds it).
    let mut addrs: Vec<std::net::Ipv4Addr> = (0..5000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i * 6151))
        .collect();
    addrs.extend((0..=255).map(|i| std::net::Ipv4Addr::new(192, 0, 2, i)));
    addrs.extend((0..64).map(|i| std::net::Ipv4Addr::new(203, 0, 113, i)));
    for round in 0..2 {
        for a in &addrs {
            let ip = IpAddr::V4(*a);
            assert_eq!(db.country(ip), db.look_up(ip), "{a} (round {round})");
        }
    }
    assert_eq!(db.country("203.0.113.7".parse().unwrap()), None);
    assert_eq!(
        db.country("203.0.113.7".parse().unwrap()),
        None,
        "cached none"
    );
    assert_eq!(db.country("10.200.0.1".parse().unwrap()), Some(*b"FR"));
}
