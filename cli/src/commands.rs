//! The API commands: `plantd whoami`, `state`, `command`, `commands`
//! (pending, cancel), `call`, `history`, `token`. Tables (plain lines) for people, `--json` for
//! scripts.
//!
//! State, commands, service calls and history go through `plantd-client`
//! (the typed REST layer generated from the proxy's OpenAPI document), so
//! nothing here reads the API's JSON by hand; its errors become the exit
//! codes of [`ExitKind`](crate::session::ExitKind).

use anyhow::Result;
use plantd_client::proxy::{params, types};
use plantd_client::{Plantd, RawBody};
use serde::{Deserialize, Serialize};

use crate::session::{Session, api_error};

/// The session's deployment as a `plantd-client`.
fn client(s: &Session) -> Result<Plantd> {
    s.client()
}

fn print_typed(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `plantd whoami`.
///
/// # Errors
/// As the API answers (3 for a refused token).
pub async fn whoami(s: &Session, json: bool) -> Result<()> {
    let me = client(s)?
        .rest()
        .get_auth_whoami()
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_typed(&me);
    } else {
        println!("{} (org {}, roles {})", me.sub, me.org, me.roles.join(", "));
    }
    Ok(())
}

/// `PUT /v1/state/{scope}/{key}` answer.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    revision: u64,
}

/// `plantd state scopes [--create NAME]`.
///
/// # Errors
/// As the API answers.
pub async fn scopes(s: &Session, create: Option<&str>, json: bool) -> Result<()> {
    let plantd = client(s)?;
    if let Some(name) = create {
        plantd
            .rest()
            .post_state_scopes(&types::NewScope {
                scope: name.to_owned(),
            })
            .await
            .map_err(api_error)?;
    }
    let scopes = plantd.rest().list_scopes().await.map_err(api_error)?;
    if json {
        print_typed(&serde_json::json!({ "scopes": scopes }));
    } else {
        for sc in &scopes {
            println!("{sc}");
        }
    }
    Ok(())
}

/// `plantd state list SCOPE`.
///
/// # Errors
/// As the API answers.
pub async fn list(s: &Session, scope: &str, json: bool) -> Result<()> {
    let keys = client(s)?
        .rest()
        .list_keys(scope)
        .await
        .map_err(api_error)?;
    if json {
        print_typed(&serde_json::json!({ "scope": scope, "keys": keys }));
    } else {
        for k in &keys {
            println!("{:<32} rev {}", k.key, k.revision);
        }
    }
    Ok(())
}

/// `plantd state get SCOPE KEY`: the value on stdout, byte for byte; the
/// revision (for `--if-match`) on stderr, or everything as JSON.
///
/// # Errors
/// As the API answers.
pub async fn get(s: &Session, scope: &str, key: &str, json: bool) -> Result<()> {
    let answer = client(s)?
        .rest()
        .get_state_scope_key(scope, key, &params::GetStateScopeKeyParams::default())
        .await
        .map_err(api_error)?;
    let etag = answer.etag().unwrap_or("").trim_matches('"').to_owned();
    let body = answer.value;
    if json {
        print_typed(&serde_json::json!({
            "scope": scope, "key": key, "revision": etag,
            "content_type": body.content_type.as_deref().unwrap_or(""),
            "value": String::from_utf8_lossy(&body.bytes),
        }));
    } else {
        use std::io::Write as _;
        std::io::stdout().write_all(&body.bytes)?;
        if !body.bytes.ends_with(b"\n") {
            println!();
        }
        eprintln!("revision {etag}");
    }
    Ok(())
}

/// `plantd state set SCOPE KEY VALUE [--if-match REV] [--content-type T]`.
///
/// # Errors
/// As the API answers; exit code 6 when `--if-match` lost.
pub async fn set(
    s: &Session,
    scope: &str,
    key: &str,
    value: &str,
    if_match: Option<&str>,
    content_type: &str,
    json: bool,
) -> Result<()> {
    let p = params::PutStateScopeKeyParams {
        if_match: if_match.map(|rev| format!("\"{}\"", rev.trim_matches('"'))),
        if_none_match: None,
    };
    let answer = client(s)?
        .rest()
        .put_state_scope_key(
            scope,
            key,
            &p,
            RawBody::bytes(value.to_owned(), content_type),
        )
        .await
        .map_err(api_error)?;
    let v = Stored {
        revision: answer.value.revision,
    };
    if json {
        print_typed(&v);
    } else {
        println!("stored, revision {}", v.revision);
    }
    Ok(())
}

/// `plantd state delete SCOPE KEY`.
///
/// # Errors
/// As the API answers.
pub async fn delete(s: &Session, scope: &str, key: &str) -> Result<()> {
    client(s)?
        .rest()
        .delete_state_scope_key(scope, key, &params::DeleteStateScopeKeyParams::default())
        .await
        .map_err(api_error)?;
    println!("deleted");
    Ok(())
}

/// A command to send: `plantd command SITE TOPIC PAYLOAD`.
#[derive(Debug, Clone)]
pub struct CommandArgs<'a> {
    /// The site.
    pub site: &'a str,
    /// The MQTT topic.
    pub topic: &'a str,
    /// The payload.
    pub payload: &'a str,
    /// Delivery QoS.
    pub qos: u8,
    /// Time to live in seconds.
    pub ttl: Option<u64>,
    /// Deliver as retained.
    pub retain: bool,
}

/// `plantd command SITE TOPIC PAYLOAD`.
///
/// # Errors
/// As the API answers.
pub async fn command(s: &Session, c: CommandArgs<'_>, json: bool) -> Result<()> {
    let site = c.site;
    let command = types::Command {
        topic: c.topic.to_owned(),
        payload: Some(c.payload.to_owned()),
        qos: Some(c.qos.into()),
        retain: Some(c.retain),
        ttl_secs: c.ttl,
        ..Default::default()
    };
    let v = client(s)?
        .send_command(site, &command)
        .await
        .map_err(api_error)?;
    if json {
        print_typed(&v);
    } else {
        println!("queued for {site} as {} #{}", v.stream, v.sequence);
    }
    Ok(())
}

/// `plantd commands pending SITE`: the commands not delivered yet, oldest
/// first — queued for the site's edge, or held by it (nobody subscribes to
/// their topic, or they wait behind such a command).
///
/// # Errors
/// As the API answers (403, another organisation's site, unknown site).
pub async fn pending(s: &Session, site: &str, limit: u32, json: bool) -> Result<()> {
    let p = params::GetSitesSiteCommandsParams {
        state: Some("pending".to_owned()),
        limit: Some(limit.into()),
    };
    let v = client(s)?
        .rest()
        .get_sites_site_commands(site, &p)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_typed(&v);
        return Ok(());
    }
    for c in &v.commands {
        let reason = c
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let expires = c
            .expires
            .as_deref()
            .map(|e| format!("  expires {e}"))
            .unwrap_or_default();
        println!("#{}  {}{reason}  {}{expires}", c.id, c.state, c.topic);
    }
    if v.truncated {
        eprintln!("more are pending; raise --limit");
    }
    Ok(())
}

/// `plantd commands cancel SITE ID`: cancels a pending command (never
/// delivered afterwards).
///
/// # Errors
/// Exit code 5 for an unknown command, 6 when it was already delivered or
/// expired.
pub async fn cancel(s: &Session, site: &str, id: u64, json: bool) -> Result<()> {
    let v = client(s)?
        .rest()
        .delete_sites_site_commands_id(site, id)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_typed(&v);
    } else if v.state == "cancelled" {
        println!("command #{id} cancelled: it will never be delivered");
    } else {
        println!(
            "cancel of command #{id} requested: the site's edge is offline and drops it when it returns"
        );
    }
    Ok(())
}

/// `plantd call SITE TOPIC [PAYLOAD]`: the device's answer on stdout.
///
/// # Errors
/// Exit code 7 when no device serves the topic or none answered in time.
pub async fn call(
    s: &Session,
    site: &str,
    topic: &str,
    payload: &str,
    timeout_ms: u64,
) -> Result<()> {
    let answer = client(s)?
        .call(
            site,
            topic,
            RawBody::text(payload),
            std::time::Duration::from_millis(timeout_ms),
        )
        .await
        .map_err(api_error)?;
    use std::io::Write as _;
    std::io::stdout().write_all(&answer.bytes)?;
    println!();
    Ok(())
}

/// `plantd history SITE FILTER [--limit N]`.
///
/// # Errors
/// As the API answers.
pub async fn history(s: &Session, site: &str, filter: &str, limit: u32, json: bool) -> Result<()> {
    let p = params::GetSitesSiteHistoryParams {
        filter: filter.to_owned(),
        limit: Some(limit.into()),
        ..Default::default()
    };
    let v = client(s)?
        .rest()
        .get_sites_site_history(site, &p)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_typed(&v);
    } else {
        for m in &v.messages {
            let value = match (&m.value, &m.value_base64) {
                (Some(serde_json::Value::String(text)), _) => text.clone(),
                (Some(other), _) => other.to_string(),
                (None, Some(b64)) => format!("base64:{b64}"),
                (None, None) => String::new(),
            };
            println!("{:<28} {:<32} {}", m.time, m.topic, value);
        }
    }
    Ok(())
}
