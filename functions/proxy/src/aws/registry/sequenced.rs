//! The registry's sequenced subscriptions: stored out of the site index
//! with their start, taken by one `fanout` process (`owner`), found by
//! owner ([`OWNER_INDEX`]). See the table layout in [`super`].

use super::{
    AwsError, CONNECTION_KEY, FROM_SEQUENCE_ATTRIBUTE, ITEM_KEY, Interest, MISSED_ATTRIBUTE,
    OWNER_ATTRIBUTE, OWNER_INDEX, Registry, SEQUENCED_SITE_ATTRIBUTE, SITE_ORG_ATTRIBUTE,
    SUBSCRIPTION_PREFIX, Subscribed, TTL_ATTRIBUTE, number, s, text,
};

/// A sequenced subscription as [`Registry::sequenced`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    /// The API Gateway connection id.
    pub connection: String,
    /// The client's name for the subscription.
    pub id: String,
    /// The site.
    pub site: String,
    /// The organisation that owned the site when it was authorised.
    pub site_org: String,
    /// The MQTT topic filter.
    pub filter: String,
    /// When the connection's token expires, seconds since the epoch.
    pub expires: u64,
    /// The stream sequence delivery starts at.
    pub from_sequence: u64,
    /// The stream no longer held some of the sequences the client asked
    /// for (its `subscribed` answer says `missed`).
    pub missed: bool,
    /// The `fanout` process delivering it, once one took it.
    pub owner: Option<String>,
}

impl Registry {
    /// Like [`subscribe`](Self::subscribe), for a sequenced subscription
    /// whose delivery starts at `start` (and whether the stream no longer
    /// held what the client asked for): left out
    /// of [`super::SITE_INDEX`] (the per-message fan-out never posts to it) until
    /// a `fanout` process [`claim`](Self::claim)s it.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn subscribe_sequenced(
        &self,
        connection: &str,
        id: &str,
        interest: &Interest<'_>,
        expires: u64,
        max: usize,
        start: crate::routes::resume::Start,
    ) -> Result<Subscribed, AwsError> {
        self.put_subscription(connection, id, interest, expires, max, Some(start))
            .await
    }

    /// Removes subscription `id` of a connection: `None` when it had none
    /// by that id, else the `fanout` process delivering it (a sequenced
    /// subscription a process took), to be told to stop.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn unsubscribe_owned(
        &self,
        connection: &str,
        id: &str,
    ) -> Result<Option<Option<String>>, AwsError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(CONNECTION_KEY, s(connection))
            .key(ITEM_KEY, s(format!("{SUBSCRIPTION_PREFIX}{id}")))
            .condition_expression("attribute_exists(#c)")
            .expression_attribute_names("#c", CONNECTION_KEY)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match deleted {
            Ok(out) => {
                Ok(Some(out.attributes.as_ref().and_then(|old| {
                    text(old, OWNER_ATTRIBUTE).map(str::to_owned)
                })))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.dynamo("DeleteItem")(e)),
        }
    }

    /// Sequenced subscription `id` of a connection (a consistent read), if
    /// there is one.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`], or [`AwsError::Corrupt`] for a subscription
    /// that is not sequenced or an item this code did not write.
    pub async fn sequenced(
        &self,
        connection: &str,
        id: &str,
    ) -> Result<Option<Sequenced>, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(CONNECTION_KEY, s(connection))
            .key(ITEM_KEY, s(format!("{SUBSCRIPTION_PREFIX}{id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(self.dynamo("GetItem"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let read = || {
            Some(Sequenced {
                connection: connection.to_owned(),
                id: text(&item, "sub_id")?.to_owned(),
                site: text(&item, SEQUENCED_SITE_ATTRIBUTE)?.to_owned(),
                site_org: text(&item, SITE_ORG_ATTRIBUTE)?.to_owned(),
                filter: text(&item, "filter")?.to_owned(),
                expires: number(&item, TTL_ATTRIBUTE)?,
                from_sequence: number(&item, FROM_SEQUENCE_ATTRIBUTE)?,
                missed: item
                    .get(MISSED_ATTRIBUTE)
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
                owner: text(&item, OWNER_ATTRIBUTE).map(str::to_owned),
            })
        };
        read().map(Some).ok_or_else(|| AwsError::Corrupt {
            table: self.table.clone(),
            connection: connection.to_owned(),
            what: format!("subscription {id} is not a sequenced one"),
        })
    }

    /// Makes `owner` the process delivering sequenced subscription `id`,
    /// unless it is gone or another process already took it (`false`).
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn claim(&self, connection: &str, id: &str, owner: &str) -> Result<bool, AwsError> {
        let claimed = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(CONNECTION_KEY, s(connection))
            .key(ITEM_KEY, s(format!("{SUBSCRIPTION_PREFIX}{id}")))
            .update_expression("SET #o = :o")
            .condition_expression("attribute_exists(#c) AND attribute_not_exists(#o)")
            .expression_attribute_names("#o", OWNER_ATTRIBUTE)
            .expression_attribute_names("#c", CONNECTION_KEY)
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        match claimed {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.dynamo("UpdateItem")(e)),
        }
    }

    /// Every owned sequenced subscription, as `(owner, connection)` pairs
    /// sorted by owner: one paginated `Scan` of the keys-only
    /// [`OWNER_INDEX`] (only sequenced subscriptions a process took). For
    /// finding those of a process that died; not for anything per message.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`].
    pub async fn owned(&self) -> Result<Vec<(String, String)>, AwsError> {
        let mut pairs = self.index_pairs(OWNER_INDEX, OWNER_ATTRIBUTE).await?;
        pairs.dedup();
        Ok(pairs)
    }
}
