//! YAML 1.1 against YAML 1.2: Kubernetes reads manifests with go-yaml v2 (through
//! sigs.k8s.io/yaml), a YAML 1.1 reader, where a plain `yes`, `on` or `n` is a boolean,
//! `0644` is octal (420) and `1_000` is 1000; `serde_yaml` (YAML 1.2), which the other
//! checks here use, reads them as strings or other numbers. Every plain (unquoted)
//! scalar of the manifests and the inject goldens, keys included, must read the same
//! in both: one that does not has to be quoted (or written as Kubernetes reads it).

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// What a plain scalar is read as.
#[derive(Debug, Clone, Copy)]
enum Read {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

impl Read {
    /// Whether two readings are the same value of the same type.
    fn same(self, other: Read) -> bool {
        match (self, other) {
            (Read::Null, Read::Null) | (Read::Str, Read::Str) => true,
            (Read::Bool(a), Read::Bool(b)) => a == b,
            (Read::Int(a), Read::Int(b)) => a == b,
            (Read::Float(a), Read::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => false,
        }
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` (or `ParseUint`), as go-yaml v2 applies it to a
/// plain scalar with its underscores removed: sign, `0x`, `0o`, `0b`, and a leading
/// `0` for octal.
fn go_int(s: &str) -> Option<i128> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i128::from_str_radix(digits, radix).ok()?;
    let v = if negative { -v } else { v };
    (i128::from(i64::MIN)..=i128::from(u64::MAX))
        .contains(&v)
        .then_some(v)
}

/// Counts the ASCII digits of `b` from `*i` on, moving `*i` past them.
fn digits(b: &[u8], i: &mut usize) -> usize {
    let start = *i;
    while b.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
    *i - start
}

/// go-yaml v2's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn go_float_style(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(b, &mut i) == 0 {
            return false;
        }
    } else {
        if digits(b, &mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(b, &mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(b, &mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// A plain scalar as go-yaml v2 resolves it (its `resolve` table, then numbers for
/// scalars starting with a digit, a sign or a dot). Timestamps stay strings: go-yaml
/// v2 keeps them as text when decoding into untyped values, as sigs.k8s.io/yaml does.
fn yaml11(s: &str) -> Read {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Read::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Read::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Read::Bool(false)
        }
        ".nan" | ".NaN" | ".NAN" => return Read::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Read::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Read::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let b = s.as_bytes();
    if !matches!(b.first(), Some(b'0'..=b'9' | b'-' | b'+' | b'.')) {
        return Read::Str;
    }
    if b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        return Read::Str;
    }
    let plain = s.replace('_', "");
    if let Some(v) = go_int(&plain) {
        return Read::Int(v);
    }
    if go_float_style(&plain) {
        if let Ok(f) = plain.parse::<f64>() {
            return Read::Float(f);
        }
    }
    Read::Str
}

/// The same plain scalar as `serde_yaml` (YAML 1.2) resolves it.
fn yaml12(s: &str) -> Read {
    match serde_yaml::from_str::<serde_yaml::Value>(s) {
        Ok(serde_yaml::Value::Null) => Read::Null,
        Ok(serde_yaml::Value::Bool(b)) => Read::Bool(b),
        Ok(serde_yaml::Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Read::Int(i128::from(i)),
            (_, Some(u), _) => Read::Int(i128::from(u)),
            (_, _, Some(f)) => Read::Float(f),
            _ => Read::Str,
        },
        _ => Read::Str,
    }
}

/// Collects the plain scalars of a YAML stream that carry no explicit tag.
#[derive(Default)]
struct Plain(Vec<(String, Marker)>);

impl MarkedEventReceiver for Plain {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if let Event::Scalar(value, TScalarStyle::Plain, _, None) = ev {
            self.0.push((value, mark));
        }
    }
}

/// `LINE:COLUMN: ...` for every plain scalar of `text` that YAML 1.1 and 1.2 read differently.
pub fn ambiguous(text: &str) -> Vec<String> {
    let mut plain = Plain::default();
    if let Err(e) = Parser::new_from_str(text).load(&mut plain, true) {
        return vec![format!("not YAML: {e}")];
    }
    plain
        .0
        .into_iter()
        .filter_map(|(s, mark)| {
            let (old, new) = (yaml11(&s), yaml12(&s));
            (!old.same(new)).then(|| {
                format!(
                    "{}:{}: plain `{s}` is {old:?} to Kubernetes (YAML 1.1) but {new:?} to YAML 1.2: quote it",
                    mark.line(),
                    mark.col() + 1
                )
            })
        })
        .collect()
}

/// No plain scalar of `docker/k8s/` or the inject goldens reads differently to Kubernetes.
#[test]
fn no_plain_scalar_of_the_manifests_or_the_goldens_reads_differently_in_yaml_1_1() {
    let mut all = Vec::new();
    for path in super::manifest_files().iter().chain(&super::golden_files()) {
        for p in ambiguous(&super::read(path)) {
            all.push(format!("{}:{p}", path.display()));
        }
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

/// The check finds the classic cases, and quoting, block scalars and what both
/// versions read alike pass.
#[test]
fn the_yaml_1_1_check_finds_booleans_octals_and_underscored_numbers() {
    let text = "\
on: push
env:
  - {name: A, value: yes}
  - {name: B, value: \"yes\"}
  - {name: C, value: Off}
mode: 0644
quoted: \"0644\"
big: 1_000
version: 0.1.0
float: 1.5
int: 8080
hex: 0x1F
date: 2024-11-02
text: |
  yes
empty:
";
    let found: Vec<String> = ambiguous(text)
        .into_iter()
        .map(|p| p.split(": plain").next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        found,
        ["1:1", "3:22", "5:22", "6:7", "8:6"],
        "{:?}",
        ambiguous(text)
    );
    assert!(
        ambiguous("mode: 0644\n")[0].contains("Int(420)"),
        "{:?}",
        ambiguous("mode: 0644\n")
    );
}
