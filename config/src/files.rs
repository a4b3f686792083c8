//! Owns the one seam through which configuration reaches files (certificates,
//! keys, CA bundles, tokens). Compile checks them through it and the proxy
//! reads them through it, so material carried inline by pushed resources can
//! later be served by another implementation without touching either side.

use std::io;

/// Reads the files a configuration names.
pub trait Files: Send + Sync {
    /// The whole content of `path`.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;

    /// Whether `path` can be read, without reading it all.
    fn check(&self, path: &str) -> io::Result<()> {
        self.read(path).map(drop)
    }
}

/// Files on the local disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFiles;

impl Files for DiskFiles {
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn check(&self, path: &str) -> io::Result<()> {
        std::fs::File::open(path).map(drop)
    }
}

/// Accepts every path without reading it: for validating resources on a
/// machine other than the one that will read the files (the control plane
/// checks a listener's certificate path is given, the proxy that serves it
/// checks the file).
#[derive(Debug, Clone, Copy, Default)]
pub struct UncheckedPaths;

impl Files for UncheckedPaths {
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{path} is not read here"),
        ))
    }

    fn check(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }
}
