//! What the AWS-path tests share: SDK clients pointed at the `moto`
//! emulator, a registry table in it, and claims for test tokens.

#![allow(dead_code)]

use std::collections::BTreeMap;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use plantd_proxy::aws::Registry;
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, MqttGrant, PrincipalKind};
use plantd_shared::jwt::now_secs;
use plantd_testkit::Moto;

/// The SDK configuration for `endpoint` (moto accepts any keys).
pub async fn sdk(endpoint: &str) -> SdkConfig {
    plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// A fresh registry table `table` in moto.
pub async fn registry(moto: &Moto, table: &str) -> Registry {
    let config = sdk(&moto.endpoint()).await;
    let registry = Registry::new(aws_sdk_dynamodb::Client::new(&config), table);
    registry
        .create_table()
        .await
        .expect("moto creates the table");
    registry
}

/// Claims of `sub` in `org`, expiring `ttl` seconds from now (negative:
/// already expired), with MQTT subscribe grants per site.
pub fn claims(sub: &str, ttl: i64, subscribe: &[(&str, &[&str])]) -> Claims {
    let now = now_secs();
    let mqtt: BTreeMap<String, MqttGrant> = subscribe
        .iter()
        .map(|(site, filters)| {
            (
                (*site).to_owned(),
                MqttGrant {
                    publish: Vec::new(),
                    subscribe: filters.iter().map(|f| (*f).to_owned()).collect(),
                },
            )
        })
        .collect();
    Claims {
        iss: "plantd-identity".into(),
        sub: sub.into(),
        aud: Audience::One(API_AUDIENCE.into()),
        exp: now.saturating_add_signed(ttl),
        iat: now.saturating_sub(60),
        nbf: None,
        jti: format!("jti-{sub}-{now}"),
        org: "acme".into(),
        kind: PrincipalKind::User,
        roles: Vec::new(),
        perms: Vec::new(),
        mqtt,
    }
}

/// One request the [`Stub`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST`, `DELETE`, …
    pub method: String,
    /// The path, e.g. `/prod/@connections/abc`.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A stand-in for the API Gateway management endpoint where moto cannot
/// play it: moto accepts a post to any connection id and never answers
/// 410 Gone. This answers exactly what API Gateway answers for a connection
/// that has left — status 410 with `x-amzn-errortype: GoneException` —
/// for the ids in `gone`, and 200 `{}` otherwise, and records every request.
pub struct Stub {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// What it received.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    /// Listens on a free loopback port.
    pub async fn start(gone: &[&str]) -> Self {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let gone: Vec<String> = gone.iter().map(|g| (*g).to_owned()).collect();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    let mut socket = BufReader::new(socket);
                    loop {
                        let mut line = String::new();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_owned();
                        let path = parts.next().unwrap_or("").to_owned();
                        let mut length = 0usize;
                        loop {
                            let mut h = String::new();
                            if socket.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if socket.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let id = path.rsplit('/').next().unwrap_or("").to_owned();
                        record
                            .lock()
                            .expect("lock")
                            .push(Seen { method, path, body });
                        let answer = if gone.contains(&id) {
                            let body = r#"{"message":"Gone"}"#;
                            format!(
                                "HTTP/1.1 410 Gone\r\ncontent-type: application/json\r\nx-amzn-errortype: GoneException\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        } else {
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}".to_owned()
                        };
                        if socket.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            endpoint,
            seen,
            task,
        }
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// The API Gateway WebSocket event fixture `tests/fixtures/<name>` with
/// `{{CONNECTION}}` and `{{TOKEN}}` filled in.
pub fn event(name: &str, connection: &str, token: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text = text
        .replace("{{CONNECTION}}", connection)
        .replace("{{TOKEN}}", token);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A message event (`subscribe`, `unsubscribe` or `$default` fixture) with
/// another frame as its body.
pub fn with_body(mut event: serde_json::Value, body: &serde_json::Value) -> serde_json::Value {
    event["body"] = serde_json::Value::String(body.to_string());
    event
}
