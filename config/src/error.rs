//! Owns configuration errors: one error names its field path (and, for files,
//! `file:line:column`); a load or compile reports all of them together.

use std::fmt;
use std::sync::Arc;

use crate::yaml::Pos;

/// A dotted field path such as `route_tables[0].virtual_hosts[1].domains[2]`.
///
/// Extending a path borrows its parent instead of formatting a string, so a
/// compile of ten thousand routes builds no text until an error needs it;
/// [`FieldPath::to_static`] renders one to keep.
#[derive(Clone)]
pub struct FieldPath<'a>(Seg<'a>);

#[derive(Clone)]
enum Seg<'a> {
    /// A rendered path: the root (empty), `Kind(name)`, or a kept copy.
    Text(Arc<str>),
    Field(&'a FieldPath<'a>, &'a str),
    Index(&'a FieldPath<'a>, usize),
    Key(&'a FieldPath<'a>, &'a str),
    /// `field[i]` in one step, so that it can be bound without a temporary.
    Item(&'a FieldPath<'a>, &'a str, usize),
    /// `field["key"]` in one step.
    Entry(&'a FieldPath<'a>, &'a str, &'a str),
}

impl FieldPath<'static> {
    /// The path of the whole document.
    pub fn root() -> Self {
        Self(Seg::Text(Arc::from("")))
    }

    /// The root of a pushed resource's paths: `Kind(name)`.
    pub fn resource(kind: &str, name: &str) -> Self {
        Self(Seg::Text(format!("{kind}({name})").into()))
    }
}

impl<'a> FieldPath<'a> {
    /// The path of a field below this one.
    pub fn field<'b>(&'b self, name: &'b str) -> FieldPath<'b> {
        FieldPath(Seg::Field(self, name))
    }

    /// The path of a list item below this one.
    pub fn index(&self, i: usize) -> FieldPath<'_> {
        FieldPath(Seg::Index(self, i))
    }

    /// The path of a map entry below this one.
    pub fn key<'b>(&'b self, k: &'b str) -> FieldPath<'b> {
        FieldPath(Seg::Key(self, k))
    }

    /// The path of list item `i` of field `name` below this one.
    pub fn item<'b>(&'b self, name: &'b str, i: usize) -> FieldPath<'b> {
        FieldPath(Seg::Item(self, name, i))
    }

    /// The path of map entry `k` of field `name` below this one.
    pub fn entry<'b>(&'b self, name: &'b str, k: &'b str) -> FieldPath<'b> {
        FieldPath(Seg::Entry(self, name, k))
    }

    /// The path rendered once, to keep beyond the borrows it was built from.
    pub fn to_static(&self) -> FieldPath<'static> {
        match &self.0 {
            Seg::Text(t) => FieldPath(Seg::Text(Arc::clone(t))),
            _ => FieldPath(Seg::Text(self.to_string().into())),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(&self.0, Seg::Text(t) if t.is_empty())
    }
}

impl Default for FieldPath<'static> {
    fn default() -> Self {
        Self::root()
    }
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Seg::Text(t) => f.write_str(t),
            Seg::Field(parent, name) if parent.is_empty() => f.write_str(name),
            Seg::Field(parent, name) => write!(f, "{parent}.{name}"),
            Seg::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Seg::Key(parent, k) => write!(f, "{parent}[{k:?}]"),
            Seg::Item(parent, name, i) if parent.is_empty() => write!(f, "{name}[{i}]"),
            Seg::Item(parent, name, i) => write!(f, "{parent}.{name}[{i}]"),
            Seg::Entry(parent, name, k) if parent.is_empty() => write!(f, "{name}[{k:?}]"),
            Seg::Entry(parent, name, k) => write!(f, "{parent}.{name}[{k:?}]"),
        }
    }
}

impl fmt::Debug for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({self})")
    }
}

impl PartialEq for FieldPath<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for FieldPath<'_> {}

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
