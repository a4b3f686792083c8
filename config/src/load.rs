//! Owns loading a configuration source (YAML or JSON text, or a file) into a
//! `Bootstrap` and then a `Snapshot`, placing every error at `file:line:column`.

use std::path::Path;

use crate::decode::{decode_message, SourceMap};
use crate::error::{ConfigError, ConfigErrors};
use crate::files::DiskFiles;
use crate::proto;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::yaml;

/// Parses YAML or JSON text into a `Bootstrap`, with the positions of its fields.
pub fn parse_bootstrap(
    text: &str,
    source_name: &str,
) -> Result<(proto::Bootstrap, SourceMap), ConfigErrors> {
    parse_message(text, source_name, "corridor.v1.Bootstrap")
}

/// Parses YAML or JSON text into a control-plane `ResourceFile`, with positions.
pub fn parse_resource_file(
    text: &str,
    source_name: &str,
) -> Result<(proto::ResourceFile, SourceMap), ConfigErrors> {
    parse_message(text, source_name, "corridor.v1.ResourceFile")
}

/// Parses YAML or JSON text into the `corridor.v1` message `full_name`.
fn parse_message<T: prost::Message + Default>(
    text: &str,
    source_name: &str,
    full_name: &str,
) -> Result<(T, SourceMap), ConfigErrors> {
    let node = yaml::parse(text).map_err(|e| {
        ConfigErrors::single(
            source_name,
            ConfigError::new("", format!("YAML syntax: {}", e.message)).at(e.pos),
        )
    })?;
    let desc = proto::descriptor_pool()
        .get_message_by_name(full_name)
        .expect("the message is in the descriptor pool");
    let mut errors = Vec::new();
    let mut map = SourceMap::default();
    let dynamic = decode_message(&node, &desc, &mut errors, &mut map);
    if !errors.is_empty() {
        return Err(ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        });
    }
    let message: T = dynamic.transcode_to().map_err(|e| {
        ConfigErrors::single(
            source_name,
            ConfigError::new("", format!("internal transcode error: {e}")),
        )
    })?;
    Ok((message, map))
}

/// Places errors at their `file:line:column` through `map`, in document order.
pub fn locate_errors(
    mut errors: Vec<ConfigError>,
    map: &SourceMap,
    source_name: &str,
) -> ConfigErrors {
    for e in &mut errors {
        e.pos = map.locate(&e.path);
    }
    errors.sort_by_key(|e| e.pos.map(|p| (p.line, p.column)));
    ConfigErrors {
        source_name: source_name.to_string(),
        errors,
    }
}

/// Parses and compiles text into a resource store; errors carry
/// `source_name:line:column`.
pub fn load_store_str(text: &str, source_name: &str) -> Result<Store, ConfigErrors> {
    let (bootstrap, map) = parse_bootstrap(text, source_name)?;
    Store::from_bootstrap(bootstrap, &DiskFiles)
        .map_err(|errors| locate_errors(errors, &map, source_name))
}

/// Parses and compiles text; errors carry `source_name:line:column`.
pub fn load_str(text: &str, source_name: &str) -> Result<Snapshot, ConfigErrors> {
    load_store_str(text, source_name).map(Store::snapshot)
}

/// Reads and parses a configuration file, with the positions of its fields.
pub fn read_bootstrap(path: &Path) -> Result<(proto::Bootstrap, SourceMap), ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            &name,
            ConfigError::new("", format!("cannot read file: {e}")),
        )
    })?;
    parse_bootstrap(&text, &name)
}

/// Reads, parses and compiles a configuration file into a resource store.
pub fn load_store_file(path: &Path) -> Result<Store, ConfigErrors> {
    let name = path.display().to_string();
    let (bootstrap, map) = read_bootstrap(path)?;
    Store::from_bootstrap(bootstrap, &DiskFiles)
        .map_err(|errors| locate_errors(errors, &map, &name))
}

/// Reads, parses and compiles a configuration file.
pub fn load_file(path: &Path) -> Result<Snapshot, ConfigErrors> {
    load_store_file(path).map(Store::snapshot)
}

/// Compiles a `Bootstrap` that did not come from a file; errors carry field
/// paths below `source_name`.
pub fn compile_bootstrap(
    bootstrap: proto::Bootstrap,
    source_name: &str,
) -> Result<Snapshot, ConfigErrors> {
    crate::compile::compile(bootstrap).map_err(|errors| ConfigErrors {
        source_name: source_name.to_string(),
        errors,
    })
}

/// A bootstrap as proto3 JSON (proto field names); it loads again as the same configuration.
pub fn to_json(bootstrap: &proto::Bootstrap) -> serde_json::Value {
    message_json(
        "corridor.v1.Bootstrap",
        &prost::Message::encode_to_vec(bootstrap),
    )
}

/// A `corridor.v1` message's protobuf encoding as proto3 JSON (proto field
/// names), for dumps; `null` when it does not decode.
pub fn message_json(full_name: &str, bytes: &[u8]) -> serde_json::Value {
    let Some(desc) = proto::descriptor_pool().get_message_by_name(full_name) else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = prost_reflect::DynamicMessage::decode(desc, bytes) else {
        return serde_json::Value::Null;
    };
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(serde_json::Value::Null)
}
