//! `pub mod types`: a struct per object schema, an enum per string
//! enumeration of `components.schemas`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::{doc_lines, enums, ident, pascal, rust_type, sorted};

/// `pub mod types`: the component schemas.
pub(crate) fn types(out: &mut String, doc: &Value) -> Result<()> {
    writeln!(out, "/// The document's schemas.")?;
    writeln!(out, "pub mod types {{")?;
    writeln!(out, "use serde::{{Deserialize, Serialize}};")?;
    let empty = Map::new();
    let schemas = doc["components"]["schemas"].as_object().unwrap_or(&empty);
    for (name, schema) in sorted(schemas) {
        let rust_name = pascal(name);
        writeln!(out)?;
        doc_lines(
            out,
            "",
            schema["description"].as_str(),
            &format!("The `{name}` schema."),
        );
        if let Some(values) = schema["enum"].as_array() {
            enums::string_enum(out, &rust_name, values)?;
        } else if schema["properties"].is_object() {
            object(out, &rust_name, schema)?;
        } else {
            let (ty, nullable) = rust_type(schema, "");
            let ty = if nullable {
                format!("Option<{ty}>")
            } else {
                ty
            };
            writeln!(out, "pub type {rust_name} = {ty};")?;
        }
    }
    writeln!(out, "}}")?;
    writeln!(out)?;
    Ok(())
}

/// A struct for an object schema.
fn object(out: &mut String, name: &str, schema: &Value) -> Result<()> {
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let empty = Map::new();
    let properties = schema["properties"].as_object().unwrap_or(&empty);
    // `Default` when every required field's type has one (so callers can
    // write `Command { topic, ..Default::default() }`).
    let defaultable = properties.iter().all(|(field, prop)| {
        let (ty, nullable) = rust_type(prop, "");
        nullable
            || !required.contains(field.as_str())
            || [
                "String",
                "bool",
                "u32",
                "u64",
                "i32",
                "i64",
                "f64",
                "serde_json::Value",
            ]
            .contains(&ty.as_str())
            || ty.starts_with("Vec<")
            || ty.starts_with("std::collections::BTreeMap<")
    });
    let default = if defaultable { ", Default" } else { "" };
    writeln!(
        out,
        "#[derive(Debug, Clone, PartialEq{default}, Serialize, Deserialize)]"
    )?;
    writeln!(out, "pub struct {name} {{")?;
    for (field, prop) in sorted(properties) {
        let (id, renamed) = ident(field);
        doc_lines(
            out,
            "",
            prop["description"].as_str(),
            &format!("`{field}`."),
        );
        let (ty, nullable) = rust_type(prop, "");
        let mut attrs = Vec::new();
        if renamed {
            attrs.push(format!("rename = \"{field}\""));
        }
        let ty = if nullable || !required.contains(field.as_str()) {
            attrs.push("default".to_owned());
            attrs.push("skip_serializing_if = \"Option::is_none\"".to_owned());
            format!("Option<{ty}>")
        } else {
            ty
        };
        if !attrs.is_empty() {
            writeln!(out, "#[serde({})]", attrs.join(", "))?;
        }
        writeln!(out, "pub {id}: {ty},")?;
    }
    writeln!(out, "}}")?;
    Ok(())
}
