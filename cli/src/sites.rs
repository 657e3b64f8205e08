//! `plantd sites list|create|get|delete`: the sites of your organisation,
//! over the identity API (`/v1/sites`). Every site belongs to one
//! organisation; tokens, the proxy and the edges only let that
//! organisation's principals act on it. Site ids are global: creating one
//! that any organisation registered exits 6 (conflict).

use anyhow::Result;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::session::{ExitKind, Session, fail};

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One line per site: id, organisation, name, labels.
fn print_line(site: &Value) {
    let labels = site["labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    println!(
        "{:<24} {:<16} {:<32} {}",
        site["id"].as_str().unwrap_or("?"),
        site["org"].as_str().unwrap_or("?"),
        site["name"].as_str().unwrap_or(""),
        labels
    );
}

/// `key=value` labels from `--label` flags.
///
/// # Errors
/// A usage error (exit 2) for a label without `=`.
pub fn parse_labels(labels: &[String]) -> Result<Map<String, Value>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), Value::String(v.to_owned()))),
            None => Err(fail(
                ExitKind::Usage,
                format!("--label {l:?}: write it as key=value"),
            )),
        })
        .collect()
}

/// A site id as one path segment, or a usage error (the API would refuse
/// it with 400 anyway; a `/` would reach another route).
fn path_id(id: &str) -> Result<&str> {
    plantd_shared::subject::Site::new(id)
        .map(|_| id)
        .map_err(|e| fail(ExitKind::Usage, e.to_string()))
}

/// `text` for a query value: unreserved characters as they are, the rest
/// percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `plantd sites list [--org ORG]`.
///
/// # Errors
/// As [`Session::send`].
pub async fn list(s: &Session, org: Option<&str>, json: bool) -> Result<()> {
    let path = match org {
        Some(org) => format!("/v1/sites?org={}", encode(org)),
        None => "/v1/sites".to_owned(),
    };
    let v: Value = s.send(s.request(Method::GET, &path)).await?.json().await?;
    if json {
        print_json(&v);
    } else {
        for site in v.as_array().into_iter().flatten() {
            print_line(site);
        }
    }
    Ok(())
}

/// What `plantd sites create` registers.
#[derive(Debug, Clone, Default)]
pub struct NewSite<'a> {
    /// The site id.
    pub id: &'a str,
    /// Display name.
    pub name: Option<&'a str>,
    /// Description.
    pub description: Option<&'a str>,
    /// `key=value` labels.
    pub labels: &'a [String],
    /// Another organisation (superadmin only).
    pub org: Option<&'a str>,
}

/// `plantd sites create ID [--name] [--description] [--label k=v] [--org]`.
///
/// # Errors
/// Usage (2) for a bad label; as [`Session::send`] (6 when the id is taken).
pub async fn create(s: &Session, site: NewSite<'_>, json: bool) -> Result<()> {
    let mut body = json!({ "id": site.id, "labels": parse_labels(site.labels)? });
    if let Some(n) = site.name {
        body["name"] = json!(n);
    }
    if let Some(d) = site.description {
        body["description"] = json!(d);
    }
    if let Some(o) = site.org {
        body["org"] = json!(o);
    }
    let v: Value = s
        .send(s.request(Method::POST, "/v1/sites").json(&body))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        println!(
            "site {} registered to organisation {}",
            v["id"].as_str().unwrap_or(site.id),
            v["org"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `plantd sites get ID`.
///
/// # Errors
/// As [`Session::send`] (5 unknown, 4 another organisation's).
pub async fn get(s: &Session, id: &str, json: bool) -> Result<()> {
    let id = path_id(id)?;
    let v: Value = s
        .send(s.request(Method::GET, &format!("/v1/sites/{id}")))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        print_line(&v);
        if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
            println!("  {d}");
        }
    }
    Ok(())
}

/// `plantd sites delete ID`.
///
/// # Errors
/// As [`Session::send`].
pub async fn delete(s: &Session, id: &str) -> Result<()> {
    let id = path_id(id)?;
    s.send(s.request(Method::DELETE, &format!("/v1/sites/{id}")))
        .await?;
    println!("site {id} deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_query_values() {
        let labels = parse_labels(&["line=north".into(), "x=a=b".into()]).expect("labels");
        assert_eq!(labels["line"], "north");
        assert_eq!(labels["x"], "a=b");
        assert!(parse_labels(&["nolabel".into()]).is_err());
        assert_eq!(encode("acme-1"), "acme-1");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
