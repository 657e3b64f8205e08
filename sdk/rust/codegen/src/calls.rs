//! Per operation: its query and header parameters as a struct (`pub mod
//! params`) and one `async fn` on `crate::rest::Rest`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

use crate::{METHODS, SKIPPED_PATHS, doc_lines, ident, pascal, rust_type, sorted};

/// One operation as the generator sees it.
struct Operation<'a> {
    method: &'static str,
    path: &'a str,
    op: &'a Value,
}

impl Operation<'_> {
    /// `<method>_<path words>`: `/v1/sites/{site}/last` → `get_sites_site_last`.
    fn name(&self) -> String {
        let words: Vec<String> = self
            .path
            .split('/')
            .filter(|s| !s.is_empty() && *s != "v1")
            .map(|s| {
                ident(s.trim_matches(['{', '}']))
                    .0
                    .trim_start_matches("r#")
                    .to_owned()
            })
            .collect();
        format!("{}_{}", self.method, words.join("_"))
    }
}

/// `pub mod params` and `impl Rest`: the operations.
pub(crate) fn operations(out: &mut String, doc: &Value) -> Result<()> {
    let paths = doc["paths"]
        .as_object()
        .context("the document has no paths")?;
    let mut ops = Vec::new();
    for (path, item) in sorted(paths) {
        if SKIPPED_PATHS.contains(&path.as_str()) {
            continue;
        }
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push(Operation { method, path, op });
            }
        }
    }
    let mut names = BTreeSet::new();
    for o in &ops {
        if !names.insert(o.name()) {
            bail!("two operations would be called {}", o.name());
        }
    }
    writeln!(
        out,
        "/// Query and header parameters of the operations that take some."
    )?;
    writeln!(out, "pub mod params {{")?;
    for o in &ops {
        params_struct(out, o)?;
    }
    writeln!(out, "}}")?;
    writeln!(out)?;
    writeln!(out, "impl Rest {{")?;
    for o in &ops {
        method(out, o)?;
    }
    writeln!(out, "}}")?;
    Ok(())
}

/// The operation's parameters in `location` (`path`, `query`, `header`).
fn parameters<'a>(o: &'a Operation<'_>, location: &str) -> Vec<&'a Value> {
    o.op["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["in"] == location).collect())
        .unwrap_or_default()
}

/// The name of the operation's parameter struct, if it has one.
fn params_name(o: &Operation<'_>) -> Option<String> {
    let any = !parameters(o, "query").is_empty() || !parameters(o, "header").is_empty();
    any.then(|| format!("{}Params", pascal(&o.name())))
}

fn params_struct(out: &mut String, o: &Operation<'_>) -> Result<()> {
    let Some(name) = params_name(o) else {
        return Ok(());
    };
    writeln!(out)?;
    writeln!(
        out,
        "/// Parameters of `{} {}`.",
        o.method.to_uppercase(),
        o.path
    )?;
    let all: Vec<&Value> = parameters(o, "query")
        .into_iter()
        .chain(parameters(o, "header"))
        .collect();
    let defaultable = all.iter().all(|p| {
        p["required"] != true
            || !rust_type(&p["schema"], "")
                .0
                .chars()
                .next()
                .is_some_and(char::is_uppercase)
            || rust_type(&p["schema"], "").0 == "String"
    });
    let default = if defaultable { ", Default" } else { "" };
    writeln!(out, "#[derive(Debug, Clone, PartialEq{default})]")?;
    writeln!(out, "pub struct {name} {{")?;
    for p in all {
        let pname = p["name"].as_str().unwrap_or_default();
        let where_ = if p["in"] == "query" {
            "query parameter"
        } else {
            "header"
        };
        let fallback = format!("The `{pname}` {where_}.");
        doc_lines(out, "", p["description"].as_str(), &fallback);
        let (ty, _) = rust_type(&p["schema"], "super::types::");
        let ty = if p["required"] == true {
            ty
        } else {
            format!("Option<{ty}>")
        };
        writeln!(out, "pub {}: {ty},", ident(pname).0)?;
    }
    writeln!(out, "}}")?;
    Ok(())
}

/// The body argument's type and how the call takes it.
fn request_body(o: &Operation<'_>) -> Option<(String, &'static str)> {
    let content = o.op["requestBody"]["content"].as_object()?;
    if let Some(json) = content.get("application/json") {
        let (ty, _) = rust_type(&json["schema"], "types::");
        return Some((format!("&{ty}"), "json"));
    }
    Some(("RawBody".to_owned(), "raw"))
}

/// The answer's type and how to read it.
fn response(o: &Operation<'_>) -> (String, &'static str) {
    let empty = Map::new();
    let responses = o.op["responses"].as_object().unwrap_or(&empty);
    let ok: Vec<(&String, &Value)> = sorted(responses)
        .into_iter()
        .filter(|(s, _)| s.starts_with('2'))
        .collect();
    if !ok.is_empty()
        && ok
            .iter()
            .all(|(s, r)| *s == "204" && r["content"].is_null())
    {
        return ("()".to_owned(), "empty");
    }
    for (_, r) in &ok {
        if let Some(json) = r["content"].get("application/json") {
            let schema = &json["schema"];
            if schema.is_null() || schema.as_object().is_some_and(Map::is_empty) {
                return ("serde_json::Value".to_owned(), "json");
            }
            return (rust_type(schema, "types::").0, "json");
        }
    }
    ("Raw".to_owned(), "raw")
}

fn method(out: &mut String, o: &Operation<'_>) -> Result<()> {
    let name = o.name();
    writeln!(out)?;
    writeln!(out, "/// `{} {}`", o.method.to_uppercase(), o.path)?;
    let text = o.op["description"].as_str().or(o.op["summary"].as_str());
    if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
        writeln!(out, "///")?;
        doc_lines(out, "", Some(text), "");
    }
    let statuses: Vec<String> = o.op["responses"]
        .as_object()
        .map(|r| {
            sorted(r)
                .into_iter()
                .filter(|(s, _)| !s.starts_with('2'))
                .map(|(s, r)| {
                    format!(
                        "{s} ({})",
                        r["description"]
                            .as_str()
                            .unwrap_or("")
                            .trim_end_matches('.')
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    writeln!(out, "///")?;
    writeln!(out, "/// # Errors")?;
    if statuses.is_empty() {
        writeln!(
            out,
            "/// [`Error::Api`] for an answer that is not 2xx; a transport error or [`Error::Timeout`]."
        )?;
    } else {
        writeln!(
            out,
            "/// [`Error::Api`] with the API's code and message for {}; a transport error or [`Error::Timeout`].",
            statuses.join(", ")
        )?;
    }
    let mut args = vec!["&self".to_owned()];
    let mut path_expr = o.path.to_owned();
    let mut fmt_args = Vec::new();
    for p in parameters(o, "path") {
        let pname = p["name"].as_str().unwrap_or_default();
        let (id, _) = ident(pname);
        let (ty, _) = rust_type(&p["schema"], "types::");
        let catch_all = pname == "topic" && o.path.ends_with(&format!("{{{pname}}}"));
        if ty == "String" {
            args.push(format!("{id}: &str"));
            let f = if catch_all { "segments" } else { "segment" };
            fmt_args.push(format!("crate::rest::{f}({id})"));
        } else {
            args.push(format!("{id}: {ty}"));
            fmt_args.push(id.clone());
        }
        path_expr = path_expr.replace(&format!("{{{pname}}}"), "{}");
    }
    let params = params_name(o);
    if let Some(p) = &params {
        args.push(format!("params: &params::{p}"));
    }
    let body = request_body(o);
    if let Some((ty, _)) = &body {
        args.push(format!("body: {ty}"));
    }
    let (answer, read) = response(o);
    writeln!(
        out,
        "pub async fn {name}({}) -> Result<Answer<{answer}>, Error> {{",
        args.join(", ")
    )?;
    let path_value = if fmt_args.is_empty() {
        format!("\"{path_expr}\".to_owned()")
    } else {
        format!("format!(\"{path_expr}\", {})", fmt_args.join(", "))
    };
    writeln!(out, "#[allow(unused_mut)]")?;
    writeln!(
        out,
        "let mut call = Call::new(reqwest::Method::{}, {path_value});",
        o.method.to_uppercase()
    )?;
    if params.is_some() {
        for p in parameters(o, "query") {
            let pname = p["name"].as_str().unwrap_or_default();
            let id = ident(pname).0;
            if p["required"] == true {
                writeln!(
                    out,
                    "call = call.query(\"{pname}\", params.{id}.to_string());"
                )?;
            } else {
                writeln!(
                    out,
                    "if let Some(v) = &params.{id} {{ call = call.query(\"{pname}\", v.to_string()); }}"
                )?;
            }
        }
        for p in parameters(o, "header") {
            let pname = p["name"].as_str().unwrap_or_default();
            let id = ident(pname).0;
            if p["required"] == true {
                writeln!(
                    out,
                    "call = call.header(\"{pname}\", params.{id}.to_string());"
                )?;
            } else {
                writeln!(
                    out,
                    "if let Some(v) = &params.{id} {{ call = call.header(\"{pname}\", v.to_string()); }}"
                )?;
            }
        }
    }
    match body.as_ref().map(|(_, how)| *how) {
        Some("json") => writeln!(out, "call = call.json(body)?;")?,
        Some(_) => writeln!(out, "call = call.raw(body);")?,
        None => {}
    }
    let reader = match read {
        "empty" => "empty",
        "json" => "json",
        _ => "raw",
    };
    writeln!(out, "self.call(call).await?.{reader}()")?;
    writeln!(out, "}}")?;
    Ok(())
}
