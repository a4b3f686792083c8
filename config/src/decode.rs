//! Owns turning a positioned YAML tree into `corridor.v1` messages, by walking the
//! protobuf descriptors (proto3 JSON mapping). It reports every structural error
//! at once, each with its field path and position, and records where each field
//! stood so that later validation errors can be placed too.

use std::collections::HashMap;

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value as PV,
};

use crate::error::{ConfigError, FieldPath};
use crate::yaml::{is_null, Node, Pos, Value};

/// Where each field path stood in the source file.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    positions: HashMap<String, Pos>,
}

impl SourceMap {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if p.is_empty() {
                return self.positions.get("").copied();
            }
        }
    }

    fn insert(&mut self, path: &FieldPath<'_>, pos: Pos) {
        self.positions.insert(path.to_string(), pos);
    }
}

/// Decodes `node` as a message of type `desc`, collecting errors.
pub(crate) fn decode_message(
    node: &Node,
    desc: &MessageDescriptor,
    errors: &mut Vec<ConfigError>,
    map: &mut SourceMap,
) -> DynamicMessage {
    let mut d = Decoder { errors, map };
    let root = FieldPath::root();
    d.map.insert(&root, node.pos);
    d.message(node, desc, &root)
}

struct Decoder<'a> {
    errors: &'a mut Vec<ConfigError>,
    map: &'a mut SourceMap,
}

impl Decoder<'_> {
    fn err(&mut self, path: &FieldPath<'_>, pos: Pos, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(path.to_string(), message).at(pos));
    }

    fn message(
        &mut self,
        node: &Node,
        desc: &MessageDescriptor,
        path: &FieldPath<'_>,
    ) -> DynamicMessage {
        let mut msg = DynamicMessage::new(desc.clone());
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Scalar { text, plain: true } if is_null(text) => return msg,
            other => {
                let kind = other.kind();
                self.err(
                    path,
                    node.pos,
                    format!("expected a mapping for {}, found {kind}", desc.name()),
                );
                return msg;
            }
        };
        let mut seen: HashMap<String, Pos> = HashMap::new();
        let mut oneofs: HashMap<String, String> = HashMap::new();
        for (key, value) in entries {
            let name = match &key.value {
                Value::Scalar { text, .. } => text.as_str(),
                other => {
                    let kind = other.kind();
                    self.err(
                        path,
                        key.pos,
                        format!("expected a field name, found {kind}"),
                    );
                    continue;
                }
            };
            let Some(field) = desc
                .get_field_by_name(name)
                .or_else(|| desc.get_field_by_json_name(name))
            else {
                let fpath = path.field(name);
                let msg = unknown_field_message(name, desc);
                self.err(&fpath, key.pos, msg);
                continue;
            };
            let fpath = path.field(field.name());
            self.map.insert(&fpath, value.pos);
            if let Some(first) = seen.insert(field.name().to_string(), key.pos) {
                self.err(
                    &fpath,
                    key.pos,
                    format!(
                        "field `{}` is given twice (first at line {})",
                        field.name(),
                        first.line
                    ),
                );
                continue;
            }
            if matches!(&value.value, Value::Scalar { text, plain: true } if is_null(text)) {
                continue;
            }
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                if let Some(other) =
                    oneofs.insert(oneof.name().to_string(), field.name().to_string())
                {
                    let names: Vec<String> =
                        oneof.fields().map(|f| format!("`{}`", f.name())).collect();
                    self.err(
                        &fpath,
                        key.pos,
                        format!(
                            "`{}` and `{other}` cannot both be set; give only one of {}",
                            field.name(),
                            names.join(", ")
                        ),
                    );
                    continue;
                }
            }
            if let Some(v) = self.field(value, &field, &fpath) {
                msg.set_field(&field, v);
            }
        }
        msg
    }

    fn field(&mut self, node: &Node, field: &FieldDescriptor, path: &FieldPath<'_>) -> Option<PV> {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return None;
            };
            let key_field = entry.map_entry_key_field();
            let value_field = entry.map_entry_value_field();
            let Value::Map(entries) = &node.value else {
                let kind = node.value.kind();
                self.err(path, node.pos, format!("expected a mapping, found {kind}"));
                return None;
            };
            let mut out = HashMap::new();
            for (k, v) in entries {
                let Value::Scalar { text, .. } = &k.value else {
                    self.err(path, k.pos, "map keys must be scalars");
                    continue;
                };
                let vpath = path.key(text);
                self.map.insert(&vpath, v.pos);
                let key = match key_field.kind() {
                    Kind::String => MapKey::String(text.clone()),
                    _ => match self.scalar(k, &key_field.kind(), &vpath)? {
                        PV::I32(n) => MapKey::I32(n),
                        PV::I64(n) => MapKey::I64(n),
                        PV::U32(n) => MapKey::U32(n),
                        PV::U64(n) => MapKey::U64(n),
                        PV::Bool(b) => MapKey::Bool(b),
                        _ => return None,
                    },
                };
                if out.contains_key(&key) {
                    self.err(&vpath, k.pos, format!("key `{text}` is given twice"));
                    continue;
                }
                if let Some(val) = self.single(v, &value_field.kind(), &vpath) {
                    out.insert(key, val);
                }
            }
            Some(PV::Map(out))
        } else if field.is_list() {
            let items: Vec<&Node> = match &node.value {
                Value::Seq(items) => items.iter().collect(),
                other => {
                    let kind = other.kind();
                    self.err(path, node.pos, format!("expected a list, found {kind}"));
                    return None;
                }
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let ipath = path.index(i);
                self.map.insert(&ipath, item.pos);
                if let Some(v) = self.single(item, &field.kind(), &ipath) {
                    out.push(v);
                }
            }
            Some(PV::List(out))
        } else {
            self.single(node, &field.kind(), path)
        }
    }

    fn single(&mut self, node: &Node, kind: &Kind, path: &FieldPath<'_>) -> Option<PV> {
        match kind {
            Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => {
                let text = self.text(node, path, "a duration such as \"1.5s\" or \"250ms\"")?;
                match parse_duration(text) {
                    Ok(d) => {
                        let mut msg = DynamicMessage::new(m.clone());
                        msg.set_field_by_name("seconds", PV::I64(d.as_secs() as i64));
                        msg.set_field_by_name("nanos", PV::I32(d.subsec_nanos() as i32));
                        Some(PV::Message(msg))
                    }
                    Err(e) => {
                        self.err(path, node.pos, e);
                        None
                    }
                }
            }
            Kind::Message(m) => Some(PV::Message(self.message(node, m, path))),
            _ => self.scalar(node, kind, path),
        }
    }

    fn text<'n>(&mut self, node: &'n Node, path: &FieldPath<'_>, want: &str) -> Option<&'n str> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text),
            other => {
                let kind = other.kind();
                self.err(path, node.pos, format!("expected {want}, found {kind}"));
                None
            }
        }
    }

    fn scalar(&mut self, node: &Node, kind: &Kind, path: &FieldPath<'_>) -> Option<PV> {
        let plain = matches!(node.value, Value::Scalar { plain: true, .. });
        let value = match kind {
            Kind::String => PV::String(self.text(node, path, "a string")?.to_string()),
            Kind::Bool => {
                let text = self.text(node, path, "true or false")?;
                match text.to_ascii_lowercase().as_str() {
                    "true" if plain => PV::Bool(true),
                    "false" if plain => PV::Bool(false),
                    _ => {
                        return self.bad(
                            node,
                            path,
                            format!("expected true or false, found `{text}`"),
                        )
                    }
                }
            }
            Kind::Enum(e) => {
                let text = self.text(node, path, "an enum value")?;
                let found = e
                    .values()
                    .find(|v| v.name().eq_ignore_ascii_case(text))
                    .map(|v| v.number())
                    .or_else(|| {
                        text.parse::<i32>()
                            .ok()
                            .filter(|n| e.get_value(*n).is_some())
                    });
                match found {
                    Some(n) if n != 0 => PV::EnumNumber(n),
                    _ => {
                        let names: Vec<String> = e
                            .values()
                            .filter(|v| v.number() != 0)
                            .map(|v| v.name().to_ascii_lowercase())
                            .collect();
                        return self.bad(
                            node,
                            path,
                            format!(
                                "unknown value `{text}`; expected one of: {}",
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let text = self.text(node, path, "an integer")?;
                match text.parse::<i32>() {
                    Ok(n) => PV::I32(n),
                    Err(_) => {
                        return self.bad(
                            node,
                            path,
                            format!("expected a 32-bit integer, found `{text}`"),
                        )
                    }
                }
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                let text = self.text(node, path, "an integer")?;
                match text.parse::<i64>() {
                    Ok(n) => PV::I64(n),
                    Err(_) => {
                        return self.bad(
                            node,
                            path,
                            format!("expected a 64-bit integer, found `{text}`"),
                        )
                    }
                }
            }
            Kind::Uint32 | Kind::Fixed32 => {
                let text = self.text(node, path, "an unsigned integer")?;
                match text.parse::<u32>() {
                    Ok(n) => PV::U32(n),
                    Err(_) => {
                        return self.bad(
                            node,
                            path,
                            format!("expected an unsigned 32-bit integer, found `{text}`"),
                        )
                    }
                }
            }
            Kind::Uint64 | Kind::Fixed64 => {
                let text = self.text(node, path, "an unsigned integer")?;
                match text.parse::<u64>() {
                    Ok(n) => PV::U64(n),
                    Err(_) => {
                        return self.bad(
                            node,
                            path,
                            format!("expected an unsigned 64-bit integer, found `{text}`"),
                        )
                    }
                }
            }
            Kind::Float | Kind::Double => {
                let text = self.text(node, path, "a number")?;
                match text.parse::<f64>() {
                    Ok(n) if matches!(kind, Kind::Float) => PV::F32(n as f32),
                    Ok(n) => PV::F64(n),
                    Err(_) => {
                        return self.bad(node, path, format!("expected a number, found `{text}`"))
                    }
                }
            }
            Kind::Bytes => {
                let text = self.text(node, path, "a string")?;
                PV::Bytes(text.as_bytes().to_vec().into())
            }
            Kind::Message(_) => return self.bad(node, path, "expected a mapping".to_string()),
        };
        Some(value)
    }

    fn bad(&mut self, node: &Node, path: &FieldPath<'_>, message: String) -> Option<PV> {
        self.err(path, node.pos, message);
        None
    }
}

fn unknown_field_message(name: &str, desc: &MessageDescriptor) -> String {
    let names: Vec<String> = desc.fields().map(|f| f.name().to_string()).collect();
    let closest = names
        .iter()
        .map(|n| (edit_distance(n, name), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3))
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((_, n)) => format!(
            "unknown field `{name}` in {}; did you mean `{n}`?",
            desc.name()
        ),
        None => format!(
            "unknown field `{name}` in {}; expected one of: {}",
            desc.name(),
            names.join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a duration: proto3 JSON's `"1.5s"`, or `"250ms"`, `"2m"`, `"1h"`, `"100us"`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("duration `{text}` needs a unit (ms, s, m or h), for example \"1.5s\"")
        })?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{text}`; write it like \"1.5s\" or \"250ms\""))?;
    let secs = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in duration `{text}`; use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs > 315_576_000_000.0 {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
