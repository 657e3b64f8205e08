//! The held commands' records in `plantd_commands`, from one attachment:
//! reloaded at attach, cancel requests answered from the records' watch,
//! held commands offered again, and each record removed (or answered)
//! once the edge is done with its command.

use std::time::Instant;

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use plantd_shared::commands::{self, CommandState, FINISHED_RECORD_KEEP, HeldCommand, record_key};
use plantd_shared::headers;

use super::{Session, ms};
use crate::downlink::held::HeldEntry;
use crate::downlink::parse::{Parsed, Raw, parse};
use crate::downlink::{CommandSink, SinkError};

impl<S: CommandSink> Session<'_, S> {
    /// Reloads the held commands of an earlier attachment (or an earlier
    /// run), in stream order, from their records and the stream.
    pub(super) async fn load(&mut self) -> Result<(), String> {
        let site = &self.cfg.site;
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| format!("listing held commands: {e}"))?;
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| format!("listing held commands: {e}"))?;
            if let Some(id) = commands::record_id(site, &k) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let now = headers::now_ms();
        for id in ids {
            let key = record_key(site, id);
            let Some(entry) = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| format!("reading {key}: {e}"))?
            else {
                continue;
            };
            let Ok(record) = HeldCommand::from_bytes(&entry.value) else {
                tracing::warn!(key, "ignoring a held-command record that is not one");
                continue;
            };
            self.known.insert(id);
            match record.state {
                CommandState::Held => self.reload(record, entry.revision, now).await?,
                CommandState::CancelRequested => {
                    self.cancel(record, entry.revision).await;
                }
                CommandState::Delivered | CommandState::Cancelled | CommandState::Expired => {
                    self.finished.insert(id, (entry.revision, Instant::now()));
                }
            }
        }
        Ok(())
    }

    /// Holds again the command of a `held` record, read back from the
    /// stream; drops it if the stream no longer has it or it expired.
    async fn reload(&mut self, record: HeldCommand, revision: u64, now: u64) -> Result<(), String> {
        let id = record.id;
        let message = match self.stream.get_raw_message(id).await {
            Ok(m) => Some(m),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::RawMessageErrorKind::NoMessageFound
                ) =>
            {
                None
            }
            Err(e) => return Err(format!("reading held command {id}: {e}")),
        };
        let parsed = message.as_ref().map(|m| {
            parse(
                &Raw {
                    subject: m.subject.as_str(),
                    headers: Some(&m.headers),
                    payload: &m.payload,
                    stream_seq: id,
                    published_ms: ms(m.time),
                },
                now,
                self.cfg.hold.as_millis() as u64,
            )
        });
        match parsed {
            Some(Parsed::Command(command, deadline)) => {
                self.held.push(HeldEntry {
                    command,
                    deadline,
                    record,
                    revision: Some(revision),
                });
            }
            _ => {
                tracing::info!(id, "held command gone from the stream or expired; dropping");
                self.count(|s| s.expired += 1);
                self.settle(&record, revision, CommandState::Expired)
                    .await?;
            }
        }
        Ok(())
    }

    /// A record changed: answers a cancel request for a held command.
    pub(super) async fn changed(&mut self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let Some(id) = commands::record_id(&self.cfg.site, &entry.key) else {
            return;
        };
        let Ok(record) = HeldCommand::from_bytes(&entry.value) else {
            return;
        };
        if record.state != CommandState::CancelRequested {
            return;
        }
        if let Some(held) = self.held.remove(id) {
            self.cancel(held.record, entry.revision).await;
        }
    }

    /// Drops a command on request and answers `cancelled` in its record
    /// (at `revision`, the request's).
    async fn cancel(&mut self, record: HeldCommand, revision: u64) {
        let id = record.id;
        let key = record_key(&self.cfg.site, id);
        let answer = record.finish(CommandState::Cancelled, headers::now_ms());
        match self
            .kv
            .update(&key, answer.to_bytes().into(), revision)
            .await
        {
            Ok(rev) => {
                self.finished.insert(id, (rev, Instant::now()));
                self.count(|s| s.cancelled += 1);
                tracing::info!(stream_seq = id, topic = %record.topic, "command cancelled");
            }
            Err(e) => {
                tracing::warn!(stream_seq = id, error = %e, "could not answer a cancel request");
            }
        }
    }

    /// Offers every topic's oldest held command again (and those behind it
    /// while they are taken), drops expired ones, and deletes old finished
    /// records.
    pub(super) async fn retry(&mut self) -> Result<(), String> {
        let now = headers::now_ms();
        for topic in self.held.topics() {
            while let Some(front) = self.held.front(&topic) {
                let Some(revision) = front.revision else {
                    break;
                };
                if now > front.deadline.at_ms {
                    let deadline = front.deadline;
                    let Some(e) = self.held.pop_front(&topic) else {
                        break;
                    };
                    tracing::info!(stream_seq = e.command.stream_seq, topic = %topic, "held command expired; dropping");
                    self.count_dropped(deadline);
                    self.settle(&e.record, revision, CommandState::Expired)
                        .await?;
                    continue;
                }
                match self.sink.deliver(front.command.clone()).await {
                    Ok(()) => {
                        let Some(e) = self.held.pop_front(&topic) else {
                            break;
                        };
                        self.count(|s| s.delivered += 1);
                        self.settle(&e.record, revision, CommandState::Delivered)
                            .await?;
                    }
                    Err(SinkError::Refused(_)) => {
                        self.count(|s| s.refused += 1);
                        break;
                    }
                    Err(SinkError::NoSubscribers) => break,
                }
            }
        }
        let old: Vec<(u64, u64)> = self
            .finished
            .iter()
            .filter(|(_, (_, at))| at.elapsed() >= FINISHED_RECORD_KEEP)
            .map(|(id, (rev, _))| (*id, *rev))
            .collect();
        for (id, rev) in old {
            self.finished.remove(&id);
            let key = record_key(&self.cfg.site, id);
            if let Err(e) = self.kv.delete_expect_revision(&key, Some(rev)).await {
                tracing::debug!(key, error = %e, "finished record not deleted");
            }
        }
        Ok(())
    }

    /// Removes the record of a command the edge is done with — unless a
    /// cancel request came in meanwhile: then the record answers it with
    /// `state` (`delivered`: the cancel came too late).
    async fn settle(
        &mut self,
        record: &HeldCommand,
        revision: u64,
        state: CommandState,
    ) -> Result<(), String> {
        let id = record.id;
        let key = record_key(&self.cfg.site, id);
        let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await else {
            return Ok(());
        };
        let current = self
            .kv
            .entry(&key)
            .await
            .map_err(|e| format!("reading {key}: {e}"))?;
        match current {
            Some(cur) if cur.revision != revision => {
                let answer = record.finish(state, headers::now_ms());
                match self
                    .kv
                    .update(&key, answer.to_bytes().into(), cur.revision)
                    .await
                {
                    Ok(rev) => {
                        self.finished.insert(id, (rev, Instant::now()));
                    }
                    Err(e) => tracing::warn!(key, error = %e, "could not answer a cancel request"),
                }
                Ok(())
            }
            None => Ok(()),
            Some(_) => Err(format!("removing the record of command {id}: {e}")),
        }
    }
}
