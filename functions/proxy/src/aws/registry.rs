//! The WebSocket connection registry: one DynamoDB table that the
//! `websocket` function writes and the `fanout` process reads.
//!
//! Layout (one table, `PAY_PER_REQUEST`, TTL on [`TTL_ATTRIBUTE`]):
//!
//! | `connection` (hash) | `item` (range) | other attributes |
//! |---|---|---|
//! | API Gateway connection id | `conn` | `sub`, `org`, `jti` (the token id), `claims` (the token's claims as JSON, never the token), `expires` |
//! | the same id | `sub#<subscription id>` | `site`, `site_org`, `filter`, `sub_id`, `expires` |
//! | the same id | `sub#<subscription id>` of a sequenced subscription | `seq_site` (not `site`), `site_org`, `filter`, `sub_id`, `expires`, `from_sequence`, `missed`, `owner` (the fan-out process delivering it) |
//!
//! A sequenced subscription (`"sequenced": true` / `"from_sequence": n`)
//! is delivered by one `fanout` process from its own ordered consumer
//! ([`super::sequenced`]), not by the per-message fan-out: its item keeps
//! the site in `seq_site`, so the sparse [`SITE_INDEX`] leaves it out, and
//! the process that takes it writes its id into `owner` (conditionally:
//! one owner). A third sparse, keys-only index, [`OWNER_INDEX`], holds only
//! owned sequenced subscriptions, so a process can find those of an owner
//! that died ([`Registry::owned`]).
//!
//! `site_org` is the organisation that owned the site when the
//! subscription was authorised; the fan-out delivers only while the site's
//! owner in `plantd_sites` is still that organisation (and never for an
//! item without it).
//!
//! The global secondary index [`SITE_INDEX`] (hash `site`, range
//! `connection`, projecting `filter`, `sub_id`, `site_org`, `expires`) holds only the
//! subscription items (connection items have no `site`: a sparse index).
//! Fan-out for a message on site `s` is therefore **one `Query` on one
//! index partition** that returns exactly the subscriptions of that site,
//! grouped by connection; topic matching happens in memory. Writes are
//! spread over connections (no hot per-site item to update, no 400 KB item
//! limit on how many clients watch one site). A connection's own items are
//! one `Query` on the base table, so `$disconnect` and a 410 Gone remove
//! them with one query and one batch delete.
//!
//! A second sparse index, [`JTI_INDEX`] (hash `jti`, range `connection`,
//! keys only), holds only connection items: the `fanout` process finds the
//! connections of a revoked token id with one `Query` of it
//! ([`Registry::by_jti`]), and after (re)starting its watch of
//! `plantd_revoked` lists every connection's token id with one `Scan` of
//! it ([`Registry::tokens`] — as many items as open connections, no
//! subscriptions). Connections recorded before the index existed have no
//! `jti` attribute and are not found there (they end when their token
//! expires).
//!
//! `expires` is the token's `exp` (seconds since the epoch). DynamoDB's TTL
//! deletes expired items lazily (within days), so readers also skip items
//! whose `expires` has passed.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification, WriteRequest,
};
use plantd_shared::claims::Claims;
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;

use super::AwsError;

mod sequenced;

pub use sequenced::Sequenced;

/// The hash key: the API Gateway connection id.
pub const CONNECTION_KEY: &str = "connection";
/// The range key: [`CONNECTION_ITEM`] or `sub#<id>`.
pub const ITEM_KEY: &str = "item";
/// The range key value of a connection's own item.
pub const CONNECTION_ITEM: &str = "conn";
/// The prefix of a subscription item's range key.
pub const SUBSCRIPTION_PREFIX: &str = "sub#";
/// The index that finds subscriptions by site.
pub const SITE_INDEX: &str = "by-site";
/// The index that finds connections by token id (`jti`).
pub const JTI_INDEX: &str = "by-jti";
/// The index that finds sequenced subscriptions by the process delivering them.
pub const OWNER_INDEX: &str = "by-owner";
/// The attribute of a sequenced subscription naming the `fanout` process
/// that delivers it.
pub const OWNER_ATTRIBUTE: &str = "owner";
/// The attribute of a sequenced subscription holding its site (`site`
/// would put it in [`SITE_INDEX`]).
pub const SEQUENCED_SITE_ATTRIBUTE: &str = "seq_site";
/// The attribute of a sequenced subscription: the stream sequence its
/// delivery starts at.
pub const FROM_SEQUENCE_ATTRIBUTE: &str = "from_sequence";
/// The attribute of a sequenced subscription: the stream no longer held
/// some of the sequences asked for.
pub const MISSED_ATTRIBUTE: &str = "missed";
/// The attribute of a connection item holding its token id.
pub const JTI_ATTRIBUTE: &str = "jti";
/// The TTL attribute: the token's expiry, seconds since the epoch.
pub const TTL_ATTRIBUTE: &str = "expires";
/// The attribute of a subscription item holding the organisation that
/// owned its site when it was authorised.
pub const SITE_ORG_ATTRIBUTE: &str = "site_org";

/// DynamoDB's limit of requests in one `BatchWriteItem`.
const BATCH: usize = 25;

/// A connection as `$connect` recorded it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The API Gateway connection id.
    pub id: String,
    /// The token's claims (from which permissions are compiled).
    pub claims: Claims,
    /// When the token expires, seconds since the epoch.
    pub expires: u64,
}

/// One live subscription of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The API Gateway connection id.
    pub connection: String,
    /// The client's name for the subscription, echoed on every message.
    pub id: String,
    /// The site.
    pub site: String,
    /// The organisation that owned the site when the subscription was
    /// authorised (`None` for items written before it was recorded: never
    /// delivered to).
    pub site_org: Option<String>,
    /// The MQTT topic filter (validated when it was stored).
    pub filter: String,
    /// When the connection's token expires, seconds since the epoch.
    pub expires: u64,
}

/// What a subscription listens to, as [`Registry::subscribe`] stores it.
#[derive(Debug, Clone, Copy)]
pub struct Interest<'a> {
    /// The site.
    pub site: &'a Site,
    /// The organisation that owns the site now (the caller checked that
    /// the subscriber may act on it).
    pub site_org: &'a str,
    /// The MQTT topic filter.
    pub filter: &'a Filter,
}

/// What [`Registry::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// Stored.
    Added,
    /// The connection already has a subscription with that id.
    Exists,
    /// The connection already has the most subscriptions allowed.
    TooMany,
}

/// The connection table.
#[derive(Debug, Clone)]
pub struct Registry {
    /// DynamoDB.
    client: Client,
    /// The table name.
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

impl Registry {
    /// The registry in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn dynamo<E>(&self, operation: &'static str) -> impl FnOnce(E) -> AwsError + '_
    where
        E: std::error::Error + 'static,
    {
        move |e| AwsError::Dynamo {
            operation,
            table: self.table.clone(),
            detail: DisplayErrorContext(&e).to_string(),
        }
    }

    /// Creates the table as `infra/template.yaml` declares it (keys, the
    /// [`SITE_INDEX`], [`JTI_INDEX`] and [`OWNER_INDEX`], on-demand
    /// billing, TTL). For tests and local
    /// set-ups; in AWS the stack owns the table.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`] when DynamoDB refuses (e.g. the table exists).
    pub async fn create_table(&self) -> Result<(), AwsError> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(self.dynamo("CreateTable"))
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(self.dynamo("CreateTable"))
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(SITE_INDEX)
            .key_schema(key("site", KeyType::Hash)?)
            .key_schema(key(CONNECTION_KEY, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes("filter")
                    .non_key_attributes("sub_id")
                    .non_key_attributes(SITE_ORG_ATTRIBUTE)
                    .non_key_attributes(TTL_ATTRIBUTE)
                    .build(),
            )
            .build()
            .map_err(self.dynamo("CreateTable"))?;
        let by_jti = GlobalSecondaryIndex::builder()
            .index_name(JTI_INDEX)
            .key_schema(key(JTI_ATTRIBUTE, KeyType::Hash)?)
            .key_schema(key(CONNECTION_KEY, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(self.dynamo("CreateTable"))?;
        let by_owner = GlobalSecondaryIndex::builder()
            .index_name(OWNER_INDEX)
            .key_schema(key(OWNER_ATTRIBUTE, KeyType::Hash)?)
            .key_schema(key(CONNECTION_KEY, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(self.dynamo("CreateTable"))?;
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(CONNECTION_KEY, KeyType::Hash)?)
            .key_schema(key(ITEM_KEY, KeyType::Range)?)
            .attribute_definitions(attr(CONNECTION_KEY)?)
            .attribute_definitions(attr(ITEM_KEY)?)
            .attribute_definitions(attr("site")?)
            .attribute_definitions(attr(JTI_ATTRIBUTE)?)
            .attribute_definitions(attr(OWNER_ATTRIBUTE)?)
            .global_secondary_indexes(index)
            .global_secondary_indexes(by_jti)
            .global_secondary_indexes(by_owner)
            .send()
            .await
            .map_err(self.dynamo("CreateTable"))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(self.dynamo("UpdateTimeToLive"))?,
            )
            .send()
            .await
            .map_err(self.dynamo("UpdateTimeToLive"))?;
        Ok(())
    }

    /// Records a connection authenticated with `claims` (`$connect`),
    /// findable by its token id through [`JTI_INDEX`] (unless the token has
    /// none: DynamoDB refuses an empty index key). A reconnect with the
    /// same id (API Gateway never reuses one) overwrites.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn connect(&self, connection: &str, claims: &Claims) -> Result<(), AwsError> {
        let json = serde_json::to_string(claims).map_err(|e| AwsError::Corrupt {
            table: self.table.clone(),
            connection: connection.to_owned(),
            what: e.to_string(),
        })?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(CONNECTION_KEY, s(connection))
            .item(ITEM_KEY, s(CONNECTION_ITEM))
            .item("sub", s(&claims.sub))
            .item("org", s(&claims.org))
            .item("claims", s(json))
            .item("connected_at", n(plantd_shared::jwt::now_secs()))
            .item(TTL_ATTRIBUTE, n(claims.exp));
        if !claims.jti.is_empty() {
            put = put.item(JTI_ATTRIBUTE, s(&claims.jti));
        }
        put.send().await.map_err(self.dynamo("PutItem"))?;
        Ok(())
    }

    /// The connection `connection`, if `$connect` recorded it (expired
    /// ones included: check [`Connection::expires`]).
    ///
    /// # Errors
    /// [`AwsError::Dynamo`], or [`AwsError::Corrupt`] for an item this code
    /// did not write.
    pub async fn connection(&self, connection: &str) -> Result<Option<Connection>, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(CONNECTION_KEY, s(connection))
            .key(ITEM_KEY, s(CONNECTION_ITEM))
            .consistent_read(true)
            .send()
            .await
            .map_err(self.dynamo("GetItem"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let corrupt = |what: String| AwsError::Corrupt {
            table: self.table.clone(),
            connection: connection.to_owned(),
            what,
        };
        let claims = text(&item, "claims").ok_or_else(|| corrupt("no claims".into()))?;
        let claims: Claims =
            serde_json::from_str(claims).map_err(|e| corrupt(format!("claims: {e}")))?;
        Ok(Some(Connection {
            id: connection.to_owned(),
            expires: number(&item, TTL_ATTRIBUTE).unwrap_or(claims.exp),
            claims,
        }))
    }

    /// Adds subscription `id` ([`Interest`]: site, its owner, filter) to a
    /// connection whose token expires at `expires`, unless the id is taken
    /// or the connection
    /// already holds `max` subscriptions. (The count and the write are two
    /// calls: concurrent subscribes on one socket may pass `max` by a few.)
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn subscribe(
        &self,
        connection: &str,
        id: &str,
        interest: &Interest<'_>,
        expires: u64,
        max: usize,
    ) -> Result<Subscribed, AwsError> {
        self.put_subscription(connection, id, interest, expires, max, None)
            .await
    }

    async fn put_subscription(
        &self,
        connection: &str,
        id: &str,
        interest: &Interest<'_>,
        expires: u64,
        max: usize,
        sequenced: Option<crate::routes::resume::Start>,
    ) -> Result<Subscribed, AwsError> {
        let count = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#c = :c AND begins_with(#i, :p)")
            .expression_attribute_names("#c", CONNECTION_KEY)
            .expression_attribute_names("#i", ITEM_KEY)
            .expression_attribute_values(":c", s(connection))
            .expression_attribute_values(":p", s(SUBSCRIPTION_PREFIX))
            .select(aws_sdk_dynamodb::types::Select::Count)
            .consistent_read(true)
            .send()
            .await
            .map_err(self.dynamo("Query"))?
            .count;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max {
            return Ok(Subscribed::TooMany);
        }
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(CONNECTION_KEY, s(connection))
            .item(ITEM_KEY, s(format!("{SUBSCRIPTION_PREFIX}{id}")))
            .item("sub_id", s(id))
            .item(SITE_ORG_ATTRIBUTE, s(interest.site_org))
            .item("filter", s(interest.filter.as_str()))
            .item(TTL_ATTRIBUTE, n(expires));
        put = match sequenced {
            None => put.item("site", s(interest.site.as_str())),
            Some(start) => put
                .item(SEQUENCED_SITE_ATTRIBUTE, s(interest.site.as_str()))
                .item(FROM_SEQUENCE_ATTRIBUTE, n(start.sequence))
                .item(MISSED_ATTRIBUTE, AttributeValue::Bool(start.missed)),
        };
        let put = put
            .condition_expression("attribute_not_exists(#c)")
            .expression_attribute_names("#c", CONNECTION_KEY)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Subscribed::Added),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Subscribed::Exists)
            }
            Err(e) => Err(self.dynamo("PutItem")(e)),
        }
    }

    /// Removes subscription `id` of a connection; `false` when it had none
    /// by that id.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn unsubscribe(&self, connection: &str, id: &str) -> Result<bool, AwsError> {
        Ok(self.unsubscribe_owned(connection, id).await?.is_some())
    }

    /// The range keys of every item of a connection.
    async fn items_of(&self, connection: &str) -> Result<Vec<String>, AwsError> {
        let items: Vec<_> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#c = :c")
            .expression_attribute_names("#c", CONNECTION_KEY)
            .expression_attribute_names("#i", ITEM_KEY)
            .expression_attribute_values(":c", s(connection))
            .projection_expression("#i")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(self.dynamo("Query"))?;
        Ok(items
            .iter()
            .filter_map(|i| text(i, ITEM_KEY).map(str::to_owned))
            .collect())
    }

    /// Removes a connection and all its subscriptions (`$disconnect`, or
    /// API Gateway answered 410 Gone). Returns how many items went;
    /// removing an unknown connection is not an error.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`], also when DynamoDB keeps leaving items
    /// unprocessed.
    pub async fn remove(&self, connection: &str) -> Result<usize, AwsError> {
        let items = self.items_of(connection).await?;
        for chunk in items.chunks(BATCH) {
            let mut requests = chunk
                .iter()
                .map(|item| {
                    let delete = DeleteRequest::builder()
                        .key(CONNECTION_KEY, s(connection))
                        .key(ITEM_KEY, s(item))
                        .build()
                        .map_err(self.dynamo("BatchWriteItem"))?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<Vec<_>, AwsError>>()?;
            let mut attempt = 0u32;
            while !requests.is_empty() {
                if attempt == 5 {
                    return Err(AwsError::Dynamo {
                        operation: "BatchWriteItem",
                        table: self.table.clone(),
                        detail: format!("{} deletes left unprocessed", requests.len()),
                    });
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                attempt += 1;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(self.dynamo("BatchWriteItem"))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(items.len())
    }

    /// Every subscription on `site` (expired ones included: check
    /// [`Subscription::expires`]), ordered by connection: one query on
    /// [`SITE_INDEX`]. The index is eventually consistent: a subscription
    /// stored a moment ago may be missing for a moment.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn by_site(&self, site: &Site) -> Result<Vec<Subscription>, AwsError> {
        let items = self.query_index(SITE_INDEX, "site", site.as_str()).await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                Some(Subscription {
                    connection: text(item, CONNECTION_KEY)?.to_owned(),
                    id: text(item, "sub_id")?.to_owned(),
                    site: text(item, "site")?.to_owned(),
                    site_org: text(item, SITE_ORG_ATTRIBUTE).map(str::to_owned),
                    filter: text(item, "filter")?.to_owned(),
                    expires: number(item, TTL_ATTRIBUTE).unwrap_or(0),
                })
            })
            .collect())
    }

    /// The connections whose token id is `jti`: one `Query` of
    /// [`JTI_INDEX`]. The index is eventually consistent: a connection
    /// recorded a moment ago may be missing for a moment.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn by_jti(&self, jti: &str) -> Result<Vec<String>, AwsError> {
        let items = self.query_index(JTI_INDEX, JTI_ATTRIBUTE, jti).await?;
        Ok(items
            .iter()
            .filter_map(|item| text(item, CONNECTION_KEY).map(str::to_owned))
            .collect())
    }

    /// Every item of global secondary index `index` whose partition key
    /// `attribute` is `value`: one paginated, eventually consistent `Query`.
    async fn query_index(
        &self,
        index: &str,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, AwsError> {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#k = :k")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":k", s(value))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(self.dynamo("Query"))
    }

    /// Every recorded connection with its token id, as `(jti, connection)`
    /// pairs sorted by token id: one paginated `Scan` of [`JTI_INDEX`],
    /// which holds one small item per open connection (no subscriptions).
    /// For re-checking every open socket against `plantd_revoked` after a
    /// watch of it (re)starts; not for anything per message.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn tokens(&self) -> Result<Vec<(String, String)>, AwsError> {
        self.index_pairs(JTI_INDEX, JTI_ATTRIBUTE).await
    }

    /// One paginated `Scan` of the keys-only `index`: `(attribute,
    /// connection id)` of every item, sorted.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    async fn index_pairs(
        &self,
        index: &str,
        attribute: &str,
    ) -> Result<Vec<(String, String)>, AwsError> {
        let items: Vec<_> = self
            .client
            .scan()
            .table_name(&self.table)
            .index_name(index)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(self.dynamo("Scan"))?;
        let mut pairs: Vec<(String, String)> = items
            .iter()
            .filter_map(|item| {
                Some((
                    text(item, attribute)?.to_owned(),
                    text(item, CONNECTION_KEY)?.to_owned(),
                ))
            })
            .collect();
        pairs.sort();
        Ok(pairs)
    }
}
