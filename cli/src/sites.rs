//! `plantd sites list|create|get|delete`: the sites of your organisation,
//! over the identity API (`/v1/sites`). Every site belongs to one
//! organisation; tokens, the proxy and the edges only let that
//! organisation's principals act on it. Site ids are global: creating one
//! that any organisation registered exits 6 (conflict).

use std::collections::BTreeMap;

use anyhow::Result;
use plantd_client::identity::params::GetSitesParams;
use plantd_client::identity::types::{CreateSite, SiteRecord};
use serde::Serialize;

use crate::session::{ExitKind, Session, api_error, fail};

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One line per site: id, organisation, name, labels.
fn print_line(site: &SiteRecord) {
    let labels = site
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{:<24} {:<16} {:<32} {}",
        site.id,
        site.org,
        site.name.as_deref().unwrap_or(""),
        labels
    );
}

/// `key=value` labels from `--label` flags.
///
/// # Errors
/// A usage error (exit 2) for a label without `=`.
pub fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
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

/// `plantd sites list [--org ORG]`.
///
/// # Errors
/// As the API answers.
pub async fn list(s: &Session, org: Option<&str>, json: bool) -> Result<()> {
    let query = GetSitesParams {
        org: org.map(str::to_owned),
    };
    let sites = s
        .client()?
        .rest()
        .get_sites(&query)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_json(&sites);
    } else {
        for site in &sites {
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
/// Usage (2) for a bad label; as the API answers (6 when the id is taken).
pub async fn create(s: &Session, site: NewSite<'_>, json: bool) -> Result<()> {
    let body = CreateSite {
        id: site.id.to_owned(),
        labels: Some(parse_labels(site.labels)?),
        name: site.name.map(str::to_owned),
        description: site.description.map(str::to_owned),
        org: site.org.map(str::to_owned),
    };
    let created = s
        .client()?
        .rest()
        .post_sites(&body)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_json(&created);
    } else {
        println!(
            "site {} registered to organisation {}",
            created.id, created.org
        );
    }
    Ok(())
}

/// `plantd sites get ID`.
///
/// # Errors
/// As the API answers (5 unknown, 4 another organisation's).
pub async fn get(s: &Session, id: &str, json: bool) -> Result<()> {
    let id = path_id(id)?;
    let site = s
        .client()?
        .rest()
        .get_sites_id(id)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_json(&site);
    } else {
        print_line(&site);
        if let Some(d) = site.description.as_deref().filter(|d| !d.is_empty()) {
            println!("  {d}");
        }
    }
    Ok(())
}

/// `plantd sites delete ID`.
///
/// # Errors
/// As the API answers.
pub async fn delete(s: &Session, id: &str) -> Result<()> {
    let id = path_id(id)?;
    s.client()?
        .rest()
        .delete_sites_id(id)
        .await
        .map_err(api_error)?;
    println!("site {id} deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value() {
        let labels = parse_labels(&["line=north".into(), "x=a=b".into()]).expect("labels");
        assert_eq!(labels["line"], "north");
        assert_eq!(labels["x"], "a=b");
        assert!(parse_labels(&["nolabel".into()]).is_err());
    }
}
