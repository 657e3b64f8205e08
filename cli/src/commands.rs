//! The API commands: `plantd whoami`, `state`, `command`, `commands`
//! (pending, cancel), `call`, `history`, `token`. Tables (plain lines) for people, `--json` for
//! scripts.

use anyhow::Result;
use reqwest::Method;

use crate::session::Session;

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `plantd whoami`.
///
/// # Errors
/// As [`Session::send`].
pub async fn whoami(s: &Session, json: bool) -> Result<()> {
    let v: serde_json::Value = s
        .send(s.request(Method::GET, "/v1/auth/whoami"))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        println!(
            "{} (org {}, roles {})",
            v["sub"].as_str().unwrap_or("?"),
            v["org"].as_str().unwrap_or("?"),
            v["roles"]
                .as_array()
                .map(|r| r
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `plantd state scopes [--create NAME]`.
///
/// # Errors
/// As [`Session::send`].
pub async fn scopes(s: &Session, create: Option<&str>, json: bool) -> Result<()> {
    if let Some(name) = create {
        s.send(
            s.request(Method::POST, "/v1/state/scopes")
                .json(&serde_json::json!({"scope": name})),
        )
        .await?;
    }
    let v: serde_json::Value = s
        .send(s.request(Method::GET, "/v1/state/scopes"))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        for sc in v["scopes"].as_array().into_iter().flatten() {
            println!(
                "{}",
                sc.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| sc.to_string())
            );
        }
    }
    Ok(())
}

/// `plantd state list SCOPE`.
///
/// # Errors
/// As [`Session::send`].
pub async fn list(s: &Session, scope: &str, json: bool) -> Result<()> {
    let v: serde_json::Value = s
        .send(s.request(Method::GET, &format!("/v1/state/{scope}")))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        for k in v["keys"].as_array().into_iter().flatten() {
            println!(
                "{:<32} rev {}",
                k["key"].as_str().unwrap_or("?"),
                k["revision"]
            );
        }
    }
    Ok(())
}

/// `plantd state get SCOPE KEY`: the value on stdout, byte for byte; the
/// revision (for `--if-match`) on stderr, or everything as JSON.
///
/// # Errors
/// As [`Session::send`].
pub async fn get(s: &Session, scope: &str, key: &str, json: bool) -> Result<()> {
    let resp = s
        .send(s.request(Method::GET, &format!("/v1/state/{scope}/{key}")))
        .await?;
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_owned();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await?;
    if json {
        print_json(&serde_json::json!({
            "scope": scope, "key": key, "revision": etag, "content_type": ct,
            "value": String::from_utf8_lossy(&body),
        }));
    } else {
        use std::io::Write as _;
        std::io::stdout().write_all(&body)?;
        if !body.ends_with(b"\n") {
            println!();
        }
        eprintln!("revision {etag}");
    }
    Ok(())
}

/// `plantd state set SCOPE KEY VALUE [--if-match REV] [--content-type T]`.
///
/// # Errors
/// As [`Session::send`]; exit code 6 when `--if-match` lost.
pub async fn set(
    s: &Session,
    scope: &str,
    key: &str,
    value: &str,
    if_match: Option<&str>,
    content_type: &str,
    json: bool,
) -> Result<()> {
    let mut req = s
        .request(Method::PUT, &format!("/v1/state/{scope}/{key}"))
        .header("content-type", content_type)
        .body(value.to_owned());
    if let Some(rev) = if_match {
        req = req.header("if-match", format!("\"{}\"", rev.trim_matches('"')));
    }
    let v: serde_json::Value = s.send(req).await?.json().await.unwrap_or_default();
    if json {
        print_json(&v);
    } else {
        println!("stored, revision {}", v["revision"]);
    }
    Ok(())
}

/// `plantd state delete SCOPE KEY`.
///
/// # Errors
/// As [`Session::send`].
pub async fn delete(s: &Session, scope: &str, key: &str) -> Result<()> {
    s.send(s.request(Method::DELETE, &format!("/v1/state/{scope}/{key}")))
        .await?;
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
/// As [`Session::send`].
pub async fn command(s: &Session, c: CommandArgs<'_>, json: bool) -> Result<()> {
    let site = c.site;
    let mut body = serde_json::json!({"topic": c.topic, "payload": c.payload, "qos": c.qos, "retain": c.retain});
    if let Some(t) = c.ttl {
        body["ttl_secs"] = t.into();
    }
    let v: serde_json::Value = s
        .send(
            s.request(Method::POST, &format!("/v1/sites/{site}/commands"))
                .json(&body),
        )
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        println!(
            "queued for {site} as {} #{}",
            v["stream"].as_str().unwrap_or("?"),
            v["sequence"]
        );
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
    let v: serde_json::Value = s
        .send(s.request(
            Method::GET,
            &format!("/v1/sites/{site}/commands?state=pending&limit={limit}"),
        ))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    for c in v["commands"].as_array().into_iter().flatten() {
        let text = |f: &str| c[f].as_str().unwrap_or("-").to_owned();
        let reason = c["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let expires = c["expires"]
            .as_str()
            .map(|e| format!("  expires {e}"))
            .unwrap_or_default();
        println!(
            "#{}  {}{reason}  {}{expires}",
            c["id"],
            text("state"),
            text("topic")
        );
    }
    if v["truncated"] == true {
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
    let v: serde_json::Value = s
        .send(s.request(Method::DELETE, &format!("/v1/sites/{site}/commands/{id}")))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else if v["state"] == "cancelled" {
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
    let resp = s
        .send(
            s.request(
                Method::POST,
                &format!("/v1/sites/{site}/call/{topic}?timeout_ms={timeout_ms}"),
            )
            .body(payload.to_owned()),
        )
        .await?;
    let body = resp.bytes().await?;
    use std::io::Write as _;
    std::io::stdout().write_all(&body)?;
    println!();
    Ok(())
}

/// `plantd history SITE FILTER [--limit N]`.
///
/// # Errors
/// As [`Session::send`].
pub async fn history(s: &Session, site: &str, filter: &str, limit: u32, json: bool) -> Result<()> {
    let v: serde_json::Value = s
        .send(s.request(
            Method::GET,
            &format!(
                "/v1/sites/{site}/history?filter={}&limit={limit}",
                url_encode(filter)
            ),
        ))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        for m in v["messages"].as_array().into_iter().flatten() {
            let value = m["value"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("base64:{}", m["value_base64"].as_str().unwrap_or("")));
            println!(
                "{:<28} {:<32} {}",
                m["time"].as_str().unwrap_or(""),
                m["topic"].as_str().unwrap_or(""),
                value
            );
        }
    }
    Ok(())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn url_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(super::url_encode("line1/#"), "line1%2F%23");
        assert_eq!(super::url_encode("a+b c"), "a%2Bb%20c");
    }
}
