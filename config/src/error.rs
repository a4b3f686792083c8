//! Owns configuration errors: one error names its field path (and, for files,
//! `file:line:column`); a load or compile reports all of them together.

use std::fmt;

use crate::yaml::Pos;

/// A dotted field path such as `route_tables[0].virtual_hosts[1].domains[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of the whole document.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// The root of a pushed resource's paths: `Kind(name)`.
    pub fn resource(kind: &str, name: &str) -> Self {
        Self(format!("{kind}({name})"))
    }

    /// The path of a field below this one.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list item below this one.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry below this one.
    pub fn key(&self, k: &str) -> Self {
        Self(format!("{}[{k:?}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, for example `clusters[2].endpoints[0].address`.
    pub path: String,
    /// Position in the source file, when the configuration came from one.
    pub pos: Option<Pos>,
    /// What is wrong, and where useful what to do about it.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            pos: None,
            message: message.into(),
        }
    }

    /// Sets the source position.
    pub fn at(mut self, pos: Pos) -> Self {
        self.pos = Some(pos);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in one configuration source.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file (or resource) the errors are about.
    pub source_name: String,
    /// Every error found, in document order.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error not tied to a field (unreadable file, syntax error).
    pub fn single(source_name: impl Into<String>, error: ConfigError) -> Self {
        Self {
            source_name: source_name.into(),
            errors: vec![error],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.pos {
                Some(pos) => write!(f, "{}:{pos}: {e}", self.source_name)?,
                None => write!(f, "{}: {e}", self.source_name)?,
            }
        }
        if n > 1 {
            write!(f, "\n{n} errors")?;
        }
        Ok(())
    }
}
