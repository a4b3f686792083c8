//! Owns the GeoIP country database: a MaxMind DB file (GeoLite2/GeoIP2
//! Country, or any database whose records carry `country.iso_code`), loaded
//! at start and reloaded without restart when the file changes.
//!
//! A [`GeoDb`] is one immutable, fully read copy of the file. A [`GeoSource`]
//! holds the current one for a path behind an `ArcSwapOption`: requests load
//! it lock-free, and a background thread calls [`GeoSource::check`] about
//! every 500 ms, which reads the file again only when its modification time,
//! size or inode changed, and swaps the new database in only when it parses
//! and verifies. A bad new file leaves the old database serving.
//!
//! Lookups do not allocate: only the two-letter code is read out of the
//! record, borrowed from the loaded file, and the other fields are skipped
//! without decoding them. IPv4 answers are remembered in a small lock-free
//! cache per database (one atomic word per slot), so a client's repeated
//! requests cost one load instead of a tree walk.

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use maxminddb::{PathElement, Reader};
use parking_lot::Mutex;

/// What identifies one version of a file: its modification time (None
/// where the platform has none), size, and on Unix its device and inode
/// (which tell a file renamed over the old one apart even when time and size
/// are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Modification time.
    modified: Option<SystemTime>,
    /// Size in bytes.
    len: u64,
    /// Device and inode numbers (0 where not Unix).
    file: (u64, u64),
}

/// The largest file [`GeoDb::open`] reads (country databases are about
/// 10 MB, the largest GeoIP2 databases a few hundred): a path pointing at
/// something huge or endless is refused rather than exhausting memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// A loaded country database (immutable; swap a new one in to reload).
pub(crate) struct GeoDb {
    /// The parsed database over the file's bytes.
    reader: Reader<Vec<u8>>,
    /// The file's stamp, taken from the open file before it was read.
    stamp: Stamp,
    /// Recent IPv4 answers (see [`Cache`]).
    cache: Cache,
}

/// Slots of the IPv4 answer cache (a power of two).
const CACHE_SLOTS: usize = 1024;

/// A direct-mapped cache of IPv4 lookups: each slot is one word holding the
/// address (32 bits), the answer (16 bits: two letters, or 0 for none) and
/// a valid bit, so readers and writers need no lock and a torn entry cannot
/// exist. A colliding address replaces the slot's entry.
struct Cache {
    slots: Box<[AtomicU64]>,
}

impl Cache {
    fn new() -> Self {
        Self {
            slots: (0..CACHE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, ip: u32) -> &AtomicU64 {
        // Fibonacci hashing: neighbouring addresses spread over the slots.
        let i = (ip.wrapping_mul(0x9E37_79B9) >> 22) as usize & (CACHE_SLOTS - 1);
        &self.slots[i]
    }

    /// The remembered answer for `ip`: `Some(None)` for "no country".
    fn get(&self, ip: u32) -> Option<Option<[u8; 2]>> {
        let word = self.slot(ip).load(Ordering::Relaxed);
        if word >> 48 != 1 || (word >> 16) as u32 != ip {
            return None;
        }
        let [a, b] = ((word & 0xffff) as u16).to_be_bytes();
        Some((a != 0).then_some([a, b]))
    }

    fn put(&self, ip: u32, answer: Option<[u8; 2]>) {
        let code = answer.map_or(0, u16::from_be_bytes);
        let word = (1u64 << 48) | (u64::from(ip) << 16) | u64::from(code);
        self.slot(ip).store(word, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meta = self.reader.metadata();
        f.debug_struct("GeoDb")
            .field("database_type", &meta.database_type)
            .field("build_epoch", &meta.build_epoch)
            .field("node_count", &meta.node_count)
            .field("stamp", &self.stamp)
            .finish()
    }
}

/// Where a GeoIP2 country (or city) record keeps the country's code.
const COUNTRY_CODE: &[PathElement<'static>] =
    &[PathElement::Key("country"), PathElement::Key("iso_code")];

/// Where it keeps the code of the country the network is registered in.
const REGISTERED_COUNTRY_CODE: &[PathElement<'static>] = &[
    PathElement::Key("registered_country"),
    PathElement::Key("iso_code"),
];

impl GeoDb {
    /// Reads and parses `path`; the error names the file and why (never
    /// panics on a bad file).
    ///
    /// The whole file is checked ([`Reader::verify`]: metadata, every tree
    /// node and every record) so that a damaged file is refused here rather
    /// than answering lookups with garbage.
    pub(crate) fn open(path: &Path) -> Result<GeoDb, String> {
        let fail = |why: String| format!("GeoIP database {}: {why}", path.display());
        let mut file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot stat: {e}")))?;
        let stamp = stamp_of(&meta);
        let hint = usize::try_from(meta.len().min(MAX_FILE_BYTES)).unwrap_or(0);
        let mut buf = Vec::with_capacity(hint);
        (&mut file)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        GeoDb::parse(path, buf, stamp)
    }

    /// Parses and verifies the contents `buf` of the file at `path`.
    fn parse(path: &Path, buf: Vec<u8>, stamp: Stamp) -> Result<GeoDb, String> {
        let fail = |why: String| format!("GeoIP database {}: {why}", path.display());
        let reader =
            Reader::from_source(buf).map_err(|e| fail(format!("not a MaxMind DB: {e}")))?;
        reader
            .verify()
            .map_err(|e| fail(format!("damaged MaxMind DB: {e}")))?;
        Ok(GeoDb {
            reader,
            stamp,
            cache: Cache::new(),
        })
    }

    /// The ISO 3166-1 alpha-2 country code for `ip` (from
    /// `country.iso_code`, falling back to `registered_country.iso_code`),
    /// upper case; None if not found or the record has none.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket
    /// reports IPv4 peers) is looked up as the IPv4 address.
    pub(crate) fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let IpAddr::V4(v4) = ip else {
            return self.look_up(ip);
        };
        let key = u32::from(v4);
        if let Some(answer) = self.cache.get(key) {
            return answer;
        }
        let answer = self.look_up(ip);
        self.cache.put(key, answer);
        answer
    }

    /// [`GeoDb::country`] without the cache.
    fn look_up(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let found = self.reader.lookup(ip).ok()?;
        // The code is borrowed from the file; other fields are skipped
        // unread. An unreadable path counts as no code.
        let code = |path| found.decode_path::<&str>(path).ok().flatten();
        let iso = code(COUNTRY_CODE).or_else(|| code(REGISTERED_COUNTRY_CODE))?;
        match iso.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    }

    /// The file's modification time and size when it was read (to notice a
    /// change).
    #[cfg(test)]
    pub(crate) fn stamp(&self) -> (Option<SystemTime>, u64) {
        (self.stamp.modified, self.stamp.len)
    }
}

/// The stamp of a file from its metadata.
fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let file = (0, 0);
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        file,
    }
}

/// The current database for a path, reloaded when the file changes.
pub(crate) struct GeoSource {
    /// The database file.
    path: PathBuf,
    /// The database in use (always Some once opened).
    current: ArcSwapOption<GeoDb>,
    /// The stamp and reason of the last failed reload, so that a bad file
    /// is reported once, not on every check, and read again only when it
    /// changes. Touched only by `check`, never on the request path.
    failed: Mutex<Option<(Option<Stamp>, String)>>,
}

impl std::fmt::Debug for GeoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoSource")
            .field("path", &self.path)
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl GeoSource {
    /// Loads the database at `path`; fails, naming the file and why, when it
    /// cannot be read or is not a valid MaxMind DB.
    pub(crate) fn open(path: impl Into<PathBuf>) -> Result<GeoSource, String> {
        let path = path.into();
        let db = GeoDb::open(&path)?;
        Ok(GeoSource {
            path,
            current: ArcSwapOption::from_pointee(db),
            failed: Mutex::new(None),
        })
    }

    /// The database in use: a lock-free load, cheap enough for every
    /// request. Hold the guard only briefly (for the lookup); use
    /// `Guard::into_inner` for an owned `Arc`.
    #[cfg(test)]
    pub(crate) fn current(&self) -> arc_swap::Guard<Option<Arc<GeoDb>>> {
        self.current.load()
    }

    /// The country code for `ip` in the database in use (see
    /// [`GeoDb::country`]).
    pub(crate) fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        self.current.load().as_deref()?.country(ip)
    }

    /// Reads the file again if its modification time or size (or on Unix,
    /// its inode: a file renamed over it) changed since the database in use
    /// was read, and swaps the new one in: `Ok(true)` when it did,
    /// `Ok(false)` when nothing changed.
    ///
    /// When the file is missing or bad, the old database stays in use and
    /// the reason is returned as `Err`, once: later checks return
    /// `Ok(false)` until the file changes again (so a background thread
    /// calling this every 500 ms logs one line per bad file, not two a
    /// second).
    pub(crate) fn check(&self) -> Result<bool, String> {
        let on_disk = std::fs::metadata(&self.path).map(|m| stamp_of(&m));
        let in_use = self.current.load().as_ref().map(|db| db.stamp);
        if let (Ok(stamp), Some(used)) = (&on_disk, in_use) {
            if *stamp == used {
                return Ok(false);
            }
        }
        let attempt = on_disk.as_ref().ok().copied();
        let mut failed = self.failed.lock();
        if let Some((stamp, _)) = failed.as_ref() {
            // The same bad file as last time: reported, not read again.
            if attempt.is_some() && *stamp == attempt {
                return Ok(false);
            }
        }
        let result = match on_disk {
            Err(e) => Err(format!(
                "GeoIP database {}: cannot stat: {e}",
                self.path.display()
            )),
            Ok(_) => GeoDb::open(&self.path),
        };
        match result {
            Ok(db) => {
                self.current.store(Some(Arc::new(db)));
                *failed = None;
                Ok(true)
            }
            Err(reason) => {
                if failed
                    .as_ref()
                    .is_some_and(|(s, r)| *s == attempt && *r == reason)
                {
                    // Still missing, for the same reason: already reported.
                    return Ok(false);
                }
                *failed = Some((attempt, reason.clone()));
                Err(reason)
            }
        }
    }

    /// The database file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
