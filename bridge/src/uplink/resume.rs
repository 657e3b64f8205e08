//! What JetStream already holds when a connection starts: the last message
//! stored on the site's subjects, read against this journal's lives (and
//! its predecessor's, from the site lease), tells where to resume.

use plantd_journal::{Identity, Located};
use plantd_shared::headers::{self, MessageId};
use plantd_shared::lease::LeaseLife;
use plantd_shared::subject::{Channel, Site};

use super::{Pump, Stop, UplinkConnection};
use crate::lease::LeaseState;

impl Pump {
    /// Gets a new connection ready before its first publish: confirms the
    /// site lease (when there is one) and learns what JetStream already
    /// stored for this journal, skipping it (when `resume` is on).
    pub(super) async fn prepare(
        &mut self,
        conn: &UplinkConnection,
        reader: &mut plantd_journal::Reader,
    ) -> Result<(), Stop> {
        if let Some(lease) = &self.lease {
            match lease.confirm().await {
                Ok(LeaseState::Held) => {}
                Ok(LeaseState::Refused(why)) => return Err(Stop::Refused(why)),
                Ok(LeaseState::Unknown) => {
                    return Err(Stop::Failed("site lease not confirmed".into()));
                }
                Err(e) => return Err(Stop::Failed(e.to_string())),
            }
        }
        if !self.cfg.resume {
            return Ok(());
        }
        let acked = self.journal.acked();
        if self.refused_floor.is_some_and(|r| r <= acked) {
            self.refused_floor = None;
        }
        let predecessor = self
            .lease
            .as_ref()
            .map(|l| l.predecessor_lives())
            .unwrap_or_default();
        // Telemetry, log lines and an edge's analytics results share the
        // journal but go to three streams: each stream proves only its own
        // records stored.
        let mut stored_upto = StoredUpTo::default();
        for channel in StoredUpTo::CHANNELS {
            let stored = last_stored(&conn.client, &self.cfg.site, channel)
                .await
                .map_err(Stop::Failed)?;
            let mut upto = resume_point(
                &self.identity,
                stored.as_ref().map(|(id, seq)| (id.as_str(), *seq)),
                acked,
                &predecessor,
            );
            if let Some(r) = self.refused_floor {
                upto = upto.min(r - 1);
            }
            // Only records already written can have been stored.
            upto = upto.min(self.journal.durable());
            stored_upto.set(channel, upto);
        }
        // Every record up to the lowest of them is stored; past it, the
        // pump skips each record its own stream holds.
        let upto = stored_upto.all();
        self.stored_upto = stored_upto;
        if let Some(lease) = &self.lease {
            lease.resumed();
        }
        let position = self.w.cursor();
        if upto > position {
            let skipped = upto - position;
            tracing::info!(
                from = position + 1,
                to = upto,
                "uplink: JetStream already holds these records; not sending them again"
            );
            self.journal.ack(upto);
            self.w.reset(upto + 1);
            reader.seek(upto + 1);
            self.status.send_modify(|s| {
                s.already_stored += skipped;
                s.acked_seq = upto;
            });
        }
        Ok(())
    }
}

/// What each stream is known to hold of this journal after a connection
/// started: every record of channel `up` up to `up`, of channel `log` up to
/// `log`, of channel `agg` (an edge's analytics results,
/// `PLANTD_AGGREGATES`) up to `agg` (journal sequences). The pump does not
/// send those again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct StoredUpTo {
    up: u64,
    log: u64,
    agg: u64,
}

impl StoredUpTo {
    /// The channels the uplink publishes on
    /// ([`plantd_shared::subject::uplink_subject`]).
    const CHANNELS: [Channel; 3] = [Channel::Up, Channel::Log, Channel::Agg];

    fn set(&mut self, channel: Channel, upto: u64) {
        *self.slot(channel) = upto;
    }

    fn slot(&mut self, channel: Channel) -> &mut u64 {
        match channel {
            Channel::Log => &mut self.log,
            Channel::Agg => &mut self.agg,
            _ => &mut self.up,
        }
    }

    /// Whether record `seq` on `channel` is already stored.
    pub(super) fn holds(&self, channel: Channel, seq: u64) -> bool {
        seq <= match channel {
            Channel::Log => self.log,
            Channel::Agg => self.agg,
            _ => self.up,
        }
    }

    /// Every record up to here is stored, whatever its channel.
    fn all(&self) -> u64 {
        self.up.min(self.log).min(self.agg)
    }
}

/// The last message JetStream stored on `site`'s subjects of `channel`
/// (`plantd.<site>.up.>` or `plantd.<site>.log.>`), as (journal id,
/// sequence) from its message id;
/// `None` when there is none, it is not an uplinked message of this site,
/// or no stream holds the subjects (the first publish then says so).
///
/// # Errors
/// The reason, when JetStream could not be asked.
async fn last_stored(
    client: &async_nats::Client,
    site: &Site,
    channel: Channel,
) -> Result<Option<(String, u64)>, String> {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let js = async_nats::jetstream::new(client.clone());
    let filter = format!("{}.>", plantd_shared::subject::prefix(site, channel));
    let name = match js.stream_by_subject(filter.as_str()).await {
        Ok(name) => name,
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot find the stream of {filter}: {e}")),
    };
    let stream = js
        .get_stream_no_info(&name)
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let last = match stream.get_last_raw_message_by_subject(&filter).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read what stream {name} last stored for {filter}: {e}"
            ));
        }
    };
    Ok(last
        .headers
        .get(headers::MSG_ID)
        .and_then(|v| MessageId::parse(v.as_str()))
        .filter(|id| id.site == site.as_str())
        .map(|id| (id.journal.to_owned(), id.seq)))
}

/// The highest journal sequence JetStream is known to hold, given the last
/// message it stored for this site (`stored`: journal id and sequence) and
/// the acknowledged cursor.
///
/// * No message, or another journal's: only the cursor is known.
/// * One of this journal's records: it and everything before it (one
///   connection stores a prefix of what was sent, in order).
/// * A later record of one of this journal's earlier lives than this
///   journal holds (it is a restored backup or a copy, and the original
///   went on): every record of that life held here.
/// * A record of a later life of the journal this one took the site over
///   from (`predecessor`: its lives, from the site lease), when that
///   journal shares earlier lives with this one (this is its restored
///   backup, and it restarted since): every record of the shared lives up
///   to where that journal's life ended.
pub fn resume_point(
    identity: &Identity,
    stored: Option<(&str, u64)>,
    acked: u64,
    predecessor: &[LeaseLife],
) -> u64 {
    let Some((id, seq)) = stored else {
        return acked;
    };
    match identity.locate(id, seq) {
        Located::Foreign => {
            let Some(j) = predecessor.iter().position(|l| l.id == id) else {
                return acked;
            };
            let mut upto = acked;
            for (i, life) in predecessor[..j].iter().enumerate() {
                let Some((_, mine_last)) = identity.range_of(&life.id) else {
                    continue;
                };
                let theirs_last = predecessor[i + 1].first_seq.saturating_sub(1);
                upto = upto.max(mine_last.unwrap_or(theirs_last).min(theirs_last));
            }
            upto
        }
        Located::Within => acked.max(seq),
        Located::Beyond { last } => acked.max(last),
    }
}

#[cfg(test)]
mod tests {
    use plantd_journal::identity::Life;

    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(16)
    }

    fn identity(lives: &[(char, u64)]) -> Identity {
        Identity::from_lives(
            lives
                .iter()
                .map(|(c, first_seq)| Life {
                    id: plantd_journal::JournalId::parse(&id(*c)).expect("id"),
                    first_seq: *first_seq,
                })
                .collect(),
        )
        .expect("identity")
    }

    fn lease(lives: &[(char, u64)]) -> Vec<LeaseLife> {
        lives
            .iter()
            .map(|(c, first_seq)| LeaseLife {
                id: id(*c),
                first_seq: *first_seq,
            })
            .collect()
    }

    #[test]
    fn each_channel_proves_only_its_own_records_stored() {
        let mut s = StoredUpTo::default();
        s.set(Channel::Up, 90);
        s.set(Channel::Log, 70);
        s.set(Channel::Agg, 40);
        assert_eq!(s.all(), 40, "the lowest: beyond it, per record");
        assert!(s.holds(Channel::Up, 90) && !s.holds(Channel::Up, 91));
        assert!(s.holds(Channel::Log, 70) && !s.holds(Channel::Log, 71));
        assert!(s.holds(Channel::Agg, 40) && !s.holds(Channel::Agg, 41));
    }

    #[test]
    fn resume_after_what_the_stream_proves_stored() {
        // Lives a (1..=100) and b (101..), cursor at 40.
        let me = identity(&[('a', 1), ('b', 101)]);
        let a = id('a');
        let b = id('b');
        assert_eq!(resume_point(&me, None, 40, &[]), 40, "nothing stored");
        assert_eq!(resume_point(&me, Some((&a, 80)), 40, &[]), 80);
        assert_eq!(resume_point(&me, Some((&a, 20)), 40, &[]), 40);
        assert_eq!(resume_point(&me, Some((&b, 130)), 40, &[]), 130);
        // Someone went on with life a beyond what we hold: a restored
        // backup; all of a that we hold is stored.
        assert_eq!(resume_point(&me, Some((&a, 900)), 40, &[]), 100);
        // Another journal's message: only the cursor is known.
        assert_eq!(resume_point(&me, Some((&id('z'), 5)), 40, &[]), 40);
    }

    #[test]
    fn a_restored_backup_learns_from_its_predecessors_lives() {
        // We are a backup of a journal with life a (1..=100 here); the
        // original went on with a up to 300 and then life c from 301.
        let me = identity(&[('a', 1), ('d', 101)]);
        let original = lease(&[('a', 1), ('c', 301)]);
        let c = id('c');
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &original), 100);
        // An original restored from an even older backup (its a ended at
        // 60): only what it had is known stored.
        let older = lease(&[('a', 1), ('c', 61)]);
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &older), 60);
        // Without the lineage, or for a stranger: the cursor.
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &[]), 40);
        let stranger = lease(&[('x', 1), ('c', 301)]);
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &stranger), 40);
    }
}
