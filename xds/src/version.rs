//! Stable version strings for a set of resources: a hash of the sorted
//! (name, version) pairs, identical across processes and restarts.

/// The version of a resource set: FNV-1a (64 bit) over each `name\0version\0`
/// in iteration order, as 16 hex digits. Callers pass names in sorted order
/// (a `BTreeMap` does) so equal sets give equal versions in every process.
pub fn set_version<'a, I>(items: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, version) in items {
        eat(name.as_bytes());
        eat(&[0]);
        eat(version.as_bytes());
        eat(&[0]);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::set_version;

    #[test]
    fn stable_and_sensitive() {
        let a = set_version([("a", "1"), ("b", "2")]);
        assert_eq!(a, set_version([("a", "1"), ("b", "2")]));
        assert_ne!(a, set_version([("a", "1"), ("b", "3")]));
        // The separator keeps ("ab","") and ("a","b") apart.
        assert_ne!(set_version([("ab", "")]), set_version([("a", "b")]));
        assert_eq!(set_version(std::iter::empty()).len(), 16);
    }
}
