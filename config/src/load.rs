//! Owns loading a configuration source (YAML or JSON text, or a file) into a
//! `Bootstrap` and then a `Snapshot`, placing every error at `file:line:column`.

use std::path::Path;

use crate::decode::{decode_message, SourceMap};
use crate::error::{ConfigError, ConfigErrors};
use crate::proto;
use crate::snapshot::Snapshot;
use crate::yaml;

/// Parses YAML or JSON text into a `Bootstrap`, with the positions of its fields.
pub fn parse_bootstrap(
    text: &str,
    source_name: &str,
) -> Result<(proto::Bootstrap, SourceMap), ConfigErrors> {
    let node = yaml::parse(text).map_err(|e| {
        ConfigErrors::single(
            source_name,
            ConfigError::new("", format!("YAML syntax: {}", e.message)).at(e.pos),
        )
    })?;
    let desc = proto::descriptor_pool()
        .get_message_by_name("corridor.v1.Bootstrap")
        .expect("Bootstrap is in the descriptor pool");
    let mut errors = Vec::new();
    let mut map = SourceMap::default();
    let dynamic = decode_message(&node, &desc, &mut errors, &mut map);
    if !errors.is_empty() {
        return Err(ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        });
    }
    let bootstrap: proto::Bootstrap = dynamic.transcode_to().map_err(|e| {
        ConfigErrors::single(
            source_name,
            ConfigError::new("", format!("internal transcode error: {e}")),
        )
    })?;
    Ok((bootstrap, map))
}

/// Parses and compiles text; errors carry `source_name:line:column`.
pub fn load_str(text: &str, source_name: &str) -> Result<Snapshot, ConfigErrors> {
    let (bootstrap, map) = parse_bootstrap(text, source_name)?;
    crate::compile::compile(bootstrap).map_err(|mut errors| {
        for e in &mut errors {
            e.pos = map.locate(&e.path);
        }
        errors.sort_by_key(|e| e.pos.map(|p| (p.line, p.column)));
        ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        }
    })
}

/// Reads, parses and compiles a configuration file.
pub fn load_file(path: &Path) -> Result<Snapshot, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            &name,
            ConfigError::new("", format!("cannot read file: {e}")),
        )
    })?;
    load_str(&text, &name)
}

/// Compiles a `Bootstrap` that did not come from a file (a control-plane push);
/// errors carry field paths below `source_name`.
pub fn compile_bootstrap(
    bootstrap: proto::Bootstrap,
    source_name: &str,
) -> Result<Snapshot, ConfigErrors> {
    crate::compile::compile(bootstrap).map_err(|errors| ConfigErrors {
        source_name: source_name.to_string(),
        errors,
    })
}

/// The snapshot's configuration as proto3 JSON (proto field names), for `/config_dump`.
pub fn to_json(bootstrap: &proto::Bootstrap) -> serde_json::Value {
    let desc = proto::descriptor_pool()
        .get_message_by_name("corridor.v1.Bootstrap")
        .expect("Bootstrap is in the descriptor pool");
    let bytes = prost::Message::encode_to_vec(bootstrap);
    let dynamic = prost_reflect::DynamicMessage::decode(desc, bytes.as_slice())
        .expect("own encoding decodes");
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(serde_json::Value::Null)
}
