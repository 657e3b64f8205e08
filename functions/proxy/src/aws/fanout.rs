//! Fan-out on AWS: live messages from NATS to the WebSocket clients that
//! API Gateway holds.
//!
//! [`Fanout::fan_out`] is the unit: for one message on one site it reads
//! the site's subscriptions from the [`Registry`] (one index query, or a
//! short-lived cache of it), matches the topic against each filter with
//! MQTT's rules, and posts `{"op":"message",…}` — the frame the local
//! `/v1/ws` sends — to every matching connection with `post_to_connection`,
//! concurrently. A connection that answers **410 Gone** has left without a
//! `$disconnect` reaching us and is removed from the registry; one whose
//! token has expired is closed with `delete_connection` and removed, as the
//! local socket closes at expiry.
//!
//! Organisations: a subscription is posted to only while its site is owned
//! by the organisation recorded with it when the `websocket` function
//! authorised it (`site_org`, [`Subscription::site_org`]) — the owner is
//! read from `plantd_sites` through a short-lived [`SiteCache`]
//! ([`Fanout::with_sites`], always set by the `fanout` process) — and never
//! when nothing was recorded. A site deleted or registered anew to another
//! organisation therefore stops reaching the old subscribers within the
//! cache time.
//!
//! [`Fanout::revoke`] closes the sockets of a revoked token: every
//! connection recorded with that token id ([`Registry::by_jti`]) is closed
//! with `delete_connection` and removed, as the local socket closes with
//! `token revoked`. [`watch_revocations`] drives it from `plantd_revoked`
//! with the loop every live session uses
//! ([`plantd_shared::revocations::watch`]).
//!
//! [`run`] is the long-lived `fanout` process around both (a NATS consumer
//! cannot trigger Lambda; see `docs/decisions/0017-proxy-aws-websocket.md`):
//! a NATS core queue subscription on `plantd.*.up.>` (replicas in the same
//! queue group share the load), handed to worker tasks by site so each
//! site's messages are posted in order, the revocation watch, and the
//! sequenced subscriptions this process takes ([`super::sequenced`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv::Operation};
use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client as ManagementClient;
use aws_sdk_apigatewaymanagement::error::DisplayErrorContext;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures::StreamExt as _;
use plantd_shared::revocations::{self, Event, Start};
use plantd_shared::sites::SiteCache;
use plantd_shared::streams::REVOKED_BUCKET;
use plantd_shared::subject::{Channel, Site, all_sites, subject_to_topic};
use plantd_shared::topic::{self, Topic};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AwsError;
use super::registry::{Registry, Subscription};

/// The NATS queue group every `fanout` replica joins.
pub const QUEUE_GROUP: &str = "plantd-fanout";

/// How long after closing a revoked token's connections they are looked
/// up once more: a connection recorded just before the revocation may not
/// have reached [`Registry::by_jti`]'s eventually consistent index yet.
pub const REVOKE_RECHECK: Duration = Duration::from_secs(5);

/// How many posts of one message are in flight at once.
const POSTS_IN_FLIGHT: usize = 32;

/// What one [`Fanout::fan_out`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Frames API Gateway accepted.
    pub delivered: usize,
    /// Connections that answered 410 Gone and were removed.
    pub gone: Vec<String>,
    /// Connections whose token had expired, closed and removed.
    pub expired: Vec<String>,
    /// Posts that failed otherwise (logged; the connection is kept).
    pub failed: usize,
    /// Matching subscriptions not posted to because their site is not (or
    /// no longer) owned by the organisation they were authorised for.
    pub not_owned: usize,
}

/// A site's subscriptions and when they were read.
type Cached = (Instant, Arc<Vec<Subscription>>);

/// Posts live messages to WebSocket connections.
#[derive(Debug)]
pub struct Fanout {
    /// Who subscribed to what.
    registry: Registry,
    /// The WebSocket API's management endpoint.
    api: ManagementClient,
    /// How long a site's subscription list is reused; zero = query per message.
    cache_ttl: Duration,
    /// Site → (when read, its subscriptions).
    cache: Mutex<HashMap<String, Cached>>,
    /// Who owns each site now (`None`: only the owner recorded with each
    /// subscription is required).
    sites: Option<SiteCache>,
}

/// A management API client for `endpoint`
/// (`https://<api id>.execute-api.<region>.amazonaws.com/<stage>`).
pub fn management_client(config: &SdkConfig, endpoint: &str) -> ManagementClient {
    let conf = aws_sdk_apigatewaymanagement::config::Builder::from(config)
        .endpoint_url(endpoint)
        .build();
    ManagementClient::from_conf(conf)
}

/// The frame for subscription `id`: `payload` when the bytes are UTF-8,
/// else `payload_base64`, and the message's headers (first value of each).
pub fn frame(
    id: &str,
    site: &Site,
    topic: &Topic,
    payload: &[u8],
    headers: &BTreeMap<String, String>,
) -> Value {
    let mut v =
        json!({ "op": "message", "id": id, "site": site.as_str(), "topic": topic.as_str() });
    match std::str::from_utf8(payload) {
        Ok(text) => v["payload"] = Value::String(text.to_owned()),
        Err(_) => v["payload_base64"] = Value::String(crate::payload::encode(payload)),
    }
    v["headers"] = Value::Object(
        headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    );
    v
}

/// How a post ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Posted {
    /// API Gateway accepted the frame.
    Delivered,
    /// 410: the client left.
    Gone,
    /// Any other failure (logged).
    Failed,
}

impl Fanout {
    /// Fans out over `registry` through `api`, querying the registry for
    /// every message (see [`Fanout::with_cache`]).
    pub fn new(registry: Registry, api: ManagementClient) -> Self {
        Self {
            registry,
            api,
            cache_ttl: Duration::ZERO,
            cache: Mutex::new(HashMap::new()),
            sites: None,
        }
    }

    /// Checks each message's site against its current owner in
    /// `plantd_sites` (through `sites`): a subscription is posted to only
    /// while that owner is the organisation it was authorised for.
    #[must_use]
    pub fn with_sites(mut self, sites: SiteCache) -> Self {
        self.sites = Some(sites);
        self
    }

    /// Reuses a site's subscription list for `ttl`: one registry query per
    /// site per `ttl` instead of one per message, at the price of a new
    /// subscription seeing its first messages up to `ttl` late.
    #[must_use]
    pub fn with_cache(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn subscriptions(&self, site: &Site) -> Result<Arc<Vec<Subscription>>, AwsError> {
        if !self.cache_ttl.is_zero() {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, subs)) = cache.get(site.as_str())
                && at.elapsed() < self.cache_ttl
            {
                return Ok(subs.clone());
            }
        }
        let subs = Arc::new(self.registry.by_site(site).await?);
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(site.as_str().to_owned(), (Instant::now(), subs.clone()));
        }
        Ok(subs)
    }

    /// Closes with `delete_connection` and removes every connection whose
    /// token id is `jti`, and drops the cached subscription lists (they may
    /// name those connections). Returns the connections closed, sorted.
    /// A connection that cannot be closed (other than 410 Gone, which
    /// means it was gone already) is logged and removed all the same: the
    /// fan-out posts nothing more to it, and the `websocket` function
    /// refuses its `subscribe` and `command` once the token id is in
    /// `plantd_revoked`.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`] when the index cannot be read or a connection
    /// cannot be removed (the ones before it were).
    pub async fn revoke(&self, jti: &str) -> Result<Vec<String>, AwsError> {
        let mut conns = self.registry.by_jti(jti).await?;
        conns.sort();
        conns.dedup();
        for conn in &conns {
            if let Err(e) = self.close(conn).await {
                tracing::warn!(connection = %conn, jti, error = %e, "cannot close the connection of a revoked token");
            }
            let items = self.registry.remove(conn).await?;
            tracing::info!(connection = %conn, jti, items, "token revoked; connection closed and removed");
        }
        if !conns.is_empty() {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        Ok(conns)
    }

    /// Looks every open connection's token id up in `revoked`
    /// (`plantd_revoked`) and [`revoke`](Self::revoke)s the revoked ones:
    /// one scan of [`Registry::tokens`] and one look-up per distinct token
    /// id. For when a watch of the bucket (re)starts and revocations made
    /// meanwhile were not heard. Returns the connections closed, sorted.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`]; [`AwsError::Backbone`] when the bucket cannot
    /// be read (the revoked tokens found before were handled).
    pub async fn sweep(&self, revoked: &jetstream::kv::Store) -> Result<Vec<String>, AwsError> {
        let tokens = self.registry.tokens().await?;
        let mut jtis: Vec<&str> = tokens.iter().map(|(jti, _)| jti.as_str()).collect();
        jtis.dedup();
        let mut closed = Vec::new();
        for jti in jtis {
            let entry = revoked.entry(jti).await.map_err(|e| AwsError::Backbone {
                operation: "KV get on plantd_revoked",
                detail: e.to_string(),
            })?;
            if entry.is_some_and(|e| e.operation == Operation::Put) {
                closed.extend(self.revoke(jti).await?);
            }
        }
        tracing::info!(
            connections = tokens.len(),
            closed = closed.len(),
            "open connections re-checked against plantd_revoked"
        );
        closed.sort();
        Ok(closed)
    }

    fn forget(&self, site: &Site) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(site.as_str());
    }

    /// Posts `data` to `connection`.
    pub(crate) async fn post(&self, connection: &str, data: Vec<u8>) -> Posted {
        let sent = self
            .api
            .post_to_connection()
            .connection_id(connection)
            .data(Blob::new(data))
            .send()
            .await;
        match sent {
            Ok(_) => Posted::Delivered,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_gone_exception()) => Posted::Gone,
            Err(e) => {
                tracing::warn!(connection, error = %DisplayErrorContext(&e), "post_to_connection failed");
                Posted::Failed
            }
        }
    }

    /// Closes a connection (410 means it was gone already).
    ///
    /// # Errors
    /// [`AwsError::Management`].
    pub(crate) async fn close(&self, connection: &str) -> Result<(), AwsError> {
        match self
            .api
            .delete_connection()
            .connection_id(connection)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_gone_exception()) => Ok(()),
            Err(e) => Err(AwsError::Management {
                operation: "DeleteConnection",
                connection: connection.to_owned(),
                detail: DisplayErrorContext(&e).to_string(),
            }),
        }
    }

    /// The organisation owning `site` now, from `plantd_sites` (`None`
    /// without [`with_sites`](Self::with_sites); `Some(None)` for a site
    /// nobody owns).
    ///
    /// # Errors
    /// [`AwsError::Backbone`] when `plantd_sites` cannot be read.
    pub(crate) async fn site_owner(&self, site: &Site) -> Result<Option<Option<String>>, AwsError> {
        let Some(sites) = &self.sites else {
            return Ok(None);
        };
        let record = sites
            .get(site.as_str())
            .await
            .map_err(|e| AwsError::Backbone {
                operation: "KV get on plantd_sites",
                detail: e.to_string(),
            })?;
        Ok(Some(record.map(|r| r.org)))
    }

    /// Delivers one message on `site`/`topic` to every subscription whose
    /// filter matches it, removing connections that are gone or expired.
    /// `headers` are the NATS headers the edge set (first value of each).
    ///
    /// Failed posts other than 410 are counted and logged, not retried:
    /// live data is not durable (the history API has the past).
    ///
    /// # Errors
    /// [`AwsError::Dynamo`] when the registry cannot be read (nothing was
    /// posted) or a gone connection cannot be removed;
    /// [`AwsError::Backbone`] when `plantd_sites` cannot be read (nothing
    /// was posted).
    pub async fn fan_out(
        &self,
        site: &Site,
        topic: &Topic,
        payload: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Result<Report, AwsError> {
        let subs = self.subscriptions(site).await?;
        let owner = self.site_owner(site).await?;
        let now = plantd_shared::jwt::now_secs();
        let mut report = Report::default();
        let mut expired = HashSet::new();
        let mut posts = Vec::new();
        for sub in subs.iter() {
            if sub.expires <= now {
                expired.insert(sub.connection.as_str());
            } else if topic::matches(&sub.filter, topic.as_str()) {
                let owned =
                    sub.site_org.is_some() && owner.as_ref().is_none_or(|now| *now == sub.site_org);
                if !owned {
                    report.not_owned += 1;
                    continue;
                }
                let data = frame(&sub.id, site, topic, payload, headers).to_string();
                posts.push((sub.connection.clone(), data.into_bytes()));
            }
        }
        let results: Vec<(String, Posted)> = futures::stream::iter(posts)
            .map(|(conn, data)| async move {
                let posted = self.post(&conn, data).await;
                (conn, posted)
            })
            .buffer_unordered(POSTS_IN_FLIGHT)
            .collect()
            .await;
        let mut gone: HashSet<&str> = HashSet::new();
        for (conn, posted) in &results {
            match posted {
                Posted::Delivered => report.delivered += 1,
                Posted::Failed => report.failed += 1,
                Posted::Gone => {
                    gone.insert(conn);
                }
            }
        }
        for conn in &gone {
            let removed = self.registry.remove(conn).await?;
            tracing::info!(connection = %conn, items = removed, "connection gone (410); removed");
            report.gone.push((*conn).to_owned());
        }
        for conn in expired.difference(&gone) {
            if let Err(e) = self.close(conn).await {
                tracing::warn!(connection = %conn, error = %e, "cannot close an expired connection");
            }
            self.registry.remove(conn).await?;
            tracing::info!(connection = %conn, "token expired; connection closed and removed");
            report.expired.push((*conn).to_owned());
        }
        if !report.gone.is_empty() || !report.expired.is_empty() {
            self.forget(site);
        }
        report.gone.sort();
        report.expired.sort();
        Ok(report)
    }
}

/// Work for the revocation task.
enum Job {
    /// The watch is (re)established: re-check every open connection.
    Sweep,
    /// Close the connections of this token id; `again`: look once more
    /// after [`REVOKE_RECHECK`].
    Revoke { jti: String, again: bool },
}

/// Closes the sockets of revoked tokens until `shutdown` is cancelled:
/// watches `plantd_revoked` over `js` with
/// [`plantd_shared::revocations::watch`] (from now on), calls
/// [`Fanout::revoke`] for every token id put there (and once more
/// [`REVOKE_RECHECK`] later), and [`Fanout::sweep`] whenever the watch is
/// established — at start and after every interruption — so a revocation
/// made while the process was down or the watch was broken is not missed.
/// Jobs run one at a time, in order; failures are logged, not retried
/// (the next sweep, or token expiry, catches what was missed).
pub async fn watch_revocations(
    js: jetstream::Context,
    fanout: Arc<Fanout>,
    shutdown: CancellationToken,
) {
    let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
    let feed = jobs.clone();
    let watcher = revocations::watch(
        js.clone(),
        Start::Now,
        move |event| {
            let _ = feed.send(match event {
                Event::Watching => Job::Sweep,
                Event::Revoked { jti, .. } => Job::Revoke {
                    jti: jti.to_owned(),
                    again: true,
                },
            });
        },
        shutdown.clone().cancelled_owned(),
    );
    let worker = async {
        while let Some(job) = queue.recv().await {
            match job {
                Job::Sweep => {
                    let swept = match js.get_key_value(REVOKED_BUCKET).await {
                        Ok(kv) => fanout.sweep(&kv).await,
                        Err(e) => Err(AwsError::Backbone {
                            operation: "opening plantd_revoked",
                            detail: e.to_string(),
                        }),
                    };
                    if let Err(e) = swept {
                        tracing::warn!(error = %e, "cannot re-check open connections for revoked tokens");
                    }
                }
                Job::Revoke { jti, again } => {
                    match fanout.revoke(&jti).await {
                        Ok(closed) => {
                            tracing::info!(jti = %jti, closed = closed.len(), "revocation handled")
                        }
                        Err(e) => {
                            tracing::warn!(jti = %jti, error = %e, "cannot close the connections of a revoked token")
                        }
                    }
                    if again {
                        let jobs = jobs.clone();
                        let stop = shutdown.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                () = stop.cancelled() => {}
                                () = tokio::time::sleep(REVOKE_RECHECK) => {
                                    let _ = jobs.send(Job::Revoke { jti, again: false });
                                }
                            }
                        });
                    }
                }
            }
        }
    };
    tokio::select! {
        () = watcher => {}
        () = worker => {}
    }
}

/// One message for a worker.
struct Live {
    site: Site,
    topic: Topic,
    payload: bytes::Bytes,
    headers: BTreeMap<String, String>,
}

/// The `fanout` process: consumes every site's upward messages from NATS
/// (queue group [`QUEUE_GROUP`]) and fans each out, and closes the sockets
/// of revoked tokens ([`watch_revocations`]), until `shutdown` is cancelled
/// or the subscription ends. Messages of one site go to one of `workers`
/// tasks, so they are posted in order; sites are spread over the workers.
/// Every replica watches revocations (closing a connection twice is
/// harmless: the second `delete_connection` answers 410).
///
/// # Errors
/// When the NATS subscription cannot be made.
pub async fn run(
    client: async_nats::Client,
    fanout: Arc<Fanout>,
    workers: usize,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut messages = client
        .queue_subscribe(all_sites(Channel::Up), QUEUE_GROUP.to_owned())
        .await?;
    // The SUB is on the server before anyone is told we consume.
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "NATS flush failed");
    }
    let stop = shutdown.child_token();
    let revocations = tokio::spawn(watch_revocations(
        jetstream::new(client.clone()),
        fanout.clone(),
        stop.clone(),
    ));
    let sequencer = Arc::new(super::sequenced::Sequencer::new(
        uuid::Uuid::new_v4().simple().to_string(),
        fanout.clone(),
        client.clone(),
    ));
    let sequenced = tokio::spawn(super::sequenced::serve(sequencer, stop.clone()));
    tracing::info!(subject = %all_sites(Channel::Up), queue = QUEUE_GROUP, workers, "fan-out consuming");
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (tx, mut rx) = mpsc::channel::<Live>(1024);
        let fanout = fanout.clone();
        queues.push(tx);
        tasks.push(tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                match fanout.fan_out(&m.site, &m.topic, &m.payload, &m.headers).await {
                    Ok(r) => tracing::debug!(site = %m.site.as_str(), topic = %m.topic.as_str(), delivered = r.delivered, gone = r.gone.len(), failed = r.failed, "fanned out"),
                    Err(e) => tracing::warn!(site = %m.site.as_str(), error = %e, "fan-out failed"),
                }
            }
        }));
    }
    loop {
        let m = tokio::select! {
            () = shutdown.cancelled() => break,
            m = messages.next() => match m { Some(m) => m, None => break },
        };
        let Ok(parsed) = subject_to_topic(&m.subject) else {
            continue;
        };
        let mut headers = BTreeMap::new();
        if let Some(h) = &m.headers {
            for (name, values) in h.iter() {
                if let Some(first) = values.first() {
                    headers.insert(name.to_string(), first.as_str().to_owned());
                }
            }
        }
        let mut hasher = DefaultHasher::new();
        parsed.site.as_str().hash(&mut hasher);
        let worker = usize::try_from(hasher.finish() % queues.len() as u64).unwrap_or(0);
        let live = Live {
            site: parsed.site,
            topic: parsed.topic,
            payload: m.payload,
            headers,
        };
        if queues[worker].send(live).await.is_err() {
            break;
        }
    }
    drop(queues);
    for task in tasks {
        let _ = task.await;
    }
    stop.cancel();
    let _ = revocations.await;
    if let Ok(Err(e)) = sequenced.await {
        tracing::warn!(error = %e, "sequenced subscriptions were not served");
    }
    Ok(())
}
